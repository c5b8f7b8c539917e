"""Hand-built lookups on the index core: one row per case, the expectation written out."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastore_service.core import Document, LookupParams, NamespaceIndex, NamespaceSpec, build_segment
from sssd_wire.errors import InvalidArgument
from tests.oracle import expected

DOCS = {
    "a": [1, 2, 3, 4, 5],
    "b": [1, 2, 3, 9],
    "c": [7, 1, 2, 3, 4, 6],
    "d": [3, 4],
}


def index_of(docs: dict[str, list[int]], vocab: int = 10, segments: int = 1) -> NamespaceIndex:
    ns = NamespaceIndex(NamespaceSpec("t", vocab))
    items = list(docs.items())
    per = max(1, len(items) // segments)
    for i in range(0, len(items), per):
        ns.add([Document.of(k, v) for k, v in items[i : i + per]])
        ns.install(build_segment(100 + i, vocab, ns.freeze()))
    assert ns.check_integrity() == ""
    return ns


CASES = [
    # (context, params, match_length, occurrences, paths)
    # the full 4-token tail occurs twice, continuations 5 and 6
    ([1, 2, 3, 4], dict(depth=2), 4, 2, {(5,): 1, (6,): 1}),
    # 3-token tail "1 2 3" occurs 3 times: two continue with 4, one with 9 (then end of doc)
    ([1, 2, 3], dict(depth=2), 3, 3, {(4,): 2, (4, 5): 1, (4, 6): 1, (9,): 1}),
    # "8 3" never occurs, falls back to "3": 4 occurrences
    ([8, 3], dict(depth=1), 1, 4, {(4,): 3, (9,): 1}),
    # min_occurrences 3 skips "2 3 4" (2 occurrences) for "3 4" (3) ... still 3 >= 3
    ([2, 3, 4], dict(depth=1, min_occurrences=3), 2, 3, {(5,): 1, (6,): 1}),
    # a match at the very end of a document has no continuation but still counts
    ([3, 9], dict(depth=3), 2, 1, {}),
    # nothing at all: token 0 never appears
    ([0], dict(), 0, 0, {}),
    # min_match 2 forbids falling back to one token
    ([8, 3], dict(min_match=2), 0, 0, {}),
    # max_match 1 looks at the last token only
    ([1, 2, 3, 4], dict(max_match=1, depth=1), 1, 3, {(5,): 1, (6,): 1}),
]


@pytest.mark.parametrize("segments", [1, 2, 4])
@pytest.mark.parametrize("context,params,match,occ,paths", CASES)
def test_lookup_cases(segments, context, params, match, occ, paths):
    ns = index_of(DOCS, segments=segments)
    tree = ns.lookup([np.array(context)], LookupParams(**params))[0]
    assert (tree.match_length, tree.occurrences, tree.paths()) == (match, occ, paths)
    assert expected(list(DOCS.values()), context, **{**dict(max_match=4, min_match=1, min_occurrences=1, depth=8), **params}) == (match, occ, paths)


def test_matches_never_cross_documents():
    # "5 1" spans the boundary of a and b when joined; it must not match
    ns = index_of({"a": [4, 5], "b": [1, 2]})
    tree = ns.lookup([np.array([5, 1])], LookupParams(min_match=2))[0]
    assert tree.match_length == 0


def test_node_budget_keeps_most_frequent_connected_subtree():
    docs = {f"x{i}": [1, 2 + (i % 3), 5 + i % 2] for i in range(9)}
    ns = index_of(docs)
    tree = ns.lookup([np.array([1])], LookupParams(depth=2, max_nodes=3))[0]
    assert len(tree) == 3
    for par in tree.parents.tolist():
        assert par < len(tree)
    assert sorted(tree.counts.tolist(), reverse=True) == tree.counts.tolist()[:1] + sorted(tree.counts.tolist()[1:], reverse=True)
    assert all(c == 3 for c in tree.counts.tolist())  # three children of the root, 3 each


def test_sampling_budget_caps_reads_and_keeps_paths_real():
    docs = {f"d{i}": [1, 2, i % 7] for i in range(200)}
    ns = index_of(docs)
    tree = ns.lookup([np.array([1, 2])], LookupParams(sample_budget=16, depth=1))[0]
    assert tree.sampled == 16 and tree.occurrences == 200
    assert sum(tree.counts.tolist()) == 16
    assert set(p[0] for p in tree.paths()) <= set(range(7))


def test_deleted_documents_vanish_from_lookups_at_once():
    ns = index_of(DOCS)
    assert ns.delete(["a", "zzz", "a"]) == ["a"]  # (a repeated id: KeyError)
    tree = ns.lookup([np.array([1, 2, 3, 4])], LookupParams(depth=1))[0]
    assert (tree.match_length, tree.paths()) == (4, {(6,): 1})
    assert ns.check_integrity() == ""


BAD_DOCS = [
    # token id equal to the vocabulary size
    (Document.of("x", [1, 10]), "outside [0, 10)"),
    # negative token id (Document.of refuses one; the constructor does not check)
    (Document("x", np.array([-1, 2], dtype=np.int32)), "token id -1"),
    # empty document
    (Document.of("x", []), "is empty"),
    # empty id
    (Document.of("", [1]), "must be a string of 1..256"),
    # an id that is not a string (an int was a TypeError about len())
    (Document.of(5, [1]), "document id 5 must be a string"),
    (Document.of(b"x", [1]), "document id b'x' must be a string"),
    # control character in id
    (Document.of("a\x1fb", [1]), "printable"),
]


@pytest.mark.parametrize("doc,message", BAD_DOCS)
def test_bad_documents_are_rejected_and_change_nothing(doc, message):
    ns = index_of(DOCS)
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace(")", r"\)")):
        ns.add([Document.of("ok", [1, 2]), doc])
    assert not ns.has_document("ok") and ns.check_integrity() == ""


def test_oversized_document_rejected():
    ns = NamespaceIndex(NamespaceSpec("t", 10), max_doc_tokens=4)
    with pytest.raises(InvalidArgument, match="over the cap 4"):
        ns.add([Document.of("x", [1, 2, 3, 4, 5])])


def test_duplicate_ids_idempotent_or_conflict():
    ns = index_of(DOCS)
    assert ns.add([Document.of("a", DOCS["a"])]).duplicates == ["a"]
    # a conflicting id is refused alone; the rest of its batch is added
    result = ns.add([Document.of("a", [1, 1]), Document.of("fresh", [1, 2])])
    assert (result.conflicts, result.added) == (["a"], ["fresh"])
    assert ns.check_integrity() == ""
    with pytest.raises(InvalidArgument, match="twice in the batch"):
        ns.add([Document.of("n", [1]), Document.of("n", [2])])


def test_context_out_of_vocabulary_rejected():
    ns = index_of(DOCS)
    with pytest.raises(InvalidArgument, match="context token id 10"):
        ns.lookup([np.array([1, 10])], LookupParams())


def test_no_contexts_are_no_tries():
    """(The in-process lookup of [] failed on numpy's "need at least one array to concatenate".)"""
    assert index_of(DOCS).lookup([], LookupParams()) == [] == index_of(DOCS, segments=2).lookup([], LookupParams())


@pytest.mark.parametrize("contexts,message", [
    ([[1.5, 2]], "a context: want a flat sequence of integer token ids"),  # (truncated to 1: matched)
    ([np.array([1, 2]), np.array([2**32 + 1, 2])], "a context holds 4294967297, not a token id"),  # (wrapped to 1)
    ([np.array([1.0, 2.0])], "a context: want a flat sequence of integer token ids, not float64"),
    ([np.array([-1, 2])], "a context holds -1, not a token id"),
    (np.array([1, 2]), "contexts must be a sequence of contexts"),  # one context, not in a list (IndexError)
    ([1, 2], "contexts must be a sequence of contexts"),  # (TypeError: 'int' object is not subscriptable)
])
def test_contexts_that_are_not_token_ids_are_refused_in_process(contexts, message):
    """The in-process lookup (the Python API, the replay) checks contexts as the wire does."""
    with pytest.raises(InvalidArgument, match=message):
        index_of(DOCS).lookup(contexts, LookupParams())


@pytest.mark.parametrize("tokens,message", [
    ([1.5, 2], "document 'd': want a flat sequence of integer token ids"),  # (stored as [1, 2])
    (np.array([2**32 + 1]), "document 'd' holds 4294967297, not a token id"),  # (stored as [1])
    ([[1, 2]], "document 'd': want a flat sequence of integer token ids"),
])
def test_documents_that_are_not_token_ids_are_refused(tokens, message):
    with pytest.raises(InvalidArgument, match=message):
        Document.of("d", tokens)
    assert Document.of("d", np.array([1, 2], dtype=np.int64)).tokens.dtype == np.int32


@pytest.mark.parametrize(
    "field,value",
    [("max_match", 0), ("min_match", 5), ("sample_budget", 0), ("depth", 65), ("max_nodes", 0),
     # not integers: a float depth reached the compiled kernels (a numba typing error), "3" a TypeError
     ("depth", 2.5), ("depth", "3"), ("max_nodes", True), ("sample_budget", 64.0)],
)
def test_lookup_params_validated(field, value):
    with pytest.raises(InvalidArgument, match=f"^{field} "):
        LookupParams(**{field: value})


@pytest.mark.parametrize("kw, message", [
    ({"vocab_size": "100"}, "vocab_size '100' must be an integer, not str"),  # (it was taken, and stored)
    ({"vocab_size": 100.0}, "vocab_size 100.0 must be an integer, not float"),
    ({"vocab_size": 10, "max_tokens": 1.5}, "max_tokens 1.5 must be an integer, not float"),
])
def test_a_namespace_of_sizes_that_are_not_integers_is_refused(kw, message):
    with pytest.raises(InvalidArgument, match=f"^{re.escape(message)}$"):
        NamespaceSpec("a", **kw)


def test_numpy_integers_become_python_ints():
    """(SQLite does not store numpy's integers; the kernels compile one version for int.)"""
    spec, params = NamespaceSpec("a", np.int64(10), max_tokens=np.int32(5)), LookupParams(depth=np.int64(3))
    assert (type(spec.vocab_size), type(spec.max_tokens), type(params.depth)) == (int, int, int)


def test_integrity_checker_names_a_broken_invariant():
    ns = index_of(DOCS)
    seg = ns.segments[0]
    seg.sa[[0, 1]] = seg.sa[[1, 0]]
    assert "lexicographic order" in ns.check_integrity()
    seg.sa[[0, 1]] = seg.sa[[1, 0]]
    ns.live_tokens += 1
    assert "live_tokens" in ns.check_integrity()


@settings(max_examples=80, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=400), min_size=1, max_size=4),
       pattern=st.lists(st.integers(0, 2), min_size=1, max_size=5), bucketed=st.booleans())
def test_find_range_is_every_suffix_that_starts_with_the_pattern(docs, pattern, bucketed):
    """The suffix-array range of a pattern, searched with and without the first-token buckets,
    holds exactly the suffixes that start with it. A three-token alphabet over long documents
    makes ranges of hundreds of suffixes, so the galloping search for their end is exercised."""
    from datastore_service.core.kernels import find_range
    from datastore_service.core.segment import build_segment as build

    seg = build(1, 3, [(f"d{i}", i + 1, np.asarray(d, np.int32)) for i, d in enumerate(docs)])
    pat = np.asarray(pattern, np.int32)
    first = seg.first_off if bucketed else np.zeros(0, dtype=seg.first_off.dtype)
    lo, hi = find_range(seg.tokens, seg.sa, first, pat, pat.shape[0])
    starts = {int(p) for p in range(seg.n) if seg.tokens[p : p + pat.shape[0]].tolist() == pattern}
    assert {int(p) for p in seg.sa[lo:hi]} == starts


@settings(max_examples=80, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=400), min_size=1, max_size=4),
       patterns=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5), min_size=1, max_size=12),
       bucketed=st.booleans())
def test_find_ranges_gives_each_pattern_find_ranges_own_range(docs, patterns, bucketed):
    """The lockstep search of many patterns gives every pattern exactly the range ``find_range``
    gives it alone: patterns of different lengths side by side in one context array, one-token
    ones (a bucket) among them, ones that do not occur (token 3 never does), with and without
    the first-token buckets."""
    from datastore_service.core.kernels import find_range, find_ranges
    from datastore_service.core.segment import build_segment as build

    seg = build(1, 4, [(f"d{i}", i + 1, np.asarray(d, np.int32)) for i, d in enumerate(docs)])
    first = seg.first_off if bucketed else np.zeros(0, dtype=seg.first_off.dtype)
    ctx = np.asarray([t for p in patterns for t in p], np.int32)
    starts = np.cumsum([0] + [len(p) for p in patterns[:-1]]).astype(np.int64)
    ks = np.asarray([len(p) for p in patterns], np.int64)
    got = np.full((len(patterns), 2), -1, np.int64)
    find_ranges(seg.tokens, seg.sa, first, ctx, starts, ks, got)
    want = [find_range(seg.tokens, seg.sa, first, np.asarray(p, np.int32), len(p)) for p in patterns]
    assert [tuple(r) for r in got.tolist()] == [tuple(int(x) for x in w) for w in want]


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=1, max_size=60),
       max_nodes=st.integers(1, 80))
def test_a_trie_over_its_node_budget_keeps_the_most_frequent_nodes_in_preorder(rows, max_nodes):
    """The node budget keeps the nodes a stable sort by falling count would put first (ties in
    preorder), renumbered in preorder with their parents remapped: the kernel's histogram
    selection checked against that sort over the kernel's own untruncated trie. Token 3 is
    the separator, so rows end early and counts tie often."""
    from datastore_service.core.kernels import trie

    sorted_rows = np.asarray(sorted(rows), dtype=np.int32)
    tok, par, cnt = (a.tolist() for a in trie(sorted_rows, 3, 1 << 20))
    keep = sorted(sorted(range(len(cnt)), key=lambda i: -cnt[i])[:max_nodes])
    new_id = {old: j for j, old in enumerate(keep)}
    want = ([tok[i] for i in keep], [new_id[par[i]] if par[i] >= 0 else -1 for i in keep], [cnt[i] for i in keep])
    got = tuple(a.tolist() for a in trie(sorted_rows, 3, max_nodes))
    assert got == want
    assert all(p < j for j, p in enumerate(got[1]))  # parents first: a connected subtree


@settings(max_examples=150, deadline=None)
@given(runs=st.lists(st.lists(st.lists(st.integers(0, 3), min_size=3, max_size=3), max_size=20),
                     min_size=1, max_size=7))
def test_sorted_runs_merge_into_one_sorted_list_of_the_same_rows(runs):
    """Each segment's sampled rows come sorted; merging the runs gives all of them in order,
    for any number of runs (odd counts leave one unpaired each pass), empty ones included."""
    from datastore_service.core.kernels import merge_runs

    parts = [sorted(r) for r in runs]
    rows = np.asarray([row for part in parts for row in part], dtype=np.int32).reshape(-1, 3)
    bounds = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    assert merge_runs(rows, bounds).tolist() == sorted(rows.tolist())
