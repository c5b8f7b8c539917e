"""Per-request n-gram index over prompt + output (the request's own text as a draft source)."""

from __future__ import annotations

import itertools
import weakref
from typing import NamedTuple

import numpy as np

from client_sdk.drafting import kernels
from sssd_wire.types import ContinuationTree


MAX_TOKENS = 2**31 - 2  # positions (and the chain slot after the last) fit int32


class LocalIndex:
    """Incremental index of one request's tokens. Not thread-safe (one owner: the request).

    max_ngram: longest n-gram indexed (longer matches are more reliable drafts).
    Cost per appended token O(max_ngram^2); per match O(max_ngram + max_occ * depth).
    Positions are int32 (at most MAX_TOKENS tokens), and the hash heads have one to two buckets
    per position of the starting capacity: a request indexed at the default capacity takes about
    0.3 MB (0.5 MB with twice the buckets, which gave the same drafts on every dev set; 1 MB with
    int64 positions), which adds up over a large batch.
    """

    grown = 0  # reallocations of any index so far (a LocalArena's kept answer is stale after one)

    def __init__(self, prompt, max_ngram: int = 6, capacity: int = 4096, hash_bits: int = 12) -> None:
        prompt = np.asarray(prompt, dtype=np.int32)
        if prompt.shape[0] > MAX_TOKENS:
            raise ValueError(f"a request's own-text index holds at most {MAX_TOKENS} tokens, got {prompt.shape[0]}")
        cap = min(max(capacity, 2 * prompt.shape[0] + 64), MAX_TOKENS)
        self.max_ngram = max_ngram
        self.mask = (1 << max(hash_bits, cap.bit_length())) - 1
        self.buf = np.zeros(cap, dtype=np.int32)
        self.head = np.full((max_ngram, self.mask + 1), -1, dtype=np.int32)
        self.prev = np.full((max_ngram, cap + 1), -1, dtype=np.int32)
        self.n = 0  # tokens written
        self.indexed = 0  # positions whose n-grams are indexed (``write`` leaves the rest to ``index_pending``)
        self.generation = 0  # counts reallocations of buf / prev (a LocalArena re-reads them then)
        self.extend(prompt)

    def state(self, use: bool = True) -> kernels.LocalState:
        """The index as the drafting kernel takes it (``use=False``: drafts ignore this text)."""
        return kernels.LocalState(self.buf, self.n if use else 0, self.indexed, self.head, self.prev, self.mask)

    def extend(self, tokens) -> None:
        """Append committed tokens (accepted + bonus), indexed at once."""
        tokens = np.asarray(tokens, dtype=np.int32)
        self.index_pending()
        if self.n + tokens.shape[0] > self.buf.shape[0]:
            self._grow(self.n + tokens.shape[0])
        self.n = self.indexed = kernels.local_append(self.buf, self.n, tokens, self.head, self.prev, self.mask)

    def write(self, tokens: list[int]) -> None:
        """Append committed tokens without indexing their n-grams yet (``index_pending`` does,
        later: matching scans the pending positions directly, so drafts are the same meanwhile)."""
        self.index_pending()
        self.reserve(len(tokens))
        self.buf[self.n : self.n + len(tokens)] = tokens
        self.n += len(tokens)

    def index_pending(self) -> None:
        if self.indexed < self.n:
            kernels.local_index(self.buf, self.indexed, self.n, self.head, self.prev, self.mask)
            self.indexed = self.n

    def reserve(self, count: int) -> None:
        """Room for ``count`` more tokens (reallocating, as ``extend`` would, when short)."""
        if self.n + count > self.buf.shape[0]:
            self._grow(self.n + count)

    def _grow(self, need: int) -> None:
        if need > MAX_TOKENS:
            raise ValueError(f"a request's own-text index holds at most {MAX_TOKENS} tokens, {need} asked for")
        cap = min(max(need, 2 * self.buf.shape[0]), MAX_TOKENS)
        buf = np.zeros(cap, dtype=np.int32)
        buf[: self.n] = self.buf[: self.n]
        prev = np.full((self.max_ngram, cap + 1), -1, dtype=np.int32)
        prev[:, : self.prev.shape[1]] = self.prev
        self.buf, self.prev = buf, prev
        self.generation += 1
        LocalIndex.grown += 1

    @property
    def tokens(self) -> np.ndarray:
        return self.buf[: self.n]

    def continuation(self, depth: int, max_occ: int = 8, max_nodes: int = 64, min_match: int = 1) -> ContinuationTree:
        """Trie of what followed the most recent earlier occurrences of the longest matching suffix."""
        k, pos = kernels.local_match(self.buf, self.n, self.indexed, self.head, self.prev, self.mask, min_match, max_occ,
                                     4 * max_occ)
        if k == 0:
            return ContinuationTree.empty()
        tok, par, cnt = kernels.rows_trie(self.buf, self.n, pos, depth, max_nodes)
        return ContinuationTree(tok, par, cnt, int(k), int(pos.shape[0]))


class LocalArena:
    """Many requests' own-text indexes as the batched kernels take them: ``table``, one row per
    slot (``kernels.arena_arrays``: the addresses and shapes of the index's buf, head and prev),
    while the arena keeps those arrays alive.

    ``slots(indexes)`` gives each index's slot, registering new ones and re-reading the arrays
    of one that grew; an index that is garbage-collected frees its slot: at the next ``slots``
    call its row is zeroed and its arrays let go (a 32K-token prompt's index is about 3.3 MB, half of
    it hash heads), so the memory held follows the live requests, not the largest batch seen,
    and no row of the table points at freed memory (a zeroed row points at nothing, and no slot
    list names it). One thread calls ``slots`` and the kernels; a slot is only recycled inside
    ``slots``. Registering costs a few µs once per request.

    A step asks for the same indexes several times (its commit, its tails, its drafts, its
    prefetch): the last answer is kept, and asking again for the same indexes in the same order
    costs one comparison of their ids while no index has grown or been dropped since (a dropped
    index's id may be taken by a new one).
    """

    def __init__(self) -> None:
        self.table = np.zeros((0, 6), dtype=np.int64)  # row s: slot s's index (kernels.arena_arrays)
        self._held: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # what the table's rows point into
        self._slot: dict[int, int] = {}  # id(index) -> slot
        self._generation: list[int] = []
        self._free: list[int] = []
        self._released: list[int] = []  # appended by finalizers (any thread), drained by slots()
        self._asked: list[int] = []  # the ids of the indexes of the last ``slots`` call
        self._answer = np.zeros(0, dtype=np.int64)  # and its answer
        self._grown = -1  # LocalIndex.grown when it was given (-1: an index was dropped since)

    def __len__(self) -> int:
        return len(self._slot)

    def slots(self, indexes) -> np.ndarray:
        """[len(indexes)] int64: each index's slot (-1 for None: no index yet). Read-only for
        the caller: the same array answers the same question again."""
        asked = list(map(id, indexes))
        if self._grown == LocalIndex.grown and asked == self._asked:
            return self._answer
        self._drain()
        out = []
        for local in indexes:
            if local is None:
                out.append(-1)
                continue
            slot = self._slot.get(id(local))
            if slot is None:
                slot = self._add(local)
            elif self._generation[slot] != local.generation:
                self._put(slot, local)
            out.append(slot)
        self._asked, self._grown = asked, LocalIndex.grown
        self._answer = np.array(out, dtype=np.int64)
        return self._answer

    def register(self, local: LocalIndex) -> None:
        """Give ``local`` its slot now rather than at the first ``slots`` call that names it (at a
        request's admission, say, instead of on its first step's critical path)."""
        self._drain()
        if id(local) not in self._slot:
            self._add(local)

    def _drain(self) -> None:
        while self._released:
            slot = self._released.pop()
            self._held[slot] = ()
            self.table[slot] = 0
            self._free.append(slot)

    def _add(self, local: LocalIndex) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._held)
            if slot == self.table.shape[0]:  # room for twice as many slots (the rows are copied)
                table = np.zeros((max(8, 2 * slot), self.table.shape[1]), dtype=np.int64)
                table[:slot] = self.table
                self.table = table
            self._held.append(())
            self._generation.append(-1)
        self._put(slot, local)
        key = id(local)
        self._slot[key] = slot
        weakref.finalize(local, self._release, key, slot)
        return slot

    def _put(self, slot: int, local: LocalIndex) -> None:
        """Point slot's row at the index's arrays now (held until the slot is given others)."""
        buf, head, prev = local.buf, local.head, local.prev
        self._held[slot] = (buf, head, prev)
        self.table[slot] = (buf.ctypes.data, head.ctypes.data, prev.ctypes.data, buf.shape[0], *head.shape)
        self._generation[slot] = local.generation

    def arrays(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (buf, head, prev) that slot's row points into."""
        return self._held[slot]

    def _release(self, key: int, slot: int) -> None:
        if key in self._asked:  # the kept answer names this index's id, which a new index may take
            self._grown = -1
        if self._slot.get(key) == slot:
            del self._slot[key]
        self._released.append(slot)


class IndexBatch(NamedTuple):
    """A step's requests' own-text indexes (None: not built yet) and the arena that the
    compiled kernels read them through (slots: ``arena.slots(indexes)``, if already asked)."""

    arena: LocalArena
    indexes: list[LocalIndex | None]
    slots: np.ndarray | None = None

    def tails(self, width: int) -> tuple["IndexBatch", np.ndarray]:
        """(this batch with its slots, [B, width] int32: each index's last ``width`` tokens,
        -1 before a shorter text and for an index not built yet)."""
        slots = self.arena.slots(self.indexes) if self.slots is None else self.slots
        ns = np.fromiter((x.n if x is not None else 0 for x in self.indexes), dtype=np.int64, count=len(self.indexes))
        return self._replace(slots=slots), kernels.gather_tails(self.arena.table, slots, ns, width)


# below this many rows one call per row is cheaper than one batched call, whose arguments cost ~6 µs
# to pass in (bench/batch_crossover.py x3, bench/results/batch-crossover-table-run*.json: 32 rows
# 22.4-22.7 µs batched against 29.8-31.7 one by one; 16 rows, hot, 14.3-14.5 against 15.3-15.8, but
# in the serving simulation 16 batched was no faster: BENCHMARKS.md, "A step's commit and cut")
SMALL_APPEND = 32


def write_many(arena: LocalArena, indexes: list[LocalIndex], tokens: list[list[int]],
               packed: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """``indexes[i].write(tokens[i])`` for every i, in one compiled call (per index for a small
    batch): the step's tokens written, their n-grams left to ``index_many``. The indexes must
    be distinct. packed: (the tokens back to back as int32, offsets [len(tokens) + 1]), if the
    caller has them already."""
    if len(indexes) < SMALL_APPEND:
        for local, toks in zip(indexes, tokens):
            local.write(toks)
        return
    ns, indexed, masks = [], [], []
    for local, toks in zip(indexes, tokens):  # one pass: room for the new tokens, the kernel's inputs
        local.reserve(len(toks))
        ns.append(local.n)
        indexed.append(local.indexed)
        masks.append(local.mask)
    if packed is None:
        offs = np.zeros(len(tokens) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in tokens], out=offs[1:])
        new = np.fromiter(itertools.chain.from_iterable(tokens), dtype=np.int32, count=int(offs[-1]))
    else:
        new, offs = packed
    slots = arena.slots(indexes)  # first: registering may reallocate the table
    out = kernels.write_rows(arena.table, slots, np.asarray(ns, dtype=np.int64),
                             np.asarray(indexed, dtype=np.int64), np.asarray(masks, dtype=np.int64), new, offs).tolist()
    for local, n, done in zip(indexes, out, ns):
        local.n, local.indexed = n, done


def index_many(arena: LocalArena, indexes: list[LocalIndex]) -> None:
    """``index_pending`` of every index, in one compiled call from two indexes up: it runs beside
    the GPU, where the batched call's fixed cost matters less than one call per index."""
    pending = [x for x in dict.fromkeys(indexes) if x.indexed < x.n]  # an index listed twice: indexed once
    if len(pending) < 2:
        for local in pending:
            local.index_pending()
        return
    slots = arena.slots(pending)  # first: registering may reallocate the table
    kernels.index_rows(arena.table, slots,
                       np.fromiter((x.indexed for x in pending), dtype=np.int64, count=len(pending)),
                       np.fromiter((x.n for x in pending), dtype=np.int64, count=len(pending)),
                       np.fromiter((x.mask for x in pending), dtype=np.int64, count=len(pending)))
    for local in pending:
        local.indexed = local.n
