"""Segment files: a writer's immutable segments, where readers on its machine map them.

A writer given a segment directory (``sssd serve --segment-dir DIR``) writes each segment
it installs (a flush, a compaction, the snapshot it loads when it opens) as ``DIR/<id>/``:
one ``.npy`` file per array and ``doc_ids.json``. A segment is written under a temporary
name and renamed, so a reader finds the whole of it or nothing.

Readers on the same machine (``sssd serve --follow WRITER --segment-dir DIR``) map the
arrays copy-on-write: the pages are the page cache's, shared by every process that maps
them, so memory does not multiply with readers. Only the small per-segment tables (which
documents are alive, the first-token buckets) are each reader's own.

The files derive from the SQLite snapshot, the durable copy. The writer writes those that
are missing when it opens and removes the ones of segments it no longer holds. It unlinks a
retired segment's files only after a grace period, so a reader a few changes behind still
finds them; a reader that has mapped them keeps its mapping after the unlink anyway.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from datastore_service.core import Segment, check_segment, restore_segment
from datastore_service.store import exclusive_lock, make_directory
from sssd_wire.errors import InvalidArgument

ARRAYS = ("tokens", "sa", "doc_starts", "doc_seqs")
log = logging.getLogger("sssd.datastore")
RETIRED_GRACE_S = 60.0


def segment_path(directory: str | Path, segment_id: int) -> Path:
    return Path(directory) / str(segment_id)


def write_segment(directory: str | Path, seg: Segment) -> Path:
    """Write ``seg``'s arrays (nothing when they are there already); returns its folder."""
    final = segment_path(directory, seg.segment_id)
    if final.is_dir():
        return final
    tmp = Path(directory) / f".{seg.segment_id}.tmp-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in ARRAYS:
            _write_synced(tmp / f"{name}.npy", lambda f: np.save(f, np.ascontiguousarray(getattr(seg, name)),
                                                                  allow_pickle=False))
        _write_synced(tmp / "doc_ids.json", lambda f: f.write(json.dumps(list(seg.doc_ids)).encode()))
        os.rename(tmp, final)  # (each file on disk first: after a power loss a renamed folder could hold holes)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def open_segment(directory: str | Path, segment_id: int, vocab_size: int, dead: Sequence[int] = ()) -> Segment:
    """The segment mapped from its files, with ``dead`` ordinals marked deleted.

    Raises FileNotFoundError when its files are gone, ValueError when they are damaged.
    """
    folder = segment_path(directory, segment_id)
    arrays = {}
    for name in ARRAYS:
        # copy-on-write: shared pages until written (never); plain ndarrays, as the kernels
        # are compiled for (a read-only array would be another type, compiled on first use)
        arrays[name] = np.asarray(np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False))
    ids = tuple(json.loads((folder / "doc_ids.json").read_text()))
    alive = np.ones(len(ids), dtype=bool)
    if len(dead):
        alive[np.asarray(dead, dtype=np.int64)] = False
    seg = restore_segment(segment_id, vocab_size, arrays["tokens"], arrays["sa"], arrays["doc_starts"], ids,
                          arrays["doc_seqs"], alive)
    problem = check_segment(seg, deep=False)
    if problem:
        raise ValueError(f"segment file {folder}: {problem}")
    return seg


OWNER = "OWNER"  # {"id": random, "db": the writer's SQLite file}: whose segments these are


def owner_id(directory: str | Path) -> str:
    """The id of the writer whose segments ``directory`` holds ("" when it holds none yet)."""
    try:
        return json.loads((Path(directory) / OWNER).read_text())["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _ours(name: str) -> bool:
    """A segment folder or a temporary one: the only entries a writer ever removes."""
    return name.isdigit() or (name.startswith(".") and ".tmp-" in name and name[1:].split(".")[0].isdigit())


class SegmentFiles:
    """The writer's segment directory: written, retired after a grace period, reconciled.

    One writer per directory: it holds an exclusive lock on it while open, and the OWNER file
    names its SQLite file, so a directory of another writer's segments is refused.
    """

    def __init__(self, directory: str | Path, db: str | Path, grace_s: float = RETIRED_GRACE_S) -> None:
        self.directory = Path(directory)
        make_directory(self.directory, f"--segment-dir {self.directory}")
        self.grace_s = grace_s
        self._retired: list[tuple[float, int]] = []  # (when, segment id)
        self._lock = threading.Lock()
        self._owner = exclusive_lock(self.directory / ".lock",
                                     f"segment directory {self.directory} is in use by another running writer")
        self.id = self._own(str(Path(db).resolve()))

    def _own(self, db: str) -> str:
        path = self.directory / OWNER
        if path.exists():
            try:
                owner = json.loads(path.read_text())
            except ValueError:
                owner = {}
            if owner.get("db") == db and owner.get("id"):
                return owner["id"]
            self.close()
            raise InvalidArgument(f"segment directory {self.directory} holds the segments of "
                                  f"{owner.get('db', '?')}, not of {db}; give each writer its own")
        if any(_ours(e.name) for e in self.directory.iterdir()):
            self.close()
            raise InvalidArgument(f"segment directory {self.directory} holds segments but no {OWNER} file")
        ident = uuid.uuid4().hex
        tmp = self.directory / f".{OWNER}.tmp"
        tmp.write_text(json.dumps({"id": ident, "db": db}))
        os.rename(tmp, path)
        return ident

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()  # releases the lock
            self._owner = None

    def write(self, seg: Segment, vocab_size: int) -> Segment:
        """Write ``seg`` and return it mapped from its files (its ``alive`` table kept); a folder
        of its id already there that cannot be read is written again (see ``reopen``)."""
        write_segment(self.directory, seg)
        mapped = self.reopen(seg, vocab_size)
        mapped.alive = seg.alive
        return mapped

    def open(self, segment_id: int, vocab_size: int) -> Segment:
        return open_segment(self.directory, segment_id, vocab_size)

    def reopen(self, seg: Segment, vocab_size: int) -> Segment:
        """``seg`` (the snapshot's copy when the writer opens, or one just written) mapped from its
        files; files that cannot be read are written again from it, said in the log (a damaged
        file, derived from the snapshot, kept the writer from starting, and failed each flush)."""
        try:
            return self.open(seg.segment_id, vocab_size)
        except (OSError, ValueError) as exc:
            log.warning("segment file %s is damaged (%s); writing it again",
                        segment_path(self.directory, seg.segment_id), exc)
        shutil.rmtree(segment_path(self.directory, seg.segment_id), ignore_errors=True)
        write_segment(self.directory, seg)
        return self.open(seg.segment_id, vocab_size)

    def retire(self, segment_ids: Iterable[int]) -> None:
        """Unlink these segments' files once the grace period has passed (at a later sweep)."""
        now = time.monotonic()
        with self._lock:
            self._retired.extend((now, sid) for sid in segment_ids)

    def sweep(self, now: float | None = None) -> int:
        """Unlink the retired segments whose grace period is over; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [sid for t, sid in self._retired if now - t >= self.grace_s]
            self._retired = [(t, sid) for t, sid in self._retired if now - t < self.grace_s]
        for sid in due:
            shutil.rmtree(segment_path(self.directory, sid), ignore_errors=True)
        return len(due)

    def reconcile(self, segments: Iterable[Segment]) -> None:
        """Files for exactly ``segments`` (the writer's, when it opens): missing ones written,
        those of other segments and temporaries a crash left removed. Readers of an earlier
        run that mapped them keep their mappings; they re-copy from this run anyway."""
        keep = set()
        for seg in segments:
            write_segment(self.directory, seg)
            keep.add(str(seg.segment_id))
        for entry in self.directory.iterdir():
            if _ours(entry.name) and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
