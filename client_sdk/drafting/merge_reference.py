"""The reference way to a draft (numba; arrays in, arrays out): every node of every source merged
into one tree and scored (``_union``), then the best nodes selected best first (``best_first``).
The drafting kernels (merge_kernels: ``draft``, ``draft_rows``) give the same drafts by merging a
node's children only when their selection takes it; tests/test_sdk_local_tree.py holds the two
equal, and checks this selection against sorting every node.
"""

from __future__ import annotations

import numba
import numpy as np

from client_sdk.drafting.kernels import OPTS
from client_sdk.drafting.merge_kernels import SLOTS, TIE, _bucket, _nodes, _pop, _push, _work, _write_taken


@numba.njit(**OPTS)
def _union(tok, par, cnt, offs, slot, kb, table, combine, limit):
    """The union of S source tries with each node's conditional P(accepted | parent accepted),
    their nodes deeper than ``limit`` left out (a draft of at most ``limit`` nodes and levels
    never takes one: its ancestors would fill it first).

    A node's conditional from source s is table[slot[s] + (a - 1) * SLOTS, kb[s], frequency
    bucket, support bucket] for a node that a sources propose (the table's layers: a node that
    several sources propose is accepted more often; a table of SLOTS slots has one layer, and
    a beyond the layers takes the last). Where sources share a path their conditionals combine
    by noisy-or (combine 0) or max (combine 1). Returns (tokens, parents, conditionals, depths,
    cells [n, S, 4]: each source's (slot, kb, buckets) or -1, first_child [cap + 1], next_sib) of
    the n merged nodes (first_child[cap] = the root's; -1 ends a list); a node is created after
    its parent, so index order is topological.
    """
    ns = offs.shape[0] - 1
    i32, _, f64, tie, cells, _ = _work(offs[ns], ns, 0)
    size = _union_into(tok, par, cnt, offs, slot, kb, table, combine, limit, i32, f64, tie, cells)
    cap = offs[ns] + 1
    return i32[0, :size], i32[1, :size], f64[0, :size], i32[2, :size], cells[:size], i32[3, : cap + 1], i32[4, :cap]


@numba.njit(inline="always", **OPTS)
def _union_into(tok, par, cnt, offs, slot, kb, table, combine, limit, i32, f64, tie, cells):
    """``_union`` into work arrays (``_work``, for at least offs[S] nodes): the merged nodes'
    tokens, parents, depths, first_child, next_sib and the sources' node map in i32 rows 0-5,
    conditionals in f64 row 0, tie and cells. Returns the merged node count."""
    mtok, mpar, mdepth, first_child, next_sib, node_map = i32[0], i32[1], i32[2], i32[3], i32[4], i32[5]
    mcond = f64[0]
    ns = offs.shape[0] - 1
    cap = offs[ns] + 1
    layers = table.shape[0] // SLOTS
    first_child[: cap + 1] = -1  # slot cap = root
    size = 0
    for s in range(ns):
        a, b = offs[s], offs[s + 1]
        root = 0
        for i in range(a, b):
            if par[i] < 0:
                root += cnt[i]
        for i in range(a, b):
            pl = par[i]
            if pl >= 0 and (node_map[a + pl] < 0 or mdepth[node_map[a + pl]] >= limit):
                node_map[i] = -1  # too deep (or under a node that is)
                continue
            pc = max(root if pl < 0 else cnt[a + pl], 1)
            fb, sb = _bucket(cnt[i], pc)
            mp = cap if pl < 0 else node_map[a + pl]
            j = first_child[mp]
            while j != -1 and mtok[j] != tok[i]:
                j = next_sib[j]
            if j == -1:
                j = size
                size += 1
                mtok[j] = tok[i]
                mpar[j] = -1 if mp == cap else mp
                mdepth[j] = 1 if mp == cap else mdepth[mp] + 1
                next_sib[j] = first_child[mp]
                first_child[mp] = j
                cells[j] = -1
            node_map[i] = j
            tie[j, s] = 1.0 + TIE * (cnt[i] / pc - 0.5)
            cells[j, s, 0] = slot[s]
            cells[j, s, 1] = kb[s]
            cells[j, s, 2] = fb
            cells[j, s, 3] = sb
    for j in range(size):  # the conditionals, once each node's sources are known
        agree = 0
        for s in range(ns):
            agree += cells[j, s, 0] >= 0
        layer = (min(agree, layers) - 1) * SLOTS
        m = 0.0
        for s in range(ns):
            if cells[j, s, 0] >= 0:
                c = min(table[layer + cells[j, s, 0], kb[s], cells[j, s, 2], cells[j, s, 3]] * tie[j, s], 1.0)
                m = 1.0 - (1.0 - m) * (1.0 - c) if combine == 0 else max(m, c)
        mcond[j] = m
    return size


@numba.njit(**OPTS)
def best_first(score, parents, depth, first_child, next_sib, root, budget, max_depth, max_children):
    """The best ``budget`` nodes (ties: shallower first) within the depth and branching limits,
    in the order they were taken: best first, and a node after its parent, so every prefix of
    the result is a connected tree. Only the children of nodes taken are looked at (a binary
    heap in merge_kernels' order, equal keys to the lower index), not every node sorted: a draft
    keeps a few of a few hundred merged nodes. That gives the same nodes as going down all of them in that
    order, as a node always comes after its parent (scores never increase down a path, and a
    child is one level deeper). first_child[root] lists the root's children, first_child[j]
    node j's; next_sib chains siblings."""
    n = score.shape[0]
    taken = np.empty(n, dtype=np.int64)
    m = _best_into(score, parents, depth, first_child, next_sib, root, budget, max_depth, max_children, n,
                   np.empty(n, np.float64), np.empty(n, np.int64), taken, np.empty(n + 1, np.int32))
    return taken[:m]


@numba.njit(inline="always", **OPTS)
def _best_into(score, parents, depth, first_child, next_sib, root, budget, max_depth, max_children, n, key, heap,
               taken, children):
    """``best_first`` of the first n nodes into taken[:m] (room for min(budget, n)); key, heap
    (n) and children (n + 1) are work arrays. Returns m."""
    index = np.arange(n)  # ties to the lower index
    for j in range(n):
        key[j] = -score[j] + depth[j] * 1e-9
    children[: n + 1] = 0  # taken children per node (slot n = the root)
    size = 0
    m = 0
    expand = root  # the node whose children are pushed next (-1: none)
    while True:
        c = first_child[expand] if expand >= 0 else -1
        while c != -1:
            size = _push(key, index, heap, size, c)
            c = next_sib[c]
        if m >= budget or size == 0:
            break
        j, size = _pop(key, index, heap, size)
        expand = -1
        pslot = n if parents[j] < 0 else parents[j]
        if depth[j] > max_depth or children[pslot] >= max_children:
            continue
        children[pslot] += 1
        taken[m] = j
        m += 1
        expand = j
    return m


@numba.njit(**OPTS)
def merge_sources(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children):
    """Merge S scored source tries and keep the best ``budget`` nodes: every node merged and
    scored first (the reference that the drafting kernels' ``_select_into`` is tested against).

    Source s is nodes [offs[s], offs[s+1]) of tok/par/cnt (parents local to the source, -1 =
    root), scored by table[slot[s], kb[s], frequency bucket, support bucket]. A node's score
    is the product of conditionals along its path.
    Returns (tokens, parents, scores, cells [b, S, 4] = (slot, kb, fb, sb) or -1), best node
    first (so the best k of them are the first k: DraftTree.best).
    """
    ns = offs.shape[0] - 1
    i32, i64, f64, tie, cells, _ = _work(offs[ns], ns, 0)
    o_tok, o_par, o_score, o_cells = _nodes(budget, ns)
    m = _merge_into(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children,
                    i32, i64, f64, tie, cells, o_tok, o_par, o_score, o_cells, 0)
    return o_tok[:m], o_par[:m], o_score[:m], o_cells[:m]


@numba.njit(inline="always", **OPTS)
def _merge_into(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children,
                i32, i64, f64, tie, cells, o_tok, o_par, o_score, o_cells, o):
    """``merge_sources`` with work arrays (``_work``), its nodes written at o_tok[o:] ... (room for
    budget). Returns their count."""
    size = _union_into(tok, par, cnt, offs, slot, kb, table, combine, min(budget, max_depth), i32, f64, tie, cells)
    mtok, mpar, mdepth, first_child, next_sib, new_id, children = i32[0], i32[1], i32[2], i32[3], i32[4], i32[6], i32[7]
    score = f64[1]
    for j in range(size):  # index order is topological
        score[j] = f64[0, j] if mpar[j] < 0 else score[mpar[j]] * f64[0, j]
    taken = i64[0]
    m = _best_into(score, mpar, mdepth, first_child, next_sib, offs[offs.shape[0] - 1] + 1, budget, max_depth,
                   max_children, size, f64[2], i64[1], taken, children)
    _write_taken(taken, m, mtok, mpar, score, cells, new_id, o_tok, o_par, o_score, o_cells, o)
    return m
