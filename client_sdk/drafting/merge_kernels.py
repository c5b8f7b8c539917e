"""Compiled merging of a draft's sources (numba; no torch): the request's own-text trie
(kernels) and the datastore's tries, scored by the calibration table, merged, and the best
nodes kept, for one request or a whole batch in one call. Arrays in, arrays out.

A batch's rows draft in one set of work arrays (``_work``), allocated once per call: a row's
draft allocated some thirty small arrays of its own, about a microsecond per row. The ``_*_into``
functions a row runs are inlined into their callers: a compiled call that passes twenty-odd
arrays costs their reference counting, another ~0.4 µs per row (hot caches, batch 64: 228 µs a
batch before, 180 µs with the work arrays, 142 µs inlined; first compilation +1 s).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from client_sdk.drafting.kernels import OPTS, _match_into, _trie_into, arena_arrays

# a node's conditional is its calibration cell's, scaled by 1 + TIE * (frequency - 0.5): siblings in
# one cell are ranked by their raw frequency (replay: +0.2 to +2.8 % tau at budget 4, BENCHMARKS.md)
TIE = 0.3
SLOTS = 6  # calibration slots of one table layer: 0 = the request's own text, 1.. = datastore suffix lengths


@numba.njit(inline="always", **OPTS)
def _bucket(count, parent_count):
    """Calibration cell of a node: (frequency bucket 0..4, support bucket 0..3)."""
    f = count / parent_count
    fb = 4 if f >= 0.9 else 3 if f >= 0.6 else 2 if f >= 0.35 else 1 if f >= 0.15 else 0
    sb = 0 if parent_count <= 1 else 1 if parent_count <= 3 else 2 if parent_count <= 15 else 3
    return fb, sb


@numba.njit(**OPTS)
def _work(nodes, sources, occ):
    """A draft's work arrays, for up to ``nodes`` source nodes from ``sources`` sources and ``occ``
    local occurrences: allocated once per batch and reused by every row (``_draft_into``).
    (int32 [13, w], int64 [6, max(nodes, occ, sources + 1)], float64 [3, w], tie [w, sources] float64,
    cells [w, sources, 4] int8; w = nodes + 2: the merged nodes, the root's slot and one more)."""
    w = nodes + 2
    return (np.empty((13, w), dtype=np.int32), np.empty((6, max(nodes, occ, sources + 1)), dtype=np.int64),
            np.empty((3, w), dtype=np.float64), np.empty((w, sources), dtype=np.float64),
            np.empty((w, sources, 4), dtype=np.int8))


@numba.njit(**OPTS)
def _nodes(count, sources):
    """Room for ``count`` draft nodes from ``sources`` sources: (tokens, parents, scores, cells)."""
    return (np.empty(count, np.int32), np.empty(count, np.int32), np.empty(count, np.float64),
            np.empty((count, sources, 4), np.int8))


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
    i32, _, f64, tie, cells = _work(offs[ns], ns, 0)
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


@numba.njit(inline="always", **OPTS)
def _first(key, a, b):
    """Whether node a is preferred to node b: a higher score, then a shallower node (key =
    -score + depth * 1e-9), then a lower index."""
    return key[a] < key[b] or (key[a] == key[b] and a < b)


@numba.njit(**OPTS)
def best_first(score, parents, depth, first_child, next_sib, root, budget, max_depth, max_children):
    """The best ``budget`` nodes (ties: shallower first) within the depth and branching limits,
    in the order they were taken: best first, and a node after its parent, so every prefix of
    the result is a connected tree. Only the children of nodes taken are looked at (a binary
    heap on the preference order of ``_first``), not every node sorted: a draft keeps a few of
    a few hundred merged nodes. That gives the same nodes as going down all of them in that
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
    for j in range(n):
        key[j] = -score[j] + depth[j] * 1e-9
    children[: n + 1] = 0  # taken children per node (slot n = the root)
    size = 0
    m = 0
    expand = root  # the node whose children are pushed next (-1: none)
    while True:
        c = first_child[expand] if expand >= 0 else -1
        while c != -1:  # push c
            i = size
            size += 1
            heap[i] = c
            while i > 0:
                up = (i - 1) // 2
                if not _first(key, heap[i], heap[up]):
                    break
                heap[i], heap[up] = heap[up], heap[i]
                i = up
            c = next_sib[c]
        if m >= budget or size == 0:
            break
        j = heap[0]  # pop the best
        size -= 1
        heap[0] = heap[size]
        i = 0
        while True:
            lo, hi, top = 2 * i + 1, 2 * i + 2, i
            if lo < size and _first(key, heap[lo], heap[top]):
                top = lo
            if hi < size and _first(key, heap[hi], heap[top]):
                top = hi
            if top == i:
                break
            heap[i], heap[top] = heap[top], heap[i]
            i = top
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
    """Merge S scored source tries and keep the best ``budget`` nodes.

    Source s is nodes [offs[s], offs[s+1]) of tok/par/cnt (parents local to the source, -1 =
    root), scored by table[slot[s], kb[s], frequency bucket, support bucket]. A node's score
    is the product of conditionals along its path.
    Returns (tokens, parents, scores, cells [b, S, 4] = (slot, kb, fb, sb) or -1), best node
    first (so the best k of them are the first k: DraftTree.best).
    """
    ns = offs.shape[0] - 1
    i32, i64, f64, tie, cells = _work(offs[ns], ns, 0)
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
    for k in range(m):  # renumbered: a node's parent precedes it in taken's order
        j = taken[k]
        new_id[j] = k
        o_tok[o + k] = mtok[j]
        o_par[o + k] = -1 if mpar[j] < 0 else new_id[mpar[j]]
        o_score[o + k] = score[j]
        o_cells[o + k] = cells[j]
    return m


class DraftShape(NamedTuple):
    """How big a draft may grow, and how the sources combine."""

    local_depth: int  # deepest node of the request's own trie
    local_occ: int  # earlier occurrences of the matched n-gram read
    local_nodes: int  # node cap of the request's own trie
    budget: int  # nodes kept
    max_depth: int
    max_children: int
    combine: int  # 0 = noisy-or, 1 = max


@numba.njit(**OPTS)
def draft(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets):
    """One request's draft in one call: local match + trie, then merge with the remote tries.

    buf .. mask: a LocalState's fields; r_tok, r_par, r_cnt (int32) and r_offs ([tries + 1]
    int64): the datastore's tries, trie s being nodes r_offs[s] .. r_offs[s + 1] of the flat
    arrays, found with a context suffix of r_match[s] tokens (int32); shape: a DraftShape as a
    plain tuple. Flat, because numba types a named tuple argument in Python, field by field,
    and plain arrays, ints and int tuples in C, on every call. Source 0 is the request's
    own text (calibration slot 0); remote trie s uses slot s + 1. table: [slots, kbuckets, 5, 4].
    """
    return _draft_one(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets)


@numba.njit(**OPTS)
def draft_rows(arena, slots, ns, indexed, masks, r_tok, r_par, r_cnt, r_offs, r_match, per, shape, table, kbuckets):
    """A batch's drafts in one call: row b drafts from own-text index slots[b] of the arena
    (a LocalArena's table; slots[b] < 0: not indexed yet, an empty draft) holding
    ns[b] tokens (the n-grams of the first indexed[b] positions indexed), and from remote tries
    b * per .. b * per + per - 1 (per 0: none; r_tok .. r_match and shape as for ``draft``).
    Every row drafts in the same work arrays, allocated once.

    Returns the rows' (tokens, parents, scores, cells [N, per + 1, 4]) back to back, and
    offsets [B + 1]: row b's draft is nodes offs[b] .. offs[b + 1], as ``draft`` would give it.
    """
    nb = slots.shape[0]
    tok, par, score, cells = _nodes(nb * shape[3], per + 1)
    offs = np.zeros(nb + 1, dtype=np.int64)
    widest = 0  # the most remote nodes of a row
    for b in range(nb):
        widest = max(widest, r_offs[b * per + per] - r_offs[b * per])
    i32, i64, f64, tie, work_cells = _work(shape[2] + widest, per + 1, shape[1])
    n = 0
    for b in range(nb):
        s = slots[b]
        if s >= 0:
            buf, head, prev = arena_arrays(arena, s)
            n += _draft_into(buf, ns[b], indexed[b], head, prev, masks[b], r_tok, r_par, r_cnt,
                             r_offs[b * per : b * per + per + 1], r_match[b * per : b * per + per], shape, table,
                             kbuckets, i32, i64, f64, tie, work_cells, tok, par, score, cells, n)
        offs[b + 1] = n
    return tok[:n], par[:n], score[:n], cells[:n], offs


@numba.njit(**OPTS)
def _draft_one(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets):
    """``draft`` (its own work arrays and output)."""
    nsr = r_offs.shape[0] - 1
    budget = shape[3]
    i32, i64, f64, tie, cells = _work(shape[2] + r_offs[nsr] - r_offs[0], nsr + 1, shape[1])
    o_tok, o_par, o_score, o_cells = _nodes(budget, nsr + 1)
    m = _draft_into(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets,
                    i32, i64, f64, tie, cells, o_tok, o_par, o_score, o_cells, 0)
    return o_tok[:m], o_par[:m], o_score[:m], o_cells[:m]


@numba.njit(inline="always", **OPTS)
def _draft_into(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets,
                i32, i64, f64, tie, cells, o_tok, o_par, o_score, o_cells, o):
    """``draft`` in work arrays (``_work``: for shape's local_nodes plus the row's remote nodes),
    its nodes written at o_tok[o:] ... (room for the budget). Returns their count."""
    local_depth, local_occ, local_nodes, budget, max_depth, max_children, combine = shape
    tok, par, cnt = i32[8], i32[9], i32[10]  # the sources' nodes: the own-text trie's, then the datastore's
    pos = i64[2]
    k, m = _match_into(buf, n, indexed, head, prev, mask, 1, local_occ, 4 * local_occ, pos)
    nl = 0
    if k > 0:
        nl = _trie_into(buf, n, pos[:m], local_depth, min(m * local_depth, local_nodes), tok, par, cnt, i32[11], i32[12])
    nsr = r_offs.shape[0] - 1
    base = r_offs[0]
    nr = r_offs[nsr] - base
    tok[nl : nl + nr] = r_tok[base : base + nr]
    par[nl : nl + nr] = r_par[base : base + nr]
    cnt[nl : nl + nr] = r_cnt[base : base + nr]
    offs, slot, kb = i64[3, : nsr + 2], i64[4, : nsr + 1], i64[5, : nsr + 1]
    offs[0] = 0
    for s in range(nsr + 1):
        offs[s + 1] = nl + r_offs[s] - base
        slot[s] = s
    kb[0] = min(max(k, 1), kbuckets) - 1
    for s in range(nsr):
        kb[s + 1] = min(max(r_match[s], 1), kbuckets) - 1
    return _merge_into(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children,
                       i32, i64, f64, tie, cells, o_tok, o_par, o_score, o_cells, o)
