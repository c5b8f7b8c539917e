"""A step's drafts spread over threads (DraftConfig.draft_threads): the serial drafts, row for row,
through the Speculator too; one launch at a time, the other caller drafting serially (counted)."""

import threading

import numpy as np
import pytest

from client_sdk.drafting import parallel
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.local import LocalArena, LocalIndex
from client_sdk.drafting.speculator import Speculator
from client_sdk.drafting.tree import NO_TRIES, Calibration, draft_batch
from client_sdk.types import DraftConfig


def _texts(rows: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 5, int(rng.integers(1, 60))).tolist() for _ in range(rows)]


def _drafts(threads: int, prompts, steps: int = 4) -> list[list[tuple]]:
    """Each step's drafts (tokens, parents, scores per request) of a Speculator at ``threads``."""
    config = SpeculatorConfig(fixed_budget=6, background_index_tokens=0,
                              draft=DraftConfig(draft_threads=threads))
    spec = Speculator(config)
    ids = list(range(len(prompts)))
    for i, p in enumerate(prompts):
        spec.start(i, p)
    out = []
    for step in range(steps):
        trees = spec.draft(ids)
        out.append([(t.tokens.tolist(), t.parents.tolist(), t.scores.tolist()) for t in trees])
        spec.commit_many(ids, [[(i + step) % 5, (2 * i + step) % 5] for i in ids])
    spec.close()
    return out


def test_a_speculator_drafts_alike_on_one_thread_and_on_two():
    prompts = _texts(3 * parallel.MIN_ROWS)
    launches = parallel.STATS["parallel"]
    assert _drafts(2, prompts) == _drafts(1, prompts)
    assert parallel.STATS["parallel"] >= launches + 4  # every step launched in parallel


def test_below_the_row_threshold_nothing_is_launched():
    launches = parallel.STATS["parallel"]
    _drafts(2, _texts(parallel.MIN_ROWS - 1), steps=2)
    assert parallel.STATS["parallel"] == launches


def test_a_call_made_while_another_launch_runs_drafts_serially_and_is_counted():
    arena, rows = LocalArena(), [LocalIndex(t) for t in _texts(parallel.MIN_ROWS, seed=3)]
    want = draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=5)
    busy, launches = parallel.STATS["serial_busy"], parallel.STATS["parallel"]
    with parallel._LAUNCH:  # another thread's launch, as far as this call can tell
        got = draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=5, threads=2)
    assert parallel.STATS["serial_busy"] == busy + 1 and parallel.STATS["parallel"] == launches
    for field in ("tokens", "parents", "scores", "cells", "offsets"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_two_threads_drafting_at_once_both_get_their_drafts():
    arena_rows = [(LocalArena(), [LocalIndex(t) for t in _texts(2 * parallel.MIN_ROWS, seed=s)]) for s in (1, 2)]
    want = [draft_batch(a, r, NO_TRIES, 0, Calibration(), budget=5).tokens for a, r in arena_rows]
    got: list = [None, None]

    def work(k: int) -> None:
        a, r = arena_rows[k]
        for _ in range(50):
            got[k] = draft_batch(a, r, NO_TRIES, 0, Calibration(), budget=5, threads=2).tokens

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_more_threads_than_numba_has_are_clamped_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(parallel, "pool_size", lambda: 2)
    parallel._warn_clamped.cache_clear()
    arena, rows = LocalArena(), [LocalIndex(t) for t in _texts(parallel.MIN_ROWS, seed=4)]
    want = draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=5)
    for _ in range(2):
        got = draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=5, threads=64)
        np.testing.assert_array_equal(got.tokens, want.tokens)
    assert sum("NUMBA_NUM_THREADS" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("threads", [0, -2])
def test_fewer_than_one_thread_is_refused_in_one_line(threads):
    with pytest.raises(ValueError, match="draft_threads .* must be >= 1"):
        DraftConfig(draft_threads=threads)
