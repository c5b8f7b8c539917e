"""``sssd demo``: the main job on an embedded default, CPU only, a few minutes.

1. starts the datastore service on an embedded SQLite file (``--workdir``), port 0;
2. ingests a real corpus over gRPC: ShareGPT answers tokenised for SmolLM2;
3. decodes MT-Bench and HumanEval prompts with SmolLM2-135M-Instruct through the reference
   decoder: plain; SSSD with an empty datastore; SSSD with the filled datastore; and SSSD
   after this run's own answers were fed back (repeat traffic, the continuous update);
4. prints a table (tokens/s, ms/token, tau, speedup, identical to plain) and writes a plot
   (acceptance by tree depth, speedup by configuration).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TextIO

import numpy as np

NAMESPACE, EMPTY = "smollm2", "smollm2-empty"


def run_demo(args, out: TextIO) -> int:
    from client_sdk.budget import BudgetPlanner, Model, measure_local
    from client_sdk.decoder import ReferenceDecoder, measured_cost
    from client_sdk.feedback import FeedbackSink
    from client_sdk.remote import DatastoreClient
    from client_sdk.runtime import lookup_options
    from client_sdk.smollm2 import load_model
    from client_sdk.source import RemoteSource
    from client_sdk.speculator import Speculator, SpeculatorConfig
    from datastore_service.embedded import EmbeddedServer
    from datastore_service.server import ServerConfig
    from sssd.bench.decode_bench import prompts_for

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, file=out, flush=True)
    t_start = time.perf_counter()
    say("[1/5] loading SmolLM2-135M-Instruct (GGUF -> PyTorch, cached after the first run)")
    model, tok = load_model()
    decoder = ReferenceDecoder(model, {tok.eos_token_id})
    say(f"[2/5] starting the datastore service on {work / 'datastore.db'}")
    server = EmbeddedServer(ServerConfig(db=str(work / "datastore.db"), port=0)).start()
    try:
        client = DatastoreClient(server.address, timeout_s=600)
        _ingest_corpus(client, tok, args, say)
        prompts = prompts_for(tok, "mtbench", args.prompts) + prompts_for(tok, "humaneval", args.prompts)
        say(f"[4/5] decoding {len(prompts)} prompts x {args.max_new_tokens} tokens, batch 1, four configurations")
        cost = measured_cost(decoder, 256)
        shape = Model.from_config({**model.config.to_dict(), "torch_dtype": "float32"})
        hw = measure_local(0.2)
        config = SpeculatorConfig(lookup_deadline_s=0.02)  # a step here takes ~80 ms: 20 ms is generous
        options = lookup_options(config.draft, config.draft.max_depth)

        def speculator(namespace: str, feedback: FeedbackSink | None = None) -> Speculator:
            planner = BudgetPlanner(hw, shape, max_budget=16, cost=cost)
            return Speculator(config, remote=RemoteSource(client, namespace, options, timeout_s=0.5),
                              planner=planner, feedback=feedback)

        sink = FeedbackSink(client, NAMESPACE, f"demo-{int(time.time())}", batch=4, interval_s=0.2)
        runs = {}
        runs["plain decoding"] = _decode(decoder, prompts, args.max_new_tokens, None, say)
        runs["SSSD, empty datastore"] = _decode(decoder, prompts, args.max_new_tokens, speculator(EMPTY), say)
        runs["SSSD, filled datastore"] = _decode(decoder, prompts, args.max_new_tokens, speculator(NAMESPACE, sink), say)
        sink.close()
        client.snapshot()  # the fed-back answers are queryable now
        runs["SSSD, + own answers fed back"] = _decode(decoder, prompts, args.max_new_tokens, speculator(NAMESPACE), say)
        say("[5/5] results")
        _table(runs, out)
        plot = work / "demo.png"
        try:
            _plot(runs, plot)
            say(f"plot written to {plot}; total {time.perf_counter() - t_start:.0f} s")
        except ImportError:
            say("plot skipped: matplotlib is not installed (pip install -e '.[demo]')")
        client.close()
    finally:
        server.stop()
    return 0


def _ingest_corpus(client, tok, args, say) -> None:
    from sssd.bench import datasets

    import grpc

    for name in (NAMESPACE, EMPTY):
        try:
            client.create_namespace(name, tok.vocab_size if hasattr(tok, "vocab_size") else 49152, "smollm2-135m-instruct")
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
    say(f"[3/5] ingesting ShareGPT answers (conversations 2000-{2000 + args.conversations}) tokenised for SmolLM2")
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
    tokens: list[list[int]]
    seconds: float
    steps: int
    accepted: np.ndarray  # histogram of accepted draft tokens per step

    @property
    def n_tokens(self) -> int:
        return sum(map(len, self.tokens))


def _decode(decoder, prompts, max_new, spec, say) -> Run:
    outs, seconds, steps, hist = [], 0.0, 0, np.zeros(17, dtype=np.int64)
    for p in prompts:
        t = time.perf_counter()
        (g,) = decoder.generate([p], max_new, speculator=spec)
        seconds += time.perf_counter() - t
        outs.append(g.tokens)
        steps += g.steps
        hist += np.bincount(np.minimum(g.accepted, 16), minlength=17)
    if spec is not None:
        spec.close()
    run = Run(outs, seconds, steps, hist)
    say(f"      {'SSSD' if spec else 'plain'}: {run.n_tokens / seconds:.1f} tokens/s, tau {run.n_tokens / steps:.2f}")
    return run


def _table(runs: dict[str, Run], out) -> None:
    base = runs["plain decoding"]
    base_tps = base.n_tokens / base.seconds
    print(f"  {'configuration':<30}{'tokens/s':>10}{'ms/token':>10}{'tau':>7}{'speedup':>9}  identical", file=out)
    for name, r in runs.items():
        tps = r.n_tokens / r.seconds
        print(f"  {name:<30}{tps:>10.1f}{1e3 / tps:>10.1f}{r.n_tokens / r.steps:>7.2f}{tps / base_tps:>8.2f}x  "
              f"{'yes' if r.tokens == base.tokens else 'NO'}", file=out)


def _plot(runs: dict[str, Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    base = runs["plain decoding"]
    for name, r in runs.items():
        if r is base:
            continue
        at_least = r.accepted[::-1].cumsum()[::-1] / max(r.steps, 1)
        left.plot(range(1, 9), at_least[1:9], marker="o", label=name)
    left.set(xlabel="tree depth d", ylabel="P(accepted length >= d)", title="acceptance by tree depth")
    left.legend(fontsize=8)
    names = list(runs)
    speed = [(r.n_tokens / r.seconds) / (base.n_tokens / base.seconds) for r in runs.values()]
    right.bar(range(len(names)), speed, color=["grey"] + ["tab:blue"] * (len(names) - 1))
    right.axhline(1.0, color="black", linewidth=0.8)
    labels = [n.replace("SSSD, ", "SSSD\n").replace(" decoding", "\ndecoding").replace("+ own answers fed back", "+ own answers\nfed back")
              for n in names]
    right.set_xticks(range(len(names)), labels, fontsize=7)
    right.set(ylabel="speedup vs plain (tokens/s)", title="SmolLM2-135M on this CPU, batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)

