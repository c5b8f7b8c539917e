"""Zero-wait against blocking lookups over the same requests, in process and without timing: how
much of the serving simulation's tau ratio is the batch size, and how much the order of the
traffic and the calibration's online learning (issue 12's "tau_zero_wait >= 0.98 x tau_blocking").

The serving simulation's traffic loop (``bench/step_cost.py``'s: MT-Bench and HumanEval responses
replayed with continuous batching through the worker's BatchDrafter and the real Speculator),
against the ShareGPT datastore in process, every lookup answered when it is asked, so no
prefetch is late and the result is deterministic. Every step drafts (a flat cost table; the
simulation's planner drafts 94 % of these batch sizes' steps at the same widths). Each batch size
runs at least the simulation's 4,800 request-steps (``serve_sim.MIN_REQUEST_STEPS``).

For each traffic order and calibration, tau is counted over the requests that every run of it
finished (both modes, every batch size), so that no figure differs by which requests finished:

- orders: ``sim`` (the simulation's: all of MT-Bench, then HumanEval), ``interleaved`` (one of
  each in turn), ``humaneval`` (HumanEval alone);
- calibration: ``learned`` (the SDK's: the shipped prior, learned online from every verified
  step), ``frozen`` (the shipped prior, never updated).

    .venv/bin/python bench/zero_wait_order.py [--batch-sizes 1,4,16] [--orders sim,interleaved,humaneval]
                                              [--calibration learned,frozen]

Prints JSON: one row per order and calibration, with tau per batch size and mode, the ratio, and
the same per dev set (each row also goes to stderr as it is done).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from client_sdk.drafting.tree import Calibration
from sssd.bench import datasets, llama3, replay
from sssd.bench.provenance import stamped
from sssd.bench.serve_sim import MIN_REQUEST_STEPS, STEPS, steps_for, tau_over
from step_cost import run_batch

ORDERS = ("sim", "interleaved", "humaneval")


class FrozenCalibration(Calibration):
    """The shipped prior, never updated by what verification says."""

    def _count(self, node_cells: np.ndarray, accepted: np.ndarray) -> None:
        pass


def traffic(order: str) -> tuple[list[dict], list[str]]:
    """(cases, the dev set of each) in the order ``order`` replays them."""
    mt = [("mtbench", c) for c in datasets.mtbench_cases()]
    he = [("humaneval", c) for c in datasets.humaneval_cases()]
    if order == "sim":
        pairs = mt + he
    elif order == "interleaved":
        pairs = [p for i in range(max(len(mt), len(he))) for p in (mt[i : i + 1] + he[i : i + 1])]
    elif order == "humaneval":
        pairs = he
    else:
        raise ValueError(f"unknown order {order!r}: one of {', '.join(ORDERS)}")
    return [c for _, c in pairs], [s for s, _ in pairs]


def compare(runs: dict, sets: list[str]) -> dict:
    """runs[(batch, mode)]: a run's finished requests. tau per batch and mode over the requests
    every run finished, and the same per dev set (a request r{i} replays case i % len(sets))."""
    common = set.intersection(*(set(done) for done in runs.values()))
    out = {"same_requests": len(common), "batches": {}}
    groups = {"all": common, **{s: {r for r in common if sets[int(r[1:]) % len(sets)] == s} for s in sorted(set(sets))}}
    for b in sorted({b for b, _ in runs}):
        row = {}
        for name, rids in groups.items():
            if not rids:
                continue
            zw, bl = tau_over(runs[(b, "zero-wait")], rids), tau_over(runs[(b, "blocking")], rids)
            row[name] = {"requests": len(rids), "tau_zero_wait": zw, "tau_blocking": bl, "ratio": round(zw / bl, 4)}
        out["batches"][str(b)] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--calibration", default="learned,frozen", help="learned, frozen or both")
    parser.add_argument("--min-request-steps", type=int, default=MIN_REQUEST_STEPS)
    args = parser.parse_args()
    kinds = {"learned": None, "frozen": FrozenCalibration}
    for c in args.calibration.split(","):
        if c not in kinds:
            parser.error(f"--calibration {c!r}: one of learned, frozen")
    for o in args.orders.split(","):
        if o not in ORDERS:
            parser.error(f"--orders {o!r}: one of {', '.join(ORDERS)}")
    ds = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    rows = []
    for order in args.orders.split(","):
        cases, sets = traffic(order)
        for cal in args.calibration.split(","):
            runs = {}
            for b in (int(x) for x in args.batch_sizes.split(",")):
                steps = steps_for(b, STEPS, args.min_request_steps)
                for mode in ("zero-wait", "blocking"):
                    calibration = kinds[cal]() if kinds[cal] is not None else None
                    runs[(b, mode)] = run_batch(ds, cases, b, steps, zero_wait=mode == "zero-wait",
                                                calibration=calibration)["done"]
            rows.append({"order": order, "calibration": cal, **compare(runs, sets)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps(stamped({"rows": rows, "min_request_steps": args.min_request_steps}), indent=1))


if __name__ == "__main__":
    main()
