"""Read replicas: the writer's change log, the ``Follow`` stream it serves, and the follower.

One server owns the SQLite file and takes every write (the writer). Any number of read
replicas (``sssd serve --follow WRITER``, on this machine or others) each keep their own copy
and answer lookups. They follow the writer over its own gRPC contract:

- the writer appends every change (namespace created or dropped, documents added, documents
  deleted or evicted by retention) to an in-memory ``ChangeLog`` with increasing positions,
  bounded in tokens; an ``epoch`` names the writer process;
- a follower calls ``Follow(epoch, after)``; when it holds this epoch and a position the log
  still keeps, it gets the changes after it; otherwise it gets the writer's whole content
  first (``reset``: read page by page from the SQLite file, never under the write lock), then
  the changes after the position taken before that copy began. Changes are idempotent
  (documents by id, deletes of absent ids, creates that replace a namesake), so a change that
  the copy already holds does no harm when it is applied again. The copy is laid over what
  the replica holds (see ``Applier``): a replica whose writer restarted keeps serving while
  it re-copies;
- a replica mirrors the writer's evictions and applies no retention of its own;
- the follower reconnects with backoff, resumes from its position, and reports NOT_SERVING
  until its first full copy is applied (a readiness probe's signal).

A replica on the writer's machine can share the writer's segments instead of copying its
documents (``--segment-dir``, the writer's; see segment_files.py): a segment reader. It asks
for ``sealed`` changes (each segment the writer installs, by id, with the ordinals deleted
by then) and deletes, never documents; its copy is the list of segments. The writer logs a
segment after its files are written, and under the lock its deletes are logged under, so
the two are ordered. A document becomes visible to a segment reader when the writer's next
flush seals it (every ``--maintenance-interval-s``). A replica given ``--write-segments``
writes its own segments and logs its own changes (what it applies), so that segment readers
on its machine follow it as they would a writer; it still relays no documents.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import itertools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import numpy as np

from datastore_service.core import Document, NamespaceSpec, Segment
from datastore_service.segment_files import RETIRED_GRACE_S, open_segment, owner_id, segment_path
from datastore_service.wire import namespace_from_proto, namespace_to_proto
from sssd_wire.codec import decode_tokens, documents_to_proto
from sssd_wire.errors import DatastoreError, Kind, Unavailable, connection_hint, one_line
from sssd_wire.settings import bearer_metadata, tls_ca_bytes
from sssd_wire.v1 import datastore_pb2 as pb
from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc

log = logging.getLogger("sssd.replication")

HEARTBEAT_S = 1.0
TOKEN_HINTS = {  # what a Follow the writer refused needs from this replica's settings
    grpc.StatusCode.UNAUTHENTICATED: " (the writer has tokens: give this replica one of its admin tokens, "
                                     "--follow-token or SSSD_FOLLOW_TOKEN)",
    grpc.StatusCode.PERMISSION_DENIED: ' (following takes a token with the admin scope over every namespace, "*")',
}
COPY_PAGE_DOCS = 512
BATCH_CHANGES = 256
BATCH_TOKENS = 4 << 20  # a batch carries at most about this many tokens (16 MB), or one bigger change


@dataclasses.dataclass
class Entry:
    """One change. Its message is built when a follower first needs it, not on the write
    path (a writer that nobody follows never builds one), then kept for the others."""

    position: int
    make: Callable[[], pb.Change]
    tokens: int
    kind: str = ""  # "added" and "sealed" each go to one kind of follower only (``change_batches``)
    _change: pb.Change | None = None

    @property
    def change(self) -> pb.Change:
        if self._change is None:
            self._change = self.make()
        return self._change


class ChangeLog:
    """Thread-safe, bounded: the newest changes holding at most ``max_tokens`` tokens (a deleted
    id and a namespace change count as one token each, so no kind of change grows it unbounded)."""

    def __init__(self, max_tokens: int = 4 << 20) -> None:
        self.epoch = uuid.uuid4().hex
        self.max_tokens = max_tokens
        self._entries: collections.deque[Entry] = collections.deque()
        self._tokens = 0
        self._position = 0
        self._lock = threading.Lock()

    @property
    def position(self) -> int:
        return self._position

    def _append(self, make: Callable[[], pb.Change], tokens: int = 1, kind: str = "") -> None:
        with self._lock:
            self._position += 1
            self._entries.append(Entry(self._position, make, tokens, kind))
            self._tokens += tokens
            while self._tokens > self.max_tokens and len(self._entries) > 1:
                self._tokens -= self._entries.popleft().tokens

    def created(self, spec: NamespaceSpec) -> None:
        self._append(lambda: pb.Change(created=namespace_to_proto(spec)))

    def dropped(self, name: str) -> None:
        self._append(lambda: pb.Change(dropped=name))

    def added(self, name: str, docs: Sequence[Document]) -> None:
        if docs:
            docs = list(docs)  # the token arrays are immutable: kept, not copied, until a follower asks
            self._append(lambda: pb.Change(added=documents_to_proto(name, [(d.doc_id, d.tokens) for d in docs])),
                         sum(int(d.tokens.shape[0]) for d in docs), "added")

    def deleted(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            ids = list(ids)
            self._append(lambda: pb.Change(deleted=pb.DeleteDocumentsRequest(namespace=name, ids=ids, missing_ok=True)),
                         len(ids))

    def sealed(self, name: str, seg: Segment | None, retired: Sequence[int]) -> None:
        """``seg`` installed in place of ``retired`` (for segment readers). Its deleted ordinals
        are taken now: the caller holds the lock that deletes are logged under."""
        dead = np.flatnonzero(~seg.alive).tolist() if seg is not None else ()
        sealed = pb.SealedSegment(namespace=name, segment_id=seg.segment_id if seg is not None else 0,
                                  retired=retired, dead=dead)
        self._append(lambda: pb.Change(sealed=sealed), 1, "sealed")

    def since(self, after: int) -> list[Entry] | None:
        """The entries after ``after``; None when some of them are no longer kept."""
        with self._lock:
            if after >= self._position:
                return []
            if not self._entries or self._entries[0].position > after + 1:
                return None
            skip = after + 1 - self._entries[0].position  # positions are consecutive
            return list(itertools.islice(self._entries, skip, None))


# -- the writer's side ----------------------------------------------------------------------


async def serve_follow(ds, changes: ChangeLog, request: pb.FollowRequest, run,
                       stopping: asyncio.Event) -> AsyncIterator[pb.ChangeBatch]:
    """The ``Follow`` stream; ``run(fn, *args)`` runs blocking work off the event loop. It ends
    when ``stopping`` is set (the writer shuts down: its followers reconnect, not hold it up)."""
    readers = bool(request.segment_dir)  # checked by the servicer (check_segment_reader)
    after = request.after if request.epoch == changes.epoch else None
    if after is None or changes.since(after) is None:
        if readers:
            after, batch = await run(segment_copy, ds)
            batch.epoch, batch.position, batch.reset, batch.copying = changes.epoch, after, True, True
            yield batch
        else:
            after = changes.position  # taken before the copy: changes after it are replayed over it
            first = True
            async for batch in _full_copy(ds, run):
                batch.epoch, batch.position, batch.reset, batch.copying = changes.epoch, after, first, True
                first = False
                yield batch
    last_sent = 0.0  # the first batch after a copy goes out at once: it ends the copy
    while not stopping.is_set():
        entries = changes.since(after)
        if entries is None:
            raise Unavailable(f"this follower is {changes.position - after} changes behind, more than the writer keeps; "
                              "reconnect for a full copy")
        if entries:
            for batch in change_batches(changes.epoch, entries, readers):
                after = batch.position
                yield batch
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= HEARTBEAT_S:
            yield pb.ChangeBatch(epoch=changes.epoch, position=after)
            last_sent = time.monotonic()
        await asyncio.sleep(0.01)


def change_batches(epoch: str, entries: list[Entry], segment_reader: bool) -> list[pb.ChangeBatch]:
    """Log entries as a follower gets them: each kind of follower only the changes it applies
    (a segment reader no documents, a document replica no segments), positions past all."""
    skip = "added" if segment_reader else "sealed"
    return [pb.ChangeBatch(epoch=epoch, position=part[-1].position,
                           changes=[e.change for e in part if e.kind != skip])
            for part in _batches(entries, lambda e: 0 if e.kind == skip else e.tokens)]


def segment_copy(ds) -> tuple[int, pb.ChangeBatch]:
    """A segment reader's full copy: namespaces and their segments by id, no documents; with
    the change-log position it reflects."""
    position, namespaces = ds.segment_snapshot()
    out = []
    for spec, segments in namespaces:
        out.append(pb.Change(created=namespace_to_proto(spec)))
        out.extend(pb.Change(sealed=pb.SealedSegment(namespace=spec.name, segment_id=sid, dead=dead))
                   for sid, dead in segments)
    return position, pb.ChangeBatch(changes=out)


def _batches(items: list, tokens_of) -> list[list]:
    """``items`` cut into runs of at most BATCH_CHANGES items and about BATCH_TOKENS tokens."""
    out, run, size = [], [], 0
    for item in items:
        if run and (len(run) >= BATCH_CHANGES or size + tokens_of(item) > BATCH_TOKENS):
            out.append(run)
            run, size = [], 0
        run.append(item)
        size += tokens_of(item)
    return out + ([run] if run else [])


def check_segment_reader(ds, directory_id: str) -> None:
    """FAILED_PRECONDITION unless this server writes segment files into the reader's directory."""
    if ds.files is None:
        raise DatastoreError("this server writes no segment files: start it with --segment-dir DIR (a replica: "
                             "and --write-segments) to serve segment readers, or follow it without --segment-dir",
                             Kind.FAILED_PRECONDITION)
    if directory_id != ds.files.id:
        raise DatastoreError(f"the reader's segment directory is not this writer's ({ds.files.directory}): give "
                             "it the writer's --segment-dir", Kind.FAILED_PRECONDITION)


async def _full_copy(ds, run) -> AsyncIterator[pb.ChangeBatch]:
    """Every namespace and every live document, page by page (at least one batch)."""
    specs = ds.specs()
    yield pb.ChangeBatch(changes=[pb.Change(created=namespace_to_proto(s)) for s in specs])
    for spec in specs:
        seq = 0
        while True:
            rows = await run(ds.store.documents_after, spec.name, seq, COPY_PAGE_DOCS)
            if not rows:
                break
            seq = rows[-1][1]
            for part in _batches(rows, lambda row: len(row[2]) // 4):
                docs = [pb.TokenDocument(id=i, tokens=t) for i, _, t in part]
                yield pb.ChangeBatch(changes=[pb.Change(added=pb.IngestRequest(namespace=spec.name, documents=docs))])


# -- the replica's side ---------------------------------------------------------------------


class _Applying(abc.ABC):
    """What both kinds of follower share: the batch protocol (a ``reset`` starts a full copy,
    the first batch that is not a page of it ends it), namespaces and deletes."""

    def __init__(self, ds) -> None:
        self.ds = ds
        self.copying = False

    def __call__(self, batch: pb.ChangeBatch) -> None:
        if batch.reset:
            self.copying = True
            self._start_copy()
        elif self.copying and not batch.copying:
            self.copying = False
            self._end_copy()
        for change in batch.changes:
            self._apply(change)

    def _ensure(self, spec: NamespaceSpec) -> None:
        """The namespace as the writer holds it (a namesake with another spec is replaced)."""
        ds = self.ds
        if spec.name in ds.namespace_names():
            if ds.namespace(spec.name).spec == spec:
                return
            ds.drop_namespace(spec.name)
        ds.create_namespace(spec)

    def _apply_common(self, change: pb.Change, kind: str) -> None:
        ds = self.ds
        if kind == "created":
            self._ensure(namespace_from_proto(change.created))
        elif kind == "dropped":
            if change.dropped in ds.namespace_names():
                ds.drop_namespace(change.dropped)
        elif kind == "deleted":
            ds.delete(change.deleted.namespace, list(change.deleted.ids))

    @abc.abstractmethod
    def _start_copy(self) -> None:
        """A full copy begins (``reset``)."""

    @abc.abstractmethod
    def _end_copy(self) -> None:
        """The full copy is complete: make the follower hold exactly it."""

    @abc.abstractmethod
    def _apply(self, change: pb.Change) -> None:
        """One change, during a copy or after it."""


class Applier(_Applying):
    """Applies the writer's batches to a replica's datastore (blocking; one batch at a time).

    A full copy is laid over what the replica already holds, so it keeps answering lookups
    while the copy streams in: copied documents it has already are duplicates, ones it holds
    with other tokens are replaced, and when the copy ends every namespace and document the
    copy did not contain is removed."""

    def __init__(self, ds) -> None:
        super().__init__(ds)
        self._seen: dict[str, set[str]] = {}  # during a copy: namespace -> ids copied

    def _start_copy(self) -> None:
        self._seen = {}

    def _end_copy(self) -> None:
        seen, self._seen = self._seen, {}
        for name in self.ds.namespace_names():
            if name not in seen:
                self.ds.drop_namespace(name)
                continue
            gone = [d for d in self.ds.namespace(name).document_ids() if d not in seen[name]]
            if gone:
                self.ds.delete(name, gone)

    def _apply(self, change: pb.Change) -> None:
        ds, kind = self.ds, change.WhichOneof("kind")
        if kind == "added":
            name = change.added.namespace
            docs = [Document(d.id, decode_tokens(d.tokens)) for d in change.added.documents]
            conflicts = set(ds.ingest(name, docs).conflicts)
            if conflicts:  # held with other tokens: the writer deleted and re-added them meanwhile
                ds.delete(name, list(conflicts))
                ds.ingest(name, [d for d in docs if d.doc_id in conflicts])
            if self.copying:
                self._seen.setdefault(name, set()).update(d.doc_id for d in docs)
            return
        if kind == "created" and self.copying:
            self._seen.setdefault(change.created.name, set())
        self._apply_common(change, kind)


class SegmentApplier(_Applying):
    """Applies the writer's batches to a segment reader (blocking; one batch at a time): the
    segments it installs are mapped from its segment directory, its deletes are marked, and no
    document travels. A full copy is gathered whole and swapped in when it ends, so the reader
    keeps serving what it held until then."""

    def __init__(self, ds) -> None:
        super().__init__(ds)
        self.directory = ds.config.segment_dir
        self._copy: dict[str, tuple[NamespaceSpec, list]] = {}  # during a copy: name -> segments

    def _start_copy(self) -> None:
        self._copy = {}

    def _open(self, vocab_size: int, sealed: pb.SealedSegment):
        try:
            return open_segment(self.directory, sealed.segment_id, vocab_size, sealed.dead)
        except FileNotFoundError:
            raise DatastoreError(f"segment {sealed.segment_id} is no longer in {self.directory}: this reader fell "
                                 f"more than the writer's grace ({RETIRED_GRACE_S:.0f} s) behind",
                                 Kind.UNAVAILABLE) from None
        except (OSError, ValueError) as exc:  # (the writer, which mapped it before, goes on)
            raise DatastoreError(f"segment file {segment_path(self.directory, sealed.segment_id)} cannot be read "
                                 f"({one_line(exc)}): restart the writer, which writes it again from its snapshot; "
                                 "this reader serves what it held until then", Kind.UNAVAILABLE) from None

    def _apply(self, change: pb.Change) -> None:
        ds, kind = self.ds, change.WhichOneof("kind")
        if kind == "added":  # never silently serve nothing
            raise DatastoreError("the writer sent documents to a segment reader: it predates segment readers "
                                 "(upgrade it), or serve this one without --segment-dir", Kind.FAILED_PRECONDITION)
        if self.copying:  # a copy holds namespaces and their segments only
            if kind == "created":
                spec = namespace_from_proto(change.created)
                self._copy[spec.name] = (spec, [])
            elif kind == "sealed":
                spec, segments = self._copy[change.sealed.namespace]
                segments.append(self._open(spec.vocab_size, change.sealed))
        elif kind == "sealed":
            sealed = change.sealed
            vocab = ds.namespace(sealed.namespace).spec.vocab_size
            new = [self._open(vocab, sealed)] if sealed.segment_id else []
            ds.mirror_segments(sealed.namespace, new, list(sealed.retired))
        else:
            self._apply_common(change, kind)

    def _end_copy(self) -> None:
        copy, self._copy = self._copy, {}
        for name in self.ds.namespace_names():
            if name not in copy:
                self.ds.drop_namespace(name)
        for name, (spec, segments) in copy.items():
            self._ensure(spec)
            held = [s.segment_id for s in self.ds.namespace(name).segments]
            self.ds.mirror_segments(name, segments, held)


class Follower:
    """Keeps a replica's datastore a copy of the writer's (an asyncio task; ``stop()`` ends it)."""

    def __init__(self, address: str, token: str, ds, run, on_ready, tls_ca: str = "") -> None:
        self.address = address
        self.metadata = bearer_metadata(token, "--follow-token")  # (ServerConfig checked it at start)
        self.ds = ds
        self.applier = SegmentApplier(ds) if ds.segment_reader else Applier(ds)
        self.run = run
        self.on_ready = on_ready  # called once, after the first full copy is applied
        self.tls_ca = tls_ca
        self.epoch = ""
        self.position = 0
        self.applied_at = 0.0  # monotonic time of the last batch (heartbeats included)
        self.reconnects = 0
        self.failed, self._said = 0, ""  # changes that would not apply; the last such error logged
        self._task: asyncio.Task | None = None
        self._ready = False

    def lag_s(self) -> float:
        """Seconds since the writer's last batch (heartbeats included); -1 before the first."""
        return time.monotonic() - self.applied_at if self.applied_at else -1.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sssd-follow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _channel(self):
        options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.keepalive_time_ms", 10_000)]
        if self.tls_ca:
            credentials = grpc.ssl_channel_credentials(tls_ca_bytes(self.tls_ca, "--follow-tls-ca"))
            return grpc.aio.secure_channel(self.address, credentials, options)
        return grpc.aio.insecure_channel(self.address, options)

    def _request(self) -> pb.FollowRequest | None:
        """What to ask the writer for; None while a segment reader's directory has no owner yet."""
        directory = owner_id(self.ds.config.segment_dir) if self.ds.segment_reader else ""
        if self.ds.segment_reader and not directory:
            if self.reconnects % 50 == 0:
                log.warning("segment directory %s holds no writer's segments yet; waiting",
                            self.ds.config.segment_dir)
            return None
        return pb.FollowRequest(epoch=self.epoch, after=self.position, segment_dir=directory)

    async def _loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                request = self._request()
                if request is None:
                    self.reconnects += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                async with self._channel() as channel:
                    stream = pb_grpc.DatastoreStub(channel).Follow(request, metadata=self.metadata)
                    async for batch in stream:
                        if batch.reset:
                            log.info("following %s: full copy from writer epoch %s", self.address, batch.epoch[:8])
                        await self.run(self.applier, batch)
                        self.applied_at = time.monotonic()
                        backoff, self._said = 0.1, ""
                        if batch.copying:  # a copy cut short is started over, not resumed
                            continue
                        self.epoch, self.position = batch.epoch, batch.position
                        if not self._ready:
                            self._ready = True
                            await self.on_ready()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.reconnects += 1
                if self.reconnects == 1 or self.reconnects % 50 == 0:  # said once, then now and then
                    said = one_line(exc)
                    hint = (connection_hint(said, bool(self.tls_ca), "--follow-tls-ca")
                            or TOKEN_HINTS.get(exc.code(), ""))
                    log.warning("following %s: %s; retrying%s", self.address, said, hint)
            except DatastoreError as exc:  # an expected one (a reader behind, a writer too old): one line,
                self.failed += 1  # said again only when it changes, or now and then
                if str(exc) != self._said or self.failed % 50 == 0:
                    log.warning("following %s: %s; asking for a full copy", self.address, exc)
                    self._said = str(exc)
                self.epoch, self.position = "", 0
            except Exception:  # a change that would not apply: start over from a full copy
                log.exception("following %s: applying a change failed; asking for a full copy", self.address)
                self.epoch, self.position = "", 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
