"""The one codec of the wire contract: packed tokens, ragged context batches, flat trie batches.

Tokens travel as little-endian int32 bytes; a batch of contexts as one buffer plus lengths;
a batch of tries as one buffer per field plus node offsets. Both the service and the SDK
encode and decode through these functions, so the two sides cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sssd_wire.errors import InvalidArgument
from sssd_wire.types import NOT_CONTEXTS, LookupParams, TrieBatch, integer, listed, token_array
from sssd_wire.v1 import datastore_pb2 as pb

DEFAULT_PARAMS = LookupParams()
WIRE_INT = np.dtype("<i4")  # tokens travel as little-endian int32


def encode_tokens(tokens, what: str = "tokens") -> bytes:
    return np.ascontiguousarray(token_array(tokens, what), dtype="<i4").tobytes()


def decode_tokens(data: bytes, what: str = "tokens") -> np.ndarray:
    """Packed little-endian int32 -> int32 array; InvalidArgument when the length is not 4k.

    A copy, not a view of the message's bytes: a view is read-only, and numba compiles a
    kernel apart for read-only arrays, so the first lookup or draft that met one would stall
    on a compile (10-45 ms measured) that the kernels' warm-up, on writable arrays, did not do."""
    if len(data) % 4:
        raise InvalidArgument(f"{what}: {len(data)} bytes is not a whole number of int32 tokens")
    return np.frombuffer(data, dtype="<i4").astype(np.int32)


def params_to_proto(p: LookupParams) -> pb.LookupParams:
    return pb.LookupParams(max_match=p.max_match, min_match=p.min_match, min_occurrences=p.min_occurrences,
                           sample_budget=p.sample_budget, depth=p.depth, max_nodes=p.max_nodes)


def params_from_proto(p: pb.LookupParams) -> LookupParams:
    """Zero fields take the server default; InvalidArgument for values out of range."""
    d = DEFAULT_PARAMS
    return LookupParams(
        max_match=p.max_match or d.max_match, min_match=p.min_match or d.min_match,
        min_occurrences=p.min_occurrences or d.min_occurrences, sample_budget=p.sample_budget or d.sample_budget,
        depth=p.depth or d.depth, max_nodes=p.max_nodes or d.max_nodes,
    )


def namespace_name(namespace) -> str:
    """``namespace`` when it is a string; else a one-line ValueError (protobuf's TypeError of an int
    there read "bad argument type for built-in operation", naming neither the field nor the value)."""
    if not isinstance(namespace, str):
        raise ValueError(f"namespace {namespace!r} must be a string (a namespace's name), "
                         f"not {type(namespace).__name__}")
    return namespace


def lookup_request(namespace: str, contexts: Sequence, params: LookupParams = DEFAULT_PARAMS,
                   request_id: int = 0, background: bool = False) -> pb.LookupRequest:
    """One request for a batch of contexts; only their last ``max_match`` tokens travel;
    background: no decode step waits for it (LookupRequest.background)."""
    namespace_name(namespace)
    tails = []
    for c in contexts:
        try:
            t = c[-params.max_match :]
        except (IndexError, TypeError):  # an id where a context was due (numpy: "invalid index to scalar variable")
            raise ValueError(NOT_CONTEXTS) from None
        if type(t) is not np.ndarray or t.dtype != WIRE_INT or t.ndim != 1:  # (the SDK's own: int32 arrays)
            t = np.asarray(token_array(t, "a context"), dtype=WIRE_INT)
        tails.append(t)
    return pb.LookupRequest(namespace=namespace, contexts=b"".join(t.tobytes() for t in tails),
                            context_lengths=[t.shape[0] for t in tails], params=params_to_proto(params),
                            request_id=request_id, background=background)


def contexts_from_proto(req: pb.LookupRequest) -> tuple[np.ndarray, np.ndarray]:
    """(flat int32 tails, offsets [B + 1]) of a LookupRequest; InvalidArgument on mismatch."""
    ctx = decode_tokens(req.contexts, "contexts")
    off = np.zeros(len(req.context_lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(req.context_lengths, dtype=np.int64), out=off[1:])
    if off[-1] != ctx.shape[0]:  # lengths are unsigned, so a matching sum is a partition
        raise InvalidArgument(f"context_lengths sum to {int(off[-1])} but contexts hold {ctx.shape[0]} tokens")
    return ctx, off


def tries_to_proto(batch: TrieBatch, request_id: int = 0) -> pb.LookupResponse:
    meta = batch.meta
    return pb.LookupResponse(
        tokens=encode_tokens(batch.tokens), parents=encode_tokens(batch.parents), counts=encode_tokens(batch.counts),
        node_offsets=batch.node_offsets.astype("<i8").tobytes(),
        match_lengths=meta[:, 0].astype("<i4").tobytes(), occurrences=meta[:, 1].astype("<i8").tobytes(),
        sampled=meta[:, 2].astype("<i4").tobytes(), request_id=request_id,
    )


class MalformedAnswer(ValueError):
    """A LookupResponse that is no batch of tries (a server's defect, or another contract's):
    refused where it is decoded, so that drafting never reads past its arrays."""


def tries_from_proto(r: pb.LookupResponse) -> TrieBatch:
    """The flat LookupResponse as a TrieBatch of writable arrays (see ``decode_tokens``), checked
    (``check_tries``): MalformedAnswer for one that is not a batch of tries."""
    try:
        meta = np.stack([np.frombuffer(r.match_lengths, dtype="<i4").astype(np.int64),
                         np.frombuffer(r.occurrences, dtype="<i8").astype(np.int64),
                         np.frombuffer(r.sampled, dtype="<i4").astype(np.int64)], axis=1).reshape(-1, 3)
        batch = TrieBatch(decode_tokens(r.tokens), decode_tokens(r.parents), decode_tokens(r.counts),
                          np.frombuffer(r.node_offsets, dtype="<i8").astype(np.int64), meta)
    except ValueError as exc:  # (InvalidArgument too: a field of a length no array has)
        raise MalformedAnswer(f"a lookup answer that is no batch of tries: {exc}") from None
    check_tries(batch)
    return batch


def check_tries(b: TrieBatch) -> None:
    """MalformedAnswer unless ``b``'s node offsets run from 0 to its node count without going back,
    one per trie plus one, and each node's parent is -1 or an earlier node of its own trie (the
    drafting kernels read an answer unchecked: offsets past its nodes failed a decode step, a
    parent past its trie read what lay beyond it). One compiled pass that holds no GIL: numpy's
    ten calls took 17-33 us of it per answer, as long as decoding the answer."""
    n = b.tokens.shape[0]
    if not (n == b.parents.shape[0] == b.counts.shape[0] and b.node_offsets.shape[0] == b.meta.shape[0] + 1):
        raise MalformedAnswer("a lookup answer that is no batch of tries: fields of unequal lengths")
    global _compiled_fault
    if _compiled_fault is None:  # (numba at first use: the CLI and the server's imports do without its 0.4 s)
        import numba

        _compiled_fault = numba.njit(cache=True, nogil=True)(_tries_fault)
    fault = _compiled_fault(b.parents, b.node_offsets)
    if fault:
        raise MalformedAnswer("a lookup answer that is no batch of tries: " + (
            f"node offsets that do not run from 0 to its {n} nodes" if fault == 1
            else "a parent that is no earlier node of its trie"))


_compiled_fault = None  # _tries_fault compiled, once the first answer is checked (the SDK's warm-up checks one)


def _tries_fault(parents, offsets):
    """0 for a well-formed batch; 1: offsets that do not run from 0 to the node count without
    going back; 2: a node whose parent p is not -1 <= p < its index within its trie."""
    last = offsets.shape[0] - 1
    if last < 0 or offsets[0] != 0 or offsets[last] != parents.shape[0]:
        return 1
    for t in range(last):
        start, end = offsets[t], offsets[t + 1]
        if end < start:
            return 1
        for i in range(start, end):
            if parents[i] < -1 or parents[i] >= i - start:
                return 2
    return 0


def documents_to_proto(namespace: str, docs) -> pb.IngestRequest:
    """docs: (id, tokens) pairs; a one-line ValueError for an id that is not a string (protobuf
    said "bad argument type for built-in operation" of an int, and sent None as "")."""
    return pb.IngestRequest(namespace=namespace_name(namespace),
                            documents=[pb.TokenDocument(id=document_id(i), tokens=encode_tokens(t, f"document {i!r}"))
                                       for i, t in map(_id_and_tokens, docs)])


def _id_and_tokens(doc) -> tuple:
    """One (id, tokens) pair of ``docs``; a one-line ValueError for anything else (a dict was
    unpacked into its two keys, an id alone said "cannot unpack non-iterable int object")."""
    if not isinstance(doc, (tuple, list)) or len(doc) != 2:
        raise ValueError(f"documents must be (id, tokens) pairs, not {type(doc).__name__} {str(doc)[:40]}")
    return doc


def document_id(doc_id) -> str:
    if not isinstance(doc_id, str):
        raise ValueError(f"document id {doc_id!r} must be a string, not {type(doc_id).__name__}")
    return doc_id


def document_ids(ids) -> list[str]:
    """``ids`` as a list of document ids, each ``document_id``-checked; one string is refused (it
    was read as one id per character: deleting ``"ab"`` deleted the documents "a" and "b")."""
    listed(ids, "ids", "document ids")
    return [document_id(i) for i in ids]


def delete_request(namespace: str, ids, missing_ok: bool = False) -> pb.DeleteDocumentsRequest:
    """The request both clients send to delete ``ids`` (``document_ids``-checked) from ``namespace``."""
    return pb.DeleteDocumentsRequest(namespace=namespace_name(namespace), ids=document_ids(ids), missing_ok=missing_ok)


def create_namespace_request(name: str, vocab_size: int, tokenizer_fingerprint: str = "",
                             max_tokens: int = 0) -> pb.CreateNamespaceRequest:
    """The request both clients send; a one-line ValueError for sizes past the wire's uint32 and
    uint64 (protobuf's own error names neither field: "Value out of range: -5")."""
    vocab_size, max_tokens = integer(vocab_size, "vocab_size"), integer(max_tokens, "max_tokens")  # ("100": '<=')
    if not 0 <= vocab_size < 1 << 32:  # (each named alone: the message named both, whichever was out)
        raise ValueError(f"vocab_size {vocab_size} must be in [0, 2**32)")
    if not 0 <= max_tokens < 1 << 64:
        raise ValueError(f"max_tokens {max_tokens} must be in [0, 2**64) (0: unbounded)")
    if not isinstance(tokenizer_fingerprint, str):  # (protobuf's "bad argument type for built-in operation")
        raise ValueError(f"tokenizer_fingerprint must be a string, not {type(tokenizer_fingerprint).__name__}")
    return pb.CreateNamespaceRequest(name=namespace_name(name), vocab_size=vocab_size,
                                     tokenizer_fingerprint=tokenizer_fingerprint,
                                     max_tokens=max_tokens)
