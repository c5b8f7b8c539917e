"""Clients that create, drop, compact, delete, ingest and look up at once against a real writer with
a replica and a segment reader following it, for a few seconds on 127.0.0.1: whatever interleaving
happens, no call fails as INTERNAL, no maintenance round fails, every invariant holds, and both
followers end equal to the writer. (Run this way by hand, a repeated id in a delete failed as INTERNAL after SQLite had deleted
the document, so no replica heard of it; and a drop between a maintenance round's listing and its
compaction failed the round with a NotFound traceback.)"""

import collections
import random
import threading
import time

import grpc
import numpy as np

from client_sdk.transport.remote import DatastoreClient
from sssd_wire.types import LookupParams
from tests.test_replication import replica_of, wait_for
from tests.test_segment_readers import reader_of

SECONDS = 5.0
NAMES = ("ns", "nt")
IDS = 300  # few ids, so that deletes, re-ingests and retention meet the same documents
EXACT = LookupParams(sample_budget=4096, max_nodes=4096, depth=4)
PROBES = [np.array([i, j], dtype=np.int32) for i in range(0, 50, 7) for j in range(0, 50, 11)]


def _admin(c: DatastoreClient, r: random.Random) -> None:
    op, name = r.choice(("create", "drop", "compact", "delete", "delete")), r.choice(NAMES)
    if op == "create":
        c.create_namespace(name, 50, max_tokens=r.choice((0, 3000)))  # with retention or without
    elif op == "drop":
        c.drop_namespace(name)
    elif op == "compact":
        c.compact(name, full=r.random() < 0.5)
    else:  # an id may come twice
        c.delete(name, [f"d{r.randrange(IDS)}" for _ in range(r.randrange(1, 8))], missing_ok=True)
    time.sleep(0.02)


def _ingest(c: DatastoreClient, r: random.Random) -> None:
    docs = [(f"d{r.randrange(IDS)}", [r.randrange(50) for _ in range(r.randrange(1, 100))]) for _ in range(r.randrange(1, 10))]
    if len({i for i, _ in docs}) < len(docs):  # (an id twice with other tokens is refused: not what this tests)
        return
    if len(docs) == 1 or r.random() < 0.5:
        c.ingest(r.choice(NAMES), docs)
    else:  # an IngestStream of two messages
        c.ingest_stream(r.choice(NAMES), [docs[: len(docs) // 2], docs[len(docs) // 2 :]])


def _lookup(c: DatastoreClient, r: random.Random) -> None:
    c.lookup(r.choice(NAMES), [np.array([r.randrange(50) for _ in range(4)], dtype=np.int32) for _ in range(8)])


def _run(address: str, call, seed: int, until: float, codes: collections.Counter) -> None:
    r = random.Random(seed)
    with DatastoreClient(address, timeout_s=10) as c:
        while time.monotonic() < until:
            try:
                call(c, r)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1


def _content(address: str) -> tuple[dict, dict]:
    with DatastoreClient(address) as c:
        stats = {n.name: (n.documents, n.tokens) for n in c.stats().namespaces}
        found = {n: [(t.occurrences, t.match_length, sorted(t.paths().items())) for t in c.lookup(n, PROBES, EXACT)]
                 for n in stats}
    return stats, found


def test_admin_calls_racing_writes_and_lookups_break_nothing(server_factory, tmp_path):
    writer = server_factory(db=str(tmp_path / "w.db"), segment_dir=str(tmp_path / "segments"),
                            idle_compaction_s=0.3, compaction_fanout=2)
    followers = replica_of(server_factory, tmp_path, writer), reader_of(server_factory, tmp_path, writer)
    codes: collections.Counter = collections.Counter()
    until = time.monotonic() + SECONDS
    threads = [threading.Thread(target=_run, args=(writer.address, call, seed, until, codes))
               for seed, call in enumerate((_admin, _ingest, _ingest, _lookup))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes["OK"] > 100 and not set(codes) - {"OK", "NOT_FOUND", "ALREADY_EXISTS"}, codes
    ds = writer.server.servicer.ds
    assert ds.maintenance_failures == 0 and ds.check_integrity(deep=True) == ""
    with DatastoreClient(writer.address) as c:  # both namespaces hold documents at the end, whatever the race left
        for name in set(NAMES) - {n.name for n in c.list_namespaces()}:
            c.create_namespace(name, 50)
        r = random.Random(99)
        for name in NAMES:
            c.ingest(name, [(f"end{i}", [r.randrange(50) for _ in range(60)]) for i in range(20)])
    time.sleep(0.5)  # the last writes flushed by maintenance (lookups see them from then on)
    expected = _content(writer.address)
    assert sorted(expected[0]) == sorted(NAMES) and all(docs >= 20 for docs, _ in expected[0].values())
    for follower in followers:
        wait_for(lambda: _content(follower.address) == expected, 5.0, f"{follower.address} equal to the writer")
        assert follower.server.servicer.ds.check_integrity(deep=True) == ""
