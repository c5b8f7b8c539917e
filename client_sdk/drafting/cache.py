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

import numpy as np

from client_sdk.drafting import cache_kernels, step_kernels
from sssd_wire.types import TrieBatch


class TrieCache:
    """Padded tail (``pad_tail``: int32 [width], -1 before a shorter context) -> the datastore's
    answer for it, stored at most ``ttl_s`` ago. Compiled (cache_kernels): a step looks up all
    its tails and splices the answers into its batch in one call. ``ways`` entries per set, the
    least recently used replaced; capacity is rounded up to a power of two of sets. The answers'
    nodes live in one ring of ``ring_nodes`` nodes (default 32 per entry): an entry whose nodes
    the ring has overwritten since is gone too, so memory is bounded whatever the answers' sizes
    (12 bytes per ring node plus 81 bytes per entry: 29 MiB at the default 50,000, made 65,536)."""

    def __init__(self, capacity: int = 50_000, ttl_s: float = 60.0, width: int = 4, clock=time.monotonic,
                 ways: int = 4, ring_nodes: int | None = None) -> None:
        if capacity < 1 or ways < 1 or width < 1:
            raise ValueError(f"a trie cache needs capacity, ways and width >= 1, got {capacity}, {ways}, {width}")
        sets = 1 << max(0, (-(-capacity // ways) - 1).bit_length())
        self.ttl_s, self.clock, self.width = ttl_s, clock, width
        self.capacity = sets * ways
        self._tags = np.zeros((sets, ways), dtype=np.int64)
        self._keys = np.full((sets, ways, width), -1, dtype=np.int32)
        self._live = np.zeros((sets, ways), dtype=np.int8)
        self._stored = np.zeros((sets, ways), dtype=np.float64)
        self._used = np.zeros((sets, ways), dtype=np.int64)
        self._start = np.zeros((sets, ways), dtype=np.int64)
        self._length = np.zeros((sets, ways), dtype=np.int64)
        self._meta = np.zeros((sets, ways, 3), dtype=np.int64)
        nodes = ring_nodes if ring_nodes is not None else 32 * self.capacity
        self._ring = (np.zeros(nodes, dtype=np.int32), np.zeros(nodes, dtype=np.int32), np.zeros(nodes, dtype=np.int32))
        self._head = np.zeros(1, dtype=np.int64)
        self._tick = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return int(cache_kernels.count_live(self._live, self._stored, self._start, self._head, self._ring[0].shape[0],
                                            self.clock(), self.ttl_s))

    def table(self) -> tuple:
        """The table's arrays, in the order cache_kernels' functions take them after the tails."""
        return (self._tags, self._keys, self._live, self._stored, self._used, self._start, self._length, self._meta,
                *self._ring, self._head)

    def fill(self, batch: TrieBatch, slots: np.ndarray, tails: np.ndarray) -> tuple[TrieBatch, np.ndarray]:
        """(``batch`` with each empty trie slots[i] replaced by the answer held for tails[i],
        held [m] bool: whether one was). A slot with a trie keeps it; an answer without nodes
        still brings its meta row (no match is news too)."""
        tails = self._check(tails)
        tok, par, cnt, offs, meta, held = cache_kernels.lookup_fill(
            batch.tokens, batch.parents, batch.counts, batch.node_offsets, batch.meta,
            np.ascontiguousarray(slots, dtype=np.int64), tails, *self.table(), self.clock(), self.ttl_s, self._tick)
        self.looked_up(tails.shape[0], int(held.sum()))
        return TrieBatch(tok, par, cnt, offs, meta), held.astype(bool)

    def looked_up(self, lookups: int, hits: int) -> None:
        """Book ``lookups`` reads made by a kernel given ``table()`` and base tick ``tick``."""
        self._tick += lookups
        self.hits += hits
        self.misses += lookups - hits

    @property
    def tick(self) -> int:
        """The base tick of the next reads (item i of them happens at tick + i)."""
        return self._tick

    def put(self, tails: np.ndarray, got: TrieBatch) -> None:
        """Store trie i of ``got`` as the answer for tails[i] (answers without a match too)."""
        if len(got) != tails.shape[0]:
            raise ValueError(f"{tails.shape[0]} tails but {len(got)} answers")
        tails = self._check(tails)
        cache_kernels.store(tails, got.tokens, got.parents, got.counts, got.node_offsets, got.meta,
                            *self.table(), self.clock(), self.ttl_s, self._tick)
        self._tick += tails.shape[0]

    def _check(self, tails: np.ndarray) -> np.ndarray:
        if tails.ndim != 2 or tails.shape[1] != self.width:
            raise ValueError(f"tails of shape {tails.shape}, want [m, {self.width}]")
        return np.ascontiguousarray(tails, dtype=np.int32)


class CacheFills:
    """The trie cache's fills, asked with the step's own prefetch: one lookup per step, not two
    (a Python gRPC call costs the service about as much CPU as a small lookup does: BENCHMARKS.md).
    The padded tails a step's drafts missed (``missed``) go out after the contexts of the next
    step's likely ends; their answers come back in the same answer, which the next step collects
    (``arrived``), and are stored at the prefetch after that, beside the GPU (``store``)."""

    def __init__(self, width: int) -> None:
        self._none = np.zeros((0, width), dtype=np.int32)
        self.missed = self._none  # padded tails the last drafts missed: asked with the next prefetch
        self.asked = self._none  # the distinct tails asked with the outstanding prefetch, in order
        self.first = 0  # the row of that prefetch's answer where their answers start
        self._got: TrieBatch | None = None  # that answer, once a step collected it whole

    def ask(self, ends: int, room: int) -> list[np.ndarray]:
        """The missed tails to ask after a prefetch's ``ends`` contexts (unpadded), once each, at
        most ``room`` of them (the rest are not asked)."""
        asked = distinct_rows(self.missed)[: max(room, 0)]
        self.asked, self.missed, self.first, self._got = asked, self._none, ends, None
        return [unpad(t) for t in self.asked]

    def arrived(self, got: TrieBatch | None) -> None:
        """The prefetch's answer as collected (None: it did not come in time)."""
        self._got = got if got is not None and len(got) == self.first + self.asked.shape[0] else None

    def store(self, cache: TrieCache) -> None:
        """Keep the answers to the asked tails that came with the collected answer."""
        if self._got is not None and self.asked.shape[0]:
            cache.put(self.asked, self._got.rows_from(self.first))
        self._got, self.asked = None, self._none


NO_CACHE = TrieCache(1, width=1).table()  # a kernel's cache arguments where there is no cache (not read)


def store_and_fill(cache: TrieCache | None, asked: np.ndarray, got: TrieBatch, batch: TrieBatch, empty: np.ndarray,
                   tails: np.ndarray) -> tuple[TrieBatch, np.ndarray, np.ndarray]:
    """Store the answers ``got`` to the padded tails ``asked`` (in ``cache``, or without one for
    this call alone), then fill the empty slots ``empty`` whose ``tails`` they answer. Returns
    (batch, the slots still empty, their tails)."""
    if cache is None:
        cache = TrieCache(4 * asked.shape[0], float("inf"), asked.shape[1])
    cache.put(asked, got)
    batch, held = cache.fill(batch, empty, tails)
    return batch, empty[~held], tails[~held]


def pad_tail(tail: np.ndarray, width: int) -> np.ndarray:
    """A context's last ``width`` tokens, -1 before a shorter one (int32 [width])."""
    out = np.full(width, -1, dtype=np.int32)
    k = min(width, tail.shape[0])
    out[width - k :] = tail[tail.shape[0] - k :]
    return out


def unpad(padded: np.ndarray) -> np.ndarray:
    return padded[padded >= 0]


def distinct_rows(tails: np.ndarray) -> np.ndarray:
    """The distinct rows of padded tails (int32 [m, width]), in no particular order."""
    return np.unique(tails, axis=0) if tails.shape[0] > 1 else tails


def tail_keys(padded: np.ndarray) -> list[bytes]:
    """The cache keys of padded contexts (int32 [m, width]), one row each, in one numpy call."""
    return np.ascontiguousarray(padded).view(np.dtype((np.void, padded.shape[1] * 4))).ravel().tolist()


def entries(batch: TrieBatch) -> list[tuple]:
    """(tokens, parents, counts, meta row as a tuple) per trie of ``batch`` (views, not copies)."""
    offs = batch.node_offsets.tolist()
    return [(batch.tokens[a:b], batch.parents[a:b], batch.counts[a:b], meta)
            for a, b, meta in zip(offs[:-1], offs[1:], map(tuple, batch.meta.tolist()))]


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
