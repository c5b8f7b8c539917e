"""Every RPC against a real server on port 0, with real channels."""

import asyncio
import os
import re
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sssd_wire.codec import encode_tokens, lookup_request, tries_from_proto
from sssd_wire.errors import InvalidArgument
from sssd_wire.types import LookupParams
from sssd_wire.v1 import datastore_pb2 as pb

DOCS = [("a", [1, 2, 3, 4, 5]), ("b", [1, 2, 3, 9]), ("c", [7, 1, 2, 3, 4, 6])]


def wait_flushed(server, ns, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(s.n_docs - s.n_dead for s in server.server.servicer.ds.namespace(ns).segments) >= n:
            return
        time.sleep(0.01)
    raise AssertionError("documents never became queryable")


@pytest.fixture
def loaded(server, client):
    client.create_namespace("alpha", 10, "fp-1")
    r = client.ingest("alpha", DOCS)
    assert (r.added, r.duplicates) == (3, 0)
    wait_flushed(server, "alpha", 3)
    return client


def test_lookup_equals_core(server, loaded):
    trees = loaded.lookup("alpha", [np.array([1, 2, 3, 4]), np.array([9, 9, 3])], LookupParams(depth=2))
    core = server.server.servicer.ds.lookup("alpha", [np.array([1, 2, 3, 4]), np.array([9, 9, 3])], LookupParams(depth=2))
    for got, want in zip(trees, core):
        assert np.array_equal(got.tokens, want.tokens) and np.array_equal(got.parents, want.parents)
        assert np.array_equal(got.counts, want.counts) and got.match_length == want.match_length
    assert trees[0].match_length == 4 and sorted(trees[0].tokens.tolist()) == [5, 6]


def test_a_quiet_server_looks_up_on_its_loop_and_hands_lookups_to_the_pool_once_they_overlap(server, loaded):
    import threading

    servicer = server.server.servicer
    ds = servicer.ds
    core, threads, held, release = ds.lookup_packed, [], threading.Event(), threading.Event()

    def recording(ns, ctx, offs, params):
        threads.append(threading.current_thread().name)
        if ctx[0] == 8:  # the held call
            held.set()
            assert release.wait(10)
        return core(ns, ctx, offs, params)

    ds.lookup_packed = recording
    big = LookupParams(sample_budget=64)  # 100 contexts x 64 samples: above the always-inline size
    contexts = [np.array([1, 2, 3])] * 100
    assert loaded.lookup("alpha", contexts, big)[0].match_length == 3
    assert threads == ["sssd-embedded"]  # quiet: on the event loop, no thread hop
    servicer._inline_s, servicer._inline_at = 1.0, time.monotonic()  # inline lookups kept the loop busy
    loaded.lookup("alpha", contexts, big)
    assert threads[-1].startswith("sssd-worker")
    # one lookup held in the pool: another one that arrives meanwhile goes to the pool too
    servicer._inline_s, servicer._inline_at = 1.0, time.monotonic()
    first = loaded.lookup_future("alpha", [np.array([8, 1, 2])] + contexts[1:], big)
    assert held.wait(10)
    servicer._inline_s = 0.0
    assert loaded.lookup("alpha", contexts, big)[0].match_length == 3
    assert threads[-1].startswith("sssd-worker") and servicer._pooled == 1
    release.set()
    assert first.result(timeout=10)[1].match_length == 3
    assert servicer._pooled == 0
    servicer._inline_s, servicer._inline_at = 1.0, time.monotonic()
    small = loaded.lookup("alpha", contexts[:10], big)  # always on the loop, however busy
    assert threads[-1] == "sssd-embedded" and small[0].match_length == 3


def test_every_error_kind_has_its_status_code():
    from datastore_service.interceptors import STATUS
    from sssd_wire.errors import Kind

    assert {kind: STATUS[kind].name for kind in Kind} == {kind: kind.name for kind in Kind}


def test_lookup_future_and_stream(loaded):
    fut = loaded.lookup_future("alpha", [np.array([2, 3])])
    assert fut.result(timeout=10)[0].match_length == 2
    reqs = [lookup_request("alpha", [np.array([1, 2])], LookupParams(), request_id=i) for i in range(5)]
    responses = list(loaded.stub.LookupStream(iter(reqs), timeout=10))
    assert [r.request_id for r in responses] == list(range(5))
    assert all(tries_from_proto(r).trees()[0].match_length == 2 for r in responses)


def test_ingest_is_idempotent_and_stream_summarises(server, loaded):
    again = loaded.ingest("alpha", DOCS[:2])
    assert (again.added, again.duplicates, list(again.duplicate_ids)) == (0, 2, ["a", "b"])
    summary = loaded.ingest_stream("alpha", [[("s1", [1, 1])], [], [("s2", [2, 2, 2]), ("a", DOCS[0][1])]])
    # (the empty batch left out)
    assert (summary.requests, summary.added, summary.duplicates, summary.tokens) == (2, 2, 1, 5)
    # an id reused with other tokens is refused by itself; the batch's other documents land
    mixed = loaded.ingest("alpha", [("a", [1]), ("s3", [3, 3])])
    assert (mixed.added, list(mixed.conflict_ids)) == (1, ["a"])


def test_a_stream_refused_midway_says_what_it_stored(server, loaded):
    """The messages before a refused one stay stored; the error says so (alone it read as if
    nothing had been), and the first message's error is the message's own."""
    with pytest.raises(grpc.RpcError) as err:
        loaded.ingest_stream("alpha", [[("m1", [1, 1])], [("m2", [2, 2])], [("m3", [99])]])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().endswith("(message 3 of the stream; the 2 before it were stored, 2 documents "
                                        "added: sending them again skips them by id)")
    assert loaded.ingest("alpha", [("m1", [1, 1]), ("m2", [2, 2])]).duplicates == 2
    with pytest.raises(grpc.RpcError) as err:
        loaded.ingest_stream("alpha", [[("m4", [99])]])
    assert "of the stream" not in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        loaded.ingest_stream("alpha", [[("m5", [1])], [("m6", [99])]])
    assert err.value.details().endswith("(message 2 of the stream; the one before it was stored, 1 document added: "
                                        "sending them again skips them by id)")


def test_a_stream_whose_batches_fail_on_the_client_stores_those_before_and_says_so(server, loaded):
    """A malformed batch, or an error in the caller's own iterator, ends the stream cleanly: what
    was sent is stored and the error is the caller's own, naming it (it reached the caller as
    "UNKNOWN: Exception iterating requests!")."""
    with pytest.raises(ValueError, match=r"^documents must be \(id, tokens\) pairs, not str x \(the stream stopped "
                       r"there: the 2 message\(s\) before it were stored, 2 document\(s\) added; sending them again"):
        loaded.ingest_stream("alpha", [[("c1", [1, 1])], [("c2", [2, 2])], ("x", [3])])
    assert loaded.ingest("alpha", [("c1", [1, 1]), ("c2", [2, 2])]).duplicates == 2

    def failing():
        yield [("c3", [1, 2])]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="^disk gone") as err:
        loaded.ingest_stream("alpha", failing())
    assert err.value.__notes__ == ["the stream stopped there: the 1 message(s) before it were stored, 1 document(s) "
                                   "added; sending them again skips them by id"]
    assert loaded.ingest("alpha", [("c3", [1, 2])]).duplicates == 1


def test_admin_rpcs(server, loaded):
    stats = loaded.stats()
    (ns,) = stats.namespaces
    assert (ns.name, ns.documents, ns.tokens, ns.vocab_size, ns.tokenizer_fingerprint) == ("alpha", 3, 15, 10, "fp-1")
    assert ns.resident_bytes > 0 and ns.segments >= 1
    loaded.ingest("alpha", [("d", [5, 5])])
    assert loaded.snapshot() >= 0
    assert loaded.delete("alpha", ["a"]) == ["a"]
    assert loaded.compact("alpha") >= 0
    assert loaded.stats("alpha").namespaces[0].documents == 3
    assert [n.name for n in loaded.list_namespaces()] == ["alpha"]
    loaded.create_namespace("beta", 100, max_tokens=1000)
    assert [n.name for n in loaded.list_namespaces()] == ["alpha", "beta"]
    loaded.drop_namespace("beta")
    assert [n.name for n in loaded.list_namespaces()] == ["alpha"]
    assert server.server.servicer.ds.check_integrity() == ""


def code_of(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


ERRORS = [
    # token bytes not a multiple of 4
    (lambda c: c.stub.Lookup(pb.LookupRequest(namespace="alpha", contexts=b"\x01\x02\x03", context_lengths=[1])), grpc.StatusCode.INVALID_ARGUMENT, "not a whole number"),
    # lengths that do not add up to the packed tokens
    (lambda c: c.stub.Lookup(pb.LookupRequest(namespace="alpha", contexts=b"\x01\x00\x00\x00", context_lengths=[2])), grpc.StatusCode.INVALID_ARGUMENT, "sum to 2"),
    # context token out of the namespace's vocabulary
    (lambda c: c.lookup("alpha", [np.array([10])]), grpc.StatusCode.INVALID_ARGUMENT, "outside [0, 10)"),
    # document with a negative token id (sent raw: the SDK refuses it before sending)
    (lambda c: c.stub.Ingest(pb.IngestRequest(namespace="alpha", documents=[
        pb.TokenDocument(id="x", tokens=np.array([-3], "<i4").tobytes())])), grpc.StatusCode.INVALID_ARGUMENT, "token id -3"),
    # empty document
    (lambda c: c.ingest("alpha", [("x", [])]), grpc.StatusCode.INVALID_ARGUMENT, "is empty"),
    # ingest with no documents
    (lambda c: c.ingest("alpha", []), grpc.StatusCode.INVALID_ARGUMENT, "no documents"),
    # unknown namespace
    (lambda c: c.lookup("nope", [np.array([1])]), grpc.StatusCode.NOT_FOUND, "'nope'"),
    # delete of an unknown document
    (lambda c: c.delete("alpha", ["zz"]), grpc.StatusCode.NOT_FOUND, "unknown document"),
    # namespace created twice
    (lambda c: c.create_namespace("alpha", 10), grpc.StatusCode.ALREADY_EXISTS, "already exists"),
    # bad namespace spec
    (lambda c: c.create_namespace("gamma", 1), grpc.StatusCode.INVALID_ARGUMENT, "vocab_size 1"),
    # bad lookup parameters (sent raw: the client's LookupParams refuses to build them)
    (lambda c: c.stub.Lookup(pb.LookupRequest(namespace="alpha", contexts=encode_tokens([1]), context_lengths=[1],
                                              params=pb.LookupParams(depth=100)), timeout=5),
     grpc.StatusCode.INVALID_ARGUMENT, "depth 100"),
]


@pytest.mark.parametrize("call,code,text", ERRORS)
def test_error_statuses(server, loaded, call, code, text):
    before = loaded.stats("alpha").namespaces[0]
    got_code, details = code_of(lambda: call(loaded))
    assert got_code == code and text in details
    after = loaded.stats("alpha").namespaces[0]
    assert (after.documents, after.tokens) == (before.documents, before.tokens)


def test_caps_are_resource_exhausted(server_factory):
    server = server_factory(max_lookup_contexts=2, max_ingest_documents=2, max_message_bytes=1 << 16)
    from client_sdk.transport.remote import DatastoreClient

    with DatastoreClient(server.address) as c:
        c.create_namespace("alpha", 10)
        assert code_of(lambda: c.lookup("alpha", [np.array([1])] * 3))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert code_of(lambda: c.ingest("alpha", [("a", [1]), ("b", [1]), ("c", [1])]))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        big = np.zeros(1 << 15, dtype=np.int32)
        assert code_of(lambda: c.ingest("alpha", [("big", big)]))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("steps,admitted", [
    # (seconds since the start, cost) per call: whether each is let through; rate 10 per second
    ([(0, 4), (0, 4), (0, 4), (0, 1)], [True, True, True, False]),  # the third overdraws, the fourth waits
    ([(0, 30), (0.5, 1), (1.9, 1), (2.1, 1)], [True, False, False, True]),  # one large call: 2 s of debt to refill
    ([(0, 10), (0, 1), (0, 1), (0.05, 1)], [True, False, False, True]),  # a refused call costs nothing
    ([(0, 10), (100, 10), (100, 1)], [True, True, False]),  # an idle tenant's bucket holds one second, no more
])
def test_a_namespaces_lookup_rate_lets_calls_through_while_its_bucket_is_not_empty(steps, admitted):
    from datastore_service.rates import LookupRates

    rates = LookupRates(10)
    assert [rates.admit("a", cost, t) for t, cost in steps] == admitted
    assert rates.admit("b", 1, steps[-1][0])  # (each namespace has its own bucket)


@pytest.mark.parametrize("steps,admitted", [
    # (seconds since the start, cost, background) per call; rate 10 per second: a background call
    # is let through only if half a second's worth (5) is left after it
    ([(0, 5, True), (0, 1, True), (0, 5, False)], [True, False, True]),  # 10 - 5 = 5 left, then 5 - 1 < 5
    ([(0, 6, True)], [False]),  # larger than half a second's worth: never, even on a full bucket
    ([(0, 8, False), (0, 1, True), (0.7, 1, True)], [True, False, True]),  # the steps first; refilled to 9
    ([(0, 4, True), (0, 1, True), (0, 6, False), (0, 1, False)], [True, True, True, False]),  # the steps' share is intact
])
def test_a_background_lookup_takes_only_what_leaves_half_a_second_of_the_rate(steps, admitted):
    from datastore_service.rates import LookupRates

    rates = LookupRates(10)
    assert [rates.admit("a", cost, t, background) for t, cost, background in steps] == admitted


@pytest.mark.parametrize("default,own,name,calls,admitted", [
    (10, {"big": 100}, "big", [(0, 60), (0, 40), (0, 1)], [True, True, False]),  # its own second's worth
    (10, {"big": 100}, "other", [(0, 10), (0, 1)], [True, False]),  # the server's rate
    (10, {"free": 0}, "free", [(0, 10_000)] * 3, [True] * 3),  # 0: no limit for it
    (0, {"capped": 10}, "capped", [(0, 10), (0, 1)], [True, False]),  # only the file's namespaces are held
    (0, {"capped": 10}, "other", [(0, 10_000)] * 3, [True] * 3),
    (10, {"x": None}, "x", [(0, 10), (0, 1)], [True, False]),  # an entry of ingest only: the server's lookup rate
])
def test_a_namespace_with_a_rate_of_its_own_has_a_bucket_of_that_size(default, own, name, calls, admitted):
    from datastore_service.rates import LookupRates

    entries = {n: {"lookups": r} if r is not None else {"ingest": 5.0} for n, r in own.items()}
    rates = LookupRates(default, entries, "rates.json")
    assert [rates.admit(name, cost, t) for t, cost in calls] == admitted
    assert rates.rate_of(name) == (own.get(name) if own.get(name) is not None else default)


@pytest.mark.parametrize("contexts,samples,cost", [(1, 64, 1), (3, 128, 3), (3, 256, 6), (2, 4096, 64)])
def test_a_lookup_costs_its_contexts_more_when_it_samples_more(contexts, samples, cost):
    from datastore_service.rates import LookupRates

    assert LookupRates.cost(contexts, samples) == cost


def test_a_tenant_over_its_lookup_rate_is_refused_and_the_others_are_not(server_factory):
    """--namespace-lookup-rate: one namespace's flood of lookups is refused (RESOURCE_EXHAUSTED,
    counted on /metrics) beyond its rate; another namespace's lookups on the same server are all
    answered, and the flooding one is served again after its bucket refills."""
    from client_sdk.transport.remote import DatastoreClient

    server = server_factory(namespace_lookup_rate=100)
    contexts = [np.array([i % 7 + 1]) for i in range(20)]
    with DatastoreClient(server.address, timeout_s=5) as c:
        for name in ("noisy", "quiet"):
            c.create_namespace(name, 10)
            c.ingest(name, [("d", [1, 2, 3, 4, 5, 6, 7, 8])])
        started, outcomes = time.monotonic(), []
        for _ in range(40):  # 800 contexts asked as fast as the server answers
            try:
                outcomes.append(len(c.lookup("noisy", contexts)) == 20 or "short")
            except grpc.RpcError as exc:
                outcomes.append((exc.code(), exc.details()))
        took = time.monotonic() - started
        refused = len(outcomes) - outcomes.count(True)
        assert 1 <= refused and 40 - refused <= (100 * took + 100) / 20 + 1  # one second's worth, then the rate
        assert set(outcomes) - {True} == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "namespace 'noisy' is over its lookup "
                                           "rate on this server (100 contexts/s, --namespace-lookup-rate): draft "
                                           "without the datastore a while")}
        assert all(len(c.lookup("quiet", contexts)) == 20 for _ in range(4))
        time.sleep(0.3)  # (30 contexts' worth refilled)
        assert len(c.lookup("noisy", contexts)) == 20
    over = server.server.metrics.over_rate.labels("all")._value.get()
    assert over == refused


def test_background_lookups_come_after_the_steps_under_a_lookup_rate(server_factory):
    """A worker's single-token table (RemoteSource.fetch: LookupRequest.background) is refused
    with Busy once a lookup would leave the namespace less than half a second of its rate (its
    steps' own lookups are still answered then), counted apart on /metrics; it is served again as
    the bucket refills. (It drew the bucket below zero: the worker's own steps were refused.)"""
    from client_sdk.transport.remote import DatastoreClient
    from client_sdk.transport.source import RemoteSource
    from client_sdk.types import Busy
    from sssd_wire.types import LookupParams

    server = server_factory(namespace_lookup_rate=100)
    contexts = [np.array([i % 7 + 1]) for i in range(40)]
    source = RemoteSource(DatastoreClient(server.address, timeout_s=5), "t", LookupParams(depth=2), owns_client=True)
    with DatastoreClient(server.address, timeout_s=5) as c:
        c.create_namespace("t", 10)
        c.ingest("t", [("d", [1, 2, 3, 4, 5, 6, 7, 8])])
        assert len(source.fetch(contexts)) == 40  # 100 -> 60 left
        with pytest.raises(Busy, match="namespace 't' has no room for background lookups on this server now "
                                       "\\(100 contexts/s, --namespace-lookup-rate: its steps come first\\): "
                                       "ask again later"):
            source.fetch(contexts)  # (60 - 40 < 50)
        assert len(c.lookup("t", contexts)) == 40  # the steps: still served (60 -> 20)
        time.sleep(0.9)
        assert len(source.fetch(contexts)) == 40
    source.close()
    metrics = server.server.metrics
    assert metrics.background_deferred.labels("all")._value.get() == 1
    assert metrics.over_rate.labels("all")._value.get() == 0


@pytest.mark.parametrize("text,problem", [
    ("{", "Expecting property name"),
    ("[1]", "want a JSON object of namespaces and their rates"),
    ('{"a b": {"lookups": 5}}', "'a b' is no namespace name"),
    ('{"a": 5}', "the entry of 'a' is 5: want an object of \"lookups\" and/or \"ingest\""),
    ('{"a": {}}', "the entry of 'a' is {}: want an object"),
    ('{"a": {"lookup": 5}}', "the entry of 'a' is {'lookup': 5}: want an object"),
    ('{"a": {"lookups": -1}}', "the lookups rate of 'a' is -1, not a finite number of contexts per second"),
    ('{"a": {"ingest": Infinity}}', "the ingest rate of 'a' is inf, not a finite number of tokens per second"),
    ('{"a": {"lookups": "5"}}', "the lookups rate of 'a' is '5', not a finite number"),
    ('{"a": {"ingest": true}}', "the ingest rate of 'a' is True, not a finite number"),
])
def test_a_namespace_rates_file_that_is_not_one_is_refused_in_one_line(tmp_path, text, problem):
    from datastore_service.server import ServerConfig

    path = tmp_path / "rates.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"^--namespace-rates-file {path}: .*{problem}") as info:
        ServerConfig.of(namespace_rates_file=str(path))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=f"--namespace-rates-file {tmp_path / 'none.json'}: .*No such file"):
        ServerConfig.of(namespace_rates_file=str(tmp_path / "none.json"))


def test_a_namespace_with_a_rate_of_its_own_is_held_to_it(server_factory, tmp_path):
    """--namespace-rates-file: a namespace's own lookup rate in place of --namespace-lookup-rate
    (0: none for it), in Stats, named in its refusals; the others keep the server's rate. Read
    again by a reload (SIGHUP), which a file that does not load leaves as it was."""
    from client_sdk.transport.remote import DatastoreClient

    rates = tmp_path / "rates.json"
    rates.write_text('{"big": {"lookups": 1000}, "free": {"lookups": 0}, "absent": {"lookups": 7}, '
                     '"slow": {"ingest": 50}}')
    server = server_factory(namespace_lookup_rate=100, namespace_rates_file=str(rates))
    contexts = [np.array([i % 7 + 1]) for i in range(20)]

    def refused(c, name: str, calls: int = 30) -> list:
        out = []
        for _ in range(calls):  # 600 contexts asked as fast as the server answers
            try:
                c.lookup(name, contexts)
            except grpc.RpcError as exc:
                out.append(exc.details())
        return out

    def stats(c) -> dict:
        return {n.name: (n.lookup_rate, n.ingest_rate) for n in c.stats().namespaces}

    with DatastoreClient(server.address, timeout_s=5) as c:
        for name in ("small", "big", "free", "slow"):
            c.create_namespace(name, 10)
            c.ingest(name, [("d", [1, 2, 3, 4, 5, 6, 7, 8])])
        assert stats(c) == {"small": (100, 0), "big": (1000, 0), "free": (0, 0), "slow": (100, 50)}
        small = refused(c, "small")
        assert small and set(small) == {"namespace 'small' is over its lookup rate on this server (100 contexts/s, "
                                        "--namespace-lookup-rate): draft without the datastore a while"}
        assert refused(c, "big") == [] and refused(c, "free") == []
        assert set(refused(c, "big", 60)) == {f"namespace 'big' is over its lookup rate on this server (1000 "
                                              f"contexts/s, its entry in --namespace-rates-file {rates}): draft "
                                              "without the datastore a while"}
        rates.write_text('{"small": {"lookups": 5000, "ingest": 9}}')
        server.server.reload()
        assert stats(c) == {"small": (5000, 9), "big": (100, 0), "free": (100, 0), "slow": (100, 0)}
        time.sleep(0.3)
        assert refused(c, "small", 10) == []  # (its bucket refills to 5,000 now)
        rates.write_text('{"small": {"lookups": -5}}')
        server.server.reload()  # (said in the log; the rates before stay)
        assert stats(c) == {"small": (5000, 9), "big": (100, 0), "free": (100, 0), "slow": (100, 0)}


def test_sighup_reads_the_namespace_rates_file_again(tmp_path):
    from client_sdk.transport.remote import DatastoreClient
    from tests.signals import served, sighup_until

    rates = tmp_path / "rates.json"
    rates.write_text('{"t": {"lookups": 300}}')
    with served(tmp_path, "--namespace-rates-file", str(rates), "--namespace-ingest-rate", "1e6") as (proc, address):
        with DatastoreClient(address, timeout_s=5) as c:
            c.create_namespace("t", 10)
            rate = lambda _: (c.stats("t").namespaces[0].lookup_rate, c.stats("t").namespaces[0].ingest_rate)  # noqa: E731
            assert rate(0) == (300, 1e6)
            rates.write_text('{"t": {"lookups": 40, "ingest": 70}}')
            sighup_until(proc, rate, {0: (40, 70)})
            rates.write_text("{")
            sighup_until(proc, rate, {0: (40, 70)})
    text = (tmp_path / "serve.log").read_text()
    assert f"ingests at most 1e+06 tokens/s per namespace; own rates for 1 namespace ({rates})" in text
    assert f"SIGHUP: namespace rates file {rates} reloaded: its rates for 1 namespace(s) in force" in text
    assert ("SIGHUP: namespace rates file not reloaded, the rates before stay in force: --namespace-rates-file "
            f"{rates}") in text


@pytest.mark.parametrize("calls,admitted", [
    # (seconds since the start, tokens, longest wait) per call: the wait each is given, None = refused;
    # rate 10 tokens per second, a bucket of one second
    ([(0, 10, 5), (0, 10, 5), (0, 10, 5)], [0, 0, 1.0]),  # the second overdraws; the third waits for the debt
    ([(0, 30, 5), (0, 1, 5), (0, 1, 1)], [0, 2.0, None]),  # 2 s of debt, then 2.1 s: over 1 s, not charged
    ([(0, 30, 5), (0, 1, 1), (1.5, 1, 1)], [0, None, 0.5]),  # (the refused call cost nothing)
    ([(0, 10, 0), (100, 10, 0), (100, 1, 0)], [0, 0, 0]),  # an idle namespace's bucket holds one second
])
def test_an_ingest_over_its_namespaces_rate_waits_its_turn(calls, admitted):
    from datastore_service.rates import IngestRates

    rates = IngestRates(10)
    waits = [rates.reserve("a", tokens, t, longest) for t, tokens, longest in calls]
    assert [w if w is None else round(w, 6) for w in waits] == admitted
    assert IngestRates(0).reserve("a", 10**9, 0, 0) == 0.0  # no limit


@pytest.mark.parametrize("calls,released,after", [
    # rate 10 tokens per second: (seconds, tokens) reserved, then (seconds, tokens) given back,
    # then the wait of one more token at the time of the release
    ([(0, 30), (0, 10)], (0.5, 10), 1.5),  # the second's 10 back: 2 s of debt, less the 0.5 s since
    ([(0, 10)], (0, 10), 0.0),  # back to a full bucket
    ([(0, 5)], (0, 10), 0.0),  # never over one second's worth: the wait after it is still none
])
def test_a_cancelled_ingest_gives_its_turn_back(calls, released, after):
    from datastore_service.rates import IngestRates

    rates = IngestRates(10)
    for t, tokens in calls:
        assert rates.reserve("a", tokens, t, 5) is not None
    rates.release("a", released[1], released[0])
    assert round(rates.reserve("a", 1, released[0], 5), 6) == after
    assert rates._buckets["a"][0] <= 10 - 1
    IngestRates(0).release("a", 10, 0)  # no limit: nothing to give back


def test_a_namespace_over_its_ingest_rate_waits_on_a_stream_and_is_refused_past_a_unary_deadline(server_factory):
    """--namespace-ingest-rate: a stream's messages wait their turn (everything stored, at the
    rate), a unary Ingest waits up to its deadline, then is refused without being charged; the
    other namespaces' ingests do not wait; waits and refusals on /metrics."""
    from client_sdk.transport.remote import DatastoreClient

    server = server_factory(namespace_ingest_rate=1000)
    docs = lambda prefix, n: [(f"{prefix}{i}", list(range(1, 101))) for i in range(n)]  # noqa: E731  (100 tokens each)
    with DatastoreClient(server.address, timeout_s=10) as c:
        for name in ("bulk", "other"):
            c.create_namespace(name, 200)
        started = time.monotonic()
        summary = c.ingest_stream("bulk", [docs("s", 10) for _ in range(5)])  # (ids repeat: 10 added, 5,000 tokens)
        took = time.monotonic() - started
        # 1,000 in the bucket, 1,000 overdrawn by the message that emptied it, then 3,000 at 1,000/s
        assert summary.added == 10 and 2.7 < took < 8
        started = time.monotonic()
        c.ingest("other", docs("o", 30))
        assert time.monotonic() - started < 1.0
        with pytest.raises(grpc.RpcError) as info:
            c.ingest("bulk", docs("u", 10), timeout_s=0.5)  # (its turn comes in about 1 s)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == ("namespace 'bulk' is over its ingest rate on this server (1000 tokens/s, "
                                        "--namespace-ingest-rate): send it again later, or on a stream, which waits "
                                        "its turn")
        assert c.ingest("bulk", docs("u", 10), timeout_s=5).added == 10  # waits, within its deadline
    metrics = server.server.metrics
    assert metrics.ingests_over_rate.labels("all")._value.get() == 1
    assert metrics.ingest_waited.labels("all")._value.get() > 1.5


def test_an_ingest_cancelled_while_it_waits_for_its_turn_gives_the_turn_back(server_factory):
    """A client gone while its ingest waits for the namespace's rate: nothing is stored, and the
    next ingest does not wait for the tokens that never came in."""
    from client_sdk.transport.remote import DatastoreClient
    from sssd_wire.codec import documents_to_proto

    server = server_factory(namespace_ingest_rate=1000)
    docs = lambda prefix, n: [(f"{prefix}{i}", list(range(1, 101))) for i in range(n)]  # noqa: E731  (100 tokens each)
    with DatastoreClient(server.address, timeout_s=10) as c:
        c.create_namespace("bulk", 200)
        started = time.monotonic()
        c.ingest("bulk", docs("a", 30))  # 1,000 in the bucket: 2,000 overdrawn
        waiting = c.stub.Ingest.future(documents_to_proto("bulk", docs("b", 20)), timeout=10)  # 2,000 more
        time.sleep(0.3)
        assert waiting.cancel()
        c.ingest("bulk", docs("c", 1), timeout_s=10)
        # its turn after the first call's debt (2 s from the start), not after the cancelled one's too (4 s)
        assert time.monotonic() - started < 3.0
        assert c.stats("bulk").namespaces[0].documents == 31  # the cancelled call stored nothing
    assert server.server.metrics.ingest_waited.labels("all")._value.get() < 3.0  # the time waited, not reserved


def test_internal_errors_do_not_leak(server, loaded, monkeypatch):
    def boom():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(server.server.servicer.ds, "stats", boom)
    code, details = code_of(lambda: loaded.stats())
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details


def test_health_and_reflection(server):
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "sssd.datastore.v1.Datastore"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {"sssd.datastore.v1.Datastore", "grpc.health.v1.Health"} <= names
    channel.close()


@pytest.mark.parametrize("per_namespace", [False, True])
def test_metrics_endpoint(server_factory, per_namespace):
    import urllib.request

    from client_sdk.transport.remote import DatastoreClient

    # the service on every interface, /metrics on loopback only unless told otherwise
    server = server_factory(metrics_port=0, host="0.0.0.0", metrics_namespaces=per_namespace, max_live_tokens=5000)
    assert server.server.config.metrics_host == "127.0.0.1"
    with DatastoreClient(f"127.0.0.1:{server.server.port}") as c:
        c.create_namespace("alpha", 10)
        c.ingest("alpha", [("a", [1, 2])])
        code_of(lambda: c.ingest("nope", [("a", [1])]))  # a failed call is timed too
    # nobody called Stats: the namespace gauges are read at scrape time
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'sssd_rpcs_total{code="OK",method="Ingest"} 1.0' in text
    assert 'sssd_rpc_seconds_count{method="Ingest"} 2.0' in text
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text
    assert "sssd_maintenance_failures 0.0" in text and "sssd_max_live_tokens 5000.0" in text
    if per_namespace:
        assert 'sssd_namespace_tokens{namespace="alpha"} 2.0' in text
    else:  # tenants' names stay off the unauthenticated endpoint
        assert 'sssd_namespace_tokens{namespace="all"} 2.0' in text and "alpha" not in text


def test_garbage_collector_pauses_are_timed_while_the_metrics_endpoint_serves(server_factory):
    import gc
    import urllib.request

    server = server_factory(metrics_port=0)
    hook = server.server.metrics._on_gc
    assert hook in gc.callbacks
    gc.collect()  # a full collection of this (the test's) process
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5).read().decode()
    counts = {line.split("}")[0]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("sssd_gc_pause_seconds_count")}
    assert counts['sssd_gc_pause_seconds_count{generation="2"'] >= 1
    server.stop()
    assert hook not in gc.callbacks  # the hook is process-wide: a stopped server removes it


@pytest.mark.parametrize("error,code", [
    ("database or disk is full", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("disk I/O error", grpc.StatusCode.UNAVAILABLE),
])
def test_storage_errors_are_one_clear_code_and_one_log_line(server, client, caplog, error, code):
    import sqlite3

    client.create_namespace("alpha", 10)
    store = server.server.servicer.ds.store

    def failing(*args, **kwargs):
        raise sqlite3.OperationalError(error)

    store.insert_documents = failing
    with caplog.at_level("ERROR", logger="sssd.rpc"):
        got, details = code_of(lambda: client.ingest("alpha", [("a", [1, 2])]))
    assert got == code and error in details
    assert "Traceback" not in caplog.text and caplog.text.count(error) == 1
    assert client.stats().namespaces[0].documents == 0  # nothing acknowledged, nothing indexed


def test_an_answer_past_the_message_limit_is_refused_in_one_line_and_a_client_asks_in_parts(server_factory, caplog):
    """An answer larger than --max-message-bytes is RESOURCE_EXHAUSTED saying so (gRPC refused it as
    "Sent message larger than max" and logged a traceback); a client sends a lookup in parts whose
    answers fit its own limit."""
    import logging

    from client_sdk.transport.aio import AsyncDatastoreClient
    from client_sdk.transport.remote import DatastoreClient, in_parts

    server = server_factory(max_message_bytes=1 << 16)
    rng = np.random.default_rng(0)
    contexts = [rng.integers(0, 4, 2).tolist() for _ in range(40)]
    params = LookupParams(min_match=1, sample_budget=512, depth=8, max_nodes=256)
    with DatastoreClient(server.address, timeout_s=30) as c:
        c.create_namespace("big", 4)
        c.ingest("big", [(f"d{i}", rng.integers(0, 4, 2000).tolist()) for i in range(4)])
        c.snapshot()
        with caplog.at_level(logging.ERROR):
            with pytest.raises(grpc.RpcError) as refused:
                c.lookup("big", contexts, params)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert re.fullmatch(r"the answer to 40 contexts is about [\d,]+ bytes, over --max-message-bytes 65,536: ask fewer "
                            r"contexts or fewer max_nodes per call", refused.value.details())
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        alone = [t.tokens.tolist() for t in c.lookup("big", contexts[:2], params)]
        assert sum(map(len, alone)) > 256  # (answers near max_nodes: the whole call's was far past 64 KB)

    async def in_parts_of_the_clients_limit():
        async with AsyncDatastoreClient(server.address, timeout_s=30, max_message_bytes=1 << 17) as c:
            return [t.tokens.tolist() for t in await c.lookup("big", contexts, params)]

    assert len(in_parts(contexts, 4096, 256, 1 << 17)) > 1
    assert asyncio.run(in_parts_of_the_clients_limit())[:2] == alone


@pytest.mark.parametrize("contexts, most, max_nodes, answer_bytes, sizes", [
    (10, 4, 0, 64 << 20, [4, 4, 2]),  # the server's --max-lookup-contexts alone
    (4096, 4096, 64, 64 << 20, [4096]),  # the SDK's tries fit one answer
    (4096, 4096, 4096, 64 << 20, [1363, 1363, 1363, 7]),  # (one answer was 72 MB)
    (3, 4096, 4096, 1 << 16, [1, 1, 1]),  # at least one context a call, whatever the limit
])
def test_a_lookup_goes_in_parts_whose_answers_fit(contexts, most, max_nodes, answer_bytes, sizes):
    from client_sdk.transport.remote import in_parts

    assert [len(p) for p in in_parts(list(range(contexts)), most, max_nodes, answer_bytes)] == sizes


def test_a_huge_lookup_is_refused_before_it_is_decoded(loaded):
    """Only each context's last 16 tokens are read: megabytes of context are refused outright."""
    big = np.zeros(300_000, dtype="<i4")
    req = pb.LookupRequest(namespace="alpha", contexts=big.tobytes(), context_lengths=[big.shape[0]])
    code, details = code_of(lambda: loaded.stub.Lookup(req, timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "context tokens in one lookup" in details


def test_dropping_namespaces_while_others_list_them(server):
    import threading

    from client_sdk.transport.remote import DatastoreClient

    stop, errors = threading.Event(), []

    def churn():
        with DatastoreClient(server.address) as c:
            i = 0
            while not stop.is_set():
                c.create_namespace(f"n{i}", 10)
                c.drop_namespace(f"n{i}")
                i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    with DatastoreClient(server.address) as c:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for call in (c.stats, c.list_namespaces):
                try:
                    call()
                except grpc.RpcError as exc:
                    errors.append(exc.code())
    stop.set()
    thread.join()
    assert errors == []


def test_an_undecodable_body_is_invalid_argument_without_log_noise(server, caplog):
    with grpc.insecure_channel(server.address) as ch:
        raw = ch.unary_unary("/sssd.datastore.v1.Datastore/Lookup", request_serializer=None,
                             response_deserializer=None)
        with caplog.at_level("WARNING"):
            code, details = code_of(lambda: raw(b"\xff\xff\xff\xff garbage", timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in details
    assert "Traceback" not in caplog.text


def _pair(tmp_path, name: str, san: str = "IP:127.0.0.1") -> tuple[str, str]:
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_a_tls_key_others_can_read_is_said(tmp_path, caplog):
    from datastore_service.server import _tls_pair

    cert, key = _pair(tmp_path, "a")
    with caplog.at_level("WARNING", logger="sssd.server"):
        _tls_pair(cert, key)  # openssl writes its keys 0600
        assert caplog.messages == []
        os.chmod(key, 0o644)
        assert _tls_pair(cert, key)[0].startswith(b"-----BEGIN PRIVATE KEY")
    assert caplog.messages == [f"--tls-key {key} is readable by everyone (mode 0o644): chmod 600 it "
                               "(a Kubernetes Secret: defaultMode 0400, or 0440 with an fsGroup)"]


def test_tls_serves_with_a_good_pair_and_names_a_bad_one(server_factory, tmp_path):
    from client_sdk.transport.remote import DatastoreClient

    cert, key = _pair(tmp_path, "a")
    other_cert, _ = _pair(tmp_path, "b")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    server = server_factory(tls_cert=cert, tls_key=key)
    with DatastoreClient(f"127.0.0.1:{server.server.port}", tls_ca=cert, timeout_s=10) as c:
        c.create_namespace("alpha", 10)
        assert [n.name for n in c.stats().namespaces] == ["alpha"]
    for tls_cert, tls_key, expected in [
        (str(tmp_path / "missing.crt"), key, "--tls-cert .*missing.crt: no such file"),
        (str(tmp_path / "junk.pem"), str(tmp_path / "junk.pem"), "not a PEM certificate chain and its private key"),
        (other_cert, key, "KEY_VALUES_MISMATCH"),  # a key that is not the certificate's
    ]:
        with pytest.raises((OSError, ValueError), match=expected):
            server_factory(tls_cert=tls_cert, tls_key=tls_key, db=str(tmp_path / "other.db"))


@pytest.mark.parametrize("text,tls,hint", [
    ("UNAVAILABLE: failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
     False, " (a server that serves TLS closes plaintext connections this way: does it need --x?)"),
    ("UNAVAILABLE: failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
     True, ""),  # (TLS already: something else closed it)
    ("UNAVAILABLE: ...: Tls handshake failed (TSI_PROTOCOL_FAILURE): ...:WRONG_VERSION_NUMBER: ...", True,
     " (the server speaks plaintext: leave out --x)"),
    ("UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
     False, ""),
    ("NOT_FOUND: namespace 'a' does not exist", False, ""),
    ("UNAVAILABLE: ...: Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, got frame type 79)", False,
     " (an HTTP/1 server answered, not a gRPC one: a --metrics-port?)"),
    ("UNIMPLEMENTED: Method not found!", False, " (the gRPC server there is not an sssd datastore, or one older "
                                                "than this client)"),
])
def test_a_server_of_the_wrong_kind_is_named(text, tls, hint):
    from sssd_wire.errors import connection_hint

    assert connection_hint(text, tls, "--x") == hint


def test_a_client_of_the_wrong_kind_for_its_server_is_told_which_setting(server_factory, tmp_path, capsys):
    """gRPC says "Socket closed" to a plaintext client of a TLS server, and a TLS client of a
    plaintext one gets WRONG_VERSION_NUMBER: the CLI names --tls-ca. The /metrics port taken for
    the gRPC one, and another service's gRPC server, are named too."""
    from sssd.cli import main

    cert, key = _pair(tmp_path, "a")
    tls = server_factory(tls_cert=cert, tls_key=key)
    plain = server_factory(db=str(tmp_path / "plain.db"), metrics_port=0)
    for flags, said in [(["--address", f"127.0.0.1:{tls.server.port}"], "does it need --tls-ca?)"),
                        (["--address", f"127.0.0.1:{plain.server.metrics_port}"], "not a gRPC one: a --metrics-port?)"),
                        (["--address", plain.address, "--tls-ca", cert], "(the server speaks plaintext: leave out "
                                                                         "--tls-ca)")]:
        assert main(["stats", *flags, "--timeout", "5"]) == 1
        err = capsys.readouterr().err
        assert err.count("sssd: error: ") == 1 and err.rstrip().endswith(said), err
    other = grpc.server(futures.ThreadPoolExecutor(1))  # a gRPC server of another service
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        assert main(["stats", "--address", f"127.0.0.1:{port}", "--timeout", "5"]) == 1
        assert capsys.readouterr().err.rstrip().endswith("(the gRPC server there is not an sssd datastore, or one "
                                                         "older than this client)")
    finally:
        other.stop(0)
    # as a command of its own: one line, without gRPC's C core's "I1207 ... Handshake failed" beside it
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    r = subprocess.run([sys.executable, "-m", "sssd.cli", "stats", "--address", plain.address, "--tls-ca", cert,
                        "--timeout", "5"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_speculator_drafts_and_feeds_back_over_tls(server_factory, tmp_path):
    """build_speculator's tls_ca (the SGLang worker's SSSD_TLS_CA): lookups and feedback both go
    over TLS (a worker could only speak plaintext, its bearer token in the clear)."""
    from client_sdk.drafting.config import SpeculatorConfig
    from client_sdk.runtime import build_speculator
    from client_sdk.transport.remote import DatastoreClient

    cert, key = _pair(tmp_path, "a")
    server = server_factory(tls_cert=cert, tls_key=key)
    address = f"127.0.0.1:{server.server.port}"
    with DatastoreClient(address, tls_ca=cert, timeout_s=10) as c:
        c.create_namespace("alpha", 10)
        c.ingest("alpha", [("d", [1, 2, 3, 4, 5, 6])])
        c.snapshot()  # (lookups read sealed segments: sealed now, not at the next maintenance round)
    spec = build_speculator(address=address, namespace="alpha", tls_ca=cert, fixed_budget=4, vocab_size=10,
                            feedback=True, config=SpeculatorConfig(prefetch_outcomes=False, lookup_deadline_s=2.0))
    spec.start("r", [9, 1, 2])
    assert spec.draft(["r"])[0].tokens.tolist()[:3] == [3, 4, 5]  # the datastore's, over TLS
    spec.commit("r", [3, 4, 5, 6, 7, 8, 9, 1])
    spec.finish("r")
    spec.close()
    assert spec.remote.stats.used >= 1 and spec.feedback.sent == 1


@pytest.mark.parametrize("doc_id, said", [(5, "document id 5 must be a string, not int"),
                                          (None, "document id None must be a string, not NoneType"),
                                          (b"x", "document id b'x' must be a string, not bytes")])
def test_a_document_id_that_is_not_a_string_is_one_line_before_any_call(doc_id, said):
    """(protobuf's own "bad argument type for built-in operation" named nothing; None went out as "".)"""
    from client_sdk.transport.remote import DatastoreClient

    with DatastoreClient("127.0.0.1:1") as c:
        with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
            c.ingest("ns", [("ok", [1]), (doc_id, [1, 2])])


CONTEXTS = "^contexts must be a sequence of contexts, each a sequence of token ids \\(one context: \\[ids\\]\\)$"


@pytest.mark.parametrize("call, args, said", [
    # one context not in a list: "'int' object is not subscriptable", numpy's "invalid index to scalar variable"
    ("lookup", ([1, 2, 3],), CONTEXTS),
    ("lookup", (np.array([1, 2, 3]),), CONTEXTS),
    ("async lookup", ([1, 2, 3],), CONTEXTS),
    # documents not (id, tokens) pairs: a dict was unpacked into its keys ("document 'id': want ..."),
    # a flat list said "cannot unpack non-iterable int object"
    ("ingest", ([{"id": "a", "tokens": [1]}],), "^documents must be \\(id, tokens\\) pairs, not dict "),
    ("ingest", ([1, 2, 3],), "^documents must be \\(id, tokens\\) pairs, not int 1$"),
    ("async ingest", ([("a", [1], "x")],), "^documents must be \\(id, tokens\\) pairs, not tuple "),
    # one string of ids: each character was deleted as an id ("ab": the documents "a" and "b")
    ("delete", ("ab",), "^ids 'ab' must be a list of document ids, not one string \\(give \\['ab'\\]\\)$"),
    ("delete", ([5],), "^document id 5 must be a string, not int$"),  # (protobuf's "bad argument type ...")
    # a size that is not an integer ('<=' not supported between int and str)
    ("create_namespace", ("100",), "^vocab_size '100' must be an integer, not str$"),
    ("async create_namespace", (100.0,), "^vocab_size 100.0 must be an integer, not float$"),
    ("create_namespace", (100, 5), "^tokenizer_fingerprint must be a string, not int$"),  # (protobuf's words)
])
def test_calls_of_the_wrong_shape_are_one_line_before_any_call(call, args, said):
    import asyncio

    from client_sdk.transport.aio import AsyncDatastoreClient
    from client_sdk.transport.remote import DatastoreClient

    name = call.split()[-1]
    if call.startswith("async"):
        async def go():
            async with AsyncDatastoreClient("127.0.0.1:1") as c:
                await getattr(c, name)("ns", *args)

        with pytest.raises(ValueError, match=said):
            asyncio.run(go())
        return
    with DatastoreClient("127.0.0.1:1") as c:
        with pytest.raises(ValueError, match=said):
            getattr(c, name)("ns", *args)


def test_a_datastore_deletes_no_characters_of_one_string(tmp_path):
    """In process, ``delete(ns, "ab")`` deleted the documents "a" and "b"."""
    from datastore_service.core import Document, NamespaceSpec
    from datastore_service.datastore import Datastore, DatastoreConfig

    ds = Datastore(DatastoreConfig(db=str(tmp_path / "d.db")))
    ds.create_namespace(NamespaceSpec("ns", 10))
    ds.ingest("ns", [Document.of("a", [1]), Document.of("b", [2])])
    with pytest.raises(InvalidArgument, match="^document ids 'ab' must be a list of ids, not one string"):
        ds.delete("ns", "ab")
    assert sorted(ds.namespace("ns").document_ids()) == ["a", "b"]
    ds.close()


@pytest.mark.parametrize("call", ["lookup", "ingest", "create_namespace", "drop_namespace", "stats", "compact", "delete",
                                  "async lookup", "async ingest", "async create_namespace", "async stats"])
@pytest.mark.parametrize("namespace", [5, None, b"ns"])
def test_a_namespace_that_is_not_a_string_is_one_line_before_any_call(call, namespace):
    """(protobuf's own "bad argument type for built-in operation" named neither the field nor the value;
    None went out as "", which the admin calls read as every namespace.)"""
    import asyncio

    from client_sdk.transport.aio import AsyncDatastoreClient
    from client_sdk.transport.remote import DatastoreClient

    said = f"^namespace {re.escape(repr(namespace))} must be a string \\(a namespace's name\\), not {type(namespace).__name__}$"
    args = {"lookup": ([[1, 2]],), "ingest": ([("a", [1])],), "create_namespace": (10,), "delete": (["a"],)}.get(
        call.split()[-1], ())
    if call.startswith("async"):
        async def go():
            async with AsyncDatastoreClient("127.0.0.1:1") as c:
                await getattr(c, call.split()[-1])(namespace, *args)

        with pytest.raises(ValueError, match=said):
            asyncio.run(go())
        return
    with DatastoreClient("127.0.0.1:1") as c:
        with pytest.raises(ValueError, match=said):
            getattr(c, call)(namespace, *args)


def test_sighup_takes_a_renewed_certificate_for_new_connections(tmp_path):
    """A certificate renewed in place (--tls-cert/--tls-key rewritten, then SIGHUP): new connections
    get the new one without a restart; a pair that does not load leaves the one in use (said in the
    log). (A renewal needed a restart of the writer, felt by every replica and worker.)"""
    import shutil

    from client_sdk.transport.remote import DatastoreClient
    from tests.signals import served, sighup_until

    old_cert, old_key = _pair(tmp_path, "old")
    new_cert, new_key = _pair(tmp_path, "new")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)

    def trusted_by(ca: str) -> bool:  # (address: the server's, below)
        with DatastoreClient(address, tls_ca=ca, timeout_s=3) as c:  # a new connection each time
            try:
                c.list_namespaces()
                return True
            except grpc.RpcError:
                return False

    with served(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as (proc, address):
        assert trusted_by(old_cert) and not trusted_by(new_cert)
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        sighup_until(proc, trusted_by, {new_cert: True, old_cert: False})
        cert.write_text("not a certificate\n")
        sighup_until(proc, trusted_by, {new_cert: True, old_cert: False})
    text = (tmp_path / "serve.log").read_text()
    assert "SIGHUP: TLS certificate" in text and "reloaded: new connections get it" in text
    assert "SIGHUP: TLS certificate not reloaded, the one before stays in use: --tls-cert" in text


def test_a_ca_bundle_that_trusts_nothing_is_one_line_before_any_call(tmp_path):
    """gRPC took any bytes as a CA bundle, then failed every call as UNAVAILABLE ("Failed to create
    security handshaker") with a C-level line on stderr; a missing file was a bare errno."""
    from client_sdk.transport.aio import AsyncDatastoreClient
    from client_sdk.transport.remote import DatastoreClient
    from datastore_service.server import ServerConfig

    cert, _ = _pair(tmp_path, "a")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    assert DatastoreClient("127.0.0.1:1", tls_ca=cert).channel is not None
    for path, why in [(tmp_path / "junk.pem", "no PEM certificate in it"), (tmp_path / "none.pem", "No such file"),
                      (tmp_path, "Is a directory")]:
        for make, what in [(lambda: DatastoreClient("127.0.0.1:1", tls_ca=str(path)), "TLS CA bundle"),
                           (lambda: AsyncDatastoreClient("127.0.0.1:1", tls_ca=str(path)), "TLS CA bundle"),
                           (lambda: ServerConfig.of(follow="127.0.0.1:1", follow_tls_ca=str(path)), "--follow-tls-ca")]:
            with pytest.raises(ValueError, match=f"^{what} {re.escape(str(path))}: {why}"):
                make()
