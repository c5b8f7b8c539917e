"""A long prompt's own-text index is built in a background thread (SpeculatorConfig.
background_index_tokens); the tokens committed meanwhile are queued and join it when it is done.
The request's text, its end and its drafts must then be what an index built at once gives."""

from concurrent.futures import Future

import numpy as np
import pytest

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.requests import RequestState
from client_sdk.drafting.speculator import Speculator


class Held:
    """An executor whose jobs run only when the test says so: the index is still being built."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, object, tuple]] = []

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self.jobs.append((future, fn, args))
        return future

    def finish(self) -> None:
        for future, fn, args in self.jobs:
            future.set_result(fn(*args))
        self.jobs.clear()

    def shutdown(self, wait: bool = True) -> None:
        self.finish()


PROMPT = np.array([7, 8, 9, 10, 11] * 20 + [3, 4, 7, 8], dtype=np.int32)  # 104 tokens that repeat


@pytest.mark.parametrize(
    "pending,after",
    [
        ([], []),  # nothing committed while building
        ([[7, 8], [9]], []),  # a few steps while building, none after
        ([[7, 8], [9]], [[10, 11, 7], [8]]),  # then more once it is built
        ([list(range(100, 170))], [[1]]),  # more than the 64-token end kept while building
        ([[5], np.array([6, 7], dtype=np.int32)], [[8]]),  # an array, as the SGLang worker's views give
    ],
)
def test_tokens_committed_while_the_index_builds_join_it_in_order(pending, after):
    held = Held()
    state, reference = RequestState(PROMPT, len(PROMPT), 6, held), RequestState(PROMPT, len(PROMPT), 6)
    text = PROMPT.tolist()
    for tokens in pending:
        arr = np.asarray(tokens, dtype=np.int32)
        state.extend(arr)
        reference.extend(arr)
        text += arr.tolist()
        assert state.index() is None  # still building: the end is read from what was kept
        assert state.tail(64).tolist() == text[-64:] and state.last == text[-1]
    held.finish()
    for tokens in after:
        arr = np.asarray(tokens, dtype=np.int32)
        state.extend(arr)
        reference.extend(arr)
        text += arr.tolist()
    built = state.index()
    assert built is not None and built.tokens.tolist() == text == reference.index().tokens.tolist()
    assert state.tail(5).tolist() == text[-5:] and state.last == text[-1]
    assert state.generated().tolist() == text[len(PROMPT):]
    mine, theirs = built.continuation(depth=6), reference.index().continuation(depth=6)  # queued n-grams indexed too
    assert (mine.match_length, mine.tokens.tolist(), mine.counts.tolist()) == (
        theirs.match_length, theirs.tokens.tolist(), theirs.counts.tolist())


def _speculator(background: bool) -> tuple[Speculator, Held]:
    held = Held()
    spec = Speculator(SpeculatorConfig(fixed_budget=6, background_index_tokens=50 if background else 0))
    spec._indexer = held  # (the executor it would otherwise start for the first long prompt)
    return spec, held


def test_a_request_drafts_as_if_indexed_at_once_after_its_background_build():
    """While the build runs the request drafts from nothing of its own (counted in not_indexed)
    and its committed tokens are queued; after it, its drafts equal those of an index built at
    start and fed the same tokens step by step."""
    (spec, held), (ref, _) = _speculator(True), _speculator(False)
    for s in (spec, ref):
        s.start("r", PROMPT.tolist())
    steps = [[7, 8, 9], [10], [11, 7], [8, 9, 10], [11]]
    for i, tokens in enumerate(steps):
        if i == 2:
            held.finish()
        (mine,), (theirs,) = spec.draft(["r"]), ref.draft(["r"])
        if i < 2:
            assert mine.tokens.shape[0] == 0 and theirs.tokens.shape[0] > 0
        else:
            assert mine.tokens.tolist() == theirs.tokens.tolist() and mine.parents.tolist() == theirs.parents.tolist()
        for s in (spec, ref):
            s.commit("r", tokens)
    assert spec.counts["not_indexed"] == 2 and ref.counts["not_indexed"] == 0
    assert spec._requests["r"].generated().tolist() == sum(steps, [])


@pytest.mark.parametrize("small_batch", [10_000, 0])  # one request at a time; the batch's tails array
def test_a_request_still_building_asks_the_datastore_for_its_own_end(small_batch):
    """Zero-wait: while a long prompt's index builds, the step's prefetch still asks for that
    request's committed end (read from the end kept while building), beside the indexed ones'."""
    from unittest import mock

    from client_sdk.drafting import speculator as speculator_module
    from client_sdk.runtime import lookup_options
    from sssd.bench.replay import InProcessDatastore, InProcessSource

    config = SpeculatorConfig(fixed_budget=6, background_index_tokens=50)
    ds = InProcessDatastore([np.array([1, 2, 3, 4, 5, 6, 1, 2, 3], dtype=np.int32)], 120)
    remote = InProcessSource(ds.lookup, lookup_options(config.draft, config.draft.max_depth, True))
    asked: list[tuple[int, ...]] = []
    request = remote.request
    remote.request = lambda key, contexts, samples=None: (asked.extend(tuple(c) for c in contexts),
                                                          request(key, contexts, samples))
    texts = {"long": PROMPT.tolist(), "a": [1, 2, 3, 4], "b": [5, 6, 1, 2]}
    with mock.patch.object(speculator_module, "SMALL_BATCH", small_batch):
        spec = Speculator(config, remote=remote, vocab_size=120)
        spec._indexer = held = Held()
        for rid, text in texts.items():
            spec.start(rid, text)
        for step, new in enumerate([[101, 102], [103]]):
            spec.draft_batch(list(texts), budget=6)
            asked.clear()
            spec.prefetch(list(texts))
            assert spec._requests["long"].index() is None and held.jobs  # still building
            for rid, text in texts.items():
                assert tuple(text[-4:]) in asked, (step, rid)
            for rid in texts:
                texts[rid] = texts[rid] + [t + ord(rid[0]) % 7 for t in new]
                spec.commit(rid, [t + ord(rid[0]) % 7 for t in new])
        spec.close()


def test_a_closed_speculator_admits_drafts_and_asks_nothing():
    """(A start after close made a new indexing thread that nothing stopped, and drafting went on.)"""
    import threading

    spec = Speculator(SpeculatorConfig(background_index_tokens=50))
    spec.start("long", PROMPT)  # indexed in the background: the indexing thread exists
    spec.draft_batch(["long"], budget=4)
    spec.commit("long", [7])
    spec.close()
    threads = threading.active_count()
    for call in (lambda: spec.start("again", PROMPT), lambda: spec.draft(["long"], budget=4),
                 lambda: spec.draft_batch(["long"]), lambda: spec.prefetch(["long"]), lambda: spec.committed(["long"])):
        with pytest.raises(RuntimeError, match=r"^this Speculator is closed \(Speculator.close was called\)"):
            call()
    assert threading.active_count() == threads and "again" not in spec
    spec.finish("long")  # what was in flight is still let go of
    spec.close()  # a second close does nothing
    assert "long" not in spec
