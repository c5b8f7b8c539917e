"""The verify's full attention mask built for a whole batch at once (sglang_integration.masks)
against the request-by-request construction NGRAM's GPU path uses (pure torch, CPU)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_integration.masks import full_tree_mask

BENCH = Path(__file__).resolve().parents[1] / "bench" / "full_mask.py"
_spec = importlib.util.spec_from_file_location("full_mask_bench", BENCH)
full_mask_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(full_mask_bench)
per_request = full_mask_bench.per_request  # NGRAM's construction (ngram_worker.py 325-370), request by request


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 17).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.integers(1, 70), min_size=1, max_size=9), st.randoms(use_true_random=False))))
def test_a_batch_at_once_is_ngrams_request_by_request_mask(case):
    n, seq_lens, rnd = case
    mask = np.array([rnd.random() < 0.35 for _ in range(len(seq_lens) * n * n)], dtype=bool)
    got = full_tree_mask(torch.from_numpy(mask), torch.tensor(seq_lens), n)
    want = per_request(mask, torch.tensor(seq_lens), n)
    assert got.dtype == torch.bool and torch.equal(got, want)


def test_the_mask_must_match_the_batch():
    with pytest.raises(ValueError, match="for 2 requests 3 wide"):
        full_tree_mask(torch.ones(17, dtype=torch.bool), [4, 5], 3)


def test_the_mask_bench_runs_and_counts_each_ways_operations():
    """bench/full_mask.py at a tiny size (what bench/gpu_run.sh runs with --device cuda): both
    ways build the same mask (the bench asserts it), NGRAM's with 7 operations per request and 1
    for the batch, the batched one with the same count at every batch size."""
    out = subprocess.run([sys.executable, str(BENCH), "--batch-sizes", "2,5", "--width", "3", "--contexts", "8",
                          "--rounds", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rows"]
    assert [r["per_request"]["ops"] for r in rows] == [7 * 2 + 1, 7 * 5 + 1]
    assert rows[0]["batched"]["ops"] == rows[1]["batched"]["ops"] < rows[1]["per_request"]["ops"]
