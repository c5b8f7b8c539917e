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
deeper than the step's draft can take when a depth limit is given. Each slot is decided on its
own (``_prefetched``, ``_fill``), ``settle`` then stamps the cache's reads in slot order, and
``copy_slot`` copies a slot's nodes: so a step's slots can also be spread over threads
(client_sdk.drafting.parallel.resolve).
"""

from __future__ import annotations

import numba
import numpy as np

from client_sdk.drafting.cache_kernels import find_entry, set_of, tail_hash
from client_sdk.drafting.kernels import OPTS
from client_sdk.drafting.step_kernels import child_run

NONE, COPY, DESCEND, TABLE, CACHED = 0, 1, 2, 3, 4  # where a slot's nodes come from
# what filling an empty slot did (``_fill``): nothing to do (it has nodes, or its length is settled),
# the table's trie, a cache hit, a cache miss, missed without a cache
KEPT, FROM_TABLE, HIT, MISS, UNCACHED = 0, 1, 2, 3, 4


@numba.njit(**OPTS)
def slot_arrays(nb, width):
    """What ``_prefetched`` and ``_fill`` write, per slot: (kind, lo, ln, head, meta [nb, 3],
    tail [nb, width], way [nb, 2], did)."""
    return (np.zeros(nb, dtype=np.int8), np.zeros(nb, dtype=np.int64), np.zeros(nb, dtype=np.int64),
            np.full(nb, -1, dtype=np.int64), np.zeros((nb, 3), dtype=np.int64),
            np.full((nb, width), -1, dtype=np.int32), np.empty((nb, 2), dtype=np.int64), np.empty(nb, dtype=np.int8))


@numba.njit(inline="always", **OPTS)
def _prefetched(j, g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, kind, lo, ln, meta, head):
    """Source 1 for slot j: its run of the prefetch answer, and its meta row."""
    s = src[j]
    if s < 0:
        return
    a, e = g_offs[s], g_offs[s + 1]
    if bonus[j] < 0:
        kind[j], lo[j], ln[j] = COPY, a, e - a
        meta[j] = g_meta[s]
        return
    i, end = child_run(g_tok, g_par, a, e, bonus[j])
    if i >= 0:
        kind[j], lo[j], ln[j], head[j] = DESCEND, i + 1, end - i - 1, i - a
        meta[j, 0], meta[j, 1], meta[j, 2] = g_meta[s, 0] + 1, g_cnt[i], g_meta[s, 2]


@numba.njit(inline="always", **OPTS)
def _fill(j, kind, lo, ln, meta, u_offs, u_meta, single, last, settled, hist, lengths, use_cache, tags, keys,
          live, stored, start, length_of, c_meta, ring_head, ring_size, now, ttl, tail, way):
    """Sources 2 and 3 for slot j, when source 1 gave it nothing: the table's trie, or (its padded
    tail written to row j of ``tail``) the cache's entry, its (set, way) in way[j]. Reads, and
    writes slot j's rows only, so slots fill in any order; returns what it did (KEPT .. UNCACHED)."""
    per, w = lengths.shape[0], hist.shape[1]
    if ln[j] > 0:
        return KEPT
    u = last[j // per]
    if j % per == single and 0 <= u < u_offs.shape[0] - 1 and u_offs[u + 1] > u_offs[u]:
        kind[j], lo[j], ln[j] = TABLE, u_offs[u], u_offs[u + 1] - u_offs[u]
        meta[j] = u_meta[u]
        return FROM_TABLE
    if j % per == settled:
        return KEPT
    for q in range(w - lengths[j % per], w):
        tail[j, q] = hist[j // per, q]
    if not use_cache:
        return UNCACHED
    tag = tail_hash(tail, j)
    s = set_of(tag, keys.shape[0])
    a = find_entry(tags, keys, live, stored, start, ring_head, ring_size, tail, j, s, tag, now, ttl)
    if a < 0:
        return MISS
    way[j, 0], way[j, 1] = s, a
    kind[j], lo[j], ln[j] = CACHED, start[s, a] % ring_size, length_of[s, a]
    meta[j] = c_meta[s, a]
    return HIT


@numba.njit(**OPTS)
def settle(did, tail, way, used, tick):
    """In slot order, what ``_fill`` did: the cache's reads stamped (item i of the call at tick + i,
    as ``cache_kernels`` counts), the missed slots and their tails. Returns (missed, tails, table
    tries used, cache lookups, cache hits)."""
    nb = did.shape[0]
    missed = np.empty(nb, dtype=np.int64)
    tails = np.full((nb, tail.shape[1]), -1, dtype=np.int32)
    m = table = looked = hits = 0
    for j in range(nb):
        d = did[j]
        if d == FROM_TABLE:
            table += 1
            continue
        if d == HIT or d == MISS:
            looked += 1
        if d == HIT:
            used[way[j, 0], way[j, 1]] = tick + looked - 1
            hits += 1
        elif d == MISS or d == UNCACHED:
            tails[m] = tail[j]
            missed[m] = j
            m += 1
    return missed[:m], tails[:m], table, looked, hits


@numba.njit(inline="always", **OPTS)
def copy_slot(j, kind, lo, ln, head, g_tok, g_par, g_cnt, u_tok, u_par, u_cnt, r_tok, r_par, r_cnt, limit,
              tok, par, cnt, at, depth, new_id, write):
    """Slot j's nodes, as ``_prefetched`` and ``_fill`` chose them, but for those deeper than
    ``limit`` (0: none left out; a kept node's parent is always kept): written from node ``at``
    on when ``write``; returns how many. depth, new_id: scratch of at least ln[j] entries."""
    k, n = kind[j], 0
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
        new_id[q] = n
        if write:
            tok[at + n], par[at + n], cnt[at + n] = t, -1 if p < 0 else new_id[p], c
        n += 1
    return n


@numba.njit(**OPTS)
def resolve(g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, u_tok, u_par, u_cnt, u_offs, u_meta, single, last,
            settled, hist, lengths, use_cache, tags, keys, live, stored, used, start, length_of, c_meta,
            r_tok, r_par, r_cnt, ring_head, now, ttl, tick, limit):
    """The step's tries (see the module docstring): returns (tok, par, cnt, offs, meta) of the
    batch of src.shape[0] slots, the missed slots and their padded tails [m, W] (hist[i]: request
    i's last W tokens, -1 before a shorter text), and (table tries used, cache lookups, cache hits).
    The cache is read only with ``use_cache`` (its arrays then the table's: cache_kernels). The
    batch leaves out nodes deeper than ``limit`` (0: none), which no draft of that depth reads.
    (client_sdk.drafting.parallel.resolve: the same, its slots spread over threads.)"""
    nb = src.shape[0]
    kind, lo, ln, head, meta, tail, way, did = slot_arrays(nb, hist.shape[1])
    for j in range(nb):
        _prefetched(j, g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, kind, lo, ln, meta, head)
        did[j] = _fill(j, kind, lo, ln, meta, u_offs, u_meta, single, last, settled, hist, lengths, use_cache, tags,
                       keys, live, stored, start, length_of, c_meta, ring_head, r_tok.shape[0], now, ttl, tail, way)
    missed, tails, table, looked, hits = settle(did, tail, way, used, tick)
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
    for j in range(nb):
        offs[j + 1] = offs[j] + copy_slot(j, kind, lo, ln, head, g_tok, g_par, g_cnt, u_tok, u_par, u_cnt, r_tok, r_par,
                                          r_cnt, limit, tok, par, cnt, offs[j], depth, new_id, True)
    n = offs[nb]
    return tok[:n], par[:n], cnt[:n], offs, meta, missed, tails, table, looked, hits
