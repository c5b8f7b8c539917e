"""Attention that computes each verified row exactly as plain decoding computes that position.

Why: a batched tree verify attends over the cache and the whole draft block with a mask, so a
node's visible keys sit at scattered indices (its masked siblings between them), and the
reduction over them groups the terms differently from a plain decode step, whose keys lie side
by side. In float32 the difference almost never flips a greedy token; in bfloat16 it does
(BENCHMARKS.md, "bfloat16 on this box's AMX units"), so a bfloat16 speculative decode was not
identical to plain bfloat16 decoding.

Here every decode-step row is one attention call whose keys are exactly its visible ones, side
by side: the row's valid cache entries, then its ancestors from root to itself. That is the call a
plain step at the same position makes (one query, the same keys in the same order, no mask), so
the row's output has the same bits. With linear layers whose rows do not depend on the call's row
count (``ReferenceDecoder``'s "uniform" linears, ``cpu_linear.tune_uniform``) every other part of
a layer is row by row, so by induction over layers the row's logits have plain decoding's bits. The rows of a
tree are visited depth first over one buffer per sequence and layer: the buffer holds the cache
prefix (copied once) and the current root-to-node path; in depth-first order each node's
ancestors are already in place, so moving to it writes only its own entry, and no row copies
the prefix.

Use: ``ReferenceDecoder(..., attention="exact")`` sets the model's attention implementation to
``ATTENTION`` and passes each decode step's ``RowPlan`` as the ``sssd_rows`` keyword; a forward
without one (the prefill, shared by plain and speculative decoding) takes transformers' own
scaled-dot-product path unchanged. Cost: one attention call per row per layer instead of one per
layer (what a verify then costs: BENCHMARKS.md, "Exact rows").
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

ATTENTION = "sssd_exact"


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """Which keys each row of a decode step sees, in the order plain decoding lays them out.

    prefix[b]: row b's valid cache entries (keys 0 .. prefix[b] - 1); paths[b]: for each of row
    b's valid slots (root = slot 0, then its draft nodes; padding slots are left out), the slots
    from the root down to it, ordered so that consecutive paths share their longest prefix
    (depth first)."""

    prefix: tuple[int, ...]
    paths: tuple[tuple[tuple[int, ...], ...], ...]
    deepest: tuple[int, ...] = ()  # per row: its longest path (root included)
    chain: tuple[bool, ...] = ()  # per row: every path is slots 0..d (the keys can be read in place)

    @staticmethod
    def of(parents: list[list[int]], sizes: list[int], cache_lens: list[int]) -> "RowPlan":
        """From a TreeBatch's parents (slot of each slot's parent, -1 for the root) and sizes."""
        paths = []
        for par, size in zip(parents, sizes):
            rows = []
            for s in range(size):
                path = [s]
                while par[path[-1]] >= 0:
                    path.append(par[path[-1]])
                rows.append(tuple(reversed(path)))
            paths.append(tuple(sorted(rows)))  # lexicographic = depth first
        return RowPlan(tuple(cache_lens), tuple(paths), tuple(max(map(len, ps)) for ps in paths),
                       tuple(all(p == tuple(range(len(p))) for p in ps) for ps in paths))


def exact_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                    dropout: float = 0.0, scaling: float | None = None, sssd_rows: RowPlan | None = None, **kwargs):
    """transformers' attention interface. query [B, H, n, D]; key, value [B, Hkv, T, D] with the
    step's n new entries last (T = padded cache width + n). Returns ([B, n, H, D], None)."""
    if sssd_rows is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    B, H, n, D = query.shape
    width = key.shape[2] - n  # the padded cache; the step's slot s is key index width + s
    out = query.new_zeros(B, n, H, D)  # padding slots stay 0: their outputs are never read
    for b in range(B):
        prefix, paths, deepest = sssd_rows.prefix[b], sssd_rows.paths[b], sssd_rows.deepest[b]
        in_place = prefix == width and sssd_rows.chain[b]
        if in_place:  # a chain over an unpadded cache: every row's keys are a prefix of the step's own
            keys, values = key[b : b + 1], value[b : b + 1]
        else:
            keys = key.new_empty(1, key.shape[1], prefix + deepest, D)
            values = value.new_empty(1, value.shape[1], prefix + deepest, D)
            keys[:, :, :prefix], values[:, :, :prefix] = key[b : b + 1, :, :prefix], value[b : b + 1, :, :prefix]
        for path in paths:
            # depth first, the buffer already holds this path's ancestors (left by its parent's row or by
            # the subtree of an earlier sibling): only the node itself is written
            end, s = prefix + len(path), path[-1]
            if not in_place:
                keys[0, :, end - 1], values[0, :, end - 1] = key[b, :, width + s], value[b, :, width + s]
            row = F.scaled_dot_product_attention(query[b : b + 1, :, s : s + 1], keys[:, :, :end], values[:, :, :end],
                                                 scale=scaling, enable_gqa=True)
            out[b, s] = row[0, :, 0]
    return out, None


def install() -> None:
    """Register ``ATTENTION`` with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, exact_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_exact_rows(model) -> None:
    """Make ``model`` (a transformers model) attend through ``exact_attention``."""
    install()
    model.config._attn_implementation = ATTENTION
    for m in model.modules():
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = ATTENTION
