"""Roofline speculation budget: how many draft tokens per sequence pay off on this hardware.

A forward pass over B sequences x n new tokens at context c costs

    T(B, n, c) = max(flops / (peak_flops * compute_eff), bytes / (bandwidth * memory_eff)) + overhead

with flops = 2 * B * n * (dense params + lm head) + 4 * B * n * c * layers * heads * head_dim
and bytes = weights + B * c * KV bytes per token. At small batches the weights dominate the
bytes and extra tokens are almost free; at large batches compute dominates and every draft
token costs. With acceptance by rank p_1 >= p_2 >= ... (the i-th best draft node is accepted
with probability p_i; accepted nodes all lie on one path, so E[accepted | k] = sum_{i<=k} p_i),
the planner picks k maximising B * (1 + E[accepted | k]) / T(B, 1 + k, c), and 0 when no k
beats plain decoding. This is the launch-time view; the per-step planner that measures real
step times and learns online is client_sdk.drafting.planner.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hardware:
    """Peak dense bf16 FLOP/s and memory bandwidth, with achievable fractions and a fixed cost."""

    name: str
    peak_flops: float
    bandwidth: float  # bytes/s
    compute_eff: float = 0.7
    memory_eff: float = 0.8
    overhead_s: float = 30e-6  # per forward: launches, sampling, scheduling


# datasheet numbers (dense, no sparsity); efficiencies are starting points to calibrate
PRESETS = {
    "h100-sxm": Hardware("h100-sxm", 989e12, 3.35e12),
    "h200": Hardware("h200", 989e12, 4.8e12),
    "a100-80gb": Hardware("a100-80gb", 312e12, 2.039e12),
    "l40s": Hardware("l40s", 362e12, 0.864e12),
    "rtx-4090": Hardware("rtx-4090", 165e12, 1.008e12),
}


def measure_local(seconds: float = 0.5) -> Hardware:
    """A profile of this machine's CPU: float32 matmul FLOP/s and copy bandwidth (numpy)."""
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    flops, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        a @ a
        flops += 2 * 512**3
    peak = flops / (time.perf_counter() - t0)
    src = np.ones(32 << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    moved, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        np.copyto(dst, src)
        moved += 2 * src.nbytes
    bw = moved / (time.perf_counter() - t0)
    return Hardware("local-cpu", peak, bw, compute_eff=1.0, memory_eff=1.0, overhead_s=1e-3)


@dataclasses.dataclass(frozen=True)
class Model:
    """The shape of a decoder-only transformer (from a Hugging Face config.json)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    bytes_per_param: int = 2

    @staticmethod
    def from_config(path_or_dict) -> "Model":
        """Raises ValueError naming the missing field of a config that is not a decoder LM."""
        cfg = path_or_dict if isinstance(path_or_dict, dict) else json.loads(Path(path_or_dict).read_text())
        if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
            cfg = {"torch_dtype": cfg.get("torch_dtype", "bfloat16"), **cfg["text_config"]}  # a VLM's decoder
        try:
            heads = cfg["num_attention_heads"]
            hidden = cfg["hidden_size"]
            dtype = str(cfg.get("torch_dtype", "bfloat16"))
            return Model(
                layers=cfg["num_hidden_layers"], hidden=hidden, heads=heads,
                kv_heads=cfg.get("num_key_value_heads", heads), head_dim=cfg.get("head_dim") or hidden // heads,
                intermediate=cfg["intermediate_size"], vocab=cfg["vocab_size"],
                tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                bytes_per_param=4 if "32" in dtype else 2,
            )
        except KeyError as exc:
            raise ValueError(f"model config lacks {exc.args[0]!r}") from exc

    @property
    def layer_params(self) -> int:
        d, hd = self.hidden, self.head_dim
        attn = d * self.heads * hd * 2 + d * self.kv_heads * hd * 2
        return attn + 3 * d * self.intermediate

    @property
    def weight_bytes(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return (self.layers * self.layer_params + emb) * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param


def forward_work(m: Model, batch: int, tokens: int, context: int) -> tuple[int, int]:
    """(FLOPs, bytes moved) of one forward of ``batch`` sequences x ``tokens`` new tokens at ``context``."""
    new = batch * tokens
    flops = 2 * new * (m.layers * m.layer_params + m.vocab * m.hidden)
    flops += 4 * new * (context + tokens) * m.layers * m.heads * m.head_dim
    return flops, m.weight_bytes + batch * (context + tokens) * m.kv_bytes_per_token


def forward_time(hw: Hardware, m: Model, batch: int, tokens: int, context: int) -> float:
    """Seconds for one forward of ``batch`` sequences x ``tokens`` new tokens at ``context``."""
    flops, moved = forward_work(m, batch, tokens, context)
    return max(flops / (hw.peak_flops * hw.compute_eff), moved / (hw.bandwidth * hw.memory_eff)) + hw.overhead_s


class AcceptanceByRank:
    """p_i: how often the i-th best draft node was accepted (decayed running mean)."""

    def __init__(self, max_rank: int = 64, decay: float = 0.999, prior: float = 0.3) -> None:
        self.hits = prior / np.arange(1, max_rank + 1)  # a prior that falls with rank
        self.seen = np.ones(max_rank)
        self.decay = decay

    def update(self, scores: np.ndarray, accepted: list[int]) -> None:
        """scores of the drafted nodes; accepted = indices of the accepted ones."""
        k = min(scores.shape[0], self.hits.shape[0])
        if k == 0:
            return
        rank_of = np.empty(scores.shape[0], dtype=np.int64)
        rank_of[np.argsort(-scores, kind="stable")] = np.arange(scores.shape[0])
        hit = np.zeros(k)
        for i in accepted:
            if rank_of[i] < k:
                hit[rank_of[i]] = 1.0
        self.hits *= self.decay
        self.seen *= self.decay
        self.hits[:k] += hit
        self.seen[:k] += 1.0

    def expected_accepted(self) -> np.ndarray:
        """E[accepted | k] for k = 0..max_rank (non-decreasing)."""
        p = np.minimum.accumulate(np.clip(self.hits / self.seen, 0.0, 1.0))  # best-first: p falls with rank
        return np.concatenate([[0.0], np.cumsum(p)])


@dataclasses.dataclass
class BudgetPlanner:
    """Draft size per sequence that maximises expected tokens/s for a batch, from the roofline
    of hardware x model and acceptance by rank: the launch-time choice (e.g. SGLang's width).
    A decode loop that can measure its steps uses client_sdk.drafting.planner.StepPlanner instead."""

    hardware: Hardware
    model: Model
    max_budget: int = 32
    draft_cost_s: float = 20e-6  # CPU drafting per sequence per step, on the critical path
    acceptance: AcceptanceByRank = dataclasses.field(default_factory=AcceptanceByRank)

    def step_time(self, batch: int, tokens: int, context: int) -> float:
        return forward_time(self.hardware, self.model, batch, tokens, context)

    def tokens_per_second(self, batch: int, k: int, context: int) -> float:
        gain = self.acceptance.expected_accepted()[min(k, self.max_budget)]
        step = self.step_time(batch, 1 + k, context) + (batch * self.draft_cost_s if k else 0.0)
        return batch * (1.0 + gain) / step

    def choose(self, batch: int, context: int) -> int:
        """Best k in 0..max_budget (0 = plain decoding is at least as fast)."""
        best_k, best = 0, self.tokens_per_second(batch, 0, context)
        for k in range(1, self.max_budget + 1):
            tps = self.tokens_per_second(batch, k, context)
            if tps > best * 1.0001:
                best_k, best = k, tps
        return best_k

    def table(self, batches=(1, 4, 8, 16, 32, 64), context: int = 1024) -> dict[int, int]:
        return {b: self.choose(b, context) for b in batches}
