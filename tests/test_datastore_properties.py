"""Random ingest / delete / flush / compact / retention / restart sequences against an oracle.

After every step: check_integrity() is "" and, after a flush, every lookup equals the
brute-force answer over the live documents (the sample budget is large enough to be exact).
"""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastore_service.core import Document, LookupParams, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig
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
        assert sorted(ds.delete("ns", ids)) == sorted(ids)
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
