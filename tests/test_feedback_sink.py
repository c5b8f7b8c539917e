"""FeedbackSink's queue: bounded in generations and in tokens, 4 bytes a token, its own copy
of what it was handed (a fake client records what would be sent; the live-server tests are in
test_sdk_remote.py)."""

from array import array
from types import SimpleNamespace

import numpy as np
import pytest

from client_sdk.transport.feedback import FeedbackSink


class Recorder:
    def __init__(self):
        self.docs = []

    def ingest(self, namespace, docs, timeout_s=None):
        self.docs += [(i, np.asarray(t).tolist()) for i, t in docs]
        return SimpleNamespace(conflict_ids=[])


def sink(client, **kw):
    return FeedbackSink(client, "ns", "w", batch=1000, interval_s=3600, min_tokens=1, **kw)


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
