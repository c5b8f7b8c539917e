"""Where a drafted decode step's critical path goes, part by part: the serving simulation's zero-wait
steps (after a simulated verify, beside a real ``sssd serve`` filled with the ShareGPT datastore), or
the same drafting back to back in process (``--hot``: ``bench/step_cost.py``'s loop, every lookup
answered when asked; its 10 warm-up steps are counted too). The two side by side say which parts a
wait for the GPU makes dearer.

    .venv/bin/python bench/critical_parts.py [--batch-sizes 1,64] [--steps 300] [--max-width W] [--hot]

A diagnostic, not a speed figure: each part is timed by wrapping the product's own methods with a
clock (about a microsecond per wrapped call), and a part's time includes the parts called inside it
(``sync`` holds ``sync/commit``). Prints JSON: per batch size, each part's mean µs per step and calls
per step, and the step's critical path (``BatchDrafter.drafts``, wrapped) p50 / p99.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from client_sdk.drafting import drafters, merge_kernels, outcomes, planner, speculator, step_kernels
from sglang_integration import drafts
from sssd.bench import datasets, llama3, serve_sim
from sssd.bench.provenance import stamped
from sssd.bench.sim_gpu import RooflineGPU

# (owner, attribute, part): the critical path's calls, and the beside-the-GPU prefetch for scale
PARTS = [
    (drafts.BatchDrafter, "drafts", "step"),
    (drafts.BatchDrafter, "_sync_all", "sync"),
    (speculator.Speculator, "commit_drafted", "sync/commit"),
    (speculator.Speculator, "_commit", "sync/commit/write"),
    (speculator.Speculator, "draft_batch", "draft"),
    (speculator.Speculator, "_prefetched_tries", "draft/tries"),
    (speculator, "history_of", "draft/tries/history"),
    (speculator, "resolve_picks", "draft/tries/resolve"),
    (outcomes.resolve_kernels, "resolve", "draft/tries/resolve/kernel"),
    (drafters.CalibratedMerge, "draft", "draft/merge"),
    (merge_kernels, "draft", "draft/merge/kernel"),  # one request (tree.draft_tree)
    (merge_kernels, "draft_rows", "draft/merge/kernel"),  # a batch (tree.draft_batch)
    (planner.StepPlanner, "choose_for_drafts", "draft/choose"),
    (speculator, "cut_batch", "draft/cut"),
    (step_kernels, "fixed_width_rows", "arrays"),
    (speculator.Speculator, "plan", "plan"),
    (speculator.Speculator, "observe_step", "observe_step"),
    (speculator.Speculator, "prefetch", "beside the GPU: prefetch"),
]


class Clocks:
    """Wall time and calls per part while installed (the wrapped methods restored by ``remove``);
    parts: (owner, attribute, part) triples, the part named "step" being the whole step."""

    def __init__(self, parts=PARTS) -> None:
        self.parts = list(parts)
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self.steps: list[float] = []
        self._saved = []

    def install(self) -> None:
        for owner, name, part in self.parts:
            fn = getattr(owner, name)
            self._saved.append((owner, name, fn))
            setattr(owner, name, self._timed(fn, part))

    def _timed(self, fn, part: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self.seconds[part] += took
                self.calls[part] += 1
                if part == "step":
                    self.steps.append(took)
        return timed

    def remove(self) -> None:
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)
        self._saved.clear()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.steps.clear()

    def row(self, batch: int) -> dict:
        n = max(len(self.steps), 1)
        s = np.asarray(self.steps) * 1e6
        step_us = None  # (no step timed)
        if len(s):
            step_us = {"p50": round(float(np.median(s)), 1), "p99": round(float(np.percentile(s, 99)), 1)}
        return {"batch": batch, "steps": len(self.steps), "step_us": step_us,
                "parts": {part: {"us_per_step": round(self.seconds[part] / n * 1e6, 1),
                                 "calls_per_step": round(self.calls[part] / n, 2)}
                          for _, _, part in self.parts if self.calls[part]}}


def simulated(batches: list[int], steps: int, clocks: Clocks, conversations: int = 15000) -> list[dict]:
    from sssd.serve_process import start_server

    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(str(Path(tmp) / "sim.db"), "--synchronous", "NORMAL")
        try:
            serve_sim.fill_service(address, datasets.sharegpt_datastore(2000, 2000 + conversations), llama3.VOCAB_SIZE,
                                   False)
            for b in batches:
                serve_sim.Simulation(cases, address, b, "zero-wait", 30, RooflineGPU(), 1, "sleep", proc.pid).run()
                clocks.reset()
                serve_sim.Simulation(cases, address, b, "zero-wait", steps, RooflineGPU(), 1, "sleep", proc.pid).run()
                rows.append(clocks.row(b))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return rows


def hot(batches: list[int], steps: int, max_width: int, clocks: Clocks) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parent))
    import step_cost

    from sssd.bench import replay

    ds = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    rows = []
    for b in batches:
        step_cost.run_batch(ds, cases, b, 30, max_width)
        clocks.reset()
        step_cost.run_batch(ds, cases, b, steps, max_width)
        rows.append(clocks.row(b))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-width", type=int, default=0, help="--hot: the planner's widths up to this one only")
    parser.add_argument("--hot", action="store_true", help="back to back in process, no simulated verify")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    clocks = Clocks()
    clocks.install()
    try:
        rows = (hot(batches, args.steps, args.max_width, clocks) if args.hot
                else simulated(batches, args.steps, clocks))
    finally:
        clocks.remove()
    print(json.dumps(stamped({"mode": "hot" if args.hot else "simulated", "steps": args.steps, "rows": rows}),
                     indent=1))


if __name__ == "__main__":
    main()
