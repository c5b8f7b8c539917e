"""A step's drafting over several cores: the draft kernel (``kernels.draft_rows``) and the tries'
resolve pass (``resolve_kernels.resolve``) with their requests spread over numba's thread pool
(``DraftConfig.draft_threads`` > 1), for hosts whose cores are idle beside the GPU.

The results are the serial kernels', row for row: each row is drafted by the same ``_draft_one``
into its own region, then the regions are packed back to back; each tries slot is decided and
copied by the resolve pass's own per-slot functions, its cache reads stamped in slot order.
Copies are explicit loops into fresh arrays: in a ``parallel=True`` function numba runs a slice
assignment as a parallel loop of its own, which raced when a region was packed onto an
overlapping one (the drafts differed).

One launch at a time per process: numba's workqueue layer (where OpenMP is missing) aborts the
process on concurrent launches, so a second thread asking meanwhile (two Speculators in one
process) drafts serially instead, counted in ``STATS`` and warned about once.
"""

from __future__ import annotations

import functools
import logging
import threading

import numba
import numpy as np

from client_sdk.drafting import kernels, resolve_kernels
from client_sdk.drafting.kernels import _draft_one
from client_sdk.drafting.resolve_kernels import _fill, _prefetched, copy_slot, settle, slot_arrays

log = logging.getLogger(__name__)

MIN_ROWS = 8  # fewer rows draft serially: a launch costs more than it spreads
STATS = {"parallel": 0, "serial_busy": 0}  # launches, and calls run serially while another launched
_LAUNCH = threading.Lock()


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _draft_rows_parallel(bufs, heads, prevs, slots, ns, indexed, masks, r_tok, r_par, r_cnt, r_offs, r_match, per,
                         shape, table, kbuckets):
    """``kernels.draft_rows``, its rows drafted in parallel (same arguments, same result)."""
    nb = slots.shape[0]
    budget = shape[3]
    tok = np.empty(nb * budget, dtype=np.int32)
    par = np.empty(nb * budget, dtype=np.int32)
    score = np.empty(nb * budget, dtype=np.float64)
    cells = np.empty((nb * budget, per + 1, 4), dtype=np.int8)
    lens = np.zeros(nb, dtype=np.int64)
    for b in numba.prange(nb):  # row b's draft (at most budget nodes) into region b
        s = slots[b]
        if s >= 0:
            t, p, sc, c = _draft_one(bufs[s], ns[b], indexed[b], heads[s], prevs[s], masks[b], r_tok, r_par, r_cnt,
                                     r_offs[b * per : b * per + per + 1], r_match[b * per : b * per + per],
                                     shape, table, kbuckets)
            o = b * budget
            for q in range(t.shape[0]):
                tok[o + q] = t[q]
                par[o + q] = p[q]
                score[o + q] = sc[q]
                for x in range(per + 1):
                    for y in range(4):
                        cells[o + q, x, y] = c[q, x, y]
            lens[b] = t.shape[0]
    offs = np.zeros(nb + 1, dtype=np.int64)
    for b in range(nb):
        offs[b + 1] = offs[b] + lens[b]
    n = offs[nb]
    out_tok = np.empty(n, dtype=np.int32)
    out_par = np.empty(n, dtype=np.int32)
    out_score = np.empty(n, dtype=np.float64)
    out_cells = np.empty((n, per + 1, 4), dtype=np.int8)
    for b in numba.prange(nb):  # packed back to back, into fresh arrays (no overlap)
        o, d = b * budget, offs[b]
        for q in range(lens[b]):
            out_tok[d + q] = tok[o + q]
            out_par[d + q] = par[o + q]
            out_score[d + q] = score[o + q]
            for x in range(per + 1):
                for y in range(4):
                    out_cells[d + q, x, y] = cells[o + q, x, y]
    return out_tok, out_par, out_score, out_cells, offs


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _resolve_parallel(g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, u_tok, u_par, u_cnt, u_offs, u_meta, single,
                      last, settled, hist, lengths, use_cache, tags, keys, live, stored, used, start, length_of, c_meta,
                      r_tok, r_par, r_cnt, ring_head, now, ttl, tick, limit):
    """``resolve_kernels.resolve``, its slots decided and copied in parallel (same arguments, same
    result): the cache's reads are stamped in slot order between the two, and a slot's nodes are
    counted first, so that each is copied to its place."""
    nb = src.shape[0]
    kind, lo, ln, head, meta, tail, way, did = slot_arrays(nb, hist.shape[1])
    kept = np.zeros(nb, dtype=np.int64)
    for j in numba.prange(nb):
        _prefetched(j, g_tok, g_par, g_cnt, g_offs, g_meta, src, bonus, kind, lo, ln, meta, head)
        did[j] = _fill(j, kind, lo, ln, meta, u_offs, u_meta, single, last, settled, hist, lengths, use_cache, tags,
                       keys, live, stored, start, length_of, c_meta, ring_head, r_tok.shape[0], now, ttl, tail, way)
        scratch = np.empty(ln[j], dtype=np.int32)
        kept[j] = copy_slot(j, kind, lo, ln, head, g_tok, g_par, g_cnt, u_tok, u_par, u_cnt, r_tok, r_par, r_cnt, limit,
                            scratch, scratch, scratch, 0, scratch, np.empty(ln[j], dtype=np.int32), False)
    missed, tails, table, looked, hits = settle(did, tail, way, used, tick)
    offs = np.zeros(nb + 1, dtype=np.int64)
    for j in range(nb):
        offs[j + 1] = offs[j] + kept[j]
    tok = np.empty(offs[nb], dtype=np.int32)
    par = np.empty(offs[nb], dtype=np.int32)
    cnt = np.empty(offs[nb], dtype=np.int32)
    for j in numba.prange(nb):
        copy_slot(j, kind, lo, ln, head, g_tok, g_par, g_cnt, u_tok, u_par, u_cnt, r_tok, r_par, r_cnt, limit,
                  tok, par, cnt, offs[j], np.empty(ln[j], dtype=np.int32), np.empty(ln[j], dtype=np.int32), True)
    return tok, par, cnt, offs, meta, missed, tails, table, looked, hits


def pool_size() -> int:
    """The most threads a launch may use (numba's pool: NUMBA_NUM_THREADS, the host's cores)."""
    return numba.config.NUMBA_NUM_THREADS


@functools.cache
def _warn_clamped(asked: int, pool: int) -> None:
    log.warning("draft_threads=%d but numba's pool has %d threads (NUMBA_NUM_THREADS): drafting uses %d",
                asked, pool, pool)


def draft_rows(threads: int, *args):
    """``kernels.draft_rows(*args)``, its rows on up to ``threads`` threads."""
    return _launch(threads, args[3].shape[0], kernels.draft_rows, _draft_rows_parallel, args)


def resolve(threads: int, *args):
    """``resolve_kernels.resolve(*args)``, its slots on up to ``threads`` threads."""
    return _launch(threads, args[5].shape[0] // max(1, args[16].shape[0]), resolve_kernels.resolve, _resolve_parallel,
                   args)


def _launch(threads: int, requests: int, serial, spread, args):
    """spread(*args) on up to ``threads`` threads; serial(*args) below MIN_ROWS requests, for one
    thread, or while another thread's launch runs."""
    if threads <= 1 or requests < MIN_ROWS:
        return serial(*args)
    if not _LAUNCH.acquire(blocking=False):
        STATS["serial_busy"] += 1
        if STATS["serial_busy"] == 1:
            log.warning("two threads drafted at once with draft_threads > 1: one drafts serially meanwhile "
                        "(counted in client_sdk.drafting.parallel.STATS['serial_busy'])")
        return serial(*args)
    try:
        pool = pool_size()
        if threads > pool:
            _warn_clamped(threads, pool)
        numba.set_num_threads(min(threads, pool))
        STATS["parallel"] += 1
        return spread(*args)
    finally:
        _LAUNCH.release()
