"""The datastore's trie for every single-token context, held by the decode worker.

Zero-wait drafting asks the datastore, while a step verifies, for the contexts the step may end
in, one level deeper than drafting needs, and descends by the step's bonus token once it is
known. The bonus token is the one the draft got wrong: usually a rare continuation, absent from
the sampled trie, so the descent often finds nothing (BENCHMARKS.md: issue 16). A blocking
lookup would back off to the 1-token context of the bonus token; this table is that answer for
every token of the vocabulary, fetched in the background (chunks of contexts, never on a step's
path) and refreshed, so a step always has it.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np

from client_sdk.drafting import step_kernels
from client_sdk.drafting.cache import splice
from client_sdk.types import Busy
from sssd_wire.errors import one_line
from sssd_wire.types import TrieBatch

log = logging.getLogger("sssd.client")


class UnigramTable:
    """token -> (tokens, parents, counts, meta row) of the datastore's trie for context [token].

    Held as flat arrays (~12 bytes per node): the fetched chunks while a first pass is under
    way, then one batch over the whole vocabulary (``publish``), which ``fill`` reads in one
    compiled pass. Thread-safe for one loader and one reader: every swap is one assignment.
    """

    def __init__(self, vocab_size: int, chunk: int = 2048) -> None:
        if vocab_size <= 0 or chunk <= 0:
            raise ValueError(f"vocab_size {vocab_size} and chunk {chunk} must be > 0")
        self.vocab_size, self.chunk = vocab_size, chunk
        self._chunks: list[TrieBatch | None] = [None] * -(-vocab_size // chunk)
        self._whole: TrieBatch | None = None  # every token's trie, once a pass has completed
        self.hits = self.misses = 0

    @property
    def loaded(self) -> int:
        """Tokens whose trie has been fetched at least once."""
        return self.vocab_size if self._whole is not None else sum(len(b) for b in self._chunks if b is not None)

    @property
    def nodes(self) -> int:
        """Nodes held (the published table's, else the chunks fetched so far)."""
        whole = self._whole
        return len(whole.tokens) if whole is not None else sum(len(b.tokens) for b in self._chunks if b is not None)

    @property
    def whole(self) -> TrieBatch | None:
        """The published table (trie t: the context [t]), None before a complete pass."""
        return self._whole

    @property
    def published(self) -> bool:
        """Whether a complete pass is in: every token's trie is known (an absent one: no match)."""
        return self._whole is not None

    def get(self, token: int) -> tuple | None:
        if not 0 <= token < self.vocab_size:
            self.misses += 1
            return None
        batch, i = self._whole, token
        if batch is None:
            batch, i = self._chunks[token // self.chunk], token % self.chunk
        if batch is not None:
            a, b = int(batch.node_offsets[i]), int(batch.node_offsets[i + 1])
            if b > a:
                self.hits += 1
                return batch.tokens[a:b], batch.parents[a:b], batch.counts[a:b], batch.meta[i]
        self.misses += 1
        return None

    def fill(self, batch: TrieBatch, slots: np.ndarray, tokens: np.ndarray) -> TrieBatch:
        """``batch`` with each empty trie slots[i] replaced by the trie of context [tokens[i]]
        (one compiled pass over the batch; before the first complete load, one ``get`` per slot)."""
        whole = self._whole
        if whole is None:
            found = {}
            offs = batch.node_offsets
            for j, t in zip(slots.tolist(), tokens.tolist()):
                if offs[j + 1] == offs[j] and j not in found:
                    entry = self.get(t)
                    if entry is not None:
                        found[j] = entry
            return splice(batch, found)
        tok, par, cnt, offs, meta, replaced = step_kernels.fill_tries(
            batch.tokens, batch.parents, batch.counts, batch.node_offsets, batch.meta,
            np.asarray(slots, np.int64), np.asarray(tokens, np.int64),
            whole.tokens, whole.parents, whole.counts, whole.node_offsets, whole.meta, True)
        self.hits += replaced
        return TrieBatch(tok, par, cnt, offs, meta)

    def store(self, first: int, batch: TrieBatch) -> None:
        """The tries of contexts [first], [first + 1], ... (first a multiple of ``chunk``)."""
        if first % self.chunk or len(batch) != min(self.chunk, self.vocab_size - first):
            raise ValueError(f"a chunk starts at a multiple of {self.chunk} and holds {self.chunk} tries")
        self._chunks[first // self.chunk] = batch

    def publish(self) -> None:
        """Make the stored chunks (every one present) the table ``get`` and ``fill`` read."""
        if any(b is None for b in self._chunks):
            raise ValueError("publish needs every chunk of the vocabulary stored")
        chunks = [b for b in self._chunks if b is not None]
        sizes = np.asarray([len(b.tokens) for b in chunks], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        offs = np.concatenate([[0]] + [b.node_offsets[1:] + s for b, s in zip(chunks, starts)]).astype(np.int64)
        self._whole = TrieBatch(np.concatenate([b.tokens for b in chunks]), np.concatenate([b.parents for b in chunks]),
                                np.concatenate([b.counts for b in chunks]), offs,
                                np.concatenate([b.meta for b in chunks]))
        self._chunks = [None] * len(self._chunks)  # the whole batch holds them now (a refresh refills these)


class UnigramLoader:
    """Fills a UnigramTable in a daemon thread: chunks of ``chunk`` contexts fetched one after
    another, then again every ``refresh_s`` (the datastore keeps learning). A failed fetch is
    logged once per outage and retried after ``retry_s``; the table keeps what it has.

    Its lookups are background ones: under a namespace lookup rate the datastore serves them
    from what the namespace's steps leave (``Busy`` otherwise). A chunk then goes in parts,
    halved on each ``Busy`` (a part larger than half a second of the rate is never taken) and
    doubled again on each success, after a pause that grows to ``retry_s``; counted in
    ``deferred``, not logged (the datastore is up and the steps come first)."""

    def __init__(self, table: UnigramTable, fetch: Callable[[list[np.ndarray]], TrieBatch],
                 refresh_s: float = 600.0, retry_s: float = 5.0, busy_s: float = 0.2) -> None:
        self.table, self.fetch, self.chunk = table, fetch, table.chunk
        self.refresh_s, self.retry_s, self.busy_s = refresh_s, retry_s, busy_s
        self.failures = self.deferred = 0
        self.part = self.chunk  # contexts per lookup now
        self.complete = threading.Event()  # set once every token has been fetched once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sssd-unigrams", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            first = 0
            while first < self.table.vocab_size and not self._stop.is_set():
                contexts = [np.asarray([t], dtype=np.int32)
                            for t in range(first, min(first + self.chunk, self.table.vocab_size))]
                try:
                    tries = self._fetch_chunk(contexts)
                    if tries is None:  # closed meanwhile
                        break
                    self.table.store(first, tries)
                except Exception as exc:  # the datastore is down or slow: the table keeps what it has
                    self.failures += 1
                    if not failing:
                        log.warning("SSSD: fetching the datastore's single-token tries failed (%s); retrying every %.0f s",
                                    one_line(exc), self.retry_s)
                    failing = True
                    self._stop.wait(self.retry_s)
                    continue
                failing = False
                first += len(contexts)
            if first >= self.table.vocab_size:
                self.table.publish()
                self.complete.set()
            self._stop.wait(min(self.refresh_s, threading.TIMEOUT_MAX))  # (inf: an OverflowError ended the thread)

    def _fetch_chunk(self, contexts: list[np.ndarray]) -> TrieBatch | None:
        """One chunk's tries, in parts of ``part`` contexts while the datastore is busy (None: closed meanwhile)."""
        parts, done, pause = [], 0, self.busy_s
        while done < len(contexts):
            piece = contexts[done : done + self.part]
            try:
                parts.append(self.fetch(piece))
            except Busy:
                self.deferred += 1
                self.part = max(1, self.part // 2)
                if self._stop.wait(pause):
                    return None
                pause = min(self.retry_s, 2 * pause)
                continue
            done += len(piece)
            self.part, pause = min(self.chunk, 2 * self.part), self.busy_s
        return TrieBatch.joined(parts)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
