"""Read replicas on loopback: real servers, a writer and replicas following it over Follow."""

import logging
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from client_sdk.transport.remote import DatastoreClient
from datastore_service.replication import ChangeLog
from datastore_service.core import Document, NamespaceSpec
from sssd_wire.types import LookupParams
from tests.test_service_lifecycle import health_status

EXACT = LookupParams(min_match=4, max_match=4)


def wait_for(check, timeout_s: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        time.sleep(0.01)


def serving(address: str) -> bool:
    return health_status(address) == health_pb2.HealthCheckResponse.SERVING


def occurrences(client, namespace: str, context) -> int:
    return client.lookup(namespace, [context], EXACT)[0].occurrences


def ingest_delete_drop_seen(w, r, fresh: list[int]) -> float:
    """An ingest, a delete and a drop (of "gone") on the writer, each seen on the replica
    within a second; returns the seconds the ingest took to show."""
    t = time.monotonic()
    w.ingest("alpha", [("fresh", fresh)])
    wait_for(lambda: occurrences(r, "alpha", fresh[:4]) == 1, 1.0, "ingest on the replica")
    seen_after = time.monotonic() - t
    # an id given twice (it failed as INTERNAL after SQLite had deleted it, and no replica heard of it)
    assert w.delete("alpha", ["fresh", "fresh"]) == ["fresh"]
    wait_for(lambda: occurrences(r, "alpha", fresh[:4]) == 0, 1.0, "delete on the replica")
    w.drop_namespace("gone")
    wait_for(lambda: [n.name for n in r.list_namespaces()] == ["alpha"], 1.0, "drop on the replica")
    return seen_after


@pytest.fixture
def writer(server_factory, tmp_path):
    return server_factory(db=str(tmp_path / "writer.db"))


def replica_of(server_factory, tmp_path, writer, name="replica", **knobs):
    replica = server_factory(db=str(tmp_path / f"{name}.db"), follow=writer.address, **knobs)
    wait_for(lambda: serving(replica.address), what=f"{name} SERVING")
    return replica


def alpha_and_gone(w, rng, vocab: int, max_tokens: int, docs: int) -> None:
    """On the writer: namespace "alpha" holding ``docs`` random documents, and an empty "gone"."""
    w.create_namespace("alpha", vocab, max_tokens=max_tokens)
    w.create_namespace("gone", 10)
    w.ingest("alpha", [(f"old{i}", rng.integers(0, vocab, 100)) for i in range(docs)])


def test_a_replica_copies_then_follows_every_change_within_a_second(server_factory, tmp_path, writer):
    rng = np.random.default_rng(0)
    with DatastoreClient(writer.address) as w:
        alpha_and_gone(w, rng, 1000, 2000, 5)
        replica = replica_of(server_factory, tmp_path, writer)  # the full copy: what existed before it started
        with DatastoreClient(replica.address) as r:
            assert [n.name for n in r.list_namespaces()] == ["alpha", "gone"]
            assert r.stats("alpha").namespaces[0].documents == 5
            seen_after = ingest_delete_drop_seen(w, r, [7, 8, 9, 10, 11, 12])  # then each change within a second
            # retention evicts on the writer; the replica mirrors it instead of evicting by itself
            w.ingest("alpha", [(f"new{i}", rng.integers(0, 1000, 100)) for i in range(20)])
            wait_for(lambda: r.stats("alpha").namespaces[0].documents == w.stats("alpha").namespaces[0].documents,
                     2.0, "retention mirrored")
            assert r.stats("alpha").namespaces[0].tokens == w.stats("alpha").namespaces[0].tokens == 2000
    assert seen_after < 1.0


def test_a_replica_refuses_writes_and_names_the_writer(server_factory, tmp_path, writer):
    replica = replica_of(server_factory, tmp_path, writer)
    with DatastoreClient(replica.address) as r:
        for call in (lambda: r.create_namespace("x", 10), lambda: r.ingest("x", [("a", [1])]),
                     lambda: r.drop_namespace("x"), lambda: r.delete("x", ["a"])):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert f"read replica of {writer.address}" in err.value.details()


def test_a_replica_restarted_or_behind_gets_a_full_copy(server_factory, tmp_path, writer):
    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
        replica = replica_of(server_factory, tmp_path, writer)
        replica.stop()
        w.ingest("alpha", [("b", [5, 6, 7, 8, 9])])  # while it is down
        w.delete("alpha", ["a"])
        again = replica_of(server_factory, tmp_path, writer)  # same --db: reset, then the copy
        with DatastoreClient(again.address) as r:
            assert occurrences(r, "alpha", [5, 6, 7, 8]) == 1 and occurrences(r, "alpha", [1, 2, 3, 4]) == 0


def test_the_change_log_keeps_a_bounded_tail():
    log = ChangeLog(max_tokens=10)
    log.created(NamespaceSpec("a", 100))
    for i in range(5):
        log.added("a", [Document(f"d{i}", np.arange(4, dtype=np.int32))])
    assert log.position == 6
    assert [e.position for e in log.since(4)] == [5, 6]
    assert log.since(6) == []
    assert log.since(0) is None  # 24 tokens were added, 10 are kept: a follower at 0 needs a full copy
    for i in range(100):  # deletes count too: the log stays bounded whatever the changes are
        log.deleted("a", [f"x{i}"])
    assert len(log.since(log.position - 10)) == 10 and log.since(log.position - 11) is None


def test_a_writer_without_a_change_log_refuses_followers(server_factory, tmp_path):
    writer = server_factory(db=str(tmp_path / "w.db"), replication_log_tokens=0)
    replica = server_factory(db=str(tmp_path / "r.db"), follow=writer.address)
    time.sleep(1.0)
    assert not serving(replica.address)  # it never gets a copy, so it never reports SERVING
    with grpc.insecure_channel(writer.address) as ch:
        from sssd_wire.v1 import datastore_pb2 as pb
        from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc

        with pytest.raises(grpc.RpcError) as err:
            next(pb_grpc.DatastoreStub(ch).Follow(pb.FollowRequest(), timeout=5))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "replication is off" in err.value.details()


def test_a_client_spreads_lookups_over_replicas_and_survives_one_killed(server_factory, tmp_path, writer):
    from client_sdk.transport.breaker import CircuitBreaker
    from client_sdk.transport.source import RemoteSource
    from sssd import serve_process

    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", list(range(50)))])
    proc, address = serve_process.start_server(str(tmp_path / "killed.db"), "--follow", writer.address)
    try:
        wait_for(lambda: serving(address), what="replica SERVING")
        both = f"ipv4:{writer.address},{address}"
        with DatastoreClient(both, timeout_s=2) as c:
            source = RemoteSource(c, "alpha", LookupParams(), CircuitBreaker(), timeout_s=0.5)
            before = writer.server.servicer.metrics.lookup_contexts._value.get()
            for step in range(40):
                source.request(step, [[1, 2, 3, 4]])
                assert source.collect(step, [[1, 2, 3, 4]], 1.0) is not None
            on_writer = writer.server.servicer.metrics.lookup_contexts._value.get() - before
            assert 10 <= on_writer <= 30  # round robin: about half each
            proc.kill()
            proc.wait()
            answered = 0
            for step in range(40, 140):  # no step raises; lookups go on through the writer
                source.request(step, [[1, 2, 3, 4]])
                answered += source.collect(step, [[1, 2, 3, 4]], 1.0) is not None
                time.sleep(0.005)
            assert answered >= 90, source.stats
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_feedback_goes_to_the_writer_when_lookups_go_to_a_replica(server_factory, tmp_path, writer):
    from client_sdk.runtime import build_speculator

    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("seed", [1, 2, 3])])
        replica = replica_of(server_factory, tmp_path, writer)
        spec = build_speculator(address=replica.address, namespace="alpha", fixed_budget=4, feedback=True,
                                feedback_address=writer.address, vocab_size=100)
        spec.feedback.submit("req-1", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
        assert spec.feedback.client.address == writer.address and spec.feedback.owns_client
        spec.close()
        assert w.stats("alpha").namespaces[0].documents == 2  # stored by the writer...
        with DatastoreClient(replica.address) as r:  # ...and followed by the replica
            wait_for(lambda: occurrences(r, "alpha", [9, 8, 7, 6]) == 1, 1.0, "feedback on the replica")


def test_feedback_to_the_servers_lookups_spread_over_is_warned(server_factory, tmp_path, writer, caplog):
    """(With replicas among them and no feedback address, every batch was refused, found only then.)"""
    from client_sdk.runtime import build_speculator

    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
    replica = replica_of(server_factory, tmp_path, writer)
    both = f"ipv4:{writer.address},{replica.address}"
    for feedback_address, warned in ((None, 1), (writer.address, 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sssd.sdk"):
            spec = build_speculator(address=both, namespace="alpha", fixed_budget=4, feedback=True,
                                    feedback_address=feedback_address, vocab_size=100)
        spec.close()
        assert sum("name the writer in feedback_address" in r.getMessage() for r in caplog.records) == warned


def test_a_followed_writer_shuts_down_without_waiting_out_its_grace(server_factory, tmp_path):
    writer = server_factory(db=str(tmp_path / "w.db"), grace_s=30.0)
    replica_of(server_factory, tmp_path, writer)
    t = time.monotonic()
    writer.stop()
    assert time.monotonic() - t < 5.0  # the Follow stream ended; the drain did not wait 30 s


def test_lookups_over_one_stream_equal_unary_ones_and_fail_when_it_breaks(server_factory, tmp_path, writer):
    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", list(range(50))), ("b", list(range(20, 70)))])
        w.compact("alpha")
        contexts = [[20, 21, 22, 23], [1, 2, 3, 4], [99, 98]]
        unary = w.lookup_future("alpha", contexts, flat=False).result(timeout=5)
    with DatastoreClient(writer.address, lookup_stream=True) as s:
        pending = [s.lookup_future("alpha", contexts, flat=False) for _ in range(20)]  # pipelined, answered in order
        for fut in pending:
            got = fut.result(timeout=5)
            assert [(t.match_length, t.occurrences, t.tokens.tolist()) for t in got] == \
                   [(t.match_length, t.occurrences, t.tokens.tolist()) for t in unary]
        writer.stop()
        with pytest.raises(Exception):  # the stream broke: its lookup fails instead of hanging
            s.lookup_future("alpha", contexts, flat=False).result(timeout=10)


def test_a_replica_of_a_secured_writer_needs_an_admin_token(server_factory, tmp_path, auth_file, caplog):
    """... and a replica without one, or with one of too little scope, says which setting it needs."""
    writer = server_factory(db=str(tmp_path / "w.db"), auth_file=auth_file)
    with DatastoreClient(writer.address, token="t-admin") as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
    denied = server_factory(db=str(tmp_path / "denied.db"), follow=writer.address, follow_token="t-lookup")
    tokenless = server_factory(db=str(tmp_path / "tokenless.db"), follow=writer.address)
    replica = server_factory(db=str(tmp_path / "r.db"), follow=writer.address, follow_token="t-admin",
                             auth_file=auth_file)
    wait_for(lambda: serving(replica.address), what="replica SERVING")
    with DatastoreClient(replica.address, token="t-lookup") as r:  # the replica enforces the same tokens
        assert occurrences(r, "alpha", [1, 2, 3, 4]) == 1
    with DatastoreClient(replica.address) as anonymous:
        with pytest.raises(grpc.RpcError) as err:
            anonymous.list_namespaces()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not serving(denied.address) and not serving(tokenless.address)  # a lookup-only token may not follow
    assert ("PERMISSION_DENIED: 'worker' may not admin; retrying (following takes a token with the admin "
            'scope over every namespace, "*")') in caplog.text
    assert ("UNAUTHENTICATED: missing bearer token; retrying (the writer has tokens: give this replica one of its "
            "admin tokens, --follow-token or SSSD_FOLLOW_TOKEN)") in caplog.text


def test_a_replica_whose_token_is_revoked_stops_following(server_factory, tmp_path, auth_file):
    """The writer's auth file reloaded (SIGHUP) without the replica's admin token: its open Follow
    stream ends at the writer's next batch and cannot open again, so no later change reaches it."""
    import json
    from pathlib import Path

    writer = server_factory(db=str(tmp_path / "w.db"), auth_file=auth_file)
    entries = json.loads(Path(auth_file).read_text())["tokens"]
    Path(auth_file).write_text(json.dumps({"tokens": entries + [{**entries[2], "name": "ops2", "token": "t-ops2"}]}))
    writer.server.reload()
    with DatastoreClient(writer.address, token="t-ops2") as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
        replica = server_factory(db=str(tmp_path / "r.db"), follow=writer.address, follow_token="t-admin")
        wait_for(lambda: serving(replica.address), what="replica SERVING")
        with DatastoreClient(replica.address) as r:
            assert occurrences(r, "alpha", [1, 2, 3, 4]) == 1
            Path(auth_file).write_text(json.dumps({"tokens": [e for e in entries if e["token"] != "t-admin"]
                                                  + [{**entries[2], "name": "ops2", "token": "t-ops2"}]}))
            writer.server.reload()
            w.ingest("alpha", [("b", [6, 7, 8, 9])])
            time.sleep(1.5)  # (a change reaches a following replica well within a second)
            assert occurrences(r, "alpha", [6, 7, 8, 9]) == 0 and occurrences(r, "alpha", [1, 2, 3, 4]) == 1


def test_a_replica_follows_a_writer_over_tls(server_factory, tmp_path, caplog):
    """--follow-tls-ca: the writer serves TLS (its certificate the CA the replica trusts), the
    replica catches up and follows a change within a second; without the CA it never serves,
    and its warning names --follow-tls-ca (gRPC's own words are only "Socket closed")."""
    from tests.test_service_rpcs import _pair

    cert, key = _pair(tmp_path, "w")
    writer = server_factory(db=str(tmp_path / "w.db"), tls_cert=cert, tls_key=key)
    address = f"127.0.0.1:{writer.server.port}"
    with DatastoreClient(address, tls_ca=cert) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", [1, 2, 3, 4, 5])])
        plaintext = server_factory(db=str(tmp_path / "p.db"), follow=address)
        replica = server_factory(db=str(tmp_path / "r.db"), follow=address, follow_tls_ca=cert)
        wait_for(lambda: serving(replica.address), what="replica SERVING")
        with DatastoreClient(replica.address) as r:
            assert occurrences(r, "alpha", [1, 2, 3, 4]) == 1
            w.ingest("alpha", [("b", [6, 7, 8, 9])])
            wait_for(lambda: occurrences(r, "alpha", [6, 7, 8, 9]) == 1, 1.0, "a change over TLS")
    assert not serving(plaintext.address)  # a plaintext follower of a TLS writer never catches up
    assert "Socket closed; retrying (a server that serves TLS closes plaintext connections this way: does it need " \
           "--follow-tls-ca?)" in caplog.text


@pytest.mark.parametrize("sizes,expected", [
    ([], []),
    ([1, 1, 1], [[1, 1, 1]]),
    ([3 << 20, 2 << 20, 1], [[3 << 20], [2 << 20, 1]]),  # about 4M tokens per batch
    ([9 << 20], [[9 << 20]]),  # one change bigger than a batch travels alone
    ([1] * 300, [[1] * 256, [1] * 44]),  # at most 256 changes per batch
])
def test_change_batches_are_bounded(sizes, expected):
    from datastore_service.replication import _batches

    assert _batches(sizes, lambda n: n) == expected


def test_a_replica_does_not_relay(server_factory, tmp_path, writer):
    replica = replica_of(server_factory, tmp_path, writer)
    with grpc.insecure_channel(replica.address) as ch:
        from sssd_wire.v1 import datastore_pb2 as pb
        from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc

        with pytest.raises(grpc.RpcError) as err:
            next(pb_grpc.DatastoreStub(ch).Follow(pb.FollowRequest(), timeout=5))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "follow the writer itself" in err.value.details()


def test_a_replica_reports_its_lag_on_metrics(server_factory, tmp_path, writer):
    import re
    import urllib.request

    replica = server_factory(db=str(tmp_path / "r.db"), follow=writer.address, metrics_port=0)
    wait_for(lambda: serving(replica.address), what="replica SERVING")
    time.sleep(1.5)  # past a heartbeat
    url = f"http://127.0.0.1:{replica.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    lag = float(re.search(r"^sssd_replica_lag_seconds (\S+)$", text, re.M).group(1))
    assert 0 <= lag < 1.5  # heartbeats about every second keep it fresh
    assert re.search(r"^sssd_replica_reconnects 0\.0$", text, re.M)


def test_a_recopy_is_laid_over_what_the_replica_serves(tmp_path):
    """A replica whose writer restarted keeps every document it can while the copy streams in;
    at its end the copy's content is exactly the writer's (conflicts replaced, extras gone)."""
    from datastore_service.datastore import Datastore, DatastoreConfig
    from datastore_service.replication import Applier
    from sssd_wire.v1 import datastore_pb2 as pb

    def added(ns, docs):
        return pb.Change(added=pb.IngestRequest(namespace=ns, documents=[
            pb.TokenDocument(id=i, tokens=np.asarray(t, dtype="<i4").tobytes()) for i, t in docs]))

    def created(ns):
        return pb.Change(created=pb.Namespace(name=ns, vocab_size=100))

    ds = Datastore(DatastoreConfig(db=str(tmp_path / "r.db")), mirror=True)
    apply = Applier(ds)
    apply(pb.ChangeBatch(reset=True, copying=True, changes=[created("alpha"), created("old")]))
    apply(pb.ChangeBatch(copying=True, changes=[added("alpha", [("keep", [1, 2, 3]), ("stale", [4, 5]),
                                                                ("changed", [6, 7])])]))
    apply(pb.ChangeBatch(changes=[]))  # the first copy ends
    # the writer restarts: a new copy, page by page
    apply(pb.ChangeBatch(reset=True, copying=True, changes=[created("alpha")]))
    apply(pb.ChangeBatch(copying=True, changes=[added("alpha", [("keep", [1, 2, 3]), ("changed", [9, 9]),
                                                                ("new", [8, 8])])]))
    ns = ds.namespace("alpha")
    assert {"keep", "stale", "new"} <= set(ns.document_ids())  # still served while the copy runs
    assert ds.namespace_names() == ["alpha", "old"]
    apply(pb.ChangeBatch(changes=[pb.Change(deleted=pb.DeleteDocumentsRequest(namespace="alpha", ids=["new"]))]))
    assert ds.namespace_names() == ["alpha"]  # not in the copy: dropped when it ended
    assert sorted(ds.namespace("alpha").document_ids()) == ["changed", "keep"]  # then the change after it
    assert ds.store.stored_document("alpha", "changed").tolist() == [9, 9]  # the writer's tokens won
    ds.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_cancelled_lookup_does_not_break_the_next_ones(writer, stream):
    with DatastoreClient(writer.address) as w:
        w.create_namespace("alpha", 100)
        w.ingest("alpha", [("a", list(range(50)))])
        w.compact("alpha")  # queryable now, not at the next background flush
    with DatastoreClient(writer.address, lookup_stream=stream) as c:
        for _ in range(5):  # a caller that gave up on an answer (RemoteSource does, when it is misaligned)
            c.lookup_future("alpha", [[1, 2, 3, 4]], flat=True).cancel()
        later = [c.lookup_future("alpha", [[1, 2, 3, 4]], flat=False) for _ in range(3)]
        assert all(f.result(timeout=10)[0].occurrences == 1 for f in later)
