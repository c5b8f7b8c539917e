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

import sys

from sssd import serve_process
from sssd.bench import fleet_bench, tenants

NOISY = "noisy"


def _row(db: str, variant: tuple[float, int], args, text, starts, contexts) -> dict:
    rate, noisy = variant
    flags = ("--namespace-lookup-rate", str(rate)) if rate else ()
    proc, address = serve_process.start_server(db, "--synchronous", "NORMAL", *flags)
    try:
        fleet_bench.fill(address, (tenants.QUIET, NOISY), text, starts)
    except BaseException:
        proc.kill()
        raise
    flood = [(fleet_bench._worker, (address, 256, 4, 1.0, args.seconds, 2 + k, contexts), {"namespace": NOISY})
             for k in range(noisy)]
    results, server_cpu = tenants.measure(proc, address, args, contexts, flood)
    noisy_rows = [r for r in results if r["namespace"] == NOISY]
    return {"rate": rate, "noisy_processes": noisy, **tenants.quiet_row(results, server_cpu, args.seconds),
            "noisy_contexts_per_s": round(sum(r["contexts"] for r in noisy_rows) / args.seconds),
            "noisy_refused_per_s": round(sum(r["failed"] for r in noisy_rows) / args.seconds)}


def main(argv=None) -> int:
    ap = tenants.arguments(__doc__, seconds=8.0)
    ap.add_argument("--rate", type=float, default=10_000.0, help="contexts/s per namespace in the limited row")
    ap.add_argument("--noisy", type=int, default=1, help="processes of the flooding tenant")
    args = ap.parse_args(argv)
    tenants.run_rows(args, [(0.0, 0), (0.0, args.noisy), (args.rate, args.noisy)], _row, {})
    return 0


if __name__ == "__main__":
    sys.exit(main())
