"""Compiled loops of a request's own-text index (numba; no torch): indexing, matching, the
continuation trie. Arrays in, arrays out (merge_kernels merges the sources into a draft).

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
from numba.core import types as nbtypes
from numba.extending import intrinsic

OPTS = dict(cache=True, nogil=True, boundscheck=False)
NIL = -1
BUF, HEAD, PREV, CAP, ORDERS, BUCKETS = range(6)  # a LocalArena table row: 3 addresses, then the shapes


@numba.njit(inline="always", **OPTS)
def _hash(buf, end, k, mask):
    h = np.uint64(1469598103934665603)
    for j in range(end - k, end):
        h = (h ^ np.uint64(buf[j] + 1)) * np.uint64(1099511628211)
    return np.int64(h & np.uint64(mask))


@intrinsic
def _int32_pointer(typingctx, address):
    """An int64 address as an int32 pointer (``numba.carray``'s)."""
    sig = nbtypes.CPointer(nbtypes.int32)(nbtypes.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@numba.njit(inline="always", **OPTS)
def arena_arrays(arena, s):
    """(buf, head, prev) of the index in slot s of a LocalArena's table: views of memory that the
    arena keeps alive, made without reference counts. (An item of the typed lists the arena had
    before cost an atomic increment and decrement of its count, on a cache line that a step finds
    cold: reading 64 rows' heads after the caches were flushed took 149 µs through typed lists
    and 72 µs through this table, a lead from one run of a scratch script.)"""
    cap, k = arena[s, CAP], arena[s, ORDERS]
    return (numba.carray(_int32_pointer(arena[s, BUF]), (cap,)),
            numba.carray(_int32_pointer(arena[s, HEAD]), (k, arena[s, BUCKETS])),
            numba.carray(_int32_pointer(arena[s, PREV]), (k, cap + 1)))


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
def write_rows(arena, slots, ns, indexed, masks, new, offs):
    """A batch's committed tokens written, their n-grams left to ``index_rows``: index slots[b]
    of the arena (ns[b] tokens written, the n-grams of the first indexed[b] positions indexed,
    room ensured by the caller) first indexes what it had pending, then gets
    new[offs[b]:offs[b + 1]] after its tokens. Returns the rows' new token counts."""
    out = ns.copy()
    for b in range(slots.shape[0]):
        buf, head, prev = arena_arrays(arena, slots[b])
        local_index(buf, indexed[b], ns[b], head, prev, masks[b])
        m = offs[b + 1] - offs[b]
        buf[ns[b] : ns[b] + m] = new[offs[b] : offs[b + 1]]
        out[b] = ns[b] + m
    return out


@numba.njit(**OPTS)
def index_rows(arena, slots, indexed, ns, masks):
    """``local_index`` of every row's pending positions (indexed[b] + 1 .. ns[b]) in one call."""
    for b in range(slots.shape[0]):
        buf, head, prev = arena_arrays(arena, slots[b])
        local_index(buf, indexed[b], ns[b], head, prev, masks[b])


@numba.njit(**OPTS)
def gather_tails(arena, slots, ns, width):
    """[B, width] int32: the last ``width`` tokens of arena index slots[b] (holding ns[b]
    tokens), -1 before a shorter text and in every row whose slot is < 0."""
    out = np.full((slots.shape[0], width), -1, dtype=np.int32)
    for b in range(slots.shape[0]):
        s = slots[b]
        if s >= 0:
            k = min(width, ns[b])
            out[b, width - k :] = arena_arrays(arena, s)[0][ns[b] - k : ns[b]]
    return out


@numba.njit(**OPTS)
def local_match(buf, n, indexed, head, prev, mask, kmin, max_occ, max_walk):
    """(k, positions): longest k >= kmin whose last-k-gram occurred before, most recent first.

    positions are where the continuation of each earlier occurrence starts (< n). Positions
    past ``indexed`` (written, their n-grams not yet in head / prev) are scanned directly, as
    the most recent links of the chains they would head: the result is what full indexing gives.
    """
    out = np.empty(max_occ, dtype=np.int64)
    k, m = _match_into(buf, n, indexed, head, prev, mask, kmin, max_occ, max_walk, out)
    return k, out[:m]


@numba.njit(**OPTS)
def _match_into(buf, n, indexed, head, prev, mask, kmin, max_occ, max_walk, out):
    """``local_match`` into out[:m] (room for max_occ): returns (k, m)."""
    kmax = min(head.shape[0], n)
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
            return k, m
    return 0, 0


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
    cnt = np.empty(cap, dtype=np.int32)
    size = _trie_into(buf, n, positions, depth, cap, tok, par, cnt, np.empty(cap + 1, np.int32), np.empty(cap, np.int32))
    return tok[:size], par[:size], cnt[:size]


@numba.njit(**OPTS)
def _trie_into(buf, n, positions, depth, cap, tok, par, cnt, first_child, next_sib):
    """``rows_trie``'s nodes (at most cap) into tok / par / cnt [:size]; first_child (room for
    cap + 1: slot cap = the root) and next_sib (cap) are work arrays. Returns size."""
    first_child[: cap + 1] = -1
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
                tok[c], par[c], cnt[c] = t, node if node != cap else -1, 0
                next_sib[c] = first_child[node]
                first_child[node] = c
            cnt[c] += 1
            node = c
    return size


class LocalState(NamedTuple):
    """A request's own-text index, as the kernels see it (see the module docstring)."""

    buf: np.ndarray  # [cap] int32
    n: int  # tokens in buf (0: do not draft from the request's own text)
    indexed: int  # the positions whose n-grams are in head / prev (<= n)
    head: np.ndarray  # [K, mask + 1] int32
    prev: np.ndarray  # [K, cap + 1] int32
    mask: int
