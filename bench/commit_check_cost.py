"""What checking a step's committed tokens costs (``client_sdk.drafting.requests``): the packed
path of ``Speculator.commit_drafted`` (``packed_tokens``: the int32 array it built before, plus one
``min`` over it) against the bare packing, and the per-request check of ``commit_many``
(``check_tokens``), at batches 1, 8 and 64 of 3 tokens each. Best of 5 repeats of 20,000 calls,
µs per call; prints JSON.

    .venv/bin/python bench/commit_check_cost.py
"""

from __future__ import annotations

import itertools
import json
import timeit

import numpy as np

from client_sdk.drafting.requests import check_tokens, packed_tokens
from sssd.bench.provenance import stamped


def main() -> None:
    rows = []
    for batch in (1, 8, 64):
        toks = [[(i * 7) % 1000, (i * 13) % 1000, 5] for i in range(batch)]
        rids = [f"r{i}" for i in range(batch)]
        total = 3 * batch
        calls = {"bare_packing_us": lambda: np.fromiter(itertools.chain.from_iterable(toks), np.int32, count=total),
                 "packed_tokens_us": lambda: packed_tokens(rids, toks, total),
                 "check_tokens_us": lambda: check_tokens(rids, toks)}
        rows.append({"batch": batch, **{k: round(min(timeit.repeat(f, number=20_000, repeat=5)) / 20_000 * 1e6, 2)
                                        for k, f in calls.items()}})
    print(json.dumps(stamped({"rows": rows})))


if __name__ == "__main__":
    main()
