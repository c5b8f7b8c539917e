"""Boundary types of the index core: small, frozen, validated where they are built.

The types the SDK shares (LookupParams, ContinuationTree, TrieBatch) live in the wire
contract, ``sssd_wire.types``, and are re-exported here for the core's own use.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sssd_wire.errors import InvalidArgument
from sssd_wire.types import ContinuationTree, LookupParams, TrieBatch, token_array  # noqa: F401 (re-exported)
from sssd_wire.types import MAX_VOCAB, NAMESPACE_NAME, whole_numbers


MAX_RETENTION = 1 << 48  # tokens a namespace may be bounded to (SQLite stores int64)


@dataclasses.dataclass(frozen=True)
class NamespaceSpec:
    """A namespace: the tenant boundary and the meaning of its token ids.

    name: ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``.
    vocab_size: token ids must lie in ``[0, vocab_size)``.
    tokenizer_fingerprint: free text identifying the tokenizer (e.g. a hash of tokenizer.json).
    max_tokens: retention bound; when live tokens exceed it the oldest documents are evicted.
        0 means unbounded.
    """

    name: str
    vocab_size: int
    tokenizer_fingerprint: str = ""
    max_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAMESPACE_NAME.match(self.name):
            raise InvalidArgument(f"namespace name {self.name!r} must match {NAMESPACE_NAME.pattern}")
        whole_numbers(self, ("vocab_size", "max_tokens"))  # ("100" and 100.0 were taken, and stored)
        if not (2 <= self.vocab_size <= MAX_VOCAB):
            raise InvalidArgument(f"vocab_size {self.vocab_size} must be in [2, {MAX_VOCAB}]")
        if not 0 <= self.max_tokens <= MAX_RETENTION:
            raise InvalidArgument(f"max_tokens {self.max_tokens} must be in [0, {MAX_RETENTION}] (0 = unbounded)")
        if len(self.tokenizer_fingerprint) > 256:
            raise InvalidArgument("tokenizer_fingerprint longer than 256 characters")


def checked_tokens(tokens, what: str) -> np.ndarray:
    """``token_array`` (the wire's check: floats were truncated and stored or matched, an int64 id
    past int32 wrapped around to another token) with its error as InvalidArgument, the datastore's."""
    try:
        return token_array(tokens, what)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class Document:
    """One token sequence with a client-chosen id (ingest is idempotent by id)."""

    doc_id: str
    tokens: np.ndarray  # [n] int32

    @staticmethod
    def of(doc_id: str, tokens) -> "Document":
        """InvalidArgument when ``tokens`` are not token ids (``checked_tokens``)."""
        return Document(doc_id, np.ascontiguousarray(checked_tokens(tokens, f"document {doc_id!r}")))
