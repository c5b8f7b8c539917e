"""SIGKILL a real ingesting process at random moments; nothing acknowledged may be lost."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from datastore_service.core import Document, LookupParams, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig
from tests.crash_child import tokens_for

ROOT = Path(__file__).resolve().parent.parent
CYCLES = int(os.environ.get("SSSD_CRASH_CYCLES", "3"))


def run_and_kill(db: str, start: int, seconds: float) -> tuple[list[int], set[int], set[int]]:
    """(acknowledged ids, ids whose delete was acknowledged, ids whose delete had started)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", db, str(start)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    time.sleep(seconds)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join(timeout=10)
    acked, deleted, deleting = [], set(), set()
    for line in (l for l in lines if l.endswith("\n")):  # a line cut by the kill is not an ack
        if line.startswith("acked "):
            acked.extend(int(x) for x in line.split()[1:])
        elif line.startswith("deleted "):
            deleted.add(int(line.split()[1][3:]))
        elif line.startswith("deleting "):
            deleting.add(int(line.split()[1][3:]))
    return acked, deleted, deleting


def test_sigkill_during_ingest_and_compaction_loses_nothing(tmp_path):
    db = str(tmp_path / "crash.db")
    rng = random.Random(1234)
    all_acked, all_deleted, all_deleting, start = [], set(), set(), 0
    for cycle in range(CYCLES):
        acked, deleted, deleting = run_and_kill(db, start, rng.uniform(0.5, 2.0))
        assert acked, "the child acknowledged nothing before the kill"
        all_acked += acked
        all_deleted |= deleted
        all_deleting |= deleting - deleted  # killed mid-delete: either outcome is correct
        start = max(all_acked) + 1000
        ds = Datastore(DatastoreConfig(db=db))
        try:
            assert ds.check_integrity() == ""
            ns = ds.namespace("crash")
            for j in all_acked:
                if j in all_deleted:
                    assert not ns.has_document(f"doc{j}")
                    continue
                if j in all_deleting:
                    continue
                assert ns.has_document(f"doc{j}"), f"acknowledged doc{j} lost in cycle {cycle}"
                stored = ds.store.stored_document("crash", f"doc{j}")
                assert np.array_equal(stored, tokens_for(j))
            probe = tokens_for(all_acked[-1])
            tree = ds.lookup("crash", [probe[:4]], LookupParams())[0]
            assert tree.match_length >= 1
        finally:
            ds.close()


KILLED_BETWEEN_INSERT_AND_EVICTION = """
import os, signal, sys
from datastore_service.core import Document, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig

ds = Datastore(DatastoreConfig(db=sys.argv[1]))
ds.create_namespace(NamespaceSpec("r", 50, max_tokens=8))
ds.ingest("r", [Document.of("a", [1, 2, 3, 4]), Document.of("b", [5, 6, 7, 8])])
# an ingest as builds before this test's commit made it: its documents, then (killed before)
# the deletion of those it evicted, in a second commit
ds.store.insert_documents("r", [Document.of("c", [9, 9, 9, 9])], ds.namespace("r").next_seqs(1))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_file_left_over_its_retention_bound_is_evicted_at_the_next_open(tmp_path):
    """Files that older builds left over their bound (killed between an ingest's two commits)
    are brought back to it when opened."""
    db = str(tmp_path / "r.db")
    child = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_INSERT_AND_EVICTION, db], cwd=ROOT, timeout=120)
    assert child.returncode == -signal.SIGKILL
    ds = Datastore(DatastoreConfig(db=db))
    try:
        assert ds.check_integrity(deep=True) == ""  # (without the eviction at open: "retention violated")
        assert ds.store.document_count("r") == 2 and ds.stats()[0].counts.tokens == 8
        gone, kept = ds.lookup("r", [np.array([1, 2, 3]), np.array([9, 9, 9])], LookupParams())
        assert gone.match_length == 0 and kept.match_length == 3  # the oldest evicted, the newest kept
    finally:
        ds.close()
    ds = Datastore(DatastoreConfig(db=db))  # and the eviction itself was stored
    try:
        assert ds.store.document_count("r") == 2 and ds.check_integrity(deep=True) == ""
        ds.ingest("r", [Document.of("a", [1, 2, 3, 4])])  # its id is free again (it was an IntegrityError)
    finally:
        ds.close()


def test_an_ingest_and_its_evictions_are_one_commit(tmp_path):
    """A failure while deleting what retention evicts undoes the ingest's documents too: nothing of
    the batch is stored, the evicted documents stay, and the same ingest succeeds afterwards."""
    import sqlite3

    ds = Datastore(DatastoreConfig(db=str(tmp_path / "r.db")))
    try:
        ds.create_namespace(NamespaceSpec("r", 50, max_tokens=8))
        ds.ingest("r", [Document.of("a", [1, 2, 3, 4]), Document.of("b", [5, 6, 7, 8])])
        real = ds.store._delete

        def failing(namespace, doc_ids):
            if doc_ids:
                raise sqlite3.OperationalError("disk I/O error")

        ds.store._delete = failing
        with pytest.raises(sqlite3.OperationalError):
            ds.ingest("r", [Document.of("c", [9, 9, 9, 9])])
        assert ds.store.document_count("r") == 2 and ds.check_integrity(deep=True) == ""
        ds.store._delete = real
        assert ds.ingest("r", [Document.of("c", [9, 9, 9, 9])]).evicted == ["a"]
        assert ds.store.document_count("r") == 2 and ds.check_integrity(deep=True) == ""
        # a batch that alone passes the bound evicts its own first documents too, as the index does
        assert ds.ingest("r", [Document.of(f"n{i}", [i, i, i]) for i in range(4)]).evicted == ["b", "c", "n0", "n1"]
        assert ds.store.document_count("r") == 2 and ds.check_integrity(deep=True) == ""
    finally:
        ds.close()
