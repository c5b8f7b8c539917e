"""Subcommand registration: each entry adds its parser and sets ``handler``."""

from __future__ import annotations

import argparse
import json
import sys


def register_all(sub: argparse._SubParsersAction) -> None:
    from sssd import client_commands

    client_commands.register(sub)
    _register_bench(sub)
    _register_demo(sub)


def _register_bench(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (print JSON)")
    kinds = bench.add_subparsers(dest="bench", required=True)
    ds = kinds.add_parser("datastore", help="datastore build, memory, lookup latency, freshness, restart")
    ds.add_argument("--tokens", type=int, default=10_000_000, help="corpus size in tokens")
    ds.add_argument("--vocab", type=int, default=128_000, help="vocabulary size")
    ds.add_argument("--data", default=None, help="JSONL of {\"tokens\": [...]} documents instead of synthetic Zipf text")
    ds.add_argument("--lookups", type=int, default=20_000, help="single lookups to time")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--json", action="store_true", help="print only the JSON object")
    ds.set_defaults(handler=_bench_datastore)
    sv = kinds.add_parser("service", help="loopback gRPC: Lookup(64) latency, IngestStream throughput, mixed load")
    sv.add_argument("--tokens", type=int, default=10_000_000)
    sv.add_argument("--vocab", type=int, default=128_000)
    sv.add_argument("--clients", type=int, default=32, help="concurrent lookup clients in the load run")
    sv.add_argument("--seconds", type=float, default=30.0, help="length of the load run")
    sv.add_argument("--batch", type=int, default=16, help="contexts per Lookup in the load run")
    sv.add_argument("--json", action="store_true")
    sv.set_defaults(handler=_bench_service)


def _bench_datastore(args) -> int:
    from sssd.bench.datastore_bench import run

    result = run(args.tokens, args.vocab, args.data, args.seed, args.lookups)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _bench_service(args) -> int:
    from sssd.bench.service_bench import run

    result = run(args.tokens, args.vocab, args.clients, args.seconds, args.batch)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _register_demo(sub) -> None:
    demo = sub.add_parser("demo", help="the main job on an embedded default (CPU is enough)")
    demo.add_argument("--workdir", default=".sssd/demo", help="where the demo's SQLite file and outputs go")
    demo.add_argument("--tokens", type=int, default=2_000_000, help="synthetic corpus size")
    demo.set_defaults(handler=_demo)


def _demo(args) -> int:
    from sssd.demo import run_demo

    return run_demo(args, out=sys.stdout)
