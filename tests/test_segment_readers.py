"""Segment readers: replicas on the writer's machine that map its segment files instead of
copying its documents (real servers on loopback; the writer's maintenance flushes and compacts)."""

import json
import mmap
import time

import grpc
import numpy as np
import pytest

from client_sdk.transport.remote import DatastoreClient
from datastore_service.core import Document, NamespaceSpec, build_segment
from datastore_service.datastore import Datastore, DatastoreConfig
from datastore_service.segment_files import SegmentFiles, open_segment, owner_id, segment_path, write_segment
from sssd_wire.errors import InvalidArgument
from sssd_wire.types import LookupParams
from sssd_wire.v1 import datastore_pb2 as pb
from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc
from tests.test_replication import (EXACT, alpha_and_gone, ingest_delete_drop_seen, occurrences, replica_of,
                                    serving, wait_for)

WIDE = LookupParams(min_match=1, max_match=4, depth=4)


def reader_of(server_factory, tmp_path, writer, name="reader"):
    return replica_of(server_factory, tmp_path, writer, name, segment_dir=str(tmp_path / "segments"))


@pytest.fixture
def writer(server_factory, tmp_path):
    return server_factory(db=str(tmp_path / "writer.db"), segment_dir=str(tmp_path / "segments"))


def mapped(array: np.ndarray) -> bool:
    """True when the array's memory is a file mapping (not a private copy)."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return isinstance(base, mmap.mmap)


def same_answers(a, b, namespace: str, contexts) -> bool:
    left, right = a.lookup(namespace, contexts, WIDE), b.lookup(namespace, contexts, WIDE)
    return [(t.match_length, t.occurrences, t.tokens.tolist(), t.counts.tolist()) for t in left] == \
           [(t.match_length, t.occurrences, t.tokens.tolist(), t.counts.tolist()) for t in right]


def test_a_segment_reader_maps_the_writers_segments_and_follows_every_change(server_factory, tmp_path, writer):
    rng = np.random.default_rng(0)
    with DatastoreClient(writer.address) as w:
        alpha_and_gone(w, rng, 50, 3000, 8)
        reader = reader_of(server_factory, tmp_path, writer)
        with DatastoreClient(reader.address) as r:
            assert [n.name for n in r.list_namespaces()] == ["alpha", "gone"]
            wait_for(lambda: r.stats("alpha").namespaces[0].documents == 8, 2.0, "the copy")
            probes = [rng.integers(0, 50, 6) for _ in range(40)]
            assert sum(t.occurrences > 0 for t in r.lookup("alpha", probes, WIDE)) > 30
            assert same_answers(w, r, "alpha", probes)
            # the reader holds the writer's files, mapped: no private copy of tokens or suffix arrays
            ds = reader.server.servicer.ds
            for seg in ds.namespace("alpha").segments:
                assert mapped(seg.tokens) and mapped(seg.sa)
                assert segment_path(tmp_path / "segments", seg.segment_id).is_dir()
            # each change within a second (an ingest shows once the writer's next flush seals it)
            seen_after = ingest_delete_drop_seen(w, r, [41, 42, 43, 44, 45])
            # retention evicts on the writer; compaction merges there; the reader mirrors both
            w.ingest("alpha", [(f"new{i}", rng.integers(0, 50, 100)) for i in range(40)])
            w.compact("alpha")
            wait_for(lambda: len(ds.namespace("alpha").segments) == 1, 2.0, "the compaction mirrored")
            stats = lambda c: (c.stats("alpha").namespaces[0].documents, c.stats("alpha").namespaces[0].tokens)
            wait_for(lambda: stats(r) == stats(w), 2.0, "the same documents")
            assert stats(r)[1] == 3000
            assert same_answers(w, r, "alpha", probes)
            assert ds.check_integrity() == ""
            with pytest.raises(grpc.RpcError) as err:
                r.ingest("alpha", [("x", [1])])
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert seen_after < 1.0


def test_a_segment_reader_that_joins_late_or_restarts_copies_the_segment_list(server_factory, tmp_path, writer):
    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", [1, 2, 3, 4, 5]), ("b", [5, 6, 7, 8, 9])])
        first = reader_of(server_factory, tmp_path, writer)
        w.delete("alpha", ["a"])
        second = reader_of(server_factory, tmp_path, writer, "second")  # the copy carries the deletion
        first.stop()
        w.ingest("alpha", [("c", [9, 10, 11, 12])])
        again = reader_of(server_factory, tmp_path, writer, "again")
        for reader in (second, again):
            with DatastoreClient(reader.address) as r:
                wait_for(lambda: occurrences(r, "alpha", [9, 10, 11, 12]) == 1, 2.0, "c on the reader")
                assert occurrences(r, "alpha", [5, 6, 7, 8]) == 1 and occurrences(r, "alpha", [1, 2, 3, 4]) == 0


def refusal(address: str, directory) -> grpc.RpcError:
    """What a writer answers a segment reader whose directory is ``directory``."""
    with grpc.insecure_channel(address) as ch:
        stream = pb_grpc.DatastoreStub(ch).Follow(pb.FollowRequest(segment_dir=owner_id(directory)))
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stream))
    return err.value


def test_a_writer_without_segment_files_or_of_another_directory_refuses_segment_readers(server_factory, tmp_path):
    SegmentFiles(tmp_path / "other", tmp_path / "elsewhere.db").close()  # a directory another writer owns
    plain = server_factory(db=str(tmp_path / "plain.db"))
    err = refusal(plain.address, tmp_path / "other")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "writes no segment files" in err.details()
    writer = server_factory(db=str(tmp_path / "w.db"), segment_dir=str(tmp_path / "mine"))
    err = refusal(writer.address, tmp_path / "other")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "not this writer's" in err.details()
    # a reader started before its writer ever wrote the directory waits, then follows
    reader = server_factory(db=str(tmp_path / "r.db"), follow=writer.address, segment_dir=str(tmp_path / "later"))
    time.sleep(0.5)
    assert not serving(reader.address)


def test_one_writer_per_segment_directory(tmp_path):
    files = SegmentFiles(tmp_path / "segs", tmp_path / "a.db")
    with pytest.raises(OSError, match="in use by another running writer"):
        SegmentFiles(tmp_path / "segs", tmp_path / "b.db")
    files.close()
    with pytest.raises(InvalidArgument, match="holds the segments of"):
        SegmentFiles(tmp_path / "segs", tmp_path / "b.db")
    again = SegmentFiles(tmp_path / "segs", tmp_path / "a.db")  # its own writer, restarted
    assert again.id == files.id
    again.close()


def test_segment_files_round_trip_reconcile_and_retire_after_a_grace(tmp_path):
    rng = np.random.default_rng(1)
    docs = [(f"d{i}", i + 1, rng.integers(0, 30, 50).astype(np.int32)) for i in range(6)]
    seg = build_segment(7, 30, docs)
    files = SegmentFiles(tmp_path / "segs", tmp_path / "w.db", grace_s=5.0)
    (tmp_path / "segs" / "notes.txt").write_text("not ours")
    (tmp_path / "segs" / "3").mkdir()  # a stale segment of an earlier run
    (tmp_path / "segs" / ".9.tmp-1-2").mkdir()  # a write a crash cut short
    files.reconcile([seg])
    assert sorted(p.name for p in (tmp_path / "segs").iterdir()) == [".lock", "7", "OWNER", "notes.txt"]
    opened = open_segment(tmp_path / "segs", 7, 30, dead=[2])
    assert opened.doc_ids == seg.doc_ids and np.array_equal(opened.tokens, seg.tokens)
    assert np.array_equal(opened.sa, seg.sa) and opened.alive.tolist() == [True, True, False, True, True, True]
    assert mapped(opened.sa)
    files.retire([7])
    assert files.sweep(now=time.monotonic() + 1.0) == 0 and segment_path(tmp_path / "segs", 7).is_dir()
    assert files.sweep(now=time.monotonic() + 6.0) == 1 and not segment_path(tmp_path / "segs", 7).exists()
    assert np.array_equal(opened.sa, seg.sa)  # a mapping outlives the unlink
    with pytest.raises(FileNotFoundError):
        open_segment(tmp_path / "segs", 7, 30)
    json.loads((tmp_path / "segs" / "OWNER").read_text())
    files.close()


def test_a_writer_keeps_its_segment_files_equal_to_its_snapshot_across_a_restart(tmp_path):
    config = DatastoreConfig(db=str(tmp_path / "w.db"), segment_dir=str(tmp_path / "segs"))
    ds = Datastore(config)
    ds.create_namespace(NamespaceSpec("alpha", 100))
    for i in range(5):
        ds.ingest("alpha", [Document.of(f"d{i}", list(range(i, i + 20)))])
        ds.flush()
    ds.compact("alpha")
    ds.delete("alpha", ["d3"])
    segments = ds.namespace("alpha").segments
    assert all(mapped(seg.tokens) and mapped(seg.sa) for seg in segments)  # the writer serves from its files too
    ids = {s.segment_id for s in segments}
    ds.close()
    ds = Datastore(config)  # retired segments' files are removed when it opens, held ones kept
    assert {int(p.name) for p in (tmp_path / "segs").iterdir() if p.name.isdigit()} == ids
    for seg in ds.namespace("alpha").segments:
        assert mapped(seg.tokens) and mapped(seg.sa) and not seg.alive[seg.doc_ids.index("d3")]
        copy = open_segment(config.segment_dir, seg.segment_id, 100)
        assert np.array_equal(copy.sa, seg.sa) and copy.doc_ids == seg.doc_ids
    assert ds.check_integrity() == ""
    ds.close()


@pytest.mark.parametrize("damage", ["truncated", "empty doc ids", "missing array"])
def test_a_writer_writes_damaged_segment_files_again_when_it_opens(tmp_path, caplog, damage):
    """The files derive from the snapshot: one a crash or a full disk damaged is written again, said
    in the log (it kept the writer from starting: "EOF: reading array header")."""
    config = DatastoreConfig(db=str(tmp_path / "w.db"), segment_dir=str(tmp_path / "segs"))
    ds = Datastore(config)
    ds.create_namespace(NamespaceSpec("alpha", 100))
    ds.ingest("alpha", [Document.of("a", list(range(1, 40)))])
    ds.flush()
    (seg,) = ds.namespace("alpha").segments
    sa = seg.sa.copy()
    ds.close()
    folder = segment_path(config.segment_dir, seg.segment_id)
    if damage == "truncated":
        (folder / "sa.npy").write_bytes((folder / "sa.npy").read_bytes()[:100])
    elif damage == "empty doc ids":
        (folder / "doc_ids.json").write_text("")
    else:
        (folder / "tokens.npy").unlink()
    with caplog.at_level("WARNING", logger="sssd.datastore"):
        ds = Datastore(config)
    try:
        assert f"segment file {folder} is damaged" in caplog.text
        assert ds.check_integrity() == "" and ds.lookup("alpha", [np.array([5, 6, 7, 8])], EXACT)[0].occurrences == 1
        assert np.array_equal(open_segment(config.segment_dir, seg.segment_id, 100).sa, sa)
    finally:
        ds.close()


@pytest.mark.parametrize("damage", ["empty folder", "truncated"])
def test_a_writer_writes_a_segment_again_over_a_damaged_folder_of_its_id(tmp_path, caplog, damage):
    """A folder of the segment's id already there that does not map (damaged between its rename
    and the writer's own mapping of it) is written again: it failed the flush, at every retry."""
    seg = build_segment(7, 30, [("d0", 1, np.arange(1, 30, dtype=np.int32))])
    files = SegmentFiles(tmp_path / "segs", tmp_path / "w.db")
    folder = segment_path(tmp_path / "segs", 7)
    if damage == "empty folder":
        folder.mkdir()
    else:
        write_segment(tmp_path / "segs", seg)
        (folder / "sa.npy").write_bytes((folder / "sa.npy").read_bytes()[:100])
    with caplog.at_level("WARNING", logger="sssd.datastore"):
        written = files.write(seg, 30)
    assert f"segment file {folder} is damaged" in caplog.text
    assert mapped(written.sa) and np.array_equal(written.sa, seg.sa) and written.alive is seg.alive
    assert np.array_equal(open_segment(tmp_path / "segs", 7, 30).sa, seg.sa)
    files.close()


def test_a_segment_file_that_cannot_be_written_loses_nothing(tmp_path, monkeypatch):
    ds = Datastore(DatastoreConfig(db=str(tmp_path / "w.db"), segment_dir=str(tmp_path / "segs")))
    ds.create_namespace(NamespaceSpec("alpha", 100))
    ds.ingest("alpha", [Document.of("a", [1, 2, 3, 4, 5])])
    real = SegmentFiles.write
    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SegmentFiles, "write", full)
    with pytest.raises(OSError):
        ds.flush()
    assert ds.namespace("alpha").pending_tokens() == 5 and ds.check_integrity() == ""  # back in the memtable
    monkeypatch.setattr(SegmentFiles, "write", real)
    ds.ingest("alpha", [Document.of("b", [6, 7, 8, 9])])
    ds.flush()
    assert ds.lookup("alpha", [np.array([1, 2, 3, 4])], EXACT)[0].occurrences == 1
    assert ds.lookup("alpha", [np.array([6, 7, 8, 9])], EXACT)[0].occurrences == 1
    assert ds.check_integrity() == ""
    ds.close()


def test_a_segment_reader_survives_its_writer_killed_and_restarted(server_factory, tmp_path):
    """SIGKILL the writer (a real process): the reader keeps answering from the files it mapped,
    then follows the restarted writer (a new epoch: a copy of its segment list)."""
    from sssd.bench.fleet_bench import free_port
    from sssd.serve_process import start_server

    port, segs, db = free_port(), str(tmp_path / "segments"), str(tmp_path / "w.db")
    proc, address = start_server(db, "--segment-dir", segs, "--port", str(port))
    try:
        with DatastoreClient(address) as w:
            w.create_namespace("alpha", 100)
            w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
        reader = server_factory(db=str(tmp_path / "r.db"), follow=address, segment_dir=segs)
        wait_for(lambda: serving(reader.address), what="reader SERVING")
        with DatastoreClient(reader.address) as r:
            wait_for(lambda: occurrences(r, "alpha", [1, 2, 3, 4]) == 1, 2.0, "a on the reader")
            proc.kill()
            proc.wait()
            assert occurrences(r, "alpha", [1, 2, 3, 4]) == 1  # served from its mappings meanwhile
            proc, _ = start_server(db, "--segment-dir", segs, "--port", str(port))
            with DatastoreClient(address) as w:
                w.ingest("alpha", [("b", [6, 7, 8, 9])])
            wait_for(lambda: occurrences(r, "alpha", [6, 7, 8, 9]) == 1, 10.0, "b from the restarted writer")
            assert occurrences(r, "alpha", [1, 2, 3, 4]) == 1
            assert reader.server.servicer.ds.check_integrity() == ""
    finally:
        proc.kill()
        proc.wait()


def test_a_damaged_segment_file_keeps_a_reader_back_with_one_line_until_the_writer_restarts(server_factory, tmp_path,
                                                                                            caplog):
    """A reader cannot map a damaged segment file (the writer, which mapped it before, goes on):
    it says so in one line naming the file and the remedy, not a traceback every 2 s, stays
    NOT_SERVING, and serves once the restarted writer has written the file again (it logged a
    traceback and asked for a full copy every 2 s, forever)."""
    from sssd.bench.fleet_bench import free_port
    from sssd.serve_process import start_server

    port, segs, db = free_port(), tmp_path / "segments", str(tmp_path / "w.db")
    proc, address = start_server(db, "--segment-dir", str(segs), "--port", str(port))
    try:
        with DatastoreClient(address) as w:
            w.create_namespace("alpha", 100)
            w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
            # installed: its files renamed into place and mapped by the writer (a damage before that,
            # seen in a temporary folder, failed the writer's own flush and left the reader nothing to read)
            wait_for(lambda: w.stats("alpha").namespaces[0].segments == 1, what="the writer's segment")
        sa, = [p for p in segs.glob("*/sa.npy") if p.parent.name.isdigit()]
        damaged = sa.with_name("sa.tmp")
        damaged.write_bytes(sa.read_bytes()[:100])
        damaged.replace(sa)  # (a new file: the writer's mapping of the old one stays whole)
        with caplog.at_level("WARNING", logger="sssd.replication"):
            reader = server_factory(db=str(tmp_path / "r.db"), follow=address, segment_dir=str(segs))
            time.sleep(3.0)  # (retries every 2 s at most)
            assert not serving(reader.address)
            said = [r for r in caplog.records if "cannot be read" in r.getMessage()]
            assert len(said) == 1 and said[0].exc_info is None and "Traceback" not in caplog.text
            assert f"segment file {sa.parent} cannot be read" in said[0].getMessage()
            assert "restart the writer" in said[0].getMessage()
        proc.terminate()
        proc.wait()
        proc, _ = start_server(db, "--segment-dir", str(segs), "--port", str(port))  # writes the file again
        wait_for(lambda: serving(reader.address), 10.0, "reader SERVING")
        with DatastoreClient(reader.address) as r:
            assert occurrences(r, "alpha", [1, 2, 3, 4]) == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_segment_reader_refuses_documents_from_a_writer_that_predates_it(tmp_path):
    from datastore_service.replication import SegmentApplier

    ds = Datastore(DatastoreConfig(segment_dir=str(tmp_path / "segs")), mirror=True)
    applier = SegmentApplier(ds)
    added = pb.Change(added=pb.IngestRequest(namespace="alpha", documents=[pb.TokenDocument(id="a")]))
    with pytest.raises(Exception, match="predates segment readers"):
        applier(pb.ChangeBatch(reset=True, copying=True, changes=[added]))
    ds.close()


def test_segment_readers_of_a_replica_on_another_machine(server_factory, tmp_path, writer):
    """A replica copies the documents from its writer and, with --write-segments, writes its own
    segments for segment readers on its machine, which follow it (the writer's files unused)."""
    local = str(tmp_path / "replica-segments")
    replica = server_factory(db=str(tmp_path / "replica.db"), follow=writer.address, segment_dir=local,
                             write_segments=True)
    wait_for(lambda: serving(replica.address), what="replica SERVING")
    reader = server_factory(db=str(tmp_path / "r.db"), follow=replica.address, segment_dir=local)
    wait_for(lambda: serving(reader.address), what="its reader SERVING")
    with DatastoreClient(writer.address) as w, DatastoreClient(reader.address) as r:
        w.create_namespace("alpha", 100)
        wait_for(lambda: [n.name for n in r.list_namespaces()] == ["alpha"], 2.0, "the namespace two hops away")
        t = time.monotonic()
        w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
        wait_for(lambda: occurrences(r, "alpha", [1, 2, 3, 4]) == 1, 2.0, "the ingest two hops away")
        assert time.monotonic() - t < 2.0
        w.delete("alpha", ["a"])
        wait_for(lambda: occurrences(r, "alpha", [1, 2, 3, 4]) == 0, 2.0, "the delete two hops away")
    ds = reader.server.servicer.ds
    with DatastoreClient(writer.address) as w:
        w.ingest("alpha", [("b", [6, 7, 8, 9])])
    wait_for(lambda: len(ds.namespace("alpha").segments) >= 1, 2.0, "a segment on the reader")
    assert all(mapped(s.sa) and segment_path(local, s.segment_id).is_dir() for s in ds.namespace("alpha").segments)
    # the replica still relays nothing else: a document follower is refused
    err = refusal(replica.address, tmp_path / "nowhere")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "read replica of" in err.details()


def test_write_segments_needs_a_directory():
    with pytest.raises(ValueError, match="--write-segments needs --segment-dir"):
        DatastoreConfig(write_segments=True)


def test_a_reader_too_far_behind_for_a_segment_says_so_and_copies_again(tmp_path):
    from datastore_service.replication import SegmentApplier
    from sssd_wire.errors import DatastoreError

    ds = Datastore(DatastoreConfig(segment_dir=str(tmp_path / "segs")), mirror=True)
    applier = SegmentApplier(ds)
    created = pb.Change(created=pb.Namespace(name="alpha", vocab_size=9))
    applier(pb.ChangeBatch(reset=True, copying=True, changes=[created]))
    sealed = pb.Change(sealed=pb.SealedSegment(namespace="alpha", segment_id=5))  # unlinked after its grace
    with pytest.raises(DatastoreError, match="segment 5 is no longer in .*fell more than the writer's grace"):
        applier(pb.ChangeBatch(changes=[sealed]))
    ds.close()
