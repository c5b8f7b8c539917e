"""asyncio variant of the datastore client (grpc.aio), for services that run an event loop.

The calls and results of client_sdk.transport.remote.DatastoreClient but its lookup futures and
streams (an event loop awaits the calls instead); every call has a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable, Sequence

from client_sdk.transport.remote import ANSWER_BYTES, DEFAULT_ADDRESS, IngestMessages, in_parts, make_channel
from sssd_wire.codec import (create_namespace_request, delete_request, documents_to_proto, lookup_request,
                             namespace_name, tries_from_proto)
from sssd_wire.settings import bearer_metadata, deadline, require_at_least, seconds_above_zero
from sssd_wire.types import ContinuationTree, LookupParams, TrieBatch
from sssd_wire.v1 import datastore_pb2 as pb
from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc


class AsyncDatastoreClient:
    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, tls_ca: str | None = None,
                 timeout_s: float = 10.0, max_message_bytes: int = ANSWER_BYTES, max_lookup_contexts: int = 4096) -> None:
        """max_lookup_contexts: as DatastoreClient's (a larger lookup is sent in parts)."""
        self.max_lookup_contexts = max_lookup_contexts
        require_at_least(self, 1, ("max_lookup_contexts",))
        self.metadata = bearer_metadata(token)  # (checked before a channel is opened)
        self.timeout_s = seconds_above_zero(timeout_s)  # (checked: -1, NaN and inf failed every call as DEADLINE_EXCEEDED)
        self.max_message_bytes = max_message_bytes  # (a lookup goes in parts whose answers fit it)
        self.channel = make_channel(address, tls_ca, max_message_bytes, aio=True)
        self.stub = pb_grpc.DatastoreStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncDatastoreClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, rpc, request, timeout_s: float | None = None):
        return await rpc(request, timeout=deadline(timeout_s, self.timeout_s), metadata=self.metadata)

    async def lookup(self, namespace: str, contexts: Sequence, options: LookupParams = LookupParams(),
                     timeout_s: float | None = None) -> list[ContinuationTree]:
        return (await self.lookup_batch(namespace, contexts, options, timeout_s)).trees()

    async def lookup_batch(self, namespace: str, contexts: Sequence, options: LookupParams = LookupParams(),
                           timeout_s: float | None = None) -> TrieBatch:
        calls = [self._call(self.stub.Lookup, lookup_request(namespace, part, options), timeout_s)
                 for part in in_parts(contexts, self.max_lookup_contexts, options.max_nodes, self.max_message_bytes)]
        return TrieBatch.joined([tries_from_proto(r) for r in await asyncio.gather(*calls)])

    async def ingest(self, namespace: str, docs: Iterable[tuple[str, Sequence[int]]],
                     timeout_s: float | None = None) -> pb.IngestResponse:
        return await self._call(self.stub.Ingest, documents_to_proto(namespace, docs), timeout_s)

    async def ingest_stream(self, namespace: str, batches: AsyncIterable, timeout_s: float = 3600.0) -> pb.IngestSummary:
        messages = IngestMessages(namespace, batches)  # (as DatastoreClient.ingest_stream's)
        return messages.reraise(await self.stub.IngestStream(messages.__aiter__(), timeout=deadline(timeout_s),
                                                             metadata=self.metadata))

    async def create_namespace(self, name: str, vocab_size: int, tokenizer_fingerprint: str = "",
                               max_tokens: int = 0) -> pb.Namespace:
        req = create_namespace_request(name, vocab_size, tokenizer_fingerprint, max_tokens)
        return await self._call(self.stub.CreateNamespace, req)

    async def list_namespaces(self) -> list[pb.Namespace]:
        return list((await self._call(self.stub.ListNamespaces, pb.ListNamespacesRequest())).namespaces)

    async def drop_namespace(self, name: str) -> None:
        await self._call(self.stub.DropNamespace, pb.DropNamespaceRequest(name=namespace_name(name)))

    async def compact(self, namespace: str = "", full: bool = True, timeout_s: float = 3600.0) -> int:
        req = pb.CompactRequest(namespace=namespace_name(namespace), full=full)
        return (await self._call(self.stub.Compact, req, timeout_s)).segments_retired

    async def delete(self, namespace: str, ids: Sequence[str], missing_ok: bool = False) -> list[str]:
        return list((await self._call(self.stub.DeleteDocuments, delete_request(namespace, ids, missing_ok))).deleted)

    async def stats(self, namespace: str = "") -> pb.StatsResponse:
        return await self._call(self.stub.Stats, pb.StatsRequest(namespace=namespace_name(namespace)))

    async def snapshot(self, timeout_s: float = 3600.0) -> int:
        return (await self._call(self.stub.Snapshot, pb.SnapshotRequest(), timeout_s)).tokens_flushed
