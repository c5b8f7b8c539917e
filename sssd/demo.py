"""``sssd demo``: the main job on an embedded default.

Runs the datastore end to end on a SQLite file under ``--workdir``: ingests a corpus,
builds and snapshots segments, answers lookups, measures freshness and restart, and prints
a table. Later stages of the product (drafting replay, the reference decoder) extend it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from sssd.bench.datastore_bench import run


def run_demo(args, out: TextIO) -> int:
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(f"sssd demo: datastore on an embedded SQLite file in {args.workdir} ({args.tokens:,} tokens)", file=out)
    r = run(args.tokens, 128_000, lookups=5000, workdir=args.workdir)
    rows = [
        ("corpus", f"{r['tokens']:,} tokens in {r['documents']:,} documents ({r['data']})"),
        ("suffix-array build", f"{r['build_tokens_per_s'] / 1e6:.2f} M tokens/s"),
        ("durable ingest + build + snapshot", f"{r['ingest_tokens_per_s'] / 1e6:.2f} M tokens/s"),
        ("index memory", f"{r['index_bytes_per_token']:.2f} bytes/token"),
        ("lookup (4-token context, depth 8)", f"p50 {r['lookup_us']['p50']} us, p99 {r['lookup_us']['p99']} us"),
        ("batch of 64 lookups", f"p50 {r['batch64_lookup_us']['p50'] / 1e3:.2f} ms"),
        ("ingest -> queryable", f"{r['ingest_to_queryable_ms']} ms"),
        ("restart (reopen + first lookup)", f"{r['restart_s']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=out)
    return 0
