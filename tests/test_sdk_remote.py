"""The SDK against a real datastore server that is healthy, slowed, stopped and restarted."""

import asyncio
import logging
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from client_sdk.transport.breaker import CircuitBreaker
from client_sdk.transport.feedback import FeedbackSink
from client_sdk.transport.remote import DatastoreClient
from client_sdk.transport.source import RemoteSource
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from sssd_wire.types import LookupParams, TrieBatch
from datastore_service.embedded import EmbeddedServer
from datastore_service.server import ServerConfig

TEXT = [7, 1, 2, 3, 4, 5, 6, 8]


@pytest.fixture
def live(server):
    client = DatastoreClient(server.address, timeout_s=5)
    client.create_namespace("ns", 100)
    client.ingest("ns", [(f"d{i}", TEXT) for i in range(3)])
    client.snapshot()
    yield server, client
    client.close()


def speculator(client, deadline=0.5, outcomes=True, **breaker):
    options = LookupParams(min_occurrences=1, depth=9 if outcomes else 8)
    source = RemoteSource(client, "ns", options, CircuitBreaker(**breaker), timeout_s=2.0)
    config = SpeculatorConfig(fixed_budget=4, lookup_deadline_s=deadline, prefetch_outcomes=outcomes)
    return Speculator(config, remote=source), source


def test_outcome_prefetch_serves_the_next_step(live):
    """Zero-wait: the step's likely ends are asked while it verifies; the next step descends
    the trie of the end that happened by its bonus token."""
    _, client = live
    spec, source = speculator(client, deadline=0.0)
    spec.start("r", [9, 1, 2])
    (tree,) = spec.draft(["r"])  # nothing prefetched for a new request: its own text only
    assert len(tree) == 0 and source.stats.requested == 0
    spec.prefetch(["r"])  # while "the GPU" verifies: the only end of an empty draft is "nothing accepted"
    time.sleep(0.2)
    spec.commit("r", [3])  # the bonus token
    (tree,) = spec.draft(["r"])  # "9 1 2" + 3: the datastore's "1 2 3" continues 4 5 6
    assert tree.tokens.tolist()[:3] == [4, 5, 6] and spec.last.match_lengths[0] >= 3
    assert source.stats.used == 1 and spec.counts["arrived"] == 1
    spec.prefetch(["r"])
    time.sleep(0.2)
    spec.commit("r", [4, 5, 8], tree, [0, 1])  # 4 5 accepted, bonus 8: "... 4 5 8" was never seen
    (tree,) = spec.draft(["r"])
    assert spec.counts["prefetched"] == 2 and spec.last.match_lengths[0] == 0


def committed_an_unasked_end(client, deadline: float):
    """A request whose step accepted a token its (empty) draft never had: the prefetch, which
    asked for the draft's ends only, has no answer for the context it ends in."""
    spec, source = speculator(client, deadline=deadline)
    spec.start("r", [9, 1, 2, 9, 1])
    spec.draft(["r"])
    spec.prefetch(["r"])
    time.sleep(0.2)
    spec.commit("r", [5, 6])
    return spec, source


def test_an_end_that_was_not_prefetched_drafts_locally(live):
    _, client = live
    spec, _ = committed_an_unasked_end(client, deadline=0.0)
    (tree,) = spec.draft(["r"])
    assert spec.counts["prefetched"] == 0 and spec.last.match_lengths == [0]


def test_zero_wait_asks_a_steps_cache_fills_in_the_next_steps_own_lookup(live):
    """Zero-wait: the tails a step's drafts found no trie for are asked after the next step's
    likely ends, in the same lookup (one per step, not two); their answers, collected with that
    step's, reach the trie cache at the prefetch after it, where another request ending in the
    same tail finds them."""
    _, client = live
    spec, source = committed_an_unasked_end(client, deadline=0.0)
    spec.draft(["r"])  # "... 9 1 5 6": nothing prefetched for it, and the cache is empty
    missed = {tuple(t[t >= 0]) for t in spec.fills.missed}
    assert (5, 6) in missed
    requested = source.stats.requested
    spec.prefetch(["r"])
    assert source.stats.requested == requested + 1  # the ends and the fills in one lookup
    assert {tuple(t[t >= 0]) for t in spec.fills.asked} == missed and spec.fills.first >= 1
    time.sleep(0.2)
    spec.commit("r", [8])
    spec.draft(["r"])  # collects the answer, fills and all
    hits = spec.cache.hits
    spec.prefetch(["r"])  # stores the fills, then asks this step's
    assert source.stats.requested == requested + 2
    spec.start("q", [3, 3, 5, 6])
    (tree,) = spec.draft(["q"])  # a new request: no prefetched end, but "5 6" is in the cache
    assert spec.cache.hits > hits and tree.tokens.tolist()[:1] == [8]


@pytest.mark.parametrize("asked_early", [True, False])
def test_with_a_deadline_a_missed_end_is_looked_up_then_cached(live, asked_early):
    """A deadline (CPU decoding): an end the prefetch did not cover is looked up, from
    ``committed`` (asked_early) or at the draft itself, waited for, and kept in the trie cache,
    where another request ending in the same tail finds it."""
    _, client = live
    spec, _ = committed_an_unasked_end(client, deadline=1.0)
    if asked_early:
        spec.committed(["r"])
    (tree,) = spec.draft(["r"])  # "... 5 6": the datastore's "5 6" continues with 8
    assert tree.tokens.tolist()[:1] == [8] and spec.last.match_lengths[0] >= 2
    hits = spec.cache.hits
    spec.start("q", [3, 3, 5, 6])
    (tree,) = spec.draft(["q"])
    assert spec.cache.hits > hits and tree.tokens.tolist()[:1] == [8]


def test_zero_wait_never_waits_and_late_answers_count_against_the_breaker(live):
    server, client = live
    server.server.servicer.lookup_delay_s = 0.3
    spec, source = speculator(client, deadline=0.0, threshold=2, cooldown_s=5.0)
    source.late_limit = 2  # two late answers in a row are one failure: four open a breaker of threshold 2
    spec.start("r", [9, 1, 2])
    for token in (3, 4, 5, 6):
        spec.draft(["r"])
        spec.prefetch(["r"])
        spec.commit("r", [token])
        t = time.perf_counter()
        spec.draft(["r"])
        assert time.perf_counter() - t < 0.2  # not the 0.3 s the slowed server takes (slack for a loaded CI box)
        spec.prefetch(["r"])
    assert source.stats.late >= 4 and source.breaker.state == "open"
    time.sleep(0.5)  # the late answers arrive: they must not close the breaker again
    assert source.breaker.state == "open"


def test_a_breaker_opened_by_late_answers_closes_once_the_service_is_fast_again(live, caplog):
    """Zero-wait: the trial call after the cooldown comes back late too, so it reports neither
    success nor failure. The breaker must not stay open on it for good: once the service answers
    in time again, a later trial closes it and the steps use the datastore again. Opening and
    closing are said (a warning the first time), not silent."""
    caplog.set_level(logging.INFO, logger="sssd.sdk")
    server, client = live
    servicer = server.server.servicer
    servicer.lookup_delay_s = 0.3
    spec, source = speculator(client, deadline=0.0, threshold=1, cooldown_s=0.3)  # 4 late in a row open it
    spec.cache = None  # no cache fills: the step's prefetch is the only lookup, the trial among them
    spec.start("r", [9, 1, 2])
    token = iter(range(10_000))

    def step(gpu_s: float) -> None:
        spec.draft(["r"])
        spec.prefetch(["r"])
        time.sleep(gpu_s)
        spec.commit("r", [3 + next(token) % 5])

    for _ in range(100):  # every answer is late: four in a row open it
        if source.breaker.state != "closed":
            break
        step(0.0)
    assert source.breaker.state != "closed", source.stats
    time.sleep(0.35)
    step(0.0)  # the trial, answered late
    step(0.0)
    servicer.lookup_delay_s = 0.0
    deadline = time.monotonic() + 10
    while source.breaker.state != "closed" and time.monotonic() < deadline:
        step(0.05)
    assert source.breaker.state == "closed", source.stats
    used = source.stats.used
    for _ in range(3):
        step(0.05)
    assert source.stats.used > used  # the steps' prefetches are collected in time again
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "breaker open" in r.message]
    assert len(warned) == 1 and "too late to use" in warned[0].message and source.stats.opened >= 1
    assert any("answering in time again" in r.message for r in caplog.records)


def test_a_late_answer_is_cancelled_and_the_service_drops_it(live):
    """Zero-wait never uses a late answer: the call is cancelled, so a service that fell behind
    does not go on working for nobody (here it has not started the lookup), and giving up is
    booked as one late answer, not as a failure of the service."""
    server, client = live
    servicer = server.server.servicer
    servicer.lookup_delay_s = 0.3
    spec, source = speculator(client, deadline=0.0)
    spec.cache = None  # no cache fills: the step's prefetch is the only lookup
    spec.start("r", [9, 1, 2])
    spec.draft(["r"])
    spec.prefetch(["r"])
    spec.commit("r", [3])
    before = servicer.metrics.lookup_contexts._value.get()
    spec.draft(["r"])  # the prefetch has not arrived: given up on, and cancelled at the next
    assert source.stats.late == 1 and source.stats.cancelled == 0  # request (off the step's critical path)
    asked = spec.counts["contexts"]
    spec.prefetch(["r"])
    time.sleep(0.5)  # past the server's delay: a lookup it went on with would have been counted by now
    assert source.stats.cancelled == 1
    assert source.stats.failed == 0 and source.breaker.state == "closed"
    # only the new prefetch was answered
    assert servicer.metrics.lookup_contexts._value.get() == before + spec.counts["contexts"] - asked


def test_a_decode_steps_lookups_start_no_thread_each(live, monkeypatch):
    """One lookup per step with the client idle in between, as a decode worker makes them: a
    sync gRPC channel started a polling thread for each (about 1 ms to issue one here); the
    client's loop thread takes them all."""
    _, client = live
    client.lookup_future("ns", [TEXT[:4]], flat=True).result(timeout=5)  # the loop, started once
    starts = []
    real = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self, *a, **k: (starts.append(self.name), real(self, *a, **k)))
    for _ in range(10):
        batch = client.lookup_future("ns", [TEXT[:4], TEXT[2:6]], flat=True).result(timeout=5)
        assert batch.meta[:, 0].tolist() == [4, 4]
        time.sleep(0.02)  # the step's GPU time: no call in flight
    assert starts == []
    assert client.ready(1.0)


def test_blocking_lookup_never_holds_a_step_past_its_deadline(live):
    server, client = live
    server.server.servicer.lookup_delay_s = 0.3
    spec, source = speculator(client, deadline=0.02, outcomes=False)
    spec.start("r", [9, 1, 2])
    t = time.perf_counter()
    (tree,) = spec.draft(["r"])
    elapsed = time.perf_counter() - t
    assert elapsed < 0.02 + 0.15, elapsed  # its deadline plus a loaded CI box's slack, well short of the 0.3 s lookup
    assert source.stats.late == 1
    spec.commit("r", [3, 4])
    (tree,) = spec.draft(["r"])  # local drafting still works: no remote, no failure
    assert isinstance(tree.tokens, np.ndarray)


def test_blocking_lookup_uses_the_datastore(live):
    _, client = live
    spec, source = speculator(client, outcomes=False)
    spec.start("r", [9, 1, 2])
    (tree,) = spec.draft(["r"])
    assert tree.tokens.tolist()[:2] == [3, 4] and source.stats.used == 1  # what followed "1 2"


def test_stopped_server_opens_the_breaker_then_recovers_after_restart(tmp_path):
    db = str(tmp_path / "r.db")
    server = EmbeddedServer(ServerConfig.of(db=db, port=0)).start()
    port = server.server.port
    client = DatastoreClient(server.address, timeout_s=2)
    client.create_namespace("ns", 100)
    client.ingest("ns", [("d", TEXT)])
    client.snapshot()
    spec, source = speculator(client, deadline=0.2, outcomes=False, threshold=2, cooldown_s=0.3)
    spec.start("r", [9, 1, 2])
    assert spec.draft(["r"])[0].tokens.tolist()[:1] == [3]
    server.stop()
    for _ in range(4):
        t = time.perf_counter()
        spec.draft(["r"])
        assert time.perf_counter() - t < 0.2 + 0.1
    assert source.breaker.state in ("open", "half-open") and source.stats.failed >= 2
    server = EmbeddedServer(ServerConfig.of(db=db, port=port)).start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.35)
        if spec.draft(["r"])[0].tokens.tolist()[:1] == [3]:
            break
    assert source.breaker.state == "closed", "never recovered after the restart"
    client.close()
    server.stop()


@pytest.mark.parametrize("knobs,drop,reason", [
    ({}, True, "NOT_FOUND: namespace 'ns' does not exist"),
    ({"namespace_lookup_rate": 1}, False,  # (the first lookup overdraws the tenant's bucket, the next are refused)
     "RESOURCE_EXHAUSTED: namespace 'ns' is over its lookup rate on this server (1 contexts/s"),
])
def test_the_breaker_names_why_lookups_fail(server_factory, caplog, knobs, drop, reason):
    """A dropped namespace or a revoked token needs the operator, a server down only time, a
    tenant over its rate less asking: the warning that the breaker opened says which ("lookups
    failing" named none)."""
    with DatastoreClient(server_factory(**knobs).address, timeout_s=5) as client:
        client.create_namespace("ns", 100)
        spec, source = speculator(client, deadline=0.2, outcomes=False, threshold=2, cooldown_s=30.0)
        spec.start("r", [9, 1, 2])
        if drop:
            client.drop_namespace("ns")
        with caplog.at_level(logging.WARNING, logger="sssd.sdk"):
            for _ in range(3):
                spec.draft(["r"])
            deadline = time.monotonic() + 5  # (an answer is booked, and the warning said, on gRPC's thread)
            while not [r for r in caplog.records if "breaker open" in r.getMessage()] and time.monotonic() < deadline:
                time.sleep(0.01)
    assert source.breaker.state == "open" and source.stats.failed >= 2  # (a 3rd when an answer's booking came late)
    (warning,) = [r.getMessage() for r in caplog.records if "breaker open" in r.getMessage()]
    assert f"lookups failing ({reason}" in warning


def test_the_breaker_names_the_tls_setting_a_worker_lacks(server_factory, tmp_path, caplog):
    """A worker without SSSD_TLS_CA against a datastore that serves TLS: gRPC says only "Socket
    closed"; the breaker's warning names the setting."""
    from tests.test_service_rpcs import _pair

    cert, key = _pair(tmp_path, "a")
    server = server_factory(tls_cert=cert, tls_key=key)
    with DatastoreClient(f"127.0.0.1:{server.server.port}", timeout_s=5) as client:
        spec, source = speculator(client, deadline=0.5, outcomes=False, threshold=2, cooldown_s=30.0)
        spec.start("r", [9, 1, 2])
        with caplog.at_level(logging.WARNING, logger="sssd.sdk"):
            deadline = time.monotonic() + 10
            while source.breaker.state != "open" and time.monotonic() < deadline:
                spec.draft(["r"])
                time.sleep(0.05)
    assert source.breaker.state == "open"
    assert "Socket closed) (a server that serves TLS closes plaintext connections this way: does it need " \
           "SSSD_TLS_CA?), breaker open" in caplog.text


def test_a_datastore_not_reachable_at_start_up_says_why(server_factory, tmp_path, caplog):
    """A worker's start (RemoteSource.connect) found no connection and said only "not reachable",
    as for a server that is down: one call now says what gRPC says, and what it means."""
    from tests.test_service_rpcs import _pair

    cert, key = _pair(tmp_path, "a")
    server = server_factory(tls_cert=cert, tls_key=key)
    with DatastoreClient(f"127.0.0.1:{server.server.port}", timeout_s=5) as client:
        source = RemoteSource(client, "ns", LookupParams())
        with caplog.at_level(logging.WARNING, logger="sssd.sdk"):
            assert not source.connect(timeout_s=0.5)
    (said,) = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert said.startswith(f"datastore 127.0.0.1:{server.server.port} not reachable within 0.5s (UNAVAILABLE: ")
    assert said.endswith("Socket closed) (a server that serves TLS closes plaintext connections this way: does it "
                         "need SSSD_TLS_CA?); drafting locally until it is")
    with DatastoreClient("127.0.0.1:1", timeout_s=5) as client, caplog.at_level(logging.WARNING, logger="sssd.sdk"):
        caplog.clear()
        assert not RemoteSource(client, "ns", LookupParams()).connect(timeout_s=0.2)  # nothing listens there
    assert "not reachable within 0.2s (UNAVAILABLE: " in caplog.text and "SSSD_TLS_CA" not in caplog.text


@pytest.mark.parametrize("batch", [2, 4, 10, 30])
def test_a_prefetch_stays_within_the_services_cap_on_contexts(server_factory, batch):
    """A service refuses a Lookup of more contexts than its --max-lookup-contexts (4096 by default,
    which ~480 drafted requests' ends passed): every prefetch then failed and the breaker opened.
    Here a cap of 24 over 2-30 requests (3 suffix lengths, up to 4 ends each): fewer ends per
    request, then requests beyond the cap ask nothing; no lookup is refused."""
    server = server_factory(max_lookup_contexts=24)
    with DatastoreClient(server.address, timeout_s=5) as client:
        client.create_namespace("ns", 100)
        client.ingest("ns", [(f"d{i}", TEXT) for i in range(3)])
        client.snapshot()
        source = RemoteSource(client, "ns", LookupParams(min_occurrences=1, depth=9), CircuitBreaker(threshold=1),
                              timeout_s=2.0)
        spec = Speculator(SpeculatorConfig(fixed_budget=4, max_lookup_contexts=24), remote=source)
        rids = [f"r{i}" for i in range(batch)]
        for i, rid in enumerate(rids):
            spec.start(rid, [10 + i, 1, 2])  # (each its own contexts: shared ones are asked once)
        for _ in range(4):
            trees = spec.draft(rids)
            spec.prefetch(rids)
            time.sleep(0.3)  # (answered by the next step: late answers would open this breaker)
            for rid, tree in zip(rids, trees):
                spec.commit(rid, tree.tokens.tolist()[:1] + [7] if len(tree) else [7], tree, [0] if len(tree) else [])
        spec.draft(rids)
        assert source.stats.failed == 0 and source.breaker.state == "closed"
        assert source.stats.used >= 3 and spec.counts["arrived"] > 0
        spec.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("outcomes", [False, True])
def test_blocking_lookups_above_the_services_cap_are_split_not_refused(server_factory, outcomes, stream):
    """With a deadline (blocking lookups; the committed contexts asked after a step) a step asks
    every request's contexts at once: above the service's --max-lookup-contexts (4096 by default,
    ~1,365 requests at 3 suffix lengths) every lookup was refused and the breaker opened. The
    client splits such a lookup into calls within the cap (max_lookup_contexts) and joins their
    answers in order: here a cap of 24 and 30 requests' 90 contexts."""
    server = server_factory(max_lookup_contexts=24)
    with DatastoreClient(server.address, timeout_s=5, lookup_stream=stream, max_lookup_contexts=24) as client:
        client.create_namespace("ns", 100)
        client.ingest("ns", [(f"d{i}", TEXT) for i in range(3)])
        client.snapshot()
        spec, source = speculator(client, deadline=2.0, outcomes=outcomes, threshold=1)
        rids = [f"r{i}" for i in range(30)]
        for i, rid in enumerate(rids):
            spec.start(rid, [10 + i, 1, 2])
        for _ in range(3):
            trees = spec.draft(rids)
            spec.prefetch(rids)
            for rid, tree in zip(rids, trees):
                spec.commit(rid, tree.tokens.tolist()[:1] + [3] if len(tree) else [3], tree, [0] if len(tree) else [])
            spec.committed(rids)
        trees = spec.draft(rids)
        assert source.stats.failed == 0 and source.breaker.state == "closed"
        assert all(t.tokens.tolist()[:1] == [4] for t in trees[:30]), [t.tokens.tolist() for t in trees]
        spec.close()


def test_a_lookup_above_the_cap_is_answered_in_order_by_every_client_call(server_factory):
    """lookup, lookup_batch, lookup_future (flat or trees, unary or streamed) and the asyncio
    client's lookups of more contexts than the cap give what asking each context alone gives, in
    order; a failing part fails the whole (NOT_FOUND) and cancelling it cancels the parts."""
    from client_sdk.transport.aio import AsyncDatastoreClient

    plain = lambda trees: [(tuple(t.tokens.tolist()), tuple(t.parents.tolist()), tuple(t.counts.tolist()),  # noqa: E731
                            t.match_length, t.occurrences, t.sampled) for t in trees]
    server = server_factory(max_lookup_contexts=5)
    contexts = [[t] for t in range(1, 10)] + [[1, 2], [2, 3], [9, 9]]  # 12: parts of 5, 5 and 2
    options = LookupParams(min_occurrences=1, depth=4)
    with DatastoreClient(server.address, timeout_s=5, max_lookup_contexts=5) as client:
        client.create_namespace("ns", 100)
        client.ingest("ns", [("d", TEXT), ("e", [3, 4, 9, 9, 1])])
        client.snapshot()
        alone = plain([client.lookup("ns", [c], options)[0] for c in contexts])
        assert len({t[0] for t in alone}) > 3  # (answers that differ: an order mixed up shows)
        assert plain(client.lookup("ns", contexts, options)) == alone
        assert plain(client.lookup_batch("ns", contexts, options).trees()) == alone
        assert plain(client.lookup_future("ns", contexts, options, flat=True).result(5).trees()) == alone
        assert plain(client.lookup_future("ns", contexts, options).result(5)) == alone
        with pytest.raises(grpc.RpcError) as failed:
            client.lookup_future("missing", contexts, options).result(5)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        with DatastoreClient(server.address, timeout_s=5, lookup_stream=True, max_lookup_contexts=5) as streamed:
            assert plain(streamed.lookup_future("ns", contexts, options).result(5)) == alone
        with DatastoreClient(server.address, timeout_s=5) as over:  # (the default cap, 4096: one call, refused)
            with pytest.raises(grpc.RpcError, match="12 contexts in one lookup, cap 5"):
                over.lookup("ns", contexts, options)

    async def aio():
        async with AsyncDatastoreClient(server.address, timeout_s=5, max_lookup_contexts=5) as c:
            return (await c.lookup("ns", contexts, options))

    assert plain(asyncio.run(aio())) == alone


def test_cancelling_a_lookup_sent_in_parts_cancels_every_part():
    from client_sdk.transport.remote import _joined

    parts = [futures.Future() for _ in range(3)]
    whole = _joined(parts, flat=True)
    parts[0].set_result(TrieBatch.empty(1))
    assert not whole.done() and whole.cancel()
    assert [p.cancelled() for p in parts] == [False, True, True]


@pytest.mark.parametrize("served,used", [(24, 24), (2, 4), (4096, 4096), (8192, 4096)])
def test_a_built_speculator_asks_within_the_servers_cap_on_contexts(server_factory, caplog, served, used):
    """The server says its --max-lookup-contexts (ListNamespaces): a smaller one than the worker's
    SSSD_MAX_LOOKUP_CONTEXTS is taken, said in the log (each worker had to be told it, else a large
    batch's every prefetch was refused); the client sends larger lookups in parts within it."""
    from client_sdk.runtime import build_speculator

    server = server_factory(max_lookup_contexts=served)
    with DatastoreClient(server.address, timeout_s=5) as client:
        client.create_namespace("ns", 100)
        client.ingest("ns", [("d", TEXT)])
        client.snapshot()  # (queryable now)
        assert client.served_lookup_cap() == served
    with caplog.at_level(logging.INFO, logger="sssd.sdk"):
        spec = build_speculator(address=server.address, namespace="ns", fixed_budget=4)
    assert spec.config.max_lookup_contexts == used and spec.remote.client.max_lookup_contexts == min(served, 4096)
    said = [r.getMessage() for r in caplog.records if "contexts in one lookup" in r.getMessage()]
    assert said == ([] if served >= 4096 else [
        f"datastore {server.address} takes at most {served} contexts in one lookup (its --max-lookup-contexts): "
        "prefetches ask for at most that many and larger lookups go in parts (SSSD_MAX_LOOKUP_CONTEXTS was 4096)"])
    tries = spec.remote.client.lookup_batch("ns", [[t] for t in TEXT] * 4, LookupParams(min_occurrences=1))
    assert len(tries) == 32 and tries.trie(1).tokens.tolist()[:1] == [2]  # (in parts where the cap is below 32)
    spec.close()


def test_closing_a_built_speculator_closes_the_client_it_made(live):
    """build_speculator's client (its channels, its lookup loop's thread) is the speculator's to
    close: a worker that built and closed speculators kept every one's. A source the caller made
    keeps its client open."""
    from client_sdk.runtime import build_speculator

    server, client = live

    for _ in range(3):
        spec = build_speculator(address=server.address, namespace="ns", fixed_budget=4, feedback=True, vocab_size=100)
        spec.start("r", [9, 1, 2])
        spec.prefetch(["r"])
        spec.commit("r", [3, 4, 5, 6, 7, 8, 9, 1])
        spec.finish("r")
        made = spec.remote.client
        thread = made.looped._thread
        assert thread.is_alive()
        spec.close()
        assert not thread.is_alive() and spec.feedback.sent == 1  # (sent before the client closed)
        with pytest.raises(ValueError, match="closed channel"):
            made.stats()
        with pytest.raises(ValueError, match="the DatastoreClient is closed"):  # (a new loop thread answered it)
            made.lookup_future("ns", [[9, 1]])
        assert made.looped._thread is thread and not thread.is_alive()
    server.server.servicer.lookup_delay_s = 0.3  # the prefetch is still out at close
    spec, source = speculator(client, deadline=0.0, threshold=1)
    spec.start("r", [9, 1, 2])
    spec.prefetch(["r"])
    spec.close()
    time.sleep(0.1)
    assert not source.owns_client and client.stats().namespaces  # the caller's client still works
    assert source.stats.failed == 0 and source.breaker.state == "closed"  # given up on by this side: no failure


def test_feedback_reaches_the_datastore(live):
    server, client = live
    sink = FeedbackSink(client, "ns", "w1", batch=2, interval_s=0.05, min_tokens=2)
    spec = Speculator(SpeculatorConfig(fixed_budget=4), feedback=sink)
    for r in (0, 1, 2, 0):  # request id 0 comes back (as the demo's and a restarted loop's do)
        spec.start(r, [1, 2])
        spec.commit(r, [50 + r, 51, 52, r])
        spec.finish(r)
    spec.close()
    assert (sink.sent, sink.conflicts, sink.failed) == (4, 0, 0)  # every generation is its own document
    ns = server.server.servicer.ds.namespace("ns")
    assert all(ns.has_document(f"w1/{n}-{r}") for n, r in enumerate((0, 1, 2, 0)))


def test_feedback_drops_only_a_generation_the_service_refuses(server_factory):
    """A generation over the service's --max-doc-tokens fails its whole Ingest: the sink sends the
    batch again in halves, and every other generation of it is stored."""
    server = server_factory(max_doc_tokens=8)
    with DatastoreClient(server.address, timeout_s=5) as client:
        client.create_namespace("ns", 100)
        sink = FeedbackSink(client, "ns", "w3", batch=4, interval_s=10, min_tokens=1)
        for r, n in enumerate([3, 3, 20, 3, 3]):
            sink.submit(r, [r + 1] * n)
        sink.close()
        assert (sink.sent, sink.failed, sink.refused) == (4, 1, 1)
        ns = server.server.servicer.ds.namespace("ns")
        assert [ns.has_document(f"w3/{r}-{r}") for r in range(5)] == [True, True, False, True, True]


def test_feedback_counts_a_conflicting_id_and_keeps_the_rest(live, caplog):
    server, client = live
    client.ingest("ns", [("w2/0-a", [9, 9, 9])])  # another writer took this sink's first id
    sink = FeedbackSink(client, "ns", "w2", batch=2, interval_s=10, min_tokens=1)
    sink.submit("a", [1, 2, 3])
    sink.submit("b", [4, 5, 6])
    sink.close()
    assert (sink.sent, sink.conflicts) == (1, 1)
    assert server.server.servicer.ds.namespace("ns").has_document("w2/1-b")
    assert "already stored with other tokens" in caplog.text


def test_feedback_while_the_datastore_restarts_loses_nothing(tmp_path):
    """Generations finished while the datastore is down wait in the sink and reach it once it
    is back on the same address (the failed batch is sent again, not dropped)."""
    db = str(tmp_path / "f.db")
    server = EmbeddedServer(ServerConfig.of(db=db, port=0)).start()
    port = server.server.port
    client = DatastoreClient(server.address, timeout_s=2)
    client.create_namespace("ns", 100)
    server.stop()
    sink = FeedbackSink(client, "ns", "w4", batch=2, interval_s=0.1, min_tokens=1)
    for i in range(5):
        sink.submit(str(i), [i + 1, i + 2, i + 3])
    deadline = time.monotonic() + 10
    while sink.resends < 2 and time.monotonic() < deadline:  # the sender has tried, and tried again
        time.sleep(0.05)
    assert sink.resends >= 2 and (sink.sent, sink.failed, sink.dropped) == (0, 0, 0)
    server = EmbeddedServer(ServerConfig.of(db=db, port=port)).start()
    sink.close(timeout_s=10)
    assert (sink.sent, sink.failed, sink.dropped) == (5, 0, 0)
    ns = server.server.servicer.ds.namespace("ns")
    assert all(ns.has_document(f"w4/{i}-{i}") for i in range(5))
    client.close()
    server.stop()


def test_feedback_past_the_live_token_cap_waits_for_room_and_loses_nothing(tmp_path, caplog):
    """A datastore at its --max-live-tokens refuses ingests (RESOURCE_EXHAUSTED): the sink keeps
    the generations that do not fit, warns once naming the cap, and sends them once the server
    has room (here: restarted on the same port with a larger cap)."""
    db = str(tmp_path / "cap.db")
    server = EmbeddedServer(ServerConfig.of(db=db, port=0, max_live_tokens=10)).start()
    port = server.server.port
    client = DatastoreClient(server.address, timeout_s=2)
    client.create_namespace("ns", 100)
    sink = FeedbackSink(client, "ns", "w5", batch=4, interval_s=0.1, min_tokens=1)
    with caplog.at_level(logging.WARNING, logger="sssd.sdk"):
        for i in range(4):
            sink.submit(str(i), [i + 1, i + 2, i + 3])  # 3 tokens each: three fit in 10
        deadline = time.monotonic() + 10
        while sink.resends < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sink.sent == 3 and sink.resends >= 2 and (sink.failed, sink.dropped) == (0, 0)
    assert sum("pass its cap of 10 (--max-live-tokens)" in r.getMessage() for r in caplog.records) == 1
    server.stop()
    server = EmbeddedServer(ServerConfig.of(db=db, port=port, max_live_tokens=100)).start()
    sink.close(timeout_s=10)
    assert (sink.sent, sink.failed, sink.dropped) == (4, 0, 0)
    assert server.server.servicer.ds.namespace("ns").live_tokens == 12
    client.close()
    server.stop()


def test_asyncio_client(server):
    from client_sdk.transport.aio import AsyncDatastoreClient

    async def scenario():
        async with AsyncDatastoreClient(server.address, timeout_s=5) as c:
            with pytest.raises(ValueError, match="vocab_size -1 must be in"):  # (as the blocking client says it)
                await c.create_namespace("aio", -1)
            await c.create_namespace("aio", 100)
            await c.ingest("aio", [("a", TEXT)])

            async def batches():
                yield []  # (left out: the service refuses an empty message)
                yield [("b", [7, 1, 2, 9])]

            summary = await c.ingest_stream("aio", batches())
            assert summary.requests == 1
            await c.snapshot()
            trees = await c.lookup("aio", [np.array([1, 2])])
            flat = await c.lookup_batch("aio", [np.array([1, 2]), np.array([5])])
            first = sorted(trees[0].tokens[trees[0].parents < 0].tolist())  # children of the root
            docs = (await c.stats("aio")).namespaces[0].documents
            # the admin calls the blocking client has (the asyncio one had none of these four)
            assert "aio" in [n.name for n in await c.list_namespaces()]
            assert await c.delete("aio", ["a", "gone"], missing_ok=True) == ["a"]
            with pytest.raises(ValueError, match="^ids 'b' must be a list of document ids"):
                await c.delete("aio", "b")
            assert await c.compact("aio") >= 0 and (await c.stats("aio")).namespaces[0].documents == 1
            await c.drop_namespace("aio")
            assert "aio" not in [n.name for n in await c.list_namespaces()]
            return summary.added, first, len(flat), docs

    added, first, tries, docs = asyncio.run(scenario())
    assert (added, first, tries, docs) == (1, [3, 9], 2, 2)


def test_asyncio_stream_whose_batches_fail_on_the_client_stores_those_before_and_says_so(server):
    from client_sdk.transport.aio import AsyncDatastoreClient

    async def scenario():
        async with AsyncDatastoreClient(server.address, timeout_s=5) as c:
            await c.create_namespace("aio", 100)

            async def batches():
                yield [("a", [1, 2])]
                yield [("b", 3)]  # (tokens that are no sequence)

            with pytest.raises(ValueError, match=r"^document 'b'.*\(the stream stopped there: the 1 message\(s\) "
                               r"before it were stored, 1 document\(s\) added"):
                await c.ingest_stream("aio", batches())
            return (await c.ingest("aio", [("a", [1, 2])])).duplicates

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize("size", [10, -1, 1 << 31, 1.5, True])
def test_a_message_size_no_channel_can_use_is_a_one_line_error(size):
    """(10 was taken, and every answer then failed RESOURCE_EXHAUSTED; 2**31 an OverflowError.)"""
    from client_sdk.transport.aio import AsyncDatastoreClient

    with pytest.raises(ValueError, match=rf"^max_message_bytes {size!r} must be an integer in 65536..2147483647 "):
        AsyncDatastoreClient("127.0.0.1:1", max_message_bytes=size)


def test_asyncio_client_deadline_is_enforced(server):
    import grpc

    from client_sdk.transport.aio import AsyncDatastoreClient

    server.server.servicer.lookup_delay_s = 2.0

    async def scenario():
        async with AsyncDatastoreClient(server.address) as c:
            try:
                await c.lookup("ns", [np.array([1])], timeout_s=0.05)
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    assert asyncio.run(scenario()) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_namespace_check_at_start_up(live, caplog):
    from client_sdk.runtime import check_namespace

    _, client = live
    assert check_namespace(client, "ns", 100)
    with caplog.at_level("WARNING", logger="sssd.sdk"):
        assert not check_namespace(client, "missing", 100)
    assert "no namespace 'missing'" in caplog.text
    with pytest.raises(ValueError, match="100-token vocabulary, the model has 32000"):
        check_namespace(client, "ns", 32000)
    client.create_namespace("tok", 100, tokenizer_fingerprint="A:100:abc")
    assert check_namespace(client, "tok", 100, "A:100:abc") and check_namespace(client, "ns", 100, "B:100:def")
    with pytest.raises(ValueError, match="namespace 'tok' holds text of tokenizer A:100:abc, the model's is B:100:def"):
        check_namespace(client, "tok", 100, "B:100:def")  # (one of the same vocabulary size was taken)


@pytest.mark.parametrize("feedback_to", [None, "the same server", "its own client"])
def test_a_speculator_that_cannot_be_built_leaves_nothing_open(live, feedback_to):
    """(A namespace of another vocabulary left the client's lookup loop thread and channels, and the
    feedback sink's sender thread, open: a worker that retried its start-up gathered them.)"""
    import threading

    from client_sdk.runtime import build_speculator

    server, _ = live

    def ours():
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("sssd-"))

    before = ours()
    for _ in range(3):
        with pytest.raises(ValueError, match="100-token vocabulary, the model has 50"):
            build_speculator(address=server.address, namespace="ns", fixed_budget=4, vocab_size=50,
                             feedback=feedback_to is not None,
                             feedback_address=server.address if feedback_to == "its own client" else None)
    assert ours() == before
    spec = build_speculator(address=server.address, namespace="ns", fixed_budget=4, vocab_size=100, feedback=True)
    spec.start("r", [9, 1, 2])
    spec.prefetch(["r"])  # (the lookup loop starts)
    assert len(ours()) > len(before)  # what a built one opens is the caller's, closed with it
    spec.close()
    assert ours() == before


@pytest.mark.parametrize("kw, why", [
    ({"feedback": False}, "feedback is off"),
    ({"feedback": True, "address": None}, "no datastore address is given"),
    ({"feedback": True, "sink": "sink"}, "a ready-made sink is given"),
])
def test_a_feedback_address_that_is_not_used_is_said(live, caplog, kw, why):
    """(It was left unused without a word: an SSSD_FEEDBACK_ADDRESS beside SSSD_FEEDBACK=0 or no
    SSSD_DATASTORE.) A feedback address that is used is not said."""
    from client_sdk.runtime import build_speculator

    server, client = live
    kw = {"address": server.address, **kw}
    if kw.get("sink") == "sink":
        kw["sink"] = FeedbackSink(client, "ns", "w")
    with caplog.at_level("WARNING", logger="sssd.sdk"):
        build_speculator(namespace="ns", fixed_budget=4, vocab_size=100, feedback_address=server.address, **kw).close()
        build_speculator(namespace="ns", fixed_budget=4, vocab_size=100, feedback_address=server.address,
                         address=server.address, feedback=True).close()
    said = [r.getMessage() for r in caplog.records if "feedback_address" in r.getMessage()]
    assert said == [f"feedback_address (SSSD_FEEDBACK_ADDRESS) {server.address} is not used: {why}"]


def test_feedback_close_is_bounded_and_counts_what_it_drops(caplog):
    client = DatastoreClient("127.0.0.1:1", timeout_s=1)  # nothing listens there
    sink = FeedbackSink(client, "ns", "w3", batch=4, interval_s=60, min_tokens=1)
    for i in range(1000):
        sink.submit(str(i), [1, 2, 3])
    t = time.perf_counter()
    with caplog.at_level("WARNING", logger="sssd.sdk.feedback"):
        sink.close(timeout_s=1.0)
    assert time.perf_counter() - t < 1.0 + 1.5
    assert sink.sent == 0 and sink.failed + sink.dropped == 1000
    assert "not sent at close" in caplog.text
    client.close()


def test_answers_off_the_wire_need_no_kernel_compiled_after_warm_up():
    """Datastore answers and contexts decoded by the wire codec reach the compiled kernels as
    arrays of the types that warm-up compiled for, so no decode step (or first lookup) stalls on
    a compile: read-only views of message bytes would each need their own variant. A fresh
    process (tests/warm_child.py), since this one may have compiled any variant already."""
    import subprocess
    import sys
    from pathlib import Path

    child = Path(__file__).with_name("warm_child.py")
    done = subprocess.run([sys.executable, str(child)], capture_output=True, text=True, timeout=600,
                          cwd=child.parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"compiled after warm-up: {done.stdout.strip()}"


def test_a_request_samples_as_many_occurrences_as_it_asks(live):
    """The pacing's sample budget reaches the service: a lookup asked for 1 sample reads one of
    the 3 occurrences, the next one (no budget given) the source's own 64, so all 3."""
    _, client = live
    source = RemoteSource(client, "ns", LookupParams(min_occurrences=1, depth=4), CircuitBreaker(), timeout_s=2.0)
    source.request("a", [TEXT[1:3]], samples=1)
    one = source.collect("a", None, 2.0)
    source.request("b", [TEXT[1:3]])
    every = source.collect("b", None, 2.0)
    assert one.meta[0].tolist() == [2, 3, 1] and every.meta[0].tolist() == [2, 3, 3]


def test_an_answer_collected_for_other_contexts_is_not_used_nor_held_against_the_service(live):
    """collect(key, contexts) with contexts other than the ones asked under that key (this side's
    bookkeeping gone wrong) gets nothing and counts it as misaligned, not as a late or failed
    answer: the breaker stays closed and the next lookup is answered."""
    _, client = live
    source = RemoteSource(client, "ns", LookupParams(min_occurrences=1, depth=4), CircuitBreaker(threshold=1),
                          timeout_s=2.0)
    source.request("step", [TEXT[1:3]])
    assert source.collect("step", [TEXT[2:4]], 2.0) is None
    assert (source.stats.misaligned, source.stats.late, source.stats.used) == (1, 0, 0)
    assert source.breaker.state == "closed" and source.stats.failed == 0
    source.request("step", [TEXT[1:3]])
    got = source.collect("step", [TEXT[1:3]], 2.0)
    assert got is not None and got.meta[0].tolist() == [2, 3, 3] and source.stats.used == 1


def test_a_request_the_breaker_refuses_drops_the_answer_asked_before_it(live):
    """A step's prefetch asked while the breaker is open is not made; the answer of an earlier
    prefetch under the same key, never collected (a plain step came between), must not be handed
    to the next step as this one's: its ends are another step's (a misaligned descent)."""
    _, client = live
    source = RemoteSource(client, "ns", LookupParams(min_occurrences=1, depth=4), CircuitBreaker(threshold=1),
                          timeout_s=2.0)
    source.request("step", [TEXT[:2]])
    source.breaker.failure()  # open: the next request is skipped
    source.request("step", [TEXT[2:4], TEXT[4:6]])
    assert source.stats.skipped_open == 1
    assert source.collect("step", None, 0.5) is None


def test_a_step_after_a_refused_prefetch_uses_no_earlier_steps_answer(live):
    """The same through the Speculator: prefetch, a plain step that collects nothing, the breaker
    opens, the plain step's prefetch is refused; the next step must draft without the answer
    asked two steps before (its picks index the refused prefetch's ends, not that answer)."""
    _, client = live
    spec, source = speculator(client, deadline=0.0, threshold=1, cooldown_s=30.0)
    spec.start("r", [9, 1, 2])
    spec.draft(["r"])
    spec.prefetch(["r"])
    time.sleep(0.2)  # the answer is in
    spec.commit("r", [3])
    spec.draft(["r"], budget=0)  # a plain step: nothing collected
    source.breaker.failure()
    spec.prefetch(["r"])  # refused by the open breaker
    spec.commit("r", [4])
    spec.draft(["r"])
    assert source.stats.skipped_open == 1 and spec.counts["arrived"] == 0  # arrived: a prefetch answer used


@pytest.mark.parametrize("late_every, opens", [(2, True), (4, False)])
def test_a_service_late_on_half_its_answers_opens_the_breaker_though_no_streak_does(live, late_every, opens, caplog):
    """Late and in-time answers alternate, so no run of late ones reaches late_limit (4) and the
    in-time ones keep resetting the failure count. Half of 16 answers late opens the breaker all
    the same, once, with a warning; one in four late leaves it closed."""
    caplog.set_level(logging.WARNING, logger="sssd.sdk")
    server, client = live
    servicer = server.server.servicer
    source = RemoteSource(client, "ns", LookupParams(min_occurrences=1, depth=4),
                          CircuitBreaker(threshold=3, cooldown_s=30.0), timeout_s=2.0)
    for i in range(32):
        late = i % late_every == 0
        servicer.lookup_delay_s = 0.5 if late else 0.0
        source.request("step", [TEXT[1:3]])
        got = source.collect("step", None, 0.0 if late else 2.0)
        assert (got is None) == late
        if source.breaker.state != "closed":
            break
    servicer.lookup_delay_s = 0.0
    assert source.stats.late >= 8 if opens else source.stats.late == 8
    assert (source.breaker.state == "open", source.stats.opened) == ((True, 1) if opens else (False, 0))
    said = [r.getMessage() for r in caplog.records if "of the last 16 answers too late" in r.getMessage()]
    assert len(said) == (1 if opens else 0)


@pytest.mark.parametrize("call,message", [
    (lambda c: c.lookup("ns", [[1, 2], [1.5, 2]]), "a context: want a flat sequence of integer token ids"),
    (lambda c: c.lookup("ns", [np.array([3, 2**40])]), "a context holds 1099511627776, not a token id"),
    (lambda c: c.lookup("ns", [[2**70]]), "a context: want a flat sequence of integer token ids"),
    (lambda c: c.ingest("ns", [("f", [1.5])]), "document 'f': want a flat sequence of integer token ids"),
    (lambda c: c.ingest("ns", [("g", [1, 2**40])]), "document 'g' holds 1099511627776, not a token id"),
])
def test_the_client_refuses_what_is_not_token_ids_before_sending(live, call, message):
    """(A float was truncated and stored, "added: 1"; an id past int32 raised OverflowError, or in
    an IngestStream killed the stream as UNKNOWN.)"""
    _, client = live
    documents = client.stats("ns").namespaces[0].documents
    with pytest.raises(ValueError, match=message):
        call(client)
    assert client.stats("ns").namespaces[0].documents == documents
    # lists, other integer arrays and empty contexts are token ids
    assert [t.match_length for t in client.lookup("ns", [[1, 2, 3], np.array([1, 2], dtype=np.int64), ()])] == [3, 2, 0]


@pytest.mark.parametrize("timeout_s", [0, -1.0, float("inf"), float("nan")])
def test_a_client_refuses_a_deadline_no_call_can_keep(timeout_s):
    """(inf failed every call at once as DEADLINE_EXCEEDED; 0 and NaN too; the async client took
    each of them, and both clients took them as one call's deadline.)"""
    import asyncio

    from client_sdk.transport.aio import AsyncDatastoreClient

    said = f"^timeout_s {timeout_s} must be a finite number of seconds above 0$"
    with pytest.raises(ValueError, match=said):
        DatastoreClient("127.0.0.1:1", timeout_s=timeout_s)

    async def build():
        AsyncDatastoreClient("127.0.0.1:1", timeout_s=timeout_s)

    with pytest.raises(ValueError, match=said):
        asyncio.run(build())
    if not timeout_s:
        return  # (a call's 0 or None: the client's own deadline)
    with DatastoreClient("127.0.0.1:1") as client:
        for call in (lambda: client.lookup("ns", [[1]], timeout_s=timeout_s),
                     lambda: client.lookup_future("ns", [[1]], timeout_s=timeout_s),
                     lambda: client.ingest("ns", [("a", [1])], timeout_s=timeout_s),
                     lambda: client.ingest_stream("ns", [[("a", [1])]], timeout_s=timeout_s),
                     lambda: client.compact("ns", timeout_s=timeout_s), lambda: client.snapshot(timeout_s)):
            with pytest.raises(ValueError, match=said):
                call()

    async def per_call():
        async with AsyncDatastoreClient("127.0.0.1:1") as client:
            await client.snapshot(timeout_s)

    with pytest.raises(ValueError, match=said):
        asyncio.run(per_call())


def test_a_grpc_error_is_said_in_one_line():
    """(A warning quoted the error's repr: four lines, with gRPC's debug string.)"""
    from sssd_wire.errors import one_line

    with DatastoreClient("127.0.0.1:1", timeout_s=2) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.stats()
    assert "\n" in str(info.value) and one_line(info.value).startswith("UNAVAILABLE: ")
    assert "\n" not in one_line(info.value) and "debug_error_string" not in one_line(info.value)
    assert one_line(ValueError("a\n  b")) == "a b" and one_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("address,warned", [
    ("ipv4:127.0.0.1:1,127.0.0.1:2", True), ("dns:///localhost:1", True), ("127.0.0.1:1", False),
    ("ipv4:127.0.0.1:1", False),
])
def test_a_lookup_stream_over_several_servers_is_warned(caplog, address, warned):
    """A stream is pinned to one server: over replicas it left the others idle, silently."""
    with caplog.at_level(logging.WARNING, logger="sssd.sdk"):
        DatastoreClient(address, lookup_stream=True).close()
        DatastoreClient(address).close()  # unary lookups spread: nothing to say
    said = [r.getMessage() for r in caplog.records if "lookup_stream" in r.getMessage()]
    assert len(said) == int(warned), said


def _answer_of(parents, offsets, tries=None) -> "pb.LookupResponse":
    """A LookupResponse of these parents and node offsets (a token and a count of 1 per node)."""
    from sssd_wire.v1 import datastore_pb2 as pb

    n, b = len(parents), len(offsets) - 1 if tries is None else tries
    return pb.LookupResponse(tokens=np.ones(n, "<i4").tobytes(), parents=np.array(parents, "<i4").tobytes(),
                             counts=np.ones(n, "<i4").tobytes(), node_offsets=np.array(offsets, "<i8").tobytes(),
                             match_lengths=np.ones(b, "<i4").tobytes(), occurrences=np.ones(b, "<i8").tobytes(),
                             sampled=np.ones(b, "<i4").tobytes())


@pytest.mark.parametrize("parents, offsets, tries, why", [
    ([-1, 0, 1, -1, 0], [0, 3, 5], None, None),  # two tries: a chain of 3, a chain of 2
    ([-1, 0, 0], [0, 0, 3], None, None),  # an empty trie first
    ([], [0, 0], None, None),
    ([-1, 0, 1], [0, 1000], None, "node offsets that do not run from 0 to its 3 nodes"),  # (failed a decode step)
    ([-1, 0, 1], [0, 2], None, "node offsets that do not run from 0 to its 3 nodes"),
    ([-1, 0, 1], [1, 3], None, "node offsets that do not run from 0 to its 3 nodes"),
    ([-1, 0, 1], [0, 3, 2, 3], None, "node offsets that do not run from 0 to its 3 nodes"),  # going back
    ([-1, 5, 1], [0, 3], None, "a parent that is no earlier node of its trie"),  # (read past its trie)
    ([-1, 1], [0, 2], None, "a parent that is no earlier node of its trie"),  # itself
    ([-1, 0, 0], [0, 2, 3], None, "a parent that is no earlier node of its trie"),  # one of another trie
    ([-2], [0, 1], None, "a parent that is no earlier node of its trie"),
    ([-1, 0], [0, 2], 2, "fields of unequal lengths"),  # match records of two tries, offsets of one
])
def test_an_answer_that_is_no_batch_of_tries_is_refused_where_it_is_decoded(parents, offsets, tries, why):
    from sssd_wire.codec import MalformedAnswer, tries_from_proto

    answer = _answer_of(parents, offsets, tries)
    if why is None:
        assert tries_from_proto(answer).parents.tolist() == parents
        return
    with pytest.raises(MalformedAnswer, match=f"^a lookup answer that is no batch of tries: {why}$"):
        tries_from_proto(answer)


def test_a_malformed_answer_is_a_failed_lookup_not_a_failed_decode_step():
    """(Offsets past its nodes raised in the drafting kernel's caller, on the decode step.)"""
    from sssd_wire.codec import tries_from_proto

    class Garbled:  # a server whose answer is no batch of tries, decoded as RemoteSource's client decodes it
        address, tls_ca = "127.0.0.1:1", None

        def lookup_future(self, namespace, contexts, options, timeout_s, flat):
            fut = futures.Future()
            fut.set_running_or_notify_cancel()
            try:
                fut.set_result(tries_from_proto(_answer_of([-1, 0, 1], [0] + [1000] * len(contexts))))
            except Exception as exc:
                fut.set_exception(exc)
            return fut

    source = RemoteSource(Garbled(), "ns", LookupParams(), CircuitBreaker(threshold=1), timeout_s=1.0)
    spec = Speculator(SpeculatorConfig(fixed_budget=4, prefetch_outcomes=False, lookup_deadline_s=0.5), remote=source)
    spec.start("r", [1, 2, 3, 1, 2])
    (tree,) = spec.draft(["r"])  # from the request's own text
    assert tree.tokens.tolist() == [3, 1, 2]
    assert source.stats.failed == 1 and source.stats.used == 0 and source.breaker.state == "open"
