"""Durable state in one SQLite file (WAL), through sqlite-utils.

Tables:
- ``meta``: schema version and the file's identity (a foreign or damaged file is refused).
- ``namespaces``: name, vocab_size, tokenizer_fingerprint, max_tokens.
- ``documents``: (namespace, doc_id) -> seq, tokens (little-endian int32 blob), digest,
  created, and the segment holding it (NULL while only in the memtable).
- ``segments`` + ``segment_chunks``: snapshotted segment arrays, chunked to stay far below
  SQLite's blob limit, so a restart loads them instead of rebuilding suffix arrays.

Every method that writes commits before it returns; multi-step changes (a snapshot, a
compaction) are one transaction. One connection, guarded by a lock: SQLite serialises
writers anyway, and the service calls in from an executor thread.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import sqlite_utils

from datastore_service.core import Document, NamespaceSpec, Segment, restore_segment
from datastore_service.core.index import digest
from sssd_wire.errors import CorruptStore, DatastoreError, Unavailable

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53535344  # "SSSD" in PRAGMA application_id
CHUNK_BYTES = 64 << 20
SEGMENT_ARRAYS = ("tokens", "sa", "doc_starts", "doc_seqs")
_DTYPES = {"tokens": "<i4", "sa": "<i4", "doc_starts": "<i8", "doc_seqs": "<i8"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY, vocab_size INTEGER NOT NULL, tokenizer_fingerprint TEXT NOT NULL,
    max_tokens INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, seq INTEGER NOT NULL, n_tokens INTEGER NOT NULL,
    tokens BLOB NOT NULL, digest BLOB NOT NULL, created REAL NOT NULL,
    segment_id INTEGER, ordinal INTEGER,
    PRIMARY KEY (namespace, doc_id));
CREATE INDEX IF NOT EXISTS documents_pending ON documents (namespace, segment_id, seq);
CREATE INDEX IF NOT EXISTS documents_order ON documents (namespace, seq);
CREATE TABLE IF NOT EXISTS segments (
    segment_id INTEGER PRIMARY KEY, namespace TEXT NOT NULL, n_tokens INTEGER NOT NULL,
    n_docs INTEGER NOT NULL, doc_ids TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS segment_chunks (
    segment_id INTEGER NOT NULL, name TEXT NOT NULL, chunk INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (segment_id, name, chunk));
"""


@dataclasses.dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    seq: int
    tokens: np.ndarray


def disk_full(exc: BaseException) -> bool:
    """Whether a storage error says the disk is full (ENOSPC, SQLITE_FULL or its message)."""
    return (getattr(exc, "errno", None) == errno.ENOSPC or "full" in str(exc).lower()
            or getattr(exc, "sqlite_errorname", "").startswith("SQLITE_FULL"))


def _open_error(path: str, exc: sqlite3.DatabaseError) -> DatastoreError:
    """What failed to open: the file's content (CorruptStore) or the disk under it (full,
    read-only, failing: Unavailable, with the free space of its filesystem)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or not isinstance(exc, sqlite3.OperationalError):
        return CorruptStore(f"{path} is not a readable sssd datastore: {exc}")
    if os.path.isdir(path):  # (SQLite says only "unable to open database file")
        return CorruptStore(f"{path} is a directory, not a datastore file")
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
        free_bytes = fs.f_bavail * fs.f_frsize
        free = f"{free_bytes / 2**20:.1f} MiB free on its filesystem"
    except OSError:
        free_bytes, free = None, "free space unknown"
    # SQLite reports a full disk met while creating its WAL or journal as an I/O error
    full = disk_full(exc) or (free_bytes is not None and free_bytes < 1 << 20)
    return Unavailable(f"cannot open {path}: {'the disk is full' if full else 'storage failed'} ({exc}; {free})")


def _check_file_path(path: str) -> None:
    """CorruptStore for a path that cannot name the datastore's file: one ending in a separator
    (it failed on its lock file, "No such file or directory") or a device, pipe or socket (SQLite
    on /dev/null read as a failing disk)."""
    if path.endswith(os.sep):
        raise CorruptStore(f"{path} ends in {os.sep!r}, so names a directory: name the datastore file in it "
                           f"(for example {os.path.join(path, 'sssd.db')})")
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise CorruptStore(f"{path} is not a regular file (a device, pipe or socket), so cannot hold a datastore")


def make_directory(directory: Path, what: str) -> None:
    """``directory`` and its parents, created when missing; OSError "<what>: cannot create the
    directory ... (... is a file, not a directory)" naming the file in the way (mkdir's own words
    are "[Errno 17] File exists"), or the filesystem's reason."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file, not a directory" if blocking is not None else f"{exc.strerror or exc}"
        raise OSError(f"{what}: cannot create the directory {directory} ({why})") from None


def exclusive_lock(path: str | Path, busy: str):
    """An open file holding an exclusive lock on ``path`` until it is closed (the kernel drops it
    when the process dies, however it dies). OSError "<busy> (it holds <path>)" when another
    process holds it, "cannot open the lock file <path> (<reason>)" when it cannot be opened (a
    read-only or missing folder; the bare error named neither the datastore nor the lock)."""
    try:
        owner = open(path, "a+")
    except OSError as exc:
        raise OSError(f"cannot open the lock file {path} ({exc.strerror or exc})") from None
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner.close()
        raise OSError(f"{busy} (it holds {path})") from None
    return owner


class Store:
    """The SQLite file. Raises CorruptStore for a file that is not an sssd datastore, and
    Unavailable when the disk under it is full or failing."""

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._owner = self._take_ownership()
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db: sqlite_utils.Database | None = sqlite_utils.Database(conn)
            self._init_schema(synchronous)
        except sqlite3.DatabaseError as exc:
            self._release_ownership()
            raise _open_error(self.path, exc) from exc
        except BaseException:
            self._release_ownership()
            raise

    def _take_ownership(self):
        """An exclusive lock on ``<path>.lock`` for as long as this Store is open: a second
        server on the same file would keep its own index and lose the other's writes. The
        kernel drops the lock when the process dies, however it dies."""
        if self.path == ":memory:":
            return None
        _check_file_path(self.path)
        return exclusive_lock(self.path + ".lock", f"{self.path} is open in another sssd process")

    def _release_ownership(self) -> None:
        if self._owner is not None:
            self._owner.close()  # closing the file releases the lock
            self._owner = None

    def _init_schema(self, synchronous: str) -> None:
        conn = self.db.conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = set(self.db.table_names())
        if tables and (app_id != APPLICATION_ID or "meta" not in tables):
            raise CorruptStore(f"{self.path} is a SQLite file of another application (tables {sorted(tables)[:5]})")
        self.db.enable_wal()
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        if not tables:
            with self.db.atomic():
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise CorruptStore(f"{self.path}: unsupported schema version {version and version[0]!r}")
        problem = conn.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise CorruptStore(f"{self.path}: SQLite integrity check failed: {problem}")

    @property
    def db(self) -> sqlite_utils.Database:
        """The open file; after ``close`` a one-line Unavailable (sqlite3's ProgrammingError,
        "Cannot operate on a closed database", named neither the file nor what closed it)."""
        if self._db is None:
            raise Unavailable(f"{self.path} is closed (Datastore.close was called): open it again")
        return self._db

    def close(self) -> None:
        """Close the file and release its lock; a second call does nothing."""
        with self._lock:
            if self._db is not None:
                self._db.conn.close()
                self._db = None
            self._release_ownership()

    # -- namespaces -------------------------------------------------------------------------

    def save_namespace(self, spec: NamespaceSpec) -> None:
        with self._lock, self.db.atomic():
            self.db["namespaces"].insert(
                {**dataclasses.asdict(spec), "created": time.time()}, replace=True
            )

    def drop_namespace(self, name: str) -> None:
        with self._lock, self.db.atomic():
            ids = [r[0] for r in self.db.execute("SELECT segment_id FROM segments WHERE namespace=?", [name])]
            self._delete_segments(ids)
            self.db.execute("DELETE FROM documents WHERE namespace=?", [name])
            self.db.execute("DELETE FROM namespaces WHERE name=?", [name])

    def namespaces(self) -> list[NamespaceSpec]:
        rows = self.db.execute(
            "SELECT name, vocab_size, tokenizer_fingerprint, max_tokens FROM namespaces ORDER BY name"
        ).fetchall()
        return [NamespaceSpec(*r) for r in rows]

    # -- documents --------------------------------------------------------------------------

    def insert_documents(self, namespace: str, docs: Sequence[Document], seqs: Sequence[int],
                         evicted: Sequence[str] = ()) -> None:
        """Commit new documents (durable on return), and delete the ``evicted`` ones in the same
        transaction (retention's: a kill between two commits left them stored)."""
        now = time.time()
        rows = [
            (namespace, d.doc_id, s, int(d.tokens.shape[0]), d.tokens.astype("<i4").tobytes(), digest(d.tokens), now)
            for d, s in zip(docs, seqs)
        ]
        with self._lock, self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO documents (namespace, doc_id, seq, n_tokens, tokens, digest, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._delete(namespace, evicted)

    def _delete(self, namespace: str, doc_ids: Sequence[str]) -> None:
        self.db.conn.executemany("DELETE FROM documents WHERE namespace=? AND doc_id=?",
                                 [(namespace, d) for d in doc_ids])

    def delete_documents(self, namespace: str, doc_ids: Sequence[str]) -> None:
        with self._lock, self.db.atomic():
            self._delete(namespace, doc_ids)

    def discard_segment(self, segment_id: int) -> None:
        """Forget a snapshotted segment (damaged): its documents become pending again."""
        with self._lock, self.db.atomic():
            self.db.execute("UPDATE documents SET segment_id=NULL, ordinal=NULL WHERE segment_id=?", [segment_id])
            self.db.execute("DELETE FROM segment_chunks WHERE segment_id=?", [segment_id])
            self.db.execute("DELETE FROM segments WHERE segment_id=?", [segment_id])

    def pending_documents(self, namespace: str) -> Iterator[StoredDocument]:
        """Documents not in any snapshotted segment, in sequence order (restart replay)."""
        cur = self.db.execute(
            "SELECT doc_id, seq, tokens FROM documents WHERE namespace=? AND segment_id IS NULL ORDER BY seq",
            [namespace],
        )
        for doc_id, seq, blob in cur:
            yield StoredDocument(doc_id, seq, np.frombuffer(blob, dtype="<i4").astype(np.int32))

    def documents_after(self, namespace: str, after_seq: int, limit: int) -> list[tuple[str, int, bytes]]:
        """Up to ``limit`` stored documents with seq > ``after_seq``, in sequence order, as
        (id, seq, packed tokens): a replica's full copy is read in such pages."""
        with self._lock:
            return self.db.execute(
                "SELECT doc_id, seq, tokens FROM documents WHERE namespace=? AND seq>? ORDER BY seq LIMIT ?",
                [namespace, after_seq, limit],
            ).fetchall()

    def document_count(self, namespace: str) -> int:
        return self.db.execute("SELECT count(*) FROM documents WHERE namespace=?", [namespace]).fetchone()[0]

    def stored_document(self, namespace: str, doc_id: str) -> np.ndarray | None:
        row = self.db.execute(
            "SELECT tokens FROM documents WHERE namespace=? AND doc_id=?", [namespace, doc_id]
        ).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<i4").astype(np.int32)

    # -- segments ---------------------------------------------------------------------------

    def next_segment_id(self) -> int:
        row = self.db.execute("SELECT max(segment_id) FROM segments").fetchone()
        return (row[0] or 0) + 1

    def save_segment(self, namespace: str, seg: Segment, retired: Sequence[int] = ()) -> None:
        """Snapshot ``seg``, point its live documents at it, and drop ``retired``: one transaction."""
        live = np.flatnonzero(seg.alive).tolist()
        with self._lock, self.db.atomic():
            self._delete_segments(retired)
            self.db["segments"].insert(
                {
                    "segment_id": seg.segment_id,
                    "namespace": namespace,
                    "n_tokens": seg.n,
                    "n_docs": seg.n_docs,
                    "doc_ids": "\x1f".join(seg.doc_ids),
                    "created": time.time(),
                }
            )
            for name in SEGMENT_ARRAYS:
                data = np.ascontiguousarray(getattr(seg, name), dtype=_DTYPES[name]).tobytes()
                chunks = [
                    (seg.segment_id, name, i, data[off : off + CHUNK_BYTES])
                    for i, off in enumerate(range(0, max(len(data), 1), CHUNK_BYTES))
                ]
                self.db.conn.executemany("INSERT INTO segment_chunks VALUES (?, ?, ?, ?)", chunks)
            self.db.conn.executemany(
                "UPDATE documents SET segment_id=?, ordinal=? WHERE namespace=? AND doc_id=? AND seq=?",
                [(seg.segment_id, o, namespace, seg.doc_ids[o], int(seg.doc_seqs[o])) for o in live],
            )

    def drop_segments(self, segment_ids: Sequence[int]) -> None:
        with self._lock, self.db.atomic():
            self._delete_segments(segment_ids)

    def _delete_segments(self, segment_ids: Sequence[int]) -> None:
        for sid in segment_ids:
            self.db.execute("DELETE FROM segment_chunks WHERE segment_id=?", [sid])
            self.db.execute("DELETE FROM segments WHERE segment_id=?", [sid])
            self.db.execute("UPDATE documents SET segment_id=NULL, ordinal=NULL WHERE segment_id=?", [sid])

    def load_segments(self, spec: NamespaceSpec) -> Iterator[Segment | tuple[int, str]]:
        """Snapshotted segments with ``alive`` set from the documents still stored; a segment
        whose arrays cannot even be read comes as (segment_id, the problem) instead."""
        rows = self.db.execute(
            "SELECT segment_id, doc_ids FROM segments WHERE namespace=? ORDER BY segment_id", [spec.name]
        ).fetchall()
        for segment_id, doc_ids in rows:
            try:
                arrays = {name: self._load_array(segment_id, name) for name in SEGMENT_ARRAYS}
                ids = tuple(doc_ids.split("\x1f")) if doc_ids else ()
                alive = np.zeros(len(ids), dtype=bool)
                for (ordinal,) in self.db.execute(
                    "SELECT ordinal FROM documents WHERE segment_id=? AND namespace=?", [segment_id, spec.name]
                ):
                    alive[ordinal] = True
                yield restore_segment(segment_id, spec.vocab_size, arrays["tokens"], arrays["sa"],
                                      arrays["doc_starts"], ids, arrays["doc_seqs"], alive)
            except (ValueError, IndexError, TypeError) as exc:
                yield segment_id, f"unreadable arrays ({exc})"

    def _load_array(self, segment_id: int, name: str) -> np.ndarray:
        blobs = [
            r[0]
            for r in self.db.execute(
                "SELECT data FROM segment_chunks WHERE segment_id=? AND name=? ORDER BY chunk", [segment_id, name]
            )
        ]
        buf = bytearray().join(blobs)
        return np.frombuffer(buf, dtype=_DTYPES[name]).astype(_DTYPES[name][1:], copy=False)
