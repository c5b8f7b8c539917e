"""The per-namespace index: a memtable of pending documents plus immutable segments.

Lifecycle of a document: ``add`` puts it in the memtable (durable already, in the store),
``freeze`` hands the memtable to a builder, ``build_segment`` (lock-free, slow) makes a
segment, ``install`` swaps it in. Compaction is the same: ``plan_compaction`` picks segments,
``merge_segments`` builds (lock-free), ``install`` swaps. Lookups read ``self._segments``, a
tuple replaced atomically, so they never wait for builds.

Invariants checked by ``check_integrity``:
- every registered document is in exactly one place: memtable, a build in flight, or one
  live slot of one segment, and that slot's id and sequence number match;
- every live segment slot has a registry entry; dead slots have none pointing at them;
- ``live_tokens`` equals the sum of registered document lengths; retention holds;
- each segment's arrays are consistent (separators, suffix order, sampled keys).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import threading
from collections.abc import Collection, Sequence

import numba
import numpy as np

from datastore_service.core import kernels
from datastore_service.core.segment import PAD, Segment, bucket_table
from datastore_service.core.types import (ContinuationTree, Document, LookupParams, NamespaceSpec, TrieBatch,
                                          checked_tokens)
from sssd_wire.errors import InvalidArgument
from sssd_wire.types import DOCUMENT_ID, NOT_CONTEXTS, good_document_id

MAX_DOC_TOKENS = 1 << 20  # per document; larger inputs are rejected at the boundary


def digest(tokens: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(tokens, dtype="<i4").tobytes(), digest_size=16).digest()


@dataclasses.dataclass
class DocRef:
    seq: int
    length: int
    digest: bytes
    segment: int | None = None  # None: memtable or a build in flight
    ordinal: int = -1


@dataclasses.dataclass(frozen=True)
class AddResult:
    added: list[str]
    duplicates: list[str]
    evicted: list[str]
    conflicts: list[str] = dataclasses.field(default_factory=list)  # ids stored with other tokens: not added


@dataclasses.dataclass(frozen=True)
class IndexCounts:
    """How big a namespace's index is right now."""

    documents: int
    tokens: int  # live tokens
    segments: int
    pending_tokens: int  # in the memtable, not yet in a segment
    resident_bytes: int


class NamespaceIndex:
    """All documents of one namespace. Thread-safe: one writer lock, lock-free readers."""

    def __init__(self, spec: NamespaceSpec, max_doc_tokens: int = MAX_DOC_TOKENS, retention: bool = True) -> None:
        """retention False: ``spec.max_tokens`` is not applied here (a read replica mirrors
        its writer's evictions instead)."""
        self.spec = spec
        self.max_doc_tokens = max_doc_tokens
        self.retention = retention
        self._lock = threading.RLock()
        self._docs: dict[str, DocRef] = {}  # insertion order == seq order
        self._segments: tuple[Segment, ...] = ()
        self._view = SegmentView(())
        self._memtable: list[tuple[str, int, np.ndarray]] = []
        self._building: dict[str, int] = {}  # doc id -> seq, frozen but not yet installed
        self._next_seq = 1
        self.live_tokens = 0

    # -- validation ---------------------------------------------------------------------

    def validate(self, doc: Document) -> None:
        """Raise InvalidArgument for an empty, oversized or out-of-vocabulary document."""
        toks = doc.tokens
        if not good_document_id(doc.doc_id):
            raise InvalidArgument(f"document id {doc.doc_id!r} must be {DOCUMENT_ID}")
        if toks.ndim != 1 or toks.shape[0] == 0:
            raise InvalidArgument(f"document {doc.doc_id!r} is empty")
        if toks.shape[0] > self.max_doc_tokens:
            raise InvalidArgument(
                f"document {doc.doc_id!r} has {toks.shape[0]} tokens, over the cap {self.max_doc_tokens}"
            )
        if self.spec.max_tokens and toks.shape[0] > self.spec.max_tokens:  # it would evict everything, itself too
            raise InvalidArgument(f"document {doc.doc_id!r} has {toks.shape[0]} tokens, over namespace "
                                  f"{self.spec.name!r} (max_tokens {self.spec.max_tokens})")
        self.validate_tokens(toks, f"document {doc.doc_id!r}")

    def validate_tokens(self, toks: np.ndarray, what: str) -> None:
        if toks.shape[0] == 0:
            return
        lo, hi = int(toks.min()), int(toks.max())
        if lo < 0 or hi >= self.spec.vocab_size:
            bad = lo if lo < 0 else hi
            raise InvalidArgument(
                f"{what}: token id {bad} outside [0, {self.spec.vocab_size}) of namespace {self.spec.name!r}"
            )

    def classify(self, docs: Sequence[Document]) -> tuple[list[Document], list[str], list[str]]:
        """Split a batch into new documents, exact duplicates and conflicts (ids already stored
        with other tokens: refused one by one, the rest of the batch goes on).

        Raises InvalidArgument for bad documents or an id repeated inside the batch with
        other content (a malformed request: nothing of it is stored).
        """
        fresh: list[Document] = []
        dups: list[str] = []
        conflicts: list[str] = []
        seen: dict[str, bytes] = {}
        for doc in docs:
            self.validate(doc)
            d = digest(doc.tokens)
            prior = self._docs.get(doc.doc_id)
            if doc.doc_id in seen:
                if seen[doc.doc_id] != d:
                    raise InvalidArgument(f"document id {doc.doc_id!r} appears twice in the batch with different tokens")
                dups.append(doc.doc_id)
            elif prior is not None:
                (dups if prior.digest == d else conflicts).append(doc.doc_id)
            else:
                fresh.append(doc)
            seen[doc.doc_id] = d
        return fresh, dups, conflicts

    # -- writes -------------------------------------------------------------------------

    def add(self, docs: Sequence[Document], seqs: Sequence[int] | None = None) -> AddResult:
        """Register documents into the memtable, then apply retention.

        The caller has made them durable first. ``seqs`` restores stored sequence numbers on
        restart; new documents get fresh ones.
        """
        with self._lock:
            fresh, dups, conflicts = self.classify(docs)
            for i, doc in enumerate(fresh):
                seq = seqs[i] if seqs is not None else self._next_seq
                self._next_seq = max(self._next_seq, seq + 1)
                self._docs[doc.doc_id] = DocRef(seq, int(doc.tokens.shape[0]), digest(doc.tokens))
                self._memtable.append((doc.doc_id, seq, doc.tokens))
                self.live_tokens += int(doc.tokens.shape[0])
            return AddResult([d.doc_id for d in fresh], dups, self.evict_for_retention(), conflicts)

    def next_seqs(self, count: int) -> list[int]:
        return list(range(self._next_seq, self._next_seq + count))

    def evictions_for(self, fresh: Sequence[tuple[str, int]] = ()) -> list[str]:
        """The ids retention evicts, oldest first, once documents of these (id, length) are added
        after the others (some of them, if they alone pass the bound); nothing changes."""
        cap = self.spec.max_tokens if self.retention else 0
        live, evicted = self.live_tokens + sum(n for _, n in fresh), []
        with self._lock:
            for doc_id, n in itertools.chain(((d, ref.length) for d, ref in self._docs.items()), fresh):
                if not cap or live <= cap:
                    break
                evicted.append(doc_id)
                live -= n
        return evicted

    def evict_for_retention(self) -> list[str]:
        """Delete the oldest documents until live tokens fit ``spec.max_tokens``."""
        with self._lock:
            evicted = self.evictions_for()
            for doc_id in evicted:
                self._remove(doc_id)
        return evicted

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        """Remove documents by id; returns those that existed. Lookups stop seeing them now."""
        with self._lock:
            found = [d for d in dict.fromkeys(doc_ids) if d in self._docs]  # (a repeated id: KeyError)
            for d in found:
                self._remove(d)
            return found

    def _remove(self, doc_id: str) -> None:
        ref = self._docs.pop(doc_id)
        self.live_tokens -= ref.length
        if ref.segment is not None:
            view = self._view
            s = next(i for i, seg in enumerate(view.segments) if seg.segment_id == ref.segment)
            view.segments[s].alive[ref.ordinal] = False
            view.dead[s] = True
        elif doc_id in self._building:
            del self._building[doc_id]  # install() will see it is gone
        else:
            self._memtable = [m for m in self._memtable if m[0] != doc_id]

    # -- flush and compaction -------------------------------------------------------------

    def freeze(self) -> list[tuple[str, int, np.ndarray]]:
        """Take the memtable for a segment build; its documents stay registered."""
        with self._lock:
            frozen, self._memtable = self._memtable, []
            for doc_id, seq, _ in frozen:
                self._building[doc_id] = seq
            return frozen

    def thaw(self, frozen: list[tuple[str, int, np.ndarray]]) -> None:
        """A build that failed: its documents still waiting for it go back to the memtable
        (ahead of newer ones), so the next flush retries them. Idempotent."""
        with self._lock:
            back = [m for m in frozen if self._building.get(m[0]) == m[1]]
            for doc_id, _, _ in back:
                del self._building[doc_id]
            self._memtable = back + self._memtable

    def swap_segments(self, segments: Sequence[Segment]) -> None:
        """The same segments with other arrays (a writer's, mapped from the files it wrote):
        same ids in the same order, each keeping the ``alive`` table it has here."""
        with self._lock:
            held = self._segments
            if [s.segment_id for s in segments] != [s.segment_id for s in held]:
                raise ValueError("swap_segments takes the held segments, in order")
            for new, old in zip(segments, held):
                new.alive = old.alive
            self._set_segments(tuple(segments))

    def pending_tokens(self) -> int:
        return sum(int(t.shape[0]) for _, _, t in self._memtable)

    def plan_compaction(self, full: bool, fanout: int = 4, dead_ratio: float = 0.3) -> list[Segment]:
        """Segments to merge: all (full), else a size tier of >= fanout or a mostly-dead one."""
        segs = list(self._segments)
        if full:
            return segs if (len(segs) > 1 or any(s.n_dead for s in segs)) else []
        for seg in segs:
            if seg.n_docs and seg.n_dead / seg.n_docs >= dead_ratio:
                return [seg]
        tiers: dict[int, list[Segment]] = {}
        for seg in segs:
            tiers.setdefault(max(seg.n, 1).bit_length() // 2, []).append(seg)
        for tier in sorted(tiers):
            if len(tiers[tier]) >= fanout:
                return tiers[tier]
        return []

    def install(self, new: Segment | None, retired: Sequence[Segment] = ()) -> Segment | None:
        """Atomically swap ``retired`` for ``new``; documents deleted meanwhile stay dead.

        Returns the installed segment, or None when it holds no live document.
        """
        with self._lock:
            retired_ids = {s.segment_id for s in retired}
            keep = tuple(s for s in self._segments if s.segment_id not in retired_ids)
            if new is not None:
                self._adopt(new, retired_ids)
                if new.n_dead == new.n_docs:
                    new = None
            self._set_segments(keep + ((new,) if new is not None else ()))
            return new

    def _adopt(self, new: Segment, retired_ids: set[int]) -> None:
        for ordinal, (doc_id, seq) in enumerate(zip(new.doc_ids, new.doc_seqs.tolist())):
            ref = self._docs.get(doc_id)
            from_build = self._building.get(doc_id) == seq
            from_retired = ref is not None and ref.segment in retired_ids
            if ref is not None and ref.seq == seq and (from_build or from_retired):
                ref.segment, ref.ordinal = new.segment_id, ordinal
                self._building.pop(doc_id, None)
            else:
                new.alive[ordinal] = False

    def restore_segment(self, seg: Segment) -> None:
        """Restart path: register a snapshotted segment's live documents."""
        with self._lock:
            self._register(seg, digests=True)
            self._set_segments(self._segments + (seg,))

    def _register(self, seg: Segment, digests: bool) -> None:
        """Register ``seg``'s live documents (a copy of one of them held elsewhere is removed
        first: one per id). ``digests`` False: a segment reader's, which never ingests."""
        lengths = (np.diff(seg.doc_starts) - 1).tolist()
        seqs = seg.doc_seqs.tolist()
        for ordinal in np.flatnonzero(seg.alive).tolist():
            doc_id = seg.doc_ids[ordinal]
            if doc_id in self._docs:
                self._remove(doc_id)
            tag = digest(seg.doc_tokens(ordinal)) if digests else b""
            self._docs[doc_id] = DocRef(seqs[ordinal], lengths[ordinal], tag, seg.segment_id, ordinal)
            self.live_tokens += lengths[ordinal]
            self._next_seq = max(self._next_seq, seqs[ordinal] + 1)

    def mirror_install(self, new: Sequence[Segment], retired: Collection[int]) -> None:
        """A segment reader's install: its writer's segments ``new`` (deletions marked) replace
        the segments ``retired``, and the registry follows. Its memtable stays empty, and its
        registry is not in sequence order (it applies no retention, which needs that order).
        Idempotent: a segment of ``new`` that is held already is replaced by itself."""
        retired = set(retired) | {seg.segment_id for seg in new}
        with self._lock:
            for seg in self._segments:
                if seg.segment_id in retired:
                    for ordinal in np.flatnonzero(seg.alive).tolist():
                        ref = self._docs.get(seg.doc_ids[ordinal])
                        if ref is not None and ref.segment == seg.segment_id:
                            del self._docs[seg.doc_ids[ordinal]]
                            self.live_tokens -= ref.length
            keep = tuple(s for s in self._segments if s.segment_id not in retired)
            for seg in new:
                self._register(seg, digests=False)
            self._set_segments(keep + tuple(new))

    def sort_registry(self) -> None:
        """Restore seq order of the registry after a restart loaded segments out of order."""
        with self._lock:
            self._docs = dict(sorted(self._docs.items(), key=lambda kv: kv[1].seq))

    def _set_segments(self, segments: tuple[Segment, ...]) -> None:
        view = SegmentView(segments)
        self._segments, self._view = segments, view  # readers use _view: one reference swap

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._segments

    def document_ids(self) -> list[str]:
        return list(self._docs)

    def has_document(self, doc_id: str) -> bool:
        return doc_id in self._docs

    def document_count(self) -> int:
        return len(self._docs)

    def resident_bytes(self) -> int:
        return sum(s.resident_bytes() for s in self._segments)

    # -- lookup ---------------------------------------------------------------------------

    def lookup(self, contexts: Sequence[np.ndarray], params: LookupParams) -> list[ContinuationTree]:
        """One continuation tree per context tail (all sequences of a decode step)."""
        ctx, ctx_off = pack_tails(contexts, params.max_match)
        return self.lookup_packed(ctx, ctx_off, params).trees()

    def lookup_packed(self, ctx: np.ndarray, ctx_off: np.ndarray, params: LookupParams) -> TrieBatch:
        """The batch path of the service: packed tails in, flat trees out."""
        return lookup_packed(self._view, ctx, ctx_off, params, self.spec.vocab_size)

    # -- integrity ------------------------------------------------------------------------

    def counts(self) -> IndexCounts:
        return IndexCounts(self.document_count(), self.live_tokens, len(self.segments), self.pending_tokens(),
                           self.resident_bytes())

    def check_integrity(self, deep: bool = True) -> str:
        """"" when every invariant holds, else a sentence naming the first violated one."""
        with self._lock:
            for check in (self._check_registry, self._check_tokens):
                problem = check()
                if problem:
                    return f"namespace {self.spec.name!r}: {problem}"
            for seg in self._segments:
                problem = check_segment(seg, deep)
                if problem:
                    return f"namespace {self.spec.name!r} segment {seg.segment_id}: {problem}"
        return ""

    def _check_registry(self) -> str:
        by_id = {s.segment_id: s for s in self._segments}
        if len(by_id) != len(self._segments):
            return "two segments share an id"
        mem = {d: s for d, s, _ in self._memtable}
        live_slots = 0
        for doc_id, ref in self._docs.items():
            if ref.segment is None:
                if mem.get(doc_id, self._building.get(doc_id)) != ref.seq:
                    return f"document {doc_id!r} is in no segment, memtable or build"
                continue
            seg = by_id.get(ref.segment)
            if seg is None or seg.doc_ids[ref.ordinal] != doc_id or not seg.alive[ref.ordinal]:
                return f"document {doc_id!r} points at a missing or dead segment slot"
            if int(seg.doc_seqs[ref.ordinal]) != ref.seq:
                return f"document {doc_id!r} sequence differs from its segment slot"
            live_slots += 1
        alive = sum(int(np.count_nonzero(s.alive)) for s in self._segments)
        if alive != live_slots:
            return f"{alive} live segment slots but {live_slots} registered segment documents"
        seqs = [r.seq for r in self._docs.values()]
        if self.retention and seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            return "registry is not in strictly increasing sequence order"
        return ""

    def _check_tokens(self) -> str:
        total = sum(r.length for r in self._docs.values())
        if total != self.live_tokens:
            return f"live_tokens {self.live_tokens} but documents sum to {total}"
        cap = self.spec.max_tokens
        if cap and self.live_tokens > cap:
            return f"retention violated: {self.live_tokens} live tokens > max_tokens {cap}"
        return ""


def check_segment(seg: Segment, deep: bool) -> str:
    """Structural checks of one segment; ``deep`` adds O(n) permutation and order checks."""
    n, sep = seg.n, seg.sep
    if seg.tokens.dtype != np.int32 or seg.sa.dtype != np.int32:
        return "tokens and suffix array must be int32"
    if seg.sa.shape[0] != n or (n and (int(seg.sa.min()) < 0 or int(seg.sa.max()) >= n)):
        return "suffix array entries outside the token array"  # would read out of bounds: never served
    if len(seg.doc_ids) != seg.n_docs or seg.doc_seqs.shape[0] != seg.n_docs or seg.alive.shape[0] != seg.n_docs:
        return "document tables of different lengths"
    if seg.doc_starts[0] != 0 or int(seg.doc_starts[-1]) != n or seg.tokens.shape[0] < n + PAD:
        return "document offsets do not cover the token array"
    if seg.n_docs and not np.all(seg.tokens[seg.doc_starts[1:] - 1] == sep):
        return "a document is not followed by the separator"
    if np.count_nonzero(seg.tokens[:n] == sep) != seg.n_docs:
        return "a separator appears inside a document"
    if n and (seg.tokens[:n].min() < 0 or seg.tokens[:n].max() > sep):
        return "token id outside [0, vocab]"
    if np.any(np.diff(seg.doc_seqs) <= 0):
        return "document sequence numbers are not increasing"
    if not np.array_equal(seg.first_off, bucket_table(seg.tokens, n, seg.vocab_size)):
        return "first-token bucket table does not match the tokens"
    if deep and n:
        if not np.array_equal(np.sort(seg.sa), np.arange(n, dtype=np.int32)):
            return "suffix array is not a permutation"
        bad = kernels.first_unsorted(seg.tokens, seg.sa, n, 64)
        if bad >= 0:
            return f"suffix array is out of lexicographic order at entry {bad}"
    return ""


class SegmentView:
    """An immutable set of segments plus the typed list the batch kernel takes.

    ``dead[s]`` flips to True when segment s loses a document (so lookups filter it).
    """

    def __init__(self, segments: tuple[Segment, ...]) -> None:
        self.segments = segments
        self.dead = np.array([seg.n_dead > 0 for seg in segments], dtype=np.bool_)
        self.arrays = numba.typed.List()
        for seg in segments:
            self.arrays.append((seg.tokens, seg.sa, seg.first_off, seg.alive, seg.doc_starts))


def pack_tails(contexts: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Last ``width`` tokens of each context, concatenated (int32), with offsets [B + 1];
    InvalidArgument for one that is not token ids (``checked_tokens``), or for one context alone."""
    try:
        tails = [checked_tokens(c[-width:], "a context") for c in contexts]
    except (IndexError, TypeError):  # an id where a context was due (numpy: "invalid index to scalar variable")
        raise InvalidArgument(NOT_CONTEXTS) from None
    if len(tails) == 1:
        return tails[0], np.array([0, tails[0].shape[0]], dtype=np.int64)
    offsets = np.array([0, *itertools.accumulate(t.shape[0] for t in tails)], dtype=np.int64)
    return np.concatenate(tails) if tails else np.zeros(0, np.int32), offsets  # (none: numpy refused to concatenate)


def lookup_packed(
    view: SegmentView, ctx: np.ndarray, ctx_off: np.ndarray, params: LookupParams, vocab_size: int
) -> TrieBatch:
    """ContinuationTree tries for a packed batch of context tails (ctx flat int32, offsets [B + 1]).

    For every context: the longest suffix with enough live occurrences, sampled up to the
    budget across segments, and the trie of what followed. Raises InvalidArgument for token
    ids outside the vocabulary or malformed offsets.
    """
    batch = ctx_off.shape[0] - 1  # offsets are built by pack_tails or checked by wire.contexts_from_proto
    bad = kernels.first_out_of_range(ctx, vocab_size)
    if bad >= 0:
        raise InvalidArgument(f"context token id {int(ctx[bad])} outside [0, {vocab_size})")
    if not view.segments:
        return TrieBatch.empty(batch)
    out = kernels.lookup_batch(
        view.arrays, view.dead, ctx, ctx_off, params.min_match, params.max_match, params.min_occurrences,
        params.sample_budget, params.depth, params.max_nodes, vocab_size,
    )
    return TrieBatch(*out)


@functools.cache
def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the index's kernels once per process. The
    server calls it before it reports SERVING: a cold compile takes seconds on a small machine,
    longer than a decode worker's deadline for its first lookup."""
    from datastore_service.core.segment import build_segment

    ns = NamespaceIndex(NamespaceSpec("warm-up", 16))
    for i, toks in enumerate(([1, 2, 3, 4, 5], [1, 2, 3, 6])):
        ns.add([Document.of(f"d{i}", toks)])
        ns.install(build_segment(i, 16, ns.freeze()))
    ns.lookup([np.array([1, 2, 3], np.int32)], LookupParams(depth=2))
