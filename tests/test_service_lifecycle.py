"""Health transitions, UNAVAILABLE while loading, graceful shutdown, malformed requests."""

import re
import threading
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.transport.remote import DatastoreClient
from datastore_service import datastore as datastore_module
from datastore_service.datastore import Datastore, DatastoreConfig
from datastore_service.embedded import EmbeddedServer
from datastore_service.memory import auto_live_tokens
from datastore_service.server import ServerConfig, holdings
from sssd_wire.v1 import datastore_pb2 as pb


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_not_serving_and_unavailable_until_loaded(tmp_path, monkeypatch):
    release = threading.Event()
    real_init = Datastore.__init__

    def slow_init(self, config, *args, **kwargs):
        release.wait(30)
        real_init(self, config, *args, **kwargs)

    monkeypatch.setattr(datastore_module.Datastore, "__init__", slow_init)
    server = EmbeddedServer(ServerConfig.of(db=str(tmp_path / "h.db"), port=0))
    starter = threading.Thread(target=server.start)
    starter.start()
    deadline = time.monotonic() + 10
    while not server.server.port and time.monotonic() < deadline:
        time.sleep(0.01)
    address = f"127.0.0.1:{server.server.port}"
    time.sleep(0.2)
    assert health_status(address) == health_pb2.HealthCheckResponse.NOT_SERVING
    with DatastoreClient(address) as c:
        with pytest.raises(grpc.RpcError) as info:
            c.list_namespaces()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    release.set()
    starter.join()
    assert health_status(address) == health_pb2.HealthCheckResponse.SERVING
    server.stop()


def test_graceful_shutdown_keeps_acknowledged_ingest_and_snapshots(tmp_path):
    db = str(tmp_path / "g.db")
    server = EmbeddedServer(ServerConfig.of(db=db, port=0, maintenance_interval_s=60)).start()
    with DatastoreClient(server.address) as c:
        c.create_namespace("ns", 100)
        for i in range(20):
            c.ingest("ns", [(f"d{i}", [i % 100, 1, 2])])
    server.stop()  # health off, drain, final snapshot, close
    ds = Datastore(DatastoreConfig(db=db))
    assert ds.namespace("ns").document_count() == 20 and ds.check_integrity() == ""
    assert list(ds.store.pending_documents("ns")) == []  # the final snapshot covered them
    ds.close()


def _stats(*counts):
    """NamespaceStats-shaped rows of (documents, tokens)."""
    return [SimpleNamespace(counts=SimpleNamespace(documents=d, tokens=t)) for d, t in counts]


@pytest.mark.parametrize("stats, existed, line", [
    (_stats(), False, "a new, empty file"),
    (_stats((3, 9)), False, "a new, empty file"),  # (cannot happen: no file, nothing in it)
    (_stats(), True, "no namespaces yet"),
    (_stats((1, 1)), True, "1 namespace, 1 document, 1 token"),
    (_stats((0, 0)), True, "1 namespace, 0 documents, 0 tokens"),
    (_stats((2, 30), (1_000, 2_500_000)), True, "2 namespaces, 1,002 documents, 2,500,030 tokens"),
])
def test_the_start_up_line_says_what_the_file_holds(stats, existed, line):
    assert holdings(stats, existed) == line


def test_a_writer_says_whether_its_file_is_new_or_what_it_holds(tmp_path, caplog):
    db = str(tmp_path / "not-yet" / "w.db")  # a directory that does not exist: a mistyped path, say
    with caplog.at_level("INFO", logger="sssd.server"):
        server = EmbeddedServer(ServerConfig.of(db=db, port=0)).start()
        with DatastoreClient(server.address) as c:
            c.create_namespace("ns", 100)
            c.ingest("ns", [("a", [1, 2, 3]), ("b", [4, 5])])
        server.stop()
        EmbeddedServer(ServerConfig.of(db=db, port=0)).start().stop()
        EmbeddedServer(ServerConfig.of(db=db, port=0, max_live_tokens=0, namespace_lookup_rate=2500)).start().stop()
    lines = [r.getMessage() for r in caplog.records if "serving on" in r.getMessage()]
    assert len(lines) == 3
    assert f"writer, db {db}: a new, empty file; at most {auto_live_tokens():,} live tokens" in lines[0]
    assert f"writer, db {db}: 1 namespace, 2 documents, 5 tokens; at most" in lines[1]
    assert "5 tokens; no cap on live tokens; lookups at most 2500 contexts/s per namespace, auth off" in lines[2]


def test_an_embedded_server_stopped_from_two_threads_stops_once(tmp_path):
    """(A second stop() while the first ran called into the loop the first had closed.)"""
    for i in range(4):
        server = EmbeddedServer(ServerConfig.of(db=str(tmp_path / f"s{i}.db"), port=0, grace_s=0.1)).start()
        errors = []

        def stop():
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 (any failure fails the test below)
                errors.append(exc)

        threads = [threading.Thread(target=stop) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and not server._thread.is_alive() and server.loop.is_closed()
        server.stop()  # and once more, after


def test_in_flight_calls_drain_before_close(tmp_path):
    server = EmbeddedServer(ServerConfig.of(db=str(tmp_path / "d.db"), port=0, grace_s=5)).start()
    client = DatastoreClient(server.address)
    client.create_namespace("ns", 100)
    results = []

    def writer():
        for i in range(200):
            try:
                client.ingest("ns", [(f"w{i}", [1, 2, 3])])
                results.append(i)
            except grpc.RpcError:
                break

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.2)
    server.stop()
    t.join()
    client.close()
    ds = Datastore(DatastoreConfig(db=str(tmp_path / "d.db")))
    ns = ds.namespace("ns")
    assert results and all(ns.has_document(f"w{i}") for i in results)
    ds.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    server = EmbeddedServer(ServerConfig.of(db=str(tmp_path_factory.mktemp("m") / "m.db"), port=0)).start()
    with DatastoreClient(server.address) as c:
        c.create_namespace("ns", 1000)
        c.ingest("ns", [("keep", [1, 2, 3, 4])])
        c.snapshot()  # queryable now, not at the next background flush
    yield server
    server.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blobs=st.lists(st.binary(max_size=64), max_size=5),
    namespace=st.sampled_from(["ns", "", "missing", "x" * 300]),
    ids=st.lists(st.text(max_size=20), max_size=3),
    depth=st.integers(0, 1 << 31),
    max_nodes=st.integers(0, 1 << 31),
)
def test_malformed_requests_never_crash_or_change_data(shared_server, blobs, namespace, ids, depth, max_nodes):
    with DatastoreClient(shared_server.address) as c:
        calls = [
            lambda: c.stub.Lookup(pb.LookupRequest(namespace=namespace, contexts=b"".join(blobs),
                                                   context_lengths=[len(b) for b in blobs],
                                                   params=pb.LookupParams(depth=depth, max_nodes=max_nodes)), timeout=5),
            lambda: c.stub.Ingest(pb.IngestRequest(namespace=namespace, documents=[
                pb.TokenDocument(id=i, tokens=b + b"\x00\x00\x00\x00\xff\xff\xff\x7f") for i, b in zip(ids, blobs)]), timeout=5),
            lambda: c.stub.DeleteDocuments(pb.DeleteDocumentsRequest(namespace=namespace, ids=ids), timeout=5),
        ]
        for call in calls:
            try:
                call()
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                      grpc.StatusCode.RESOURCE_EXHAUSTED), exc
        stats = c.stats("ns").namespaces[0]
        assert stats.documents == 1 and stats.tokens == 4  # nothing changed the stored data
        assert c.lookup("ns", [np.array([1, 2, 3])])[0].tokens.tolist() == [4]


@pytest.mark.parametrize("flags,message", [
    # a second server must not start (gRPC would share the port and split the calls between two databases)
    (["--port", "{port}"], "cannot listen on 127.0.0.1:{port}: address already in use"),
    # found before the datastore loads (it was found after, and named by its errno alone)
    (["--port", "0", "--metrics-port", "{port}"], "cannot listen on 127.0.0.1:{port} (--metrics-port): address already in use"),
    # one port for both: gRPC took it, then /metrics failed with "[Errno 98] Address already in use" alone
    (["--port", "{port}", "--metrics-port", "{port}"], "--metrics-port {port} is also --port: /metrics needs a port"),
    # port 0 was not checked: gRPC's refusal came with a C-core log line
    (["--port", "0", "--host", "999.1.1.1"], "cannot listen on 999.1.1.1:0: "),
])
def test_a_busy_port_or_bad_host_is_a_one_line_error(server, tmp_path, flags, message):
    import subprocess
    import sys

    port = server.address.rsplit(":", 1)[1]
    db = tmp_path / "second.db"
    r = subprocess.run([sys.executable, "-m", "sssd.cli", "serve", "--db", str(db)] + [f.format(port=port) for f in flags],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines()  # (gRPC's C core logs "E1206 18:45:10 ...")
              if "error" in line.lower() or "Traceback" in line or re.match(r"[EF]\d{4} ", line)]
    assert len(errors) == 1 and errors[0].startswith("sssd: error: " + message.format(port=port)), r.stderr
    assert not db.exists()  # refused before anything was opened


def test_an_embedded_server_that_fails_to_start_leaves_no_loop_running(server, tmp_path):
    """(Its event-loop thread ran on, one per failed try, and its loop was never closed.)"""
    port = int(server.address.rsplit(":", 1)[1])
    failed = EmbeddedServer(ServerConfig.of(db=str(tmp_path / "second.db"), port=port))
    with pytest.raises(OSError, match="address already in use"):
        failed.start()
    assert not failed._thread.is_alive() and failed.loop.is_closed()
    failed.stop()  # (a stop after a failed start is no error)


def test_a_db_path_through_a_file_is_a_one_line_error(tmp_path):
    """--db's directory is created when missing; where a part of its path is a file, the error says
    so in one line (it read "[Errno 17] File exists: ...", mkdir's words)."""
    import subprocess
    import sys

    (tmp_path / "plain").write_text("a file")
    db = tmp_path / "plain" / "sub" / "s.db"
    r = subprocess.run([sys.executable, "-m", "sssd.cli", "serve", "--db", str(db), "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [f"sssd: error: --db {db}: cannot create the directory {db.parent} "
                      f"({tmp_path / 'plain'} is a file, not a directory)"], r.stderr
