"""Concurrent Lookup calls share one kernel call, and each gets exactly its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from client_sdk.transport.remote import DatastoreClient
from datastore_service.batching import merge, split
from sssd_wire.types import LookupParams, TrieBatch

TEXT = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 9, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 7]
PARAMS = LookupParams(min_occurrences=1, depth=4)


@pytest.mark.parametrize("counts", [[1], [2, 3], [0, 2, 0, 1], [3, 0]])
def test_merge_then_split_gives_each_call_its_own_part(counts):
    rng = np.random.default_rng(len(counts))
    calls = []
    for n in counts:
        lengths = rng.integers(1, 4, n)
        offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        calls.append((rng.integers(0, 50, int(offs[-1])).astype(np.int32), offs))
    ctx, offs = merge(calls)
    for i, (c, o) in enumerate(calls):  # call i's contexts are its own, in order, in the merged batch
        first = sum(counts[:i])
        got = [ctx[offs[first + j] : offs[first + j + 1]].tolist() for j in range(counts[i])]
        assert got == [c[o[j] : o[j + 1]].tolist() for j in range(counts[i])]
    sizes = rng.integers(0, 3, sum(counts))  # one trie per context, of 0-2 nodes
    node_offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    tok = np.arange(node_offs[-1], dtype=np.int32)
    meta = np.arange(3 * sum(counts), dtype=np.int64).reshape(-1, 3)
    parts = split(TrieBatch(tok, np.full(tok.shape[0], -1, np.int32), tok, node_offs, meta), counts)
    first = 0
    for n, part in zip(counts, parts):
        assert len(part) == n and part.node_offsets[0] == 0
        assert part.tokens.tolist() == tok[node_offs[first] : node_offs[first + n]].tolist()
        assert part.meta.tolist() == meta[first : first + n].tolist()
        first += n


@pytest.fixture
def filled(server, client):
    client.create_namespace("ns", 100)
    client.ingest("ns", [(f"d{i}", TEXT) for i in range(3)])
    client.snapshot()
    return server, client


def held_first_call(server):
    """Make the servicer's first lookup wait until released, so that others queue behind it."""
    ds = server.server.servicer.ds
    real, release, entered = ds.lookup_packed, threading.Event(), threading.Event()

    def lookup_packed(*args):
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return real(*args)

    ds.lookup_packed = lookup_packed
    return release, entered


def wait_queued(servicer, n: int) -> None:
    deadline = time.monotonic() + 10
    while sum(len(q) for q in list(servicer.batcher._queues.values())) < n:
        assert time.monotonic() < deadline, "the calls never queued"
        time.sleep(0.01)


def contexts(i: int) -> list[list[int]]:
    return [TEXT[: 3 + (i + j) % 9] for j in range(1 + i % 3)]


def test_concurrent_calls_share_a_kernel_call_with_the_answers_of_one_call_each(filled):
    server, client = filled
    servicer = server.server.servicer
    alone = [client.lookup("ns", contexts(i), PARAMS) for i in range(8)]  # one call at a time
    batches = servicer.metrics.lookup_batches._value.get()
    release, entered = held_first_call(server)
    big = [TEXT[:5]] * 100  # 100 contexts x 64 samples: the thread pool, where it waits
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(client.lookup, "ns", big, PARAMS)
        assert entered.wait(10)
        rest = [pool.submit(client.lookup, "ns", contexts(i), PARAMS) for i in range(8)]
        wait_queued(servicer, 8)  # the eight calls arrive and queue behind the held one
        release.set()
        got = [f.result(10) for f in rest]
        assert len(first.result(10)) == 100
    assert servicer.metrics.lookup_batches._value.get() - batches == 2  # the held call, then the eight together
    for a, b in zip(alone, got):
        assert [(t.tokens.tolist(), t.parents.tolist(), t.counts.tolist(), t.match_length) for t in a] == \
               [(t.tokens.tolist(), t.parents.tolist(), t.counts.tolist(), t.match_length) for t in b]


def test_a_bad_call_fails_alone(filled):
    """A call with a token outside the vocabulary is refused before it joins a batch (a batch's
    lookup would refuse every call in it)."""
    server, client = filled
    release, entered = held_first_call(server)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.lookup, "ns", [TEXT[:5]] * 100, PARAMS)
        assert entered.wait(10)
        bad = pool.submit(client.lookup, "ns", [[1, 2, 500]], PARAMS)
        with pytest.raises(grpc.RpcError) as err:
            bad.result(5)  # at once, while the held call still holds the batch
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        good = pool.submit(client.lookup, "ns", [TEXT[:4]], PARAMS)
        wait_queued(server.server.servicer, 1)
        release.set()
        assert good.result(10)[0].match_length > 0 and len(first.result(10)) == 100
