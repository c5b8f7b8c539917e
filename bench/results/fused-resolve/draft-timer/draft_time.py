"""Scratch: serve-sim zero-wait at given batches; time of Speculator._draft per step (and drafts())."""
import sys, time, collections, tempfile, json
from pathlib import Path
import numpy as np
from sglang_integration import drafts as D
from client_sdk.drafting import speculator as S
from sssd.bench import serve_sim as SS
T = collections.defaultdict(list)
ON = [False]
def timed(obj, name):
    f = getattr(obj, name)
    def w(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally:
            if ON[0]: T[name].append(time.perf_counter() - t)
    setattr(obj, name, w)
timed(S.Speculator, '_draft')
from sssd.bench import datasets, llama3
from sssd.serve_process import start_server
batches = [int(x) for x in sys.argv[1].split(',')]
cases = datasets.mtbench_cases() + datasets.humaneval_cases()
docs = datasets.sharegpt_datastore(2000, 2000 + 15000)
out = {}
with tempfile.TemporaryDirectory() as tmp:
    proc, address = start_server(str(Path(tmp) / "sim.db"), "--synchronous", "NORMAL")
    try:
        SS.fill_service(address, docs, llama3.VOCAB_SIZE, False)
        for b in batches:
            T.clear(); ON[0] = True
            r = SS.Simulation(cases, address, b, "zero-wait", SS.steps_for(b, 300, SS.MIN_REQUEST_STEPS)).run()
            ON[0] = False
            v = np.array(T['_draft'][20:]) * 1e6
            out[b] = {"critical": r['critical_path_us'], "draft_p50": round(float(np.median(v)), 1),
                      "draft_p99": round(float(np.percentile(v, 99)), 1), "tau": r['tau']}
            print(b, out[b], flush=True)
    finally:
        proc.terminate(); proc.wait(timeout=60)
print(json.dumps(out))
