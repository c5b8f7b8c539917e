"""The datastore: index core + SQLite store, with durable ingest, restart and maintenance.

Write path: validate -> commit to SQLite -> register in the index memtable -> ack. A
``maintain()`` round (driven by the service's background loop or ``start_maintenance``)
freezes memtables into segments and runs the compaction policy; builds run outside the
write lock so ingest and lookups continue, and each result commits in one transaction.

Crash safety: a document is acknowledged only after its row is committed. Snapshots and
compactions commit new segment + document pointers + retired segments together, so after a
kill the file holds either the old or the new layout; documents not in any snapshotted
segment are replayed into a fresh segment on open.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple
from pathlib import Path

import numpy as np

from datastore_service.core import (
    AddResult,
    ContinuationTree,
    Document,
    IndexCounts,
    LookupParams,
    NamespaceIndex,
    NamespaceSpec,
    TrieBatch,
    Segment,
    build_segment,
    check_segment,
    merge_segments,
)
from sssd_wire.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from sssd_wire.types import listed
from datastore_service.memory import auto_live_tokens, release_free_memory
from datastore_service.segment_files import SegmentFiles
from datastore_service.store import Store

if TYPE_CHECKING:  # the log builds wire messages; the datastore only calls it
    from datastore_service.replication import ChangeLog

log = logging.getLogger("sssd.datastore")
MAINTENANCE_REPEAT_S = 60.0  # a maintenance failure that lasts is said again this often


@dataclasses.dataclass(frozen=True)
class DatastoreConfig:
    """Knobs of the datastore (the CLI derives its flags from these fields)."""

    db: str = "sssd.db"  # the SQLite file; created when missing
    synchronous: str = "FULL"  # SQLite synchronous mode: FULL survives power loss, NORMAL a process kill
    max_doc_tokens: int = 1 << 20  # documents longer than this are rejected
    compaction_fanout: int = 4  # merge when this many segments share a size tier
    dead_ratio: float = 0.3  # rewrite a segment whose deleted share reaches this
    maintenance_interval_s: float = 0.1  # background flush/compaction period
    # a namespace that has taken no new documents or deletions for this long is merged into one
    # segment (0 = never): a lookup searches every segment, so a datastore left with several
    # after its last writes answers up to several times slower (BENCHMARKS.md). The merge runs
    # in the maintenance thread and holds the old and the new segment until it is installed
    idle_compaction_s: float = 60.0
    max_namespaces: int = 1000  # namespaces one server holds (each costs memory and maintenance time, even idle)
    # live tokens of every namespace together: an ingest that would pass it is refused (RESOURCE_EXHAUSTED;
    # a namespace's own --max-tokens retention counted first), so that memory stays bounded while feedback
    # keeps adding generations. -1 = half this machine's (or container's) memory at 16 bytes a token; 0 = none
    max_live_tokens: int = -1
    # segment files shared on this machine (datastore_service/segment_files.py): a writer writes
    # its segments there; a read replica (--follow) maps them instead of copying the documents
    segment_dir: str = ""
    # a read replica that copies the documents and writes its own segments to --segment-dir, for
    # segment readers on its machine (which follow it); a writer writes them anyway
    write_segments: bool = False

    def __post_init__(self) -> None:
        checks = [  # (an empty --db served a temporary SQLite file, lost at exit, and locked ".lock" in the cwd)
            (self.db != "", "--db '' names no datastore file (SSSD_DB set but empty?): give its path, or leave it "
                            "unset for sssd.db"),
            (self.synchronous.upper() in ("OFF", "NORMAL", "FULL", "EXTRA"),
             f"--synchronous {self.synchronous!r} must be one of OFF, NORMAL, FULL, EXTRA"),
            (self.max_doc_tokens >= 1, f"--max-doc-tokens {self.max_doc_tokens} must be at least 1"),
            (self.max_namespaces >= 1, f"--max-namespaces {self.max_namespaces} must be at least 1"),
            (self.max_live_tokens >= -1,
             f"--max-live-tokens {self.max_live_tokens} must be -1 (half the memory), 0 (no cap) or a number of "
             "tokens"),
            (self.compaction_fanout >= 2, f"--compaction-fanout {self.compaction_fanout} must be at least 2"),
            (0 < self.dead_ratio <= 1, f"--dead-ratio {self.dead_ratio} must be in (0, 1]"),
            (self.segment_dir or not self.write_segments, "--write-segments needs --segment-dir (where to write)"),
            (self.idle_compaction_s >= 0, f"--idle-compaction-s {self.idle_compaction_s} must be >= 0 (0: never)"),
            (0.01 <= self.maintenance_interval_s < math.inf,  # (inf: the memtable never sealed)
             f"--maintenance-interval-s {self.maintenance_interval_s} must be at least 0.01 (a smaller one burns a core) "
             "and finite"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class NamespaceStats(NamedTuple):
    spec: NamespaceSpec
    counts: IndexCounts


class Datastore:
    """Thread-safe. Open with ``Datastore(config)``; always ``close()`` (final snapshot)."""

    def __init__(self, config: DatastoreConfig, changes: ChangeLog | None = None, mirror: bool = False,
                 clock=time.monotonic) -> None:
        """changes: every change is also appended there (a writer that replicas follow);
        mirror: a read replica's copy, which applies no retention of its own; clock: seconds,
        for the idle compaction (tests pass their own)."""
        self.config = config
        self.changes = changes
        self.mirror = mirror
        # a segment reader holds no documents of its own: its index is the writer's segment files
        self.segment_reader = mirror and bool(config.segment_dir) and not config.write_segments
        self.store = Store(":memory:" if self.segment_reader else config.db, config.synchronous)
        self.files: SegmentFiles | None = None
        if config.segment_dir and not self.segment_reader:
            try:
                self.files = SegmentFiles(config.segment_dir, config.db)
            except BaseException:
                self.store.close()
                raise
        self._write_lock = threading.RLock()  # namespaces, ingest, delete: short sections
        self._maint_lock = threading.Lock()  # one flush/compaction at a time
        self._namespaces: dict[str, NamespaceIndex] = {}
        self._next_segment = self.store.next_segment_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.compactions = 0  # merges committed since open (each retires two or more segments)
        self.on_compaction = None  # called with 1 after each committed merge (the server's metric)
        self.maintenance_failures = 0  # background rounds that failed since open (each is retried)
        self.clock = clock
        self._written: dict[str, float] = {}  # namespace -> when it last changed, until its idle merge
        self.live_token_cap = auto_live_tokens() if config.max_live_tokens < 0 else config.max_live_tokens
        try:
            self._load()
        except BaseException:
            self._close_files()
            raise

    def _close_files(self) -> None:
        if self.files is not None:
            self.files.close()
        self.store.close()

    # -- lifecycle ------------------------------------------------------------------------

    def _load(self) -> None:
        for spec in self.store.namespaces():
            ns = self._index(spec)
            for seg in self._checked_segments(spec):
                ns.restore_segment(seg)
            ns.sort_registry()
            pending = list(self.store.pending_documents(spec.name))
            evicted = []
            if pending:  # (files of older builds, killed between an ingest's commit and its evictions',
                # are over their bound: the replay evicts those documents again, and they go from the file too)
                evicted = ns.add([Document(d.doc_id, d.tokens) for d in pending], [d.seq for d in pending]).evicted
            self._namespaces[spec.name] = ns
            if len(ns.segments) > 1:  # merged once quiet, like a namespace written just now
                self._written[spec.name] = self.clock()
            evicted += ns.evict_for_retention()
            if evicted:
                self.store.delete_documents(spec.name, evicted)
        if self.files is not None:  # before any new segment, so no stale folder shadows its id
            self.files.reconcile(seg for ns in self._namespaces.values() for seg in ns.segments)
            for ns in self._namespaces.values():  # then served from them: one copy for every process
                ns.swap_segments([self.files.reopen(s, ns.spec.vocab_size) for s in ns.segments])
        self.flush()

    def _checked_segments(self, spec: NamespaceSpec) -> list:
        """The namespace's stored segments that pass the structural checks (cheap, always run).
        A damaged one is discarded: its documents, stored apart, go back to the memtable and
        into a new segment at the next flush (said once in the log); it is never served."""
        good = []
        for seg in list(self.store.load_segments(spec)):
            segment_id, problem = seg if isinstance(seg, tuple) else (seg.segment_id, check_segment(seg, deep=False))
            if not problem:
                good.append(seg)
                continue
            log.warning("namespace %r: stored segment %d is damaged (%s); rebuilding it from its stored documents",
                        spec.name, segment_id, problem)
            self.store.discard_segment(segment_id)
        return good

    def start_maintenance(self) -> None:
        """Run ``maintain()`` every ``maintenance_interval_s`` in a daemon thread (the one
        maintenance loop: the server starts this too); ``close()`` stops it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._maintenance_loop, name="sssd-maintenance", daemon=True)
            self._thread.start()

    def _maintenance_loop(self) -> None:
        """Rounds until close(). A failing round is retried at the next one; the failure is said
        once with its traceback, then once a minute while it lasts, and its end is said too (a
        full disk fails every round: ten tracebacks a second would bury the log)."""
        failing, last_said = 0, 0.0
        while not self._stop.wait(self.config.maintenance_interval_s):
            try:
                self.maintain()
            except Exception as exc:  # keep the loop alive; the next round retries
                self.maintenance_failures += 1
                failing += 1
                now = time.monotonic()
                if failing == 1:
                    log.exception("maintenance round failed; retrying every %.2f s",
                                  self.config.maintenance_interval_s)
                    last_said = now
                elif now - last_said >= MAINTENANCE_REPEAT_S:
                    log.warning("maintenance still failing, %d rounds in a row: %s", failing, exc)
                    last_said = now
                continue
            if failing:
                log.warning("maintenance works again after %d failed rounds", failing)
                failing = 0

    def close(self) -> None:
        """Stop maintenance, snapshot the memtables, close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        self._close_files()

    # -- namespaces -----------------------------------------------------------------------

    def create_namespace(self, spec: NamespaceSpec) -> None:
        """Raises AlreadyExists when the name is taken."""
        with self._write_lock:
            if spec.name in self._namespaces:
                raise AlreadyExists(f"namespace {spec.name!r} already exists")
            if len(self._namespaces) >= self.config.max_namespaces:
                raise ResourceExhausted(f"{len(self._namespaces)} namespaces, the cap (--max-namespaces); "
                                        "drop one or raise the cap")
            self.store.save_namespace(spec)
            self._namespaces[spec.name] = self._index(spec)
            if self.changes is not None:
                self.changes.created(spec)

    def _index(self, spec: NamespaceSpec) -> NamespaceIndex:
        return NamespaceIndex(spec, self.config.max_doc_tokens, retention=not self.mirror)

    def drop_namespace(self, name: str) -> None:
        with self._maint_lock, self._write_lock:
            segments = self.namespace(name).segments
            self.store.drop_namespace(name)
            del self._namespaces[name]
            if self.files is not None:
                self.files.retire(s.segment_id for s in segments)
            if self.changes is not None:
                self.changes.dropped(name)

    def namespace(self, name: str) -> NamespaceIndex:
        """Raises NotFound for an unknown namespace."""
        ns = self._namespaces.get(name)
        if ns is None:
            raise NotFound(f"namespace {name!r} does not exist")
        return ns

    def namespace_names(self) -> list[str]:
        return sorted(self._namespaces)

    def specs(self) -> list[NamespaceSpec]:
        """Every namespace's spec, by name (a snapshot: a concurrent drop does not break it)."""
        return [ns.spec for _, ns in sorted(dict(self._namespaces).items())]

    # -- documents ------------------------------------------------------------------------

    def ingest(self, name: str, docs: Sequence[Document]) -> AddResult:
        """Store documents durably, then make them queryable at the next flush.

        Idempotent by id: an id already stored with the same tokens is reported as a
        duplicate; one stored with other tokens is reported as a conflict and not stored,
        while the rest of the batch is. Raises InvalidArgument / NotFound; on error nothing of
        the batch is stored.
        """
        if isinstance(docs, Document):  # (Python's "'Document' object is not iterable")
            raise InvalidArgument("docs must be a list of Documents, not one Document (give [doc])")
        docs = list(docs)  # (a generator is read once: here)
        for doc in docs:
            if not isinstance(doc, Document):  # (a tuple was "'tuple' object has no attribute 'tokens'")
                raise InvalidArgument(f"docs must be Documents (Document.of(id, tokens)), not {type(doc).__name__}")
        with self._write_lock:
            ns = self.namespace(name)
            fresh, dups, conflicts = ns.classify(docs)
            seqs = ns.next_seqs(len(fresh))
            if fresh:  # the documents and retention's evictions in one commit
                self._check_room(ns, sum(d.tokens.shape[0] for d in fresh))
                evicting = ns.evictions_for([(d.doc_id, d.tokens.shape[0]) for d in fresh])
                self.store.insert_documents(name, fresh, seqs, evicting)
            result = ns.add(fresh, seqs)  # (evicts the same: under the write lock nothing else adds or deletes)
            if self.changes is not None:
                self.changes.added(name, fresh)
                self.changes.deleted(name, result.evicted)
            return AddResult(result.added, dups, result.evicted, conflicts)

    def _check_room(self, ns: NamespaceIndex, tokens: int) -> None:
        """ResourceExhausted when ``tokens`` more in ``ns`` would pass ``live_token_cap`` (a
        namespace with retention grows at most to its max_tokens; a replica mirrors its writer)."""
        if not self.live_token_cap or self.mirror:
            return
        bound = ns.spec.max_tokens or math.inf
        grows = max(0, min(ns.live_tokens + tokens, bound) - ns.live_tokens)
        held = sum(n.live_tokens for n in self._namespaces.values())
        if held + grows > self.live_token_cap:
            raise ResourceExhausted(f"the datastore holds {held:,} live tokens and {grows:,} more would pass its "
                                    f"cap of {self.live_token_cap:,} (--max-live-tokens): give namespaces a "
                                    "--max-tokens retention, delete documents, or raise the cap")

    def delete(self, name: str, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents; returns the ids that existed. Lookups stop seeing them at once."""
        listed(doc_ids, "document ids", error=InvalidArgument)
        with self._write_lock:
            ns = self.namespace(name)
            # each id once: a repeated one was deleted from SQLite, then failed the index's delete
            # (INTERNAL), so the change log never told replicas, which kept the document
            found = [d for d in dict.fromkeys(doc_ids) if ns.has_document(d)]
            self.store.delete_documents(name, found)
            ns.delete(found)
            if self.changes is not None:
                self.changes.deleted(name, found)
            if found:
                self._written[name] = self.clock()
            return found

    def lookup(self, name: str, contexts: Sequence[np.ndarray], params: LookupParams) -> list[ContinuationTree]:
        return self.namespace(name).lookup(contexts, params)

    def lookup_packed(self, name: str, ctx: np.ndarray, ctx_off: np.ndarray, params: LookupParams) -> TrieBatch:
        return self.namespace(name).lookup_packed(ctx, ctx_off, params)

    # -- maintenance ----------------------------------------------------------------------

    def _segment_id(self) -> int:
        with self._write_lock:
            self._next_segment += 1
            return self._next_segment - 1

    def flush(self) -> int:
        """Freeze every memtable into a snapshotted segment; returns tokens flushed."""
        flushed = 0
        with self._maint_lock:
            for name, ns in list(self._namespaces.items()):
                frozen = ns.freeze()
                if not frozen:
                    continue
                try:
                    self._install(name, ns, build_segment(self._segment_id(), ns.spec.vocab_size, frozen))
                except BaseException:
                    ns.thaw(frozen)  # nothing is lost: the next round retries them
                    raise
                flushed += sum(int(t.shape[0]) for _, _, t in frozen)
                self._written[name] = self.clock()
        if flushed:
            release_free_memory()
        return flushed

    def compact(self, name: str | None = None, full: bool = True) -> int:
        """Merge segments (all of them when ``full``) and drop deleted documents.

        A full compaction flushes the memtables first, so its result holds every
        acknowledged document. Returns the number of segments retired. Lookups keep using
        the old segments until the new one is installed; the snapshot swap is one transaction.
        """
        if self.segment_reader:
            return 0  # its segments are the writer's
        if full:
            self.flush()
        retired_total = 0
        with self._maint_lock:
            names = [name] if name is not None else list(self._namespaces)
            for n in names:
                ns = self.namespace(n)
                plan = ns.plan_compaction(full, self.config.compaction_fanout, self.config.dead_ratio)
                if not plan:
                    continue
                self._install(n, ns, merge_segments(self._segment_id(), ns.spec.vocab_size, plan), plan)
                retired_total += len(plan)
                self.compactions += 1
                if self.on_compaction is not None:
                    self.on_compaction(1)
        if retired_total:
            release_free_memory()
        return retired_total

    def _install(self, name: str, ns: NamespaceIndex, built: Segment, retired: Sequence[Segment] = ()) -> None:
        """Swap a built segment in for ``retired``, snapshot it, and tell segment readers."""
        retired_ids = [s.segment_id for s in retired]
        if self.files is not None:  # on disk before any reader hears of it; served from there
            built = self.files.write(built, ns.spec.vocab_size)
        with self._write_lock:  # ordered with deletes in the change log
            seg = ns.install(built, retired)
            if self.files is not None and self.changes is not None and (seg is not None or retired_ids):
                self.changes.sealed(name, seg, retired_ids)  # only segment readers read these
        if seg is not None:
            self.store.save_segment(name, seg, retired=retired_ids)
        elif retired_ids:
            self.store.drop_segments(retired_ids)
        if self.files is not None:
            self.files.retire(retired_ids if seg is not None else retired_ids + [built.segment_id])

    def maintain(self) -> None:
        """One background round: flush memtables, then compact by policy (nothing on a segment
        reader: it builds no segments of its own)."""
        if self.files is not None:
            self.files.sweep()
        if self.segment_reader:
            return
        self.flush()
        for name in list(self._namespaces):
            self._compact_held(name, full=False)
        self._compact_idle()

    def _compact_held(self, name: str, full: bool) -> None:
        """``compact(name)`` unless the namespace is dropped before it starts (a drop between the
        round's listing and its compaction failed the round with a NotFound traceback)."""
        try:
            self.compact(name, full=full)
        except NotFound:
            if name in self._namespaces:
                raise

    def _compact_idle(self) -> None:
        """Merge each namespace that has been quiet for ``idle_compaction_s`` into one segment,
        once per quiet spell (its next write starts another)."""
        quiet = self.config.idle_compaction_s
        if quiet <= 0:
            return
        now = self.clock()
        with self._maint_lock, self._write_lock:  # a flush or a delete that marks it meanwhile keeps its mark
            due = [name for name, written in self._written.items() if now - written >= quiet]
            for name in due:
                del self._written[name]
        for name in due:
            self._compact_held(name, full=True)

    # -- segment readers ------------------------------------------------------------------

    def segment_snapshot(self) -> tuple[int, list[tuple[NamespaceSpec, list[tuple[int, list[int]]]]]]:
        """A writer's content as a segment reader copies it: every namespace with its segments
        (id, ordinals deleted), and the change-log position it is at. Taken under the write
        lock, which every change is logged under, so the changes after that position are
        exactly the ones it does not reflect."""
        with self._write_lock:
            specs = [(ns.spec, [(seg.segment_id, np.flatnonzero(~seg.alive).tolist()) for seg in ns.segments])
                     for _, ns in sorted(self._namespaces.items())]
            return (self.changes.position if self.changes is not None else 0), specs

    def mirror_segments(self, name: str, new: Sequence[Segment], retired: Sequence[int]) -> None:
        """A segment reader: its writer now holds ``new`` in place of the segments ``retired``."""
        self.namespace(name).mirror_install(new, retired)

    # -- introspection --------------------------------------------------------------------

    def stats(self) -> list[NamespaceStats]:
        """Per namespace, by name (a snapshot: a concurrent drop does not break it)."""
        return [NamespaceStats(ns.spec, ns.counts()) for _, ns in sorted(dict(self._namespaces).items())]

    def check_integrity(self, deep: bool = True) -> str:
        """"" when the index and the file agree and every index invariant holds."""
        with self._maint_lock, self._write_lock:
            for name, ns in self._namespaces.items():
                problem = ns.check_integrity(deep)
                if problem:
                    return problem
                stored = self.store.document_count(name)
                if not self.segment_reader and stored != ns.document_count():  # a reader stores none
                    return f"namespace {name!r}: {stored} documents in SQLite but {ns.document_count()} indexed"
            names = {s.name for s in self.store.namespaces()}
            if names != set(self._namespaces):
                return f"namespaces in SQLite {sorted(names)} differ from the index {sorted(self._namespaces)}"
        return ""


def open_datastore(path: str | Path, **overrides) -> Datastore:
    """Convenience: a Datastore on ``path`` with default settings."""
    return Datastore(DatastoreConfig(db=str(path), **overrides))


def wait_queryable(ds: Datastore, name: str, doc_count: int, timeout_s: float = 5.0) -> bool:
    """Poll until ``doc_count`` documents are in segments (used by benches and tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ns = ds.namespace(name)
        if sum(s.n_docs - s.n_dead for s in ns.segments) >= doc_count:
            return True
        time.sleep(0.001)
    return False
