import sys, time, collections, tempfile
from pathlib import Path
import numpy as np
from client_sdk.drafting import speculator as S, outcomes, tree, drafters, planner
from client_sdk.transport import source
from sssd.bench import serve_sim as SS
T = collections.defaultdict(list)
ON = [False]
def timed(obj, name, label=None):
    label = label or name
    f = getattr(obj, name)
    def w(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally:
            if ON[0]: T[label].append(time.perf_counter() - t)
    setattr(obj, name, w)
timed(S.Speculator, '_draft')
timed(S.Speculator, '_remote_tries')
timed(S.Speculator, '_history')
timed(source.RemoteSource, 'collect')
timed(S, 'resolve_picks')
timed(outcomes.resolve_kernels, 'resolve')
timed(drafters.CalibratedMerge, 'draft')
timed(tree.merge_kernels, 'draft', 'kernel_draft')
from sssd.bench import datasets, llama3
from sssd.serve_process import start_server
batches = [int(x) for x in sys.argv[1].split(',')]
cases = datasets.mtbench_cases() + datasets.humaneval_cases()
docs = datasets.sharegpt_datastore(2000, 2000 + 15000)
with tempfile.TemporaryDirectory() as tmp:
    proc, address = start_server(str(Path(tmp) / "sim.db"), "--synchronous", "NORMAL")
    try:
        SS.fill_service(address, docs, llama3.VOCAB_SIZE, False)
        for b in batches:
            T.clear(); ON[0] = True
            r = SS.Simulation(cases, address, b, "zero-wait", SS.steps_for(b, 300, SS.MIN_REQUEST_STEPS)).run()
            ON[0] = False
            print(b, r['critical_path_us'], r['tau'])
            for k, v in T.items():
                if len(v) < 30: continue
                v = np.array(v[20:]) * 1e6
                print(f"  {k:18s} n={len(v):4d} p50={np.median(v):8.1f} p90={np.percentile(v,90):8.1f} mean={v.mean():8.1f}")
    finally:
        proc.terminate(); proc.wait(timeout=60)
