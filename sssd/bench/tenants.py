"""What the tenant-isolation diagnostics share (``bench/tenant_isolation.py``: a tenant that floods
lookups; ``bench/ingest_isolation.py``: one that bulk-loads): a quiet tenant (one worker of
``sssd bench fleet``) beside another tenant's processes against one real ``sssd serve``, the rows
taken in turn over several runs, the quiet tenant's latency and the server's CPU per row."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sssd.bench import fleet_bench
from sssd.bench.provenance import stamped
from sssd.bench.stats import percentiles, process_cpu_seconds
from sssd.bench.synthetic import corpus

QUIET = fleet_bench.NS


def arguments(doc: str, seconds: float) -> argparse.ArgumentParser:
    """A parser with the quiet tenant's and the runs' options (the script adds its own)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="the quiet worker's batch (4 contexts per request)")
    ap.add_argument("--step-ms", type=float, default=20.0, help="the quiet worker's step")
    ap.add_argument("--seconds", type=float, default=seconds, help="measured window per row")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=1_000_000, help="synthetic tokens in each namespace")
    return ap


def measure(proc, address: str, args, contexts: np.ndarray, others) -> tuple[list[dict], float]:
    """Run the quiet worker and ``others`` (each (function, its leading arguments, kwargs); the
    function also takes ``start_at`` and a queue, and puts one dict on it) from one instant, for
    ``args.seconds``: (what each put, the server's CPU-seconds meanwhile). Stops the server."""
    try:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 3.0  # (every process connected and warm by then)
        quiet = (fleet_bench._worker, (address, args.batch, 4, args.step_ms, args.seconds, 1, contexts), {})
        procs = [ctx.Process(target=fn, args=(*lead, start_at, out), kwargs=kw) for fn, lead, kw in [quiet, *others]]
        for p in procs:
            p.start()
        while time.time() < start_at:
            time.sleep(0.01)
        cpu0 = process_cpu_seconds(proc.pid)
        results = [out.get(timeout=args.seconds + 120) for _ in procs]
        server_cpu = process_cpu_seconds(proc.pid) - cpu0
        for p in procs:
            p.join(timeout=60)
        return results, server_cpu
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def quiet_row(results: list[dict], server_cpu: float, seconds: float) -> dict:
    """The quiet tenant's latency and lateness, and the server's CPU per second."""
    quiet = next(r for r in results if r["namespace"] == QUIET)
    latency = percentiles(quiet["latencies"], "ms", 2)
    return {"quiet_p50_ms": latency["p50"], "quiet_p99_ms": latency["p99"],
            "quiet_late_fraction": round(quiet["late"] / max(quiet["steps"], 1), 4), "quiet_failed": quiet["failed"],
            "server_cpu_s_per_s": round(server_cpu / seconds, 3)}


def run_rows(args, variants: list, row: Callable, stamp: dict) -> None:
    """Each of ``variants`` as a row (``row(db, variant, args, text, starts, contexts)``), the rows in
    turn over ``args.runs`` runs; prints the rows as JSON, ``stamp`` beside them."""
    text, starts = corpus(args.tokens, fleet_bench.VOCAB, seed=5)
    pos = np.random.default_rng(6).integers(16, args.tokens, 8192)
    contexts = np.stack([text[p - 16 : p] for p in pos.tolist()])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for i, variant in enumerate(variants):
                rows.append({"run": run + 1, **row(str(Path(tmp) / f"r{run}-{i}.db"), variant, args, text, starts,
                                                   contexts)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    json.dump(stamped({**stamp, "batch": args.batch, "step_ms": args.step_ms, "seconds": args.seconds, "rows": rows}),
              sys.stdout)
    print()
