"""Zero-wait's single-token table: the datastore's trie of every token, fetched in the
background, answers a step whose bonus token the prefetched trie does not hold."""

from __future__ import annotations

import logging
import math
import re
import threading
import time

import numpy as np
import pytest

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from client_sdk.drafting.unigrams import UnigramLoader, UnigramTable
from client_sdk.runtime import build_speculator, lookup_options
from sssd.bench.replay import InProcessDatastore, InProcessSource
from sssd_wire.types import TrieBatch

VOCAB = 20


def unigram_tries(contexts) -> TrieBatch:
    """Context [t] -> a one-node trie holding t + 1 (t = 0 and t = 5: no trie)."""
    toks, offs = [], [0]
    for c in contexts:
        t = int(c[-1])
        if t not in (0, 5):
            toks.append(t + 1)
        offs.append(len(toks))
    n = len(toks)
    meta = np.zeros((len(contexts), 3), np.int64)
    meta[:, 0] = 1
    return TrieBatch(np.asarray(toks, np.int32), np.full(n, -1, np.int32), np.ones(n, np.int32),
                     np.asarray(offs, np.int64), meta)


def stored_table(vocab: int = VOCAB, published: bool = False) -> UnigramTable:
    """A table of chunk 8 holding unigram_tries for every token (published: as one batch)."""
    table = UnigramTable(vocab, chunk=8)
    for first in range(0, vocab, 8):
        table.store(first, unigram_tries([[t] for t in range(first, min(first + 8, vocab))]))
    if published:
        table.publish()
    return table


def test_table_answers_per_token_and_misses_empty_or_unknown():
    table = UnigramTable(VOCAB, chunk=8)
    assert table.get(3) is None and table.loaded == 0
    for first in range(0, VOCAB, 8):
        table.store(first, unigram_tries([[t] for t in range(first, min(first + 8, VOCAB))]))
    assert table.loaded == VOCAB and table.nodes == VOCAB - 2
    tok, par, cnt, meta = table.get(3)
    assert tok.tolist() == [4] and par.tolist() == [-1] and meta[0] == 1
    assert table.get(19)[0].tolist() == [20]
    assert table.get(0) is None and table.get(5) is None and table.get(VOCAB) is None and table.get(-1) is None
    table.publish()  # one batch over the vocabulary now answers, the same
    assert table.published and table.loaded == VOCAB and table.nodes == VOCAB - 2
    assert table.get(3)[0].tolist() == [4] and table.get(19)[0].tolist() == [20]
    assert table.get(0) is None and table.get(5) is None and table.get(VOCAB) is None
    with pytest.raises(ValueError):
        table.store(3, unigram_tries([[3]]))  # not on a chunk boundary
    with pytest.raises(ValueError):
        UnigramTable(0)


def test_loader_fills_refreshes_and_survives_failures(caplog):
    calls, fail = [], threading.Event()
    fail.set()

    def fetch(contexts):
        calls.append(int(contexts[0][0]))
        if fail.is_set() and len(calls) == 1:
            raise ConnectionError("datastore down\n\tdebug_error_string = ...")  # (as a gRPC error's text)
        return unigram_tries(contexts)

    table = UnigramTable(VOCAB, chunk=8)
    with caplog.at_level(logging.WARNING, logger="sssd.client"):
        loader = UnigramLoader(table, fetch, refresh_s=0.05, retry_s=0.01)
        try:
            assert loader.complete.wait(5.0)
            assert table.loaded == VOCAB and loader.failures == 1
            seen = len(calls)
            time.sleep(0.3)
            assert len(calls) > seen  # refreshed
        finally:
            loader.close()
    assert not loader._thread.is_alive()
    said = [r.getMessage() for r in caplog.records if "single-token tries failed" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "(datastore down debug_error_string = ...)" in said[0]


def test_a_loader_that_never_refreshes_waits_until_it_is_closed():
    """refresh_s inf (SpeculatorConfig.unigram_refresh_s: never again): the loader fills the table
    once and then waits (threading's wait of inf raised OverflowError in the loader's thread)."""
    errors = []
    threading.excepthook, hook = errors.append, threading.excepthook
    try:
        loader = UnigramLoader(UnigramTable(VOCAB, chunk=8), unigram_tries, refresh_s=math.inf)
        assert loader.complete.wait(5.0)
        time.sleep(0.05)
        assert loader._thread.is_alive() and not errors
        loader.close()
        assert not loader._thread.is_alive()
    finally:
        threading.excepthook = hook


def test_loader_goes_in_smaller_parts_while_the_datastore_is_busy_and_says_nothing(caplog):
    """A busy datastore (Busy: it keeps a namespace's lookup rate for the steps) takes parts of
    at most 3 contexts: the loader halves its part on each Busy and doubles it on success, every
    token's trie arrives in order, and nothing is logged or counted as a failure."""
    from client_sdk.types import Busy

    sizes = []

    def fetch(contexts):
        sizes.append(len(contexts))
        if len(contexts) > 3:
            raise Busy("namespace 'x' has no room for background lookups on this server now")
        return unigram_tries(contexts)

    table = UnigramTable(VOCAB, chunk=8)
    with caplog.at_level(logging.WARNING, logger="sssd.client"):
        loader = UnigramLoader(table, fetch, refresh_s=60, retry_s=0.02, busy_s=0.001)
        try:
            assert loader.complete.wait(5.0)
        finally:
            loader.close()
    assert table.loaded == VOCAB and loader.failures == 0 and loader.deferred == sum(n > 3 for n in sizes)
    assert sizes[:5] == [8, 4, 2, 4, 2]  # halved while busy, doubled after each part taken
    for t in range(VOCAB):  # (unigram_tries: t -> t + 1, none for 0 and 5)
        entry = table.get(t)
        assert (entry is None) if t in (0, 5) else entry[0].tolist() == [t + 1]
    assert not [r for r in caplog.records if r.name == "sssd.client"]


def test_a_loader_closed_while_the_datastore_is_busy_stops_at_once():
    from client_sdk.types import Busy

    def fetch(contexts):
        raise Busy("busy")

    loader = UnigramLoader(UnigramTable(VOCAB, chunk=8), fetch, retry_s=10.0, busy_s=10.0)
    time.sleep(0.05)
    started = time.monotonic()
    loader.close()
    assert time.monotonic() - started < 1.0 and not loader._thread.is_alive() and loader.failures == 0


def _speculator(vocab_size):
    docs = [np.asarray([1, 5, 6, 2], np.int32)] * 5 + [np.asarray([3, 7, 8, 9, 10], np.int32)]
    config = SpeculatorConfig()
    source = InProcessSource(InProcessDatastore(docs, 32).lookup, lookup_options(config.draft, config.draft.max_depth, True))
    spec = build_speculator(fixed_budget=4, remote=source, config=config, vocab_size=vocab_size)
    assert spec.wait_for_unigrams(10.0)
    return spec


@pytest.mark.parametrize("vocab_size", [32, None])
def test_a_surprising_bonus_token_still_gets_the_datastores_trie(vocab_size):
    spec = _speculator(vocab_size)
    try:
        spec.start("r", [4, 1, 5])
        (tree,) = spec.draft(["r"])  # nothing prefetched yet
        spec.prefetch(["r"])  # asks for the ends of this step: context ... 5 -> 6 follows
        spec.commit("r", [7], tree, [])  # no draft token accepted; the bonus 7 never follows 5
        (tree,) = spec.draft(["r"])
        root_children = tree.tokens[tree.parents < 0].tolist()
        # 7 -> 8 -> 9 in the datastore: only the single-token table knows it
        assert (8 in root_children) == (vocab_size is not None)
        assert (spec.unigrams is not None) == (vocab_size is not None)
    finally:
        spec.close()


@pytest.mark.parametrize("published", [False, True])
def test_fill_replaces_only_empty_tries_with_a_known_token(published):
    table = stored_table(published=published)
    # tries 0..4: [empty, (99), empty, empty, empty]
    batch = TrieBatch(np.asarray([99], np.int32), np.asarray([-1], np.int32), np.asarray([7], np.int32),
                      np.asarray([0, 0, 1, 1, 1, 1], np.int64), np.arange(15, dtype=np.int64).reshape(5, 3))
    # slot 0 <- token 3; slot 1 is not empty; slot 2 <- token 5 (no trie); slot 3 <- token 40 (outside); slot 4 <- 19
    out = table.fill(batch, np.asarray([0, 1, 2, 3, 4]), np.asarray([3, 7, 5, 40, 19]))
    tries = [out.trie(j) for j in range(5)]
    assert [t.tokens.tolist() for t in tries] == [[4], [99], [], [], [20]]
    assert tries[1].counts.tolist() == [7] and out.meta[1].tolist() == [3, 4, 5]  # untouched
    assert out.meta[2].tolist() == [6, 7, 8] and out.meta[0, 0] == 1 and out.meta[4, 0] == 1


def test_fill_in_one_pass_equals_a_lookup_per_slot():
    """The compiled fill over the published table gives what the per-slot path gives (hypothesis)."""
    from hypothesis import given, settings, strategies as st

    vocab = 24
    tries = st.lists(st.lists(st.integers(0, 50), max_size=3), min_size=1, max_size=8)

    @settings(max_examples=100, deadline=None)
    @given(tries, st.data())
    def check(rows, data):
        offs = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        flat = np.asarray([t for r in rows for t in r], np.int32)
        meta = np.arange(3 * len(rows), dtype=np.int64).reshape(-1, 3)
        batch = TrieBatch(flat, np.full(flat.shape[0], -1, np.int32), np.ones(flat.shape[0], np.int32), offs, meta)
        slots = np.asarray(data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=2 * len(rows))), np.int64)  # repeats: the first wins
        keys = np.asarray(data.draw(st.lists(st.integers(-2, vocab + 2), min_size=len(slots), max_size=len(slots))), np.int64)
        one, each = stored_table(vocab, True).fill(batch, slots, keys), stored_table(vocab).fill(batch, slots, keys)
        for name in ("tokens", "parents", "counts", "node_offsets", "meta"):
            np.testing.assert_array_equal(getattr(one, name), getattr(each, name))

    check()


@pytest.mark.parametrize("vocab_size,message", [
    (0, "vocab_size 0 must be at least 2"),  # (the table was left out without a word)
    (-5, "vocab_size -5 must be at least 2"),  # (the table's "vocab_size -5 and chunk 2048 must be > 0")
    (2.5, "vocab_size 2.5 must be an integer, not float"),
    ("100", "vocab_size '100' must be an integer, not str"),
    # (with a datastore, the single-token table's chunk list took 3.8 GB and 4 s; no namespace holds more)
    (10**12, "vocab_size 1000000000000 must be at most 16777216 (what a datastore namespace takes)"),
])
def test_what_is_no_vocabulary_size_is_refused_before_anything_is_built(vocab_size, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        Speculator(vocab_size=vocab_size)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):  # before the connect (no server here)
        build_speculator(address="127.0.0.1:1", fixed_budget=4, vocab_size=vocab_size)
    assert Speculator(vocab_size=np.int64(100)).config  # numpy's integers are integers
