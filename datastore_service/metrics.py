"""Prometheus metrics of one server (own registry, so tests can run several servers)."""

from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    def __init__(self, namespace_labels: bool = False) -> None:
        self.namespace_labels = namespace_labels
        self.source = None  # () -> the datastore's stats; read at every scrape
        r = self.registry = CollectorRegistry()
        r.register(_Refresh(self))  # first: the namespace gauges are current when they are collected
        ProcessCollector(registry=r)  # resident memory, CPU seconds, open file descriptors
        self.rpcs = Counter("sssd_rpcs", "RPCs by method and status code", ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("sssd_rpc_seconds", "RPC latency", ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.lookup_contexts = Counter("sssd_lookup_contexts", "contexts looked up", registry=r)
        self.lookup_matched = Counter("sssd_lookup_matched", "contexts with a match", registry=r)
        self.over_rate = Counter("sssd_lookups_over_rate", "lookups refused: their namespace was over "
                                 "--namespace-lookup-rate", ["namespace"], registry=r)
        self.ingests_over_rate = Counter("sssd_ingests_over_rate", "unary ingests refused: their namespace's "
                                         "--namespace-ingest-rate would have kept them waiting too long",
                                         ["namespace"], registry=r)
        self.ingest_waited = Counter("sssd_ingest_waited_seconds", "seconds ingests waited for their namespace's "
                                     "--namespace-ingest-rate", ["namespace"], registry=r)
        self.background_deferred = Counter("sssd_background_lookups_deferred", "background lookups (a worker's "
                                           "single-token table) refused: their namespace's steps needed its "
                                           "--namespace-lookup-rate", ["namespace"], registry=r)
        self.ingested_documents = Counter("sssd_ingested_documents", "documents added", registry=r)
        self.ingested_tokens = Counter("sssd_ingested_tokens", "tokens added", registry=r)
        self.compactions = Counter("sssd_compactions", "segments merged by compaction rounds", registry=r)
        self.live_token_cap = Gauge("sssd_max_live_tokens", "the writer's cap on every namespace's live tokens "
                                    "together (--max-live-tokens; 0: none, or a replica)", registry=r)
        self.maintenance_failures = Gauge("sssd_maintenance_failures", "background flush/compaction rounds that "
                                          "failed since start (each is retried)", registry=r)
        self.tokens = Gauge("sssd_namespace_tokens", "live tokens", ["namespace"], registry=r)
        self.documents = Gauge("sssd_namespace_documents", "live documents", ["namespace"], registry=r)
        self.segments = Gauge("sssd_namespace_segments", "segments", ["namespace"], registry=r)
        self.resident = Gauge("sssd_namespace_resident_bytes", "index bytes in memory", ["namespace"], registry=r)
        # a read replica: seconds since its writer last sent a batch (heartbeats ~1 s; -1 = no copy yet)
        self.replica_lag = Gauge("sssd_replica_lag_seconds", "seconds since the writer's last batch (replicas)",
                                 registry=r)
        self.replica_reconnects = Gauge("sssd_replica_reconnects", "times a replica lost its writer", registry=r)
        # every collection of Python's cyclic GC stops all of this process's threads (lookups included)
        self.gc_pauses = Histogram("sssd_gc_pause_seconds", "Python garbage collector pauses by generation",
                                   ["generation"], buckets=GC_BUCKETS, registry=r)
        self.gc_frozen = Gauge("sssd_gc_frozen_objects", "start-up objects left out of garbage collections "
                               "(sssd serve freezes them once serving)", registry=r)
        self._gc_started = 0.0
        self.follower = None  # the replica's Follower; read at every scrape
        self.datastore = None  # the Datastore; its failure count is read at every scrape

    def watch_gc(self, on: bool = True) -> None:
        """Time this process's garbage collections into ``gc_pauses`` (off: stop; the hook is
        process-wide, so a server removes it when it stops)."""
        if on and self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        elif not on and self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.labels(str(info["generation"])).observe(time.perf_counter() - self._gc_started)

    def tenant(self, namespace: str) -> str:
        """A per-namespace series' label: the name when ``namespace_labels``, else "all"."""
        return namespace if self.namespace_labels else "all"

    def observe_namespaces(self, stats) -> None:
        """Per namespace when ``namespace_labels`` (the names are tenants' business: off by
        default), else one series labelled "all" with the sums."""
        gauges = (self.tokens, self.documents, self.segments, self.resident)
        rows = [(spec.name, (c.tokens, c.documents, c.segments, c.resident_bytes)) for spec, c in stats]
        if not self.namespace_labels:
            rows = [("all", tuple(sum(column) for column in zip(*(values for _, values in rows))) or (0,) * 4)]
        for name, values in rows:
            for gauge, value in zip(gauges, values):
                gauge.labels(name).set(value)


class _Refresh:
    """Collects nothing itself: updates the namespace gauges from the datastore at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        if m.source is not None:
            m.observe_namespaces(m.source())
        if m.datastore is not None:
            m.maintenance_failures.set(m.datastore.maintenance_failures)
            m.live_token_cap.set(0 if m.datastore.mirror else m.datastore.live_token_cap)
        if m.follower is not None:
            m.replica_lag.set(m.follower.lag_s())
            m.replica_reconnects.set(m.follower.reconnects)
        return []
