"""The trie cache of zero-wait drafting: answers kept by query tail, spliced into a step's batch."""

from __future__ import annotations

import numpy as np
import pytest

from client_sdk.drafting.cache import TrieCache, entries, splice
from sssd_wire.types import TrieBatch


def batch_of(tries: list[list[int]], matches: list[int]) -> TrieBatch:
    """One chain trie per entry (tokens in order, each the child of the one before)."""
    toks = [t for trie in tries for t in trie]
    pars = [i - 1 for trie in tries for i in range(len(trie))]
    offs = np.cumsum([0] + [len(t) for t in tries])
    meta = np.zeros((len(tries), 3), np.int64)
    meta[:, 0] = matches
    return TrieBatch(np.asarray(toks, np.int32), np.asarray(pars, np.int32), np.ones(len(toks), np.int32),
                     offs.astype(np.int64), meta)


def as_lists(batch: TrieBatch) -> list[tuple[list[int], int]]:
    return [(e[0].tolist(), int(e[3][0])) for e in entries(batch)]


ANSWERS = batch_of([[7, 8], [], [9]], [3, 2, 1])  # an answer without a match is news too


@pytest.mark.parametrize("tries, matches, found, want", [
    ([[], [1], []], [0, 1, 0], {0: 0, 2: 2}, [([7, 8], 3), ([1], 1), ([9], 1)]),
    ([[], [1], []], [0, 1, 0], {2: 1}, [([], 0), ([1], 1), ([], 2)]),  # an empty answer: its meta
    ([[], [1], []], [0, 1, 0], {1: 0}, [([], 0), ([1], 1), ([], 0)]),  # a slot with a trie keeps it
    ([[4], [1]], [1, 1], {}, [([4], 1), ([1], 1)]),
    ([[]], [0], {0: 2}, [([9], 1)]),
])
def test_splice_fills_empty_slots_only(tries, matches, found, want):
    answers = entries(ANSWERS)
    out = splice(batch_of(tries, matches), {j: answers[i] for j, i in found.items()})
    assert as_lists(out) == want
    assert out.node_offsets[-1] == out.tokens.shape[0] == sum(len(t) for t, _ in want)


def test_get_many_equals_get_per_key_and_expires():
    now = [0.0]
    cache = TrieCache(capacity=2, ttl_s=10.0, clock=lambda: now[0])
    cache.put_batch([b"a", b"b"], batch_of([[1], [2]], [1, 1]))
    now[0] = 5.0
    cache.put_batch([b"c"], batch_of([[3]], [1]))  # capacity 2: "a" goes
    got = cache.get_many([b"a", b"b", b"c", b"d"])
    assert [g[0].tolist() if g is not None else None for g in got] == [None, [2], [3], None]
    assert (cache.hits, cache.misses) == (2, 2)
    now[0] = 12.0  # "b" (stored at 0) expired, "c" (at 5) not
    assert cache.get(b"b") is None and cache.get(b"c")[0].tolist() == [3]
    assert (cache.hits, cache.misses) == (3, 3)


def reference_splice(batch: TrieBatch, found: dict[int, tuple]) -> list[tuple[list[int], list[int], list[int], list[int]]]:
    """Per trie (tokens, parents, counts, meta row), written without the compiled pass: an
    empty trie j takes found[j]; every other trie stays as it is."""
    out = []
    for j, (t, p, c, m) in enumerate(entries(batch)):
        if j in found and not t.shape[0]:
            t, p, c, m = found[j][:4]
        out.append((t.tolist(), p.tolist(), c.tolist(), list(m)))
    return out


def test_splice_equals_a_per_trie_reference():
    from hypothesis import given, settings, strategies as st

    chains = st.lists(st.lists(st.integers(0, 50), max_size=3), min_size=1, max_size=8)

    @settings(max_examples=150, deadline=None)
    @given(chains, chains, st.data())
    def check(rows, answers, data):
        batch, got = batch_of(rows, list(range(len(rows)))), entries(batch_of(answers, [7] * len(answers)))
        picks = data.draw(st.dictionaries(st.integers(0, len(rows) - 1), st.integers(0, len(answers) - 1), max_size=len(rows)))
        found = {j: got[i] for j, i in picks.items()}
        out = splice(batch, found)
        assert [(t.tolist(), p.tolist(), c.tolist(), list(m)) for t, p, c, m in entries(out)] == reference_splice(batch, found)
        assert out.node_offsets[0] == 0 and out.node_offsets[-1] == out.tokens.shape[0]

    check()
