"""What the SGLang worker's rank 0 spends on a decode step's requests in overlap mode, as their
outputs grow: the requests' views with the tokens relayed from the last step
(``sglang_integration.drafts.relayed_views``, what the worker's ``_with_relayed`` calls) and the
drafts built from them (``BatchDrafter.drafts``: sync, draft, the fixed-width arrays).

SGLang's result processing runs one step behind in overlap mode: a request's ``output_ids`` (an
``array("q")`` in sglang 0.5.23, as here) lacks the last step's accepted tokens, which come
relayed in the batch's flat accept_tokens. Here each
of ``batch`` requests starts decoding with ``L`` output tokens already committed (a prompt of 512
before them) and runs ``--steps`` steps; its own text is the synthetic corpus of
``sssd.bench.synthetic`` (repeated phrases, so own-text drafts are accepted), and each step
commits the draft's longest path that matches that text, plus the next token, as the serving
simulation does. Drafts come from the request's own text only (no datastore), 16 wide.

    .venv/bin/python bench/relay_views.py [--batch-sizes 16,64] [--output-lengths 256,1024,4096] [--steps 100]

Prints JSON: per batch size and output length, p50 / mean µs per step (whole batch) of the views
alone and of views + drafts. It runs over an earlier commit with ``PYTHONPATH=<its tree>``: a build
without ``relayed_views`` splices the relayed tokens into a copy of each output with its own
``splice_overlap``, as its worker did.
"""

from __future__ import annotations

import argparse
import json
import time
from array import array

import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from sglang_integration import drafts
from sglang_integration.drafts import BatchDrafter, RequestView
from sssd.bench import synthetic
from sssd.bench.provenance import stamped

WIDTH = 16  # verify width (root included): NGRAM's default launch width is 12, the planner's widest 16
PROMPT = 512
VOCAB = 32_000
WARMUP = 5


def views_of(reqs, prev, lens, committed):
    """The build's own way to the step's views: relayed_views (since it exists), else a
    splice_overlap copy of each output, as that build's worker made."""
    views = [RequestView(rid, prompt, out) for rid, prompt, out in reqs]
    if hasattr(drafts, "relayed_views"):
        return drafts.relayed_views(views, prev, lens, WIDTH, committed)[0]
    return [v._replace(output=drafts.splice_overlap(v.output, prev, lens, i, WIDTH, committed[i])[0])
            for i, v in enumerate(views)]


def run(batch: int, length: int, steps: int, seed: int = 0) -> dict:
    need = PROMPT + length + (steps + WARMUP) * WIDTH + 1
    text, _ = synthetic.corpus(batch * need, VOCAB, seed=seed)
    truth = [text[b * need : (b + 1) * need] for b in range(batch)]
    drafter = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=WIDTH - 1)), WIDTH, VOCAB)
    reqs = []  # (rid, prompt, output_ids): SGLang's lists, output_ids one step behind
    committed = []  # each request's output length, the relayed tokens included
    for b in range(batch):
        # SGLang 0.5.23 keeps both as array("q") (schedule_batch.py: Req.output_ids)
        prompt, output = array("q", truth[b][:PROMPT].tolist()), array("q", truth[b][PROMPT : PROMPT + length].tolist())
        reqs.append((f"r{b}", prompt, output))
        drafter.admit(RequestView(f"r{b}", prompt, output))
        committed.append(length)
    prev, lens = [0] * (batch * WIDTH), [0] * batch  # nothing relayed before the first step
    views_us, step_us = [], []
    for step in range(steps + WARMUP):
        t0 = time.perf_counter()
        views = views_of(reqs, prev, lens, committed)
        t1 = time.perf_counter()
        drafter.drafts(views)
        t2 = time.perf_counter()
        if step >= WARMUP:
            views_us.append((t1 - t0) * 1e6)
            step_us.append((t2 - t0) * 1e6)
        for b, (rid, _, output) in enumerate(reqs):
            output.extend(prev[b * WIDTH : b * WIDTH + lens[b]])  # result processing catches up one step late
            pos = PROMPT + committed[b]
            tree = drafter.last_tree(rid)
            path = tree.longest_match(truth[b][pos : pos + WIDTH - 1]) if tree is not None else []
            new = truth[b][pos : pos + len(path) + 1].tolist()
            prev[b * WIDTH : b * WIDTH + len(new)] = new
            lens[b] = len(new)
            committed[b] += len(new)
    drafter.spec.close()
    v, s = np.asarray(views_us), np.asarray(step_us)
    return {"batch": batch, "output_tokens": length, "steps": steps,
            "views_us": {"p50": round(float(np.median(v)), 1), "mean": round(float(v.mean()), 1)},
            "views_and_drafts_us": {"p50": round(float(np.median(s)), 1), "mean": round(float(s.mean()), 1)},
            "tau": round((sum(committed) - batch * length) / (batch * (steps + WARMUP)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--output-lengths", default="256,1024,4096")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    rows = [run(b, n, args.steps) for b in map(int, args.batch_sizes.split(","))
            for n in map(int, args.output_lengths.split(","))]
    print(json.dumps(stamped({"width": WIDTH, "prompt_tokens": PROMPT, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
