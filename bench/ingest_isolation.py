"""What one tenant's bulk ingest on the writer costs another tenant's lookups, with and without
``--namespace-ingest-rate`` (a diagnostic of tenant isolation; prints JSON).

One real ``sssd serve`` writer on 127.0.0.1 per row, two namespaces holding the same synthetic
documents. The quiet tenant is one decode worker (``sssd bench fleet``'s worker, in its own
process): a Lookup of batch x 4 contexts every ``--step-ms``, late when not back by the next step.
The bulk tenant is one process ingesting new random documents as fast as the writer takes them
(``--doc-tokens``-token documents, 64 per unary Ingest, each call as soon as the last is back):
a bulk load through the SDK's client. Rows: the quiet tenant alone; with the bulk load and no rate;
with it and ``--rate`` tokens/s per namespace. Each run goes through the rows in turn (``--runs``).

    .venv/bin/python bench/ingest_isolation.py [--rate 1000000] [--runs 3] [--seconds 10] > out.json
"""

from __future__ import annotations

import sys
import time

import numpy as np

from sssd import serve_process
from sssd.bench import fleet_bench, tenants

BULK = "bulk"


def _bulk(address: str, doc_tokens: int, seconds: float, start_at: float, out) -> None:
    """New documents into BULK, one Ingest of 64 after another, for ``seconds`` from ``start_at``."""
    from client_sdk.transport.remote import DatastoreClient

    rng = np.random.default_rng(9)
    stored = refused = 0
    with DatastoreClient(address, timeout_s=30) as client:
        while time.time() < start_at:
            time.sleep(0.001)
        t_end, i = time.time() + seconds, 0
        while time.time() < t_end:
            docs = [(f"b{i}-{j}", rng.integers(0, fleet_bench.VOCAB, doc_tokens).astype(np.int32)) for j in range(64)]
            i += 1
            try:
                client.ingest(BULK, docs, timeout_s=30)
                stored += 64 * doc_tokens
            except Exception:  # noqa: BLE001 - a refusal (over its rate) counts, and the load goes on
                refused += 1
    out.put({"namespace": BULK, "tokens": stored, "refused": refused})


def _row(db: str, variant: tuple[float, bool], args, text, starts, contexts) -> dict:
    rate, bulk = variant
    flags = ("--namespace-ingest-rate", str(rate)) if rate else ()
    proc, address = serve_process.start_server(db, "--synchronous", "NORMAL", "--max-live-tokens", "0", *flags)
    try:
        fleet_bench.fill(address, (tenants.QUIET, BULK), text, starts)
    except BaseException:
        proc.kill()
        raise
    load = [(_bulk, (address, args.doc_tokens, args.seconds), {})] if bulk else []
    results, server_cpu = tenants.measure(proc, address, args, contexts, load)
    loaded = next((r for r in results if r["namespace"] == BULK), {"tokens": 0, "refused": 0})
    return {"rate": rate, "bulk": bulk, **tenants.quiet_row(results, server_cpu, args.seconds),
            "bulk_tokens_per_s": round(loaded["tokens"] / args.seconds), "bulk_refused_calls": loaded["refused"]}


def main(argv=None) -> int:
    ap = tenants.arguments(__doc__, seconds=10.0)
    ap.add_argument("--rate", type=float, default=1_000_000.0, help="tokens/s per namespace in the limited row")
    ap.add_argument("--doc-tokens", type=int, default=2000, help="tokens per bulk document")
    args = ap.parse_args(argv)
    tenants.run_rows(args, [(0.0, False), (0.0, True), (args.rate, True)], _row, {"doc_tokens": args.doc_tokens})
    return 0


if __name__ == "__main__":
    sys.exit(main())
