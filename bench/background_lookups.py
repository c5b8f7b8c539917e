"""What a worker's single-token table takes from its own steps under ``--namespace-lookup-rate``
(a diagnostic; prints JSON).

One real ``sssd serve`` process on 127.0.0.1 with ``--rate`` contexts/s per namespace, holding
synthetic documents. A decode worker's steps are one Lookup of ``--step-contexts`` contexts every
``--step-ms`` (below the rate) through the SDK's ``DatastoreClient``; beside them, in the same
process, the SDK's ``UnigramLoader`` fetches the trie of every token of a ``--vocab`` vocabulary
through ``RemoteSource.fetch``, as a worker does at start and every 10 minutes. Rows: the steps
alone, and the steps with the loader. Per row: the steps refused (RESOURCE_EXHAUSTED), the
loader's seconds to a complete table (null: not within ``--seconds``), its failed fetches and
its deferred (Busy) parts. Each run takes the rows in turn (``--runs``), each on a fresh server.

    .venv/bin/python bench/background_lookups.py [--rate 5000] [--runs 3] > out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import grpc
import numpy as np

from client_sdk.drafting.unigrams import UnigramLoader, UnigramTable
from client_sdk.transport.remote import DatastoreClient
from client_sdk.transport.source import RemoteSource
from sssd import serve_process
from sssd.bench import fleet_bench
from sssd.bench.provenance import stamped
from sssd.bench.synthetic import runs_on_corpus
from sssd_wire.types import LookupParams

OPTIONS = LookupParams(max_match=4, depth=5, sample_budget=128, max_nodes=64)  # zero-wait prefetch's samples


def _row(db: str, args, text: np.ndarray, starts: np.ndarray, loader_on: bool) -> dict:
    proc, address = serve_process.start_server(db, "--synchronous", "NORMAL", "--namespace-lookup-rate", str(args.rate))
    loader = None
    try:
        fleet_bench.fill(address, (fleet_bench.NS,), text, starts)
        rng = np.random.default_rng(0)
        with DatastoreClient(address, timeout_s=5) as client:
            client.lookup_batch(fleet_bench.NS, [text[:4]], OPTIONS)  # (connected before the clock starts)
            if loader_on:
                source = RemoteSource(DatastoreClient(address, timeout_s=30), fleet_bench.NS, OPTIONS, owns_client=True)
                loader = UnigramLoader(UnigramTable(args.vocab), source.fetch)
            started, steps, refused, loaded_s = time.monotonic(), 0, 0, None
            while time.monotonic() - started < args.seconds:
                at = rng.integers(0, len(text) - 4, args.step_contexts)
                steps += 1
                try:
                    client.lookup_batch(fleet_bench.NS, [text[i : i + 4] for i in at], OPTIONS)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    refused += 1
                if loader is not None and loaded_s is None and loader.complete.is_set():
                    loaded_s = round(time.monotonic() - started, 2)
                time.sleep(args.step_ms / 1000)
        row = {"loader": loader_on, "steps": steps, "steps_refused": refused,
               "refused_fraction": round(refused / max(1, steps), 4)}
        if loader is not None:
            row.update(table_complete_s=loaded_s, tokens_loaded=loader.table.loaded, loader_failures=loader.failures,
                       loader_deferred=getattr(loader, "deferred", None))
        return row
    finally:
        if loader is not None:
            loader.close()
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=5000.0, help="--namespace-lookup-rate of the server (contexts/s)")
    p.add_argument("--vocab", type=int, default=fleet_bench.VOCAB, help="the table's vocabulary")
    p.add_argument("--step-contexts", type=int, default=64, help="contexts per step")
    p.add_argument("--step-ms", type=float, default=20.0, help="pause between steps")
    p.add_argument("--seconds", type=float, default=20.0, help="each row's length")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2_000_000, help="synthetic datastore size")
    args = p.parse_args(argv)
    runs = runs_on_corpus(args.runs, args.tokens, fleet_bench.VOCAB, lambda tmp, r, text, starts: [
        _row(str(Path(tmp) / f"r{r}-{int(on)}.db"), args, text, starts, on) for on in (False, True)])
    print(json.dumps(stamped({"rate": args.rate, "vocab": args.vocab, "step_contexts": args.step_contexts,
                              "step_ms": args.step_ms, "seconds": args.seconds, "runs": runs}), indent=1))


if __name__ == "__main__":
    main()
