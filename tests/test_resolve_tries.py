"""A zero-wait step's datastore tries in one compiled pass (outcomes.resolve_picks) equal the
four steps it replaces: the prefetch answer descended by the bonus tokens, the single-token
table, the trie cache, and the slots left missed with their tails; with a depth limit, the
same tries without their deeper nodes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.drafting.cache import TrieCache, pad_tail
from client_sdk.drafting.outcomes import descend, resolve_picks
from client_sdk.drafting.unigrams import UnigramTable
from sssd_wire.types import TrieBatch

VOCAB = 12
WIDTH = 4


@st.composite
def tries(draw, count: int, tokens: int = VOCAB) -> TrieBatch:
    """``count`` tries in preorder (a node's parent: the root, or a node since the last root-level one)."""
    toks, pars, cnts, offs = [], [], [], [0]
    for _ in range(count):
        n = draw(st.integers(0, 6))
        first = 0
        for i in range(n):
            p = draw(st.integers(-1, i - 1)) if i else -1
            if p >= 0 and p < first:
                p = -1
            if p < 0:
                first = i
            toks.append(draw(st.integers(0, tokens - 1)))
            pars.append(p)
            cnts.append(draw(st.integers(1, 9)))
        offs.append(len(toks))
    meta = np.asarray([[draw(st.integers(0, 4)), draw(st.integers(0, 9)), draw(st.integers(0, 9))]
                       for _ in range(count)], dtype=np.int64).reshape(count, 3)
    return TrieBatch(np.asarray(toks, np.int32), np.asarray(pars, np.int32), np.asarray(cnts, np.int32),
                     np.asarray(offs, np.int64), meta)


def table_of(batch: TrieBatch) -> UnigramTable:
    table = UnigramTable(len(batch), chunk=len(batch))
    table.store(0, batch)
    table.publish()
    return table


def filled_cache(answers: TrieBatch, keys: np.ndarray) -> TrieCache:
    cache = TrieCache(64, ttl_s=1e9, width=WIDTH, clock=lambda: 5.0)
    cache.put(keys, answers)
    return cache


def reference(got, reqs, lengths, last, hist, table, settled, cache):
    """The four steps, one after the other, as the Speculator took them before."""
    per = len(lengths)
    src = np.full(len(reqs) * per, -1, np.int64)
    bonus = np.full(len(reqs) * per, -1, np.int64)
    for i, r in enumerate(reqs):
        if r.pick is not None:
            src[i * per : i * per + per], bonus[i * per : i * per + per] = r.pick, r.bonus
    batch = descend(got, src, bonus) if got is not None else TrieBatch.empty(len(reqs) * per)
    if table is not None and 1 in lengths:
        batch = table.fill(batch, np.arange(len(reqs), dtype=np.int64) * per + lengths.index(1), last)
    offs = batch.node_offsets
    empty = np.flatnonzero(offs[1:] == offs[:-1])
    empty = empty[empty % per != settled]
    tails = hist[empty // per].copy()
    tails[np.arange(WIDTH) < WIDTH - np.asarray(lengths)[empty % per, None]] = -1
    if cache is not None and empty.shape[0]:
        batch, held = cache.fill(batch, empty, tails)
        empty, tails = empty[~held], tails[~held]
    return batch, empty, tails


def cut_depth(batch: TrieBatch, limit: int) -> TrieBatch:
    """``batch`` without the nodes deeper than ``limit`` (0: all kept), parents renumbered."""
    toks, pars, cnts, offs = [], [], [], [0]
    for b in range(len(batch)):
        a, e = int(batch.node_offsets[b]), int(batch.node_offsets[b + 1])
        depth, new_id, first = {}, {}, len(toks)
        for q in range(e - a):
            p = int(batch.parents[a + q])
            depth[q] = 1 if p < 0 else depth[p] + 1
            if limit and depth[q] > limit:
                continue
            new_id[q] = len(toks) - first
            toks.append(int(batch.tokens[a + q]))
            pars.append(-1 if p < 0 else new_id[p])
            cnts.append(int(batch.counts[a + q]))
        offs.append(len(toks))
    return TrieBatch(np.asarray(toks, np.int32), np.asarray(pars, np.int32), np.asarray(cnts, np.int32),
                     np.asarray(offs, np.int64), batch.meta.copy())


def same(a: TrieBatch, b: TrieBatch) -> None:
    for name in ("tokens", "parents", "counts", "node_offsets", "meta"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_one_pass_equals_the_four_steps(data):
    lengths = data.draw(st.sampled_from([(4, 2, 1), (2, 4), (1,), (3, 1)]))
    n = data.draw(st.integers(1, 5))
    got = data.draw(st.none() | tries(data.draw(st.integers(1, 8))))
    reqs = []
    for _ in range(n):
        picked = got is not None and data.draw(st.booleans())
        pick = [data.draw(st.integers(-1, len(got) - 1)) for _ in lengths] if picked else None
        reqs.append(SimpleNamespace(pick=pick, bonus=data.draw(st.integers(0, VOCAB - 1))))
    last = np.asarray([data.draw(st.integers(-1, VOCAB + 1)) for _ in range(n)], np.int64)
    hist = np.stack([pad_tail(np.asarray(data.draw(st.lists(st.integers(0, 3), max_size=6)), np.int32), WIDTH)
                     for _ in range(n)])
    use_table, use_cache = data.draw(st.booleans()), data.draw(st.booleans())
    table = table_of(data.draw(tries(VOCAB))) if use_table else None
    settled = lengths.index(1) if use_table and 1 in lengths and data.draw(st.booleans()) else -1
    answers = data.draw(tries(6, 4))
    keys = np.stack([pad_tail(np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4)), np.int32),
                              WIDTH) for _ in range(6)])
    caches = (filled_cache(answers, keys), filled_cache(answers, keys)) if use_cache else (None, None)
    limit = data.draw(st.integers(0, 3))  # 0: whole tries
    want, want_missed, want_tails = reference(got, reqs, lengths, last, hist, table, settled, caches[0])
    counts = {"prefetched": 0, "arrived": 0, "misaligned": 0}
    out, missed, tails = resolve_picks(got, reqs, lengths, counts, last, hist, table, settled, caches[1], limit)
    same(out, cut_depth(want, limit))
    np.testing.assert_array_equal(missed, want_missed)
    np.testing.assert_array_equal(tails, want_tails)
    if use_cache:
        a, b = caches
        assert (a.hits, a.misses, a.tick) == (b.hits, b.misses, b.tick)
        np.testing.assert_array_equal(a.table()[4], b.table()[4])  # the same entries were read at the same ticks
    assert counts["prefetched"] == sum(r.pick is not None for r in reqs)


def test_an_answer_that_does_not_hold_a_pick_is_not_read(caplog):
    got = TrieBatch(np.asarray([3, 4], np.int32), np.asarray([-1, 0], np.int32), np.ones(2, np.int32),
                    np.asarray([0, 2], np.int64), np.zeros((1, 3), np.int64))
    reqs = [SimpleNamespace(pick=[0, 5], bonus=3)]  # trie 5 of a one-trie answer: another prefetch's picks
    counts = {"prefetched": 0, "arrived": 0, "misaligned": 0}
    out, missed, _ = resolve_picks(got, reqs, (2, 1), counts, np.asarray([3], np.int64))
    assert out.node_offsets.tolist() == [0, 0, 0] and missed.shape[0] == 0
    assert counts == {"prefetched": 1, "arrived": 0, "misaligned": 1} and "not used" in caplog.text


def test_the_descended_trie_is_the_childs_subtree():
    # trie 0: 3 -> (4 -> 6), 5 ; descended by 3: 4 -> 6 with match + 1 and 3's count
    got = TrieBatch(np.asarray([3, 4, 6, 5], np.int32), np.asarray([-1, 0, 1, -1], np.int32),
                    np.asarray([7, 5, 2, 1], np.int32), np.asarray([0, 4], np.int64), np.asarray([[2, 8, 8]], np.int64))
    counts = {"prefetched": 0, "arrived": 0, "misaligned": 0}
    out, _, _ = resolve_picks(got, [SimpleNamespace(pick=[0], bonus=3)], (2,), counts, np.asarray([3], np.int64))
    assert out.tokens.tolist() == [4, 6] and out.parents.tolist() == [-1, 0] and out.meta.tolist() == [[3, 7, 8]]
    assert counts["arrived"] == 1


def test_a_depth_limit_keeps_every_shallower_node_and_its_parents():
    # trie 0 in preorder: 3 -> (4 -> (6 -> 8)), 5 -> 7 ; descended by 3 and cut at depth 2: 4 -> 6
    got = TrieBatch(np.asarray([3, 4, 6, 8, 5, 7], np.int32), np.asarray([-1, 0, 1, 2, -1, 4], np.int32),
                    np.asarray([9, 5, 2, 1, 4, 4], np.int32), np.asarray([0, 6], np.int64), np.asarray([[2, 8, 8]], np.int64))
    for limit, tokens, parents in ((0, [4, 6, 8], [-1, 0, 1]), (2, [4, 6], [-1, 0]), (1, [4], [-1])):
        counts = {"prefetched": 0, "arrived": 0, "misaligned": 0}
        out, _, _ = resolve_picks(got, [SimpleNamespace(pick=[0], bonus=3)], (2,), counts, np.asarray([3], np.int64),
                                  limit=limit)
        assert out.tokens.tolist() == tokens and out.parents.tolist() == parents, limit
    counts = {"prefetched": 0, "arrived": 0, "misaligned": 0}  # no bonus: the whole trie, cut at depth 1
    out, _, _ = resolve_picks(got, [SimpleNamespace(pick=[0], bonus=-1)], (2,), counts, np.asarray([3], np.int64),
                              limit=1)
    assert out.tokens.tolist() == [3, 5] and out.parents.tolist() == [-1, -1] and out.counts.tolist() == [9, 4]
