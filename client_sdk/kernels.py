"""Compiled hot loops of drafting (numba; no torch). Arrays in, arrays out.

Local index layout (one per request): ``buf[:n]`` holds prompt + output tokens. For every
n-gram length k in 1..K, ``head[k-1, h]`` is the latest position p such that the k tokens
before p hash to h, and ``prev[k-1, p]`` chains to the previous such position (-1 ends a
chain). Appending a token costs O(K^2); matching walks at most a bounded number of chain
links, so neither depends on the context length.
"""

from __future__ import annotations

import numba
import numpy as np

OPTS = dict(cache=True, nogil=True, boundscheck=False)
NIL = -1


@numba.njit(inline="always", **OPTS)
def _hash(buf, end, k, mask):
    h = np.uint64(1469598103934665603)
    for j in range(end - k, end):
        h = (h ^ np.uint64(buf[j] + 1)) * np.uint64(1099511628211)
    return np.int64(h & np.uint64(mask))


@numba.njit(**OPTS)
def local_append(buf, n, new, head, prev, mask):
    """Append ``new`` at buf[n:], index the n-grams that now end there; returns the new n."""
    kmax = head.shape[0]
    for t in new:
        buf[n] = t
        n += 1
        for k in range(1, min(kmax, n) + 1):
            h = _hash(buf, n, k, mask)
            prev[k - 1, n] = head[k - 1, h]
            head[k - 1, h] = n
    return n


@numba.njit(**OPTS)
def local_match(buf, n, head, prev, mask, kmin, max_occ, max_walk):
    """(k, positions): longest k >= kmin whose last-k-gram occurred before, most recent first.

    positions are where the continuation of each earlier occurrence starts (< n).
    """
    kmax = min(head.shape[0], n)
    out = np.empty(max_occ, dtype=np.int64)
    for k in range(kmax, kmin - 1, -1):
        h = _hash(buf, n, k, mask)
        p = prev[k - 1, n] if head[k - 1, h] == n else head[k - 1, h]
        m = 0
        walked = 0
        while p != NIL and m < max_occ and walked < max_walk:
            walked += 1
            if p < n:
                same = True
                for j in range(k):
                    if buf[p - k + j] != buf[n - k + j]:
                        same = False
                        break
                if same:
                    out[m] = p
                    m += 1
            p = prev[k - 1, p]
        if m > 0:
            return k, out[:m]
    return 0, out[:0]


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
def source_probs(parents, counts, root_count, table):
    """Calibrated conditional probability of each node of a source trie.

    table[fb, sb] = P(node accepted | parent accepted) for that cell (learned online).
    Returns (cond [N] float64, fb [N], sb [N]).
    """
    n = parents.shape[0]
    cond = np.empty(n, dtype=np.float64)
    fbs = np.empty(n, dtype=np.int8)
    sbs = np.empty(n, dtype=np.int8)
    for i in range(n):
        pc = root_count if parents[i] < 0 else counts[parents[i]]
        fb, sb = _bucket(counts[i], max(pc, 1))
        cond[i] = table[fb, sb]
        fbs[i] = fb
        sbs[i] = sb
    return cond, fbs, sbs


@numba.njit(**OPTS)
def merge_select(tok_a, par_a, cond_a, tok_b, par_b, cond_b, budget, max_depth, max_children):
    """Merge two scored tries (noisy-or where paths coincide) and keep the best ``budget`` nodes.

    Node score = product of merged conditional probabilities along its path. Scores never
    increase down a path, so the best nodes (ties: shallower first) form a connected tree.
    Returns (tokens, parents, scores, origin) in topological order; origin[i] = (index in a
    or -1, index in b or -1).
    """
    na, nb = tok_a.shape[0], tok_b.shape[0]
    cap = na + nb
    tok = np.empty(cap, dtype=np.int32)
    par = np.empty(cap, dtype=np.int32)
    cond = np.empty(cap, dtype=np.float64)
    depth = np.empty(cap, dtype=np.int32)
    ia = np.full(cap, -1, dtype=np.int32)
    ib = np.full(cap, -1, dtype=np.int32)
    map_a = np.empty(na, dtype=np.int32)
    map_b = np.empty(nb, dtype=np.int32)
    size = 0
    for i in range(na):
        p = par_a[i]
        tok[size] = tok_a[i]
        par[size] = -1 if p < 0 else map_a[p]
        depth[size] = 1 if p < 0 else depth[map_a[p]] + 1
        cond[size] = cond_a[i]
        ia[size] = i
        map_a[i] = size
        size += 1
    for i in range(nb):
        p = -1 if par_b[i] < 0 else map_b[par_b[i]]
        found = -1
        for j in range(size):  # small tries: a scan beats a hash map here
            if par[j] == p and tok[j] == tok_b[i]:
                found = j
                break
        if found >= 0:
            cond[found] = 1.0 - (1.0 - cond[found]) * (1.0 - cond_b[i])
            ib[found] = i
            map_b[i] = found
        else:
            tok[size] = tok_b[i]
            par[size] = p
            depth[size] = 1 if p < 0 else depth[p] + 1
            cond[size] = cond_b[i]
            ib[size] = i
            map_b[i] = size
            size += 1
    score = np.empty(size, dtype=np.float64)
    for j in range(size):  # parents precede children in both inputs, hence here too
        score[j] = cond[j] if par[j] < 0 else score[par[j]] * cond[j]
    order = np.argsort(-score[:size] + depth[:size] * 1e-9, kind="mergesort")
    keep = np.zeros(size, dtype=np.bool_)
    children = np.zeros(size + 1, dtype=np.int32)  # slot size = the root
    taken = 0
    for j in order:
        if taken >= budget:
            break
        p = par[j]
        if depth[j] > max_depth or (p >= 0 and not keep[p]):
            continue
        slot = size if p < 0 else p
        if children[slot] >= max_children:
            continue
        keep[j] = True
        children[slot] += 1
        taken += 1
    new_id = np.full(size, -1, dtype=np.int32)
    out_tok = np.empty(taken, dtype=np.int32)
    out_par = np.empty(taken, dtype=np.int32)
    out_score = np.empty(taken, dtype=np.float64)
    origin = np.empty((taken, 2), dtype=np.int32)
    k = 0
    for j in range(size):  # index order is topological
        if keep[j]:
            new_id[j] = k
            out_tok[k] = tok[j]
            out_par[k] = -1 if par[j] < 0 else new_id[par[j]]
            out_score[k] = score[j]
            origin[k, 0] = ia[j]
            origin[k, 1] = ib[j]
            k += 1
    return out_tok, out_par, out_score, origin


@numba.njit(**OPTS)
def _cells(parents, counts, kb):
    n = parents.shape[0]
    root = 0
    for i in range(n):
        if parents[i] < 0:
            root += counts[i]
    cells = np.empty((n, 3), dtype=np.int8)
    for i in range(n):
        pc = root if parents[i] < 0 else counts[parents[i]]
        fb, sb = _bucket(counts[i], max(pc, 1))
        cells[i, 0] = kb
        cells[i, 1] = fb
        cells[i, 2] = sb
    return cells


@numba.njit(**OPTS)
def draft(buf, n, head, prev, mask, local_depth, local_occ, local_nodes,
          r_tok, r_par, r_cnt, r_kb, table, budget, max_depth, max_children, kbuckets):
    """One request's draft in one call: local match + trie, scoring of both sources, merge, select.

    table: [2, kbuckets, 5, 4] calibrated probabilities (source 0 local, 1 remote).
    Returns (tokens, parents, scores, origin [b, 2], cells [b, 2, 3]).
    """
    k, pos = local_match(buf, n, head, prev, mask, 1, local_occ, 4 * local_occ)
    if k > 0:
        l_tok, l_par, l_cnt = rows_trie(buf, n, pos, local_depth, local_nodes)
    else:
        l_tok = np.empty(0, dtype=np.int32)
        l_par = np.empty(0, dtype=np.int32)
        l_cnt = np.empty(0, dtype=np.int32)
    l_kb = min(max(k, 1), kbuckets) - 1
    l_cells = _cells(l_par, l_cnt, l_kb)
    r_cells = _cells(r_par, r_cnt, r_kb)
    l_cond = np.empty(l_tok.shape[0], dtype=np.float64)
    for i in range(l_tok.shape[0]):
        l_cond[i] = table[0, l_kb, l_cells[i, 1], l_cells[i, 2]]
    r_cond = np.empty(r_tok.shape[0], dtype=np.float64)
    for i in range(r_tok.shape[0]):
        r_cond[i] = table[1, r_kb, r_cells[i, 1], r_cells[i, 2]]
    tok, par, score, origin = merge_select(l_tok, l_par, l_cond, r_tok, r_par, r_cond, budget, max_depth, max_children)
    cells = np.full((tok.shape[0], 2, 3), -1, dtype=np.int8)
    for i in range(tok.shape[0]):
        if origin[i, 0] >= 0:
            cells[i, 0] = l_cells[origin[i, 0]]
        if origin[i, 1] >= 0:
            cells[i, 1] = r_cells[origin[i, 1]]
    return tok, par, score, origin, cells
