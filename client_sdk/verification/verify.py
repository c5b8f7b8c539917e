"""Tree verification in PyTorch (device-agnostic): batch layout, masks, greedy and sampling.

Vocabulary: each sequence feeds its *root* (the last committed token, not yet in the KV
cache) followed by its draft nodes. A node is *accepted* when the target agrees with it; the
*bonus* token is the target's own token after the last accepted node. Rejected nodes and
padding never influence anything: the mask hides them and their KV entries are dropped.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from client_sdk.types import DraftTree
from sssd_wire.types import whole_numbers


@dataclasses.dataclass(frozen=True)
class TreeBatch:
    """Inputs of one verification forward over B sequences, n = 1 + max draft size."""

    input_ids: torch.Tensor  # [B, n] long: root then draft tokens, right-padded
    positions: torch.Tensor  # [B, n] long: cache_len + depth (root depth 0)
    mask: torch.Tensor | None  # [B, 1, n, T + n] bool: True = may attend (T = padded cache length);
    # None where that is exactly the causal mask (one unpadded row, a chain draft)
    parents: torch.Tensor  # [B, n] long: parent slot within the row, -1 for the root and padding
    sizes: list[int]  # [B] valid slots per row (1 + draft size)


def check_tree(tree: DraftTree) -> None:
    """Raise ValueError for a malformed draft: forward parents or duplicate siblings."""
    pars, toks = tree.parents.tolist(), tree.tokens.tolist()
    seen = set()
    for i, (p, t) in enumerate(zip(pars, toks)):
        if not -1 <= p < i:
            raise ValueError(f"draft node {i} has parent {p}: parents must precede children")
        if (p, t) in seen:
            raise ValueError(f"draft node {i} repeats sibling token {t} under parent {p}: siblings must be unique")
        seen.add((p, t))


def build_batch(roots: list[int], trees: list[DraftTree], cache_lens: list[int], cache_width: int,
                device: torch.device | str = "cpu") -> TreeBatch:
    """Layout of roots + drafts over a right-padded cache of ``cache_width`` entries.

    Row b attends to its first cache_lens[b] cache entries and, inside the tree, to its
    ancestors and itself. Padding slots attend only to themselves (their output is unused).
    """
    if not len(roots) == len(trees) == len(cache_lens):  # (zip dropped the rows past the shortest)
        raise ValueError(f"{len(trees)} draft trees with {len(roots)} roots and {len(cache_lens)} cache lengths")
    for length in cache_lens:
        if not 0 <= length <= cache_width:  # (the slice kept cache_width entries of a longer cache)
            raise ValueError(f"cache length {length} outside [0, cache_width {cache_width}]")
    for t in trees:
        check_tree(t)
    B = len(trees)
    n = 1 + max((len(t) for t in trees), default=0)
    ids = torch.zeros(B, n, dtype=torch.long)
    pos = torch.zeros(B, n, dtype=torch.long)
    par = torch.full((B, n), -1, dtype=torch.long)
    anc = torch.zeros(B, n, n, dtype=torch.bool)
    cache = torch.zeros(B, n, cache_width, dtype=torch.bool)
    sizes = []
    for b, (root, tree, length) in enumerate(zip(roots, trees, cache_lens)):
        k = len(tree)
        sizes.append(1 + k)
        ids[b, 0] = root
        ids[b, 1 : 1 + k] = torch.as_tensor(tree.tokens, dtype=torch.long)
        par[b, 1 : 1 + k] = torch.as_tensor(tree.parents, dtype=torch.long) + 1  # slot of parent (root = 0)
        anc[b] = torch.from_numpy(tree.rooted_mask(n))
        pos[b] = length
        pos[b, 1 : 1 + k] += torch.from_numpy(tree.depths().astype(np.int64))
        cache[b, : 1 + k, :length] = True
    mask = None if _is_causal(trees, cache_lens, cache_width) else torch.cat([cache, anc], dim=2).unsqueeze(1).to(device)
    return TreeBatch(ids.to(device), pos.to(device), mask, par.to(device), sizes)


def _is_causal(trees: list[DraftTree], cache_lens: list[int], cache_width: int) -> bool:
    """One row over an unpadded cache with a chain draft: the tree mask is the causal mask, and
    the model's own causal path (no explicit mask) computes it at the cost of plain decoding."""
    if len(trees) != 1 or cache_lens[0] != cache_width:
        return False
    parents = trees[0].parents
    return bool(np.array_equal(parents, np.arange(-1, len(parents) - 1)))


def greedy_verify(logits: torch.Tensor, batch: TreeBatch) -> list[tuple[list[int], int]]:
    """Per row: (accepted slots in path order, bonus token). logits: [B, n, V]."""
    best = logits.argmax(dim=-1).tolist()  # [B, n]
    ids, pars = batch.input_ids.tolist(), batch.parents.tolist()
    out = []
    for b, size in enumerate(batch.sizes):
        node, path = 0, []
        while True:
            want = best[b][node]
            child = next((i for i in range(1, size) if pars[b][i] == node and ids[b][i] == want), -1)
            if child < 0:
                out.append((path, want))
                break
            path.append(child)
            node = child
    return out


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # > 0 (greedy decoding takes no Sampling)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off

    def __post_init__(self) -> None:
        whole_numbers(self, ("top_k",), ValueError)  # (2.5 reached torch.topk: a TypeError at the first step)
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature {self.temperature} must be a number > 0 (greedy decoding samples nothing)")
        if self.top_k < 0:
            raise ValueError(f"top_k {self.top_k} must be >= 0 (0: off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p {self.top_p} must be in (0, 1] (1: off)")


def target_probs(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """The distribution the target samples from: temperature, then top-k, then top-p. [.., V]."""
    x = logits.float() / max(s.temperature, 1e-6)
    if s.top_k > 0:
        kth = torch.topk(x, min(s.top_k, x.shape[-1]), dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    p = torch.softmax(x, dim=-1)
    if s.top_p < 1.0:
        sorted_p, order = torch.sort(p, dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > s.top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        p = torch.zeros_like(p).scatter(-1, order, sorted_p)
        p = p / p.sum(-1, keepdim=True)
    return p


def sample_verify(logits: torch.Tensor, batch: TreeBatch, s: Sampling, gen: torch.Generator) -> list[tuple[list[int], int]]:
    """Lossless verification of deterministic multi-branch drafts.

    At node u with target distribution p: try the children c_1, c_2, ... in order; accept
    c_i with probability p(c_i) / (1 - sum of already rejected mass), i.e. against the
    residual; after a rejection c_i's mass is removed and p renormalised. If no child is
    accepted the bonus is drawn from the residual. Every emitted token is thus distributed
    exactly as the target's p at that position.
    """
    probs = target_probs(logits, s).cpu()
    ids, pars = batch.input_ids.tolist(), batch.parents.tolist()
    out = []
    for b, size in enumerate(batch.sizes):
        node, path = 0, []
        while True:
            p = probs[b, node].clone().double()
            children = [i for i in range(1, size) if pars[b][i] == node]
            accepted = -1
            for c in children:
                tok = ids[b][c]
                mass = float(p[tok])
                total = float(p.sum())
                if total > 0 and torch.rand((), generator=gen).item() * total < mass:
                    accepted = c
                    break
                p[tok] = 0.0
            if accepted < 0:
                if float(p.sum()) <= 0:  # every token was drafted and rejected: impossible in exact arithmetic
                    p = probs[b, node].clone().double()
                out.append((path, int(torch.multinomial(p / p.sum(), 1, generator=gen))))
                break
            path.append(accepted)
            node = accepted
    return out
