"""A zero-wait step's datastore tries and its drafts in one compiled call (numba).

``resolve_kernels.resolve`` gives the step's tries and ``merge_kernels.draft_rows`` drafts
from them. Called one after the other from Python, the tries leave compiled code as numpy
arrays and go back in as arguments. On the decode step's critical path, where the wait for the
verify has left the caches cold, a compiled call costs tens of µs beyond its work: a base cost
per call and per array passed, and more for the first array it returns (bench/call_cost.py).
Here the tries never leave compiled code: one call, one set of returned arrays.
"""

from __future__ import annotations

import numba
import numpy as np

from client_sdk.drafting.kernels import OPTS
from client_sdk.drafting.merge_kernels import draft_rows
from client_sdk.drafting.resolve_kernels import resolve


@numba.njit(**OPTS)
def resolve_and_draft(g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, u_tok, u_par, u_cnt, u_offs, u_meta, single,
                      last, settled, hist, lengths, use_cache, tags, keys, live, stored, used, start, length_of, c_meta,
                      r_tok, r_par, r_cnt, ring_head, now, ttl, tick, limit,
                      arena, slots, ns, indexed, masks, shape, table, kbuckets):
    """``resolve(g_tok .. limit)``, then ``draft_rows(arena, slots, ns, indexed, masks, <its tries>,
    lengths.shape[0], shape, table, kbuckets)``. Returns the drafts (tokens, parents, scores,
    cells, offsets: draft_rows'), each request's longest-suffix match length [B] (its first
    slot's), the missed slots' padded tails, and (table tries used, cache lookups, cache hits)."""
    tok, par, cnt, offs, meta, _, tails, from_table, looked, hits = resolve(
        g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, u_tok, u_par, u_cnt, u_offs, u_meta, single, last, settled,
        hist, lengths, use_cache, tags, keys, live, stored, used, start, length_of, c_meta, r_tok, r_par, r_cnt,
        ring_head, now, ttl, tick, limit)
    per = lengths.shape[0]
    match = np.ascontiguousarray(meta[:, 0])
    d_tok, d_par, d_score, d_cells, d_offs = draft_rows(arena, slots, ns, indexed, masks, tok, par, cnt, offs, match,
                                                        per, shape, table, kbuckets)
    first = np.empty(slots.shape[0], dtype=np.int64)
    for b in range(slots.shape[0]):
        first[b] = match[b * per]
    return d_tok, d_par, d_score, d_cells, d_offs, first, tails, from_table, looked, hits
