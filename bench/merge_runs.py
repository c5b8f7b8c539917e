"""What merging the segments' sorted sample runs saves over sorting the rows from scratch.

A lookup over S segments samples each segment's suffix-array range; each segment's rows come
out in suffix order, and the trie needs them all in one order. ``kernels.merge_runs`` merges
the S runs. Given one-row runs, the same function is a plain bottom-up merge sort (what the
kernel did before e076d20), so both are timed here in one process, taking turns: 128 rows of
depth 9 (the prefetch's samples) over a small alphabet, cut into S runs.

    .venv/bin/python bench/merge_runs.py [--runs 2,5,10] [--calls 2000]

Prints JSON: per S, µs per call of each (the median of 5 rounds of ``calls`` calls).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from datastore_service.core.kernels import merge_runs
from sssd.bench.provenance import stamped

ROWS, DEPTH = 128, 9


def per_call_us(rows: np.ndarray, bounds: np.ndarray, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        merge_runs(rows, bounds)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="2,5,10")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    out = []
    for s in (int(x) for x in args.runs.split(",")):
        parts = [sorted(rng.integers(0, 50, (ROWS // s, DEPTH)).tolist()) for _ in range(s)]
        rows = np.asarray([r for p in parts for r in p], dtype=np.int32)
        runs = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        singles = np.arange(rows.shape[0] + 1, dtype=np.int64)
        assert merge_runs(rows, runs).tolist() == merge_runs(rows, singles).tolist() == sorted(rows.tolist())
        times: dict[str, list[float]] = {"merge_runs": [], "sort_from_scratch": []}
        for _ in range(5):
            times["merge_runs"].append(per_call_us(rows, runs, args.calls))
            times["sort_from_scratch"].append(per_call_us(rows, singles, args.calls))
        out.append({"runs": s, "rows": int(rows.shape[0]),
                    **{k: round(float(np.median(v)), 2) for k, v in times.items()}})
    print(json.dumps(stamped({"calls": args.calls, "rows": out}), indent=1))


if __name__ == "__main__":
    main()
