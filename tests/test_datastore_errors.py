"""Bad input at the Datastore boundary: clear errors, and nothing changes."""

import sqlite3

import numpy as np
import pytest

from datastore_service.core import Document, LookupParams, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig
from sssd_wire.errors import AlreadyExists, CorruptStore, InvalidArgument, NotFound, Unavailable


@pytest.fixture
def ds(tmp_path):
    ds = Datastore(DatastoreConfig(db=str(tmp_path / "s.db")))
    ds.create_namespace(NamespaceSpec("ns", 100))
    ds.ingest("ns", [Document.of("a", [1, 2, 3])])
    yield ds
    ds.close()


def snapshot(ds):
    return ds.store.document_count("ns"), ds.namespace("ns").live_tokens


@pytest.mark.parametrize(
    "docs,error,message",
    [
        ([Document.of("b", [100])], InvalidArgument, "token id 100 outside"),  # == vocab
        ([Document("b", np.array([-5], dtype=np.int32))], InvalidArgument, "token id -5"),  # negative (past .of)
        ([Document.of("b", [])], InvalidArgument, "is empty"),  # empty document
    ],
)
def test_bad_ingest_changes_nothing(ds, docs, error, message):
    before = snapshot(ds)
    with pytest.raises(error, match=message):
        ds.ingest("ns", docs)
    assert snapshot(ds) == before and ds.check_integrity() == ""
    assert not ds.namespace("ns").has_document("b")


@pytest.mark.parametrize("call", [
    lambda ds: ds.ingest("ns", [Document.of("b", [1, 2])]),
    lambda ds: ds.create_namespace(NamespaceSpec("other", 10)),
    lambda ds: ds.drop_namespace("ns"),
    lambda ds: ds.delete("ns", ["a"]),
])
def test_a_closed_datastore_says_so_and_the_file_keeps_what_it_had(tmp_path, call):
    """After close, a write is one Unavailable naming the file (it was sqlite3's "Cannot
    operate on a closed database"); a second close does nothing; the file opens again as it was."""
    db = str(tmp_path / "c.db")
    ds = Datastore(DatastoreConfig(db=db))
    ds.create_namespace(NamespaceSpec("ns", 100))
    ds.ingest("ns", [Document.of("a", [1, 2, 3])])
    ds.close()
    with pytest.raises(Unavailable, match=f"^{db} is closed \\(Datastore.close was called\\)"):
        call(ds)
    ds.close()
    again = Datastore(DatastoreConfig(db=db))
    assert again.namespace("ns").document_ids() == ["a"] and [s.spec.name for s in again.stats()] == ["ns"]
    again.close()


@pytest.mark.parametrize("docs, message", [
    (Document.of("b", [1, 2]), r"^docs must be a list of Documents, not one Document \(give \[doc\]\)$"),
    ([Document.of("b", [1, 2]), ("c", [1, 2])], r"^docs must be Documents \(Document.of\(id, tokens\)\), not tuple$"),
])
def test_documents_of_the_wrong_kind_are_one_line_and_store_nothing(ds, docs, message):
    """(A tuple failed on "'tuple' object has no attribute 'tokens'", one Document on "'Document'
    object is not iterable".)"""
    before = snapshot(ds)
    with pytest.raises(InvalidArgument, match=message):
        ds.ingest("ns", docs)
    assert snapshot(ds) == before and not ds.namespace("ns").has_document("b")


def test_documents_from_a_generator_are_stored(ds):
    assert ds.ingest("ns", (Document.of(i, [1, 2]) for i in "bc")).added == ["b", "c"]


def test_conflicting_id_is_refused_alone(ds):
    result = ds.ingest("ns", [Document.of("b", [1]), Document.of("a", [9])])
    assert (result.added, result.conflicts) == (["b"], ["a"])
    assert ds.store.document_count("ns") == 2 and ds.check_integrity() == ""
    ds.flush()
    (tree,) = ds.lookup("ns", [np.array([1, 2])], LookupParams(depth=1))
    assert tree.paths() == {(3,): 1}  # "a" still holds its first tokens


def test_oversized_document(tmp_path):
    ds = Datastore(DatastoreConfig(db=str(tmp_path / "o.db"), max_doc_tokens=8))
    ds.create_namespace(NamespaceSpec("ns", 10))
    with pytest.raises(InvalidArgument, match="over the cap 8"):
        ds.ingest("ns", [Document.of("x", np.ones(9, dtype=np.int32))])
    ds.close()


def test_a_document_over_the_retention_bound_evicts_nothing(tmp_path):
    ds = Datastore(DatastoreConfig(db=str(tmp_path / "r.db")))
    ds.create_namespace(NamespaceSpec("ns", 10, max_tokens=20))
    ds.ingest("ns", [Document.of(f"d{i}", [1, 2, 3, 4]) for i in range(4)])
    with pytest.raises(InvalidArgument, match=r"over namespace 'ns' \(max_tokens 20\)"):
        ds.ingest("ns", [Document.of("big", np.ones(21, dtype=np.int32))])
    assert ds.store.document_count("ns") == 4 and ds.check_integrity() == ""
    ds.close()


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_tokens=1 << 63), "max_tokens .* must be in"),
    (dict(max_tokens=-1), "max_tokens .* must be in"),
])
def test_namespace_spec_bounds(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        NamespaceSpec("ns", 10, **kwargs)


@pytest.mark.parametrize("knobs,message", [
    (dict(synchronous="garbage"), "--synchronous 'garbage' must be one of"),
    # (a temporary SQLite file, lost at exit, and a ".lock" in the working directory)
    (dict(db=""), "--db '' names no datastore file \\(SSSD_DB set but empty\\?\\)"),
    (dict(port=-5), "--port -5 must be in 0..65535"),
    (dict(max_message_bytes=0), "--max-message-bytes 0 must be in 65536..2147483647"),
    (dict(max_message_bytes=1 << 31), f"--max-message-bytes {1 << 31} must be in 65536..2147483647"),
    (dict(maintenance_interval_s=0), "--maintenance-interval-s 0 must be at least 0.01"),
    (dict(maintenance_interval_s=float("inf")), "--maintenance-interval-s inf must be at least 0.01 .* and finite"),
    (dict(grace_s=float("inf")), "--grace-s inf must be a finite number >= 0"),  # (a stop waited for ever)
    (dict(grace_s=float("nan")), "--grace-s nan must be a finite number >= 0"),
    (dict(idle_compaction_s=-1), "--idle-compaction-s -1 must be >= 0 \\(0: never\\)"),
    (dict(tls_cert="c.pem"), "--tls-cert and --tls-key go together"),
    (dict(workers=-1), "--workers -1 must be 0 \\(one per core\\) or more"),
    (dict(max_lookup_contexts=0), "--max-lookup-contexts 0 must be at least 1"),
    (dict(max_ingest_tokens=-3), "--max-ingest-tokens -3 must be at least 1"),
    (dict(inline_lookup_work=-1), "--inline-lookup-work -1 must be 0 \\(never inline\\) or more"),
    (dict(idle_inline_share=1.5), "--idle-inline-share 1.5 must be in \\[0, 1\\]"),
    (dict(max_live_tokens=-2), "--max-live-tokens -2 must be -1 \\(half the memory\\), 0 \\(no cap\\)"),
    (dict(namespace_lookup_rate=-1), "--namespace-lookup-rate -1 must be a finite number of contexts per second"),
    (dict(namespace_lookup_rate=float("inf")), "--namespace-lookup-rate inf must be a finite number"),
    (dict(follow="127.0.0.1:99999"), "--follow '127.0.0.1:99999': port 99999 is not in 1..65535"),
    (dict(follow="sssd-writer"), "--follow 'sssd-writer' names no port: plaintext gRPC would dial 443"),
])
def test_server_flags_are_validated(knobs, message):
    from datastore_service.server import ServerConfig

    with pytest.raises(ValueError, match=message):
        ServerConfig.of(**knobs)


def test_one_database_file_one_process(tmp_path):
    db = str(tmp_path / "l.db")
    first = Datastore(DatastoreConfig(db=db))
    with pytest.raises(OSError, match="is open in another sssd process"):
        Datastore(DatastoreConfig(db=db))
    first.close()
    Datastore(DatastoreConfig(db=db)).close()  # released on close


def test_a_lock_file_that_cannot_be_opened_is_named(tmp_path):
    """open()'s own words named neither the lock nor what it is for ("[Errno 21] Is a directory: ...")."""
    (tmp_path / "l.db.lock").mkdir()
    with pytest.raises(OSError, match=r"^cannot open the lock file .*l\.db\.lock \(Is a directory\)$"):
        Datastore(DatastoreConfig(db=str(tmp_path / "l.db")))


def test_unknown_namespace(ds):
    with pytest.raises(NotFound, match="'nope'"):
        ds.ingest("nope", [Document.of("x", [1])])
    with pytest.raises(NotFound):
        ds.lookup("nope", [np.array([1])], LookupParams())
    with pytest.raises(NotFound):
        ds.drop_namespace("nope")


def test_namespace_twice(ds):
    with pytest.raises(AlreadyExists):
        ds.create_namespace(NamespaceSpec("ns", 100))


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "ns/1"])
def test_bad_namespace_names(name):
    with pytest.raises(InvalidArgument, match="namespace name"):
        NamespaceSpec(name, 100)


def test_foreign_sqlite_file_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptStore, match="another application"):
        Datastore(DatastoreConfig(db=str(path)))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]  # untouched


def test_garbage_file_refused(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(CorruptStore, match="not a readable sssd datastore"):
        Datastore(DatastoreConfig(db=str(path)))


def test_a_directory_given_as_the_file_is_named(tmp_path):
    """SQLite says only "unable to open database file" (read as a failing disk before)."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(CorruptStore, match=r"dir.db is a directory, not a datastore file"):
        Datastore(DatastoreConfig(db=str(tmp_path / "dir.db")))


@pytest.mark.parametrize("name,message", [
    ("new/", r"new/ ends in '/', so names a directory: name the datastore file in it \(for example .*new/sssd.db\)"),
    ("/dev/null", r"/dev/null is not a regular file \(a device, pipe or socket\), so cannot hold a datastore"),
])
def test_a_path_that_cannot_name_the_file_is_named(tmp_path, name, message):
    """(A trailing '/' failed on the lock file, "No such file or directory"; /dev/null read as a
    failing disk, "storage failed (disk I/O error)".)"""
    path = name if name.startswith("/") else str(tmp_path / name) + "/"
    with pytest.raises(CorruptStore, match=message):
        Datastore(DatastoreConfig(db=path))
    assert not (tmp_path / "new").exists()


def test_a_segment_directory_that_is_a_file_is_named(tmp_path):
    from datastore_service.segment_files import SegmentFiles

    (tmp_path / "segs").write_text("a file")
    with pytest.raises(OSError, match=r"--segment-dir .*segs is a file, not a directory"):
        SegmentFiles(tmp_path / "segs", tmp_path / "s.db")


def test_drop_namespace_removes_everything(tmp_path, ds):
    ds.flush()
    ds.drop_namespace("ns")
    assert ds.namespace_names() == [] and ds.check_integrity() == ""
    assert ds.store.db.execute("SELECT count(*) FROM segment_chunks").fetchone()[0] == 0


def test_restart_loads_segments_without_rebuilding(tmp_path, monkeypatch):
    path = str(tmp_path / "r.db")
    ds = Datastore(DatastoreConfig(db=path))
    ds.create_namespace(NamespaceSpec("ns", 100))
    ds.ingest("ns", [Document.of(f"d{i}", [i % 7, 1, 2, 3]) for i in range(50)])
    ds.close()
    import datastore_service.core.segment as segment

    def no_rebuild(*a, **k):
        raise AssertionError("suffix array rebuilt on restart")

    monkeypatch.setattr(segment, "_suffix_array", no_rebuild)
    ds = Datastore(DatastoreConfig(db=path))
    assert ds.namespace("ns").document_count() == 50 and ds.check_integrity() == ""
    assert ds.lookup("ns", [np.array([1, 2])], LookupParams())[0].occurrences == 50
    ds.close()


def test_namespace_cap(tmp_path):
    from sssd_wire.errors import ResourceExhausted

    ds = Datastore(DatastoreConfig(db=str(tmp_path / "c.db"), max_namespaces=2))
    ds.create_namespace(NamespaceSpec("a", 10))
    ds.create_namespace(NamespaceSpec("b", 10))
    with pytest.raises(ResourceExhausted, match="2 namespaces, the cap"):
        ds.create_namespace(NamespaceSpec("c", 10))
    ds.drop_namespace("a")
    ds.create_namespace(NamespaceSpec("c", 10))
    ds.close()


@pytest.mark.parametrize("steps,refused", [
    # (namespace, tokens) ingested in turn under a cap of 100 live tokens; "a" has no retention, "r" keeps 30
    ([("a", 60), ("a", 40)], []),  # up to the cap exactly
    ([("a", 60), ("a", 41)], [1]),  # one past it: refused, and nothing of it stored
    ([("a", 60), ("r", 30), ("r", 30), ("r", 25)], []),  # retention evicts: "r" never holds more than 30
    ([("a", 80), ("r", 10), ("r", 15)], [2]),  # "r" may grow to 30 but the others leave it 20
    ([("a", 60), ("a", 50), ("r", 30)], [1]),  # the refused batch leaves room for the next one
])
def test_live_tokens_are_capped_over_all_namespaces(tmp_path, steps, refused):
    """--max-live-tokens: an ingest that would pass the cap of every namespace's live tokens is
    refused whole (RESOURCE_EXHAUSTED), counting the namespace's own retention first."""
    from sssd_wire.errors import ResourceExhausted

    ds = Datastore(DatastoreConfig(db=str(tmp_path / "m.db"), max_live_tokens=100))
    ds.create_namespace(NamespaceSpec("a", 10))
    ds.create_namespace(NamespaceSpec("r", 10, max_tokens=30))
    got = []
    for i, (name, n) in enumerate(steps):
        before = ds.namespace(name).live_tokens
        try:
            ds.ingest(name, [Document(f"d{i}", np.ones(n, dtype=np.int32))])
        except ResourceExhausted as exc:
            assert "pass its cap of 100 (--max-live-tokens)" in str(exc) and ds.namespace(name).live_tokens == before
            got.append(i)
    assert got == refused
    assert sum(ds.namespace(n).live_tokens for n in ("a", "r")) <= 100 and ds.check_integrity() == ""
    ds.close()


def test_the_default_cap_on_live_tokens_is_half_the_memory_at_16_bytes_a_token(tmp_path, monkeypatch):
    import os

    from datastore_service import memory as memory_module
    from datastore_service.memory import auto_live_tokens

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < auto_live_tokens() <= memory // 32
    limits = [tmp_path / "v2", tmp_path / "v1"]
    limits[0].write_text("max\n")  # (cgroup v2 without a limit)
    limits[1].write_text(f"{1 << 30}\n")  # a container of 1 GiB
    monkeypatch.setattr(memory_module, "CGROUP_LIMITS", [str(p) for p in limits + [tmp_path / "absent"]])
    assert auto_live_tokens() == min(memory, 1 << 30) // 32
    monkeypatch.undo()
    assert Datastore(DatastoreConfig(db=str(tmp_path / "a.db"))).live_token_cap == auto_live_tokens()
    unbounded = Datastore(DatastoreConfig(db=str(tmp_path / "b.db"), max_live_tokens=0))
    unbounded.create_namespace(NamespaceSpec("a", 10))
    unbounded.ingest("a", [Document("d", np.ones(1000, dtype=np.int32))])  # (0: no cap)
    assert unbounded.live_token_cap == 0


@pytest.mark.parametrize("damage", ["sa_out_of_range", "truncated_tokens", "odd_bytes"])
def test_a_damaged_stored_segment_is_rebuilt_not_served(tmp_path, caplog, damage):
    db = str(tmp_path / "d.db")
    ds = Datastore(DatastoreConfig(db=db))
    ds.create_namespace(NamespaceSpec("ns", 10))
    ds.ingest("ns", [Document.of(f"d{i}", [1, 2, 3, i % 10]) for i in range(20)])
    ds.flush()
    expected = ds.lookup("ns", [np.array([1, 2])], LookupParams(depth=2))[0].paths()
    ds.close()
    conn = sqlite3.connect(db)
    (sid,) = conn.execute("SELECT segment_id FROM segments").fetchone()
    if damage == "sa_out_of_range":
        sa = np.full(80, 1 << 30, dtype="<i4").tobytes()
        conn.execute("UPDATE segment_chunks SET data=? WHERE segment_id=? AND name='sa'", (sa, sid))
    elif damage == "truncated_tokens":
        conn.execute("UPDATE segment_chunks SET data=substr(data, 1, 40) WHERE segment_id=? AND name='tokens'", (sid,))
    else:
        conn.execute("UPDATE segment_chunks SET data=substr(data, 1, 7) WHERE segment_id=? AND name='doc_seqs'", (sid,))
    conn.commit()
    conn.close()
    with caplog.at_level("WARNING", logger="sssd.datastore"):
        ds = Datastore(DatastoreConfig(db=db))
    assert "is damaged" in caplog.text and ds.check_integrity() == ""
    assert ds.namespace("ns").document_count() == 20
    assert ds.lookup("ns", [np.array([1, 2])], LookupParams(depth=2))[0].paths() == expected
    ds.close()


def test_a_failing_maintenance_loop_says_so_once_a_minute_and_when_it_recovers(tmp_path, monkeypatch, caplog):
    import logging
    import time

    from datastore_service import datastore as module

    monkeypatch.setattr(module, "MAINTENANCE_REPEAT_S", 0.3)  # "a minute", shortened
    ds = Datastore(DatastoreConfig(db=str(tmp_path / "m.db"), maintenance_interval_s=0.01))
    calls = []

    def maintain():
        calls.append(1)
        if len(calls) <= 60:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ds, "maintain", maintain)
    with caplog.at_level(logging.WARNING, logger="sssd.datastore"):
        ds.start_maintenance()
        deadline = time.monotonic() + 20
        while len(calls) < 70 and time.monotonic() < deadline:
            time.sleep(0.01)
        ds.close()
    said = [r for r in caplog.records if r.name == "sssd.datastore"]
    assert said[0].exc_info is not None and "maintenance round failed" in said[0].getMessage()
    again = [r for r in said if "still failing" in r.getMessage()]
    assert 1 <= len(again) <= 10 and all(r.exc_info is None for r in again)  # not one per round
    assert "No space left on device" in again[0].getMessage()
    assert "maintenance works again after 60 failed rounds" in said[-1].getMessage()
    assert ds.maintenance_failures == 60


@pytest.mark.parametrize(
    "sql,message",
    [
        # a document gone from the file, still indexed
        ("DELETE FROM documents WHERE doc_id='a'", "namespace 'ns': 0 documents in SQLite but 1 indexed"),
        # a namespace in the file that the index never loaded
        ("INSERT INTO namespaces VALUES ('ghost', 10, '', 0, 0)", "namespaces in SQLite ['ghost', 'ns'] differ"),
    ],
)
def test_the_integrity_check_reports_a_file_changed_behind_the_index(ds, sql, message):
    """check_integrity compares the live index with the SQLite file (what ``sssd check`` and the
    crash tests rely on): a change made to the file alone is named, not passed as ok."""
    ds.flush()
    assert ds.check_integrity() == ""
    with ds.store.db.conn:
        ds.store.db.conn.execute(sql)
    assert message in ds.check_integrity()


def test_a_namespace_dropped_while_a_maintenance_round_runs_does_not_fail_it(ds):
    """(A drop between the round's listing of namespaces and its compaction of one failed the round
    with a NotFound traceback in the log; drops race the 0.1 s rounds.) A NotFound for a namespace
    that is still there is a failure still."""
    from sssd_wire.errors import NotFound

    ds.create_namespace(NamespaceSpec("other", 100))
    compact = ds.compact

    def dropping_first(name=None, full=True):
        if name == "ns" and "ns" in ds.namespace_names():
            ds.drop_namespace("ns")  # dropped after the round listed it
        return compact(name, full)

    ds.compact = dropping_first
    ds.maintain()
    assert ds.namespace_names() == ["other"] and ds.check_integrity() == ""

    def failing(name=None, full=True):
        raise NotFound(f"namespace {name!r} does not exist")

    ds.compact = failing
    with pytest.raises(NotFound):
        ds.maintain()
