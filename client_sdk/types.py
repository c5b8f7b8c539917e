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
