"""Compiled hot loops of the index (numba, cached on disk after the first call).

Everything here works on plain arrays. Token arrays are padded past their end (see
segment.PAD), and every document ends with the separator ``sep`` (greater than any token and
never in a pattern), so a comparison or gather that starts inside the text stops at a
separator before it could leave the array.
"""

from __future__ import annotations

import numba
import numpy as np

NOPYTHON = dict(cache=True, nogil=True, boundscheck=False)


@numba.njit(inline="always", **NOPYTHON)
def _cmp_at(tokens, p, pat, start, k):
    """Sign of (suffix at p, first k tokens) - pat[start : start + k]."""
    for j in range(k):
        t = tokens[p + j]
        q = pat[start + j]
        if t != q:
            return -1 if t < q else 1
    return 0


@numba.njit(inline="always", **NOPYTHON)
def _range_end(tokens, sa, lo, end, pat, start, k):
    """The end of the range of pat[start : start + k] that begins at lo (sa[lo] starts with it, and
    no suffix from ``end`` on does): a galloping search from lo, then a binary one. A range of c
    suffixes costs about 2 log2(c) comparisons, and most ranges of longer patterns are short."""
    step = 1
    while lo + step < end and _cmp_at(tokens, sa[lo + step], pat, start, k) == 0:
        step *= 2
    a = lo + step // 2 + 1
    b = min(lo + step, end)
    while a < b:
        mid = (a + b) >> 1
        if _cmp_at(tokens, sa[mid], pat, start, k) == 0:
            a = mid + 1
        else:
            b = mid
    return a


@numba.njit(**NOPYTHON)
def find_range(tokens, sa, first_off, pat, k):
    """Suffix-array range [lo, hi) of suffixes starting with pat[:k].

    first_off: [vocab + 2] start of each first-token bucket, or empty to search all of sa.
    A one-token pattern's range is its bucket. Otherwise a binary search for lo, which also
    keeps the first suffix seen past the pattern as a bound on hi, then ``_range_end``.
    """
    if first_off.shape[0] > 0:
        a = first_off[pat[0]]
        end = first_off[pat[0] + 1]
        if k == 1:
            return a, end
    else:
        a = 0
        end = sa.shape[0]
    b = end
    while a < b:
        mid = (a + b) >> 1
        c = _cmp_at(tokens, sa[mid], pat, 0, k)
        if c < 0:
            a = mid + 1
        else:
            b = mid
            if c > 0:
                end = mid  # every suffix from mid on sorts after the pattern
    lo = a
    if lo >= end:
        return lo, lo
    return lo, _range_end(tokens, sa, lo, end, pat, 0, k)


@numba.njit(**NOPYTHON)
def find_ranges(tokens, sa, first_off, ctx, starts, ks, out):
    """``find_range`` of many patterns at once: pattern i is ctx[starts[i] : starts[i] + ks[i]],
    its range goes to out[i] = (lo, hi). The same ranges as one ``find_range`` call each.

    The binary searches for lo run in lockstep: each round takes one step of every search still
    going. One search over a large suffix array waits on a cache miss at each step (the suffix's
    position, then its tokens); the steps of different searches do not depend on each other, so
    the processor overlaps their misses. The search for hi (``_range_end``) then runs pattern by
    pattern, next to lo, as in ``find_range``.
    """
    n = starts.shape[0]
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    going = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        if first_off.shape[0] > 0:
            t0 = ctx[starts[i]]
            a[i], end[i] = first_off[t0], first_off[t0 + 1]
        else:
            a[i], end[i] = 0, sa.shape[0]
        b[i] = end[i]
        if ks[i] == 1 and first_off.shape[0] > 0:  # a one-token pattern's range is its bucket
            out[i, 0], out[i, 1] = a[i], end[i]
            continue
        going[m] = i
        m += 1
    while m > 0:
        w = 0
        for g in range(m):
            i = going[g]
            if a[i] >= b[i]:
                continue
            mid = (a[i] + b[i]) >> 1
            c = _cmp_at(tokens, sa[mid], ctx, starts[i], ks[i])
            if c < 0:
                a[i] = mid + 1
            else:
                b[i] = mid
                if c > 0:
                    end[i] = mid  # every suffix from mid on sorts after the pattern
            going[w] = i
            w += 1
        m = w
    for i in range(n):
        if ks[i] == 1 and first_off.shape[0] > 0:
            continue
        lo = a[i]
        out[i, 0] = lo
        out[i, 1] = lo if lo >= end[i] else _range_end(tokens, sa, lo, end[i], ctx, starts[i], ks[i])


@numba.njit(**NOPYTHON)
def sample_rows(tokens, sa, lo, hi, take, k, depth, alive, doc_starts, filter_dead):
    """ContinuationTree rows of ``take`` evenly spaced occurrences in sa[lo:hi], dead docs dropped.

    Returns rows [m, depth] in suffix order (m <= take).
    """
    c = hi - lo
    rows = np.empty((take, depth), dtype=np.int32)
    m = 0
    for i in range(take):
        p = sa[lo + (i * c) // take]
        if filter_dead:
            d = np.searchsorted(doc_starts, p, "right") - 1
            if not alive[d]:
                continue
        for j in range(depth):
            rows[m, j] = tokens[p + k + j]
        m += 1
    return rows[:m]


@numba.njit(**NOPYTHON)
def trie(rows, sep, max_nodes):
    """(tokens, parents, counts) of the trie of lexicographically sorted rows.

    A row ends at its first ``sep``. Nodes come in depth-first preorder (parents first). When
    there are more than max_nodes, the most frequent are kept (stable: ties keep preorder), a
    connected subtree because a parent's count is at least its child's.
    """
    s, depth = rows.shape
    cap = s * depth
    tok = np.empty(cap, dtype=np.int32)
    par = np.empty(cap, dtype=np.int32)
    start = np.empty(cap, dtype=np.int64)
    cnt = np.zeros(cap, dtype=np.int32)
    stack = np.empty(depth, dtype=np.int64)
    top = 0
    n = 0
    for i in range(s):
        lcp = 0
        if i > 0:
            while lcp < top and rows[i, lcp] == rows[i - 1, lcp]:
                lcp += 1
            for d in range(lcp, top):
                cnt[stack[d]] = i - start[stack[d]]
            top = lcp
        for d in range(lcp, depth):
            t = rows[i, d]
            if t == sep:
                break
            tok[n] = t
            par[n] = stack[top - 1] if top > 0 else -1
            start[n] = i
            stack[top] = n
            top += 1
            n += 1
    for d in range(top):
        cnt[stack[d]] = s - start[stack[d]]
    if n <= max_nodes:
        return tok[:n].copy(), par[:n].copy(), cnt[:n].copy()
    return _most_frequent(tok, par, cnt, n, s, max_nodes)


@numba.njit(**NOPYTHON)
def _most_frequent(tok, par, cnt, n, most, keep):
    """The ``keep`` most frequent of nodes [0, n), ties in preorder, renumbered in preorder.

    Counts lie in [1, most], so a histogram finds the threshold count in O(n + most): every
    node above it is kept, and the first nodes (in preorder) at it fill the rest. This is the
    same set as a stable sort by falling count, without the sort.
    """
    hist = np.zeros(most + 2, dtype=np.int64)
    for i in range(n):
        hist[cnt[i]] += 1
    above, cut = 0, most
    while above + hist[cut] < keep:  # nodes with counts > cut number `above`; keep > above
        above += hist[cut]
        cut -= 1
    ties = keep - above  # how many nodes with count == cut are kept (the first in preorder)
    new_id = np.full(n, -1, dtype=np.int32)
    out_tok = np.empty(keep, dtype=np.int32)
    out_par = np.empty(keep, dtype=np.int32)
    out_cnt = np.empty(keep, dtype=np.int32)
    j = 0
    for i in range(n):
        c = cnt[i]
        if c < cut or (c == cut and ties == 0):
            continue
        if c == cut:
            ties -= 1
        p = par[i]
        new_id[i] = j
        out_tok[j], out_par[j], out_cnt[j] = tok[i], (new_id[p] if p >= 0 else -1), c
        j += 1
    return out_tok, out_par, out_cnt


@numba.njit(**NOPYTHON)
def first_unsorted(tokens, sa, n, width):
    """Index i where suffix sa[i] < sa[i-1] in their first ``width`` tokens, else -1."""
    for i in range(1, n):
        a = sa[i - 1]
        b = sa[i]
        for j in range(width):
            if b + j >= n:
                return i  # b is a proper prefix of a, so b < a
            if a + j >= n:
                break
            ta = tokens[a + j]
            tb = tokens[b + j]
            if ta != tb:
                if tb < ta:
                    return i
                break
    return -1


@numba.njit(inline="always", **NOPYTHON)
def _row_less(rows, i, j):
    for d in range(rows.shape[1]):
        if rows[i, d] != rows[j, d]:
            return rows[i, d] < rows[j, d]
    return False


@numba.njit(**NOPYTHON)
def merge_runs(rows, bounds):
    """Rows in lexicographic order, given that rows[bounds[r] : bounds[r + 1]] are each sorted
    (one run per segment): neighbouring runs merged pairwise, stably, until one is left."""
    m = rows.shape[0]
    idx = np.arange(m)
    tmp = np.empty(m, dtype=np.int64)
    runs = bounds.copy()
    nr = runs.shape[0] - 1
    while nr > 1:
        out_runs = 0
        for r in range(0, nr, 2):
            a, mid = runs[r], runs[r + 1]
            b = runs[r + 2] if r + 1 < nr else mid
            i, j, o = a, mid, a
            while i < mid and j < b:
                if _row_less(rows, idx[j], idx[i]):
                    tmp[o] = idx[j]
                    j += 1
                else:
                    tmp[o] = idx[i]
                    i += 1
                o += 1
            while i < mid:
                tmp[o] = idx[i]
                i += 1
                o += 1
            while j < b:
                tmp[o] = idx[j]
                j += 1
                o += 1
            runs[out_runs] = a
            out_runs += 1
        runs[out_runs] = m
        nr = out_runs
        idx, tmp = tmp, idx
    out = np.empty_like(rows)
    for r in range(m):
        out[r] = rows[idx[r]]
    return out


@numba.njit(**NOPYTHON)
def _sample_all(segs, dead, ranges, k, total, budget, depth):
    """Rows from every segment's range for match length k; returns (rows, live, scanned)."""
    cap = 0
    for s in range(len(segs)):
        c = ranges[s, k, 1] - ranges[s, k, 0]
        cap += c if total <= budget else max(1, (budget * c) // total) if c > 0 else 0
    out = np.empty((cap, depth), dtype=np.int32)
    bounds = np.zeros(len(segs) + 1, dtype=np.int64)
    m, live, scanned, parts = 0, 0.0, 0, 0
    for s in range(len(segs)):
        tokens, sa, _, alive, doc_starts = segs[s]
        lo, hi = ranges[s, k, 0], ranges[s, k, 1]
        c = hi - lo
        if c == 0:
            continue
        take = c if total <= budget else max(1, (budget * c) // total)
        rows = sample_rows(tokens, sa, lo, hi, take, k, depth, alive, doc_starts, dead[s])
        out[m : m + rows.shape[0]] = rows
        m += rows.shape[0]
        live += c * (rows.shape[0] / take)
        scanned += take
        parts += 1
        bounds[parts] = m
    rows = out[:m]
    if parts > 1:
        rows = merge_runs(rows, bounds[: parts + 1])
    return rows, int(np.round(live)), scanned


@numba.njit(**NOPYTHON)
def _suffix_ranges(segs, ctx, ctx_off, kmin, kmax, min_occ):
    """(ranges [contexts, segments, kmax + 1, 2], first [contexts]): every context's ranges in each
    segment for its suffixes from the longest (at most kmax tokens) down to the first that occurs
    at least ``min_occ`` times over all segments, whose length goes to first (0: none does, every
    length down to kmin searched). These are the searches ``lookup_batch`` made one context at a
    time; here each length is searched for all the contexts that need it at once, per segment
    (``find_ranges``), so that their cache misses overlap. Contexts shorter than kmin are left out."""
    nb = ctx_off.shape[0] - 1
    ns = len(segs)
    ranges = np.zeros((nb, ns, kmax + 1, 2), dtype=np.int64)
    first = np.zeros(nb, dtype=np.int64)
    kt = np.empty(nb, dtype=np.int64)
    pending = np.empty(nb, dtype=np.int64)
    m = 0
    for b in range(nb):
        kt[b] = min(ctx_off[b + 1] - ctx_off[b], kmax)
        if kt[b] >= kmin:
            pending[m] = b
            m += 1
    rows = np.empty(nb, dtype=np.int64)
    starts = np.empty(nb, dtype=np.int64)
    ks = np.empty(nb, dtype=np.int64)
    got = np.empty((nb, 2), dtype=np.int64)
    for k in range(kmax, kmin - 1, -1):
        q = 0
        for g in range(m):  # the pending contexts this long or longer
            b = pending[g]
            if kt[b] >= k:
                rows[q], starts[q], ks[q] = b, ctx_off[b + 1] - k, k
                q += 1
        for s in range(ns):
            tokens, sa, first_off, _, _ = segs[s]
            find_ranges(tokens, sa, first_off, ctx, starts[:q], ks[:q], got[:q])
            for i in range(q):
                ranges[rows[i], s, k, 0], ranges[rows[i], s, k, 1] = got[i, 0], got[i, 1]
        w = 0
        for g in range(m):  # settled: the contexts whose suffix of length k occurs often enough
            b = pending[g]
            if kt[b] >= k:
                total = 0
                for s in range(ns):
                    total += ranges[b, s, k, 1] - ranges[b, s, k, 0]
                if total >= min_occ:
                    first[b] = k
                    continue
            pending[w] = b
            w += 1
        m = w
    return ranges, first


@numba.njit(**NOPYTHON)
def lookup_batch(segs, dead, ctx, ctx_off, kmin, kmax, min_occ, budget, depth, max_nodes, sep):
    """ContinuationTree tries for a batch of contexts over all segments of a namespace.

    segs: typed list of (tokens, sa, first_off, alive, doc_starts), one per segment;
    dead[s] is True when segment s has deleted documents. ctx is the concatenation of the contexts, ctx_off their
    offsets [B + 1]. Returns flat (tokens, parents, counts), node offsets [B + 1], and per
    context (match_length, occurrences, sampled) as a [B, 3] array.
    """
    nb = ctx_off.shape[0] - 1
    ns = len(segs)
    out_tok = np.empty(nb * max_nodes, dtype=np.int32)
    out_par = np.empty(nb * max_nodes, dtype=np.int32)
    out_cnt = np.empty(nb * max_nodes, dtype=np.int32)
    node_off = np.zeros(nb + 1, dtype=np.int64)
    meta = np.zeros((nb, 3), dtype=np.int64)
    # longest suffix first; shorter ones only when it is too rare (searched for the batch at once)
    searched, first = _suffix_ranges(segs, ctx, ctx_off, kmin, kmax, min_occ)
    n = 0
    for b in range(nb):
        end = ctx_off[b + 1]
        tail = ctx[max(ctx_off[b], end - kmax) : end]
        kt = tail.shape[0]
        if kt >= kmin and ns > 0:
            ranges = searched[b]
            for k in range(kt, kmin - 1, -1):
                total = 0
                for s in range(ns):
                    if k < first[b]:  # shorter than the searched ones: the sampling at first[b] found nothing live
                        tokens, sa, first_off, _, _ = segs[s]
                        ranges[s, k, 0], ranges[s, k, 1] = find_range(tokens, sa, first_off, tail[kt - k :], k)
                    total += ranges[s, k, 1] - ranges[s, k, 0]
                if total < min_occ:
                    continue
                rows, live, scanned = _sample_all(segs, dead, ranges, k, total, budget, depth)
                if live < min_occ or rows.shape[0] == 0:
                    continue
                t, p, c = trie(rows, sep, max_nodes)
                out_tok[n : n + t.shape[0]] = t
                out_par[n : n + t.shape[0]] = p
                out_cnt[n : n + t.shape[0]] = c
                n += t.shape[0]
                meta[b, 0] = k
                meta[b, 1] = live
                meta[b, 2] = scanned
                break
        node_off[b + 1] = n
    return out_tok[:n], out_par[:n], out_cnt[:n], node_off, meta


@numba.njit(**NOPYTHON)
def first_out_of_range(ctx, vocab_size):
    """Index of the first token outside [0, vocab_size), or -1 (one pass, no temporaries)."""
    for i in range(ctx.shape[0]):
        if ctx[i] < 0 or ctx[i] >= vocab_size:
            return i
    return -1
