"""Outcome-speculative prefetch: which ends of a step are prefetched, and that the prefetched
trie descended by the bonus token is the trie a fresh lookup of the committed context gives."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.drafting.outcomes import ROOT, candidates, deepest_probabilities, descend, path_tokens
from client_sdk.types import DraftTree
from datastore_service.core import Document, LookupParams, NamespaceIndex, NamespaceSpec, build_segment
from datastore_service.core.index import pack_tails


def tree(tokens, parents, scores) -> DraftTree:
    n = len(tokens)
    return DraftTree(np.array(tokens, np.int32), np.array(parents, np.int32), np.array(scores, float),
                     np.full((n, 1, 4), -1, np.int8))


CANDIDATE_CASES = [
    # (tokens, parents, scores, k, expected candidates best first)
    ([], [], [], 4, [ROOT]),  # an empty draft ends at the root
    # a chain 0.9 -> 0.6 -> 0.2: P(deepest) = 0.3, 0.4, 0.2; root 0.1
    ([5, 6, 7], [-1, 0, 1], [0.9, 0.6, 0.2], 4, [1, 0, 2, ROOT]),
    ([5, 6, 7], [-1, 0, 1], [0.9, 0.6, 0.2], 2, [1, 0]),
    # two root children 0.3 and 0.2: the root (0.5) is likeliest
    ([5, 8], [-1, -1], [0.3, 0.2], 4, [ROOT, 0, 1]),
    # a tie between the root and a node: the node first
    ([5], [-1], [0.5], 2, [0, ROOT]),
]


@pytest.mark.parametrize("tokens,parents,scores,k,expected", CANDIDATE_CASES)
def test_candidates(tokens, parents, scores, k, expected):
    assert candidates(tree(tokens, parents, scores), k) == expected


def test_deepest_probabilities_sum_to_one_for_a_consistent_tree():
    t = tree([5, 6, 7, 8], [-1, 0, 0, -1], [0.7, 0.4, 0.2, 0.1])
    root, p = deepest_probabilities(t)
    assert root == pytest.approx(0.2) and p.tolist() == pytest.approx([0.1, 0.4, 0.2, 0.1])
    assert root + p.sum() == pytest.approx(1.0)


def test_path_tokens():
    t = tree([5, 6, 7, 8], [-1, 0, 1, 0], [0.9, 0.5, 0.3, 0.2])
    assert (path_tokens(t, ROOT), path_tokens(t, 2), path_tokens(t, 3)) == ([], [5, 6, 7], [5, 8])


def index_of(docs, vocab):
    ns = NamespaceIndex(NamespaceSpec("t", vocab))
    ns.add([Document.of(f"d{i}", d) for i, d in enumerate(docs)])
    ns.install(build_segment(1, vocab, ns.freeze()))
    return ns


FULL = dict(min_occurrences=1, sample_budget=4096, max_nodes=4096)  # no sampling, no truncation


def check_descend_equals_fresh(ns, context, max_match, depth):
    """For every possible bonus token: the prefetched trie (depth + 1) descended by it equals a
    fresh lookup of context + bonus at the one-longer match (both read every occurrence)."""
    ctx = np.asarray(context, np.int32)
    pre = ns.lookup_packed(*pack_tails([ctx], max_match), LookupParams(max_match=max_match, depth=depth + 1, **FULL))
    k = int(pre.match_lengths[0])
    if k == 0:
        return 0
    first_level = sorted(set(pre.tokens[pre.parents == -1].tolist()))
    for b in first_level + [10_000]:  # and a token that never followed
        got = descend(pre, np.array([0]), np.array([b])).trie(0)
        if b == 10_000:
            assert got.match_length == 0 and len(got.tokens) == 0
            continue
        fresh = ns.lookup([np.append(ctx, b).astype(np.int32)],
                          LookupParams(max_match=k + 1, min_match=k + 1, depth=depth, **FULL))[0]
        assert got.match_length == fresh.match_length == k + 1
        assert got.occurrences == fresh.occurrences
        assert got.tokens.tolist() == fresh.tokens.tolist()
        assert got.parents.tolist() == fresh.parents.tolist()
        assert got.counts.tolist() == fresh.counts.tolist()
    return len(first_level)


DESCEND_CASES = [
    # (documents, context, max_match, depth)
    ([[1, 2, 3, 4, 5], [1, 2, 3, 6, 7], [2, 3, 4, 5, 9]], [9, 2, 3], 2, 3),
    ([[1, 2, 3, 4, 5], [1, 2, 3, 6, 7], [2, 3, 4, 5, 9]], [1, 2], 4, 2),
    ([[4, 4, 4, 4, 4, 4]], [4, 4], 2, 4),  # overlapping occurrences
    ([[1, 2], [1, 3], [1, 2, 5]], [1], 1, 1),  # continuations that end with their document
]


@pytest.mark.parametrize("docs,context,max_match,depth", DESCEND_CASES)
def test_descend_equals_a_fresh_lookup(docs, context, max_match, depth):
    assert check_descend_equals_fresh(index_of(docs, 12), context, max_match, depth) > 0


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=30), min_size=1, max_size=6),
       context=st.lists(st.integers(0, 5), min_size=1, max_size=6),
       max_match=st.integers(1, 4), depth=st.integers(1, 5))
def test_descend_equals_a_fresh_lookup_property(docs, context, max_match, depth):
    ns = index_of(docs, 6)
    assert ns.check_integrity() == ""
    check_descend_equals_fresh(ns, context, max_match, depth)


def test_descend_keeps_a_trie_whole_without_a_bonus_and_empties_a_missing_source():
    ns = index_of([[1, 2, 3, 4, 5]], 8)
    pre = ns.lookup_packed(*pack_tails([np.array([1, 2], np.int32)], 2), LookupParams(depth=3))
    whole = descend(pre, np.array([0, -1]), np.array([-1, 3]))
    assert whole.trie(0).tokens.tolist() == pre.trie(0).tokens.tolist() and whole.trie(0).match_length == 2
    assert len(whole.trie(1).tokens) == 0 and whole.trie(1).match_length == 0
    with pytest.raises(ValueError, match="trie 1 asked of a batch of 1"):  # not a read past the answer
        descend(pre, np.array([1]), np.array([3]))


class ShortAnswers:
    """A datastore whose prefetch answers hold one trie, whatever was asked (a misaligned answer)."""

    def __init__(self, ns):
        self.ns = ns

    def request(self, key, contexts, samples=None):
        self.asked = contexts

    def collect(self, key, contexts, deadline_s):
        return self.ns.lookup_packed(*pack_tails(self.asked[:1], 4), LookupParams(depth=3))


def test_a_prefetch_answer_that_does_not_hold_its_picks_is_counted_not_read(caplog):
    from client_sdk.drafting.config import SpeculatorConfig
    from client_sdk.drafting.speculator import Speculator

    spec = Speculator(SpeculatorConfig(fixed_budget=4, trie_cache=0, unigram_table=False),
                      remote=ShortAnswers(index_of([[1, 2, 3, 4, 5, 1, 2, 3, 4, 6]], 8)))
    spec.start("r", [1, 2, 3, 1, 2])
    for step in range(4):
        (tree,) = spec.draft(["r"])
        spec.prefetch(["r"])
        spec.commit("r", [3, 4], tree, tree.longest_match([3]))
    assert spec.counts["misaligned"] >= 1 and "not used" in caplog.text


def reference_ask(batch, rows, histories, k, lengths):
    """ask_for_ends written with candidates() and path_tokens() per draft, one dict of contexts."""
    from client_sdk.drafting.cache import unpad

    contexts, index = [], {}
    ends = np.full((batch.tokens.shape[0] + len(batch), len(lengths)), -1, dtype=np.int64)
    trees = batch.trees()
    for row, history in zip(rows, histories):
        tree = trees[row]
        for node in candidates(tree, k):
            end = np.concatenate([unpad(history), np.asarray(path_tokens(tree, node), dtype=np.int32)])
            slots = []
            for n in lengths:
                key = end[-n:].tobytes()
                if key not in index:
                    index[key] = len(contexts)
                    contexts.append(end[-n:])
                slots.append(index[key])
            ends[batch.offsets[row] + node if node >= 0 else batch.tokens.shape[0] + row] = slots
    return [c.tolist() for c in contexts], ends


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.floats(0.01, 1.0)), max_size=10), min_size=1, max_size=6),
       st.integers(1, 5), st.data())
def test_ask_for_ends_equals_candidates_per_draft(rows_nodes, k, data):
    """The step's likely ends in one compiled pass ask what candidates() and path_tokens() give
    per draft, deduplicated in the same order, and map each end to the same contexts."""
    from client_sdk.drafting.cache import pad_tail
    from client_sdk.drafting.outcomes import ask_for_ends
    from client_sdk.types import DraftBatch

    trees = []
    for nodes in rows_nodes:  # random trees, scores never increasing down a path
        tokens, parents, scores = [], [], []
        for i, (tok, s) in enumerate(nodes):
            parent = data.draw(st.integers(-1, i - 1))
            tokens.append(tok)
            parents.append(parent)
            scores.append(s if parent < 0 else scores[parent] * s)
        trees.append(tree(tokens, parents, scores))
    batch = DraftBatch.of(trees)
    rows = data.draw(st.lists(st.integers(0, len(trees) - 1), unique=True, min_size=1))
    histories = np.stack([pad_tail(np.asarray(data.draw(st.lists(st.integers(0, 6), max_size=5)), np.int32), 4)
                          for _ in rows])
    lengths = (4, 2, 1)
    contexts, ends = ask_for_ends(batch, np.asarray(rows, dtype=np.int64), histories, k, lengths)
    want_contexts, want_ends = reference_ask(batch, rows, histories, k, lengths)
    assert [c.tolist() for c in contexts] == want_contexts
    np.testing.assert_array_equal(ends, want_ends)


@pytest.mark.parametrize("n", [3, 10])  # the per-request path and the batched one
def test_pick_ends_reads_the_row_of_each_accepted_end(n):
    from client_sdk.drafting.outcomes import pick_ends
    from client_sdk.types import DraftBatch

    batch = DraftBatch.of([tree([5, 6], [-1, 0], [0.9, 0.5]), tree([7], [-1], [0.4])])  # 3 nodes, 2 rows
    ends = np.full((3 + 2, 2), -1, dtype=np.int64)
    ends[1] = [10, 11]  # row 0, node 1
    ends[3] = [20, 21]  # row 0, nothing accepted
    ends[2] = [30, 31]  # row 1, node 0
    cases = [(0, 1, True, [10, 11]), (0, -1, True, [20, 21]), (1, 0, True, [30, 31]), (0, 0, True, None),
             (1, -1, True, None), (0, 1, False, None), (-1, 0, True, None)]  # not asked / not that path / not drafted
    cases = (cases * 2)[:n]
    rows, end, valid, want = zip(*cases)
    assert pick_ends(ends, batch, list(rows), list(end), list(valid)) == list(want)
    # a step that drafted nothing has an empty table: no row to read
    assert pick_ends(np.full((0, 2), -1, np.int64), DraftBatch.empty(0), [-1] * n, [-1] * n, [True] * n) == [None] * n


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_accepted_picks_reads_what_pick_ends_reads(data):
    """step_kernels.accepted_picks: what each draft accepted (accepted_rows) and the prefetched
    slots of the end its committed tokens are, as outcomes.pick_ends reads them from the table;
    step_kernels.commit_outcomes: the same, and drafted_outcomes', in one call."""
    from client_sdk.drafting import step_kernels
    from client_sdk.drafting.outcomes import pick_ends
    from client_sdk.types import DraftBatch

    sizes = data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=4))
    toks, pars = [], []
    for n in sizes:
        for i in range(n):
            pars.append(data.draw(st.integers(-1, i - 1)))
            toks.append(data.draw(st.integers(0, 3)))
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    batch = DraftBatch(np.asarray(toks, np.int32), np.asarray(pars, np.int32), np.ones(len(toks)),
                       np.full((len(toks), 1, 4), -1, np.int8), offs, True)
    width = data.draw(st.integers(1, 3))
    ends = np.asarray(data.draw(st.lists(st.lists(st.integers(-1, 9), min_size=width, max_size=width),
                                         min_size=len(toks) + len(sizes), max_size=len(toks) + len(sizes))),
                      np.int64).reshape(-1, width)
    m = data.draw(st.integers(1, 10))  # pick_ends reads a few rows in Python, more with numpy
    rows = np.asarray([data.draw(st.integers(-1, len(sizes) - 1)) for _ in range(m)], np.int64)
    new = [data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4)) for _ in range(m)]
    new_offs = np.concatenate([[0], np.cumsum([len(t) for t in new])]).astype(np.int64)
    flat = np.asarray([t for ts in new for t in ts], np.int32)
    length, end = step_kernels.accepted_rows(batch.tokens, batch.parents, offs, rows, flat, new_offs)
    want = pick_ends(ends, batch, rows, end, length == np.diff(new_offs) - 1)
    got_length, got_end, picks, has = step_kernels.accepted_picks(batch.tokens, batch.parents, offs, rows, flat,
                                                                  new_offs, ends)
    assert got_length.tolist() == length.tolist() and got_end.tolist() == end.tolist()
    assert [p if h else None for p, h in zip(picks.tolist(), has.tolist())] == [None if w is None else list(w)
                                                                                for w in want]
    # commit_outcomes, the Speculator's one call per step: the offsets from the counts, these picks
    # (none when no end was asked) and drafted_outcomes of what was accepted
    asked = data.draw(st.booleans())
    counts = np.asarray([len(t) for t in new], np.int64)
    got = step_kernels.commit_outcomes(batch.tokens, batch.parents, offs, batch.scores, rows, flat, counts,
                                       ends if asked else np.full((0, width), -1, np.int64))
    assert got[0].tolist() == new_offs.tolist()
    assert got[1].tolist() == (picks.tolist() if asked else [[-1] * width] * m)
    assert got[2].tolist() == (has.tolist() if asked else [False] * m)
    want_outcomes = step_kernels.drafted_outcomes(offs, batch.scores, rows, length, end)
    assert [a.tolist() for a in got[3:]] == [b.tolist() for b in want_outcomes]


@pytest.mark.parametrize("rows, want_rows, want_expected", [
    ([0, 1, 2], [0, 2], [0.9 + 0.5, 0.25]),  # row 1's draft is empty: nothing to learn or record
    ([-1, 2, 0], [2, 0], [0.25, 1.4]),  # no draft (-1); the entries keep their order
    ([-1, 1], [], []),
])
def test_drafted_outcomes_keeps_the_entries_with_a_draft_and_sums_their_scores(rows, want_rows, want_expected):
    from client_sdk.drafting import step_kernels

    offs = np.asarray([0, 2, 2, 3], np.int64)  # row 0: two nodes, row 1: none, row 2: one
    scores = np.asarray([0.9, 0.5, 0.25])
    rows = np.asarray(rows, np.int64)
    length, end = np.arange(len(rows), dtype=np.int64) + 10, np.arange(len(rows), dtype=np.int64) + 20
    r, r_end, r_len, expected = step_kernels.drafted_outcomes(offs, scores, rows, length, end)
    assert r.tolist() == want_rows
    keep = [i for i, b in enumerate(rows.tolist()) if b in want_rows]
    assert r_end.tolist() == [20 + i for i in keep] and r_len.tolist() == [10 + i for i in keep]
    assert expected.tolist() == pytest.approx(want_expected)
