"""Local n-gram index and draft tree builder: hand-built tables and hypothesis properties."""

import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from client_sdk.drafting import kernels, merge_kernels, merge_reference, parallel
from client_sdk.drafting import local as local_module
from client_sdk.drafting import tree as tree_module
from client_sdk.drafting.local import LocalIndex
from client_sdk.types import DraftBatch, DraftTree
from client_sdk.drafting.tree import NO_TRIES, Calibration, cut_batch, draft_batch, draft_tree
from sssd_wire.types import TrieBatch
from tests.test_resolve_tries import cut_depth  # (at import: inside a @given test hypothesis sees a nested @given)

LOCAL_CASES = [
    # (text, depth, expected {path: count}, expected match length)
    # "1 2" occurred once before, followed by 3 4
    ([1, 2, 3, 4, 9, 1, 2], 2, {(3,): 1, (3, 4): 1}, 2),
    # the last token alone occurred twice: both continuations, most recent first
    ([5, 7, 5, 8, 5], 1, {(7,): 1, (8,): 1}, 1),
    # a longer match wins over a shorter one: "3 1 2" -> 9, not "2" -> 3
    ([1, 2, 3, 3, 1, 2, 9, 3, 1, 2], 1, {(9,): 1}, 3),
    # nothing repeats
    ([1, 2, 3, 4], 3, {}, 0),
    # the continuation stops at the end of the text
    ([4, 6, 4], 5, {(6,): 1, (6, 4): 1}, 1),
]


@pytest.mark.parametrize("text,depth,paths,k", LOCAL_CASES)
def test_local_matches(text, depth, paths, k):
    c = LocalIndex(text).continuation(depth)
    assert c.match_length == k
    got = {}
    prefix = []
    for t, p, n in zip(c.tokens.tolist(), c.parents.tolist(), c.counts.tolist()):
        prefix.append((prefix[p] if p >= 0 else ()) + (t,))
        got[prefix[-1]] = n
    assert got == paths


def test_local_index_is_incremental_and_grows():
    idx = LocalIndex([1, 2, 3], capacity=4)
    for _ in range(50):
        idx.extend([1, 2, 3])
    assert idx.n == 153 and idx.tokens[-3:].tolist() == [1, 2, 3]
    c = idx.continuation(3)
    assert c.match_length == 6 and c.tokens.tolist()[:3] == [1, 2, 3]


def remote_batch(tries):
    """TrieBatch from a list of (tokens, parents, counts, match_length)."""
    toks = [np.asarray(t[0], np.int32) for t in tries]
    offs = np.concatenate([[0], np.cumsum([len(t) for t in toks])]).astype(np.int64)
    cat = lambda i: np.concatenate([np.asarray(t[i], np.int32) for t in tries]) if tries else np.zeros(0, np.int32)
    meta = np.zeros((len(tries), 3), dtype=np.int64)
    meta[:, 0] = [t[3] for t in tries]  # match lengths
    return TrieBatch(cat(0), cat(1), cat(2), offs, meta)


def brute_ancestors(parents):
    b = len(parents)
    m = np.zeros((b, b), bool)
    for i in range(b):
        j = i
        while j >= 0:
            m[i, j] = True
            j = parents[j]
    return m


def check_tree(tree: DraftTree, budget: int, depth: int, children: int):
    toks, pars = tree.tokens.tolist(), tree.parents.tolist()
    assert len(toks) <= budget
    assert all(p < i for i, p in enumerate(pars)), "not topological"
    sib = [(p, t) for t, p in zip(toks, pars)]
    assert len(sib) == len(set(sib)), "duplicate sibling tokens"
    assert (tree.depths() <= depth).all()
    for p in set(pars):
        assert pars.count(p) <= children
    assert np.array_equal(tree.ancestor_mask(), brute_ancestors(pars))


TREE_CASES = [
    # (remote tries, local text, budget, depth, max_children, expected token paths)
    # one remote chain, budget cuts it
    ([([5, 6, 7], [-1, 0, 1], [4, 4, 4], 4)], [9], 2, 8, 8, {(5,), (5, 6)}),
    # depth limit 1 keeps only root children
    ([([5, 6, 7], [-1, 0, 1], [4, 4, 4], 4)], [9], 8, 1, 8, {(5,)}),
    # branching limit 1 keeps the most frequent child
    ([([5, 6], [-1, -1], [3, 1], 4)], [9], 8, 8, 1, {(5,)}),
    # the same path from two datastore tries is one node
    ([([5], [-1], [2], 4), ([5, 8], [-1, -1], [2, 2], 2)], [9], 8, 8, 8, {(5,), (8,)}),
    # local text and datastore agree on 3: merged
    ([([3], [-1], [1], 1)], [1, 3, 1], 8, 8, 8, {(3,), (3, 1)}),
    # 6 (0.40) and 5 (0.55) share a frequency bucket: within the cell the more frequent wins,
    # whatever their order in the trie
    ([([6, 5, 7], [-1, -1, -1], [8, 11, 1], 4)], [9], 1, 8, 8, {(5,)}),
]


@pytest.mark.parametrize("tries,text,budget,depth,children,paths", TREE_CASES)
def test_tree_cases(tries, text, budget, depth, children, paths):
    tree = draft_tree(LocalIndex(text), remote_batch(tries), 0, len(tries), Calibration(), budget, depth, children)
    check_tree(tree, budget, depth, children)
    got = set()
    prefix = []
    for t, p in zip(tree.tokens.tolist(), tree.parents.tolist()):
        prefix.append((prefix[p] if p >= 0 else ()) + (t,))
        got.add(prefix[-1])
    assert got == paths


def random_trie(draw, vocab):
    n = draw(st.integers(0, 25))
    toks, pars, cnts, seen = [], [], [], set()
    for i in range(n):
        p = draw(st.integers(-1, i - 1))
        t = draw(st.integers(0, vocab - 1))
        if (p, t) in seen:
            continue
        seen.add((p, t))
        toks.append(t)
        pars.append(p if p < 0 else min(p, len(toks) - 2))
        cnts.append(0)
    # counts: leaves 1..3, parents at least the sum of their children (a real trie)
    cnts = [draw(st.integers(1, 3)) for _ in toks]
    for i in range(len(toks) - 1, -1, -1):
        if pars[i] >= 0:
            cnts[pars[i]] += cnts[i]
    return toks, pars, cnts


@st.composite
def drafts(draw):
    vocab = draw(st.integers(2, 6))
    tries = []
    for _ in range(draw(st.integers(0, 3))):
        toks, pars, cnts = random_trie(draw, vocab)
        # parents must point at earlier nodes with unique (parent, token) among the kept ones
        fixed, seen = [], set()
        for i, (t, p) in enumerate(zip(toks, pars)):
            p = p if p < i else -1
            if (p, t) in seen:
                break
            seen.add((p, t))
            fixed.append((t, p, cnts[i]))
        tries.append(([f[0] for f in fixed], [f[1] for f in fixed], [f[2] for f in fixed], draw(st.integers(1, 6))))
    text = draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=40))
    return tries, text, draw(st.integers(1, 40)), draw(st.integers(1, 8)), draw(st.integers(1, 4))


def root_paths(tree):
    prefix = []
    for t, p in zip(tree.tokens.tolist(), tree.parents.tolist()):
        prefix.append((prefix[p] if p >= 0 else ()) + (t,))
    return set(prefix)


def source_paths(tries, text, depth):
    paths = set()
    for toks, pars, _, _ in tries:
        prefix = []
        for t, p in zip(toks, pars):
            prefix.append((prefix[p] if p >= 0 else ()) + (t,))
            paths.add(prefix[-1])
    # every continuation of an earlier occurrence of any suffix of the text
    for i in range(1, len(text)):
        for j in range(i + 1, min(len(text), i + depth) + 1):
            paths.add(tuple(text[i:j]))
    return paths


@settings(max_examples=300, deadline=None)
@given(drafts())
# a near-certain cell whose layer realised more than predicted: its factor once lifted it past 1
@example(case=([([1, 0, 0, 1, 0, 1], [-1, -1, 0, 1, 3, 0], [3, 3, 1, 2, 1, 1], 1),
                ([0, 0, 1, 0], [-1, 0, 0, 2], [4, 1, 2, 1], 1)], [0, 1, 0], 3, 3, 1))
def test_tree_properties(case):
    tries, text, budget, depth, children = case
    cal = Calibration()
    tree = draft_tree(LocalIndex(text), remote_batch(tries), 0, len(tries), cal, budget, depth, children)
    check_tree(tree, budget, depth, children)
    allowed = source_paths(tries, text, depth)
    prefix = []
    for t, p in zip(tree.tokens.tolist(), tree.parents.tolist()):
        prefix.append((prefix[p] if p >= 0 else ()) + (t,))
        assert prefix[-1] in allowed, f"path {prefix[-1]} exists in no source"
    scores = tree.scores.tolist()
    for i, p in enumerate(tree.parents.tolist()):
        assert p < 0 or scores[i] <= scores[p] + 1e-12  # path scores never increase
    # best first: the best k nodes are the first k (what a general selection picks, as paths)
    assert tree.ranked and all(a >= b for a, b in zip(scores, scores[1:]))
    unranked = DraftTree(tree.tokens, tree.parents, tree.scores, tree.cells)
    for k in range(len(tree) + 1):
        first, chosen = tree.best(k), unranked.best(k)
        check_tree(first, k, depth, children)
        assert root_paths(first) == root_paths(chosen)
    # learning from any outcome keeps the calibration a probability table
    path = tree.longest_match(np.asarray(text[-3:]))
    cal.update(tree, path)
    assert np.all((cal.table > 0) & (cal.table < 1))


@settings(max_examples=200, deadline=None)
@given(drafts(), st.data())
def test_a_draft_built_to_keep_k_nodes_is_the_first_k_of_the_whole_draft(case, data):
    """Building for fewer nodes (``keep``: what the planner expects to verify) leaves out the
    nodes deeper than that, which no draft of that size takes: the result is exactly the full
    draft's best k, as one tree and as a batch."""
    tries, text, budget, depth, children = case
    remote, local = remote_batch(tries), LocalIndex(text)
    whole = draft_tree(local, remote, 0, len(tries), Calibration(), budget, depth, children)
    k = data.draw(st.integers(1, budget))
    got = draft_tree(local, remote, 0, len(tries), Calibration(), budget, depth, children, keep=k)
    want = whole.best(k)
    for field in ("tokens", "parents", "scores", "cells"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    from client_sdk.drafting.local import LocalArena

    rows = draft_batch(LocalArena(), [LocalIndex(text) for _ in range(3)], remote_batch(tries * 3), len(tries),
                       Calibration(), budget, depth, children, keep=k).trees()  # the batched kernel (3 rows)
    for row in rows:
        for field in ("tokens", "parents", "scores"):
            np.testing.assert_array_equal(getattr(row, field), getattr(want, field))


@settings(max_examples=200, deadline=None)
@given(drafts(), st.data())
def test_a_draft_is_the_same_from_tries_cut_below_what_it_keeps(case, data):
    """A zero-wait step's tries come without the nodes deeper than the draft keeps nodes or
    levels (``Speculator._draft``'s limit): the draft is exactly the one from whole tries."""
    tries, text, budget, depth, children = case
    depth = min(depth, budget)  # as Speculator._draft asks
    keep = data.draw(st.none() | st.integers(0, budget + 2))
    limit = min(depth, budget if keep is None else max(1, keep))
    remote = remote_batch(tries)
    whole = draft_tree(LocalIndex(text), remote, 0, len(tries), Calibration(), budget, depth, children, keep=keep)
    got = draft_tree(LocalIndex(text), cut_depth(remote, limit), 0, len(tries), Calibration(), budget, depth, children,
                     keep=keep)
    for field in ("tokens", "parents", "scores", "cells"):
        np.testing.assert_array_equal(getattr(got, field), getattr(whole, field))


def test_calibration_learns_from_outcomes():
    cal = Calibration()
    tree = draft_tree(LocalIndex([9]), remote_batch([([5], [-1], [1], 4)]), 0, 1, cal, 4)
    before = float(tree.scores[0])
    for _ in range(200):
        cal.update(tree, [])  # always rejected
    after = float(draft_tree(LocalIndex([9]), remote_batch([([5], [-1], [1], 4)]), 0, 1, cal, 4).scores[0])
    assert after < before / 3


def _scored(table, tries):
    """The merged tries' (tokens, conditionals) for a table, from the kernel's union."""
    remote = remote_batch(tries)
    kb = np.zeros(len(tries), np.int64)
    tok, _, cond, _, cells, _, _ = merge_reference._union(remote.tokens, remote.parents, remote.counts,
                                                          remote.node_offsets, np.arange(len(tries), dtype=np.int64),
                                                          kb, table, 1, 8)
    return dict(zip(tok.tolist(), cond.tolist())), cells


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_a_node_is_scored_from_the_table_layer_of_how_many_sources_propose_it(layers):
    """Token 5 is proposed by both sources, token 6 by the first alone; layer L of the table holds
    L / 10 in every cell, so 5 scores from layer 2 (or the last there is) and 6 from layer 1. The
    cells stay the sources' own slots (what the calibration learns into)."""
    table = np.concatenate([np.full((merge_kernels.SLOTS, 8, 5, 4), (i + 1) / 10) for i in range(layers)])
    one, two = ([5, 6], [-1, -1], [2, 2], 1), ([5], [-1], [4], 1)
    cond, cells = _scored(table, [one, two])
    tie = lambda f: 1.0 + merge_kernels.TIE * (f - 0.5)  # the tie-break by each source's own frequency
    assert cond[6] == pytest.approx(0.1 * tie(0.5))
    assert cond[5] == pytest.approx(min(layers, 2) / 10 * max(tie(0.5), tie(1.0)))
    assert sorted(cells[:, :, 0].ravel().tolist()) == [-1, 0, 0, 1]


def test_calibration_scales_each_layer_by_what_its_nodes_realised():
    """Nodes proposed by datastore slot 1 alone are always rejected, those it proposes with the own
    text always accepted: the slot's layer-1 cells fall below its learned base, its layer-2 cells
    rise above it, and the base itself learns from both alike."""
    cal = Calibration()
    assert cal.table.shape == (tree_module.AGREEMENT * tree_module.MAX_SLOTS,) + cal.base.shape[1:]
    np.testing.assert_array_equal(cal.table[: tree_module.MAX_SLOTS], cal.base)  # factors start at 1
    alone = DraftTree(np.array([5], np.int32), np.array([-1], np.int32), np.array([0.5]),
                      np.array([[[-1, -1, -1, -1], [1, 3, 2, 2]]], np.int8))
    both = DraftTree(np.array([6], np.int32), np.array([-1], np.int32), np.array([0.5]),
                     np.array([[[0, 3, 2, 2], [1, 3, 2, 2]]], np.int8))
    for _ in range(200):
        learn = [(alone, [], 1), (both, [0], 1)]
        tree_module.learn_verified(learn, cal)
    base = cal.base[1, 3, 2, 2]
    layer = lambda a: cal.table[(a - 1) * tree_module.MAX_SLOTS + 1, 3, 2, 2]
    assert layer(1) < base / 2 < base < layer(2)
    assert cal.tests[1, 3, 2, 2] - cal.tests[0, 3, 2, 2] == 200  # slot 1 learned from both nodes, the own text from one
    assert base == pytest.approx(0.5, abs=0.03)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 30), st.integers(0, 6)), max_size=12), st.integers(0, 4))
def test_fixed_width_rows_match_the_tree_masks(nodes, extra):
    """The batched SGLang layout kernel equals DraftTree.rooted_mask, and padding tokens are
    root children unique among the root's children."""
    from client_sdk.drafting.step_kernels import fixed_width_rows

    parents = [-1 if p < 0 or i == 0 else p % i for i, (p, _) in enumerate(nodes)]
    tree = DraftTree(np.array([t for _, t in nodes], np.int32), np.array(parents, np.int32),
                     np.ones(len(nodes)), np.full((len(nodes), 1, 4), -1, np.int8))
    width = 1 + len(tree) + extra
    toks, mask = fixed_width_rows(np.array([99]), tree.tokens, tree.parents, np.array([0, len(tree)]), width)
    assert (mask[0] == tree.rooted_mask(width, pad_under_root=True)).all()
    assert toks[0, 0] == 99 and toks[0, 1 : 1 + len(tree)].tolist() == tree.tokens.tolist()
    root_children = [t for t, p in zip(tree.tokens.tolist(), parents) if p < 0] + toks[0, 1 + len(tree) :].tolist()
    assert len(set(root_children[len(root_children) - extra :]) & set(root_children[: len(root_children) - extra])) == 0
    assert len(set(toks[0, 1 + len(tree) :].tolist())) == extra


@st.composite
def batches(draw):
    """Steps of a batch: per step, requests' texts (None: not indexed) and their `per` tries."""
    vocab = draw(st.integers(2, 6))
    per = draw(st.integers(0, 3))
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        rows = []
        for _ in range(draw(st.integers(0, 5))):
            text = draw(st.none() | st.lists(st.integers(0, vocab - 1), min_size=1, max_size=30))
            tries = [random_trie(draw, vocab) + (draw(st.integers(1, 6)),) for _ in range(per)]
            rows.append((text, tries))
        steps.append(rows)
    return per, steps, draw(st.integers(1, 20)), draw(st.integers(1, 8)), draw(st.integers(1, 4))


@settings(max_examples=150, deadline=None)
@given(batches(), st.booleans())
def test_batched_drafts_equal_one_call_per_request(case, own_text):
    """draft_batch over a batch gives, row by row, what draft_tree gives for each request alone:
    across steps whose indexes grow (reallocated arrays), leave (freed, reused slots) or are not
    built yet (None); also with the rows spread over two threads (client_sdk.drafting.parallel),
    from one row up."""
    for small_batch in (0, tree_module.SMALL_DRAFT):  # the batched kernel, and one call per row for few rows
        with mock.patch.object(tree_module, "SMALL_DRAFT", small_batch):
            _check_batched_drafts(case, own_text)
    with mock.patch.object(tree_module, "SMALL_DRAFT", 0), mock.patch.object(parallel, "MIN_ROWS", 1):
        launches = parallel.STATS["parallel"]
        _check_batched_drafts(case, own_text, threads=2)
        assert parallel.STATS["parallel"] > launches or not any(case[1])


def _check_batched_drafts(case, own_text, threads=1):
    from client_sdk.drafting.local import LocalArena

    per, steps, budget, depth, children = case
    arena, cal = LocalArena(), Calibration()
    live: dict[int, LocalIndex] = {}
    for rows in steps:
        indexes = []
        for i, (text, _) in enumerate(rows):
            if text is None:
                indexes.append(None)
                continue
            if i in live and len(text) % 2:  # a request that goes on: its index grows
                live[i].extend(text)
            else:  # a new request in this row (the old one, if any, is dropped and its slot freed)
                live[i] = LocalIndex(text, capacity=4)
            indexes.append(live[i])
        for i in [i for i in live if i >= len(rows) or rows[i][0] is None]:
            del live[i]
        remote = remote_batch([t for _, tries in rows for t in tries])
        got = draft_batch(arena, indexes, remote, per, cal, budget, depth, children, use_local=own_text,
                          threads=threads).trees()
        assert len(got) == len(rows)
        for b, (index, tree) in enumerate(zip(indexes, got)):
            if index is None:
                assert len(tree) == 0
                continue
            want = draft_tree(index, remote, b * per, per, cal, budget, depth, children, use_local=own_text)
            for field in ("tokens", "parents", "scores", "cells"):
                np.testing.assert_array_equal(getattr(tree, field), getattr(want, field))


def test_arena_reuses_the_slot_of_a_dropped_index():
    from client_sdk.drafting.local import LocalArena

    arena = LocalArena()
    a, b = LocalIndex([1, 2]), LocalIndex([3, 4])
    assert arena.slots([a, b, None]).tolist() == [0, 1, -1]
    del a
    c = LocalIndex([5, 6])
    assert arena.slots([b, c]).tolist() == [1, 0]  # c takes the slot a left
    assert arena.arrays(0)[0][:2].tolist() == [5, 6] and len(arena) == 2


def test_arena_lets_go_of_a_dropped_index_at_its_next_call():
    import gc
    import weakref

    from client_sdk.drafting.local import LocalArena

    arena = LocalArena()
    a, b = LocalIndex(list(range(5000))), LocalIndex([3, 4, 3])
    assert arena.slots([a, b]).tolist() == [0, 1]
    arrays = [weakref.ref(x) for x in (a.buf, a.head, a.prev)]
    del a
    gc.collect()
    assert all(r() is not None for r in arrays)  # held until the arena's owner thread next asks
    assert arena.slots([b]).tolist() == [1]
    assert all(r() is None for r in arrays) and not arena.table[0].any() and arena.arrays(0) == ()
    assert draft_batch(arena, [b], NO_TRIES, 0, Calibration(), budget=2).tokens.tolist() == [4, 3]
    c = LocalIndex([5, 6])
    assert arena.slots([b, c]).tolist() == [1, 0] and arena.arrays(0)[0][:2].tolist() == [5, 6]


def test_arena_answers_the_same_indexes_again_and_rereads_one_that_grew():
    from client_sdk.drafting.local import LocalArena

    arena = LocalArena()
    a, b = LocalIndex([1, 2]), LocalIndex([3, 4])
    first = arena.slots([a, b])
    assert arena.slots([a, b]) is first  # kept
    assert arena.slots([b, a]).tolist() == [1, 0]  # another order is another question
    a.reserve(a.buf.shape[0] + 1)  # reallocates a's arrays
    again = arena.slots([b, a])
    assert again.tolist() == [1, 0] and arena.arrays(0)[0] is a.buf and arena.arrays(0)[2] is a.prev


def test_the_arena_table_points_at_each_slots_arrays_as_the_table_and_the_indexes_grow():
    """kernels.arena_arrays reads the arrays through the table's addresses: a row must follow its
    index through a reallocation, and the table's own growth must keep the rows before it."""
    from client_sdk.drafting import kernels
    from client_sdk.drafting.local import LocalArena

    arena = LocalArena()
    rows = [LocalIndex([i, i + 1, i + 2]) for i in range(20)]  # more slots than the table starts with
    slots = arena.slots(rows).tolist()
    rows[3].reserve(rows[3].buf.shape[0] + 1)  # reallocates its buf and prev
    assert arena.slots(rows).tolist() == slots
    for local, slot in zip(rows, slots):
        row = arena.table[slot]
        assert row[kernels.BUF] == local.buf.ctypes.data and row[kernels.PREV] == local.prev.ctypes.data
        assert row[kernels.HEAD] == local.head.ctypes.data and row[kernels.CAP] == local.buf.shape[0]
        assert (row[kernels.ORDERS], row[kernels.BUCKETS]) == local.head.shape
    tails = kernels.gather_tails(arena.table, arena.slots(rows), np.asarray([x.n for x in rows], np.int64), 4)
    assert tails.tolist() == [[-1, i, i + 1, i + 2] for i in range(20)]


def test_a_new_index_that_takes_a_dropped_ones_id_is_not_given_its_slot():
    """CPython often puts a new object where one just freed was, so ids repeat: the kept
    answer must not outlive the index it names."""
    from client_sdk.drafting.local import LocalArena

    arena, reused = LocalArena(), 0
    for _ in range(100):
        a = LocalIndex([1, 2])
        arena.slots([a])
        dropped = id(a)
        del a
        c = LocalIndex([3, 4])
        reused += id(c) == dropped
        (slot,) = arena.slots([c]).tolist()
        assert arena.arrays(slot)[0] is c.buf
    assert reused  # the case this test is for happened


def test_a_write_that_cannot_grow_leaves_every_index_as_it_was():
    """write_many whose one index would pass MAX_TOKENS raises, and every index of the batch,
    those before it included, keeps its tokens and its indexed count (nothing half written)."""
    from client_sdk.drafting.local import LocalArena, write_many

    arena = LocalArena()
    rows = [LocalIndex([1, 2, 3, 1, 2], capacity=8) for _ in range(3)]
    write_many(arena, rows, [[4], [5], [6]])  # written, their n-grams pending
    before = [(x.n, x.indexed, x.tokens.tolist()) for x in rows]
    assert all(n > indexed for n, indexed, _ in before)
    with mock.patch.object(local_module, "SMALL_APPEND", 0), mock.patch.object(local_module, "MAX_TOKENS", 12):
        with pytest.raises(ValueError, match="at most 12 tokens"):
            write_many(arena, rows, [[7], [8], [9] * 70])  # the last row needs 76 slots, has 74: it must grow
    assert [(x.n, x.indexed, x.tokens.tolist()) for x in rows] == before
    with mock.patch.object(local_module, "SMALL_APPEND", 0):
        write_many(arena, rows, [[7], [8], [9]])  # and the batch goes on from there
    assert [x.tokens.tolist()[-2:] for x in rows] == [[4, 7], [5, 8], [6, 9]]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=20),
                          st.lists(st.lists(st.integers(0, 5), max_size=12), min_size=1, max_size=4)),
                min_size=1, max_size=5))
def test_written_tokens_match_and_index_as_extend_does(rows):
    """write_many over an arena, its n-grams indexed later (index_many) or at the next write,
    matches and drafts meanwhile exactly as indexes extended at once, and ends with their tables
    (growth included)."""
    for small_batch in (0, local_module.SMALL_APPEND):  # the batched kernels, and one call per index for few
        with mock.patch.object(local_module, "SMALL_APPEND", small_batch):
            _check_batched_write(rows)


def _check_batched_write(rows):
    from client_sdk.drafting.local import LocalArena, index_many, write_many

    arena = LocalArena()
    batched = [LocalIndex(prompt, capacity=4) for prompt, _ in rows]
    alone = [LocalIndex(prompt, capacity=4) for prompt, _ in rows]
    for step in range(max(len(steps) for _, steps in rows)):
        live = [i for i, (_, steps) in enumerate(rows) if step < len(steps)]
        tokens = [rows[i][1][step] for i in live]
        packed = None
        if step % 3 == 1:  # the tokens as the caller may have them already, back to back
            packed = (np.asarray([t for ts in tokens for t in ts], np.int32),
                      np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64))
        write_many(arena, [batched[i] for i in live], tokens, packed)
        for i in live:
            alone[i].extend(rows[i][1][step])
        for i in live:  # pending positions are scanned: the same matches and drafts as indexed ones
            got, want = batched[i].continuation(4), alone[i].continuation(4)
            assert (got.tokens.tolist(), got.parents.tolist(), got.counts.tolist(), got.match_length) == \
                (want.tokens.tolist(), want.parents.tolist(), want.counts.tolist(), want.match_length)
        drafts = draft_batch(arena, [batched[i] for i in live], NO_TRIES, 0, Calibration(), budget=4)
        for row, i in zip(drafts.trees(), live):
            assert row.tokens.tolist() == draft_tree(alone[i], NO_TRIES, 0, 0, Calibration(), 4).tokens.tolist()
        if step % 2:  # else left pending: the next write indexes it first
            index_many(arena, [batched[i] for i in live])
    index_many(arena, batched)
    for a, b in zip(batched, alone):
        assert a.n == b.n == a.indexed and a.tokens.tolist() == b.tokens.tolist()
        np.testing.assert_array_equal(a.head, b.head)
        np.testing.assert_array_equal(a.prev[:, : a.n + 1], b.prev[:, : b.n + 1])


@pytest.mark.parametrize("sizes", [[], [0], [3, 0, 2], [1, 1, 5], [4, 0, 2, 7, 1, 0, 3, 3, 9, 1]])
def test_a_draft_batch_round_trips_its_trees_and_cuts_each_row(sizes):
    rng = np.random.default_rng(len(sizes))
    trees = []
    for n in sizes:  # ranked rows: a chain under the root, best first
        scores = np.sort(rng.random(n))[::-1]
        trees.append(DraftTree(rng.integers(0, 9, n).astype(np.int32), np.arange(-1, n - 1, dtype=np.int32), scores,
                               rng.integers(0, 3, (n, 2, 4)).astype(np.int8), ranked=True))
    batch = DraftBatch.of(trees)
    assert len(batch) == len(sizes) and batch.lengths().tolist() == sizes
    for got, want in zip(batch.trees(), trees):
        for field in ("tokens", "parents", "scores", "cells"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        assert got.total == pytest.approx(float(want.scores.sum())) and got.expected_accepted() == got.total
    for k in range(max(sizes, default=0) + 2):
        for got, want in zip(batch.cut(k).trees(), trees):  # each row's best k: what DraftTree.best gives
            best = want.best(k)
            for field in ("tokens", "parents", "scores"):
                np.testing.assert_array_equal(getattr(got, field), getattr(best, field))
            if len(best):  # (an empty tree's cells may have any number of sources)
                np.testing.assert_array_equal(got.cells, best.cells)
        cut, want = cut_batch(batch, k), batch.cut(k)  # the critical path's compiled cut: the same batch
        for field in ("tokens", "parents", "scores", "cells", "offsets", "ranked"):
            np.testing.assert_array_equal(getattr(cut, field), getattr(want, field))
    for first in (0, 2):  # the rows placed in a larger batch (a sampled look's), the others empty
        placed = batch.placed(first, len(sizes) + 3)
        assert placed.lengths().tolist() == [0] * first + sizes + [0] * (3 - first)
        for got, want in zip(placed.trees()[first:], trees):
            np.testing.assert_array_equal(got.tokens, want.tokens)
    with pytest.raises(ValueError, match="do not fit"):
        batch.placed(1, len(sizes))
    for k in (-1, 2.5, True):  # (-1 cut one row to offsets [0, -1], several rows failed in numpy's words)
        with pytest.raises(ValueError, match=f"^max_nodes {re.escape(repr(k))} must be an integer >= 0$"):
            cut_batch(batch, k)


def select_by_sorting(score, parents, depth, budget, max_depth, max_children):
    """Reference: go down every node in preference order (higher score, then shallower, then
    lower index) and take it when its parent was taken and the limits allow."""
    order = sorted(range(len(score)), key=lambda j: (-score[j] + depth[j] * 1e-9, j))
    taken, kept, children = [], set(), {}
    for j in order:
        if len(taken) >= budget:
            break
        p = parents[j]
        if depth[j] > max_depth or (p >= 0 and p not in kept) or children.get(p, 0) >= max_children:
            continue
        kept.add(j)
        children[p] = children.get(p, 0) + 1
        taken.append(j)
    return taken


@st.composite
def scored_forests(draw):
    """Nodes in topological order, each with a conditional in (0, 1] (often tied), as merging
    sources gives them; a node's score is the product down its path."""
    n = draw(st.integers(0, 40))
    parents, cond = [], []
    for i in range(n):
        parents.append(draw(st.integers(-1, i - 1)))
        cond.append(draw(st.sampled_from([1.0, 0.9, 0.5, 0.25, 0.1])))
    return parents, cond, draw(st.integers(1, 20)), draw(st.integers(1, 6)), draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(scored_forests())
def test_best_first_selection_equals_sorting_every_node(case):
    parents, cond, budget, max_depth, max_children = case
    n = len(parents)
    score, depth = [], []
    for j, p in enumerate(parents):
        score.append(cond[j] * (score[p] if p >= 0 else 1.0))
        depth.append(1 + (depth[p] if p >= 0 else 0))
    first_child, next_sib = [-1] * (n + 1), [-1] * n  # slot n = the root
    for j, p in enumerate(parents):
        slot = n if p < 0 else p
        next_sib[j], first_child[slot] = first_child[slot], j
    got = merge_reference.best_first(np.asarray(score), np.asarray(parents, np.int32), np.asarray(depth, np.int32),
                             np.asarray(first_child, np.int32), np.asarray(next_sib, np.int32), n,
                             budget, max_depth, max_children)
    assert got.tolist() == select_by_sorting(score, parents, depth, budget, max_depth, max_children)


@settings(max_examples=400, deadline=None)
@given(drafts(), st.data())
@example(case=([([1, 2, 1], [-1, -1, 1], [2, 2, 1], 1), ([2, 1], [-1, -1], [3, 3], 2)], [0], 3, 2, 2),
         data=None)  # equal scores across sources: the tie falls to the first proposer
def test_merging_only_what_the_selection_reads_gives_the_whole_unions_draft(case, data):
    """The drafting kernels' selection (``_select_into``: a node's children merged when it is
    taken) gives exactly the draft of merging every source node first (merge_reference): the same
    nodes, parents, scores and cells, in the same order, ties included, for any table, limits and
    way of combining sources."""
    tries, _, budget, depth, children = case
    if data is None:  # the explicit example: the default table, max
        table, combine = Calibration().table, 1
    else:
        # few distinct values (equal scores are common), in cells that need not rise with frequency
        values = data.draw(st.sampled_from([(0.5,), (0.2, 0.5, 0.8), (0.1, 0.3, 0.6, 0.9, 1.0)]))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        table = rng.choice(values, size=Calibration().table.shape)
        combine = data.draw(st.integers(0, 1))  # noisy-or, max
    remote = remote_batch(tries)
    ns = len(tries)
    slot = np.arange(ns, dtype=np.int64) + 1
    kb = np.asarray([min(t[3], 8) - 1 for t in tries], dtype=np.int64)
    args = (remote.tokens, remote.parents, remote.counts, remote.node_offsets, slot, kb, table, combine, budget,
            depth, children)
    nodes = merge_kernels._nodes(budget, ns)
    m = merge_kernels._select_into(*args, *merge_kernels._work(int(remote.node_offsets[-1]), ns, 0), *nodes, 0)
    for got, want in zip(nodes, merge_reference.merge_sources(*args)):
        np.testing.assert_array_equal(got[:m], want)


@pytest.mark.parametrize("prompt,buckets", [(0, 8192), (100, 8192), (2016, 8192), (2017, 8192), (4000, 8192),
                                            (32_000, 65536)])
def test_an_index_has_one_to_two_hash_buckets_per_position_it_starts_with(prompt, buckets):
    """The hash heads' size (half of an index's memory): per n-gram order, the power of two above the
    starting capacity (4096, or twice the prompt and 64 more), at most twice it."""
    local = LocalIndex(np.arange(prompt) % 50_000)
    cap = local.buf.shape[0]
    assert local.head.shape == (local.max_ngram, buckets) and cap < buckets <= 2 * cap
    assert local.head.dtype == np.int32


def test_an_index_past_int32_positions_is_refused():
    local = LocalIndex([1, 2, 3])
    with pytest.raises(ValueError, match="at most"):
        local.reserve(local_module.MAX_TOKENS)  # 3 + MAX_TOKENS tokens: positions would overflow int32
    assert local.tokens.tolist() == [1, 2, 3]
