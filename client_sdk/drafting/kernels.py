"""Compiled hot loops of drafting (numba; no torch). Arrays in, arrays out.

Local index layout (one per request): ``buf[:n]`` holds prompt + output tokens. For every
n-gram length k in 1..K, ``head[k-1, h]`` is the latest position p such that the k tokens
before p hash to h, and ``prev[k-1, p]`` chains to the previous such position (-1 ends a
chain). Appending a token costs O(K^2); matching walks at most a bounded number of chain
links, so neither depends on the context length.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

OPTS = dict(cache=True, nogil=True, boundscheck=False)
NIL = -1
# a node's conditional is its calibration cell's, scaled by 1 + TIE * (frequency - 0.5): siblings in
# one cell are ranked by their raw frequency (replay: +0.2 to +2.8 % tau at budget 4, BENCHMARKS.md)
TIE = 0.3
SLOTS = 6  # calibration slots of one table layer: 0 = the request's own text, 1.. = datastore suffix lengths


@numba.njit(inline="always", **OPTS)
def _hash(buf, end, k, mask):
    h = np.uint64(1469598103934665603)
    for j in range(end - k, end):
        h = (h ^ np.uint64(buf[j] + 1)) * np.uint64(1099511628211)
    return np.int64(h & np.uint64(mask))


@numba.njit(**OPTS)
def local_index(buf, lo, hi, head, prev, mask):
    """Index the n-grams ending at positions lo + 1 .. hi (the tokens buf[:hi] are written)."""
    kmax = head.shape[0]
    for n in range(lo + 1, hi + 1):
        for k in range(1, min(kmax, n) + 1):
            h = _hash(buf, n, k, mask)
            prev[k - 1, n] = head[k - 1, h]
            head[k - 1, h] = n


@numba.njit(**OPTS)
def local_append(buf, n, new, head, prev, mask):
    """Append ``new`` at buf[n:], index the n-grams that now end there; returns the new n."""
    buf[n : n + new.shape[0]] = new
    local_index(buf, n, n + new.shape[0], head, prev, mask)
    return n + new.shape[0]


@numba.njit(**OPTS)
def write_rows(bufs, heads, prevs, slots, ns, indexed, masks, new, offs):
    """A batch's committed tokens written, their n-grams left to ``index_rows``: index slots[b]
    of the arena (ns[b] tokens written, the n-grams of the first indexed[b] positions indexed,
    room ensured by the caller) first indexes what it had pending, then gets
    new[offs[b]:offs[b + 1]] after its tokens. Returns the rows' new token counts."""
    out = ns.copy()
    for b in range(slots.shape[0]):
        s = slots[b]
        local_index(bufs[s], indexed[b], ns[b], heads[s], prevs[s], masks[b])
        m = offs[b + 1] - offs[b]
        bufs[s][ns[b] : ns[b] + m] = new[offs[b] : offs[b + 1]]
        out[b] = ns[b] + m
    return out


@numba.njit(**OPTS)
def index_rows(bufs, heads, prevs, slots, indexed, ns, masks):
    """``local_index`` of every row's pending positions (indexed[b] + 1 .. ns[b]) in one call."""
    for b in range(slots.shape[0]):
        s = slots[b]
        local_index(bufs[s], indexed[b], ns[b], heads[s], prevs[s], masks[b])


@numba.njit(**OPTS)
def gather_tails(bufs, slots, ns, width):
    """[B, width] int32: the last ``width`` tokens of arena index slots[b] (holding ns[b]
    tokens), -1 before a shorter text and in every row whose slot is < 0."""
    out = np.full((slots.shape[0], width), -1, dtype=np.int32)
    for b in range(slots.shape[0]):
        s = slots[b]
        if s >= 0:
            k = min(width, ns[b])
            out[b, width - k :] = bufs[s][ns[b] - k : ns[b]]
    return out


@numba.njit(**OPTS)
def local_match(buf, n, indexed, head, prev, mask, kmin, max_occ, max_walk):
    """(k, positions): longest k >= kmin whose last-k-gram occurred before, most recent first.

    positions are where the continuation of each earlier occurrence starts (< n). Positions
    past ``indexed`` (written, their n-grams not yet in head / prev) are scanned directly, as
    the most recent links of the chains they would head: the result is what full indexing gives.
    """
    kmax = min(head.shape[0], n)
    out = np.empty(max_occ, dtype=np.int64)
    for k in range(kmax, kmin - 1, -1):
        h = _hash(buf, n, k, mask)
        m = 0
        walked = 0
        p = n - 1
        while p > indexed and p >= k and m < max_occ and walked < max_walk:
            if _hash(buf, p, k, mask) == h:
                walked += 1
                if _same(buf, p, n, k):
                    out[m] = p
                    m += 1
            p -= 1
        p = prev[k - 1, n] if indexed == n and head[k - 1, h] == n else head[k - 1, h]
        while p != NIL and m < max_occ and walked < max_walk:
            walked += 1
            if p < n and _same(buf, p, n, k):
                out[m] = p
                m += 1
            p = prev[k - 1, p]
        if m > 0:
            return k, out[:m]
    return 0, out[:0]


@numba.njit(inline="always", **OPTS)
def _same(buf, p, n, k):
    """Whether the k tokens before p are the k before n."""
    for j in range(k):
        if buf[p - k + j] != buf[n - k + j]:
            return False
    return True


@numba.njit(**OPTS)
def rows_trie(buf, n, positions, depth, max_nodes):
    """Trie (tokens, parents, counts) of the continuations buf[p : p + depth] (cut at n)."""
    cap = min(positions.shape[0] * depth, max_nodes)
    tok = np.empty(cap, dtype=np.int32)
    par = np.empty(cap, dtype=np.int32)
    cnt = np.zeros(cap, dtype=np.int32)
    first_child = np.full(cap + 1, -1, dtype=np.int32)  # slot cap = the root
    next_sib = np.full(cap, -1, dtype=np.int32)
    size = 0
    for p in positions:
        node = cap
        for d in range(min(depth, n - p)):
            t = buf[p + d]
            c = first_child[node]
            while c != -1 and tok[c] != t:
                c = next_sib[c]
            if c == -1:
                if size == cap:
                    break
                c = size
                size += 1
                tok[c] = t
                par[c] = node if node != cap else -1
                next_sib[c] = first_child[node]
                first_child[node] = c
            cnt[c] += 1
            node = c
    return tok[:size], par[:size], cnt[:size]


@numba.njit(inline="always", **OPTS)
def _bucket(count, parent_count):
    """Calibration cell of a node: (frequency bucket 0..4, support bucket 0..3)."""
    f = count / parent_count
    fb = 4 if f >= 0.9 else 3 if f >= 0.6 else 2 if f >= 0.35 else 1 if f >= 0.15 else 0
    sb = 0 if parent_count <= 1 else 1 if parent_count <= 3 else 2 if parent_count <= 15 else 3
    return fb, sb


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
    cap = offs[ns] + 1
    layers = table.shape[0] // SLOTS
    mtok = np.empty(cap, dtype=np.int32)
    mpar = np.empty(cap, dtype=np.int32)
    mcond = np.zeros(cap, dtype=np.float64)
    mdepth = np.zeros(cap, dtype=np.int32)
    first_child = np.full(cap + 1, -1, dtype=np.int32)  # slot cap = root
    next_sib = np.full(cap, -1, dtype=np.int32)
    cells = np.full((cap, ns, 4), -1, dtype=np.int8)
    tie = np.empty((cap, ns), dtype=np.float64)  # each source's tie-break factor (where cells say it proposes)
    node_map = np.empty(offs[ns], dtype=np.int32)
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
    return mtok[:size], mpar[:size], mcond[:size], mdepth[:size], cells[:size], first_child, next_sib


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
    key = np.empty(n, dtype=np.float64)
    for j in range(n):
        key[j] = -score[j] + depth[j] * 1e-9
    heap = np.empty(n, dtype=np.int64)
    taken = np.empty(min(budget, n), dtype=np.int64)
    children = np.zeros(n + 1, dtype=np.int32)  # taken children per node (slot n = the root)
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
    return taken[:m]


@numba.njit(**OPTS)
def renumber(idx, parents):
    """(idx, their parents renumbered into idx's order; -1 = root). Parents precede children in idx."""
    new_id = np.full(parents.shape[0], -1, dtype=np.int32)
    out_par = np.empty(idx.shape[0], dtype=np.int32)
    for k in range(idx.shape[0]):
        j = idx[k]
        new_id[j] = k
        out_par[k] = -1 if parents[j] < 0 else new_id[parents[j]]
    return idx, out_par


@numba.njit(**OPTS)
def merge_sources(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children):
    """Merge S scored source tries and keep the best ``budget`` nodes.

    Source s is nodes [offs[s], offs[s+1]) of tok/par/cnt (parents local to the source, -1 =
    root), scored by table[slot[s], kb[s], frequency bucket, support bucket]. A node's score
    is the product of conditionals along its path.
    Returns (tokens, parents, scores, cells [b, S, 4] = (slot, kb, fb, sb) or -1), best node
    first (so the best k of them are the first k: DraftTree.best).
    """
    mtok, mpar, mcond, mdepth, cells, first_child, next_sib = _union(tok, par, cnt, offs, slot, kb, table, combine,
                                                                     min(budget, max_depth))
    score = np.empty(mtok.shape[0], dtype=np.float64)
    for j in range(mtok.shape[0]):  # index order is topological
        score[j] = mcond[j] if mpar[j] < 0 else score[mpar[j]] * mcond[j]
    taken = best_first(score, mpar, mdepth, first_child, next_sib, first_child.shape[0] - 1, budget, max_depth,
                       max_children)
    idx, out_par = renumber(taken, mpar)
    return mtok[idx], out_par, score[idx], cells[idx]


class LocalState(NamedTuple):
    """A request's own-text index, as the kernels see it (see the module docstring)."""

    buf: np.ndarray  # [cap] int32
    n: int  # tokens in buf (0: do not draft from the request's own text)
    indexed: int  # the positions whose n-grams are in head / prev (<= n)
    head: np.ndarray  # [K, mask + 1] int32
    prev: np.ndarray  # [K, cap + 1] int32
    mask: int


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
def draft_rows(bufs, heads, prevs, slots, ns, indexed, masks, r_tok, r_par, r_cnt, r_offs, r_match, per, shape, table,
               kbuckets):
    """A batch's drafts in one call: row b drafts from own-text index slots[b] of the arena
    (bufs / heads / prevs, typed lists; slots[b] < 0: not indexed yet, an empty draft) holding
    ns[b] tokens (the n-grams of the first indexed[b] positions indexed), and from remote tries
    b * per .. b * per + per - 1 (per 0: none; r_tok .. r_match and shape as for ``draft``).

    Returns the rows' (tokens, parents, scores, cells [N, per + 1, 4]) back to back, and
    offsets [B + 1]: row b's draft is nodes offs[b] .. offs[b + 1], as ``draft`` would give it.
    """
    nb = slots.shape[0]
    cap = nb * shape[3]
    tok = np.empty(cap, dtype=np.int32)
    par = np.empty(cap, dtype=np.int32)
    score = np.empty(cap, dtype=np.float64)
    cells = np.empty((cap, per + 1, 4), dtype=np.int8)
    offs = np.zeros(nb + 1, dtype=np.int64)
    n = 0
    for b in range(nb):
        s = slots[b]
        if s >= 0:
            t, p, sc, c = _draft_one(bufs[s], ns[b], indexed[b], heads[s], prevs[s], masks[b], r_tok, r_par, r_cnt,
                                     r_offs[b * per : b * per + per + 1], r_match[b * per : b * per + per],
                                     shape, table, kbuckets)
            k = t.shape[0]
            tok[n : n + k] = t
            par[n : n + k] = p
            score[n : n + k] = sc
            cells[n : n + k] = c
            n += k
        offs[b + 1] = n
    return tok[:n], par[:n], score[:n], cells[:n], offs


@numba.njit(**OPTS)
def _draft_one(buf, n, indexed, head, prev, mask, r_tok, r_par, r_cnt, r_offs, r_match, shape, table, kbuckets):
    local_depth, local_occ, local_nodes, budget, max_depth, max_children, combine = shape
    k, pos = local_match(buf, n, indexed, head, prev, mask, 1, local_occ, 4 * local_occ)
    if k > 0:
        l_tok, l_par, l_cnt = rows_trie(buf, n, pos, local_depth, local_nodes)
    else:
        l_tok = np.empty(0, dtype=np.int32)
        l_par = np.empty(0, dtype=np.int32)
        l_cnt = np.empty(0, dtype=np.int32)
    nl = l_tok.shape[0]
    nsr = r_offs.shape[0] - 1
    base = r_offs[0]
    nr = r_offs[nsr] - base
    tok = np.empty(nl + nr, dtype=np.int32)
    par = np.empty(nl + nr, dtype=np.int32)
    cnt = np.empty(nl + nr, dtype=np.int32)
    tok[:nl] = l_tok
    par[:nl] = l_par
    cnt[:nl] = l_cnt
    tok[nl:] = r_tok[base : base + nr]
    par[nl:] = r_par[base : base + nr]
    cnt[nl:] = r_cnt[base : base + nr]
    offs = np.empty(nsr + 2, dtype=np.int64)
    offs[0] = 0
    for s in range(nsr + 1):
        offs[s + 1] = nl + r_offs[s] - base
    slot = np.arange(nsr + 1).astype(np.int64)
    kb = np.empty(nsr + 1, dtype=np.int64)
    kb[0] = min(max(k, 1), kbuckets) - 1
    for s in range(nsr):
        kb[s + 1] = min(max(r_match[s], 1), kbuckets) - 1
    return merge_sources(tok, par, cnt, offs, slot, kb, table, combine, budget, max_depth, max_children)
