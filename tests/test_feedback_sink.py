"""FeedbackSink: its queue bounded in generations and in tokens, 4 bytes a token, its own copy of
what it was handed; each Ingest capped in generations and tokens; a batch the datastore did not
take sent again, one it refused as invalid sent again in halves down to the refused generation,
one refused otherwise dropped and counted (fake clients record or fail what would be
sent; the live-server tests are in test_sdk_remote.py)."""

import importlib.util
import re
from array import array
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from client_sdk.transport.feedback import FeedbackSink


class Recorder:
    def __init__(self):
        self.docs = []

    def ingest(self, namespace, docs, timeout_s=None):
        self.docs += [(i, np.asarray(t).tolist()) for i, t in docs]
        return SimpleNamespace(conflict_ids=[])


def sink(client, batch=1000, **kw):
    """A sink whose sender thread has stopped: the test calls flush itself."""
    s = FeedbackSink(client, "ns", "w", batch=batch, interval_s=3600, min_tokens=1, **kw)
    s._stop.set()
    s._wake.set()
    s._thread.join()
    return s


@pytest.mark.parametrize("sizes, max_pending, max_tokens, kept, dropped", [
    ([100] * 5, 10, 250, [3, 4], 3),  # the token bound: the newest two (200 tokens) stay
    ([100] * 5, 10, 300, [2, 3, 4], 2),  # exactly at the bound: kept
    ([100] * 5, 3, 10_000, [2, 3, 4], 2),  # the generation bound
    ([10, 10, 500], 10, 250, [2], 2),  # the newest alone is over the bound: kept, the rest dropped
    ([10, 500, 10], 10, 250, [2], 2),  # ... and a large one in the middle goes first, the older ones too
])
def test_the_queue_keeps_the_newest_generations_within_both_bounds(sizes, max_pending, max_tokens, kept, dropped):
    client = Recorder()
    s = sink(client, max_pending=max_pending, max_pending_tokens=max_tokens)
    for i, n in enumerate(sizes):
        s.submit(str(i), list(range(n)))
    assert s.dropped == dropped
    assert s.flush()
    assert [d[0] for d in client.docs] == [f"w/{i}-{i}" for i in kept]
    assert s._queued_tokens == 0
    s.close()


class Calls(Recorder):
    def __init__(self):
        super().__init__()
        self.calls = []

    def ingest(self, namespace, docs, timeout_s=None):
        self.calls.append([len(t) for _, t in docs])
        return super().ingest(namespace, docs, timeout_s)


@pytest.mark.parametrize("sizes, batch, batch_tokens, calls", [
    ([3, 3, 3], 10, 6, [[3, 3], [3]]),  # the token cap ends a batch
    ([3, 3, 3], 10, 5, [[3], [3], [3]]),
    ([3, 3, 3, 3], 2, 100, [[3, 3], [3, 3]]),  # the generation cap
    ([9, 2, 2], 10, 5, [[9], [2, 2]]),  # one over the cap goes alone
])
def test_an_ingest_carries_at_most_batch_generations_and_batch_tokens(sizes, batch, batch_tokens, calls):
    client = Calls()
    s = sink(client, batch=batch, batch_tokens=batch_tokens)
    for i, n in enumerate(sizes):
        s.submit(str(i), list(range(n)))
    assert s.flush() and client.calls == calls and s._queued_tokens == 0
    s.close()


def test_a_queued_generation_is_its_own_int32_copy():
    client = Recorder()
    s = sink(client)
    out = array("q", [7, 8, 9, 128_000])  # sglang's output_ids
    arr = np.array([1, 2, 3], dtype=np.int32)
    s.submit("a", out)
    s.submit("b", arr)
    out[0], arr[0] = 0, 0  # the caller's buffers change after the hand-over
    assert all(d[1].dtype == np.int32 for d in s._queue)  # 4 bytes a token
    s.close()
    assert client.docs == [("w/0-a", [7, 8, 9, 128_000]), ("w/1-b", [1, 2, 3])] and s.sent == 2


@pytest.mark.parametrize("tokens,message", [
    ([1, 2.5], "want a flat sequence of integer token ids"),  # (stored as 2)
    (np.array([1.0, 2.0]), "not float64"),
    ([1, -1], "holds -1, not a token id"),  # (the service refused it, after a split of its batch)
    (np.array([1, 1 << 40]), f"holds {1 << 40}, not a token id"),  # (wrapped around to 0)
    ([1, 1 << 40], f"holds {1 << 40}, not a token id"),  # (an OverflowError)
])
@pytest.mark.parametrize("entry", ["sink", "speculator"])
def test_a_generation_that_is_no_token_ids_is_a_one_line_error_and_nothing_is_queued(entry, tokens, message):
    from client_sdk.drafting.speculator import Speculator

    client = Recorder()
    s = sink(client)
    submit = s.submit if entry == "sink" else Speculator(feedback=s).submit_generation
    with pytest.raises(ValueError, match="^the generation of request 'r'.*" + message):
        submit("r", tokens)
    submit("ok", [5, 6])
    s.close()
    assert client.docs == [("w/0-ok", [5, 6])]


class Failure(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return f"the service's reason for {self._code.name}"


class Flaky(Recorder):
    """Fails its first calls with the given codes (None: that call succeeds), then records;
    ``during`` runs inside a call."""

    def __init__(self, *codes, during=None):
        super().__init__()
        self.codes, self.during = list(codes), during

    def ingest(self, namespace, docs, timeout_s=None):
        if self.during is not None:
            self.during()
        code = self.codes.pop(0) if self.codes else None
        if code is not None:
            raise Failure(code)
        return super().ingest(namespace, docs, timeout_s)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_batch_the_datastore_did_not_take_is_sent_again_in_order(code):
    client = Flaky(code, code)
    s = sink(client, batch=2)
    for i in range(3):
        s.submit(str(i), [i, i])
    for _ in range(2):  # the datastore away twice: nothing lost, nothing reordered
        assert not s.flush()
        assert [d[0] for d in s._queue] == ["w/0-0", "w/1-1", "w/2-2"]
    assert (s.failed, s.resends, s._queued_tokens) == (0, 2, 6)
    assert s.flush()
    assert [d[0] for d in client.docs] == ["w/0-0", "w/1-1", "w/2-2"] and s.sent == 3
    s.close()


@pytest.mark.parametrize("code", [grpc.StatusCode.FAILED_PRECONDITION,  # (a read replica: "send writes to ...")
                                  grpc.StatusCode.PERMISSION_DENIED])
def test_a_batch_refused_for_another_reason_is_dropped_and_counted(code, caplog):
    client = Flaky(code)
    s = sink(client, batch=2)
    for i in range(3):
        s.submit(str(i), [i, i])
    with caplog.at_level("WARNING", logger="sssd.sdk.feedback"):
        assert not s.flush()
    # the service's reason is said (the warning named the code alone)
    assert f"failed ({code.name}: the service's reason for {code.name}); dropped" in caplog.text
    assert (s.failed, s.resends, len(s._queue)) == (2, 0, 1)
    assert s.flush() and [d[0] for d in client.docs] == ["w/2-2"]
    s.close()


class Refusing(Recorder):
    """Refuses, as INVALID_ARGUMENT, any Ingest that holds a generation longer than ``cap`` tokens
    (the service's --max-doc-tokens)."""

    def __init__(self, cap):
        super().__init__()
        self.cap, self.calls = cap, []

    def ingest(self, namespace, docs, timeout_s=None):
        self.calls.append(len(docs))
        long = next((i for i, t in docs if len(t) > self.cap), None)
        if long is not None:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT)
        return super().ingest(namespace, docs, timeout_s)


@pytest.mark.parametrize("sizes, batch, calls", [
    ([2, 2, 9, 2, 2, 2, 2, 2], 8, [8, 4, 2, 2, 1, 1, 4]),  # halves down to the long one, then whole batches
    ([9, 2, 2, 2], 4, [4, 2, 1, 1, 2]),
    ([2, 2, 2, 9], 4, [4, 2, 2, 1, 1]),
    ([9, 2, 9, 2], 4, [4, 2, 1, 1, 2, 1, 1]),  # two refused
    ([9], 4, [1]),
    ([2, 2, 2, 2, 2], 4, [4, 1]),  # nothing refused: whole batches
])
def test_a_refused_generation_is_dropped_alone(sizes, batch, calls, caplog):
    """The service refuses an Ingest for one generation it will not take (one longer than its
    --max-doc-tokens): the batch is sent again in halves, down to that one alone, which alone is
    dropped, counted in failed and named once; the others are stored, in order. (The whole batch
    was dropped with it.)"""
    client = Refusing(cap=4)
    s = sink(client, batch=batch)
    for i, n in enumerate(sizes):
        s.submit(str(i), [i] * n)
    with caplog.at_level("DEBUG", logger="sssd.sdk.feedback"):
        assert s.flush() == (max(sizes) <= 4)
    long = [f"w/{i}-{i}" for i, n in enumerate(sizes) if n > 4]
    assert [d[0] for d in client.docs] == [f"w/{i}-{i}" for i, n in enumerate(sizes) if n <= 4]
    assert (s.failed, s.refused, s.sent, len(s._queue), client.calls) == (len(long), len(long), len(sizes) - len(long),
                                                                          0, calls)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"feedback: the datastore refused generation {i} (INVALID_ARGUMENT: the service's reason "
                      "for INVALID_ARGUMENT); dropped (counted in failed; later ones are not logged)" for i in long[:1]]
    s.close()


def test_a_full_datastore_keeps_the_generations_until_it_has_room():
    """RESOURCE_EXHAUSTED (a full disk, or a call over the service's caps): a batch is sent again in
    halves, a generation alone is kept and sent again at the next flush, in order, nothing dropped
    (every batch was dropped while the disk was full)."""
    full = grpc.StatusCode.RESOURCE_EXHAUSTED
    client = Flaky(full, full, full)  # the disk full for three calls
    s = sink(client, batch=4)
    for i in range(5):
        s.submit(str(i), [i, i])
    assert not s.flush()  # 4 refused, then 2, then 1: kept
    assert (s.failed, s.resends, len(s._queue)) == (0, 1, 5)
    assert s.flush() and [d[0] for d in client.docs] == [f"w/{i}-{i}" for i in range(5)] and s.sent == 5
    s.close()


def test_a_batch_put_back_keeps_the_bounds_and_the_newest_generations():
    s, more = None, [("3", [3, 3]), ("4", [4, 4])]

    def meanwhile():  # the worker finishes two more requests while the first call is out
        while more:
            s.submit(*more.pop(0))

    client = Flaky(grpc.StatusCode.UNAVAILABLE, during=meanwhile)
    s = sink(client, batch=2, max_pending=3)
    for i in range(3):
        s.submit(str(i), [i, i])
    assert not s.flush()
    assert s.dropped == 2 and s._queued_tokens == 6  # the two put back were the oldest
    assert s.flush() and [d[0] for d in client.docs] == ["w/2-2", "w/3-3", "w/4-4"]
    s.close()


def test_a_run_of_failures_is_warned_about_once_and_its_end_is_logged(caplog):
    code = grpc.StatusCode.UNAVAILABLE
    client = Flaky(code, code, None, code)
    s = sink(client, batch=1)
    s.submit("a", [1, 1])
    with caplog.at_level("INFO", logger="sssd.sdk.feedback"):
        assert not s.flush() and not s.flush()
        assert caplog.text.count("kept to send again") == 1
        assert s.flush() and "takes generations again (2 failed calls resent)" in caplog.text
        s.submit("b", [2, 2])
        assert not s.flush()
        assert caplog.text.count("kept to send again") == 2  # a new run of failures
    s.close(timeout_s=0.1)


def test_the_bench_queues_four_bytes_a_token_through_the_workers_finish():
    """bench/feedback_submit.py at a tiny size: the worker's finish path (BatchDrafter.finished)
    leaves 4 bytes a token queued, plus the per-generation overhead (a Python int per token
    would be about 40)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "feedback_submit.py"
    spec = importlib.util.spec_from_file_location("feedback_submit_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.run(4096, 3)
    assert row["output_tokens"] == 4096 and row["p50_us"] > 0
    assert 4.0 <= row["queued_bytes_per_token"] < 4.5


@pytest.mark.parametrize("rid,part", [
    ("a1b2", "a1b2"), (7, "7"), ("x" * 128, "x" * 128),
    ("x" * 129, None), ("line\nbreak", None), ("tab\there", None), ("\ud800", None),
])
def test_a_request_id_the_service_would_refuse_is_fed_back_under_its_digest(rid, part):
    """SGLang passes a client's own ``rid`` through: an id over 256 characters or not printable made
    the service refuse the Ingest, and with it every generation of its batch."""
    from client_sdk.transport.feedback import id_part

    got = id_part(rid)
    if part is not None:
        assert got == part
    else:
        assert len(got) == 25 and got.startswith("h") and got.isprintable() and got == id_part(rid)
    client = Recorder()
    s = sink(client)
    s.submit(rid, [1, 2])
    s.close()
    ((doc_id, _),) = client.docs
    assert doc_id == f"w/0-{got}"
    from datastore_service.core import Document, NamespaceSpec
    from datastore_service.core.index import NamespaceIndex

    longest = f"{'w' * 96}/{2**64}-{got}"  # the longest worker id, an unlikely count
    NamespaceIndex(NamespaceSpec("ns", 10)).validate(Document.of(longest, [1, 2]))  # the service's own rule takes it


def test_a_generation_submitted_after_close_is_counted_and_said_once(caplog):
    """(It was queued behind a stopped sender: lost, and nothing said so.)"""
    client = Recorder()
    s = FeedbackSink(client, "ns", "w", interval_s=3600, min_tokens=1)
    s.submit("a", [1, 2])
    s.close()
    with caplog.at_level("DEBUG", logger="sssd.sdk.feedback"):
        s.submit("b", [3, 4])
        s.submit("c", [5, 6])
    assert [d[0] for d in client.docs] == ["w/0-a"] and (s.sent, s.dropped) == (1, 2) and not s._queue
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "the sink is closed; the generation of request 'b' is not sent" in warned[0].message


@pytest.mark.parametrize("knob, value, said", [
    ("batch", 0, "batch 0 must be >= 1"),  # (empty Ingests, refused: every generation stayed queued)
    ("batch_tokens", 0, "batch_tokens 0 must be >= 1"),
    ("max_pending", -1, "max_pending -1 must be >= 1"),
    ("max_pending_tokens", 0, "max_pending_tokens 0 must be >= 1"),
    ("min_tokens", 0, "min_tokens 0 must be >= 1"),  # (an empty generation was queued and refused)
    ("interval_s", 0, "interval_s 0 must be a finite number of seconds above 0"),  # (the sender spun on a core)
    ("interval_s", float("nan"), "interval_s nan must be a finite number of seconds above 0"),
    ("batch", 1.5, "batch 1.5 must be an integer, not float"),  # (it failed in the sender thread)
    ("namespace", "a b", "namespace 'a b' is no namespace name: it must match"),  # (every Ingest refused)
    ("worker_id", "w" * 97, f"worker_id {'w' * 97!r} must be 1..96 printable characters"),  # (each id refused)
    ("worker_id", 7, "worker_id 7 must be 1..96 printable characters"),
])
def test_a_sink_that_could_not_send_is_refused_before_its_thread_starts(knob, value, said):
    import threading

    before = threading.active_count()
    with pytest.raises(ValueError, match=f"^{re.escape(said)}"):
        FeedbackSink(**{"client": object(), "namespace": "ns", "worker_id": "w", knob: value})
    assert threading.active_count() == before


def test_a_worker_id_that_would_make_ids_the_service_refuses_is_refused():
    from client_sdk.drafting.config import SpeculatorConfig

    for bad in ("", "w" * 97, "a\nb"):
        with pytest.raises(ValueError, match="worker_id .* must be 1..96 printable characters"):
            SpeculatorConfig(worker_id=bad)
    assert len(SpeculatorConfig().worker_id) <= 96  # the default: host, pid and a random part


def test_feedback_under_an_ingest_rate_waits_its_turn_and_loses_nothing(server_factory):
    """A real server with --namespace-ingest-rate: the sink's batches wait their turn there (a
    unary Ingest up to its deadline; refused beyond it, then kept and sent again in smaller
    batches), and every generation is stored, none dropped or counted failed."""
    import time

    from client_sdk.transport.remote import DatastoreClient

    server = server_factory(namespace_ingest_rate=3000)
    client = DatastoreClient(server.address, timeout_s=10)
    client.create_namespace("ns", 500)
    sink = FeedbackSink(client, "ns", "w", batch=10, interval_s=0.05, min_tokens=1)
    rng = np.random.default_rng(0)
    for i in range(40):  # 40 x 300 = 12,000 tokens: 3,000 in the bucket, then about 3 s at the rate
        sink.submit(f"r{i}", rng.integers(0, 500, 300))
    deadline = time.monotonic() + 30
    while client.stats("ns").namespaces[0].documents < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    sink.close()
    assert client.stats("ns").namespaces[0].documents == 40
    assert sink.sent == 40 and sink.failed == 0 and sink.dropped == 0
    assert server.server.metrics.ingest_waited.labels("all")._value.get() > 1.0
    client.close()
