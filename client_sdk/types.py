"""Boundary types of the SDK: drafting's configuration, the draft tree, and the protocols of
the two transports the Speculator uses (the types shared with the service are in
sssd_wire.types). numpy only: verification imports this without the numba drafting stack,
and drafting without gRPC."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sssd_wire.settings import require_at_least
from sssd_wire.types import TrieBatch, whole_numbers


@dataclasses.dataclass(frozen=True)
class DraftConfig:
    """Knobs of drafting (one field per knob; the CLI and env overrides derive from these)."""

    max_depth: int = 16  # deepest draft node (tokens after the root; a draft is never deeper than its budget)
    # branching limit per node: best-first selection already ranks siblings by score, so the limit
    # only turns away nodes that beat the ones kept; 8 cost 0.7-2.1 % tau at budget 32, 16 and 64
    # gave the same (BENCHMARKS: "How far the selection is from its candidates' ceiling")
    max_children: int = 16
    local_ngram: int = 6  # longest n-gram of the request's own text that is indexed
    local_occurrences: int = 8  # most recent earlier occurrences read from the request's text
    remote_match: int = 4  # longest context suffix searched in the datastore
    # extra, shorter suffix lengths looked up as their own tries; the 1-token one is what finds
    # continuations of a bonus token that outcome prefetch could not know (BENCHMARKS: replay)
    remote_suffixes: tuple[int, ...] = (2, 1)
    combine: str = "max"  # how tries that share a path combine: "max" or "noisy-or"
    remote_samples: int = 64  # datastore occurrences sampled per lookup
    # ... per zero-wait lookup (prefetched ends, cache fills, the single-token table) while the
    # datastore answers in time (outcomes.Pacing falls back to remote_samples when it does not):
    # the descent by the bonus token keeps only the samples that went on with it (BENCHMARKS)
    prefetch_samples: int = 128
    remote_min_occurrences: int = 1  # a suffix is used only with at least this many occurrences
    remote_nodes: int = 64  # nodes of the datastore's continuation trie
    # deepest level of the datastore's trie: deeper drafts come from the request's own text
    # (a 16-deep trie cost the datastore ~1.6x an 8-deep one per context, for -0.9 to +0.5 % tau)
    remote_depth: int = 8
    # cores a step's drafts are built on (numba's thread pool), from 8 requests up: for a host with
    # cores idle beside the GPU. 1 by default: where a second thread waits for a core the datastore
    # holds (2-core VM), batch 64's p99 grew to 11-27 ms (BENCHMARKS: "Drafting on several cores")
    draft_threads: int = 1

    def __post_init__(self) -> None:
        """A knob that would silently draft nothing (a depth, branching or n-gram of 0) is refused
        here; the datastore's own bounds (depth, samples, nodes) are LookupParams'."""
        whole_numbers(self, error=ValueError)  # (a float depth reached the compiled kernels: a numba typing error)
        require_at_least(self, 1, ("max_depth", "max_children", "local_ngram", "local_occurrences", "remote_match",
                                   "remote_samples", "prefetch_samples", "remote_min_occurrences", "remote_nodes",
                                   "remote_depth", "draft_threads"))
        # (beyond these the tables were sized first: 10**12 failed as a MemoryError of petabytes)
        for name, most, why in (("local_ngram", 32, "each length is a hash table of every request's text"),
                                ("local_occurrences", 4096, "a draft's node budget"),
                                ("remote_match", 16, "the datastore's longest match")):
            if getattr(self, name) > most:
                raise ValueError(f"{name} {getattr(self, name)} must be at most {most} ({why})")
        if self.combine not in ("max", "noisy-or"):
            raise ValueError(f"combine {self.combine!r} must be 'max' or 'noisy-or'")
        suffixes = self.remote_suffixes
        if len(set(suffixes)) != len(suffixes) or not all(1 <= k < self.remote_match for k in suffixes):
            raise ValueError(f"remote_suffixes {suffixes} must be distinct lengths below remote_match {self.remote_match}")


# below this many requests a step's per-request work is cheaper one call each than batched
# (the batched call's fixed cost: typed lists or several numpy calls; measured in BENCHMARKS.md)
SMALL_BATCH = 8


class DraftTree:
    """A draft: parallel arrays in topological order; parents[i] == -1 = child of the root.

    The root is the last committed token and is not part of the arrays. (A slotted class,
    not a dataclass: one is built per request per decode step.)
    """

    __slots__ = ("tokens", "parents", "scores", "cells", "ranked", "total")

    def __init__(self, tokens, parents, scores, cells, ranked: bool = False) -> None:
        self.tokens = tokens  # [b] int32
        self.parents = parents  # [b] int32
        self.scores = scores  # [b] float64: estimated probability that the node is accepted
        self.cells = cells  # [b, S, 4] int8: calibration cell (slot, k, f, support) per source, -1 absent
        self.ranked = ranked  # nodes are best first (ties: shallower first): the best k are the first k
        self.total: float | None = None  # the scores' sum (expected accepted tokens), once asked for

    def expected_accepted(self) -> float:
        """The sum of the node scores (cached; ``DraftBatch.trees`` fills a batch's at once)."""
        if self.total is None:
            self.total = float(self.scores.sum())
        return self.total

    @staticmethod
    def empty() -> "DraftTree":
        z = np.zeros(0, dtype=np.int32)
        return DraftTree(z, z, np.zeros(0), np.zeros((0, 1, 4), np.int8))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def best(self, k: int) -> "DraftTree":
        """The k best nodes (a connected subtree: scores never increase down a path)."""
        if k >= len(self):
            return self
        if k <= 0:
            return DraftTree.empty()
        if self.ranked:  # a prefix is the best k, and connected (a node comes after its parent)
            return DraftTree(self.tokens[:k], self.parents[:k], self.scores[:k], self.cells[:k], True)
        order = np.argsort(-self.scores + self.depths() * 1e-9, kind="stable")[:k]
        keep = np.sort(order)
        new_id = np.full(len(self), -1, dtype=np.int32)
        new_id[keep] = np.arange(k, dtype=np.int32)
        pars = self.parents[keep]
        return DraftTree(self.tokens[keep], np.where(pars >= 0, new_id[np.maximum(pars, 0)], -1).astype(np.int32),
                         self.scores[keep], self.cells[keep])

    def depths(self) -> np.ndarray:
        d = np.zeros(len(self), dtype=np.int32)
        for i, p in enumerate(self.parents.tolist()):
            d[i] = 1 if p < 0 else d[p] + 1
        return d

    def ancestor_mask(self) -> np.ndarray:
        """[b, b] bool: mask[i, j] is True when j is i or an ancestor of i."""
        b = len(self)
        mask = np.eye(b, dtype=bool)
        for i, p in enumerate(self.parents.tolist()):
            if p >= 0:
                mask[i] |= mask[p]
        return mask

    def rooted_mask(self, width: int, pad_under_root: bool = False) -> np.ndarray:
        """[width, width] bool over the slots [root, draft nodes, padding]: slot i may see slot j
        when j is i or one of its ancestors (the root is every node's). Padding slots see
        themselves, and the root too when ``pad_under_root`` (SGLang pads with root children)."""
        k = len(self)
        mask = np.eye(width, dtype=bool)
        mask[1 : 1 + k, 0] = True
        mask[1 : 1 + k, 1 : 1 + k] = self.ancestor_mask()
        if pad_under_root:
            mask[1 + k :, 0] = True
        return mask

    def longest_match(self, truth: np.ndarray) -> list[int]:
        """Node indices of the longest root path whose tokens equal ``truth`` (an array or a list
        of ints; greedy replay)."""
        path: list[int] = []
        if not len(truth):  # nothing was accepted (the commonest step at large batch)
            return path
        parent = -1
        toks, pars = self.tokens.tolist(), self.parents.tolist()
        for want in truth.tolist() if isinstance(truth, np.ndarray) else truth:
            nxt = next((i for i in range(len(toks)) if pars[i] == parent and toks[i] == want), -1)
            if nxt < 0:
                break
            path.append(nxt)
            parent = nxt
        return path


@dataclasses.dataclass(frozen=True, slots=True)
class DraftBatch:
    """A step's drafts back to back, as the drafting kernel emits them and verification takes
    them: row b is nodes offsets[b] .. offsets[b + 1] of the arrays (a DraftTree's arrays,
    parents local to the row). The decode step's critical path works on these; the per-request
    DraftTree objects are made from them later (``trees``), beside the GPU."""

    tokens: np.ndarray  # [N] int32
    parents: np.ndarray  # [N] int32
    scores: np.ndarray  # [N] float64
    cells: np.ndarray  # [N, S, 4] int8
    offsets: np.ndarray  # [B + 1] int64
    ranked: bool  # every row is best first (DraftTree.ranked)

    @staticmethod
    def empty(rows: int) -> "DraftBatch":
        z = np.zeros(0, dtype=np.int32)
        return DraftBatch(z, z, np.zeros(0), np.zeros((0, 1, 4), np.int8), np.zeros(rows + 1, np.int64), True)

    @staticmethod
    def of(trees: "Sequence[DraftTree]") -> "DraftBatch":
        """The trees back to back (their cells must have one shape, empty trees aside)."""
        full = [t for t in trees if len(t)]
        if not full:
            empty = DraftBatch.empty(len(trees))
            return dataclasses.replace(empty, cells=trees[0].cells[:0]) if trees else empty
        if len(trees) == 1:  # one request (batch 1, the commonest small batch): its arrays as they are
            t = trees[0]
            return DraftBatch(t.tokens.astype(np.int32, copy=False), t.parents.astype(np.int32, copy=False), t.scores,
                              t.cells, np.asarray([0, len(t)], dtype=np.int64), t.ranked)
        offs = np.zeros(len(trees) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in trees], out=offs[1:])
        return DraftBatch(np.concatenate([t.tokens for t in full]).astype(np.int32, copy=False),
                          np.concatenate([t.parents for t in full]).astype(np.int32, copy=False),
                          np.concatenate([t.scores for t in full]), np.concatenate([t.cells for t in full]),
                          offs, all(t.ranked for t in trees))

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def placed(self, first: int, rows: int) -> "DraftBatch":
        """These rows as rows first, first + 1, ... of a batch of ``rows``, every other row empty."""
        after = rows - first - len(self)
        if first < 0 or after < 0:
            raise ValueError(f"{len(self)} rows from row {first} do not fit a batch of {rows}")
        offs = np.concatenate([np.zeros(first, np.int64), self.offsets, np.full(after, self.offsets[-1], np.int64)])
        return dataclasses.replace(self, offsets=offs)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def longest(self) -> int:
        """The most nodes of a row (0 without rows)."""
        if self.offsets.shape[0] <= SMALL_BATCH:  # a few rows: Python ints are cheaper than numpy calls
            bounds = self.offsets.tolist()
            return max((b - a for a, b in zip(bounds[:-1], bounds[1:])), default=0)
        return int(self.lengths().max())

    def cut(self, k: int) -> "DraftBatch":
        """Each row's best min(k, its size) nodes (a ranked row's first ones: still connected)."""
        if self.longest() <= k:
            return self
        if not self.ranked:
            return DraftBatch.of([t.best(k) for t in self.trees()])
        if self.offsets.shape[0] == 2:  # one row: a prefix
            return DraftBatch(self.tokens[:k], self.parents[:k], self.scores[:k], self.cells[:k],
                              np.asarray([0, k], dtype=np.int64), True)
        lengths = self.lengths()
        rank = np.arange(self.tokens.shape[0]) - np.repeat(self.offsets[:-1], lengths)
        keep = rank < k
        offs = np.zeros_like(self.offsets)
        np.cumsum(np.minimum(lengths, k), out=offs[1:])
        return DraftBatch(self.tokens[keep], self.parents[keep], self.scores[keep], self.cells[keep], offs, True)

    def trees(self) -> list[DraftTree]:
        """One DraftTree per row (views of the arrays), each with its score sum cached."""
        cum = np.zeros(self.scores.shape[0] + 1)
        np.cumsum(self.scores, out=cum[1:])
        bounds = self.offsets.tolist()
        totals = (cum[self.offsets[1:]] - cum[self.offsets[:-1]]).tolist()
        out = []
        for a, b, total in zip(bounds[:-1], bounds[1:], totals):
            tree = DraftTree(self.tokens[a:b], self.parents[a:b], self.scores[a:b], self.cells[a:b], self.ranked)
            tree.total = total
            out.append(tree)
        return out


@dataclasses.dataclass
class StepTimes:
    """What the last ``draft`` call spent: the datastore wait and the drafting itself (seconds),
    and per request the match length of its longest datastore suffix (0: none or no answer)."""

    lookup_s: float = 0.0
    draft_s: float = 0.0
    match_lengths: list[int] = dataclasses.field(default_factory=list)


class TrieSource(Protocol):
    """Where a step's datastore tries come from (client_sdk.transport.source.RemoteSource, or an
    in-process datastore in the benchmarks): start a lookup, then collect it within a deadline
    (``contexts`` None: whatever was requested under ``key``; else only an answer for these).
    ``samples``: the occurrences each context samples, if not the source's own setting."""

    def request(self, key, contexts: Sequence[np.ndarray], samples: int | None = None) -> None: ...

    def collect(self, key, contexts: Sequence[np.ndarray] | None, deadline_s: float) -> TrieBatch | None: ...

    def fetch(self, contexts: Sequence[np.ndarray]) -> TrieBatch:
        """A lookup answered now, for background work off every step's path (raises on failure;
        ``Busy`` where the datastore keeps its capacity for steps just now)."""


class Busy(Exception):
    """A background lookup the datastore did not take now, to keep its namespace's lookup rate
    for decode steps (``sssd serve --namespace-lookup-rate``): ask again later, for less."""


class GenerationSink(Protocol):
    """Where finished generations go (client_sdk.transport.feedback.FeedbackSink): never blocks.
    ``submit`` takes the output tokens as the caller holds them (a list, sglang's array("q"), a
    numpy array) and refuses what is no token ids with a one-line ValueError."""

    def submit(self, request_id: str, tokens) -> None: ...

    def close(self) -> None: ...
