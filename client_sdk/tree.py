"""Draft trees: merging scored source tries and choosing the best nodes within a budget.

Vocabulary (used the same way by metrics): a *draft* is the tree of proposed tokens; a node
is *tested* when its parent was accepted (or it hangs off the root); it is *accepted* when
it is on the verified path; the *bonus* token is the target's own next token after the
last accepted node.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from client_sdk import kernels
from client_sdk.local import LocalIndex
from client_sdk.types import Continuation

SOURCES = ("local", "remote")
K_BUCKETS = 4  # match lengths 1, 2, 3, 4+
# initial P(accepted | parent accepted) per (frequency bucket, support bucket); learned online
PRIOR = np.outer([0.05, 0.2, 0.4, 0.6, 0.8], [0.7, 0.85, 0.95, 1.0])
PRIOR_WEIGHT = 20.0


@dataclasses.dataclass(frozen=True)
class DraftTree:
    """A draft: parallel arrays in topological order; parents[i] == -1 = child of the root.

    The root is the last committed token and is not part of the arrays.
    """

    tokens: np.ndarray  # [b] int32
    parents: np.ndarray  # [b] int32
    scores: np.ndarray  # [b] float64: estimated probability that the node is accepted
    origin: np.ndarray  # [b, 2] int32: node index in the local / remote trie, or -1
    cells: np.ndarray  # [b, 2, 3] int8: calibration cell (k, f, s) per source, -1 if absent

    @staticmethod
    def empty() -> "DraftTree":
        z = np.zeros(0, dtype=np.int32)
        return DraftTree(z, z, np.zeros(0), np.zeros((0, 2), np.int32), np.zeros((0, 2, 3), np.int8))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def depths(self) -> np.ndarray:
        d = np.zeros(len(self), dtype=np.int32)
        for i, p in enumerate(self.parents.tolist()):
            d[i] = 1 if p < 0 else d[p] + 1
        return d

    def ancestor_mask(self) -> np.ndarray:
        """[b, b] bool: mask[i, j] is True when j is i or an ancestor of i."""
        b = len(self)
        mask = np.eye(b, dtype=bool)
        for i, p in enumerate(self.parents.tolist()):
            if p >= 0:
                mask[i] |= mask[p]
        return mask

    def longest_match(self, truth: np.ndarray) -> list[int]:
        """Node indices of the longest root path whose tokens equal ``truth`` (greedy replay)."""
        path: list[int] = []
        parent = -1
        toks, pars = self.tokens.tolist(), self.parents.tolist()
        for want in truth.tolist():
            nxt = next((i for i in range(len(toks)) if pars[i] == parent and toks[i] == want), -1)
            if nxt < 0:
                break
            path.append(nxt)
            parent = nxt
        return path


class Calibration:
    """P(node accepted | parent accepted) per source and cell, learned from verification.

    table[s, k, f, support] is a Beta posterior mean with prior PRIOR and weight PRIOR_WEIGHT.
    """

    def __init__(self) -> None:
        shape = (len(SOURCES), K_BUCKETS) + PRIOR.shape
        self.hits = np.broadcast_to(PRIOR * PRIOR_WEIGHT, shape).copy()
        self.tests = np.full(shape, PRIOR_WEIGHT)
        self.table = self.hits / self.tests

    def update(self, tree: DraftTree, accepted: list[int]) -> None:
        """Record which tested nodes were accepted (accepted = node indices of the path)."""
        if not len(tree):
            return
        on_path = np.zeros(len(tree), dtype=bool)
        on_path[accepted] = True
        parent_ok = np.where(tree.parents < 0, True, on_path[np.maximum(tree.parents, 0)])
        for s in range(len(SOURCES)):
            cells = tree.cells[:, s]
            tested = parent_ok & (cells[:, 0] >= 0)
            if not tested.any():
                continue
            idx = (s, cells[tested, 0], cells[tested, 1], cells[tested, 2])
            np.add.at(self.tests, idx, 1.0)
            np.add.at(self.hits, idx, on_path[tested].astype(np.float64))
            self.table[s] = self.hits[s] / self.tests[s]


def draft_tree(local: LocalIndex, remote: Continuation, cal: Calibration, budget: int, max_depth: int = 8,
               max_children: int = 8, local_occ: int = 8, use_local: bool = True) -> DraftTree:
    """The best ``budget`` nodes of the merged local (request's own n-grams) and remote tries.

    One compiled call; ``remote`` may be empty (datastore unavailable or not asked).
    """
    if budget <= 0:
        return DraftTree.empty()
    r_kb = min(max(remote.match_length, 1), K_BUCKETS) - 1
    n = local.n if use_local else 0
    tok, par, score, origin, cells = kernels.draft(
        local.buf, n, local.head, local.prev, local.mask, max_depth, local_occ, 4 * budget + 8,
        remote.tokens, remote.parents, remote.counts, r_kb, cal.table, budget, max_depth, max_children, K_BUCKETS,
    )
    return DraftTree(tok, par, score, origin, cells)
