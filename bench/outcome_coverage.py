"""Could the next step's drafts be made beside the GPU, one for each outcome the step may have?

A verify step ends at some node of its draft tree (the root: nothing accepted) and adds the
model's bonus token after it; the next step's draft grows from that context. Drafts made while
the GPU verifies, one per likely (end, bonus token) pair, would leave only a table read on the
critical path, if the pair that happens is among them. This script measures how often it is.

Batch-1 traffic (MT-Bench and HumanEval recorded responses, one request after another) runs
through the SGLang worker's ``BatchDrafter`` over the real Speculator, with the ShareGPT datastore
in process answering every lookup at once and a flat cost table, so every step drafts (widths
up to ``--max-widths``: 17 is the batch-1 regime, 2-5 the large batches'). At each step:

- P(end = n) = s(n) - sum of s over n's drafted children (s: the draft's node scores, the
  estimated probability that a node is accepted; s(root) = 1);
- the bonus candidates at n: the first level of the datastore's trie for the context that ends
  at n (the lookup zero-wait prefetch makes: one level deeper than a draft), together with the
  next tokens after the longest earlier match in the request's own text, each source's
  frequencies weighted 1/2; n's drafted children are left out (had the bonus token been one of
  them, the step would have accepted it and ended deeper);
- a pair's probability is P(end = n) x its candidate frequency, ranked over the whole tree.

Reports, over the drafted steps: how often the outcome that happened (the recorded response's
longest matching path, then its next token) is among the top K pairs; how often its end is among
the top K ends; and how often its bonus token is among the candidates at all (the ceiling for
any K). Prints JSON.

    .venv/bin/python bench/outcome_coverage.py [--max-widths 17,5,2] [--steps 1500]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_cost import AnsweredAtOnce  # noqa: E402

from client_sdk.drafting.budget import PRESETS, forward_time  # noqa: E402
from client_sdk.drafting.config import SpeculatorConfig  # noqa: E402
from client_sdk.drafting.costs import StepCosts  # noqa: E402
from client_sdk.runtime import build_speculator, lookup_options  # noqa: E402
from sglang_integration.drafts import BatchDrafter  # noqa: E402
from sssd.bench import datasets, llama3, replay  # noqa: E402
from sssd.bench.provenance import stamped  # noqa: E402
from sssd.bench.serve_sim import HARDWARE, LLAMA_8B, _Slot  # noqa: E402

KS = (1, 2, 4, 8, 16, 32, 64)
OWN_MAX_K = 4  # the longest own-text n-gram matched for bonus candidates
OWN_MAX_OCC = 32  # earlier occurrences read


def own_next(text: list[int]) -> collections.Counter:
    """Next tokens after the earlier occurrences of the longest suffix (<= OWN_MAX_K tokens) that occurred before."""
    n = len(text)
    for k in range(min(OWN_MAX_K, n - 1), 0, -1):
        suffix, found = text[n - k :], collections.Counter()
        for p in range(n - k - 1, -1, -1):
            if text[p : p + k] == suffix:
                found[text[p + k]] += 1
                if sum(found.values()) >= OWN_MAX_OCC:
                    break
        if found:
            return found
    return collections.Counter()


def ranked_outcomes(tree, text: list[int], lookup) -> tuple[list[tuple[float, int, int]], dict]:
    """[(probability, end node (-1: root), bonus token)] best first, and each node's drafted children."""
    tok, par, score = tree.tokens.tolist(), tree.parents.tolist(), tree.scores.tolist()
    s = {-1: 1.0, **dict(enumerate(score))}
    kids: dict[int, list[int]] = collections.defaultdict(list)
    paths: dict[int, list[int]] = {-1: []}
    for i, p in enumerate(par):
        kids[p].append(i)
        paths[i] = paths[p] + [tok[i]]
    got = lookup([np.asarray(text + paths[n], dtype=np.int32) for n in paths])
    pairs = []
    for j, n in enumerate(paths):
        p_end = max(s[n] - sum(s[c] for c in kids[n]), 0.0)
        t = got.trie(j)
        sources = [collections.Counter({int(a): int(c) for a, p, c in zip(t.tokens, t.parents, t.counts) if p < 0}),
                   own_next(text + paths[n])]
        freq: collections.Counter = collections.Counter()
        for src in sources:
            for d in (tok[c] for c in kids[n]):
                src.pop(d, None)
            total = sum(src.values())
            for b, c in src.items():
                freq[b] += 0.5 * c / total
        pairs += [(p_end * f, n, b) for b, f in freq.items()]
    pairs.sort(key=lambda x: -x[0])
    return pairs, kids


def run(ds, cases: list[dict], max_width: int, steps: int) -> dict:
    config = SpeculatorConfig()
    widths = tuple(w for w in config.planner.widths if w <= max_width)
    config = dataclasses.replace(config, planner=dataclasses.replace(config.planner, widths=widths))
    flat = forward_time(PRESETS[HARDWARE], LLAMA_8B, 1, 1, 1024)
    options = lookup_options(config.draft, config.draft.max_depth, True)
    spec = build_speculator(costs=StepCosts({(1, n): flat for n in widths}), config=config,
                            remote=AnsweredAtOnce(ds.lookup, options), vocab_size=LLAMA_8B.vocab)
    spec.wait_for_unigrams(600)
    drafter = BatchDrafter(spec, widths[-1], LLAMA_8B.vocab, adaptive=True)
    depth, admitted = config.draft.max_depth, 1
    slot = _Slot.of(cases[0], "r0")
    drafter.admit(slot.view())
    pair_in, end_in, anywhere, drafted = collections.Counter(), collections.Counter(), 0, 0
    for _ in range(steps):
        drafter.drafts([slot.view()], last_step_s=flat)
        drafter.prefetch([slot.rid])
        tree, pos = drafter.last_tree(slot.rid), len(slot.output)
        if tree is not None and len(tree):
            path = tree.longest_match(slot.truth[pos : pos + depth])
            if pos + len(path) < slot.truth.shape[0]:
                pairs, _ = ranked_outcomes(tree, slot.prompt + slot.output, lambda c: ds.lookup(c, options))
                end, bonus = (path[-1] if path else -1), int(slot.truth[pos + len(path)])
                rank = next((r for r, (_, n, b) in enumerate(pairs) if n == end and b == bonus), None)
                ends = list(dict.fromkeys(n for _, n, _ in pairs))
                drafted += 1
                anywhere += rank is not None
                for k in KS:
                    pair_in[k] += rank is not None and rank < k
                    end_in[k] += end in ends[:k]
        slot.advance(tree, depth)
        if len(slot.output) >= slot.truth.shape[0]:
            drafter.forget([slot.rid])
            slot = _Slot.of(cases[admitted % len(cases)], f"r{admitted}")
            admitted += 1
            drafter.admit(slot.view())
    spec.close()
    return {"max_width": max_width, "drafted_steps": drafted,
            "outcome_in_top_k": {k: round(pair_in[k] / drafted, 3) for k in KS},
            "end_in_top_k_ends": {k: round(end_in[k] / drafted, 3) for k in KS},
            "bonus_among_candidates": round(anywhere / drafted, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-widths", default="17,5,2", help="the planner's widest width, one run each")
    parser.add_argument("--steps", type=int, default=1500, help="decode steps per run")
    args = parser.parse_args()
    ds = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    rows = [run(ds, cases, int(w), args.steps) for w in args.max_widths.split(",")]
    print(json.dumps(stamped({"steps": args.steps, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
