"""``sssd bench <kind>``: one table of benchmark runners, each printing one JSON object.

A runner is (help, its flags, a function args -> result dict); one handler prints every
result, so adding a benchmark is one row and two small functions.
"""

from __future__ import annotations

import argparse
import json

from client_sdk.verification import ATTENTIONS, LINEARS
from sssd.bench.provenance import stamped
from sssd.client_commands import check_writable, vocab_flag
from sssd.smollm2 import DTYPE_HELP, DTYPES, resolve_dtype
from sssd_wire.settings import require_above_zero, require_at_least


def _ints(text: str, flag: str, least: int = 1) -> list[int]:
    """``text``'s comma-separated integers, each at least ``least`` (else a ValueError naming ``flag``)."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r} must be comma-separated integers") from None
    if min(values) < least:
        raise ValueError(f"{flag} {text!r}: every value must be at least {least}")
    return values


def _device(value: str) -> str:
    """``--device``: cpu, or cuda where this torch has a CUDA device (an unknown name, or cuda on a
    CPU build, ended in a traceback after the model had loaded)."""
    if value not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{value!r}: cpu or cuda")
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"cuda: this torch {torch.__version__} sees no CUDA device")
    return value


def _datastore_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=10_000_000, help="corpus size in tokens")
    p.add_argument("--vocab", type=int, default=128_000, help="vocabulary size")
    p.add_argument("--data", default=None, help="JSONL of {\"tokens\": [...]} documents instead of synthetic Zipf text")
    p.add_argument("--lookups", type=int, default=20_000, help="single lookups to time")
    p.add_argument("--seed", type=int, default=0)


def _datastore(args) -> dict:
    from sssd.bench.datastore_bench import run

    require_at_least(args, 1, ("tokens", "lookups"), as_flags=True)  # (sizes below 1 ended in tracebacks)
    vocab_flag(args.vocab, "--vocab")
    return run(args.tokens, args.vocab, args.data, args.seed, args.lookups)


def _service_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=10_000_000)
    p.add_argument("--vocab", type=int, default=128_000)
    p.add_argument("--clients", type=int, default=32, help="concurrent lookup clients in the load run")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the load run")
    p.add_argument("--batch", type=int, default=16, help="contexts per Lookup in the load run")


def _service(args) -> dict:
    from sssd.bench.service_bench import run

    require_at_least(args, 1, ("tokens", "clients", "batch"), as_flags=True)  # (0 ran on regardless)
    vocab_flag(args.vocab, "--vocab")
    require_above_zero(args, ("seconds",), as_flags=True)
    return run(args.tokens, args.vocab, args.clients, args.seconds, args.batch)


def _replay_flags(p: argparse.ArgumentParser) -> None:
    from sssd.bench.datasets import LOADERS
    from sssd.bench.replay import DRAFTERS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cases", help='JSONL of {"prompt": [ids], "response": [ids]}')
    src.add_argument("--dataset", choices=sorted(LOADERS),
                     help="built-in evaluation set (Llama-3 tokenizer; needs the bench extra)")
    p.add_argument("--datastore-docs", help='JSONL of {"tokens": [ids]} documents for an in-process datastore')
    p.add_argument("--sharegpt-datastore", action="store_true",
                   help="in-process datastore of ShareGPT conversations 2000-16999 (Llama-3 tokens)")
    p.add_argument("--address", help="use a running datastore service instead (host:port)")
    p.add_argument("--namespace", default="default")
    p.add_argument("--token", default=None)
    p.add_argument("--vocab-size", type=int, default=128_256,
                   help="vocabulary of --datastore-docs / --address (zero-wait's single-token table)")
    p.add_argument("--drafter", choices=DRAFTERS, default="sssd")
    p.add_argument("--budgets", default="4,8,16,32", help="comma-separated draft budgets")
    p.add_argument("--records", metavar="PATH", help="write one JSON line per step: case, match, draft, accepted, us")
    p.add_argument("--blocking-lookup", action="store_true",
                   help="each step asks for its committed context (default: the product's outcome prefetch)")


def _replay(args) -> dict:
    from client_sdk.drafting.config import draft_budget
    from sssd.bench import replay

    budgets = [draft_budget(b, "--budgets") for b in _ints(args.budgets, "--budgets", least=0)]  # (0: plain, tau 1)
    drafter = replay.drafter_named(args.drafter)
    vocab_flag(args.vocab_size)
    if drafter.asks_datastore and not (args.address or args.sharegpt_datastore or args.datastore_docs):
        raise ValueError(f"--drafter {args.drafter} needs a datastore: --datastore-docs, --address or "
                         "--sharegpt-datastore (--drafter local drafts from the request's own text)")
    if args.records:  # (a missing directory was found after the datastore had loaded, as "[Errno 2]")
        check_writable(args.records, "--records")
    if args.cases:
        cases = replay.read_cases(args.cases)
    else:
        from sssd.bench import datasets

        cases = datasets.LOADERS[args.dataset]()
    lookup, vocab = None, args.vocab_size
    if args.address:
        lookup = replay.RemoteDatastore(args.address, args.namespace, args.token).lookup
    elif args.sharegpt_datastore:
        from sssd.bench import datasets, llama3

        lookup, vocab = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE).lookup, llama3.VOCAB_SIZE
    elif args.datastore_docs:
        lookup = replay.InProcessDatastore(replay.read_docs(args.datastore_docs), args.vocab_size).lookup
    return replay.replay(cases, drafter, budgets, lookup, progress=not args.json,
                         records=args.records, label=args.drafter, prefetch_outcomes=not args.blocking_lookup,
                         vocab_size=vocab if lookup is not None else None)


def _deadline_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deadline-ms", type=float, default=2.0)
    p.add_argument("--calls", type=int, default=300)


def _deadline(args) -> dict:
    from sssd.bench.deadline_bench import run

    require_at_least(args, 1, ("calls",), as_flags=True)  # (sizes below 1 ended in tracebacks)
    require_above_zero(args, ("deadline_ms",), as_flags=True)
    return run(args.deadline_ms, args.calls)


def linears_flag(p: argparse.ArgumentParser, auto: bool = False) -> None:
    """--linears and --attention; ``auto``: --attention also takes (and defaults to) "auto", exact
    attention in bfloat16 and the model's own in float32 (``resolve_attention``)."""
    p.add_argument("--linears", choices=LINEARS, default=None,
                   help="CPU linear layers: the fastest of torch's GEMM, the transposed GEMM and oneDNN's packed product per "
                        "row count, measured at start in seconds (adaptive, the default with the model's attention); the "
                        "fastest one of them that computes a row alike at every row count, for every count (uniform, the "
                        "default with --attention exact, which refuses adaptive); or torch's own")
    p.add_argument("--attention", choices=(("auto",) if auto else ()) + ATTENTIONS, default="auto" if auto else "model",
                   help="decode-step attention: one masked call per layer (model), or each row computed as plain "
                        "decoding computes its position (exact: bit-identical greedy outputs in bfloat16 too)"
                        + ("; auto: exact in bfloat16, model in float32" if auto else ""))


def resolve_attention(attention: str, dtype: str) -> str:
    """--attention with "auto" resolved for the (resolved) dtype: bfloat16 needs exact rows for
    outputs identical to plain decoding; float32 is faster on the model's own attention."""
    return attention if attention != "auto" else ("exact" if dtype == "bfloat16" else "model")


def load_decoder(args):
    """(ReferenceDecoder, tokenizer, dtype) of SmolLM2 for a command's --dtype, --attention and
    --linears. Where --dtype auto chose bfloat16 but no linear kernel keeps a row alike at every
    row count on this CPU (cpu_linear.NoInvariantWay), it warns once and takes float32 instead;
    an explicit --dtype bfloat16 is refused there."""
    import warnings

    from client_sdk.verification.cpu_linear import NoInvariantWay
    from client_sdk.verification.decoder import ReferenceDecoder
    from sssd.smollm2 import load_model

    linears, attention = getattr(args, "linears", None), getattr(args, "attention", "auto")
    asked = getattr(args, "dtype", "auto")
    dtype = resolve_dtype(asked)
    model, tok = load_model(dtype=dtype)
    try:
        return ReferenceDecoder(model, {tok.eos_token_id}, linears=linears,
                                attention=resolve_attention(attention, dtype)), tok, dtype
    except NoInvariantWay as exc:
        if asked != "auto":
            raise
        warnings.warn(f"sssd: {exc}; --dtype auto takes float32 here", RuntimeWarning, stacklevel=2)
    model, tok = load_model(dtype="float32")
    return ReferenceDecoder(model, {tok.eos_token_id}, linears=linears,
                            attention=resolve_attention(attention, "float32")), tok, "float32"


def _decode_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", default="mtbench,humaneval")
    p.add_argument("--prompts", type=int, default=8, help="prompts per dataset")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,4,16,64 on a GPU")
    p.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help=DTYPE_HELP)
    linears_flag(p)
    p.add_argument("--runs", type=int, default=1, help="repeat the side-by-side measurement; worst and median reported")
    p.add_argument("--contention", nargs="?", type=int, const=1, default=0, metavar="PROCS",
                   help="start PROCS CPU-burning processes (default 1) after the planner's start-up measurement")


def _decode(args) -> dict:
    from sssd.bench.decode_bench import check_prompt_sets, run

    require_at_least(args, 1, ("prompts", "max_new_tokens", "runs"), as_flags=True)  # (below 1: tracebacks)
    require_at_least(args, 0, ("contention",), as_flags=True)
    check_prompt_sets(args.datasets.split(","), args.prompts)  # before the model loads
    return run(args.datasets.split(","), args.prompts, args.max_new_tokens, _ints(args.batch_sizes, "--batch-sizes"),
               args.device, progress=not args.json, runs=args.runs, contention=args.contention, dtype=args.dtype,
               linears=args.linears, attention=args.attention)


def _forward_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-k", type=int, default=15)
    p.add_argument("--context", type=int, default=256, help="tokens in the KV cache before the verified ones")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", type=_device, default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help=DTYPE_HELP)
    linears_flag(p)


def _forward(args) -> dict:
    from sssd.bench.forward_bench import run

    require_at_least(args, 1, ("max_k", "repeats"), as_flags=True)
    require_at_least(args, 0, ("context",), as_flags=True)  # (a negative one: a tensor-shape traceback)
    return run(args.max_k, args.context, args.repeats, args.device, progress=not args.json, dtype=args.dtype,
               linears=args.linears, attention=args.attention)


def _serve_sim_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-sizes", default="1,4,16,64", help="requests in flight (continuous batching)")
    p.add_argument("--steps", type=int, default=None,
                   help="decode steps per batch size and mode, at least (default: serve_sim.STEPS, 300)")
    p.add_argument("--min-request-steps", type=int, default=None,
                   help="request-steps each batch size runs at least, by more steps at small batches (default: "
                        "serve_sim.MIN_REQUEST_STEPS, 4800: batch 1 runs 4800 steps, batch 4 1200); 0: exactly --steps")
    p.add_argument("--conversations", type=int, default=15_000,
                   help="ShareGPT conversations from 2000 in the service's datastore (15000: the replay's)")
    p.add_argument("--gpu-costs", default=None, metavar="FILE",
                   help="simulate the GPU with a verify-time table that bench/gpu_decode.py measured (its result "
                        "JSON, e.g. bench/results/gpu-h200/linear-run2.json) instead of the H100 roofline")
    p.add_argument("--draft-threads", type=int, default=1,
                   help="cores each step's drafts are built on (DraftConfig.draft_threads; 1: the shipped default)")
    p.add_argument("--gpu-wait", default="sleep", metavar="{sleep,spin}",
                   help="how a step waits out its simulated verify: asleep, or spinning without the GIL as CUDA's "
                        "default synchronisation does (on a 2-core box the spin keeps a core from the service)")


def _serve_sim(args) -> dict:
    from sssd.bench.datasets import datastore_conversations
    from sssd.bench.serve_sim import STEPS, run
    from sssd.bench.sim_gpu import MeasuredGPU

    steps = STEPS if args.steps is None else args.steps
    # (the offender named alone: it read "--steps None, --conversations 0 and --draft-threads 1 must be ...")
    require_at_least(args, 1, ("draft_threads",) + (("steps",) if args.steps is not None else ()), as_flags=True)
    datastore_conversations(args.conversations)
    if args.min_request_steps is not None and args.min_request_steps < 0:
        raise ValueError(f"--min-request-steps {args.min_request_steps} must be 0 or more")
    gpu = MeasuredGPU(args.gpu_costs) if args.gpu_costs else None
    return run(_ints(args.batch_sizes, "--batch-sizes"), steps, args.conversations, progress=not args.json,
               gpu=gpu, draft_threads=args.draft_threads, min_request_steps=args.min_request_steps,
               gpu_wait=args.gpu_wait)


def _fleet_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", default="1,2,4,8", help="simulated decode worker processes, one row per count")
    p.add_argument("--batch", type=int, default=32, help="requests per worker's decode step")
    p.add_argument("--step-ms", type=float, default=20.0, help="decode step time: one Lookup per worker per step")
    p.add_argument("--contexts-per-request", type=int, default=4,
                   help="contexts a request's prefetch asks per step (zero-wait: the step's likely outcomes)")
    p.add_argument("--servers", type=int, default=1, help="server processes: one writer, the rest read replicas")
    p.add_argument("--tokens", type=int, default=2_000_000, help="datastore size")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per row")
    p.add_argument("--stream", action="store_true", help="one LookupStream per worker instead of unary Lookups")
    p.add_argument("--segment-readers", action="store_true",
                   help="replicas map the writer's segment files (--segment-dir) instead of copying its documents")
    p.add_argument("--samples", type=int, default=None,
                   help="occurrences sampled per context (default: the SDK's zero-wait ask, 128; 64 when it paces down)")
    p.add_argument("--aligned", action="store_true",
                   help="every worker's steps at the same instant (default: each worker at a random point of the step)")


def _fleet(args) -> dict:
    from sssd.bench.fleet_bench import run

    # (the offender named, with its value: it read "--batch, --step-ms, ... and --seconds must be positive")
    require_at_least(args, 1, ("batch", "contexts_per_request", "servers", "tokens"), as_flags=True)
    require_above_zero(args, ("step_ms", "seconds"), as_flags=True)
    if args.samples is not None and not 1 <= args.samples <= 4096:
        raise ValueError(f"--samples {args.samples} not in [1, 4096]")
    return run(_ints(args.workers, "--workers"), args.batch, args.step_ms, args.contexts_per_request, args.servers,
               args.tokens, args.seconds, progress=not args.json, stream=args.stream,
               segment_readers=args.segment_readers, samples=args.samples, aligned=args.aligned)


BENCHES = {
    "datastore": ("datastore build, memory, lookup latency, freshness, restart", _datastore_flags, _datastore),
    "service": ("loopback gRPC: Lookup(64) latency, IngestStream throughput, mixed load", _service_flags, _service),
    "replay": ("offline replay of recorded responses: tau and drafting cost per budget", _replay_flags, _replay),
    "deadline": ("draft-call latency with the datastore healthy, slow and stopped", _deadline_flags, _deadline),
    "decode": ("SmolLM2 end to end: plain vs SSSD tokens/s, tau, identical outputs", _decode_flags, _decode),
    "forward": ("forward(1 + k) / forward(1) on this device: chain, tree mask, causal", _forward_flags, _forward),
    "fleet": ("simulated decode workers (processes) against 1+ server processes: contexts/s, server CPU per "
              "context, p50/p99, late answers", _fleet_flags, _fleet),
    "serve-sim": ("decode traffic at batch 1-64 on a simulated GPU against a real datastore service: critical "
                  "path, prefetch hits, tau zero-wait vs blocking, projected speedup", _serve_sim_flags, _serve_sim),
}


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (print JSON)")
    kinds = bench.add_subparsers(dest="bench", required=True)
    for name, (help_text, flags, runner) in BENCHES.items():
        p = kinds.add_parser(name, help=help_text)
        flags(p)
        p.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
        p.set_defaults(handler=_printing(runner))


def _printing(runner):
    def handle(args) -> int:
        # flushed now: a benchmark's result is not left in a buffer that a crash at exit would lose
        print(json.dumps(stamped(runner(args)), indent=None if args.json else 2), flush=True)
        return 0

    return handle
