"""What a tenant that floods the datastore costs another tenant, with and without
``--namespace-lookup-rate`` (a diagnostic of tenant isolation; prints JSON).

One real ``sssd serve`` process on 127.0.0.1 per row, two namespaces holding the same synthetic
documents. The quiet tenant is one decode worker (``sssd bench fleet``'s worker, in its own
process): a Lookup of batch x 4 contexts every ``--step-ms`` (zero-wait prefetch sized), late
when not back by the next step. The noisy tenant is ``--noisy`` processes of the same worker at
1,024 contexts per call and no pause: each call as soon as the last is back (or refused). It is
raw gRPC clients, the adversarial case: a worker of the SDK would back off (its breaker) once
refused. Rows: the quiet tenant alone; with the noisy one and no rate; with the noisy one and
``--rate`` contexts/s per namespace. Each run goes through the rows in turn (``--runs``), so
that the machine's slow and fast spells fall on every row.

    .venv/bin/python bench/tenant_isolation.py [--rate 10000] [--runs 3] [--seconds 8] > out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sssd import serve_process
from sssd.bench import fleet_bench
from sssd.bench.provenance import stamped
from sssd.bench.stats import percentiles, process_cpu_seconds
from sssd.bench.synthetic import corpus

QUIET, NOISY = fleet_bench.NS, "noisy"


def _server(db: str, rate: float, text: np.ndarray, starts: np.ndarray):
    flags = ("--namespace-lookup-rate", str(rate)) if rate else ()
    proc, address = serve_process.start_server(db, "--synchronous", "NORMAL", *flags)
    fleet_bench.fill(address, (QUIET, NOISY), text, starts)
    return proc, address


def _row(db: str, rate: float, noisy: int, args, text, starts, contexts) -> dict:
    proc, address = _server(db, rate, text, starts)
    try:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 3.0  # (every process connected and warm by then)
        procs = [ctx.Process(target=fleet_bench._worker, args=(address, args.batch, 4, args.step_ms, args.seconds, 1,
                                                              contexts, start_at, out))]
        procs += [ctx.Process(target=fleet_bench._worker,
                              args=(address, 256, 4, 1.0, args.seconds, 2 + k, contexts, start_at, out),
                              kwargs={"namespace": NOISY}) for k in range(noisy)]
        for p in procs:
            p.start()
        while time.time() < start_at:
            time.sleep(0.01)
        cpu0 = process_cpu_seconds(proc.pid)
        results = [out.get(timeout=args.seconds + 120) for _ in procs]
        server_cpu = process_cpu_seconds(proc.pid) - cpu0
        for p in procs:
            p.join(timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    quiet = next(r for r in results if r["namespace"] == QUIET)
    noisy_rows = [r for r in results if r["namespace"] == NOISY]
    latency = percentiles(quiet["latencies"], "ms", 2)
    return {"rate": rate, "noisy_processes": noisy,
            "quiet_p50_ms": latency["p50"], "quiet_p99_ms": latency["p99"],
            "quiet_late_fraction": round(quiet["late"] / max(quiet["steps"], 1), 4),
            "quiet_failed": quiet["failed"],
            "noisy_contexts_per_s": round(sum(r["contexts"] for r in noisy_rows) / args.seconds),
            "noisy_refused_per_s": round(sum(r["failed"] for r in noisy_rows) / args.seconds),
            "server_cpu_s_per_s": round(server_cpu / args.seconds, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10_000.0, help="contexts/s per namespace in the limited row")
    ap.add_argument("--noisy", type=int, default=1, help="processes of the flooding tenant")
    ap.add_argument("--batch", type=int, default=32, help="the quiet worker's batch (4 contexts per request)")
    ap.add_argument("--step-ms", type=float, default=20.0, help="the quiet worker's step")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window per row")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=1_000_000, help="synthetic tokens in each namespace")
    args = ap.parse_args(argv)
    text, starts = corpus(args.tokens, fleet_bench.VOCAB, seed=5)
    pos = np.random.default_rng(6).integers(16, args.tokens, 8192)
    contexts = np.stack([text[p - 16 : p] for p in pos.tolist()])
    variants = [(0.0, 0), (0.0, args.noisy), (args.rate, args.noisy)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for i, (rate, noisy) in enumerate(variants):
                row = _row(str(Path(tmp) / f"r{run}-{i}.db"), rate, noisy, args, text, starts, contexts)
                rows.append({"run": run + 1, **row})
                print(json.dumps(rows[-1]), file=sys.stderr)
    json.dump(stamped({"batch": args.batch, "step_ms": args.step_ms, "seconds": args.seconds, "rows": rows}),
              sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
