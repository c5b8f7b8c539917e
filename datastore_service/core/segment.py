"""Immutable suffix-array segments.

A segment holds documents joined into one int32 token array, each document followed by the
separator ``SEP = vocab_size`` (never a real token, so no pattern match crosses a document
boundary), then ``PAD`` zero tokens so that fixed-width gathers never leave the array.

Search accelerator: for segments at least as long as the vocabulary, ``first_off`` holds
the suffix-array range of each first token (8 bytes per vocabulary id), so a search starts
inside its bucket; smaller segments search the whole suffix array. Resident cost is 8 bytes
per token (tokens + suffix array) plus that table.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pydivsufsort


PAD = 96  # > max tree depth + max match length: gathers at any text position stay in bounds
NO_BUCKETS = np.zeros(0, dtype=np.int64)


@dataclasses.dataclass(eq=False)
class Segment:
    """One immutable suffix-array segment. Only ``alive`` changes (deletion marks)."""

    segment_id: int
    vocab_size: int
    tokens: np.ndarray  # [n + PAD] int32; docs joined by SEP, then PAD zeros
    sa: np.ndarray  # [n] int32: suffix array of tokens[:n]
    first_off: np.ndarray  # [vocab + 2] int64 bucket starts, or [0] (no table)
    doc_starts: np.ndarray  # [d + 1] int64: doc i = tokens[doc_starts[i] : doc_starts[i+1] - 1]
    doc_ids: tuple[str, ...]  # [d]
    doc_seqs: np.ndarray  # [d] int64: ingest sequence numbers, strictly increasing
    alive: np.ndarray  # [d] bool: False once deleted or evicted

    @property
    def sep(self) -> int:
        return self.vocab_size

    @property
    def n(self) -> int:
        return int(self.sa.shape[0])

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def n_dead(self) -> int:
        return int(self.alive.shape[0] - np.count_nonzero(self.alive))

    def live_tokens(self) -> int:
        lengths = np.diff(self.doc_starts) - 1
        return int(lengths[self.alive].sum())

    def resident_bytes(self) -> int:
        arrays = (self.tokens, self.sa, self.first_off, self.doc_starts, self.doc_seqs, self.alive)
        return sum(a.nbytes for a in arrays)

    def doc_tokens(self, ordinal: int) -> np.ndarray:
        start, end = int(self.doc_starts[ordinal]), int(self.doc_starts[ordinal + 1]) - 1
        return self.tokens[start:end]


def bucket_table(tokens: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
    if n < vocab_size:
        return NO_BUCKETS
    off = np.zeros(vocab_size + 2, dtype=np.int64)
    np.cumsum(np.bincount(tokens[:n], minlength=vocab_size + 1), out=off[1:])
    return off


def build_segment(segment_id: int, vocab_size: int, docs: list[tuple[str, int, np.ndarray]]) -> Segment:
    """Join documents (id, seq, int32 tokens) and build their suffix array.

    Pure and lock-free: call it outside any index lock; install the result afterwards.
    """
    lengths = np.array([len(t) + 1 for _, _, t in docs], dtype=np.int64)
    starts = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    n = int(starts[-1])
    if n >= 1 << 31:
        raise ValueError(f"segment of {n} tokens exceeds the int32 suffix-array limit")
    tokens = np.zeros(n + PAD, dtype=np.int32)
    for (_, _, toks), s in zip(docs, starts[:-1].tolist()):
        tokens[s : s + len(toks)] = toks
        tokens[s + len(toks)] = vocab_size
    return restore_segment(
        segment_id,
        vocab_size,
        tokens,
        _suffix_array(tokens[:n]),
        starts,
        tuple(d for d, _, _ in docs),
        np.array([s for _, s, _ in docs], dtype=np.int64),
        np.ones(len(docs), dtype=bool),
    )


def _suffix_array(text: np.ndarray) -> np.ndarray:
    if text.shape[0] == 0:
        return np.zeros(0, dtype=np.int32)
    sa = pydivsufsort.divsufsort(text)
    return sa if sa.dtype == np.int32 else sa.astype(np.int32)


def restore_segment(
    segment_id: int,
    vocab_size: int,
    tokens: np.ndarray,
    sa: np.ndarray,
    doc_starts: np.ndarray,
    doc_ids: tuple[str, ...],
    doc_seqs: np.ndarray,
    alive: np.ndarray,
) -> Segment:
    """A Segment from its arrays (built or snapshotted); only the bucket table is derived."""
    n = int(sa.shape[0])
    return Segment(
        segment_id=segment_id,
        vocab_size=vocab_size,
        tokens=tokens,
        sa=sa,
        first_off=bucket_table(tokens, n, vocab_size),
        doc_starts=doc_starts,
        doc_ids=doc_ids,
        doc_seqs=doc_seqs,
        alive=alive,
    )


def merge_segments(segment_id: int, vocab_size: int, segments: list[Segment]) -> Segment:
    """Build one segment from the live documents of ``segments``, oldest first.

    Lock-free like build_segment; documents deleted while it runs are caught by install().
    """
    docs = []
    for seg in segments:
        for ordinal in np.flatnonzero(seg.alive).tolist():
            docs.append((seg.doc_ids[ordinal], int(seg.doc_seqs[ordinal]), seg.doc_tokens(ordinal)))
    docs.sort(key=lambda d: d[1])
    return build_segment(segment_id, vocab_size, docs)
