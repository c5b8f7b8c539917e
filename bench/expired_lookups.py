"""Lookups whose deadline passes while they wait in an overloaded server: how many it still runs
(a diagnostic; prints JSON).

One real ``sssd serve`` process on 127.0.0.1 holding synthetic documents. This process sends
``--bursts`` bursts of ``--calls`` unary Lookups at once, each of ``--contexts`` contexts with a
``--deadline-ms`` deadline (the SDK's ``DatastoreClient.lookup_future``), far more than the server
answers in time, with a pause after each burst. Per run: the calls answered in time, the lookups
the server ran (its ``sssd_lookup_contexts_total`` over the contexts per call), those it ran for
nobody (ran, not answered in time), those it refused as DEADLINE_EXCEEDED before looking them up
(``sssd_rpcs_total{method="Lookup",code="DEADLINE_EXCEEDED"}``), and the server's CPU seconds.

    .venv/bin/python bench/expired_lookups.py [--runs 3] > out.json
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from client_sdk.transport.remote import DatastoreClient
from sssd import serve_process
from sssd.bench import fleet_bench
from sssd.bench.provenance import stamped
from sssd.bench.stats import process_cpu_seconds
from sssd.bench.synthetic import runs_on_corpus
from sssd_wire.types import LookupParams

OPTIONS = LookupParams(max_match=4, depth=5, sample_budget=128, max_nodes=64)  # zero-wait prefetch's samples


def _counters(metrics_port: int) -> tuple[float, float]:
    """(contexts the server has looked up, Lookups it refused as DEADLINE_EXCEEDED) so far."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    looked = sum(s.value for s in samples if s.name == "sssd_lookup_contexts_total")
    refused = sum(s.value for s in samples if s.name == "sssd_rpcs_total" and s.labels.get("method") == "Lookup"
                  and s.labels.get("code") == "DEADLINE_EXCEEDED")
    return looked, refused


def _run(db: str, args, text: np.ndarray, starts: np.ndarray) -> dict:
    metrics_port = fleet_bench.free_port()
    proc, address = serve_process.start_server(db, "--synchronous", "NORMAL", "--metrics-port", str(metrics_port))
    try:
        fleet_bench.fill(address, (fleet_bench.NS,), text, starts)
        rng = np.random.default_rng(1)
        with DatastoreClient(address, timeout_s=5) as client:
            client.lookup_batch(fleet_bench.NS, [text[:4]], OPTIONS)  # (connected before the clock starts)
            time.sleep(1.0)
            looked0, refused0 = _counters(metrics_port)
            cpu0 = process_cpu_seconds(proc.pid)
            answered = 0
            for _ in range(args.bursts):
                at = rng.integers(0, len(text) - 4, (args.calls, args.contexts))
                calls = [client.lookup_future(fleet_bench.NS, [text[i : i + 4] for i in row], OPTIONS,
                                              timeout_s=args.deadline_ms / 1000, flat=True) for row in at]
                for call in calls:
                    try:
                        call.result(timeout=30)
                        answered += 1
                    except Exception:  # DEADLINE_EXCEEDED (the client's or the server's)
                        pass
                time.sleep(args.pause_s)
            time.sleep(1.0)  # (every lookup the server went on with has ended by now)
            looked, refused = _counters(metrics_port)
            server_cpu = process_cpu_seconds(proc.pid) - cpu0
        ran = (looked - looked0) / args.contexts
        return {"calls": args.bursts * args.calls, "answered_in_time": answered, "server_ran": round(ran, 1),
                "ran_for_nobody": round(ran - answered, 1), "refused_expired": int(refused - refused0),
                "server_cpu_s": round(server_cpu, 3)}
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=64, help="calls per burst")
    p.add_argument("--contexts", type=int, default=1024, help="contexts per call")
    p.add_argument("--deadline-ms", type=float, default=30.0, help="each call's deadline")
    p.add_argument("--bursts", type=int, default=10)
    p.add_argument("--pause-s", type=float, default=0.5, help="pause after each burst")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2_000_000, help="synthetic datastore size")
    args = p.parse_args(argv)
    runs = runs_on_corpus(args.runs, args.tokens, fleet_bench.VOCAB,
                          lambda tmp, r, text, starts: _run(str(Path(tmp) / f"r{r}.db"), args, text, starts))
    print(json.dumps(stamped({"calls": args.calls, "contexts": args.contexts, "deadline_ms": args.deadline_ms,
                              "bursts": args.bursts, "runs": runs}), indent=1))


if __name__ == "__main__":
    main()
