"""Scratch: serve-sim with the service and the SDK's background threads on CPU 1 and the step thread on CPU 0."""
import os, sys, json, threading
from pathlib import Path
from sssd.bench import serve_sim
import sssd.serve_process as sp

PIN = os.environ.get("PIN", "1") == "1"

def pin_process(pid, cpus):
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass

orig_start = sp.start_server
def start_server(*a, **k):
    proc, addr = orig_start(*a, **k)
    if PIN:
        pin_process(proc.pid, {1})
    return proc, addr
sp.start_server = start_server

orig_init = serve_sim.Simulation.__init__
def init(self, *a, **k):
    if PIN:
        os.sched_setaffinity(0, {1})  # threads made now (the loop thread, fetchers) inherit CPU 1
    orig_init(self, *a, **k)
    if PIN:
        os.sched_setaffinity(0, {0})  # the step thread itself
serve_sim.Simulation.__init__ = init

batches = [int(x) for x in sys.argv[1].split(",")]
out = serve_sim.run(batches, serve_sim.STEPS, 15_000, progress=False)
from sssd.bench.provenance import stamped
out["pinned"] = PIN
print(json.dumps(stamped(out)))
