"""Scratch (kept beside its results): timers around named SDK functions inside the serving
simulation's zero-wait mode (the real service, the real Speculator), per batch size. One script
for both builds of this comparison; it replaces the three copies the runs used, with the same
timers. Run from a build's worktree with PYTHONPATH set to it, e.g.

    PYTHONPATH=. python bench/results/fused-resolve/step_timers.py 1,4,16 \
        client_sdk.drafting.speculator:Speculator._draft          # draft-timer/ (123f60f and cc18382)
    ... 1 client_sdk.drafting.speculator:Speculator._draft client_sdk.drafting.speculator:Speculator._remote_tries \
        client_sdk.drafting.speculator:Speculator._history client_sdk.transport.source:RemoteSource.collect \
        client_sdk.drafting.speculator:resolve_picks client_sdk.drafting.resolve_kernels:resolve \
        client_sdk.drafting.drafters:CalibratedMerge.draft client_sdk.drafting.merge_kernels:draft   # 123f60f
    ... 1 <the same first four> client_sdk.drafting.speculator:prepare_resolve \
        client_sdk.drafting.fused_kernels:resolve_and_draft client_sdk.drafting.drafters:CalibratedMerge.draft_resolving \
        client_sdk.drafting.tree:_rows                                                               # cc18382

A function is timed where the SDK looks it up: a module-level function in the module that calls
it (``speculator:resolve_picks``), a kernel in its own module (numba dispatchers are module
attributes, read at call time by modules that imported the module). Prints per batch the
critical path, τ, and p50 / p90 / p99 µs of each timed function (its first 20 calls left out).
"""
import collections
import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sssd.bench import datasets, llama3
from sssd.bench import serve_sim as SS
from sssd.serve_process import start_server

TIMES = collections.defaultdict(list)
ON = [False]


def timed(path: str) -> str:
    module, attr = path.split(":")
    owner = importlib.import_module(module)
    *outer, name = attr.split(".")
    for part in outer:
        owner = getattr(owner, part)
    f = getattr(owner, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            if ON[0]:
                TIMES[attr].append(time.perf_counter() - t)

    setattr(owner, name, wrapper)
    return attr


def main() -> None:
    batches = [int(x) for x in sys.argv[1].split(",")]
    labels = [timed(p) for p in sys.argv[2:]]
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    docs = datasets.sharegpt_datastore(2000, 2000 + 15000)
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(str(Path(tmp) / "sim.db"), "--synchronous", "NORMAL")
        try:
            SS.fill_service(address, docs, llama3.VOCAB_SIZE, False)
            for b in batches:
                TIMES.clear()
                ON[0] = True
                r = SS.Simulation(cases, address, b, "zero-wait", SS.steps_for(b, 300, SS.MIN_REQUEST_STEPS)).run()
                ON[0] = False
                print(b, r["critical_path_us"], r["tau"], flush=True)
                for label in labels:
                    v = np.array(TIMES[label][20:]) * 1e6
                    if v.shape[0]:
                        print(f"  {label:34s} n={v.shape[0]:5d} p50={np.median(v):8.1f} "
                              f"p90={np.percentile(v, 90):8.1f} p99={np.percentile(v, 99):8.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
