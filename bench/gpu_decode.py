"""Decode steps on a real GPU: the serving simulation's CPU path driving a real verify forward.

The serving simulation (``sssd bench serve-sim``) projects its speedups from a roofline of the
GPU. This script checks both halves of that projection on a lent GPU:

1. **The cost table.** The verify forward of a Llama-3.1-8B-shaped model (random bf16 weights:
   the time of a forward does not depend on what the weights say) over ``batch`` sequences x
   ``width`` tree tokens at a fixed context of 1024, with a static KV cache and the tree mask as
   the attention mask, each shape captured in a CUDA graph (as SGLang replays its decode steps),
   timed with CUDA events against ``client_sdk.drafting.budget.forward_time`` for the H100 and
   H200 presets; the roofline efficiencies and fixed cost that fit the measured table best.
2. **Decoding on it.** The SGLang worker's CPU path (``sglang_integration.drafts.BatchDrafter``
   over the real Speculator, its planner seeded from the H200 roofline and learning from the
   measured steps) drives those graphs with the serving simulation's traffic: MT-Bench and
   HumanEval recorded responses (Llama-3 tokens), continuous batching at batch 1, 4, 16 and 64.
   Each step: draft (``drafting_us``), copy the arrays and replay the graph of the step's width
   (with the drafting: ``critical_path_us``), then ``prefetch`` and the outcome beside the GPU,
   then wait for the GPU's answer (``.cpu()``).
   Acceptance comes from the recorded responses (the longest draft path that matches, plus the
   next recorded token), not from the random model's own argmax: the GPU's time is real, the
   tokens are replayed. Modes: ``plain`` (width 1, no drafting), ``zero-wait`` (the product, the
   ShareGPT datastore in process answering in a thread of its own, as a service beside the
   worker would: an answer not in by the next step is late) and ``pld`` (prompt lookup).
   speedup = tokens/s of the mode / tokens/s of plain decoding, both measured on the GPU.
   ``zero-wait back to back`` drafts the same way with no launch and no wait (the planner told
   each step took what the cost table measured): its drafting times against zero-wait's are
   what a wait for the GPU costs the next step's drafting on this host.

    python bench/gpu_decode.py pack --out .gpu/data.npz     # here: traffic + datastore tokens
    python bench/gpu_decode.py run --data .gpu/data.npz     # on the GPU machine (JSON on stdout)
    python bench/gpu_decode.py run --smoke                  # any machine: a tiny model, eagerly

The context is fixed at 1024 for every request (the KV cache holds random keys and values); the
serving simulation's roofline uses each step's mean context instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent import futures
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client_sdk.drafting.budget import PRESETS, Model, forward_time, forward_work  # noqa: E402
from client_sdk.drafting.config import SpeculatorConfig  # noqa: E402
from client_sdk.drafting.drafters import PromptLookup  # noqa: E402
from client_sdk.drafting.costs import StepCosts  # noqa: E402

CONTEXT = 1024
WARMUP = 10
# the modes of a batch size: a zero-wait run again with its steps back to back (no launch, no wait
# for the GPU; the same drafting code, its caches not cooled by a wait): what a wait costs the next step
BACK_TO_BACK = " back to back"
MODES = ("plain", "zero-wait", "pld", "zero-wait" + BACK_TO_BACK)
TINY = Model(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=128256)


class StaticLlama:
    """A Llama-shaped decoder with random weights and a static KV cache that verifies, for each of
    B sequences at context ``context``, a tree of n tokens (their ancestor mask given): the shape
    of work of an SGLang target-verify forward. ``step(B, n)`` is that forward as a replayable
    CUDA graph on a GPU (eager elsewhere)."""

    def __init__(self, m: Model, batch: int, width: int, context: int, device: str, seed: int = 0) -> None:
        self.m, self.context, self.device = m, context, torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        g = torch.Generator(device=self.device).manual_seed(seed)

        def w(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g, device=self.device, dtype=dtype) * 0.02

        d, hd, L = m.hidden, m.head_dim, m.layers
        # [out, in], as torch.nn.Linear (and every serving engine) keeps them
        self.qkv = [w((m.heads + 2 * m.kv_heads) * hd, d) for _ in range(L)]
        self.o = [w(d, m.heads * hd) for _ in range(L)]
        self.up = [w(2 * m.intermediate, d) for _ in range(L)]
        self.down = [w(d, m.intermediate) for _ in range(L)]
        self.norm = 1.0 + w(L * 2 + 1, d)
        self.emb = w(m.vocab, d)
        self.head = self.emb if m.tied_embeddings else w(m.vocab, d)
        self.k = w(L, batch, m.kv_heads, context + width, hd) * 50  # random keys and values, not zeros
        self.v = w(L, batch, m.kv_heads, context + width, hd) * 50
        self.inv_freq = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=self.device, dtype=torch.float32) / hd))
        self.pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

    def _rms(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * self.norm[i]

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        a, b = x.float().chunk(2, -1)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1).to(x.dtype)

    def forward(self, ids: torch.Tensor, tree: torch.Tensor) -> torch.Tensor:
        """ids [B, n], tree [B, n, n] (row i: i's ancestors and i) -> each node's argmax [B, n]."""
        return F.linear(self.hidden(ids, tree), self.head).argmax(-1)

    def hidden(self, ids: torch.Tensor, tree: torch.Tensor) -> torch.Tensor:
        """The last layer's normalised output [B, n, hidden]."""
        m, ctx = self.m, self.context
        B, n = ids.shape
        G, hd = m.heads // m.kv_heads, m.head_dim
        pos = (ctx + tree.sum(-1) - 1).float()  # a node's position: the context plus its depth
        ang = pos[..., None] * self.inv_freq
        cos, sin = ang.cos()[:, :, None], ang.sin()[:, :, None]
        prefix = torch.ones(B, n, ctx, dtype=torch.bool, device=ids.device)
        mask = torch.cat([prefix, tree], -1).repeat(1, G, 1)[:, None]  # query row g * n + i: node i
        x = self.emb[ids]
        for layer in range(m.layers):
            h = self._rms(x, 2 * layer)
            q, k, v = F.linear(h, self.qkv[layer]).split([m.heads * hd, m.kv_heads * hd, m.kv_heads * hd], -1)
            q = self._rope(q.view(B, n, m.heads, hd), cos, sin)
            k = self._rope(k.view(B, n, m.kv_heads, hd), cos, sin)
            self.k[layer, :B, :, ctx : ctx + n] = k.transpose(1, 2)
            self.v[layer, :B, :, ctx : ctx + n] = v.view(B, n, m.kv_heads, hd).transpose(1, 2)
            # the query heads that share a key/value head as one longer query: no repeated keys
            qg = q.view(B, n, m.kv_heads, G, hd).permute(0, 2, 3, 1, 4).reshape(B, m.kv_heads, G * n, hd)
            o = F.scaled_dot_product_attention(qg, self.k[layer, :B, :, : ctx + n], self.v[layer, :B, :, : ctx + n],
                                               attn_mask=mask)
            x = x + F.linear(o.view(B, m.kv_heads, G, n, hd).permute(0, 3, 1, 2, 4).reshape(B, n, -1), self.o[layer])
            gate, up = F.linear(self._rms(x, 2 * layer + 1), self.up[layer]).chunk(2, -1)
            x = x + F.linear(F.silu(gate) * up, self.down[layer])
        return self._rms(x, 2 * m.layers)

    def step(self, B: int, n: int) -> "Step":
        ids = torch.zeros(B, n, dtype=torch.long, device=self.device)
        tree = torch.tril(torch.ones(n, n, dtype=torch.bool, device=self.device)).expand(B, n, n).contiguous()
        if self.pool is None:
            return Step(None, ids, tree, lambda: self.forward(ids, tree))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(ids, tree)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.forward(ids, tree)
        return Step(graph, ids, tree, lambda: out)


@dataclasses.dataclass
class Step:
    graph: "torch.cuda.CUDAGraph | None"
    ids: torch.Tensor
    tree: torch.Tensor
    result: object  # () -> the output tensor (the graph's static output, or an eager forward)

    def launch(self, tokens: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        self.ids.copy_(torch.from_numpy(tokens.astype(np.int64, copy=False)).view(self.ids.shape))
        self.tree.copy_(torch.from_numpy(mask).view(self.tree.shape))
        if self.graph is not None:
            self.graph.replay()
        return self.result()


def timed(step: Step, repeats: int) -> float:
    """Median seconds of one launch (CUDA events around each replay; wall time without CUDA)."""
    B, n = step.ids.shape
    tokens = np.random.default_rng(n).integers(0, 1000, B * n)
    mask = np.tril(np.ones((n, n), dtype=bool))[None].repeat(B, 0).reshape(-1)
    for _ in range(3):
        step.launch(tokens, mask)
    times = []
    for _ in range(repeats):
        if step.graph is None:
            t0 = time.perf_counter()
            step.launch(tokens, mask)
            times.append(time.perf_counter() - t0)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step.launch(tokens, mask)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return float(np.median(times))


def fit_roofline(rows: list[dict], peak: float, bandwidth: float) -> dict:
    """The (compute_eff, memory_eff, overhead_s) on a grid that minimise the squared relative
    error of forward_time against the measured table, and that error."""
    f = np.array([r["flops"] for r in rows])[:, None, None, None]
    b = np.array([r["bytes"] for r in rows])[:, None, None, None]
    t = np.array([r["measured_ms"] / 1e3 for r in rows])[:, None, None, None]
    ce = np.arange(0.10, 1.001, 0.01)[None, :, None, None]
    me = np.arange(0.10, 1.001, 0.01)[None, None, :, None]
    ov = np.arange(0.0, 3e-3, 25e-6)[None, None, None, :]
    err = ((np.maximum(f / (peak * ce), b / (bandwidth * me)) + ov) / t - 1.0) ** 2
    i, j, k = np.unravel_index(err.mean(0).argmin(), err.shape[1:])
    best = np.sqrt(err[:, i, j, k])
    return {"compute_eff": round(float(ce[0, i, 0, 0]), 2), "memory_eff": round(float(me[0, 0, j, 0]), 2),
            "overhead_us": round(float(ov[0, 0, 0, k]) * 1e6, 1),
            "relative_error": {"mean": round(float(best.mean()), 3), "max": round(float(best.max()), 3)}}


def cost_table(model: StaticLlama, steps: dict, repeats: int) -> dict:
    m = model.m
    rows = []
    for (B, n), step in steps.items():
        flops, moved = forward_work(m, B, n, CONTEXT)
        measured = timed(step, repeats)
        rows.append({"batch": B, "width": n, "measured_ms": round(measured * 1e3, 4), "flops": flops, "bytes": moved,
                     **{f"roofline_{hw}_ms": round(forward_time(PRESETS[hw], m, B, n, CONTEXT) * 1e3, 4)
                        for hw in ("h100-sxm", "h200")}})
    h200 = PRESETS["h200"]
    return {"rows": rows, "fit_h200_datasheet": fit_roofline(rows, h200.peak_flops, h200.bandwidth),
            "graph_equals_eager": replays_forward(model, steps)}


def replays_forward(model: StaticLlama, steps: dict) -> bool | None:
    """Whether a captured step, replayed on fresh random tokens, answers what the eager forward does
    (the graphs hold the whole forward). None without graphs."""
    (B, n), step = max(steps.items(), key=lambda kv: kv[0][0] * kv[0][1] * (kv[0][1] <= 5))
    if step.graph is None:
        return None
    tokens = np.random.default_rng(7).integers(0, model.m.vocab, B * n)
    mask = np.tril(np.ones((n, n), dtype=bool))[None].repeat(B, 0).reshape(-1)
    replayed = step.launch(tokens, mask).clone()
    return bool(torch.equal(replayed, model.forward(step.ids, step.tree)))


class ThreadedSource:
    """The in-process datastore answering in a thread of its own, as a service beside the worker
    would: ``collect`` takes an answer only once it is in (deadline 0: never waits)."""

    def __init__(self, lookup, options) -> None:
        from sssd.bench.replay import InProcessSource

        self.inner = InProcessSource(lookup, options)
        self.pool = futures.ThreadPoolExecutor(1, thread_name_prefix="datastore")
        self._pending: dict = {}
        self.late = 0

    def request(self, key, contexts, samples=None) -> None:
        self._pending[key] = self.pool.submit(self.inner.lookup, contexts, self.inner.options.sampling(samples))

    def collect(self, key, contexts, deadline_s: float):
        fut = self._pending.pop(key, None)
        if fut is None:
            return None
        try:
            return fut.result(timeout=max(deadline_s, 0.0)) if deadline_s > 0 or fut.done() else None
        except futures.TimeoutError:
            return None
        finally:
            self.late += not fut.done()

    def fetch(self, contexts):
        return self.inner.fetch(contexts)


class Loop:
    """Continuous batching over the cases at one batch size in one mode, on the captured steps."""

    def __init__(self, cases: list[dict], steps: dict, batch: int, mode: str, menu: tuple[int, ...], ds,
                 m: Model, step_ms: dict | None = None, draft_threads: int = 1) -> None:
        """step_ms: {(batch, width): ms} to run the steps back to back, with no launch and no wait for
        the GPU, the planner told each step took what the cost table measured (None: launch and wait);
        draft_threads: the cores each step's drafts are built on (DraftConfig.draft_threads)."""
        from client_sdk.runtime import build_speculator, lookup_options
        from sglang_integration.drafts import BatchDrafter

        self.cases, self.steps, self.batch, self.mode = cases, steps, batch, mode
        self.admitted, self.source, self.drafter, self.step_ms = 0, None, None, step_ms
        # the deepest draft path a step may accept (as in the serving simulation)
        self.depth = menu[-1] - 1 if mode == "pld" else SpeculatorConfig().draft.max_depth
        if mode == "plain":
            return
        config = SpeculatorConfig(prefetch_outcomes=True, lookup_deadline_s=0.0)
        if draft_threads > 1:
            config = dataclasses.replace(config, draft=dataclasses.replace(config.draft, draft_threads=draft_threads))
        costs = StepCosts({(batch, n): forward_time(PRESETS["h200"], m, batch, n, CONTEXT) for n in menu})
        if mode == "zero-wait":
            from step_cost import AnsweredAtOnce  # bench/: answers in the asking thread, for steps back to back

            options = lookup_options(config.draft, config.draft.max_depth, True)
            self.source = AnsweredAtOnce(ds.lookup, options) if step_ms is not None else ThreadedSource(ds.lookup, options)
        spec = build_speculator(costs=costs, remote=self.source, config=config, vocab_size=m.vocab,
                                drafter=PromptLookup() if mode == "pld" else None)
        if not spec.wait_for_unigrams(600.0):
            raise TimeoutError("the datastore's single-token tries did not load within 600 s")
        self.drafter = BatchDrafter(spec, menu[-1], m.vocab, adaptive=True, menu=menu)

    def admit(self):
        from sssd.bench.serve_sim import _Slot

        slot = _Slot.of(self.cases[self.admitted % len(self.cases)], f"r{self.admitted}")
        self.admitted += 1
        if self.drafter is not None:
            self.drafter.admit(slot.view())
        return slot

    def _arrays(self, slots, last: float | None) -> tuple[np.ndarray, np.ndarray, int]:
        if self.drafter is None:
            roots = np.array([s.output[-1] if s.output else s.prompt[-1] for s in slots])
            return roots, np.ones(len(slots), dtype=bool), 1
        tokens, mask = self.drafter.drafts([s.view() for s in slots], last_step_s=last)
        return tokens, mask, self.drafter.last_width

    def _commit(self, slots) -> int:
        """The verification outcome: each draft's longest path that matches the response, and the next token."""
        trees = self.drafter.last_tree if self.drafter is not None else lambda rid: None
        return sum(s.advance(trees(s.rid), self.depth) for s in slots)

    def run(self, n_steps: int) -> dict:
        slots = [self.admit() for _ in range(self.batch)]
        critical, drafting, gpu, beside_over, widths, tokens, wall = [], [], [], 0, [], 0, 0.0
        parts: dict[str, list[float]] = {"drafted": [], "tries": [], "kernel": []}  # drafted steps only
        last, drafted_at, width = None, None, 1
        timed_on_gpu = next(iter(self.steps.values())).graph is not None and self.step_ms is None
        ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if timed_on_gpu else None
        for i in range(n_steps + WARMUP):
            t0 = time.perf_counter()
            if self.step_ms is not None:
                last = self.step_ms[(self.batch, width)] / 1e3 if i else None
            elif drafted_at is not None:
                last = t0 - drafted_at  # the worker's StepClock: from one step's launch to the next's drafting
            tokens_np, mask, width = self._arrays(slots, last)
            t_arrays = time.perf_counter()
            step = self.steps[(self.batch, width)]
            if ev:
                ev[0].record()
            out = step.launch(tokens_np, mask) if self.step_ms is None else None
            if ev:
                ev[1].record()
            t1 = drafted_at = time.perf_counter()
            if self.drafter is not None:
                self.drafter.prefetch([s.rid for s in slots])  # the worker's _update_ngram_corpus hook
            committed = self._commit(slots)
            t2 = time.perf_counter()
            if out is not None:
                out.cpu()  # the verify's answer (SGLang's .cpu() after the verify)
            t3 = time.perf_counter()
            if i >= WARMUP:
                critical.append(t1 - t0)
                drafting.append(t_arrays - t0)
                if width > 1:
                    times = self.drafter.spec.last
                    parts["drafted"].append(t_arrays - t0)
                    parts["tries"].append(times.lookup_s)
                    parts["kernel"].append(times.draft_s)
                gpu_s = ev[0].elapsed_time(ev[1]) / 1e3 if ev else t3 - t1
                gpu.append(gpu_s)
                beside_over += (t2 - t1) > gpu_s
                widths.append(width)
                tokens += committed
                wall += t3 - t0
            self._refill(slots)
        if self.drafter is not None:
            self.drafter.spec.close()
        return self._result(n_steps, critical, drafting, parts, gpu, beside_over, widths, tokens, wall)

    def _refill(self, slots: list) -> None:
        for j, s in enumerate(slots):
            if len(s.output) >= s.truth.shape[0]:
                if self.drafter is not None:
                    self.drafter.forget([s.rid])
                slots[j] = self.admit()

    def _result(self, n_steps: int, critical, drafting, parts, gpu, beside_over, widths, tokens, wall) -> dict:
        from sssd.bench.stats import percentiles

        drafted = {f"{k}_us": percentiles(v, "us", 1) for k, v in parts.items() if v}
        common = {"tau": round(tokens / (n_steps * self.batch), 4), "mean_width": round(float(np.mean(widths)), 2),
                  "drafted_steps": round(float(np.mean(np.asarray(widths) > 1)), 3),
                  "drafting_us": percentiles(drafting, "us", 1),  # of the critical path: the arrays, before the launch
                  # of the drafted steps: the whole drafting, the datastore tries' part, the draft kernel's call
                  **{f"of_drafted_steps_{k}": v for k, v in drafted.items()}}
        if self.step_ms is not None:  # back to back: no GPU time, no wall to speak of
            return common
        return {"tokens_per_s": round(tokens / wall, 2), **common,
                "critical_path_us": percentiles(critical, "us", 1),
                "gpu_share": round(sum(gpu) / wall, 4),
                "steps_beside_work_outlasted_gpu": round(beside_over / n_steps, 4),
                "late_prefetch_answers": None if self.source is None else self.source.late}


def pack(out: Path) -> None:
    """The traffic (MT-Bench + HumanEval cases) and the ShareGPT datastore's tokens, 17 bits each."""
    from sssd.bench import datasets

    write_pack(out, datasets.mtbench_cases() + datasets.humaneval_cases(), datasets.sharegpt_datastore())


def write_pack(out: Path, cases: list[dict], docs: list[np.ndarray]) -> None:
    tokens = np.concatenate(docs).astype(np.int64)
    if tokens.max() >= 1 << 17:
        raise ValueError(f"token {tokens.max()} does not fit in 17 bits")

    def flat(key: str) -> tuple[np.ndarray, np.ndarray]:
        parts = [np.asarray(c[key], dtype=np.int32) for c in cases]
        return np.concatenate(parts), np.cumsum([0] + [p.shape[0] for p in parts])

    (prompts, prompt_offsets), (responses, response_offsets) = flat("prompt"), flat("response")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, low=(tokens & 0xFFFF).astype(np.uint16), high=np.packbits(tokens >> 16 & 1),
                        offsets=np.cumsum([0] + [d.shape[0] for d in docs]), prompts=prompts,
                        prompt_offsets=prompt_offsets, responses=responses, response_offsets=response_offsets)
    print(f"{out}: {len(cases)} cases, {len(docs)} documents, {tokens.shape[0]} tokens, {out.stat().st_size} bytes")


def unpack(path: Path) -> tuple[list[dict], list[np.ndarray]]:
    z = np.load(path)
    low = z["low"].astype(np.int32)
    tokens = low | (np.unpackbits(z["high"])[: low.shape[0]].astype(np.int32) << 16)
    docs = np.split(tokens, z["offsets"][1:-1])

    def split(key: str) -> list[np.ndarray]:
        return np.split(z[key], z[key.rstrip("s") + "_offsets"][1:-1])

    cases = [{"prompt": p.tolist(), "response": r.tolist()} for p, r in zip(split("prompts"), split("responses"))]
    return cases, docs


def device_facts() -> dict:
    if not torch.cuda.is_available():
        return {"device": "cpu", "torch": torch.__version__}
    p = torch.cuda.get_device_properties(0)
    return {"device": p.name, "multiprocessors": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda}


def run(args) -> dict:
    from sssd.bench import llama3
    from sssd.bench.replay import InProcessDatastore
    from sssd.bench.sim_gpu import LLAMA_8B

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    m = TINY if args.smoke else LLAMA_8B
    batches = [int(b) for b in args.batch_sizes.split(",")]
    menu = SpeculatorConfig().planner.widths
    if args.smoke:
        from sssd.bench import datasets

        cases = (datasets.mtbench_cases() + datasets.humaneval_cases())[:8]
        docs = datasets.sharegpt_datastore(2000, 2040)
    else:
        cases, docs = unpack(Path(args.data))
    started = time.perf_counter()
    model = StaticLlama(m, max(batches), menu[-1], CONTEXT, device)
    steps = {(B, n): model.step(B, n) for B in batches for n in menu}
    setup_s = time.perf_counter() - started
    table = cost_table(model, steps, args.repeats)
    print(json.dumps({"cost_table": table}), file=sys.stderr, flush=True)
    ds = InProcessDatastore(docs, llama3.VOCAB_SIZE)
    rows = []
    for B in batches:
        runs = {}
        step_ms = {(r["batch"], r["width"]): r["measured_ms"] for r in table["rows"]}
        for mode in MODES:
            try:
                back_to_back = mode.endswith(BACK_TO_BACK)
                runs[mode] = Loop(cases, steps, B, mode.removesuffix(BACK_TO_BACK), menu, ds, m,
                                  step_ms if back_to_back else None, args.draft_threads).run(args.steps)
            except Exception as exc:  # noqa: BLE001 - one lease: report the mode's failure, measure the rest
                runs[mode] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"batch {B} {mode}: {runs[mode]['error']}", file=sys.stderr, flush=True)
        for mode in ("zero-wait", "pld"):
            if "tokens_per_s" in runs[mode] and "tokens_per_s" in runs["plain"]:
                runs[mode]["speedup"] = round(runs[mode]["tokens_per_s"] / runs["plain"]["tokens_per_s"], 4)
        rows.append({"batch": B, **runs})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"model": f"Llama-3.1-8B shape, random {'bf16' if device == 'cuda' else 'fp32'} weights"
            if not args.smoke else "tiny (smoke)", "context": CONTEXT, "widths": list(menu),
            "draft_threads": args.draft_threads, **device_facts(),
            "setup_s": round(setup_s, 1), "steps_per_run": args.steps,
            "datastore_tokens": int(sum(d.shape[0] for d in docs)), "cost_table": table, "rows": rows}


def summary(result: dict) -> list[str]:
    """A run's result as short lines: the cost table's corners and every batch x mode."""
    lines = [f"{result.get('device')}: graph replays the forward: {result['cost_table']['graph_equals_eager']}"]
    widths = (1, max(result["widths"]))
    for r in result["cost_table"]["rows"]:
        if r["width"] in widths:
            lines.append(f"b{r['batch']:>3} x{r['width']:>3}: {r['measured_ms']:8.3f} ms  (roofline h200 "
                         f"{r['roofline_h200_ms']:.3f}, h100 {r['roofline_h100-sxm_ms']:.3f})")
    for row in result["rows"]:
        for mode in MODES:
            v = row.get(mode)
            if v is None:  # a result from before the mode
                continue
            if "error" in v:
                lines.append(f"b{row['batch']:>3} {mode:9}: {v['error']}")
                continue
            drafted = v.get("of_drafted_steps_drafted_us")
            if drafted is not None:
                lines.append(f"b{row['batch']:>3} {mode:9}: drafted steps' drafting {drafted}, tries "
                             f"{v['of_drafted_steps_tries_us']}, kernel {v['of_drafted_steps_kernel_us']}")
            if "tokens_per_s" not in v:
                continue
            lines.append(f"b{row['batch']:>3} {mode:9}: x{v.get('speedup', 1.0):.3f} tau {v['tau']:.3f} "
                         f"width {v['mean_width']:5.2f} critical {v['critical_path_us']} gpu {v['gpu_share']:.3f} "
                         f"outlasted {v['steps_beside_work_outlasted_gpu']} late {v['late_prefetch_answers']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the traffic and the datastore's tokens to one file")
    p.add_argument("--out", type=Path, default=Path(".gpu/data.npz"))
    r = sub.add_parser("run", help="time the cost table and decode on it (JSON on stdout)")
    r.add_argument("--data", type=Path, default=Path(".gpu/data.npz"), help="what pack wrote")
    r.add_argument("--batch-sizes", default="1,4,16,64")
    r.add_argument("--steps", type=int, default=300, help="decode steps per batch size and mode")
    r.add_argument("--repeats", type=int, default=20, help="timed replays per cost-table shape")
    r.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, a few cases (checks the script)")
    r.add_argument("--draft-threads", type=int, default=1, help="cores each step's drafts are built on (DraftConfig)")
    f = sub.add_parser("fit", help="the roofline fit of the cost tables in result files")
    f.add_argument("results", type=Path, nargs="+", help="what run printed")
    s = sub.add_parser("summary", help="a result file as a short table")
    s.add_argument("results", type=Path, nargs="+", help="what run printed")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.out)
    elif args.command == "summary":
        for path in args.results:
            print("\n".join(summary(json.loads(path.read_text()))))
    elif args.command == "fit":
        h200 = PRESETS["h200"]
        for path in args.results:
            rows = json.loads(path.read_text())["cost_table"]["rows"]
            print(json.dumps({"file": str(path), **fit_roofline(rows, h200.peak_flops, h200.bandwidth)}))
    else:
        from sssd.bench.provenance import stamped

        print(json.dumps(stamped(run(args))))


if __name__ == "__main__":
    main()
