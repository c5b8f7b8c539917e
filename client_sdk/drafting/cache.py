"""A bounded cache of the datastore's answers by query tail, for the tries prefetch cannot give.

Outcome prefetch (outcomes.py) serves the contexts whose last token, the step's bonus token,
followed the prefetched context in the datastore. The bonus token is, by construction, the
one the draft failed to predict, so often it did not: the context it ends is then new, and
the datastore's answer for it (usually a short suffix match such as the last two tokens)
arrives only after the step has drafted. Short tails recur across steps and requests, so
those answers are kept here by the exact tail that was asked: a later step that ends in the
same tail finds the same answer without waiting (the service's sample is deterministic, so a
cached answer is what a fresh lookup would return until the datastore changes; entries
expire after ``ttl_s``).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from sssd_wire.types import TrieBatch


class TrieCache:
    """tail bytes -> (tokens, parents, counts, meta row, stored at). LRU, at most ``capacity``."""

    def __init__(self, capacity: int = 50_000, ttl_s: float = 60.0, clock=time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes):
        entry = self._entries.get(key)
        if entry is None or self.clock() - entry[4] > self.ttl_s:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put_batch(self, keys: list[bytes], batch: TrieBatch) -> None:
        """Store trie i of ``batch`` under keys[i] (answers without a match too: they are news)."""
        now = self.clock()
        for key, entry in zip(keys, entries(batch)):
            self._entries[key] = entry + (now,)
            self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def entries(batch: TrieBatch) -> list[tuple]:
    """(tokens, parents, counts, meta row) per trie of ``batch`` (views, not copies)."""
    offs = batch.node_offsets.tolist()
    return [(batch.tokens[a:b], batch.parents[a:b], batch.counts[a:b], batch.meta[i])
            for i, (a, b) in enumerate(zip(offs[:-1], offs[1:]))]


def splice(batch: TrieBatch, found: dict[int, tuple]) -> TrieBatch:
    """``batch`` with trie j replaced by found[j] (tokens, parents, counts, meta row, ...) for
    each j in ``found``; cost proportional to the replacements, not the batch."""
    if not found:
        return batch
    offs = batch.node_offsets
    tok, par, cnt, new_offs = [], [], [], offs.copy()
    meta = batch.meta.copy()
    last = 0
    for j in sorted(found):
        t, p, c, m = found[j][:4]
        a, b = int(offs[j]), int(offs[j + 1])
        tok += [batch.tokens[last:a], t]
        par += [batch.parents[last:a], p]
        cnt += [batch.counts[last:a], c]
        new_offs[j + 1 :] += t.shape[0] - (b - a)
        meta[j] = m
        last = b
    tok.append(batch.tokens[last:])
    par.append(batch.parents[last:])
    cnt.append(batch.counts[last:])
    return TrieBatch(np.concatenate(tok), np.concatenate(par), np.concatenate(cnt), new_offs, meta)
