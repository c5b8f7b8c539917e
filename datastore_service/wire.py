"""Conversions between the wire contract and the core types, with boundary validation."""

from __future__ import annotations

import numpy as np

from datastore_service.core import Document, LookupParams, NamespaceSpec, TreeBatch
from datastore_service.errors import InvalidArgument
from sssd.datastore.v1 import datastore_pb2 as pb

DEFAULT_PARAMS = LookupParams()


def decode_tokens(data: bytes, what: str) -> np.ndarray:
    """Packed little-endian int32 -> int32 array; InvalidArgument when the length is not 4k."""
    if len(data) % 4:
        raise InvalidArgument(f"{what}: {len(data)} bytes is not a whole number of int32 tokens")
    return np.frombuffer(data, dtype="<i4").astype(np.int32, copy=False)


def encode_tokens(tokens) -> bytes:
    return np.ascontiguousarray(tokens, dtype="<i4").tobytes()


def documents_from_proto(req: pb.IngestRequest) -> list[Document]:
    return [Document(d.id, decode_tokens(d.tokens, f"document {d.id!r}")) for d in req.documents]


def params_from_proto(p: pb.LookupParams) -> LookupParams:
    """Zero fields take the server default."""
    d = DEFAULT_PARAMS
    return LookupParams(
        max_match=p.max_match or d.max_match,
        min_match=p.min_match or d.min_match,
        min_occurrences=p.min_occurrences or d.min_occurrences,
        sample_budget=p.sample_budget or d.sample_budget,
        depth=p.depth or d.depth,
        max_nodes=p.max_nodes or d.max_nodes,
    )


def params_to_proto(p: LookupParams) -> pb.LookupParams:
    return pb.LookupParams(
        max_match=p.max_match, min_match=p.min_match, min_occurrences=p.min_occurrences,
        sample_budget=p.sample_budget, depth=p.depth, max_nodes=p.max_nodes,
    )


def contexts_from_proto(req: pb.LookupRequest) -> tuple[np.ndarray, np.ndarray]:
    """(flat int32 tails, offsets [B + 1]) of a LookupRequest; InvalidArgument on mismatch."""
    ctx = decode_tokens(req.contexts, "contexts")
    off = np.zeros(len(req.context_lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(req.context_lengths, dtype=np.int64), out=off[1:])
    if off[-1] != ctx.shape[0]:  # lengths are unsigned, so a matching sum is a partition
        raise InvalidArgument(f"context_lengths sum to {int(off[-1])} but contexts hold {ctx.shape[0]} tokens")
    return ctx, off


def batch_to_proto(batch: TreeBatch, request_id: int) -> pb.LookupResponse:
    meta = batch.meta
    return pb.LookupResponse(
        tokens=batch.tokens.tobytes(), parents=batch.parents.tobytes(), counts=batch.counts.tobytes(),
        node_offsets=batch.node_offsets.astype("<i8").tobytes(),
        match_lengths=meta[:, 0].astype("<i4").tobytes(), occurrences=meta[:, 1].astype("<i8").tobytes(),
        sampled=meta[:, 2].astype("<i4").tobytes(), request_id=request_id,
    )


def namespace_to_proto(spec: NamespaceSpec) -> pb.Namespace:
    return pb.Namespace(
        name=spec.name, vocab_size=spec.vocab_size,
        tokenizer_fingerprint=spec.tokenizer_fingerprint, max_tokens=spec.max_tokens,
    )


def namespace_from_proto(req: pb.CreateNamespaceRequest) -> NamespaceSpec:
    return NamespaceSpec(req.name, req.vocab_size, req.tokenizer_fingerprint, req.max_tokens)
