"""Blocking and future-based client for the datastore service (thread-safe).

Every call carries a deadline. gRPC channels reconnect by themselves; failures surface as
``grpc.RpcError`` with the server's status code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent import futures

import grpc
import numpy as np

from client_sdk.types import Continuation, LookupOptions, TrieBatch
from sssd.datastore.v1 import datastore_pb2 as pb
from sssd.datastore.v1 import datastore_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


def pack(tokens) -> bytes:
    return np.ascontiguousarray(tokens, dtype="<i4").tobytes()


def unpack(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i4").astype(np.int32, copy=False)


def tries_from_proto(r: pb.LookupResponse) -> TrieBatch:
    """The flat LookupResponse as a TrieBatch (no copies beyond decoding)."""
    return TrieBatch(
        unpack(r.tokens), unpack(r.parents), unpack(r.counts),
        np.frombuffer(r.node_offsets, dtype="<i8").astype(np.int64, copy=False),
        np.frombuffer(r.match_lengths, dtype="<i4").astype(np.int64),
    )


def continuations_from_proto(r: pb.LookupResponse) -> list[Continuation]:
    """Split a flat LookupResponse into one Continuation per context."""
    tokens, parents, counts = unpack(r.tokens), unpack(r.parents), unpack(r.counts)
    bounds = np.frombuffer(r.node_offsets, dtype="<i8").tolist()
    match = np.frombuffer(r.match_lengths, dtype="<i4").tolist()
    occ = np.frombuffer(r.occurrences, dtype="<i8").tolist()
    return [
        Continuation(tokens[a:b], parents[a:b], counts[a:b], m, o)
        for a, b, m, o in zip(bounds[:-1], bounds[1:], match, occ)
    ]


def lookup_request(namespace: str, contexts: Sequence, options: LookupOptions, request_id: int = 0) -> pb.LookupRequest:
    o = options
    params = pb.LookupParams(
        max_match=o.max_match, min_match=o.min_match, min_occurrences=o.min_occurrences,
        sample_budget=o.sample_budget, depth=o.depth, max_nodes=o.max_nodes,
    )
    tails = [np.asarray(c[-o.max_match :], dtype="<i4") for c in contexts]
    return pb.LookupRequest(
        namespace=namespace, contexts=b"".join(t.tobytes() for t in tails),
        context_lengths=[t.shape[0] for t in tails], params=params, request_id=request_id,
    )


def make_channel(address: str, tls_ca: str | None = None, max_message_bytes: int = 64 << 20) -> grpc.Channel:
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if tls_ca:
        with open(tls_ca, "rb") as f:
            return grpc.secure_channel(address, grpc.ssl_channel_credentials(f.read()), options)
    return grpc.insecure_channel(address, options)


class DatastoreClient:
    """One channel, all RPCs. ``timeout_s`` is the default deadline of every call."""

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, tls_ca: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.address = address
        self.channel = make_channel(address, tls_ca)
        self.stub = pb_grpc.DatastoreStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "DatastoreClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, rpc, request, timeout_s: float | None = None):
        return rpc(request, timeout=timeout_s or self.timeout_s, metadata=self.metadata)

    # -- data plane ---------------------------------------------------------------------

    def lookup(self, namespace: str, contexts: Sequence, options: LookupOptions = LookupOptions(),
               timeout_s: float | None = None) -> list[Continuation]:
        response = self._call(self.stub.Lookup, lookup_request(namespace, contexts, options), timeout_s)
        return continuations_from_proto(response)

    def lookup_batch(self, namespace: str, contexts: Sequence, options: LookupOptions = LookupOptions(),
                     timeout_s: float | None = None) -> TrieBatch:
        return tries_from_proto(self._call(self.stub.Lookup, lookup_request(namespace, contexts, options), timeout_s))

    def lookup_future(self, namespace: str, contexts: Sequence, options: LookupOptions = LookupOptions(),
                      timeout_s: float | None = None, flat: bool = False) -> futures.Future:
        """A future resolving to list[Continuation] (TrieBatch when flat) or raising grpc.RpcError."""
        call = self.stub.Lookup.future(
            lookup_request(namespace, contexts, options), timeout=timeout_s or self.timeout_s, metadata=self.metadata
        )
        out: futures.Future = futures.Future()

        def done(f) -> None:
            try:
                response = f.result()
                out.set_result(tries_from_proto(response) if flat else continuations_from_proto(response))
            except Exception as exc:  # grpc.RpcError or cancellation, handed to the waiter
                out.set_exception(exc)

        call.add_done_callback(done)
        return out

    def ingest(self, namespace: str, docs: Iterable[tuple[str, Sequence[int]]], timeout_s: float | None = None) -> pb.IngestResponse:
        req = pb.IngestRequest(namespace=namespace, documents=[pb.TokenDocument(id=i, tokens=pack(t)) for i, t in docs])
        return self._call(self.stub.Ingest, req, timeout_s)

    def ingest_stream(self, namespace: str, batches: Iterable[Sequence[tuple[str, Sequence[int]]]],
                      timeout_s: float | None = None) -> pb.IngestSummary:
        requests = (
            pb.IngestRequest(namespace=namespace, documents=[pb.TokenDocument(id=i, tokens=pack(t)) for i, t in batch])
            for batch in batches
        )
        return self.stub.IngestStream(requests, timeout=timeout_s or 3600.0, metadata=self.metadata)

    # -- admin --------------------------------------------------------------------------

    def create_namespace(self, name: str, vocab_size: int, tokenizer_fingerprint: str = "", max_tokens: int = 0) -> pb.Namespace:
        req = pb.CreateNamespaceRequest(name=name, vocab_size=vocab_size, tokenizer_fingerprint=tokenizer_fingerprint, max_tokens=max_tokens)
        return self._call(self.stub.CreateNamespace, req)

    def list_namespaces(self) -> list[pb.Namespace]:
        return list(self._call(self.stub.ListNamespaces, pb.ListNamespacesRequest()).namespaces)

    def drop_namespace(self, name: str) -> None:
        self._call(self.stub.DropNamespace, pb.DropNamespaceRequest(name=name))

    def stats(self, namespace: str = "") -> pb.StatsResponse:
        return self._call(self.stub.Stats, pb.StatsRequest(namespace=namespace))

    def compact(self, namespace: str = "", full: bool = True, timeout_s: float = 3600.0) -> int:
        return self._call(self.stub.Compact, pb.CompactRequest(namespace=namespace, full=full), timeout_s).segments_retired

    def snapshot(self, timeout_s: float = 3600.0) -> int:
        return self._call(self.stub.Snapshot, pb.SnapshotRequest(), timeout_s).tokens_flushed

    def delete(self, namespace: str, ids: Sequence[str], missing_ok: bool = False) -> list[str]:
        req = pb.DeleteDocumentsRequest(namespace=namespace, ids=list(ids), missing_ok=missing_ok)
        return list(self._call(self.stub.DeleteDocuments, req).deleted)
