import sys, time, tempfile, os
import numpy as np, numba
from sssd.bench import fleet_bench as fb
from sssd.bench.synthetic import corpus
from datastore_service.core import kernels as K
from datastore_service.core.index import pack_tails

text, starts = corpus(2_000_000, fb.VOCAB, seed=5)
rng = np.random.default_rng(6)
pos = rng.integers(16, 2_000_000, 8192)
contexts = np.stack([text[p - 16 : p] for p in pos.tolist()])
tmp = tempfile.mkdtemp()
ds = fb._in_process_store(os.path.join(tmp, 'x.db'), text, starts)
params = fb.prefetch_params()
ns = ds._namespaces[fb.NS] if hasattr(ds, '_namespaces') else None
# get the view
view = ds.view(fb.NS) if hasattr(ds, 'view') else None


import json, subprocess
r2 = np.random.default_rng(1)
calls = [pack_tails(list(contexts[r2.integers(0, 8192, 128)]), 4) for _ in range(50)]
i = [0]
def nxt():
    i[0] = (i[0]+1) % len(calls); return calls[i[0]]
full = lambda: ds.lookup_packed(fb.NS, *nxt(), params)
full()
def hot(reps=300):
    ts=[]
    for _ in range(reps):
        t=time.thread_time(); full(); ts.append(time.thread_time()-t)
    return float(np.median(ts))*1e6/128
def cold(reps=200, gap=0.02):
    ts=[]
    for _ in range(reps):
        time.sleep(gap); t=time.thread_time(); full(); ts.append(time.thread_time()-t)
    return float(np.mean(ts))*1e6/128
import datastore_service.core.kernels as KK
print(json.dumps({"kernel_file": KK.__file__, "hot_us_per_ctx_p50": round(hot(),2), "cold_us_per_ctx_mean": round(cold(),2)}))
