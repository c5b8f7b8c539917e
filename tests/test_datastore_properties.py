"""Random ingest / delete / flush / compact / retention / restart sequences against an oracle.

After every step: check_integrity() is "" and, after a flush, every lookup equals the
brute-force answer over the live documents (the sample budget is large enough to be exact).
The same sequences drive a writer with segment files and a segment reader that follows it.
"""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datastore_service.core import Document, LookupParams, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig
from datastore_service.replication import ChangeLog, SegmentApplier, change_batches, segment_copy
from sssd_wire.v1 import datastore_pb2 as pb
from tests.oracle import expected

VOCAB = 6
PARAMS = LookupParams(max_match=3, min_match=1, min_occurrences=1, sample_budget=4096, depth=3, max_nodes=4096)

doc_tokens = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=12)
op = st.one_of(
    st.tuples(st.just("ingest"), st.lists(st.tuples(st.integers(0, 30), doc_tokens), min_size=1, max_size=5)),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 30), min_size=1, max_size=4)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.booleans()),
    st.tuples(st.just("restart"), st.none()),
)


class Model:
    """What the datastore should hold: live documents in ingest order, retention applied."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.docs: dict[str, list[int]] = {}

    def ingest(self, batch: list[tuple[str, list[int]]]) -> None:
        for doc_id, toks in batch:
            self.docs.setdefault(doc_id, toks)
        while self.cap and sum(map(len, self.docs.values())) > self.cap:
            del self.docs[next(iter(self.docs))]


def apply(ds: Datastore, model: Model, kind: str, arg, path: str) -> Datastore:
    if kind == "ingest":
        # ids carry their content so a repeated id is an exact duplicate (idempotent)
        batch = {f"d{i}-{'.'.join(map(str, t))}": t for i, t in arg}
        ds.ingest("ns", [Document.of(k, v) for k, v in batch.items()])
        model.ingest(list(batch.items()))
    elif kind == "delete":
        ids = [k for k in model.docs if int(k[1:].split("-")[0]) in arg]
        # an id asked twice is deleted once (it was deleted from SQLite, then failed the index: KeyError)
        assert sorted(ds.delete("ns", ids + ids[:1])) == sorted(ids)
        for k in ids:
            del model.docs[k]
    elif kind == "flush":
        ds.flush()
    elif kind == "compact":
        ds.compact("ns", full=arg)
    else:
        ds.close()
        ds = Datastore(DatastoreConfig(db=path))
    return ds


def check(ds: Datastore, model: Model, contexts: list[list[int]]) -> None:
    assert ds.check_integrity() == ""
    assert sorted(ds.namespace("ns").document_ids()) == sorted(model.docs)
    ds.flush()
    docs = list(model.docs.values())
    trees = ds.lookup("ns", [np.array(c) for c in contexts], PARAMS)
    for ctx, tree in zip(contexts, trees):
        want = expected(docs, ctx, PARAMS.max_match, PARAMS.min_match, PARAMS.min_occurrences, PARAMS.depth)
        assert (tree.match_length, tree.occurrences, tree.paths()) == want, ctx


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op, min_size=1, max_size=12),
    cap=st.sampled_from([0, 0, 40]),
    contexts=st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=4), min_size=1, max_size=6),
)
def test_random_sequences_match_oracle(ops, cap, contexts):
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "p.db")
        ds = Datastore(DatastoreConfig(db=path, synchronous="OFF"))
        ds.create_namespace(NamespaceSpec("ns", VOCAB, max_tokens=cap))
        model = Model(cap)
        try:
            for kind, arg in ops:
                ds = apply(ds, model, kind, arg, path)
                check(ds, model, contexts)
        finally:
            ds.close()


class SegmentReader:
    """A segment reader fed from a writer's change log, as ``Follow`` would (no server)."""

    def __init__(self, path: str, segment_dir: str) -> None:
        self.ds = Datastore(DatastoreConfig(db=path, segment_dir=segment_dir), mirror=True)
        self.applier = SegmentApplier(self.ds)
        self.epoch, self.position = "", 0

    def catch_up(self, writer: Datastore) -> None:
        log = writer.changes
        if log.epoch != self.epoch:  # a new writer process: a full copy first
            self.position, batch = segment_copy(writer)
            batch.reset = batch.copying = True
            self.applier(batch)
            self.epoch = log.epoch
        for batch in change_batches(log.epoch, log.since(self.position), segment_reader=True) or [pb.ChangeBatch()]:
            self.applier(batch)  # the first batch after a copy ends it
            self.applier(batch)  # and again, as after a reconnect that lost the position: changes nothing
            self.position = max(self.position, batch.position)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op, min_size=1, max_size=12),
    cap=st.sampled_from([0, 0, 40]),
    contexts=st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=4), min_size=1, max_size=6),
)
@example(ops=[("ingest", [(1, [1, 2, 3]), (2, [2, 3, 4])]), ("delete", [1]), ("restart", None)], cap=0,
         contexts=[[2, 3]])  # a copy of segments holding deleted documents
def test_a_segment_reader_mirrors_random_sequences(ops, cap, contexts):
    """The writer maps its own segment files and a reader maps the same ones; after every step
    the reader answers as the writer does and both pass their integrity checks."""
    with tempfile.TemporaryDirectory() as tmp:
        path, segs = str(Path(tmp) / "p.db"), str(Path(tmp) / "segs")
        config = DatastoreConfig(db=path, synchronous="OFF", segment_dir=segs)
        ds = Datastore(config, ChangeLog())
        ds.create_namespace(NamespaceSpec("ns", VOCAB, max_tokens=cap))
        reader = SegmentReader(str(Path(tmp) / "r.db"), segs)
        model = Model(cap)
        try:
            for kind, arg in ops:
                ds = apply(ds, model, kind, arg, path)
                if kind == "restart":
                    ds.close()
                    ds = Datastore(config, ChangeLog())
                check(ds, model, contexts)  # flushes the writer
                reader.catch_up(ds)
                assert reader.ds.check_integrity() == ""
                assert sorted(reader.ds.namespace("ns").document_ids()) == sorted(model.docs)
                want = ds.lookup("ns", [np.array(c) for c in contexts], PARAMS)
                got = reader.ds.lookup("ns", [np.array(c) for c in contexts], PARAMS)
                assert [(t.match_length, t.occurrences, t.paths()) for t in got] == \
                       [(t.match_length, t.occurrences, t.paths()) for t in want]
        finally:
            ds.close()
            reader.ds.close()
