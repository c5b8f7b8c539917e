"""What the planner's exploration costs the decode step while plain decoding wins, in process.

The SGLang worker's CPU path (``sglang_integration.drafts.BatchDrafter`` over a real
Speculator) at one batch size, driven by a scripted planner that repeats a cycle of three plain
steps and one exploring step of a given kind:

- ``plain``: a fourth plain step (the baseline);
- ``probe-drafted``: a width-2 probe that drafts the whole batch (what an idle planner's probe
  did before commit c3382aa);
- ``probe-filler``: a width-2 probe verified with filler tokens (``blank_width``, since c3382aa);
- ``look-whole``: a look that drafts every request (before commit bce7c4d);
- ``look-sampled``: a look that drafts ``--sample`` requests (the planner's ``look_sample``).

Each request's own text repeats a random 40-token phrase, so its drafts are real own-text
drafts; there is no datastore (its lookups are not on this path: zero-wait prefetch asks them
beside the GPU). Per kind: the critical path of the exploring step (``drafts`` until its arrays
are out: what the GPU waits for), median and p90 over the cycles, back to back (``warm``) and
after a ``--wait-ms`` sleep that stands in for the GPU's verify (``cold``: what a worker that
waits for the GPU finds, bench/cold_step.py). The kinds take turns cycle by cycle, so the
machine's load hits them alike.

    .venv/bin/python bench/idle_exploration.py [--batch 64] [--cycles 60] [--sample 8] [--wait-ms 7]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from sglang_integration.drafts import BatchDrafter, RequestView
from sssd.bench.provenance import stamped

KINDS = ("plain", "probe-drafted", "probe-filler", "look-whole", "look-sampled")
VOCAB = 128_256


class ScriptedPlanner:
    """Plans what it is told: ``kind`` for the next step (see the module docstring)."""

    def __init__(self, sample: int) -> None:
        self.sample, self.kind = sample, "plain"
        self.blank, self.look_rows = 1, None

    def plan(self, batch: int) -> int:
        kind = self.kind
        self.blank = 2 if kind == "probe-filler" else 1
        self.look_rows = self.sample if kind == "look-sampled" else None
        return 16 if kind in ("probe-drafted", "look-whole", "look-sampled") else 0

    def choose_for_drafts(self, scores, best_first=False, offsets=None) -> int:
        return 1 if self.kind == "probe-drafted" else 0  # a look that finds nothing worth verifying

    def build_size(self) -> int:
        return 16

    def may_draft_next(self) -> bool:
        return True

    def observe_step(self, batch, width, seconds) -> None:
        pass

    def observe_drafting(self, batch, seconds) -> None:
        pass

    def observe_plain(self, batch, seconds) -> None:
        pass

    def record_many(self, predicted, realised) -> None:
        pass

    chosen_k = 0

    def record_drafts(self, parents, scores, offsets, rows, ends, verified) -> None:
        pass


def run(batch: int, cycles: int, sample: int, wait_s: float) -> dict:
    planner = ScriptedPlanner(sample)
    drafter = BatchDrafter(Speculator(SpeculatorConfig(), planner=planner), 17, VOCAB, adaptive=True)
    rng = np.random.default_rng(0)
    phrase = rng.integers(0, VOCAB, 40).tolist()
    reqs = {f"r{i}": (phrase * 20, phrase[: 10 + i % 30]) for i in range(batch)}
    for rid, (prompt, out) in reqs.items():
        drafter.admit(RequestView(rid, prompt, out))
    times: dict[str, dict[str, list[float]]] = {k: {"warm": [], "cold": []} for k in KINDS}
    for cycle in range(cycles + 2):
        for kind in KINDS[cycle % len(KINDS):] + KINDS[: cycle % len(KINDS)]:
            for mode in ("warm", "cold"):
                for step in range(4):
                    planner.kind = kind if step == 3 else "plain"
                    for rid, (_, out) in reqs.items():
                        out.append(phrase[len(out) % len(phrase)])  # the last step's token: the phrase goes on
                    if mode == "cold":
                        time.sleep(wait_s)
                    start = time.perf_counter()
                    drafter.drafts([RequestView(rid, p, o) for rid, (p, o) in reqs.items()], last_step_s=wait_s)
                    took = time.perf_counter() - start
                    drafter.prefetch(list(reqs))
                    if step == 3 and cycle >= 2:  # two cycles compile and warm up
                        times[kind][mode].append(took)
    us = lambda xs, q: round(float(np.percentile(xs, q)) * 1e6, 1)  # noqa: E731
    return {kind: {mode: {"p50_us": us(xs, 50), "p90_us": us(xs, 90)} for mode, xs in by.items()}
            for kind, by in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--sample", type=int, default=8)
    parser.add_argument("--wait-ms", type=float, default=7.0)
    args = parser.parse_args()
    rows = run(args.batch, args.cycles, args.sample, args.wait_ms / 1e3)
    print(json.dumps(stamped({"batch": args.batch, "cycles": args.cycles, "sample": args.sample,
                              "wait_ms": args.wait_ms, "critical_path": rows}), indent=1))


if __name__ == "__main__":
    main()
