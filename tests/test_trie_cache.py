"""The trie cache of zero-wait drafting: answers kept by query tail, spliced into a step's batch."""

from __future__ import annotations

import numpy as np
import pytest

from client_sdk.drafting.cache import CacheFills, TrieCache, entries, splice
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


def tails_of(*rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.int32).reshape(-1, 4)


A, B, C, D = [-1, -1, 1, 2], [-1, -1, -1, 2], [3, 4, 5, 6], [-1, 9, 9, 9]


def test_fill_puts_answers_in_empty_slots_and_expires():
    now = [0.0]
    cache = TrieCache(capacity=4, ttl_s=10.0, width=4, clock=lambda: now[0], ways=4)
    cache.put(tails_of(A, B), batch_of([[1], []], [1, 2]))  # B's answer has no match: news too
    now[0] = 5.0
    cache.put(tails_of(C), batch_of([[3, 4]], [1]))
    out, held = cache.fill(batch_of([[], [], [7], [], []], [0] * 5), np.arange(5), tails_of(A, B, A, C, D))
    assert held.tolist() == [True, True, True, True, False]  # D was never stored
    assert as_lists(out) == [([1], 1), ([], 2), ([7], 0), ([3, 4], 1), ([], 0)]  # slot 2 keeps its own trie
    assert (cache.hits, cache.misses, len(cache)) == (4, 1, 3)
    now[0] = 12.0  # A and B (stored at 0) expired, C (at 5) not
    out, held = cache.fill(batch_of([[], []], [0, 0]), np.arange(2), tails_of(A, C))
    assert held.tolist() == [False, True] and as_lists(out) == [([], 0), ([3, 4], 1)] and len(cache) == 1


def test_the_least_recently_used_entry_goes_and_a_put_replaces_its_own():
    cache = TrieCache(capacity=2, width=4, ways=2)  # one set of two ways: exact LRU
    cache.put(tails_of(A, B), batch_of([[1], [2]], [1, 1]))
    cache.fill(batch_of([[]], [0]), np.arange(1), tails_of(A))  # A is read: B is now the oldest
    cache.put(tails_of(C), batch_of([[3]], [1]))
    held = cache.fill(batch_of([[]] * 3, [0] * 3), np.arange(3), tails_of(A, B, C))[1]
    assert held.tolist() == [True, False, True]
    cache.put(tails_of(A), batch_of([[5, 6]], [2]))  # A again: its entry is replaced, C stays
    out, held = cache.fill(batch_of([[]] * 2, [0] * 2), np.arange(2), tails_of(A, C))
    assert held.all() and as_lists(out) == [([5, 6], 2), ([3], 1)]


def test_answers_whose_nodes_the_ring_overwrote_are_gone():
    cache = TrieCache(capacity=8, width=4, ring_nodes=4)
    cache.put(tails_of(A), batch_of([[1, 2, 3]], [1]))
    cache.put(tails_of(B), batch_of([[4, 5]], [1]))  # does not fit after A's nodes: wraps over them
    cache.put(tails_of(C), batch_of([[1, 2, 3, 4, 5]], [1]))  # larger than the ring: not kept
    out, held = cache.fill(batch_of([[]] * 3, [0] * 3), np.arange(3), tails_of(A, B, C))
    assert held.tolist() == [False, True, False] and as_lists(out)[1] == ([4, 5], 1)


@pytest.mark.parametrize("tries, first", [
    ([[7, 8], [], [9]], 0), ([[7, 8], [], [9]], 1), ([[7, 8], [], [9]], 2), ([[7, 8], [], [9]], 3), ([[1, 2, 3]], 0),
])
def test_rows_from_is_the_batch_from_that_trie_on(tries, first):
    whole = batch_of(tries, list(range(len(tries))))
    part = whole.rows_from(first)
    assert len(part) == len(tries) - first and part.node_offsets[0] == 0
    assert as_lists(part) == as_lists(whole)[first:]


@pytest.mark.parametrize("answer, stored", [
    (batch_of([[5], [7, 8], [9]], [1, 2, 1]), True),  # 1 end, then the 2 fills: kept
    (batch_of([[5], [7, 8]], [1, 2]), False),  # short: another lookup's answer, not kept
    (None, False),  # did not come in time
])
def test_cache_fills_ride_on_the_step_lookup(answer, stored):
    """The tails a step missed are asked once each after the next prefetch's ends; what came
    back after the ends is stored, and only an answer of the asked size is."""
    cache, fills = TrieCache(capacity=8, width=4), CacheFills(4)
    fills.missed = tails_of(A, C, A)
    asked = fills.ask(1, room=2)  # after one end's context
    assert sorted(t.tolist() for t in asked) == [[1, 2], [3, 4, 5, 6]] and fills.first == 1
    assert fills.missed.shape[0] == 0  # asked: not asked again
    padded = fills.asked  # in the order asked: answer rows 1 and 2
    fills.arrived(answer)
    fills.store(cache)
    out, held = cache.fill(batch_of([[], []], [0, 0]), np.arange(2), padded)
    assert held.tolist() == [stored, stored] and fills.asked.shape[0] == 0
    if stored:
        assert [trie for trie, _ in as_lists(out)] == [[7, 8], [9]]


def test_cache_fills_ask_no_more_than_the_room_left():
    """A prefetch within the service's cap on contexts leaves the fills what room is left: they ask
    that many of the missed tails, and an answer is theirs only at that size."""
    fills = CacheFills(4)
    fills.missed = tails_of(A, C, A)
    assert len(fills.ask(3, room=1)) == 1 and fills.asked.shape[0] == 1 and fills.missed.shape[0] == 0
    fills.missed = tails_of(A, C)
    assert fills.ask(5, room=-2) == [] and fills.asked.shape[0] == 0


def test_bad_shapes_are_refused():
    cache = TrieCache(capacity=4, width=4)
    with pytest.raises(ValueError, match="want"):
        cache.fill(batch_of([[]], [0]), np.arange(1), np.zeros((1, 3), np.int32))
    with pytest.raises(ValueError, match="2 tails but 1 answers"):
        cache.put(tails_of(A, B), batch_of([[1]], [1]))


def test_the_compiled_cache_is_an_lru_of_its_ways():
    """One set of ``ways`` ways is exactly an LRU cache of that many entries: against an
    OrderedDict over random puts and fills (tails from a small alphabet, so they repeat)."""
    from collections import OrderedDict

    from hypothesis import given, settings, strategies as st

    tail = st.lists(st.integers(-1, 3), min_size=4, max_size=4).map(tuple)
    trie = st.lists(st.integers(0, 20), max_size=4)
    op = st.one_of(st.tuples(st.just("put"), st.lists(st.tuples(tail, trie), min_size=1, max_size=4)),
                   st.tuples(st.just("fill"), st.lists(tail, min_size=1, max_size=6)))

    @settings(max_examples=150, deadline=None)
    @given(st.integers(1, 5), st.lists(op, max_size=25))
    def check(ways, ops):
        cache, oracle = TrieCache(capacity=ways, width=4, ways=ways), OrderedDict()
        for kind, arg in ops:
            if kind == "put":
                cache.put(tails_of(*[t for t, _ in arg]), batch_of([a for _, a in arg], [len(a) for _, a in arg]))
                for t, a in arg:
                    oracle[t] = a
                    oracle.move_to_end(t)
                    while len(oracle) > ways:
                        oracle.popitem(last=False)
                continue
            out, held = cache.fill(batch_of([[]] * len(arg), [0] * len(arg)), np.arange(len(arg)), tails_of(*arg))
            want = []
            for t in arg:
                if t in oracle:
                    oracle.move_to_end(t)
                want.append((oracle[t], len(oracle[t])) if t in oracle else ([], 0))
            assert held.tolist() == [t in oracle for t in arg] and as_lists(out) == want

    check()


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
