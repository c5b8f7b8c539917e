"""The service's side of the wire: core types (documents, namespaces) to and from messages.

Tokens, contexts, lookup parameters and tries go through the shared codec (sssd_wire.codec).
"""

from __future__ import annotations

import dataclasses

from datastore_service.core import Document, IndexCounts, NamespaceSpec
from sssd_wire.codec import decode_tokens
from sssd_wire.v1 import datastore_pb2 as pb


def documents_from_proto(req: pb.IngestRequest) -> list[Document]:
    return [Document(d.id, decode_tokens(d.tokens, f"document {d.id!r}")) for d in req.documents]


def namespace_to_proto(spec: NamespaceSpec) -> pb.Namespace:
    return pb.Namespace(
        name=spec.name, vocab_size=spec.vocab_size,
        tokenizer_fingerprint=spec.tokenizer_fingerprint, max_tokens=spec.max_tokens,
    )


def stats_to_proto(spec: NamespaceSpec, counts: IndexCounts, lookup_rate: float = 0.0,
                   ingest_rate: float = 0.0) -> pb.NamespaceStats:
    return pb.NamespaceStats(name=spec.name, vocab_size=spec.vocab_size,
                             tokenizer_fingerprint=spec.tokenizer_fingerprint, max_tokens=spec.max_tokens,
                             lookup_rate=lookup_rate, ingest_rate=ingest_rate, **dataclasses.asdict(counts))


def namespace_from_proto(req: pb.CreateNamespaceRequest) -> NamespaceSpec:
    return NamespaceSpec(req.name, req.vocab_size, req.tokenizer_fingerprint, req.max_tokens)
