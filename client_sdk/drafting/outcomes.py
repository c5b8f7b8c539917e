"""Outcome-speculative prefetch: ask the datastore, while a step verifies, for every context
the step is likely to end in, so that the next step's tries are at hand when it starts.

A step that verifies draft tree T ends with the deepest accepted node v of T (or nothing
accepted: the root) followed by the bonus token b, which only verification reveals. The
datastore is therefore asked for the context ending at v, one level deeper than drafting
needs; once verification says (v, b), the trie's root-level node of token b and its subtree
is the trie of the committed context (step_kernels.descend_tries): one match token longer, its
occurrences those that continue with b.

Candidates are ranked by the probability that each is the deepest accepted node: with node
scores read as acceptance probabilities, P(v deepest) = score(v) - sum of its children's
scores, and P(root) = 1 - sum of the root-level scores.
"""

from __future__ import annotations

import numpy as np

from client_sdk.drafting import step_kernels
from client_sdk.types import DraftTree
from sssd_wire.types import TrieBatch

ROOT = -1


def deepest_probabilities(tree: DraftTree) -> tuple[float, np.ndarray]:
    """(P(nothing accepted), P(node i is the deepest accepted) per node)."""
    if len(tree) == 0:
        return 1.0, np.zeros(0)
    under = np.zeros(len(tree))
    inner = tree.parents >= 0
    np.add.at(under, tree.parents[inner], tree.scores[inner])
    root = float(max(0.0, 1.0 - tree.scores[~inner].sum()))
    return root, np.maximum(tree.scores - under, 0.0)


def candidates(tree: DraftTree, k: int) -> list[int]:
    """The k likeliest ends of verifying ``tree``, best first: node indices, ROOT for none accepted."""
    root, p = deepest_probabilities(tree)
    order = np.argsort(-p, kind="stable")[:k].tolist()
    pos = int(np.searchsorted(-p[order], -root, side="right")) if order else 0  # ties: nodes first
    return (order[:pos] + [ROOT] + order[pos:])[:k] if k > 0 else []


def path_nodes(tree: DraftTree, node: int) -> list[int]:
    """The nodes from the root's child down to ``node`` (empty for ROOT)."""
    out = []
    parents = tree.parents
    while node >= 0:
        out.append(node)
        node = int(parents[node])
    return out[::-1]


def path_tokens(tree: DraftTree, node: int) -> list[int]:
    """The tokens from the root down to ``node`` (empty for ROOT)."""
    out = []
    while node >= 0:
        out.append(int(tree.tokens[node]))
        node = int(tree.parents[node])
    return out[::-1]


def descend(batch: TrieBatch, src: np.ndarray, bonus: np.ndarray) -> TrieBatch:
    """Trie j of the result: trie src[j] of ``batch`` descended by bonus[j] (see the module
    docstring; src[j] = -1 or no such child: empty; bonus[j] = -1: the trie as it is)."""
    tok, par, cnt, offs, meta = step_kernels.descend_tries(batch.tokens, batch.parents, batch.counts, batch.node_offsets,
                                                      batch.meta, np.asarray(src, np.int64),
                                                      np.asarray(bonus, np.int64))
    return TrieBatch(tok, par, cnt, offs, meta)
