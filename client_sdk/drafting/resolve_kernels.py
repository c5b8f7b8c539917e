"""One compiled pass that gives a zero-wait step its datastore tries (numba; arrays in, arrays out).

Slot j of a step (request j // per, suffix length lengths[j % per]) takes the first of:
1. the prefetch answer's trie src[j] descended by the bonus token bonus[j]
   (``step_kernels.descend_tries``: src[j] < 0, or no such child, gives nothing);
2. for the 1-token slot (j % per == single), the single-token table's trie of the request's
   last token, when it has nodes (``step_kernels.fill_tries`` with ``nonempty_only``);
3. unless the slot's length is ``settled`` (its empty trie is final), the trie cache's entry
   for the slot's padded tail (``cache_kernels.lookup_fill``: an entry without nodes brings its
   meta row);
and is otherwise missed: returned with its padded tail, to be asked for later.

These were four calls, each copying the whole batch, with Python between them on the decode
step's critical path; the result is the same batch (tests compare the two), less the nodes
deeper than the step's draft can take when a depth limit is given.
"""

from __future__ import annotations

import numba
import numpy as np

from client_sdk.drafting.cache_kernels import find_entry, set_of, tail_hash
from client_sdk.drafting.kernels import OPTS
from client_sdk.drafting.step_kernels import child_run

NONE, COPY, DESCEND, TABLE, CACHED = 0, 1, 2, 3, 4  # where a slot's nodes come from


@numba.njit(**OPTS)
def _prefetched(g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, kind, lo, ln, meta, head):
    """Sources 1: each slot's run of the prefetch answer, and its meta row."""
    for j in range(src.shape[0]):
        s = src[j]
        if s < 0:
            continue
        a, e = g_offs[s], g_offs[s + 1]
        if bonus[j] < 0:
            kind[j], lo[j], ln[j] = COPY, a, e - a
            meta[j] = g_meta[s]
            continue
        i, end = child_run(g_tok, g_par, a, e, bonus[j])
        if i >= 0:
            kind[j], lo[j], ln[j], head[j] = DESCEND, i + 1, end - i - 1, i - a
            meta[j, 0], meta[j, 1], meta[j, 2] = g_meta[s, 0] + 1, g_cnt[i], g_meta[s, 2]


@numba.njit(**OPTS)
def _copy_out(kind, lo, ln, head, g_tok, g_par, g_cnt, u_tok, u_par, u_cnt, r_tok, r_par, r_cnt, limit):
    """The slots' nodes back to back, as ``_prefetched`` and ``resolve`` chose them, but for the
    nodes deeper than ``limit`` (0: none left out; a kept node's parent is always kept)."""
    nb = kind.shape[0]
    total = longest = 0
    for j in range(nb):
        total += ln[j]
        longest = max(longest, ln[j])
    tok = np.empty(total, dtype=np.int32)
    par = np.empty(total, dtype=np.int32)
    cnt = np.empty(total, dtype=np.int32)
    offs = np.zeros(nb + 1, dtype=np.int64)
    depth = np.empty(longest, dtype=np.int32)  # of the slot's nodes, in its own numbering
    new_id = np.empty(longest, dtype=np.int32)  # a kept node's place among the slot's kept nodes
    n = 0
    for j in range(nb):
        k = kind[j]
        for q in range(ln[j]):
            i = lo[j] + q
            if k == COPY or k == DESCEND:
                t, p, c = g_tok[i], g_par[i], g_cnt[i]
                if k == DESCEND:  # parents were local to trie src[j]; the child's subtree starts after it
                    p = -1 if p == head[j] else p - head[j] - 1
            elif k == TABLE:
                t, p, c = u_tok[i], u_par[i], u_cnt[i]
            else:
                t, p, c = r_tok[i], r_par[i], r_cnt[i]
            depth[q] = 1 if p < 0 else depth[p] + 1
            if limit > 0 and depth[q] > limit:
                continue
            new_id[q] = n - offs[j]
            tok[n], par[n], cnt[n] = t, -1 if p < 0 else new_id[p], c
            n += 1
        offs[j + 1] = n
    return tok[:n], par[:n], cnt[:n], offs


@numba.njit(**OPTS)
def resolve(g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, u_tok, u_par, u_cnt, u_offs, u_meta, single, last,
            settled, hist, lengths, use_cache, tags, keys, live, stored, used, start, length_of, c_meta,
            r_tok, r_par, r_cnt, ring_head, now, ttl, tick, limit):
    """The step's tries (see the module docstring): returns (tok, par, cnt, offs, meta) of the
    batch of src.shape[0] slots, the missed slots and their padded tails [m, W] (hist[i]: request
    i's last W tokens, -1 before a shorter text), and (table tries used, cache lookups, cache hits).
    The cache is read only with ``use_cache`` (its arrays then the table's: cache_kernels). The
    batch leaves out nodes deeper than ``limit`` (0: none), which no draft of that depth reads."""
    nb, per, w = src.shape[0], lengths.shape[0], hist.shape[1]
    kind = np.zeros(nb, dtype=np.int8)
    lo = np.zeros(nb, dtype=np.int64)
    ln = np.zeros(nb, dtype=np.int64)
    head = np.full(nb, -1, dtype=np.int64)
    meta = np.zeros((nb, 3), dtype=np.int64)
    _prefetched(g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, kind, lo, ln, meta, head)
    nu, sets, ring = u_offs.shape[0] - 1, keys.shape[0], r_tok.shape[0]
    missed = np.empty(nb, dtype=np.int64)
    tails = np.full((nb, w), -1, dtype=np.int32)
    m = table = looked = hits = 0
    for j in range(nb):
        if ln[j] > 0:
            continue
        u = last[j // per]
        if j % per == single and 0 <= u < nu and u_offs[u + 1] > u_offs[u]:
            kind[j], lo[j], ln[j] = TABLE, u_offs[u], u_offs[u + 1] - u_offs[u]
            meta[j] = u_meta[u]
            table += 1
            continue
        if j % per == settled:
            continue
        for q in range(w - lengths[j % per], w):
            tails[m, q] = hist[j // per, q]
        if use_cache:
            tag = tail_hash(tails, m)
            s = set_of(tag, sets)
            a = find_entry(tags, keys, live, stored, start, ring_head, ring, tails, m, s, tag, now, ttl)
            looked += 1
            if a >= 0:
                used[s, a] = tick + looked - 1
                kind[j], lo[j], ln[j] = CACHED, start[s, a] % ring, length_of[s, a]
                meta[j] = c_meta[s, a]
                hits += 1
                tails[m] = -1
                continue
        missed[m] = j
        m += 1
    tok, par, cnt, offs = _copy_out(kind, lo, ln, head, g_tok, g_par, g_cnt, u_tok, u_par, u_cnt, r_tok, r_par, r_cnt,
                                    limit)
    return tok, par, cnt, offs, meta, missed[:m], tails[:m], table, looked, hits
