"""Subcommand registration: each entry adds its parser and sets ``handler``."""

from __future__ import annotations

import argparse
import json
import sys

from client_sdk.smollm2 import DTYPES


def register_all(sub: argparse._SubParsersAction) -> None:
    from sssd import client_commands

    client_commands.register(sub)
    _register_bench(sub)
    _register_generate(sub)
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
    rp = kinds.add_parser("replay", help="offline replay of recorded responses: tau and drafting cost per budget")
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument("--cases", help='JSONL of {"prompt": [ids], "response": [ids]}')
    src.add_argument("--dataset", choices=["mtbench", "humaneval", "sharegpt"],
                     help="built-in evaluation set (Llama-3 tokenizer; needs the bench extra)")
    rp.add_argument("--datastore-docs", help='JSONL of {"tokens": [ids]} documents for an in-process datastore')
    rp.add_argument("--sharegpt-datastore", action="store_true",
                    help="in-process datastore of ShareGPT conversations 2000-16999 (Llama-3 tokens)")
    rp.add_argument("--address", help="use a running datastore service instead (host:port)")
    rp.add_argument("--namespace", default="default")
    rp.add_argument("--token", default=None)
    rp.add_argument("--vocab-size", type=int, default=128_256, help="vocabulary of --datastore-docs")
    rp.add_argument("--drafter", choices=["sssd", "local", "datastore", "pld", "none"], default="sssd")
    rp.add_argument("--budgets", default="4,8,16,32", help="comma-separated draft budgets")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(handler=_bench_replay)
    dl = kinds.add_parser("deadline", help="draft-call latency with the datastore healthy, slow and stopped")
    dl.add_argument("--deadline-ms", type=float, default=2.0)
    dl.add_argument("--calls", type=int, default=300)
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(handler=_bench_deadline)
    dc = kinds.add_parser("decode", help="SmolLM2 end to end: plain vs SSSD tokens/s, tau, identical outputs")
    dc.add_argument("--datasets", default="mtbench,humaneval")
    dc.add_argument("--prompts", type=int, default=8, help="prompts per dataset")
    dc.add_argument("--max-new-tokens", type=int, default=96)
    dc.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,4,16,64 on a GPU")
    dc.add_argument("--device", default="cpu", help="cpu or cuda")
    dc.add_argument("--dtype", choices=DTYPES, default="float32", help="model weights and activations")
    dc.add_argument("--runs", type=int, default=1, help="repeat the side-by-side measurement; worst and median reported")
    dc.add_argument("--contention", nargs="?", type=int, const=1, default=0, metavar="PROCS",
                    help="start PROCS CPU-burning processes (default 1) after the planner's start-up measurement")
    dc.add_argument("--json", action="store_true")
    dc.set_defaults(handler=_bench_decode)
    fw = kinds.add_parser("forward", help="forward(1 + k) / forward(1) on this device: chain, tree mask, causal")
    fw.add_argument("--max-k", type=int, default=15)
    fw.add_argument("--context", type=int, default=256)
    fw.add_argument("--repeats", type=int, default=7)
    fw.add_argument("--device", default="cpu")
    fw.add_argument("--dtype", choices=DTYPES, default="float32", help="model weights and activations")
    fw.add_argument("--json", action="store_true")
    fw.set_defaults(handler=_bench_forward)


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


def _bench_replay(args) -> int:
    from sssd.bench import replay

    if args.cases:
        cases = replay.read_cases(args.cases)
    else:
        from sssd.bench import datasets

        cases = datasets.LOADERS[args.dataset]()
    lookup = None
    if args.address:
        lookup = replay.RemoteDatastore(args.address, args.namespace, args.token).lookup
    elif args.datastore_docs or args.sharegpt_datastore:
        if args.sharegpt_datastore:
            from sssd.bench import datasets, llama3

            docs, vocab = datasets.sharegpt_datastore(), llama3.VOCAB_SIZE
        else:
            docs, vocab = replay.read_docs(args.datastore_docs), args.vocab_size
        lookup = replay.InProcessDatastore(docs, vocab).lookup
    try:
        budgets = [int(b) for b in args.budgets.split(",")]
    except ValueError:
        raise ValueError(f"--budgets {args.budgets!r} must be comma-separated integers")
    result = replay.replay(cases, args.drafter, budgets, lookup, progress=not args.json)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _bench_deadline(args) -> int:
    from sssd.bench.deadline_bench import run

    print(json.dumps(run(args.deadline_ms, args.calls), indent=None if args.json else 2))
    return 0


def _bench_decode(args) -> int:
    from sssd.bench.decode_bench import run

    if args.runs < 1 or args.contention < 0:
        raise ValueError(f"--runs {args.runs} must be at least 1 and --contention {args.contention} not negative")
    result = run(args.datasets.split(","), args.prompts, args.max_new_tokens,
                 [int(b) for b in args.batch_sizes.split(",")], args.device, progress=not args.json,
                 runs=args.runs, contention=args.contention, dtype=args.dtype)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _bench_forward(args) -> int:
    from sssd.bench.forward_bench import run

    if args.max_k < 1 or args.repeats < 1:
        raise ValueError(f"--max-k {args.max_k} and --repeats {args.repeats} must be at least 1")
    result = run(args.max_k, args.context, args.repeats, args.device, progress=not args.json, dtype=args.dtype)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


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
    g.add_argument("--stats", action="store_true", help="print steps, tau and tokens/s to stderr")
    g.set_defaults(handler=_generate)


def _generate(args) -> int:
    import time

    from client_sdk.decoder import ReferenceDecoder, measured_costs
    from client_sdk.runtime import make_speculator
    from client_sdk.smollm2 import chat_ids, load_model
    from client_sdk.verify import Sampling

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens} must be at least 1")
    model, tok = load_model()
    decoder = ReferenceDecoder(model, {tok.eos_token_id})
    prompt = chat_ids(tok, args.prompt)
    spec = None
    if not args.no_speculation:
        costs = None if args.budget is not None else measured_costs(decoder, len(prompt) + args.max_new_tokens // 2)
        spec = make_speculator(model.config.to_dict(), address=args.address, namespace=args.namespace,
                               token=args.token, fixed_budget=args.budget, costs=costs)
    sampling = Sampling(args.temperature, args.top_k, args.top_p) if args.temperature > 0 else None
    t = time.perf_counter()
    (g,) = decoder.generate([prompt], args.max_new_tokens, speculator=spec, sampling=sampling, seed=args.seed)
    elapsed = time.perf_counter() - t
    print(tok.decode(g.tokens, skip_special_tokens=True))
    if args.stats:
        print(f"steps {g.steps}, tokens {len(g.tokens)}, tau {g.tau:.2f}, {len(g.tokens) / elapsed:.1f} tokens/s",
              file=sys.stderr)
    if spec is not None:
        spec.close()
    return 0


def _register_demo(sub) -> None:
    demo = sub.add_parser("demo", help="the main job on an embedded default (CPU is enough)")
    demo.add_argument("--workdir", default=".sssd/demo", help="where the demo's SQLite file and plot go")
    demo.add_argument("--prompts", type=int, default=4,
                      help="prompts per dataset (MT-Bench, HumanEval); answers to the first half are fed back")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    demo.add_argument("--conversations", type=int, default=4000, help="ShareGPT conversations ingested")
    demo.add_argument("--dtype", choices=DTYPES, default="float32", help="model weights and activations")
    demo.add_argument("--json", action="store_true", help='print one JSON object {"rows": [...]} instead of the table')
    demo.set_defaults(handler=_demo)


def _demo(args) -> int:
    from sssd.demo import run_demo

    return run_demo(args, out=sys.stdout)
