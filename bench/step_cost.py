"""The critical path of a drafted decode step, in process: what the GPU waits for between one
step's verification and the next step's arrays, with every step drafting.

The SGLang worker's CPU path (sglang_integration.drafts.BatchDrafter: sync the committed
tokens, draft, emit the fixed-width arrays) over the serving simulation's traffic (MT-Bench and
HumanEval responses replayed with continuous batching), against the ShareGPT datastore in
process, its lookups answered when they are asked (beside the GPU), so every prefetch is in.
The planner's cost table is flat (every width costs a plain step), so every step drafts: the
figure is the cost of drafting itself, not of the planner's choice to draft. No service, no
simulated GPU time: it isolates the critical path for A/B comparisons of changes to it (the
serving simulation, ``sssd bench serve-sim``, measures it as part of the whole).

    .venv/bin/python bench/step_cost.py [--batch-sizes 16,64] [--steps 150] [--max-width W] [--trie-cache N]
                                        [--draft-threads T]

``--trie-cache N`` sets the trie cache's size (0: off). ``--max-width W`` lets the planner choose
among its widths up to W only (the widest of them, the cost table being flat): the small drafts
the planner makes at large batches. ``--draft-threads T`` builds each step's drafts on T cores.

Prints JSON: per batch size, p50 / mean / p99 of the drafted steps' critical path (µs, whole
batch, wall time after 10 warm-up steps), p50 / mean of the CPU the step's ``prefetch`` takes
beside the GPU (µs of thread CPU time, the in-process lookups it answers left out: a service
does those), and tau. Two builds compare best run at the same time
(one core each), as ratios per pair: the box's load then hits both alike. The traffic loop
repeats the serving simulation's on purpose, using only what older trees have too (BatchDrafter,
serve_sim._Slot, SpeculatorConfig through the speculator module), so that this script runs over an earlier commit with ``PYTHONPATH=<its tree>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from client_sdk.drafting.budget import PRESETS, forward_time
from client_sdk.drafting.planner import StepCosts  # (where older trees define it; costs.py now)
from client_sdk.drafting.speculator import SpeculatorConfig  # (where older trees define it; config.py now)
from client_sdk.runtime import build_speculator, lookup_options
from sglang_integration.drafts import BatchDrafter
from sssd.bench import datasets, llama3, replay
from sssd.bench.provenance import stamped
from sssd.bench.serve_sim import BLOCKING_DEADLINE_S, HARDWARE, LLAMA_8B, _Slot

WARMUP = 10


class AnsweredAtOnce(replay.InProcessSource):
    """Lookups answered when asked (at prefetch, beside the GPU), so every one is in by the next step."""

    lookup_cpu_s = 0.0  # thread CPU time the lookups took (a service's work, not the worker's)

    def request(self, key, contexts, samples=None) -> None:
        start = time.thread_time()
        self._pending[key] = self.lookup(contexts, self.options.sampling(samples))
        self.lookup_cpu_s += time.thread_time() - start

    def collect(self, key, contexts, deadline_s: float):
        return self._pending.pop(key, None)


def run_batch(ds: replay.InProcessDatastore, cases: list[dict], batch: int, steps: int, max_width: int = 0,
              trie_cache: int | None = None, draft_threads: int = 1, zero_wait: bool = True, calibration=None) -> dict:
    """zero_wait False: each step asks for its committed contexts and waits (blocking mode; here the
    answer is in at once); calibration: the Speculator's (None: the SDK's default). The result's
    ``done`` is each finished request's (tokens, steps), warm-up included."""
    config = SpeculatorConfig(prefetch_outcomes=zero_wait, lookup_deadline_s=0.0 if zero_wait else BLOCKING_DEADLINE_S)
    if trie_cache is not None:
        config = dataclasses.replace(config, trie_cache=trie_cache)
    if draft_threads > 1:  # (a field older trees do not have)
        config = dataclasses.replace(config, draft=dataclasses.replace(config.draft, draft_threads=draft_threads))
    if max_width:
        narrow = tuple(w for w in config.planner.widths if w <= max_width)
        config = dataclasses.replace(config, planner=dataclasses.replace(config.planner, widths=narrow))
    widths = config.planner.widths
    flat = forward_time(PRESETS[HARDWARE], LLAMA_8B, batch, 1, 1024)
    remote = AnsweredAtOnce(ds.lookup, lookup_options(config.draft, config.draft.max_depth, zero_wait))
    spec = build_speculator(costs=StepCosts({(batch, n): flat for n in widths}), config=config, remote=remote,
                            vocab_size=LLAMA_8B.vocab, calibration=calibration)
    spec.wait_for_unigrams(600)
    drafter = BatchDrafter(spec, widths[-1], LLAMA_8B.vocab, adaptive=True)
    admitted = 0

    def admit() -> _Slot:
        nonlocal admitted
        case = cases[admitted % len(cases)]
        slot = _Slot(f"r{admitted}", list(case["prompt"]), np.asarray(case["response"], dtype=np.int32))
        admitted += 1
        drafter.admit(slot.view())
        return slot

    slots = [admit() for _ in range(batch)]
    critical, beside, tokens = [], [], 0
    taken: dict[str, int] = {}  # steps per request
    done: dict[str, tuple[int, int]] = {}
    for step in range(steps + WARMUP):
        views = [s.view() for s in slots]
        t0 = time.perf_counter()
        drafter.drafts(views, last_step_s=flat)
        t1 = time.perf_counter()
        remote.lookup_cpu_s, c0 = 0.0, time.thread_time()
        drafter.prefetch([s.rid for s in slots])
        if step >= WARMUP:
            beside.append((time.thread_time() - c0 - remote.lookup_cpu_s) * 1e6)
        for s in slots:  # the verification outcome: the draft's longest path that matches the response
            tree = drafter.last_tree(s.rid)
            pos = len(s.output)
            path = tree.longest_match(s.truth[pos : pos + config.draft.max_depth]) if tree is not None else []
            new = s.truth[pos : pos + len(path) + 1].tolist()
            s.output += new
            taken[s.rid] = taken.get(s.rid, 0) + 1
            tokens += len(new) if step >= WARMUP else 0
        if step >= WARMUP and drafter.last_width > 1:
            critical.append((t1 - t0) * 1e6)
        for i, s in enumerate(slots):
            if len(s.output) >= s.truth.shape[0]:
                done[s.rid] = (len(s.output), taken.pop(s.rid))
                drafter.forget([s.rid])
                slots[i] = admit()
    spec.close()
    c, b = np.asarray(critical), np.asarray(beside)
    return {"batch": batch, "drafted_steps": int(c.shape[0]), "critical_path_us": {
        "p50": round(float(np.median(c)), 1), "mean": round(float(c.mean()), 1), "p99": round(float(np.percentile(c, 99)), 1)},
        "beside_cpu_us": {"p50": round(float(np.median(b)), 1), "mean": round(float(b.mean()), 1)},
        "tau": round(tokens / (steps * batch), 4), "done": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--max-width", type=int, default=0, help="the planner's widths up to this one only")
    parser.add_argument("--trie-cache", type=int, default=None,
                        help="the trie cache's size (0: off; default: the SDK's)")
    parser.add_argument("--draft-threads", type=int, default=1, help="DraftConfig.draft_threads (1: serial drafting)")
    args = parser.parse_args()
    ds = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    rows = [run_batch(ds, cases, int(b), args.steps, args.max_width, args.trie_cache, args.draft_threads)
            for b in args.batch_sizes.split(",")]
    for row in rows:
        del row["done"]
    print(json.dumps(stamped({"rows": rows, "steps": args.steps, "max_width": args.max_width,
                              "draft_threads": args.draft_threads}), indent=1))


if __name__ == "__main__":
    main()
