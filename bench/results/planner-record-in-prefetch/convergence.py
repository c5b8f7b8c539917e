"""Steps for the planner to settle on the best draft size after its costs change, when each step's
time is told before the next plan (as shipped) or after it, with the step's record (61edf25's
``StepPlanner.record_of_step``; the SGLang worker's deferral that was tried and reverted).

    git worktree add /tmp/t61 61edf25
    PYTHONPATH=/tmp/t61:/tmp/t61/tests .venv/bin/python bench/results/planner-record-in-prefetch/convergence.py

Deterministic (no timing enters it). The loop is tests/test_planner.py's ``run`` with the
late telling of the worker: the step's time told after the next step's plan and choice, before
its drafting time, as BatchDrafter.prefetch did at 61edf25. Prints JSON: per cost change, the
median and largest settling time over 20 change points (steps 280-318).
"""

import json

import numpy as np
from test_planner import DRAFT_S, SCORES, StepPlanner, best_k, flat, gentle, settled_at, steep, table


def run(planner, cost_at, steps, late_mode, batch=1):
    chosen, late = [], None
    for step in range(steps):
        cost = cost_at(step)
        budget = planner.plan(batch)
        k = 0
        if budget:
            scores = SCORES[: planner.build_size()]
            k = planner.choose_for_drafts([scores[:budget]] * batch)
        if late is not None:
            planner.observe_step(*late[:3], of=late[3])
        if budget:
            planner.observe_drafting(batch, DRAFT_S * batch)
        if k:
            for _ in range(batch):
                planner.record(float(scores[:k].sum()), float(scores[:k].sum()))
        width = 1 + k if budget else planner.blank
        if late_mode:
            late = (batch, width, cost(width), planner.record_of_step())
        else:
            planner.observe_step(batch, width, cost(width))
        chosen.append(None if planner.probe is not None else k)
    return chosen


CASES = [("flat -> 2 x flat", flat, lambda n: 2 * flat(n)), ("gentle -> 2 x gentle", gentle, lambda n: 2 * gentle(n)),
         ("flat -> 1.5 x flat", flat, lambda n: 1.5 * flat(n)), ("flat -> steep", flat, steep),
         ("steep -> flat", steep, flat), ("gentle -> 3 x steep", gentle, lambda n: 3 * steep(n)),
         ("3 x steep -> gentle", lambda n: 3 * steep(n), gentle)]
rows = []
for name, before, after in CASES:
    row = {"change": name}
    for mode, late_mode in (("told_before_the_next_plan", False), ("told_after_it", True)):
        settle = [settled_at(run(StepPlanner(table(before)), lambda s, t0=t0: before if s < t0 else after,
                                 t0 + 400, late_mode), best_k(after), start=t0) for t0 in range(280, 320, 2)]
        row[mode] = {"median": int(np.median(settle)), "max": max(settle)}
    rows.append(row)
print(json.dumps({"rows": rows}, indent=1))
