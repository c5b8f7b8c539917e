"""Verification: layout against a brute-force reference, greedy walks, sampling losslessness."""

import re

import numpy as np
import pytest
import torch

from client_sdk.types import DraftTree
from client_sdk.verification.verify import Sampling, build_batch, greedy_verify, sample_verify, target_probs


def tree(tokens, parents):
    n = len(tokens)
    return DraftTree(np.array(tokens, np.int32), np.array(parents, np.int32), np.ones(n), np.full((n, 1, 4), -1, np.int8))


def brute_mask(tr: DraftTree, cache_len: int, width: int, n: int):
    """Reference: slot i (0 = root) sees cache[:cache_len] and the slots on its root path."""
    m = np.zeros((n, width + n), bool)
    parents = [-1] + [p + 1 for p in tr.parents.tolist()]
    for i in range(n):
        if i < len(parents):
            m[i, :cache_len] = True
            j = i
            while j >= 0:
                m[i, width + j] = True
                j = parents[j] if j > 0 else -1
        else:
            m[i, width + i] = True
    return m


TREES = [
    tree([], []),  # no draft: plain decoding
    tree([5, 6, 7], [-1, 0, 1]),  # a chain
    tree([5, 6, 7, 8], [-1, -1, 0, 0]),  # two branches under the root, two under the first
    tree([1, 2, 3, 4, 5], [-1, 0, 0, 2, -1]),
]


def test_layout_matches_brute_force():
    lens = [3, 0, 5, 2]
    batch = build_batch([9, 9, 9, 9], TREES, lens, 6)
    n = batch.input_ids.shape[1]
    for b, (tr, length) in enumerate(zip(TREES, lens)):
        assert np.array_equal(batch.mask[b, 0].numpy(), brute_mask(tr, length, 6, n)), b
        depth = tr.depths().tolist()
        assert batch.positions[b, : 1 + len(tr)].tolist() == [length] + [length + d for d in depth]


def test_duplicate_siblings_and_forward_parents_are_rejected():
    with pytest.raises(ValueError, match="siblings must be unique"):
        build_batch([1], [tree([5, 5], [-1, -1])], [0], 0)
    with pytest.raises(ValueError, match="parents must precede"):
        build_batch([1], [tree([5, 6], [1, -1])], [0], 0)


@pytest.mark.parametrize("roots, lens, width, message", [
    ([9], [3, 0], 6, "2 draft trees with 1 roots and 2 cache lengths"),  # (zip dropped the second row)
    ([9, 9], [3], 6, "2 draft trees with 2 roots and 1 cache lengths"),
    ([9, 9], [7, 0], 6, "cache length 7 outside [0, cache_width 6]"),  # (it saw 6 of 7 entries)
    ([9, 9], [3, -1], 6, "cache length -1 outside [0, cache_width 6]"),
])
def test_a_batch_of_mismatched_rows_is_refused(roots, lens, width, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build_batch(roots, TREES[:2], lens, width)


def fake_logits(batch, next_of, vocab=10):
    """Deterministic logits: the target's argmax after token t is next_of[t]."""
    ids = batch.input_ids
    logits = torch.full(ids.shape + (vocab,), -5.0)
    for b in range(ids.shape[0]):
        for i in range(ids.shape[1]):
            logits[b, i, next_of[int(ids[b, i])]] = 5.0
    return logits


@pytest.mark.parametrize(
    "draft,expect_path,expect_bonus",
    [
        (tree([2, 3, 4], [-1, 0, 1]), [1, 2, 3], 5),  # all right: 3 accepted + bonus 5
        (tree([2, 9, 4], [-1, 0, 1]), [1], 3),  # wrong at depth 2: stop, bonus 3
        (tree([7, 2, 3], [-1, -1, 1]), [2, 3], 4),  # right branch is the second child
        (tree([], []), [], 2),  # empty draft: plain decoding step
    ],
)
def test_greedy_walk(draft, expect_path, expect_bonus):
    batch = build_batch([1], [draft], [4], 4)
    next_of = {i: (i + 1) % 10 for i in range(10)}
    ((path, bonus),) = greedy_verify(fake_logits(batch, next_of), batch)
    assert (path, bonus) == (expect_path, expect_bonus)


@pytest.mark.parametrize("sampling", [Sampling(1.0), Sampling(0.7, top_k=4), Sampling(1.3, top_p=0.8)])
def test_sampling_verification_reproduces_the_target(sampling):
    """First emitted token over many trials vs the target distribution (fixed seed).

    The draft has three siblings at depth 1 (one likely, one unlikely, one impossible under
    top-k) and a grandchild. Total variation must be small and shrink with more samples.
    """
    vocab = 6
    logits = torch.tensor([[[2.0, 1.0, 0.5, 0.0, -1.0, 1.5]] * 5])  # same distribution at every slot
    draft = tree([0, 5, 4, 1], [-1, -1, -1, 0])
    batch = build_batch([3], [draft], [0], 0)
    target = target_probs(logits[0, 0], sampling).numpy()
    gen = torch.Generator().manual_seed(1234)
    distances = []
    counts = np.zeros(vocab)
    for trials in (2000, 20000):
        while counts.sum() < trials:
            ((path, bonus),) = sample_verify(logits, batch, sampling, gen)
            first = int(batch.input_ids[0, path[0]]) if path else bonus
            counts[first] += 1
        distances.append(0.5 * np.abs(counts / counts.sum() - target).sum())
    assert distances[1] < 0.02 and distances[1] < distances[0] + 0.005, distances


def test_sampling_second_position_is_conditional_target():
    """Given the first accepted token, the next emitted token also follows the target."""
    logits = torch.tensor([[[1.0, 0.0, 2.0, 0.5]] * 4])
    draft = tree([2, 0, 1], [-1, 0, 0])  # root -> 2 -> {0, 1}
    batch = build_batch([3], [draft], [0], 0)
    s = Sampling(1.0)
    target = target_probs(logits[0, 0], s).numpy()
    gen = torch.Generator().manual_seed(7)
    counts = np.zeros(4)
    while counts.sum() < 20000:
        ((path, bonus),) = sample_verify(logits, batch, s, gen)
        if path and path[0] == 1:  # the first token was 2: look at the second
            second = int(batch.input_ids[0, path[1]]) if len(path) > 1 else bonus
            counts[second] += 1
    assert 0.5 * np.abs(counts / counts.sum() - target).sum() < 0.02


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=0.0), "temperature 0.0 must be a number > 0"),
    (dict(temperature=float("inf")), "temperature inf must be a number > 0"),  # (it sampled uniformly)
    (dict(temperature=float("nan")), "temperature nan must be a number > 0"),
    (dict(temperature=1.0, top_k=-1), "top_k -1 must be >= 0"),
    (dict(temperature=1.0, top_p=0.0), r"top_p 0.0 must be in \(0, 1\]"),
    (dict(temperature=1.0, top_p=1.2), r"top_p 1.2 must be in \(0, 1\]"),
    (dict(temperature=1.0, top_k=2.5), "top_k 2.5 must be an integer, not float"),  # (torch.topk's TypeError)
])
def test_sampling_out_of_range_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)
