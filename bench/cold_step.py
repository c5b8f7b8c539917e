"""What waiting for the GPU does to the next step's CPU work on this machine.

The serving simulation sleeps out each simulated verify; a real worker waits on the GPU
(CUDA spins by default). Either way the next step's CPU work starts after milliseconds of
doing nothing useful, and may find its caches cold. This times the same step, the SGLang
worker's CPU path for a planned plain step at batch 64 (``BatchDrafter.drafts`` plus the
request views it is called with), back to back and after a 9 ms wait that sleeps or spins.
No datastore, no drafting: only the wake-up is measured.

    .venv/bin/python bench/cold_step.py [--batch 64] [--steps 300] [--wait-ms 9]

Prints JSON: per way of waiting, p50 / p99 of the step (µs, views included).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.costs import StepCosts
from client_sdk.runtime import build_speculator
from sglang_integration.drafts import BatchDrafter
from sssd.bench import datasets
from sssd.bench.provenance import stamped
from sssd.bench.serve_sim import LLAMA_8B, _Slot


def wait(how: str, seconds: float) -> None:
    if how == "sleep":
        time.sleep(seconds)
    elif how == "spin":
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


def run(how: str, batch: int, steps: int, wait_s: float) -> dict:
    config = SpeculatorConfig()
    widths = config.planner.widths
    # drafting at any width costs ten plain steps: the planner plans plain steps only
    costs = StepCosts({(batch, n): wait_s * (1 if n == 1 else 10) for n in widths})
    spec = build_speculator(costs=costs, config=config, vocab_size=LLAMA_8B.vocab)
    drafter = BatchDrafter(spec, widths[-1], LLAMA_8B.vocab, adaptive=True)
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    slots = []
    for i in range(batch):
        case = cases[i % len(cases)]
        slot = _Slot(f"r{i}", list(case["prompt"]), np.asarray(case["response"], dtype=np.int32))
        drafter.admit(slot.view())
        slots.append(slot)
    times, widths_seen = [], []
    for step in range(steps + 20):
        wait(how, wait_s)
        start = time.perf_counter()
        drafter.drafts([s.view() for s in slots], last_step_s=wait_s)
        took = time.perf_counter() - start
        drafter.prefetch([s.rid for s in slots])
        for s in slots:  # one committed token each, from the recorded response (cycled)
            s.output.append(int(s.truth[len(s.output) % s.truth.shape[0]]))
        if step >= 20:
            times.append(took)
            widths_seen.append(drafter.last_width)
    spec.close()
    t = np.asarray(times) * 1e6
    return {"wait": how, "plain_steps": float(np.mean(np.asarray(widths_seen) == 1)),
            "step_us": {"p50": round(float(np.median(t)), 1), "p99": round(float(np.percentile(t, 99)), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--wait-ms", type=float, default=9.0)
    args = parser.parse_args()
    rows = [run(how, args.batch, args.steps, args.wait_ms / 1e3) for how in ("none", "sleep", "spin")]
    print(json.dumps(stamped({"batch": args.batch, "wait_ms": args.wait_ms, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
