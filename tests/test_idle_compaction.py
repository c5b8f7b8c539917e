"""A namespace left with several segments is merged into one once it has been quiet for
``idle_compaction_s`` (a lookup searches every segment), and only then."""

import time

import numpy as np
import pytest

from datastore_service.core import Document, LookupParams, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig

CONTEXTS = [np.array([1, 2], dtype=np.int32), np.array([5], dtype=np.int32), np.array([9, 9], dtype=np.int32)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_store(path, idle_s: float = 60.0) -> tuple[Datastore, Clock]:
    clock = Clock()
    return Datastore(DatastoreConfig(db=str(path), idle_compaction_s=idle_s), clock=clock), clock


def write(ds: Datastore, batch: int) -> None:
    """One batch of documents, flushed: one more segment (fewer than the tiered policy merges)."""
    ds.ingest("ns", [Document.of(f"b{batch}-{i}", [1, 2, 3 + batch, 5, i % 4]) for i in range(20)])
    ds.flush()


def segments(ds: Datastore) -> int:
    return len(ds.namespace("ns").segments)


def answers(ds: Datastore) -> list:
    return [(t.paths(), t.occurrences) for t in ds.lookup("ns", CONTEXTS, LookupParams(depth=3, sample_budget=1000))]


@pytest.fixture
def store(tmp_path):
    ds, clock = open_store(tmp_path / "s.db")
    ds.create_namespace(NamespaceSpec("ns", 100))
    for batch in range(3):
        write(ds, batch)
    yield ds, clock
    ds.close()


def test_a_quiet_namespace_is_merged_once_and_answers_the_same(store):
    ds, clock = store
    before = answers(ds)
    ds.maintain()
    clock.now += 59.0
    ds.maintain()
    assert segments(ds) == 3  # not quiet long enough, and the tiered policy merges 4 of a size
    clock.now += 1.0
    ds.maintain()
    assert segments(ds) == 1 and ds.compactions == 1
    assert answers(ds) == before and ds.check_integrity() == ""
    clock.now += 600.0
    ds.maintain()
    assert ds.compactions == 1  # once per quiet spell


def test_each_write_starts_the_quiet_spell_again(store):
    ds, clock = store
    clock.now += 30.0
    write(ds, 3)  # 4 segments of one size: the tiered policy merges them at the next round
    ds.maintain()
    merged_by_tier = ds.compactions
    clock.now += 40.0
    write(ds, 4)
    clock.now += 59.0
    ds.maintain()
    assert segments(ds) == 2 and ds.compactions == merged_by_tier
    clock.now += 1.0
    ds.maintain()
    assert segments(ds) == 1


def test_a_deletion_counts_as_a_write(store):
    ds, clock = store
    clock.now += 61.0
    ds.maintain()
    assert segments(ds) == 1
    ds.delete("ns", ["b0-0", "b1-0"])
    clock.now += 61.0
    ds.maintain()
    assert ds.compactions == 2 and ds.namespace("ns").counts().documents == 58  # the dead rows dropped


def test_zero_never_merges(tmp_path):
    ds, clock = open_store(tmp_path / "z.db", idle_s=0.0)
    ds.create_namespace(NamespaceSpec("ns", 100))
    for batch in range(3):
        write(ds, batch)
    clock.now += 1e6
    ds.maintain()
    assert segments(ds) == 3 and ds.compactions == 0
    ds.close()


def test_segments_found_at_start_up_are_merged_once_quiet(tmp_path):
    ds, _ = open_store(tmp_path / "r.db", idle_s=0.0)
    ds.create_namespace(NamespaceSpec("ns", 100))
    for batch in range(3):
        write(ds, batch)
    before = answers(ds)
    ds.close()
    ds, clock = open_store(tmp_path / "r.db")
    assert segments(ds) == 3
    clock.now += 60.0
    ds.maintain()
    assert segments(ds) == 1 and answers(ds) == before
    ds.close()


def test_a_real_server_merges_a_quiet_namespace(server_factory):
    """The service's own maintenance loop, with the knob from its configuration."""
    from client_sdk.transport.remote import DatastoreClient

    server = server_factory(idle_compaction_s=0.5)
    with DatastoreClient(server.address, timeout_s=30) as client:
        client.create_namespace("ns", 100)
        for batch in range(3):
            client.ingest("ns", [(f"b{batch}-{i}", [1, 2, 3 + batch, 5]) for i in range(5)])
            time.sleep(0.3)  # flushed apart: one segment each
        merged = False
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not merged:
            merged = client.stats("ns").namespaces[0].segments == 1
            time.sleep(0.1)
        assert merged and client.stats("ns").namespaces[0].documents == 15
