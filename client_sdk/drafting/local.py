"""Per-request n-gram index over prompt + output (the request's own text as a draft source)."""

from __future__ import annotations

import numpy as np

from client_sdk.drafting import kernels
from sssd_wire.types import ContinuationTree


class LocalIndex:
    """Incremental index of one request's tokens. Not thread-safe (one owner: the request).

    max_ngram: longest n-gram indexed (longer matches are more reliable drafts).
    Cost per appended token O(max_ngram^2); per match O(max_ngram + max_occ * depth).
    """

    def __init__(self, prompt, max_ngram: int = 6, capacity: int = 4096, hash_bits: int = 12) -> None:
        prompt = np.asarray(prompt, dtype=np.int32)
        cap = max(capacity, 2 * prompt.shape[0] + 64)
        self.max_ngram = max_ngram
        self.mask = (1 << max(hash_bits, (2 * cap).bit_length())) - 1
        self.buf = np.zeros(cap, dtype=np.int32)
        self.head = np.full((max_ngram, self.mask + 1), -1, dtype=np.int64)
        self.prev = np.full((max_ngram, cap + 1), -1, dtype=np.int64)
        self.n = 0
        self.extend(prompt)

    def state(self, use: bool = True) -> kernels.LocalState:
        """The index as the drafting kernel takes it (``use=False``: drafts ignore this text)."""
        return kernels.LocalState(self.buf, self.n if use else 0, self.head, self.prev, self.mask)

    def extend(self, tokens) -> None:
        """Append committed tokens (accepted + bonus)."""
        tokens = np.asarray(tokens, dtype=np.int32)
        if self.n + tokens.shape[0] > self.buf.shape[0]:
            self._grow(self.n + tokens.shape[0])
        self.n = kernels.local_append(self.buf, self.n, tokens, self.head, self.prev, self.mask)

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self.buf.shape[0])
        buf = np.zeros(cap, dtype=np.int32)
        buf[: self.n] = self.buf[: self.n]
        prev = np.full((self.max_ngram, cap + 1), -1, dtype=np.int64)
        prev[:, : self.prev.shape[1]] = self.prev
        self.buf, self.prev = buf, prev

    @property
    def tokens(self) -> np.ndarray:
        return self.buf[: self.n]

    def continuation(self, depth: int, max_occ: int = 8, max_nodes: int = 64, min_match: int = 1) -> ContinuationTree:
        """Trie of what followed the most recent earlier occurrences of the longest matching suffix."""
        k, pos = kernels.local_match(self.buf, self.n, self.head, self.prev, self.mask, min_match, max_occ, 4 * max_occ)
        if k == 0:
            return ContinuationTree.empty()
        tok, par, cnt = kernels.rows_trie(self.buf, self.n, pos, depth, max_nodes)
        return ContinuationTree(tok, par, cnt, int(k), int(pos.shape[0]))
