"""Boundary types of the SDK."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Continuation:
    """A counted continuation trie from one source (datastore or local n-grams).

    tokens/parents/counts are parallel [N] arrays in topological order; parents[i] == -1
    means a child of the root (the last committed token).
    """

    tokens: np.ndarray  # [N] int32
    parents: np.ndarray  # [N] int32
    counts: np.ndarray  # [N] int32 (or float weights for local sources)
    match_length: int = 0
    occurrences: int = 0

    @staticmethod
    def empty() -> "Continuation":
        z = np.zeros(0, dtype=np.int32)
        return Continuation(z, z, z, 0, 0)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclasses.dataclass(frozen=True)
class LookupOptions:
    """What the SDK asks the datastore for (0 = server default)."""

    max_match: int = 4
    min_match: int = 1
    min_occurrences: int = 1
    sample_budget: int = 64
    depth: int = 8
    max_nodes: int = 64


@dataclasses.dataclass(frozen=True)
class DraftConfig:
    """Knobs of drafting (one field per knob; the CLI and env overrides derive from these)."""

    max_depth: int = 8  # deepest draft node (tokens after the root)
    max_children: int = 8  # branching limit per node
    local_ngram: int = 6  # longest n-gram of the request's own text that is indexed
    local_occurrences: int = 8  # most recent earlier occurrences read from the request's text
    remote_match: int = 4  # longest context suffix searched in the datastore
    remote_suffixes: tuple[int, ...] = (2,)  # extra, shorter suffix lengths looked up as their own tries
    combine: str = "max"  # how tries that share a path combine: "max" or "noisy-or"
    remote_samples: int = 64  # datastore occurrences sampled per lookup
    remote_min_occurrences: int = 1  # a suffix is used only with at least this many occurrences
    remote_nodes: int = 64  # nodes of the datastore's continuation trie


@dataclasses.dataclass(frozen=True)
class TrieBatch:
    """Datastore tries of a batch, flat (as on the wire): trie i is nodes node_offsets[i]..[i+1].

    Parents index within their own trie (-1 = root). A decode step asks for S suffix lengths
    per request, so request r owns tries r*S .. r*S + S - 1.
    """

    tokens: np.ndarray  # [N] int32
    parents: np.ndarray  # [N] int32
    counts: np.ndarray  # [N] int32
    node_offsets: np.ndarray  # [T + 1] int64
    match_lengths: np.ndarray  # [T] int64

    @staticmethod
    def empty(tries: int = 0) -> "TrieBatch":
        z = np.zeros(0, dtype=np.int32)
        return TrieBatch(z, z, z, np.zeros(tries + 1, dtype=np.int64), np.zeros(tries, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.node_offsets.shape[0] - 1)

    def trie(self, i: int) -> Continuation:
        a, b = int(self.node_offsets[i]), int(self.node_offsets[i + 1])
        return Continuation(self.tokens[a:b], self.parents[a:b], self.counts[a:b], int(self.match_lengths[i]))
