"""bench/outcome_coverage.py: the ranking of a step's (end, bonus token) outcomes."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from client_sdk.types import DraftTree
from sssd_wire.types import TrieBatch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "outcome_coverage.py"
spec = importlib.util.spec_from_file_location("outcome_coverage", SCRIPT)
outcome_coverage = sys.modules.setdefault("outcome_coverage", importlib.util.module_from_spec(spec))
spec.loader.exec_module(outcome_coverage)


@pytest.mark.parametrize("text, expected", [
    ([], {}),
    ([5], {}),
    ([1, 2, 3, 4], {}),  # nothing repeats
    ([1, 2, 3, 1, 2], {3: 1}),  # [1, 2] occurred before, then 3
    ([7, 7, 7], {7: 1}),  # [7, 7] at 0, then 7
    ([1, 2, 9, 2, 1, 2], {9: 1}),  # the longest suffix that occurred is [1, 2] (not [2]: 9 and 1)
    ([4, 5, 4, 6, 4], {5: 1, 6: 1}),  # [4] twice before
])
def test_own_text_candidates_follow_the_longest_earlier_match(text, expected):
    assert dict(outcome_coverage.own_next(text)) == expected


def _tries(level1: list[dict[int, int]]) -> TrieBatch:
    tokens, counts, offsets = [], [], [0]
    for first in level1:
        tokens += list(first)
        counts += list(first.values())
        offsets.append(len(tokens))
    n = len(tokens)
    return TrieBatch(np.asarray(tokens, np.int32), np.full(n, -1, np.int32), np.asarray(counts, np.int32),
                     np.asarray(offsets, np.int64), np.zeros((len(level1), 3), np.int64))


def test_outcomes_rank_by_the_end_probability_times_the_bonus_frequency_without_drafted_children():
    # root -> 10 (0.6) -> 30 (0.3); root -> 20 (0.2). P(end): root 0.2, 10: 0.3, 20: 0.2, 30: 0.3
    tree = DraftTree(np.array([10, 20, 30], np.int32), np.array([-1, -1, 0], np.int32), np.array([0.6, 0.2, 0.3]),
                     np.zeros((3, 1, 4), np.int8))
    asked = []

    def lookup(contexts):
        asked.extend(c.tolist() for c in contexts)
        # the contexts in node order: root, 10, 20, 30
        return _tries([{10: 5, 20: 3, 40: 2}, {30: 9, 50: 1}, {60: 1, 61: 3}, {}])

    pairs, kids = outcome_coverage.ranked_outcomes(tree, [1, 2, 3], lookup)
    assert asked == [[1, 2, 3], [1, 2, 3, 10], [1, 2, 3, 20], [1, 2, 3, 10, 30]]
    assert kids[-1] == [0, 1] and kids[0] == [2]
    got = {(n, b): round(p, 6) for p, n, b in pairs}
    # drafted children (10, 20 at the root; 30 at node 0) are never a bonus token there
    assert got == {(-1, 40): 0.1, (0, 50): 0.15, (1, 61): 0.075, (1, 60): 0.025}
    assert [(n, b) for _, n, b in pairs] == [(0, 50), (-1, 40), (1, 61), (1, 60)]
