"""The Datastore gRPC servicer: proto in, core calls (in worker threads), proto out.

It validates caps and authorisation; it never builds error responses (errors are raised
and mapped by the interceptor). Blocking work (SQLite commits, lookups) runs in a thread
pool: the lookup kernels release the GIL, so lookups use every core. Small lookups, and
lookups on a quiet server, run on the event loop instead (``_inline``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from datastore_service import wire
from sssd_wire import codec
from sssd_wire.settings import flag_name, require_at_least
from datastore_service.auth import principal_var
from datastore_service.datastore import Datastore
from datastore_service.rates import IngestRates, LookupRates, read_rates
from datastore_service.replication import check_segment_reader, serve_follow
from sssd_wire.errors import DatastoreError, InvalidArgument, Kind, NotFound, ResourceExhausted, Unavailable
from datastore_service.metrics import Metrics
from sssd_wire.v1 import datastore_pb2 as pb
from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc

CONFLICT_IDS_SHOWN = 16  # conflicting ids an IngestStream's summary names (it counts them all)
UNARY_INGEST_WAIT_S = 5.0  # the longest a unary Ingest waits for its namespace's ingest rate (then refused)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-request caps (RESOURCE_EXHAUSTED beyond them)."""

    max_lookup_contexts: int = 4096  # contexts in one Lookup
    max_ingest_documents: int = 100_000  # documents in one Ingest call or stream message
    max_ingest_tokens: int = 32 << 20  # tokens in one Ingest call or stream message
    max_lookup_tokens: int = 1 << 18  # context tokens per Lookup (a lookup reads at most 16 per context)
    # lookups with contexts x sample_budget up to this run on the event loop: a thread hop
    # costs ~0.35 ms on a 2-core box, more than the kernel needs for a decode step's batch
    inline_lookup_work: int = 64 * 64
    # lookups up to this much work also run on the event loop while the server is quiet: no
    # lookup in the pool, and inline lookups took less than idle_inline_share of its last second
    idle_inline_work: int = 256 * 128
    idle_inline_share: float = 0.25  # beyond it, a call arriving meanwhile would often wait for the loop
    # contexts per second each namespace may look up on this server (tenants' fair share: beyond it
    # a Lookup is refused, RESOURCE_EXHAUSTED, and its workers draft without the datastore a while);
    # a context sampling more than 128 occurrences counts as samples / 128; 0 = no limit
    namespace_lookup_rate: float = 0.0
    # tokens per second each namespace may ingest on this server (beyond it an ingest waits its turn:
    # a stream's messages as long as it takes, a unary call up to 5 s or its deadline, else refused,
    # RESOURCE_EXHAUSTED); 0 = no limit
    namespace_ingest_rate: float = 0.0
    # JSON {"namespace": {"lookups": contexts/s, "ingest": tokens/s}, ...}: those namespaces' own
    # rates in place of the two flags (0: no limit for one); read again at each SIGHUP; empty = none
    namespace_rates_file: str = ""

    def __post_init__(self) -> None:
        # (a cap of 0 refuses every call of its kind)
        require_at_least(self, 1, ("max_lookup_contexts", "max_ingest_documents", "max_ingest_tokens",
                                   "max_lookup_tokens"), as_flags=True)
        for name in ("inline_lookup_work", "idle_inline_work"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag_name(name)} {getattr(self, name)} must be 0 (never inline) or more")
        if not 0 <= self.idle_inline_share <= 1:
            raise ValueError(f"--idle-inline-share {self.idle_inline_share} must be in [0, 1]")
        for name, unit in (("namespace_lookup_rate", "contexts"), ("namespace_ingest_rate", "tokens")):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{flag_name(name)} {getattr(self, name)} must be a finite number of {unit} per "
                                 "second, or 0 (no limit)")
        if self.namespace_rates_file:  # (at start: a server that cannot read it does not start)
            read_rates(self.namespace_rates_file)


class DatastoreServicer(pb_grpc.DatastoreServicer):
    def __init__(self, limits: Limits, metrics: Metrics, pool: ThreadPoolExecutor) -> None:
        self.ds: Datastore | None = None  # set once the snapshot is loaded
        # fault injection (tests, `sssd bench deadline`): every lookup waits this long first
        self.lookup_delay_s = 0.0
        self.limits = limits
        self.metrics = metrics
        self.pool = pool
        self.started = time.monotonic()
        self.writer = ""  # a read replica: the writer's address (writes are refused here)
        self.max_answer_bytes = 64 << 20  # the server's --max-message-bytes (its gRPC send limit)
        self.stopping = asyncio.Event()  # set at shutdown: open Follow streams end
        self._pooled = 0  # lookups running in the pool now (read and written on the event loop only)
        self._inline_s, self._inline_at = 0.0, 0.0  # inline lookup seconds, decayed over ~1 s, as of when
        # each namespace's lookup and ingest rates (None: no limit of that kind at all, no bucket to keep)
        path = limits.namespace_rates_file
        own = read_rates(path) if path else {}
        self.rates = (LookupRates(limits.namespace_lookup_rate, own, path)
                      if limits.namespace_lookup_rate or path else None)
        self.ingest_rates = (IngestRates(limits.namespace_ingest_rate, own, path)
                             if limits.namespace_ingest_rate or path else None)

    def _writable(self) -> Datastore:
        if self.writer:
            raise DatastoreError(f"this server is a read replica of {self.writer}: send writes there",
                                 Kind.FAILED_PRECONDITION)
        return self._store()

    def _store(self) -> Datastore:
        if self.ds is None:
            raise Unavailable("the datastore is still loading its snapshot")
        return self.ds

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- ingest -----------------------------------------------------------------------------

    def _check_ingest(self, req: pb.IngestRequest) -> tuple[list, int]:
        """The request's documents and its tokens, within the caps."""
        n_docs = len(req.documents)
        if n_docs == 0:
            raise InvalidArgument("ingest request has no documents")
        if n_docs > self.limits.max_ingest_documents:
            raise ResourceExhausted(f"{n_docs} documents in one request, cap {self.limits.max_ingest_documents}")
        n_tokens = sum(len(d.tokens) for d in req.documents) // 4
        if n_tokens > self.limits.max_ingest_tokens:
            raise ResourceExhausted(f"{n_tokens} tokens in one request, cap {self.limits.max_ingest_tokens}")
        return wire.documents_from_proto(req), n_tokens

    async def _ingest(self, req: pb.IngestRequest, max_wait: float = math.inf):
        """max_wait: the longest this call may wait for its namespace's ingest rate (beyond: refused)."""
        ds = self._writable()
        docs, n_tokens = self._check_ingest(req)
        if self.ingest_rates is not None:
            ds.namespace(req.namespace)  # (an unknown one is NOT_FOUND, before any wait)
            await self._pace_ingest(req.namespace, n_tokens, max_wait)
        result = await self._run(ds.ingest, req.namespace, docs)
        added = set(result.added)
        tokens = sum(int(d.tokens.shape[0]) for d in docs if d.doc_id in added)
        self.metrics.ingested_documents.inc(len(result.added))
        self.metrics.ingested_tokens.inc(tokens)
        return result, tokens

    async def _pace_ingest(self, namespace: str, tokens: int, max_wait: float) -> None:
        wait = self.ingest_rates.reserve(namespace, tokens, time.monotonic(), max_wait)
        tenant = self.metrics.tenant(namespace)
        if wait is None:
            self.metrics.ingests_over_rate.labels(tenant).inc()
            raise ResourceExhausted(f"namespace {namespace!r} is over its ingest rate on this server "
                                    f"({self.ingest_rates.says(namespace)}): send it again later, or on a stream, "
                                    "which waits its turn")
        if wait > 0:
            started = time.monotonic()
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:  # its client is gone: nothing is stored, its turn is given back
                self.ingest_rates.release(namespace, tokens, time.monotonic())
                raise
            finally:
                self.metrics.ingest_waited.labels(tenant).inc(time.monotonic() - started)

    async def Ingest(self, request, context):
        remaining = context.time_remaining()  # a unary call waits for its turn a few seconds at most
        result, _ = await self._ingest(request, min(UNARY_INGEST_WAIT_S, remaining - 0.05 if remaining else math.inf))
        return pb.IngestResponse(
            added=len(result.added), duplicates=len(result.duplicates),
            evicted=len(result.evicted), duplicate_ids=result.duplicates, conflict_ids=result.conflicts,
        )

    async def IngestStream(self, request_iterator, context):
        summary = pb.IngestSummary()
        async for request in request_iterator:
            try:
                result, tokens = await self._ingest(request)
            except DatastoreError as exc:
                if not summary.requests:
                    raise
                # the messages before it stay stored: say so, the error alone read as "nothing stored"
                before = "the one before it was" if summary.requests == 1 else f"the {summary.requests} before it were"
                added = f"{summary.added} document{'' if summary.added == 1 else 's'} added"
                raise DatastoreError(f"{exc} (message {summary.requests + 1} of the stream; {before} stored, {added}: "
                                     "sending them again skips them by id)", exc.kind) from None
            summary.requests += 1
            summary.added += len(result.added)
            summary.duplicates += len(result.duplicates)
            summary.evicted += len(result.evicted)
            summary.conflicts += len(result.conflicts)
            summary.conflict_ids.extend(result.conflicts[: CONFLICT_IDS_SHOWN - len(summary.conflict_ids)])
            summary.tokens += tokens
        return summary

    # -- lookup -----------------------------------------------------------------------------

    async def _lookup(self, req: pb.LookupRequest) -> pb.LookupResponse:
        if self.lookup_delay_s:
            await asyncio.sleep(self.lookup_delay_s)
        n = len(req.context_lengths)
        if n > self.limits.max_lookup_contexts:
            raise ResourceExhausted(f"{n} contexts in one lookup, cap {self.limits.max_lookup_contexts}")
        if len(req.contexts) > 4 * self.limits.max_lookup_tokens:  # only the last max_match tokens are used
            raise ResourceExhausted(f"{len(req.contexts) // 4} context tokens in one lookup, cap "
                                    f"{self.limits.max_lookup_tokens} (send each context's last 16 tokens at most)")
        params = codec.params_from_proto(req.params)
        ctx, ctx_off = codec.contexts_from_proto(req)
        ds = self._store()
        ds.namespace(req.namespace)
        if self.rates is not None and not self.rates.admit(req.namespace, LookupRates.cost(n, params.sample_budget),
                                                           time.monotonic(), req.background):
            self._over_rate(req)
        if self._inline(n * params.sample_budget):
            start = time.monotonic()
            batch = ds.lookup_packed(req.namespace, ctx, ctx_off, params)  # cheaper than a thread hop
            end = time.monotonic()
            self._inline_s = self._loop_share(end) + (end - start)
        else:
            self._pooled += 1
            try:
                batch = await self._run(ds.lookup_packed, req.namespace, ctx, ctx_off, params)
            finally:
                self._pooled -= 1
        self.metrics.lookup_contexts.inc(n)
        self.metrics.lookup_matched.inc(int(np.count_nonzero(batch.meta[:, 0])))
        # the answer's bytes at most: 12 a node, 24 a context, 8 and the fields' tags (arithmetic: ByteSize walks the message)
        size = 12 * batch.tokens.shape[0] + 24 * n + 96
        if size > self.max_answer_bytes:  # (gRPC said "Sent message larger than max" and logged a traceback)
            raise ResourceExhausted(f"the answer to {n} contexts is about {size:,} bytes, over --max-message-bytes "
                                    f"{self.max_answer_bytes:,}: ask fewer contexts or fewer max_nodes per call")
        return codec.tries_to_proto(batch, req.request_id)

    def _over_rate(self, req: pb.LookupRequest) -> None:
        tenant, rate = self.metrics.tenant(req.namespace), self.rates.says(req.namespace)
        if req.background:
            self.metrics.background_deferred.labels(tenant).inc()
            raise ResourceExhausted(f"namespace {req.namespace!r} has no room for background lookups on this server "
                                    f"now ({rate}: its steps come first): ask again later")
        self.metrics.over_rate.labels(tenant).inc()
        raise ResourceExhausted(f"namespace {req.namespace!r} is over its lookup rate on this server ({rate}): "
                                "draft without the datastore a while")

    def _inline(self, work: int) -> bool:
        """Whether a lookup of ``work`` (contexts x samples) runs on the event loop. Small ones
        always do. Larger ones do while the server is quiet: handing a call to a pool thread
        that sleeps costs CPU (its wake-up, then the loop's, each on cold caches) and delays the
        answer. Once lookups overlap or keep the loop busy, they go to the pool, so that they
        use every core and a call that arrives meanwhile is not held up behind one."""
        lim = self.limits
        if work <= lim.inline_lookup_work:
            return True
        return (work <= lim.idle_inline_work and self._pooled == 0
                and self._loop_share(time.monotonic()) < lim.idle_inline_share)

    def _loop_share(self, now: float) -> float:
        """Seconds of inline lookups per second lately (an exponential decay with a 1 s time constant)."""
        self._inline_s *= math.exp(min(0.0, self._inline_at - now))
        self._inline_at = now
        return self._inline_s

    async def Lookup(self, request, context):
        return await self._lookup(request)

    async def LookupStream(self, request_iterator, context):
        async for request in request_iterator:
            yield await self._lookup(request)

    # -- admin ------------------------------------------------------------------------------

    def _visible(self) -> list[str]:
        principal = principal_var.get()
        return [n for n in self._store().namespace_names() if principal.sees(n)]

    async def Stats(self, request, context):
        ds = self._store()
        names = set(self._visible())
        if request.namespace:
            if request.namespace not in names:
                raise NotFound(f"namespace {request.namespace!r} does not exist")
            names = {request.namespace}
        stats = [s for s in await self._run(ds.stats) if s.spec.name in names]
        self.metrics.observe_namespaces(stats)
        rates = [r.rate_of if r is not None else lambda _: 0.0 for r in (self.rates, self.ingest_rates)]
        return pb.StatsResponse(
            namespaces=[wire.stats_to_proto(s.spec, s.counts, *(r(s.spec.name) for r in rates)) for s in stats],
            compactions=ds.compactions, uptime_s=time.monotonic() - self.started,
            max_live_tokens=0 if ds.mirror else ds.live_token_cap,
        )

    async def Compact(self, request, context):
        ds = self._store()
        if request.namespace:
            ds.namespace(request.namespace)
        retired = await self._run(ds.compact, request.namespace or None, request.full)
        self.metrics.compactions.inc(retired)
        return pb.CompactResponse(segments_retired=retired)

    async def Snapshot(self, request, context):
        return pb.SnapshotResponse(tokens_flushed=await self._run(self._store().flush))

    async def DeleteDocuments(self, request, context):
        ds = self._writable()
        ns = ds.namespace(request.namespace)
        missing = [d for d in request.ids if not ns.has_document(d)]
        if missing and not request.missing_ok:
            raise NotFound(f"{len(missing)} unknown document ids in {request.namespace!r}, e.g. {missing[0]!r}")
        deleted = await self._run(ds.delete, request.namespace, list(request.ids))
        return pb.DeleteDocumentsResponse(deleted=deleted)

    async def CreateNamespace(self, request, context):
        spec = wire.namespace_from_proto(request)
        await self._run(self._writable().create_namespace, spec)
        return wire.namespace_to_proto(spec)

    async def ListNamespaces(self, request, context):
        principal = principal_var.get()
        specs = [spec for spec in self._store().specs() if principal.sees(spec.name)]
        return pb.ListNamespacesResponse(namespaces=[wire.namespace_to_proto(s) for s in specs],
                                         max_lookup_contexts=self.limits.max_lookup_contexts)

    async def DropNamespace(self, request, context):
        await self._run(self._writable().drop_namespace, request.name)
        return pb.DropNamespaceResponse()

    # -- replication --------------------------------------------------------------------------

    async def Follow(self, request, context):
        if self.writer and not request.segment_dir:  # a replica relays to segment readers only
            raise DatastoreError(f"this server is a read replica of {self.writer}: follow the writer itself",
                                 Kind.FAILED_PRECONDITION)
        ds = self._store()
        if request.segment_dir:
            check_segment_reader(ds, request.segment_dir)
        if ds.changes is None:
            raise DatastoreError("replication is off on this writer (--replication-log-tokens 0)",
                                 Kind.FAILED_PRECONDITION)
        async for batch in serve_follow(ds, ds.changes, request, self._run, self.stopping):
            yield batch
