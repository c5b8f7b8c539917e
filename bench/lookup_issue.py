"""What issuing a decode step's lookup costs the worker: one ``lookup_future`` per step, the
client idle in between (the step's GPU time), against a real ``sssd serve`` process.

    PYTHONPATH=<tree> .venv/bin/python bench/lookup_issue.py [--steps 300] [--contexts 64]

Prints JSON: microseconds until ``lookup_future`` returns (the worker's own time to send it),
the round trip until the answer is in (p50, p99), threads started per call, and the client
process's CPU seconds. It uses only ``DatastoreClient.lookup_future`` and
``sssd.serve_process``, so it runs over earlier trees too, for A/B comparisons.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from client_sdk.transport.remote import DatastoreClient
from sssd import serve_process
from sssd_wire.types import LookupParams

STEP_S = 0.008  # the GPU time of a step: no call in flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--contexts", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = serve_process.start_server(str(Path(tmp) / "d.db"), "--synchronous", "OFF")
        try:
            with DatastoreClient(address, timeout_s=60) as setup:
                setup.create_namespace("ns", 1000)
                setup.ingest("ns", [(f"d{i}", rng.integers(0, 1000, 500).tolist()) for i in range(400)])
                setup.snapshot()
            print(json.dumps(measure(address, args.steps, args.contexts, rng)))
        finally:
            proc.terminate()
            proc.wait()


def measure(address: str, steps: int, n: int, rng: np.random.Generator) -> dict:
    contexts = [rng.integers(0, 1000, 16).astype(np.int32) for _ in range(n)]
    options = LookupParams(depth=9)
    started = [0]
    real = threading.Thread.start

    def counted(self, *a, **k):
        started[0] += 1
        return real(self, *a, **k)

    issue, trip = [], []
    with DatastoreClient(address) as client:
        client.lookup_future("ns", contexts, options, flat=True).result()  # connected, warm
        threading.Thread.start = counted
        cpu0 = time.process_time()
        try:
            for _ in range(steps):
                t0 = time.perf_counter()
                fut = client.lookup_future("ns", contexts, options, flat=True)
                t1 = time.perf_counter()
                fut.result()
                issue.append((t1 - t0) * 1e6)
                trip.append((time.perf_counter() - t0) * 1e6)
                time.sleep(STEP_S)
        finally:
            threading.Thread.start = real
        cpu = time.process_time() - cpu0
    return {"steps": steps, "contexts": n, "issue_us": {"p50": round(float(np.median(issue)), 1)},
            "round_trip_us": {"p50": round(float(np.median(trip)), 1), "p99": round(float(np.percentile(trip, 99)), 1)},
            "threads_started_per_call": round(started[0] / steps, 3), "client_cpu_s": round(cpu, 3)}


if __name__ == "__main__":
    main()
