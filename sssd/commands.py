"""Subcommand registration: each entry adds its parser and sets ``handler``."""

from __future__ import annotations

import argparse
import os
import sys

from sssd.bench_commands import linears_flag, load_decoder
from sssd.smollm2 import DTYPE_HELP, DTYPES
from sssd_wire.settings import require_at_least


def register_all(sub: argparse._SubParsersAction) -> None:
    from sssd import bench_commands, client_commands

    client_commands.register(sub)
    bench_commands.register(sub)
    _register_generate(sub)
    _register_demo(sub)
    _register_check(sub)


def _register_generate(sub) -> None:
    import os

    g = sub.add_parser("generate", help="generate with SmolLM2-135M-Instruct and the reference speculative decoder")
    g.add_argument("--prompt", required=True, help="user message (the chat template is applied)")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-speculation", action="store_true", help="plain decoding through the same loop")
    g.add_argument("--budget", type=int, default=None, help="fixed draft tokens per step (default: roofline planner)")
    g.add_argument("--address", default=os.environ.get("SSSD_DATASTORE"), help="datastore host:port (default: $SSSD_DATASTORE; none = local drafts only)")
    g.add_argument("--namespace", default=os.environ.get("SSSD_NAMESPACE", "default"))
    g.add_argument("--token", default=os.environ.get("SSSD_TOKEN"))
    g.add_argument("--tls-ca", help="PEM CA bundle: connect to the datastore with TLS")
    g.add_argument("--stats", action="store_true", help="print steps, tau and tokens/s to stderr")
    g.add_argument("--dtype", choices=DTYPES, default="auto", help=DTYPE_HELP)
    linears_flag(g, auto=True)
    g.set_defaults(handler=_generate)


def _generate(args) -> int:
    import math
    import time

    from client_sdk.verification.decoder import check_prompts, measured_costs
    from client_sdk.drafting.config import draft_budget
    from client_sdk.runtime import CPU_DECODING, build_speculator
    from sssd.smollm2 import chat_ids, context_length, load_tokenizer
    from sssd.tokenizers import fingerprint
    from client_sdk.verification.verify import Sampling

    require_at_least(args, 1, ("max_new_tokens",), as_flags=True)
    require_at_least(args, 0, ("top_k",), as_flags=True)  # 0: off
    if not 0 <= args.temperature < math.inf:  # (NaN decoded greedily, as if 0)
        raise ValueError(f"--temperature {args.temperature} must be a number >= 0 (0: greedy)")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p} must be in (0, 1] (1: off)")
    if args.budget is not None:  # 0: no drafts
        draft_budget(args.budget, "--budget")  # (named as the config's field: "fixed_budget 5000 must be ...")
    prompt = chat_ids(load_tokenizer(), args.prompt)
    check_prompts([prompt], args.max_new_tokens, context_length())  # before the model loads
    decoder, tok, _ = load_decoder(args)
    model = decoder.model
    spec = None
    if not args.no_speculation:
        costs = None if args.budget is not None else measured_costs(decoder, len(prompt) + args.max_new_tokens // 2)
        spec = build_speculator(model.config.to_dict(), address=args.address, namespace=args.namespace,
                               token=args.token, tls_ca=args.tls_ca, fixed_budget=args.budget, costs=costs,
                               config=CPU_DECODING, vocab_size=model.config.vocab_size,
                               tokenizer_fingerprint=fingerprint(tok) if args.address else None)
    sampling = Sampling(args.temperature, args.top_k, args.top_p) if args.temperature > 0 else None
    t = time.perf_counter()
    (g,) = decoder.generate([prompt], args.max_new_tokens, speculator=spec, sampling=sampling, seed=args.seed)
    elapsed = time.perf_counter() - t
    print(tok.decode(g.tokens, skip_special_tokens=True))
    if args.stats:
        print(f"steps {g.steps}, tokens {len(g.tokens)}, tau {g.tau:.2f}, {len(g.tokens) / elapsed:.1f} tokens/s",
              file=sys.stderr)
        if spec is not None and spec.planner is not None:
            print(f"verify widths (width: steps) {dict(sorted(spec.planner.widths_used.items()))}", file=sys.stderr)
        if spec is not None and spec.remote is not None:
            print(f"datastore lookups {vars(spec.remote.stats)}", file=sys.stderr)
    if spec is not None:
        spec.close()
    return 0


def _register_check(sub) -> None:
    c = sub.add_parser("check", help="verify a datastore file offline: every index invariant (stop its server first)")
    c.add_argument("--db", required=True, help="the SQLite file of the datastore")
    c.set_defaults(handler=_check)


def _check(args) -> int:
    from datastore_service.datastore import Datastore, DatastoreConfig
    from sssd.client_commands import check_file

    check_file(args.db)  # (a directory was "no such datastore file")
    if not os.path.getsize(args.db):  # (it was written a schema and said "ok (0 namespaces)")
        raise ValueError(f"{args.db}: an empty file, not a datastore (`sssd serve --db` creates one)")
    ds = Datastore(DatastoreConfig(db=args.db))  # damaged segments are rebuilt here, and logged
    try:
        problem = ds.check_integrity(deep=True)
    finally:
        ds.close()
    if problem:
        print(f"sssd: error: {args.db}: {problem}", file=sys.stderr)
        return 1
    from sssd.client_commands import counted

    print(f"{args.db}: ok ({counted(len(ds.namespace_names()), 'namespace')})")
    return 0


def _register_demo(sub) -> None:
    demo = sub.add_parser("demo", help="the main job on an embedded default (CPU is enough)")
    demo.add_argument("--workdir", default=".sssd/demo", help="where the demo's SQLite file and plot go")
    demo.add_argument("--prompts", type=int, default=4,
                      help="prompts per dataset (MT-Bench, HumanEval); answers to the first half are fed back")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    demo.add_argument("--conversations", type=int, default=4000, help="ShareGPT conversations ingested")
    demo.add_argument("--dtype", choices=DTYPES, default="auto", help=DTYPE_HELP)
    linears_flag(demo, auto=True)
    demo.add_argument("--json", action="store_true", help='print one JSON object {"rows": [...]} instead of the table')
    demo.set_defaults(handler=_demo)


def _demo(args) -> int:
    from sssd.demo import run_demo

    return run_demo(args, out=sys.stdout)
