"""Synthetic token corpora for benchmarks and tests.

Zipf-distributed unigrams alone make every 4-gram unique, which no real corpus looks like.
Here half of each document is drawn from a Zipf-distributed pool of phrases (4-16 tokens),
so n-grams repeat with a heavy tail, as in logged model responses.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable

import numpy as np


def zipf_tokens(rng: np.random.Generator, n: int, vocab: int, a: float = 1.1) -> np.ndarray:
    return ((rng.zipf(a, n) - 1) % vocab).astype(np.int32)


def corpus(n_tokens: int, vocab: int, seed: int = 0, doc_len: tuple[int, int] = (100, 1000)) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n_tokens] int32, doc_starts [d + 1]) of a synthetic corpus."""
    rng = np.random.default_rng(seed)
    pool_size = max(1000, n_tokens // 200)
    phrase_len = rng.integers(4, 17, pool_size)
    phrase_off = np.zeros(pool_size + 1, dtype=np.int64)
    np.cumsum(phrase_len, out=phrase_off[1:])
    phrases = zipf_tokens(rng, int(phrase_off[-1]), vocab)
    tokens = zipf_tokens(rng, n_tokens, vocab)
    # overwrite about half of the text with phrases picked by a Zipf law over the pool
    n_ins = n_tokens // (2 * 10)
    where = np.sort(rng.integers(0, max(1, n_tokens - 16), n_ins))
    which = (rng.zipf(1.2, n_ins) - 1) % pool_size
    for w, p in zip(where.tolist(), which.tolist()):
        a, b = int(phrase_off[p]), int(phrase_off[p + 1])
        tokens[w : w + (b - a)] = phrases[a:b]
    lengths = rng.integers(doc_len[0], doc_len[1] + 1, n_tokens // doc_len[0] + 2)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    starts = starts[starts < n_tokens]
    return tokens, np.append(starts, n_tokens).astype(np.int64)


def runs_on_corpus(runs: int, tokens: int, vocab: int, run: Callable) -> list:
    """``run(tmp, index, text, starts)`` for each of ``runs`` runs, on one synthetic corpus of
    ``tokens`` tokens and in one temporary directory ``tmp`` (for the runs' databases); each
    result is also printed to stderr as JSON as it comes (the progress of a long benchmark)."""
    text, starts = corpus(tokens, vocab)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(runs):
            results.append(run(tmp, r, text, starts))
            print(json.dumps(results[-1]), file=sys.stderr)
    return results
