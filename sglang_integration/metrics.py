"""Prometheus counters of the SSSD worker (rank 0), in the scheduler process's default registry:
SGLang's own /metrics endpoint (``--enable-metrics``, multiprocess mode) exposes them."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, Counter

from sglang_integration.live_requests import GRACE_STEPS

log = logging.getLogger("sssd.sglang")

OUTCOMES = ("used", "late", "failed", "skipped_open", "misaligned")


class WorkerMetrics:
    def __init__(self, registry=REGISTRY) -> None:
        self.drafts = Counter("sssd_drafts", "request drafts verified, by verify width", ["width"], registry=registry)
        self.lookups = Counter("sssd_datastore_lookups", "datastore lookups by outcome", ["outcome"], registry=registry)
        self.breaker_openings = Counter("sssd_datastore_breaker_openings",
                                        "times the datastore breaker opened (drafting without the datastore)",
                                        registry=registry)
        self._seen = dict.fromkeys(OUTCOMES, 0)
        self._opened = 0
        self.misaligned = Counter("sssd_relay_misaligned",
                                  "overlap mode: relayed tokens the sequence length contradicts", registry=registry)
        self._warned_misaligned = False
        self.forgotten = Counter("sssd_requests_forgotten",
                                 "requests no longer held without a finish notice: out of the decode batch for "
                                 f"{GRACE_STEPS} steps (retracted; one that returns is held again) or at a cache flush",
                                 registry=registry)
        self._forgotten = 0

    def observe_forgotten(self, total: int) -> None:
        """The worker's LiveRequests.forgotten, a running total."""
        if total > self._forgotten:
            self.forgotten.inc(total - self._forgotten)
            self._forgotten = total

    def relays_unaligned(self) -> None:
        """Overlap mode without the batch's sequence lengths: relayed tokens appended unchecked."""
        if not self._warned_misaligned:
            self._warned_misaligned = True
            log.warning("SSSD worker: the decode batch has no CPU sequence lengths, so relayed tokens are appended "
                        "without checking that result processing has not added them already (warned once)")

    def misaligned_relay(self, rid, output: int, relayed: int, committed: int) -> None:
        """Relayed tokens that neither fit behind the output nor are in it (counted; warned once)."""
        if not self._warned_misaligned:
            self._warned_misaligned = True
            log.warning("SSSD worker: request %s has %d output tokens and %d relayed, but its sequence length "
                        "implies %d; all relayed tokens appended (warned once; counted as sssd_relay_misaligned)",
                        rid, output, relayed, committed)
        self.misaligned.inc()

    def observe_step(self, batch: int, width: int, source) -> None:
        """A drafted step of ``batch`` requests at ``width``; source: the RemoteSource (or None)."""
        self.drafts.labels(str(width)).inc(batch)
        if source is None:
            return
        for outcome in OUTCOMES:
            now = getattr(source.stats, outcome)
            if now > self._seen[outcome]:
                self.lookups.labels(outcome).inc(now - self._seen[outcome])
                self._seen[outcome] = now
        if source.stats.opened > self._opened:
            self.breaker_openings.inc(source.stats.opened - self._opened)
            self._opened = source.stats.opened
