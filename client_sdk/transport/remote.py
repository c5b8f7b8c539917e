"""Blocking and future-based client for the datastore service (thread-safe).

Every call carries a deadline. gRPC channels reconnect by themselves; failures surface as
``grpc.RpcError`` with the server's status code.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Iterable, Sequence
from concurrent import futures

import grpc

from sssd_wire.codec import (create_namespace_request, delete_request, documents_to_proto, lookup_request,
                             namespace_name, tries_from_proto)
from sssd_wire.errors import one_line
from sssd_wire.settings import (bearer_metadata, check_address, deadline, require_at_least, seconds_above_zero,
                                tls_ca_bytes)
from sssd_wire.types import ContinuationTree, LookupParams, TrieBatch
from sssd_wire.v1 import datastore_pb2 as pb
from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc

log = logging.getLogger("sssd.sdk")
DEFAULT_ADDRESS = "127.0.0.1:50051"


# every channel balances over all the addresses its target resolves to (several replicas behind
# one DNS name or Kubernetes headless Service, or an "ipv4:a:p,b:p" list); one address: no change
ROUND_ROBIN = '{"loadBalancingConfig": [{"round_robin": {}}]}'


ANSWER_BYTES = 64 << 20  # the largest message a channel (make_channel) and a server (--max-message-bytes) take


def make_channel(address: str, tls_ca: str | None = None, max_message_bytes: int = ANSWER_BYTES, aio: bool = False):
    """A channel to ``address``: host:port, ``dns:///name:port`` (every address the name
    resolves to) or ``ipv4:h1:p1,h2:p2``; lookups are spread over the addresses round robin.
    ``aio``: a grpc.aio channel (make it on the event loop that will use it)."""
    size = max_message_bytes
    if isinstance(size, bool) or not isinstance(size, int) or not 1 << 16 <= size < 1 << 31:
        raise ValueError(f"max_message_bytes {max_message_bytes!r} must be an integer in 65536..2147483647 "
                         "(as a server's --max-message-bytes; 10 failed every answer)")
    options = [
        ("grpc.service_config", ROUND_ROBIN),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    check_address(address, tls=bool(tls_ca))
    kind = grpc.aio if aio else grpc
    if tls_ca:
        return kind.secure_channel(address, grpc.ssl_channel_credentials(tls_ca_bytes(tls_ca)), options)
    return kind.insecure_channel(address, options)


def several_servers(address: str) -> bool:
    """Whether ``address`` names servers to spread calls over: a ``dns:`` name (every address it
    resolves to) or an ``ipv4:``/``ipv6:`` list."""
    return address.startswith("dns:") or (address.startswith(("ipv4:", "ipv6:")) and "," in address)


def _answer(response: pb.LookupResponse, flat: bool):
    batch = tries_from_proto(response)
    return batch if flat else batch.trees()


def _settle(fut: futures.Future, outcome) -> None:
    """Resolve ``fut`` with ``outcome()`` (or fail it with ``outcome`` when that is an exception,
    or with what ``outcome()`` raised), unless its waiter cancelled it meanwhile."""
    if not fut.set_running_or_notify_cancel():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
        return
    try:
        fut.set_result(outcome())
    except Exception as exc:  # grpc.RpcError, cancellation or a malformed answer: handed to the waiter
        fut.set_exception(exc)


def in_parts(contexts: Sequence, most: int, max_nodes: int = 0, answer_bytes: int = ANSWER_BYTES) -> list[Sequence]:
    """``contexts`` cut into runs of at most ``most``, in order (one run when they fit: the
    service refuses a Lookup of more than its --max-lookup-contexts), and with ``max_nodes``, of
    at most as many as one answer of ``answer_bytes`` holds at 12 bytes a node and 24 a context
    (4,096 contexts at 4,096 nodes each were a 72 MB answer, refused whole)."""
    if max_nodes:
        most = min(most, max(1, (answer_bytes - (1 << 16)) // (12 * max_nodes + 24)))
    return [contexts[i : i + most] for i in range(0, len(contexts), most)] if len(contexts) > most else [contexts]


class IngestMessages:
    """The batches of one IngestStream as its messages (an empty batch is left out: the service
    refuses an empty message). An error raised while reading or encoding them ends the stream
    cleanly, so that what was sent is stored, and ``reraise`` raises it after the call with what
    the server kept: gRPC reads the messages on its own thread, and the error reached the caller
    as "UNKNOWN: Exception iterating requests!", its words and what was stored lost."""

    def __init__(self, namespace: str, batches) -> None:
        self.namespace, self.batches, self.failure = namespace, batches, None

    def __iter__(self):
        try:
            for batch in self.batches:
                if len(batch):
                    yield documents_to_proto(self.namespace, batch)
        except Exception as exc:
            self.failure = exc

    async def __aiter__(self):
        try:
            async for batch in self.batches:
                if len(batch):
                    yield documents_to_proto(self.namespace, batch)
        except Exception as exc:
            self.failure = exc

    def reraise(self, summary: pb.IngestSummary) -> pb.IngestSummary:
        """``summary``, or the error that ended the stream: a ValueError (a malformed batch) in one
        line naming what was stored, any other error with that said in a note."""
        if self.failure is None:
            return summary
        kept = (f"the stream stopped there: the {summary.requests} message(s) before it were stored, "
                f"{summary.added} document(s) added; sending them again skips them by id")
        if isinstance(self.failure, ValueError):
            raise ValueError(f"{self.failure} ({kept})") from None
        self.failure.add_note(kept)
        raise self.failure


def _joined(parts: list[futures.Future], flat: bool) -> futures.Future:
    """One future for a lookup sent in ``parts`` (futures of TrieBatches, in order): the joined
    answer once every part has ended, or the first failed part's error; cancelling it cancels
    the parts."""
    out: futures.Future = futures.Future()
    left, lock = [len(parts)], threading.Lock()

    def part_ended(_) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        batch = lambda: TrieBatch.joined([p.result() for p in parts])  # noqa: E731 (raises a failed part's error)
        _settle(out, lambda: batch() if flat else batch().trees())

    out.add_done_callback(lambda f: [p.cancel() for p in parts] if f.cancelled() else None)
    for p in parts:
        p.add_done_callback(part_ended)
    return out


class StreamedLookups:
    """Lookups over one long-lived ``LookupStream``: no per-call setup on either side (BENCHMARKS:
    `sssd bench fleet --stream`), answers in request order. The stream is pinned to one server,
    so it does not spread over replicas. A broken stream fails the lookups it still owes and
    the next lookup opens a new one. Thread-safe."""

    def __init__(self, client: "DatastoreClient") -> None:
        if several_servers(client.address):  # (it stayed on one of them silently)
            log.warning("lookup_stream: every lookup goes to one server of %s (a stream is pinned to one); "
                        "unary lookups (SSSD_LOOKUP_STREAM=0) spread them over its servers", client.address)
        self.client = client
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue | None = None
        self._owed: collections.deque = collections.deque()

    def _open(self) -> None:
        requests: queue.SimpleQueue = queue.SimpleQueue()
        owed: collections.deque = collections.deque()
        responses = self.client.stub.LookupStream(iter(requests.get, None), metadata=self.client.metadata)
        threading.Thread(target=self._read, args=(responses, owed), name="sssd-lookup-stream", daemon=True).start()
        self._requests, self._owed = requests, owed

    def _read(self, responses, owed: collections.deque) -> None:
        error: Exception = ConnectionError("the lookup stream ended")
        try:
            for response in responses:
                fut, flat = owed.popleft()
                _settle(fut, lambda: _answer(response, flat))
        except grpc.RpcError as exc:
            error = exc
        with self._lock:
            if self._owed is owed:
                self._requests = None
            while owed:
                _settle(owed.popleft()[0], error)

    def lookup_future(self, namespace: str, contexts: Sequence, options: LookupParams, flat: bool) -> futures.Future:
        fut: futures.Future = futures.Future()
        with self._lock:
            if self._requests is None:
                self._open()
            self._owed.append((fut, flat))
            self._requests.put(lookup_request(namespace, contexts, options))
        return fut

    def close(self) -> None:
        with self._lock:
            if self._requests is not None:
                self._requests.put(None)
                self._requests = None


class LoopLookups:
    """Unary lookups made from one long-lived asyncio loop thread over a grpc.aio channel (same
    address and settings as the client's). A sync channel's ``future()`` starts a polling thread
    for every call made while none is in flight, which on a decode worker is every step's
    lookup: about 1.1 ms to issue one on the project's 2-core box, against about 0.35 ms here
    (BENCHMARKS.md). The loop starts with the first lookup. Thread-safe."""

    def __init__(self, client: "DatastoreClient") -> None:
        self.client = client
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._channel = None
        self._stub = None
        self._closed = False

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:  # (a lookup after close started a new loop thread and channel, and was answered)
                raise ValueError("Cannot invoke RPC: the DatastoreClient is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="sssd-lookups", daemon=True)
                thread.start()

                async def open_channel():
                    return make_channel(self.client.address, self.client.tls_ca, aio=True)

                self._channel = asyncio.run_coroutine_threadsafe(open_channel(), loop).result()
                self._stub = pb_grpc.DatastoreStub(self._channel)
                self._loop, self._thread = loop, thread
            return self._loop

    def lookup_future(self, namespace: str, contexts: Sequence, options: LookupParams, timeout_s: float,
                      flat: bool) -> futures.Future:
        loop = self._started()
        request = lookup_request(namespace, contexts, options)  # encoded here, not on the loop

        async def call():
            return _answer(await self._stub.Lookup(request, timeout=timeout_s, metadata=self.client.metadata), flat)

        # cancelling the returned future cancels the call (the server drops it if not started)
        return asyncio.run_coroutine_threadsafe(call(), loop)

    def ready(self, timeout_s: float) -> bool:
        """Whether the channel connects within ``timeout_s``."""
        loop = self._started()

        async def wait():
            await asyncio.wait_for(self._channel.channel_ready(), timeout_s)

        try:
            asyncio.run_coroutine_threadsafe(wait(), loop).result(timeout=timeout_s + 1.0)
            return True
        except (asyncio.TimeoutError, futures.TimeoutError):
            return False

    def close(self) -> None:
        with self._lock:
            loop, self._loop, self._closed = self._loop, None, True
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._channel.close(), loop).result(timeout=5.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5.0)
            loop.close()


class DatastoreClient:
    """One channel, all RPCs. ``timeout_s`` is the default deadline of every call.
    ``lookup_stream``: ``lookup_future`` goes over one LookupStream (see StreamedLookups)."""

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, tls_ca: str | None = None,
                 timeout_s: float = 10.0, lookup_stream: bool = False, max_lookup_contexts: int = 4096) -> None:
        """max_lookup_contexts: the service's --max-lookup-contexts (4096 by default; it refuses a
        larger Lookup): a lookup of more contexts is sent in parts, their answers joined in order."""
        self.timeout_s = seconds_above_zero(timeout_s)  # (inf: every call failed at once as DEADLINE_EXCEEDED)
        self.max_lookup_contexts = max_lookup_contexts
        require_at_least(self, 1, ("max_lookup_contexts",))
        self.metadata = bearer_metadata(token)  # (checked before a channel is opened)
        self.address = address
        self.tls_ca = tls_ca
        self.channel = make_channel(address, tls_ca)
        self.stub = pb_grpc.DatastoreStub(self.channel)
        self.streamed = StreamedLookups(self) if lookup_stream else None
        self.looped = LoopLookups(self)

    def close(self) -> None:
        if self.streamed is not None:
            self.streamed.close()
        self.looped.close()
        self.channel.close()

    def ready(self, timeout_s: float = 5.0) -> bool:
        """Whether the channels that lookups and other calls take connect within ``timeout_s``."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return False
        return self.streamed is not None or self.looped.ready(timeout_s)

    def why_unreachable(self, timeout_s: float = 1.0) -> str:
        """What one call says when ``ready`` found no connection, in one line ("" when it is
        answered): gRPC's channel state alone says nothing of why (a TLS server refusing a
        plaintext client looks like one that is down)."""
        try:
            self._call(self.stub.ListNamespaces, pb.ListNamespacesRequest(), timeout_s)
            return ""
        except grpc.RpcError as exc:
            return one_line(exc)

    def __enter__(self) -> "DatastoreClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, rpc, request, timeout_s: float | None = None):
        return rpc(request, timeout=deadline(timeout_s, self.timeout_s), metadata=self.metadata)

    # -- data plane ---------------------------------------------------------------------

    def lookup(self, namespace: str, contexts: Sequence, options: LookupParams = LookupParams(),
               timeout_s: float | None = None) -> list[ContinuationTree]:
        return self.lookup_batch(namespace, contexts, options, timeout_s).trees()

    def lookup_batch(self, namespace: str, contexts: Sequence, options: LookupParams = LookupParams(),
                     timeout_s: float | None = None, background: bool = False) -> TrieBatch:
        """The tries of ``contexts``, in one call per ``max_lookup_contexts`` of them; background:
        work no decode step waits for (under a namespace lookup rate, served after the steps)."""
        return TrieBatch.joined([tries_from_proto(self._call(self.stub.Lookup,
                                                             lookup_request(namespace, part, options, 0, background),
                                                             timeout_s))
                                 for part in in_parts(contexts, self.max_lookup_contexts, options.max_nodes)])

    def lookup_future(self, namespace: str, contexts: Sequence, options: LookupParams = LookupParams(),
                      timeout_s: float | None = None, flat: bool = False) -> futures.Future:
        """A future resolving to list[ContinuationTree] (TrieBatch when flat) or raising grpc.RpcError
        (on a lookup stream, ``timeout_s`` does not apply: the caller's own deadline decides); more
        than ``max_lookup_contexts`` contexts go in parts, side by side."""
        parts = in_parts(contexts, self.max_lookup_contexts, options.max_nodes)
        if len(parts) > 1:
            return _joined([self.lookup_future(namespace, part, options, timeout_s, flat=True) for part in parts], flat)
        if self.streamed is not None:
            return self.streamed.lookup_future(namespace, contexts, options, flat)
        return self.looped.lookup_future(namespace, contexts, options, deadline(timeout_s, self.timeout_s), flat)

    def ingest(self, namespace: str, docs: Iterable[tuple[str, Sequence[int]]], timeout_s: float | None = None) -> pb.IngestResponse:
        return self._call(self.stub.Ingest, documents_to_proto(namespace, docs), timeout_s)

    def ingest_stream(self, namespace: str, batches: Iterable[Sequence[tuple[str, Sequence[int]]]],
                      timeout_s: float | None = 3600.0) -> pb.IngestSummary:
        """One IngestStream of ``batches`` (an empty batch is left out: the service refuses an empty
        message, after storing the ones before it); timeout_s: the whole stream's deadline (0 or
        None: none; a server's --namespace-ingest-rate makes a large load wait its turn)."""
        messages = IngestMessages(namespace, batches)
        summary = self.stub.IngestStream(iter(messages), timeout=deadline(timeout_s), metadata=self.metadata)
        return messages.reraise(summary)

    # -- admin --------------------------------------------------------------------------

    def create_namespace(self, name: str, vocab_size: int, tokenizer_fingerprint: str = "", max_tokens: int = 0) -> pb.Namespace:
        req = create_namespace_request(name, vocab_size, tokenizer_fingerprint, max_tokens)
        return self._call(self.stub.CreateNamespace, req)

    def served(self) -> pb.ListNamespacesResponse:
        """What the server serves this caller: its namespaces and its --max-lookup-contexts."""
        return self._call(self.stub.ListNamespaces, pb.ListNamespacesRequest())

    def list_namespaces(self) -> list[pb.Namespace]:
        return list(self.served().namespaces)

    def served_lookup_cap(self) -> int:
        """The server's --max-lookup-contexts (0: a server too old to say)."""
        return self.served().max_lookup_contexts

    def drop_namespace(self, name: str) -> None:
        self._call(self.stub.DropNamespace, pb.DropNamespaceRequest(name=namespace_name(name)))

    def stats(self, namespace: str = "") -> pb.StatsResponse:
        return self._call(self.stub.Stats, pb.StatsRequest(namespace=namespace_name(namespace)))

    def compact(self, namespace: str = "", full: bool = True, timeout_s: float = 3600.0) -> int:
        req = pb.CompactRequest(namespace=namespace_name(namespace), full=full)
        return self._call(self.stub.Compact, req, timeout_s).segments_retired

    def snapshot(self, timeout_s: float = 3600.0) -> int:
        return self._call(self.stub.Snapshot, pb.SnapshotRequest(), timeout_s).tokens_flushed

    def delete(self, namespace: str, ids: Sequence[str], missing_ok: bool = False) -> list[str]:
        return list(self._call(self.stub.DeleteDocuments, delete_request(namespace, ids, missing_ok)).deleted)
