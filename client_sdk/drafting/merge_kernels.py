"""Compiled merging of a draft's sources (numba; no torch): the request's own-text trie
(kernels) and the datastore's tries, scored by the calibration table, merged, and the best
nodes kept, for one request or a whole batch in one call. Arrays in, arrays out.

A batch's rows draft in one set of work arrays (``_work``), allocated once per call: a row's
draft allocated some thirty small arrays of its own, about a microsecond per row. The ``_*_into``
functions a row runs are inlined into their callers: a compiled call that passes twenty-odd
arrays costs their reference counting, another ~0.4 µs per row (hot caches, batch 64: 228 µs a
batch before, 180 µs with the work arrays, 142 µs inlined; first compilation +1 s).

The drafting kernels (``draft``, ``draft_rows``) merge a node's children only when the selection
takes the node (``_select_into``); merge_reference merges every source node into one tree and
scores them all before it selects, which gives the same drafts (tests/test_sdk_local_tree.py holds
the two equal). A draft keeps 1-16 nodes of the sources' hundred or so, so most of that union was
never read (in the serving simulation at batch 64 the merge went from 527 / 523 to 428 / 426 µs a
step, worst / median of three runs; BENCHMARKS.md, "Where a drafted step's critical path goes").
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
    cells [w, sources, 4] int8, proposers [w, sources] int32; w = nodes + sources + 2: the merged
    nodes, and a slot per source's root and one more)."""
    w = nodes + sources + 2
    return (np.empty((13, w), dtype=np.int32), np.empty((6, max(nodes, occ, sources + 1)), dtype=np.int64),
            np.empty((3, w), dtype=np.float64), np.empty((w, sources), dtype=np.float64),
            np.empty((w, sources, 4), dtype=np.int8), np.empty((w, sources), dtype=np.int32))


@numba.njit(**OPTS)
def _nodes(count, sources):
    """Room for ``count`` draft nodes from ``sources`` sources: (tokens, parents, scores, cells)."""
    return (np.empty(count, np.int32), np.empty(count, np.int32), np.empty(count, np.float64),
            np.empty((count, sources, 4), np.int8))


@numba.njit(inline="always", **OPTS)
def _before(key, first, a, b):
    """Whether merged node a is preferred to b: a higher score, then a shallower node (key = -score +
    depth * 1e-9), then the smaller first proposer (merge_reference's order of merged nodes)."""
    return key[a] < key[b] or (key[a] == key[b] and first[a] < first[b])


@numba.njit(inline="always", **OPTS)
def _select_into(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children,
                 i32, i64, f64, tie, cells, src, o_tok, o_par, o_score, o_cells, o):
    """merge_reference's draft (the same nodes, scores and cells in the same order), with the union
    built only as far as the selection reads it: a node's children are merged and scored when the
    node is taken (the root's first), not every node of every source. Equal keys fall in
    merge_reference's order: there a merged node's index is the order of its first proposer (sources
    back to back, each in preorder), which is what ``_before`` compares. Work arrays as ``_work``
    gives them (i32 rows 8-12 and i64 rows 3-5 are the caller's); src[j, s]: the node of source s
    that proposes merged node j (-1: none). Nodes written at o_tok[o:] ...; returns their count."""
    if budget <= 0:
        return 0
    ns = offs.shape[0] - 1
    total = offs[ns]
    limit = min(budget, max_depth)
    m_tok, m_par, m_depth, kids, new_id, first = i32[0], i32[1], i32[2], i32[5], i32[6], i32[7]
    score, key = f64[1], f64[2]
    taken, heap, roots = i64[0], i64[1], i64[2]
    fc, nxt = _child_lists(par, cnt, offs, i32[3], i32[4], roots)
    size = hsize = m = root_kids = 0
    expand = -1  # the merged node whose children are merged next (-1: the root)
    while True:
        if expand < 0 or m_depth[expand] < limit:  # (a deeper node is read by no draft of this size)
            start = size
            size = _merge_children(expand, tok, cnt, total, ns, roots, fc, nxt, slot, kb, m_tok, m_par, m_depth,
                                   first, kids, src, tie, cells, size)
            for j in range(start, size):
                score[j] = _conditional(j, ns, table, kb, combine, cells, tie) * (1.0 if expand < 0 else score[expand])
                key[j] = -score[j] + m_depth[j] * 1e-9
                hsize = _push(key, first, heap, hsize, j)
        expand = -1
        while m < budget and hsize > 0:  # take the best that the limits allow
            j, hsize = _pop(key, first, heap, hsize)
            n = root_kids if m_par[j] < 0 else kids[m_par[j]]
            if m_depth[j] > max_depth or n >= max_children:
                continue
            if m_par[j] < 0:
                root_kids += 1
            else:
                kids[m_par[j]] += 1
            taken[m] = j
            m += 1
            expand = j
            break
        if expand < 0 or m >= budget:
            break
    _write_taken(taken, m, m_tok, m_par, score, cells, new_id, o_tok, o_par, o_score, o_cells, o)
    return m


@numba.njit(inline="always", **OPTS)
def _write_taken(taken, m, tok, par, score, cells, new_id, o_tok, o_par, o_score, o_cells, o):
    """The merged nodes taken[:m] at o_tok[o:] ..., renumbered in taken's order (a node's parent
    precedes it there); new_id is a work array over the merged nodes."""
    for k in range(m):
        j = taken[k]
        new_id[j] = k
        o_tok[o + k] = tok[j]
        o_par[o + k] = -1 if par[j] < 0 else new_id[par[j]]
        o_score[o + k] = score[j]
        o_cells[o + k] = cells[j]


@numba.njit(inline="always", **OPTS)
def _child_lists(par, cnt, offs, fc, nxt, roots):
    """Each source node's children, ascending: fc[i] the first of node i's, nxt[c] the one after c
    (-1 ends a list; fc[offs[S] + s] lists source s's roots), and roots[s] their summed counts."""
    ns = offs.shape[0] - 1
    total = offs[ns]
    fc[: total + ns] = -1
    for s in range(ns):
        a = offs[s]
        roots[s] = 0
        for i in range(offs[s + 1] - 1, a - 1, -1):  # backwards, each put first
            up = total + s if par[i] < 0 else a + par[i]
            nxt[i] = fc[up]
            fc[up] = i
            if par[i] < 0:
                roots[s] += cnt[i]
    return fc, nxt


@numba.njit(inline="always", **OPTS)
def _merge_children(expand, tok, cnt, total, ns, roots, fc, nxt, slot, kb, m_tok, m_par, m_depth, first, kids, src,
                    tie, cells, size):
    """The children of merged node ``expand``'s proposers (-1: the sources' roots) as merged nodes
    from index ``size`` on, one per token, in the order merge_reference meets them, with each
    proposer's tie factor and cell (as there). Returns the new size."""
    start = size
    for s in range(ns):
        i = total + s if expand < 0 else src[expand, s]
        if i < 0:
            continue
        pc = max(roots[s] if expand < 0 else cnt[i], 1)
        c = fc[i]
        while c != -1:
            j = start
            while j < size and m_tok[j] != tok[c]:
                j += 1
            if j == size:
                size += 1
                m_tok[j], m_par[j], first[j], kids[j] = tok[c], expand, c, 0
                m_depth[j] = 1 if expand < 0 else m_depth[expand] + 1
                cells[j] = -1
                src[j] = -1
            fb, sb = _bucket(cnt[c], pc)
            src[j, s] = c
            tie[j, s] = 1.0 + TIE * (cnt[c] / pc - 0.5)
            cells[j, s, 0], cells[j, s, 1], cells[j, s, 2], cells[j, s, 3] = slot[s], kb[s], fb, sb
            c = nxt[c]
    return size


@numba.njit(inline="always", **OPTS)
def _conditional(j, ns, table, kb, combine, cells, tie):
    """Merged node j's P(accepted | parent accepted), from its proposers' cells (as merge_reference scores it)."""
    agree = 0
    for s in range(ns):
        agree += cells[j, s, 0] >= 0
    layer = (min(agree, table.shape[0] // SLOTS) - 1) * SLOTS
    v = 0.0
    for s in range(ns):
        if cells[j, s, 0] >= 0:
            q = min(table[layer + cells[j, s, 0], kb[s], cells[j, s, 2], cells[j, s, 3]] * tie[j, s], 1.0)
            v = 1.0 - (1.0 - v) * (1.0 - q) if combine == 0 else max(v, q)
    return v


@numba.njit(inline="always", **OPTS)
def _push(key, first, heap, size, j):
    """Node j onto the binary heap heap[:size] (``_before`` order); returns the new size."""
    h = size
    heap[h] = j
    while h > 0:
        up = (h - 1) // 2
        if not _before(key, first, heap[h], heap[up]):
            break
        heap[h], heap[up] = heap[up], heap[h]
        h = up
    return size + 1


@numba.njit(inline="always", **OPTS)
def _pop(key, first, heap, size):
    """(the heap's best node, the new size)."""
    j = heap[0]
    size -= 1
    heap[0] = heap[size]
    h = 0
    while True:
        lo, hi, top = 2 * h + 1, 2 * h + 2, h
        if lo < size and _before(key, first, heap[lo], heap[top]):
            top = lo
        if hi < size and _before(key, first, heap[hi], heap[top]):
            top = hi
        if top == h:
            break
        heap[h], heap[top] = heap[top], heap[h]
        h = top
    return j, size


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
    i32, i64, f64, tie, work_cells, src = _work(shape[2] + widest, per + 1, shape[1])
    n = 0
    for b in range(nb):
        s = slots[b]
        if s >= 0:
            buf, head, prev = arena_arrays(arena, s)
            n += _draft_into(buf, ns[b], indexed[b], head, prev, masks[b], r_tok, r_par, r_cnt,
                             r_offs[b * per : b * per + per + 1], r_match[b * per : b * per + per], shape, table,
                             kbuckets, i32, i64, f64, tie, work_cells, src, tok, par, score, cells, n)
        offs[b + 1] = n
    return tok[:n], par[:n], score[:n], cells[:n], offs


@numba.njit(**OPTS)
def _draft_one(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets):
    """``draft`` (its own work arrays and output)."""
    nsr = r_offs.shape[0] - 1
    budget = shape[3]
    i32, i64, f64, tie, cells, src = _work(shape[2] + r_offs[nsr] - r_offs[0], nsr + 1, shape[1])
    o_tok, o_par, o_score, o_cells = _nodes(budget, nsr + 1)
    m = _draft_into(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets,
                    i32, i64, f64, tie, cells, src, o_tok, o_par, o_score, o_cells, 0)
    return o_tok[:m], o_par[:m], o_score[:m], o_cells[:m]


@numba.njit(inline="always", **OPTS)
def _draft_into(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets,
                i32, i64, f64, tie, cells, src, o_tok, o_par, o_score, o_cells, o):
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
    return _select_into(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children,
                        i32, i64, f64, tie, cells, src, o_tok, o_par, o_score, o_cells, o)
