"""Reference speculative decoder over a Hugging Face causal LM (LlamaForCausalLM and friends).

Every step feeds each running sequence's root (last committed token) plus its draft tree
through one forward with the tree mask, verifies, and keeps only the KV entries of the root
and the accepted nodes. Plain decoding is the same loop with empty drafts, so the baseline
and SSSD share every line but the drafting.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from client_sdk.drafting.speculator import Speculator
from client_sdk.types import DraftTree
from client_sdk.verification import ATTENTIONS, LINEARS
from client_sdk.verification.cpu_linear import adapt_linears, packed_bytes, tune_uniform
from client_sdk.verification.exact_rows import RowPlan, use_exact_rows
from client_sdk.verification.verify import Sampling, TreeBatch, build_batch, greedy_verify, sample_verify
from sssd_wire.types import integer, token_array


@dataclasses.dataclass
class Generation:
    tokens: list[int]
    steps: int = 0
    accepted: list[int] = dataclasses.field(default_factory=list)  # accepted draft tokens per step
    seconds: float = 0.0  # wall time of the whole call, prefill included
    prefill_seconds: float = 0.0  # of which the prompt's prefill (the same with or without speculation)

    @property
    def decode_seconds(self) -> float:
        """The decode phase, the part speculation changes: seconds / tokens is the time per output token."""
        return self.seconds - self.prefill_seconds

    @property
    def tau(self) -> float:
        """Tokens per step (1.0 = no speculation)."""
        return len(self.tokens) / max(self.steps, 1)


class KVCache:
    """Per-layer keys/values [B, kv_heads, T, head_dim], right-padded; lengths[b] are valid."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], lengths: list[int]) -> None:
        self.layers = layers
        self.lengths = lengths

    @property
    def width(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0

    def as_dynamic(self):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (k, v) in enumerate(self.layers):
            cache.update(k, v, i)
        return cache

    def compact(self, new_width: int, keep: list[list[int]]) -> "KVCache":
        """Keep, per row, its old valid entries plus the step's entries at slots ``keep[b]``
        (root + accepted nodes), in place: O(kept tokens) copies, not O(context).

        ``self`` is the cache a step's forward returned: the old cache (valid lengths
        ``self.lengths``) with the step's ``new_width`` entries appended at old_width + slot.
        Kept entries move left to lengths[b] + j; rows whose kept slots already sit there
        (the widest row with a chain accepted) move nothing.
        """
        old_width = self.width - new_width
        new_lengths = [n + len(k) for n, k in zip(self.lengths, keep)]
        moves = [(b, n, k) for b, (n, k) in enumerate(zip(self.lengths, keep)) if n != old_width or k != list(range(len(k)))]
        layers = []
        for key, value in self.layers:
            for b, n, k in moves:
                src = torch.as_tensor(k, dtype=torch.long, device=key.device) + old_width
                key[b, :, n : n + len(k)] = key[b, :, src]
                value[b, :, n : n + len(k)] = value[b, :, src]
            width = max(new_lengths)
            layers.append((key[:, :, :width], value[:, :, :width]))
        return KVCache(layers, new_lengths)

    def rows(self, keep_rows: list[int]) -> "KVCache":
        index = torch.as_tensor(keep_rows, dtype=torch.long, device=self.layers[0][0].device)
        return KVCache([(k.index_select(0, index), v.index_select(0, index)) for k, v in self.layers],
                       [self.lengths[r] for r in keep_rows])


class ReferenceDecoder:
    """``linears``: "adaptive" makes the model's linear layers, on CPU, take the fastest of
    torch's GEMM, the transposed GEMM and oneDNN's packed inner product for each step's row
    count (measured at construction, a few seconds; ``cpu_linear``; oneDNN's way holds a packed
    copy of the weights); "uniform" takes one of them for every row count, the fastest of those
    that give a row the same bits whatever the row count (``cpu_linear.tune_uniform``; ValueError
    if none does); "torch" leaves the model as it is. None: "uniform" with exact attention, else
    "adaptive".

    ``attention``: "model" (default) verifies a step's rows in one masked attention call per
    layer; "exact" computes each row as plain decoding computes its position (``exact_rows``), at
    one attention call per row and layer. With "uniform" linear layers greedy speculative
    decoding is then bit-identical to plain decoding (in bfloat16 on CPUs with AVX512-BF16 or
    AMX; float32's ways are not row-invariant here). "adaptive" with exact attention is refused
    (ValueError): it picks a kernel per row count."""

    def __init__(self, model, eos_ids: set[int], device: str | torch.device = "cpu", linears: str | None = None,
                 attention: str = "model") -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"attention {attention!r}: one of {', '.join(ATTENTIONS)}")
        linears = linears or ("uniform" if attention == "exact" else "adaptive")
        if linears not in LINEARS:
            raise ValueError(f"linears {linears!r}: one of {', '.join(LINEARS)}")
        if linears == "adaptive" and attention == "exact":
            raise ValueError("linears 'adaptive' with attention 'exact': the adaptive layers pick a kernel per row count, "
                             "so a verified row would not have plain decoding's bits; use linears 'uniform'")
        self.model = model
        self.eos_ids = set(eos_ids)
        self.device = torch.device(device)
        self.linears = linears
        self.linear_plan = None
        if self.device.type == "cpu" and linears != "torch":
            self.linear_plan = adapt_linears(model, tune_uniform(model) if linears == "uniform" else None)
        self.exact = attention == "exact"
        if self.exact:
            use_exact_rows(model)

    @torch.no_grad()
    def prefill(self, prompts: list[list[int]]) -> KVCache:
        """KV cache of every prompt but its last token (which becomes the first root)."""
        bodies = [p[:-1] for p in prompts]
        width = max(len(b) for b in bodies)
        if width == 0:
            return KVCache([], [0] * len(prompts))
        ids = torch.zeros(len(bodies), width, dtype=torch.long)
        mask = torch.zeros(len(bodies), 1, width, width, dtype=torch.bool)
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
        for b, body in enumerate(bodies):
            ids[b, : len(body)] = torch.as_tensor(body)
            mask[b, 0, : len(body), : len(body)] = causal[: len(body), : len(body)]
            mask[b, 0, len(body) :, :] = torch.eye(width, dtype=torch.bool)[len(body) :]
        pos = torch.arange(width).expand(len(bodies), -1)
        out = self.model(input_ids=ids.to(self.device), position_ids=pos.to(self.device),
                         attention_mask=mask.to(self.device), use_cache=True)
        cache = out.past_key_values
        return KVCache([(layer.keys, layer.values) for layer in cache.layers], [len(b) for b in bodies])

    def forward(self, batch: TreeBatch, cache: KVCache):
        """One decode step's forward: the roots and drafts of ``batch`` over ``cache`` (left as it
        was; the output's cache holds the step's entries after it)."""
        rows = {"sssd_rows": RowPlan.of(batch.parents.tolist(), batch.sizes, cache.lengths)} if self.exact else {}
        return self.model(input_ids=batch.input_ids, position_ids=batch.positions, attention_mask=batch.mask,
                          past_key_values=cache.as_dynamic() if cache.layers else None, use_cache=True, **rows)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, speculator: Speculator | None = None,
                 sampling: Sampling | None = None, budget: int | None = None, seed: int = 0) -> list[Generation]:
        """Decode all prompts together. speculator None = plain decoding (empty drafts)."""
        decoding = Decoding(self, prompts, max_new_tokens, speculator, sampling, budget, seed)
        while not decoding.done:
            decoding.step()
        return decoding.results

    def generate_in_lockstep(self, prompts: list[list[int]], max_new_tokens: int,
                             speculators: dict[str, Speculator | None]) -> dict[str, list[Generation]]:
        """``generate`` once per named speculator (None = plain decoding) over the same prompts,
        the decodings in ``lockstep``: each one's seconds count its own steps only."""
        decodings = {name: Decoding(self, prompts, max_new_tokens, speculator=spec) for name, spec in speculators.items()}
        lockstep(list(decodings.values()))
        return {name: d.results for name, d in decodings.items()}

    def linear_fields(self) -> dict:
        """What a benchmark's JSON records about the linear layers it ran."""
        return {"linears": self.linears if self.linear_plan else "torch",
                "linear_plan": self.linear_plan.describe() if self.linear_plan else None,
                "linear_packed_mb": round(packed_bytes(self.model) / 2**20, 1),
                "attention": "exact" if self.exact else "model"}

    def clip(self, g: Generation, new: list[int], max_new_tokens: int) -> list[int]:
        """The part of a step's ``new`` tokens that ``g`` keeps: up to its token limit and its first EOS."""
        room = max_new_tokens - len(g.tokens)
        new = new[:room]
        for i, t in enumerate(new):
            if t in self.eos_ids:
                return new[: i + 1]
        return new


def check_prompts(prompts: list, max_new_tokens: int, context: int | None, vocab: int | None = None) -> None:
    """A one-line ValueError for no prompts, an empty prompt (an IndexError in the prefill), a
    prompt of what is no token id or of one past the model's ``vocab`` (torch's "index out of
    range in self"), fewer than one new token (an IndexError after the prefill), or a prompt whose
    new tokens would pass the model's ``context`` (it decoded on, past the positions it knows)."""
    if not len(prompts):  # (max()'s "arg is an empty sequence")
        raise ValueError("no prompts to decode")
    if integer(max_new_tokens, "max_new_tokens") < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} must be at least 1")
    for i, prompt in enumerate(prompts):
        ids = token_array(prompt, f"prompt {i}")
        if not ids.shape[0]:
            raise ValueError("a prompt has no tokens: decoding starts after at least one")
        if vocab and ids.max() >= vocab:
            raise ValueError(f"prompt {i} holds {ids.max()}, past the model's {vocab}-token vocabulary")
    longest = max(map(len, prompts), default=0)
    if context and longest + max_new_tokens > context:
        raise ValueError(f"a prompt of {longest:,} tokens and {max_new_tokens:,} new ones pass the model's "
                         f"{context:,}-token context")


class Decoding:
    """One ``generate`` call as a stepper: the prefill runs at construction, each ``step`` runs
    one decode step of every running sequence (drafting, forward, verification, KV upkeep).
    Once done, ``results[i].seconds`` is the prefill plus the steps' own time, so decodings
    stepped in turn (``lockstep``) each count only their own work."""

    def __init__(self, decoder: ReferenceDecoder, prompts: list[list[int]], max_new_tokens: int,
                 speculator: Speculator | None = None, sampling: Sampling | None = None, budget: int | None = None,
                 seed: int = 0) -> None:
        config = decoder.model.config
        check_prompts(prompts, max_new_tokens, getattr(config, "max_position_embeddings", None),
                      getattr(config, "vocab_size", None))
        self.decoder, self.max_new_tokens, self.speculator = decoder, max_new_tokens, speculator
        self.sampling, self.budget = sampling, budget
        self.gen = torch.Generator().manual_seed(seed)
        self.results = [Generation([]) for _ in prompts]
        t0 = time.perf_counter()
        with torch.no_grad():
            self.cache = decoder.prefill(prompts)
        self.prefill_seconds = time.perf_counter() - t0
        self.active = list(range(len(prompts)))
        self.roots = [p[-1] for p in prompts]
        if speculator is not None:
            for r in self.active:
                speculator.start(r, prompts[r])
        self.busy = 0.0  # seconds of this decoding's own steps
        self._stamp()

    @property
    def done(self) -> bool:
        return not self.active

    def _stamp(self) -> None:
        for g in self.results:
            g.seconds, g.prefill_seconds = self.prefill_seconds + self.busy, self.prefill_seconds

    @torch.no_grad()
    def step(self) -> None:
        t_start = time.perf_counter()
        spec, active, cache, dev = self.speculator, self.active, self.cache, self.decoder.device
        trees = spec.draft(active, self.budget) if spec is not None else [DraftTree.empty() for _ in active]
        filler = spec is not None and spec.blank_width > 1  # a width's cost probed without drafts
        if filler:
            trees = [filler_tree(spec.blank_width - 1)] * len(active)
        t_step = time.perf_counter()  # the step without drafting: forward, verification, upkeep
        if spec is not None:
            spec.prefetch(active)  # beside a GPU this overlaps the forward; here it is part of the step
        batch = build_batch([self.roots[r] for r in active], trees, cache.lengths, cache.width, dev)
        out = self.decoder.forward(batch, cache)
        logits = out.logits.float()
        verdicts = (greedy_verify(logits, batch) if self.sampling is None
                    else sample_verify(logits, batch, self.sampling, self.gen))
        keep, still = self._commit(batch, trees, verdicts, filler)
        if spec is not None:
            spec.committed([active[row] for row in still])  # their lookups overlap the upkeep below
        step = KVCache([(layer.keys, layer.values) for layer in out.past_key_values.layers], cache.lengths)
        self.cache = step.compact(batch.input_ids.shape[1], keep)
        if len(still) < len(active):
            self.active = [active[row] for row in still]
            self.cache = self.cache.rows(still) if still else self.cache
        t_end = time.perf_counter()
        if spec is not None:
            spec.observe_step(len(keep), batch.input_ids.shape[1], t_end - t_step)
        self.busy += t_end - t_start
        if self.done:
            self._stamp()

    def _commit(self, batch, trees, verdicts, filler: bool = False) -> tuple[list[list[int]], list[int]]:
        """Each row's accepted tokens and bonus into its Generation and the speculator (filler:
        the trees are not drafts, nothing is learned from them); returns the KV slots to keep per
        row and the rows still running."""
        keep, still = [], []
        for row, (r, tree, (path, bonus)) in enumerate(zip(self.active, trees, verdicts)):
            g = self.results[r]
            accepted = [int(batch.input_ids[row, s]) for s in path]
            new = self.decoder.clip(g, accepted + [bonus], self.max_new_tokens)
            g.tokens += new
            g.steps += 1
            g.accepted.append(len(path))
            if self.speculator is not None:
                self.speculator.commit(r, new, None if filler else tree, None if filler else [s - 1 for s in path])
            self.roots[r] = new[-1]
            keep.append([0] + path)
            if len(g.tokens) < self.max_new_tokens and not (set(new) & self.decoder.eos_ids):
                still.append(row)
            elif self.speculator is not None:
                self.speculator.finish(r)
        return keep, still


def lockstep(decodings: list[Decoding]) -> None:
    """Run several decodings to the end one step each in turn, the order rotating every round
    (none always goes first), so a machine whose load changes hits them alike; each decoding's
    time counts its own steps only."""
    turn = 0
    while running := [d for d in decodings if not d.done]:
        for d in running[turn % len(running) :] + running[: turn % len(running)]:
            d.step()
        turn += 1


def filler_tree(size: int) -> DraftTree:
    """``size`` children of the root with distinct tokens (the smallest ids), no draft: what a
    step whose width is probed without drafting verifies (verification keeps it lossless)."""
    return DraftTree(np.arange(size, dtype=np.int32), np.full(size, -1, np.int32), np.zeros(size),
                     np.full((size, 1, 4), -1, np.int8))


def probe_tree(size: int, vocab: int, branching: bool = False) -> DraftTree:
    """A draft of ``size`` nodes: a chain, or (branching) two children per node, breadth first."""
    parents = (np.arange(size) // 2 - 1 if branching else np.arange(-1, size - 1)).astype(np.int32)
    return DraftTree(np.arange(size, dtype=np.int32) % vocab, parents, np.ones(size), np.full((size, 1, 4), -1, np.int8))


class ForwardProbe:
    """Times verification forwards of ``batch`` rows over a cache of ``context`` random tokens:
    root + a chain draft, through the same layout and mask as decoding (`sssd bench forward`
    compares chain, tree-mask and plain causal forwards)."""

    def __init__(self, decoder: ReferenceDecoder, batch: int, context: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.decoder, self.vocab = decoder, decoder.model.config.vocab_size
        self.prompts = [torch.randint(0, self.vocab, (context + 1,), generator=gen).tolist() for _ in range(batch)]
        with torch.no_grad():
            self.cache = decoder.prefill(self.prompts)

    @torch.no_grad()
    def seconds(self, tokens: int) -> float:
        """One forward of ``tokens`` per row (the cache is left as it was)."""
        b = build_batch([p[-1] for p in self.prompts], [probe_tree(tokens - 1, self.vocab)] * len(self.prompts),
                        self.cache.lengths, self.cache.width, self.decoder.device)
        t = time.perf_counter()
        self.decoder.forward(b, self.cache)
        return time.perf_counter() - t


def measured_costs(decoder: ReferenceDecoder, context: int, batches=(1,), widths: tuple[int, ...] | None = None,
                   rounds: int = 5):
    """The planner's start-up StepCosts from real forwards on this device (learned on from there):
    the median of ``rounds`` rounds over every (batch, width), after one warm-up round. Rounds,
    not one block per cell, so a slow spell of a shared machine moves one round of every cell,
    not every run of one cell (which would skew the table's ratios between widths)."""
    from client_sdk.drafting.costs import StepCosts
    from client_sdk.drafting.planner import PlannerConfig

    widths = widths or PlannerConfig().widths
    probes = {b: ForwardProbe(decoder, b, context) for b in batches}
    times: dict[tuple[int, int], list[float]] = {(b, n): [] for b in batches for n in widths}
    for r in range(rounds + 1):
        for (b, n), ts in times.items():
            t = probes[b].seconds(n)
            if r:  # round 0 warms every shape up
                ts.append(t)
    return StepCosts({cell: float(np.median(ts)) for cell, ts in times.items()})
