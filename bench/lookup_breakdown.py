"""Where a zero-wait prefetch's round trip goes: the client's wait against the server's own time.

A real ``sssd serve`` (with its /metrics) is filled with the serving simulation's ShareGPT
datastore as ``sssd bench serve-sim`` fills it, leaving the segments its background compaction
left. One client on loopback (the SDK's ``DatastoreClient.lookup_future``, as a decode worker
uses it) sends lookups of real MT-Bench / HumanEval suffixes one at a time, idle in between:
1, 8 and ``--contexts`` contexts per call. The server's own time per call is its
``sssd_rpc_seconds`` mean over the same calls (from the interceptor's entry to its return:
authorisation, the hop to a lookup thread, the kernel, the answer's encoding; not gRPC's
receive, decode and send). Then the namespace is compacted into one segment and the
``--contexts`` row is measured again.

    .venv/bin/python bench/lookup_breakdown.py [--calls 150] [--contexts 80] [--json]

Prints JSON: the segment count per phase, and per row the client's round trip p50 / p90 (ms)
and the server's mean (ms).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from client_sdk.transport.remote import DatastoreClient
from lookup_arrival import suffixes, traffic  # the same traffic (bench/ is on the path when run as a script)
from sssd.bench import llama3, serve_sim
from sssd.bench.fleet_bench import free_port
from sssd.bench.provenance import stamped
from sssd.serve_process import start_server


def server_lookups(metrics_port: int) -> tuple[float, float]:
    """(seconds, calls) of Lookup so far, from the server's histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    total = re.search(r'sssd_rpc_seconds_sum\{method="Lookup"\} (\S+)', text)
    count = re.search(r'sssd_rpc_seconds_count\{method="Lookup"\} (\S+)', text)
    return (float(total.group(1)), float(count.group(1))) if total and count else (0.0, 0.0)


def row(client: DatastoreClient, metrics_port: int, batches: list[list[np.ndarray]], options) -> dict:
    s0, c0 = server_lookups(metrics_port)
    trips = []
    for contexts in batches:
        t0 = time.perf_counter()
        client.lookup_future(serve_sim.NAMESPACE, contexts, options, 5.0, True).result()
        trips.append(time.perf_counter() - t0)
        time.sleep(0.002)
    s1, c1 = server_lookups(metrics_port)
    ms = lambda q: round(float(np.percentile(trips, q)) * 1e3, 3)  # noqa: E731
    return {"contexts": len(batches[0]), "round_trip_ms": {"p50": ms(50), "p90": ms(90)},
            "server_mean_ms": round((s1 - s0) / max(c1 - c0, 1) * 1e3, 3)}


def segments(client: DatastoreClient) -> int:
    return int(client.stats(serve_sim.NAMESPACE).namespaces[0].segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="calls per row")
    parser.add_argument("--contexts", type=int, default=80, help="contexts of the big row (batch 16 x 5)")
    parser.add_argument("--conversations", type=int, default=15_000)
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    args = parser.parse_args()
    cases, docs, options = traffic(args.conversations)
    rng = np.random.default_rng(0)
    metrics_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(str(Path(tmp) / "breakdown.db"), "--synchronous", "NORMAL",
                                     "--metrics-port", str(metrics_port), "--idle-compaction-s", "0")
        try:
            serve_sim.fill_service(address, docs, llama3.VOCAB_SIZE, False, settle=False)
            with DatastoreClient(address, timeout_s=5) as client:
                grpc.channel_ready_future(client.channel).result(timeout=10)
                pool = [suffixes(cases, args.contexts, rng) for _ in range(args.calls)]
                row(client, metrics_port, pool[:20], options)  # warm-up: connections, kernels
                filled = segments(client)
                rows = [row(client, metrics_port, [c[:n] for c in pool], options) for n in (1, 8, args.contexts)]
                client.compact(serve_sim.NAMESPACE, full=True)
                rows.append({**row(client, metrics_port, pool, options), "compacted": True})
                merged = segments(client)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(json.dumps(stamped({"segments_after_fill": filled, "segments_compacted": merged, "calls": args.calls,
                              "rows": rows}), indent=None if args.json else 1))


if __name__ == "__main__":
    main()
