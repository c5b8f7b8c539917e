"""The index's integrity checker (``NamespaceIndex.check_integrity``), which the property tests,
the crash tests and ``sssd check`` trust to find a broken index: each invariant, broken on
purpose in an index of two segments, is named (not passed as ok)."""

import dataclasses

import numpy as np
import pytest

from tests.test_index_cases import DOCS, index_of

# Two segments: 100 holds a [1 2 3 4 5] and b [1 2 3 9], 102 holds c [7 1 2 3 4 6] and d [3 4].


def _share_id(ns):
    ns.segments[1].segment_id = ns.segments[0].segment_id


def _homeless(ns):  # registered, but in no segment, memtable or build
    ns._docs["a"].segment = None


def _dead_slot(ns):  # a registered document's slot marked deleted
    ns.segments[0].alive[0] = False


def _other_seq(ns):
    ns._docs["a"].seq = 999


def _unregistered(ns):  # a live slot that the registry does not know
    del ns._docs["d"]
    ns.live_tokens -= 2


def _same_seq(ns):  # two documents with one sequence number, each agreeing with its slot
    ns._docs["c"].seq = ns._docs["a"].seq
    ns.segments[1].doc_seqs[0] = ns._docs["a"].seq


def _over_cap(ns):
    ns.spec = dataclasses.replace(ns.spec, max_tokens=5)


def _wide_tokens(ns):
    ns.segments[0].tokens = ns.segments[0].tokens.astype(np.int64)


def _sa_out_of_range(ns):
    ns.segments[0].sa[0] = ns.segments[0].n


def _extra_doc_id(ns):
    ns.segments[0].doc_ids += ("x",)


def _short_offsets(ns):
    ns.segments[0].doc_starts[-1] -= 1


def _no_separator(ns):  # a's separator overwritten by a token
    seg = ns.segments[0]
    seg.tokens[seg.doc_starts[1] - 1] = 1


def _separator_inside(ns):
    ns.segments[0].tokens[0] = ns.segments[0].sep


def _negative_token(ns):
    ns.segments[0].tokens[0] = -1


def _seqs_swapped(ns):  # the segment's order reversed; the registry agrees slot by slot, in its own order
    seg = ns.segments[0]
    seg.doc_seqs[:] = seg.doc_seqs[::-1].copy()
    ns._docs["a"].seq, ns._docs["b"].seq = int(seg.doc_seqs[0]), int(seg.doc_seqs[1])
    ns._docs = {k: ns._docs[k] for k in ("b", "a", "c", "d")}


def _stale_buckets(ns):
    ns.segments[0].first_off[3] += 1


def _sa_repeats(ns):  # in range, but one suffix twice and another never
    ns.segments[0].sa[0] = ns.segments[0].sa[1]


def _sa_unsorted(ns):
    sa = ns.segments[0].sa
    sa[[0, 1]] = sa[[1, 0]]


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (_share_id, "two segments share an id"),
        (_homeless, "document 'a' is in no segment, memtable or build"),
        (_dead_slot, "document 'a' points at a missing or dead segment slot"),
        (_other_seq, "document 'a' sequence differs from its segment slot"),
        (_unregistered, "4 live segment slots but 3 registered segment documents"),
        (_same_seq, "registry is not in strictly increasing sequence order"),
        (_over_cap, "retention violated: 17 live tokens > max_tokens 5"),
        (_wide_tokens, "segment 100: tokens and suffix array must be int32"),
        (_sa_out_of_range, "segment 100: suffix array entries outside the token array"),
        (_extra_doc_id, "segment 100: document tables of different lengths"),
        (_short_offsets, "segment 100: document offsets do not cover the token array"),
        (_no_separator, "segment 100: a document is not followed by the separator"),
        (_separator_inside, "segment 100: a separator appears inside a document"),
        (_negative_token, "segment 100: token id outside [0, vocab]"),
        (_seqs_swapped, "segment 100: document sequence numbers are not increasing"),
        (_stale_buckets, "segment 100: first-token bucket table does not match the tokens"),
        (_sa_repeats, "segment 100: suffix array is not a permutation"),
        (_sa_unsorted, "segment 100: suffix array is out of lexicographic order at entry 1"),
    ],
)
def test_each_broken_invariant_is_named(corrupt, message):
    ns = index_of(DOCS, segments=2)
    assert [s.segment_id for s in ns.segments] == [100, 102] and ns.check_integrity() == ""
    corrupt(ns)
    assert message in ns.check_integrity()


@pytest.mark.parametrize("corrupt", [_sa_repeats, _sa_unsorted])
def test_the_shallow_check_leaves_the_suffix_arrays_order_to_the_deep_one(corrupt):
    """deep=False skips the O(n) permutation and order checks (the rest are cheap)."""
    ns = index_of(DOCS, segments=2)
    corrupt(ns)
    assert ns.check_integrity(deep=False) == "" and ns.check_integrity(deep=True) != ""
