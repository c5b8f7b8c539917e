"""A step's drafts over several cores: ``merge_kernels.draft_rows`` with its rows spread over numba's
thread pool (``DraftConfig.draft_threads`` > 1), for hosts whose cores are idle beside the GPU.

The drafts are those of the serial kernel, row for row: each row is drafted by the same
``_draft_one`` into its own region, then the regions are packed back to back into fresh arrays.
Copies are explicit loops: in a ``parallel=True`` function numba runs a slice assignment as a
parallel loop of its own, which raced when a region was packed in place onto an overlapping one
(the drafts differed).

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

from client_sdk.drafting import merge_kernels
from client_sdk.drafting.kernels import arena_arrays
from client_sdk.drafting.merge_kernels import _draft_one

log = logging.getLogger(__name__)

MIN_ROWS = 8  # fewer rows draft serially: a launch costs more than it spreads
STATS = {"parallel": 0, "serial_busy": 0}  # launches, and calls drafted serially while another launched
_LAUNCH = threading.Lock()


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _draft_rows_parallel(arena, slots, ns, indexed, masks, r_tok, r_par, r_cnt, r_offs, r_match, per, shape, table,
                         kbuckets):
    """``merge_kernels.draft_rows``, its rows drafted in parallel (same arguments, same result)."""
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
            buf, head, prev = arena_arrays(arena, s)
            t, p, sc, c = _draft_one(buf, ns[b], indexed[b], head, prev, masks[b], r_tok, r_par, r_cnt,
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


def pool_size() -> int:
    """The most threads a launch may use (numba's pool: NUMBA_NUM_THREADS, the host's cores)."""
    return numba.config.NUMBA_NUM_THREADS


@functools.cache
def _warn_clamped(asked: int, pool: int) -> None:
    log.warning("draft_threads=%d but numba's pool has %d threads (NUMBA_NUM_THREADS): drafting uses %d",
                asked, pool, pool)


def draft_rows(threads: int, *args):
    """``merge_kernels.draft_rows(*args)`` on up to ``threads`` threads (serially below MIN_ROWS rows,
    for one thread, or while another thread's launch runs)."""
    if threads <= 1 or args[1].shape[0] < MIN_ROWS:  # args[1]: the slots, one per row
        return merge_kernels.draft_rows(*args)
    if not _LAUNCH.acquire(blocking=False):
        STATS["serial_busy"] += 1
        if STATS["serial_busy"] == 1:
            log.warning("two threads drafted at once with draft_threads > 1: one drafts serially meanwhile "
                        "(counted in client_sdk.drafting.parallel.STATS['serial_busy'])")
        return merge_kernels.draft_rows(*args)
    try:
        pool = pool_size()
        if threads > pool:
            _warn_clamped(threads, pool)
        numba.set_num_threads(min(threads, pool))
        STATS["parallel"] += 1
        return _draft_rows_parallel(*args)
    finally:
        _LAUNCH.release()
