"""Where one batched compiled call beats one call per request (the SMALL_DRAFT and SMALL_APPEND thresholds).

Times, at 1 to 64 requests, drafting (client_sdk.drafting.tree.draft_batch against
draft_tree per request) and writing committed tokens (local.write_many against
LocalIndex.write per request; before 2026-12-03 the appends indexed their n-grams at once,
local.extend_many), own text only, best of 5 repeats; prints JSON (µs per call).

    .venv/bin/python bench/batch_crossover.py
"""

from __future__ import annotations

import json
import timeit
from unittest import mock

import numpy as np

from client_sdk.drafting import local as local_module
from client_sdk.drafting import tree as tree_module
from client_sdk.drafting.local import LocalArena, LocalIndex, write_many
from client_sdk.drafting.tree import NO_TRIES, Calibration, draft_batch, draft_tree, warm_up
from sssd.bench.provenance import stamped


def best_us(fn, number: int = 200) -> float:
    return round(min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6, 2)


def main() -> None:
    warm_up()
    rng = np.random.default_rng(0)
    indexes = [LocalIndex(rng.integers(0, 50, 300).tolist()) for _ in range(64)]
    arena, cal, rows = LocalArena(), Calibration(), []
    for n in (1, 2, 4, 8, 16, 32, 64):
        batch, tokens = indexes[:n], [[1, 2, 3]] * n
        with mock.patch.object(tree_module, "SMALL_DRAFT", 0), mock.patch.object(local_module, "SMALL_APPEND", 0):
            draft_batched = best_us(lambda: draft_batch(arena, batch, NO_TRIES, 0, cal, budget=16))
            extend_batched = best_us(lambda: write_many(arena, batch, tokens), number=20)
        rows.append({"requests": n, "draft_batched_us": draft_batched,
                     "draft_per_request_us": best_us(lambda: [draft_tree(x, NO_TRIES, 0, 0, cal, 16) for x in batch]),
                     "extend_batched_us": extend_batched,
                     "extend_per_request_us": best_us(lambda: [x.write(t) for x, t in zip(batch, tokens)], number=20)})
    print(json.dumps(stamped({"rows": rows, "thresholds": {"draft": tree_module.SMALL_DRAFT,
                                                            "extend": local_module.SMALL_APPEND}}), indent=1))


if __name__ == "__main__":
    main()
