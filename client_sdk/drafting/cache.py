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

from client_sdk.drafting import step_kernels
from sssd_wire.types import TrieBatch


class TrieCache:
    """tail key (``tail_key``) -> (tokens, parents, counts, meta row, stored at). LRU, at most ``capacity``."""

    def __init__(self, capacity: int = 50_000, ttl_s: float = 60.0, clock=time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes):
        return self.get_many([key])[0]

    def get_many(self, keys: list[bytes]) -> list:
        """``get`` for each key, against one reading of the clock."""
        now, out = self.clock(), []
        entries, ttl = self._entries, self.ttl_s
        for key in keys:
            entry = entries.get(key)
            if entry is None or now - entry[4] > ttl:
                out.append(None)
                continue
            entries.move_to_end(key)
            out.append(entry)
        hits = len(keys) - out.count(None)
        self.hits += hits
        self.misses += len(keys) - hits
        return out

    def pop_found(self, missing: dict[bytes, list[int]]) -> dict[int, tuple]:
        """Slot -> cached answer for the tails of ``missing`` (tail -> slots) held here; the
        tails found are removed from ``missing``."""
        found = {}
        keys = list(missing)
        for key, entry in zip(keys, self.get_many(keys)):
            if entry is not None:
                found.update((j, entry) for j in missing.pop(key))
        return found

    def put_batch(self, keys: list[bytes], batch: TrieBatch) -> None:
        """Store trie i of ``batch`` under keys[i] (answers without a match too: they are news)."""
        now = self.clock()
        for key, entry in zip(keys, entries(batch)):
            self._entries[key] = entry + (now,)
            self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def pad_tail(tail: np.ndarray, width: int) -> np.ndarray:
    """A context's last ``width`` tokens, -1 before a shorter one (int32 [width])."""
    out = np.full(width, -1, dtype=np.int32)
    k = min(width, tail.shape[0])
    out[width - k :] = tail[tail.shape[0] - k :]
    return out


def unpad(padded: np.ndarray) -> np.ndarray:
    return padded[padded >= 0]


def tail_key(tail: np.ndarray, width: int) -> bytes:
    """The cache key of a context of at most ``width`` tokens (``tail_keys`` of its padded row)."""
    return pad_tail(tail, width).tobytes()


def tail_keys(padded: np.ndarray) -> list[bytes]:
    """The cache keys of padded contexts (int32 [m, width]), one row each, in one numpy call."""
    return np.ascontiguousarray(padded).view(np.dtype((np.void, padded.shape[1] * 4))).ravel().tolist()


def entries(batch: TrieBatch) -> list[tuple]:
    """(tokens, parents, counts, meta row as a tuple) per trie of ``batch`` (views, not copies)."""
    offs = batch.node_offsets.tolist()
    return [(batch.tokens[a:b], batch.parents[a:b], batch.counts[a:b], meta)
            for a, b, meta in zip(offs[:-1], offs[1:], map(tuple, batch.meta.tolist()))]


def take(cache: TrieCache | None, keys: list[bytes], got: TrieBatch, missing: dict[bytes, list[int]]) -> dict[int, tuple]:
    """Slot -> answer for the tails of ``missing`` among ``keys`` (trie i of ``got`` answers
    keys[i]; each is removed from ``missing``); the answers are cached too."""
    if cache is not None:
        cache.put_batch(keys, got)
    found = {}
    for key, entry in zip(keys, entries(got)):
        for j in missing.pop(key, ()):
            found[j] = entry
    return found


def splice(batch: TrieBatch, found: dict[int, tuple]) -> TrieBatch:
    """``batch`` with each empty trie j filled by found[j] (tokens, parents, counts, meta row,
    ...), in one compiled pass over the batch (a slot that holds a trie keeps it). Slots that
    share an entry object (one tail, several slots) pass its arrays in once."""
    if not found:
        return batch
    index: dict[int, int] = {}
    got = []
    for e in found.values():
        if index.setdefault(id(e), len(got)) == len(got):
            got.append(e)
    which = np.fromiter((index[id(e)] for e in found.values()), dtype=np.int64, count=len(found))
    offs = np.zeros(len(got) + 1, dtype=np.int64)
    np.cumsum([e[0].shape[0] for e in got], out=offs[1:])
    tok, par, cnt, offs, meta, _ = step_kernels.fill_tries(
        batch.tokens, batch.parents, batch.counts, batch.node_offsets, batch.meta,
        np.fromiter(found, dtype=np.int64, count=len(found)), which,
        np.concatenate([e[0] for e in got]), np.concatenate([e[1] for e in got]),
        np.concatenate([e[2] for e in got]), offs, np.asarray([e[3] for e in got], dtype=np.int64), False)
    return TrieBatch(tok, par, cnt, offs, meta)
