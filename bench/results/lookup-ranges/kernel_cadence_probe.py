"""Scratch probe (a lead, not a product bench): the datastore's lookup kernel on the fleet bench's
2M-token synthetic datastore, one 128-context call (the SDK's prefetch parameters) at a time,
back to back (thread CPU p50) and 20 ms apart (thread CPU mean), in µs per context. Run with
``PYTHONPATH=<a tree>`` to measure that tree's kernel; prints one JSON line naming the kernel file.
(Tidied after the runs: unused lines removed, nothing measured changed.)"""
import json
import os
import tempfile
import time

import numpy as np

import datastore_service.core.kernels as kernels
from datastore_service.core.index import pack_tails
from sssd.bench import fleet_bench as fb
from sssd.bench.synthetic import corpus

text, starts = corpus(2_000_000, fb.VOCAB, seed=5)
pos = np.random.default_rng(6).integers(16, 2_000_000, 8192)
contexts = np.stack([text[p - 16 : p] for p in pos.tolist()])
ds = fb._in_process_store(os.path.join(tempfile.mkdtemp(), "x.db"), text, starts)
params = fb.prefetch_params()
r2 = np.random.default_rng(1)
calls = [pack_tails(list(contexts[r2.integers(0, 8192, 128)]), 4) for _ in range(50)]
i = [0]


def full():
    i[0] = (i[0] + 1) % len(calls)
    return ds.lookup_packed(fb.NS, *calls[i[0]], params)


def hot(reps=300):
    ts = []
    for _ in range(reps):
        t = time.thread_time()
        full()
        ts.append(time.thread_time() - t)
    return float(np.median(ts)) * 1e6 / 128


def cold(reps=200, gap=0.02):
    ts = []
    for _ in range(reps):
        time.sleep(gap)
        t = time.thread_time()
        full()
        ts.append(time.thread_time() - t)
    return float(np.mean(ts)) * 1e6 / 128


full()
print(json.dumps({"kernel_file": kernels.__file__, "hot_us_per_ctx_p50": round(hot(), 2),
                  "cold_us_per_ctx_mean": round(cold(), 2)}))
