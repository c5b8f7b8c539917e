"""``sssd demo``: the main job on an embedded default, CPU only, a few minutes.

1. starts the datastore service on an embedded SQLite file (``--workdir``), port 0;
2. ingests a real corpus over gRPC: ShareGPT answers tokenised for SmolLM2;
3. decodes MT-Bench and HumanEval prompts with SmolLM2-135M-Instruct through the reference
   decoder, the configurations of each prompt in lockstep, a decode step each in turn (so
   they share the machine's load from moment to moment; each times its own steps): plain;
   SSSD with an empty datastore; SSSD with the filled datastore. Then the filled run's
   answers to the first half of the prompts are fed back through the feedback sink, and the
   other half is decoded again ("feedback": learning from other requests, not replaying the
   same ones) in lockstep with plain decoding of the same prompts, its baseline;
4. prints a table (or ``--json``: one object with a row per configuration) and writes a plot.

Every run starts from the same datastore state: the corpus ingest is idempotent by id and
the documents a run feeds back are deleted when it ends (and, should a run have died, at the
start of the next one).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from sssd.bench.provenance import stamped
from sssd_wire.settings import require_at_least

NAMESPACE, EMPTY = "smollm2", "smollm2-empty"
FEEDBACK_WORKER = "demo-feedback"
CONFIGS = ("plain", "empty", "filled", "feedback")
LABELS = {"plain": "plain decoding", "empty": "SSSD, empty datastore", "filled": "SSSD, filled datastore",
          "feedback": "SSSD, + other answers fed back"}


def run_demo(args, out: TextIO) -> int:
    from client_sdk.verification.decoder import measured_costs
    from client_sdk.transport.remote import DatastoreClient
    from sssd.bench_commands import load_decoder
    from datastore_service.embedded import EmbeddedServer
    from datastore_service.server import ServerConfig
    from datastore_service.store import make_directory
    from sssd.bench import datasets
    from sssd.bench.decode_bench import PROMPT_SETS, check_prompt_sets, checked_prompts

    if args.prompts < 2:
        raise ValueError(f"--prompts {args.prompts}: at least 2 (answers to the first half are fed back, the rest decoded)")
    check_prompt_sets(PROMPT_SETS, args.prompts)
    require_at_least(args, 1, ("max_new_tokens",), as_flags=True)  # (0 ended in an IndexError)
    datasets.datastore_conversations(args.conversations)
    sets = list(checked_prompts(PROMPT_SETS, args.prompts, args.max_new_tokens).values())  # (before the model loads)
    work = Path(args.workdir)
    make_directory(work, f"--workdir {work}")  # (a file in the way was "[Errno 17] File exists")
    quiet = getattr(args, "json", False)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=out, flush=True))
    t_start = time.perf_counter()
    say("[1/5] loading SmolLM2-135M-Instruct (GGUF -> PyTorch, cached after the first run)")
    decoder, tok, dtype = load_decoder(args)
    attention = "exact rows" if decoder.exact else "the model's own attention"
    say(f"      {dtype}, {attention}, {decoder.linears} linear layers")
    say(f"[2/5] starting the datastore service on {work / 'datastore.db'}")
    server = EmbeddedServer(ServerConfig.of(db=str(work / "datastore.db"), port=0)).start()
    try:
        client = DatastoreClient(server.address, timeout_s=600)
        _forget_feedback(client, work)
        _ingest_corpus(client, tok, args, say)
        half = max(1, args.prompts // 2)
        first = [p for s in sets for p in s[:half]]
        second = [p for s in sets for p in s[half:]]
        say(f"[4/5] decoding {len(first) + len(second)} prompts x {args.max_new_tokens} tokens, batch 1, "
            "plain / empty / filled in lockstep, then feedback")
        costs = measured_costs(decoder, 256)
        runs = _decode_all(decoder, client, costs, first, second, args.max_new_tokens, work, say)
        say("[5/5] results")
        rows = _rows(runs)
        if quiet:
            print(json.dumps(stamped({"rows": rows, "prompts": {"decoded": len(first) + len(second), "fed_back": len(first),
                                                       "decoded_after_feedback": len(second)},
                              "max_new_tokens": args.max_new_tokens, "dtype": dtype, **decoder.linear_fields(), "seconds": round(time.perf_counter() - t_start, 1)})),
                  file=out)
        else:
            _table(rows, out)
            _plot_or_say(runs, work / "demo.png", say, t_start)
        client.close()
    finally:
        server.stop()
    return 0


def _decode_all(decoder, client, costs, first, second, max_new, work: Path, say) -> dict:
    """plain / empty / filled in lockstep prompt by prompt; then feedback on the second half."""
    from client_sdk.transport.feedback import FeedbackSink

    specs = {"plain": None, "empty": _speculator(client, EMPTY, costs), "filled": _speculator(client, NAMESPACE, costs)}
    runs = {name: Run() for name in CONFIGS}
    for p in first + second:
        _lockstep(decoder, p, max_new, specs, runs)
    sink = FeedbackSink(client, NAMESPACE, FEEDBACK_WORKER, batch=8, interval_s=0.2)
    ids = [f"{FEEDBACK_WORKER}/{n}-{n}" for n in range(len(first))]
    (work / "fed-back.json").write_text(json.dumps(ids))  # deleted again below, or by the next run
    for n, tokens in enumerate(runs["filled"].tokens[: len(first)]):
        sink.submit(str(n), tokens)
    sink.close()
    client.snapshot()  # the fed-back answers are queryable now
    say(f"      fed back {sink.sent} answers to the first half of the prompts")
    spec = _speculator(client, NAMESPACE, costs)
    runs["plain@feedback"] = Run()  # the feedback row's baseline, decoded beside it (same load)
    for p in second:
        _lockstep(decoder, p, max_new, {"plain@feedback": None, "feedback": spec}, runs)
    spec.close()
    for name, s in (*specs.items(), ("feedback", spec)):
        if s is not None:
            runs[name].planner = s.planner.stats()
    _forget_feedback(client, work)
    return runs


def _speculator(client, namespace: str, costs):
    import copy

    from client_sdk.runtime import CPU_DECODING, build_speculator, lookup_options
    from client_sdk.transport.source import RemoteSource

    config = CPU_DECODING
    remote = RemoteSource(client, namespace, lookup_options(config.draft, config.draft.max_depth,
                                                            config.prefetch_outcomes), timeout_s=0.5)
    return build_speculator(costs=copy.deepcopy(costs), remote=remote, config=config)


def _forget_feedback(client, work: Path) -> None:
    """Delete what an earlier run fed back, so every run starts from the same datastore."""
    record = work / "fed-back.json"
    if record.exists():
        ids = json.loads(record.read_text())
        if ids:
            client.delete(NAMESPACE, ids, missing_ok=True)
            client.snapshot()
        record.unlink()


def _ingest_corpus(client, tok, args, say) -> None:
    from sssd.bench import datasets

    import grpc

    for name in (NAMESPACE, EMPTY):
        try:
            client.create_namespace(name, tok.vocab_size if hasattr(tok, "vocab_size") else 49152, "smollm2-135m-instruct")
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
    say(f"[3/5] ingesting ShareGPT answers (conversations 2000-{2000 + args.conversations - 1}) tokenised for SmolLM2")
    docs = datasets.sharegpt_docs_for(tok, "smollm2", 2000, 2000 + args.conversations)
    from tqdm import tqdm

    bar = tqdm(total=len(docs), desc="ingest", unit="doc", disable=None)

    def batches():
        for i in range(0, len(docs), 256):
            chunk = docs[i : i + 256]
            bar.update(len(chunk))
            yield [(f"sharegpt/{i + j}", d) for j, d in enumerate(chunk)]

    summary = client.ingest_stream(NAMESPACE, batches())
    bar.close()
    client.snapshot()
    stats = client.stats(NAMESPACE).namespaces[0]
    say(f"      {summary.added} new documents ({summary.duplicates} already there); datastore holds "
        f"{stats.documents:,} documents, {stats.tokens:,} tokens")


@dataclasses.dataclass
class Run:
    tokens: list[list[int]] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)  # decode phase per prompt
    prefill: list[float] = dataclasses.field(default_factory=list)  # prefill per prompt
    steps: list[int] = dataclasses.field(default_factory=list)
    accepted: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(17, dtype=np.int64))  # per step
    planner: dict | None = None  # the speculator's planner statistics at the end

    def add(self, g) -> None:
        self.tokens.append(g.tokens)
        self.seconds.append(g.decode_seconds)
        self.prefill.append(g.prefill_seconds)
        self.steps.append(g.steps)
        self.accepted += np.bincount(np.minimum(g.accepted, 16), minlength=17)

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of the decode phase (1 / time per output token)."""
        return sum(map(len, self.tokens)) / sum(self.seconds)

    @property
    def e2e_tokens_per_s(self) -> float:
        """The same with each prompt's prefill counted in (what a whole request takes)."""
        return sum(map(len, self.tokens)) / (sum(self.seconds) + sum(self.prefill))

    @property
    def tau(self) -> float:
        return sum(map(len, self.tokens)) / sum(self.steps)


def _lockstep(decoder, prompt, max_new, specs: dict, runs: dict) -> None:
    """One prompt decoded by every configuration of ``specs`` in lockstep, into ``runs``."""
    for name, (g,) in decoder.generate_in_lockstep([prompt], max_new, specs).items():
        runs[name].add(g)


def _rows(runs: dict[str, Run]) -> list[dict]:
    """One row per configuration; each speculative row against plain on the same prompts."""
    rows = []
    for name in CONFIGS:
        r = runs[name]
        base = runs["plain@feedback" if name == "feedback" else "plain"]
        rows.append({"config": name, "tokens_per_s": round(r.tokens_per_s, 2), "ms_per_token": round(1e3 / r.tokens_per_s, 1),
                     "tau": round(r.tau, 3), "speedup": round(r.tokens_per_s / base.tokens_per_s, 3),
                     "e2e_speedup": round(r.e2e_tokens_per_s / base.e2e_tokens_per_s, 3),
                     "prefill_ms": round(1e3 * sum(r.prefill) / len(r.prefill), 1),
                     "identical": r.tokens == base.tokens, **({"planner": r.planner} if r.planner else {})})
    return rows


def _table(rows: list[dict], out) -> None:
    print(f"  {'configuration':<32}{'tokens/s':>10}{'ms/token':>10}{'tau':>7}{'speedup':>9}{'with prefill':>14}"
          "  identical to plain", file=out)
    for r in rows:
        print(f"  {LABELS[r['config']]:<32}{r['tokens_per_s']:>10.1f}{r['ms_per_token']:>10.1f}{r['tau']:>7.2f}"
              f"{r['speedup']:>8.2f}x{r['e2e_speedup']:>13.2f}x  {'yes' if r['identical'] else 'NO'}", file=out)
    print("  tokens/s, ms/token and speedup are of the decode phase (time per output token); 'with prefill'\n"
          "  counts each prompt's prefill in too (it is the same in every configuration)", file=out)


def _plot_or_say(runs, path: Path, say, t_start: float) -> None:
    try:
        _plot(runs, path)
        say(f"plot written to {path}; total {time.perf_counter() - t_start:.0f} s")
    except ImportError:
        say("plot skipped: matplotlib is not installed (pip install -e '.[demo]')")


def _plot(runs: dict[str, Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in CONFIGS[1:]:
        r = runs[name]
        at_least = r.accepted[::-1].cumsum()[::-1] / max(sum(r.steps), 1)
        left.plot(range(1, 9), at_least[1:9], marker="o", label=LABELS[name])
    left.set(xlabel="tree depth d", ylabel="P(accepted length >= d)", title="acceptance by tree depth")
    left.legend(fontsize=8)
    rows = _rows(runs)
    right.bar(range(len(rows)), [r["speedup"] for r in rows], color=["grey"] + ["tab:blue"] * (len(rows) - 1))
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_xticks(range(len(rows)), [LABELS[r["config"]].replace(", ", "\n") for r in rows], fontsize=7)
    right.set(ylabel="speedup vs plain (tokens/s)", title="SmolLM2-135M on this CPU, batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
