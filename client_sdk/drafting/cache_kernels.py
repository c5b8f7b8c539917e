"""Compiled kernels of the trie cache (cache.TrieCache): a set-associative table of datastore
answers keyed by padded query tails, their nodes in one ring of node arrays.

Layout (S sets x A ways, tails W tokens wide, a ring of P nodes):
- keys [S, A, W] int32: the padded tail (-1 before a shorter one) an entry answers; tags [S, A]
  int64: its hash (never 0; 0: an empty way), read first, so that a miss reads one cache line;
- live [S, A] int8: 1 when the way holds an entry;
- stored [S, A] float64: when it was stored (it expires ttl_s later); used [S, A] int64: when
  it was last read or written, counted in reads and writes (the least recently used way is
  replaced: item i of a call with base ``tick`` happens at tick + i);
- start [S, A] int64: its first node's position in the ring, counted from the ring's creation
  (slot start % P), length [S, A] int64: its node count; meta [S, A, 3] int64: its meta row;
- ring tok / par / cnt [P] int32 and ring_head [1] int64: the next position written. An
  entry whose nodes the ring has since overwritten (ring_head - start > P) is gone.
"""

from __future__ import annotations

import numba
import numpy as np

from client_sdk.drafting.kernels import OPTS
from client_sdk.drafting.step_kernels import splice_rows


@numba.njit(**OPTS)
def tail_hash(tails, i):
    """The hash of tail i: FNV-1a over its tokens (shifted so that the -1 padding hashes too),
    mixed, and odd (never 0, the tag of an empty way). Its low bits (but the last) pick the set."""
    h = np.int64(-3750763034362895579)  # the FNV-1a 64-bit offset basis, as a signed integer
    for w in range(tails.shape[1]):
        h = (h ^ np.int64(tails[i, w] + 2)) * np.int64(1099511628211)
    return (h ^ (h >> 29)) | 1


@numba.njit(inline="always", **OPTS)
def set_of(tag, sets):
    """The set a tail of hash ``tag`` lives in (its low bits but the last, always 1)."""
    return (tag >> 1) & (sets - 1)


@numba.njit(**OPTS)
def find_entry(tags, keys, live, stored, start, ring_head, ring_size, tails, i, s, tag, now, ttl):
    """The way of set s holding tail i (hash ``tag``), alive and not expired; -1 when none does."""
    width = tails.shape[1]
    for a in range(keys.shape[1]):
        if tags[s, a] != tag:
            continue
        if live[s, a] == 0 or now - stored[s, a] > ttl or ring_head[0] - start[s, a] > ring_size:
            continue
        same = True
        for w in range(width):
            if keys[s, a, w] != tails[i, w]:
                same = False
                break
        if same:
            return a
    return -1


@numba.njit(**OPTS)
def lookup_fill(tok, par, cnt, offs, meta, slots, tails, tags, keys, live, stored, used, start, length_of, c_meta,
                r_tok, r_par, r_cnt, ring_head, now, ttl, tick):
    """The batch (tok, par, cnt, offs, meta) with each trie slots[i] that is empty replaced by the
    entry for tails[i], when the table holds one (an entry without nodes brings its meta row:
    an answer without a match is news too). Returns the new batch's arrays and held [m] (1: an
    entry was found for tails[i])."""
    sets, ring_size = keys.shape[0], r_tok.shape[0]
    nb, m = offs.shape[0] - 1, slots.shape[0]
    src = np.full(nb, -1, dtype=np.int64)
    length = np.zeros(nb, dtype=np.int64)
    new_meta = np.zeros((nb, c_meta.shape[2]), dtype=np.int64)
    held = np.zeros(m, dtype=np.int8)
    for i in range(m):
        j = slots[i]
        tag = tail_hash(tails, i)
        s = set_of(tag, sets)
        a = find_entry(tags, keys, live, stored, start, ring_head, ring_size, tails, i, s, tag, now, ttl)
        if a < 0:
            continue
        held[i] = 1
        used[s, a] = tick + i
        if offs[j + 1] == offs[j] and src[j] < 0:
            src[j], length[j] = start[s, a] % ring_size, length_of[s, a]
            new_meta[j] = c_meta[s, a]
    o_tok, o_par, o_cnt, o_offs, o_meta = splice_rows(tok, par, cnt, offs, meta, src, length, new_meta, r_tok, r_par,
                                                      r_cnt)
    return o_tok, o_par, o_cnt, o_offs, o_meta, held


@numba.njit(**OPTS)
def store(tails, tok, par, cnt, offs, meta, tags, keys, live, stored, used, start, length, c_meta,
          r_tok, r_par, r_cnt, ring_head, now, ttl, tick):
    """Store trie i of (tok, par, cnt, offs, meta) as the entry of tails[i]: over the entry the
    tail already has, else in a free, expired or overwritten way of its set, else over the least
    recently used one. Each trie's nodes go to the ring contiguously (wrapping to its start when
    they do not fit before its end). Returns how many entries were new (not replacing their own)."""
    sets, ways, ring_size = keys.shape[0], keys.shape[1], r_tok.shape[0]
    added = 0
    for i in range(tails.shape[0]):
        tag = tail_hash(tails, i)
        s = set_of(tag, sets)
        a = find_entry(tags, keys, live, stored, start, ring_head, ring_size, tails, i, s, tag, now, ttl)
        if a < 0:
            added += 1
            best = np.int64(1) << 62
            for w in range(ways):
                stale = live[s, w] == 0 or now - stored[s, w] > ttl or ring_head[0] - start[s, w] > ring_size
                rank = -1 if stale else used[s, w]
                if rank < best:
                    a, best = w, rank
        n = offs[i + 1] - offs[i]
        if n > ring_size:  # larger than the whole ring: not kept
            live[s, a], tags[s, a] = 0, 0
            continue
        if ring_head[0] % ring_size + n > ring_size:
            ring_head[0] += ring_size - ring_head[0] % ring_size
        p0 = ring_head[0] % ring_size
        for k in range(n):
            r_tok[p0 + k], r_par[p0 + k], r_cnt[p0 + k] = tok[offs[i] + k], par[offs[i] + k], cnt[offs[i] + k]
        for w in range(tails.shape[1]):
            keys[s, a, w] = tails[i, w]
        for c in range(c_meta.shape[2]):
            c_meta[s, a, c] = meta[i, c]
        start[s, a], length[s, a] = ring_head[0], n
        ring_head[0] += n
        live[s, a], tags[s, a], stored[s, a], used[s, a] = 1, tag, now, tick + i
    return added


@numba.njit(**OPTS)
def count_live(live, stored, start, ring_head, ring_size, now, ttl):
    """Entries alive: held, not expired, their nodes not overwritten."""
    n = 0
    for s in range(live.shape[0]):
        for a in range(live.shape[1]):
            if live[s, a] != 0 and now - stored[s, a] <= ttl and ring_head[0] - start[s, a] <= ring_size:
                n += 1
    return n
