"""Prometheus counters of the SSSD worker (rank 0), in the scheduler process's default registry:
SGLang's own /metrics endpoint (``--enable-metrics``, multiprocess mode) exposes them."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, Counter

from client_sdk.transport.feedback import FeedbackSink
from sglang_integration.live_requests import GRACE_STEPS

log = logging.getLogger("sssd.sglang")

OUTCOMES = ("used", "late", "failed", "skipped_open", "misaligned")
FED_BACK = ("sent", "conflicts", "failed", "dropped")  # FeedbackSink's counts of finished generations


class WorkerMetrics:
    def __init__(self, registry=REGISTRY) -> None:
        self.drafts = Counter("sssd_drafts", "request drafts verified, by verify width", ["width"], registry=registry)
        self.lookups = Counter("sssd_datastore_lookups", "datastore lookups by outcome", ["outcome"], registry=registry)
        self.breaker_openings = Counter("sssd_datastore_breaker_openings",
                                        "times the datastore breaker opened (drafting without the datastore)",
                                        registry=registry)
        self.misaligned = Counter("sssd_relay_misaligned",
                                  "overlap mode: relayed tokens the sequence length contradicts", registry=registry)
        self._warned_misaligned = False
        self.forgotten = Counter("sssd_requests_forgotten",
                                 "requests no longer held without a finish notice: out of the decode batch for "
                                 f"{GRACE_STEPS} steps (retracted; one that returns is held again) or at a cache flush",
                                 registry=registry)
        self.fed_back = Counter("sssd_feedback_generations", "finished generations handed to the datastore, by "
                                "outcome (conflicts: an id stored with other tokens; failed: refused; dropped: "
                                "over the queue's bounds or left at shutdown)", ["outcome"], registry=registry)
        self.resends = Counter("sssd_feedback_resends", "feedback Ingest calls the datastore did not take (away or "
                               "slow), their generations kept to send again", registry=registry)
        self._totals: dict = {}  # the running totals the counters above follow, as last seen

    def observe_upkeep(self, forgotten: int, sink) -> None:
        """A decode step's bookkeeping beside the GPU: ``observe_forgotten``, ``observe_feedback``."""
        self.observe_forgotten(forgotten)
        self.observe_feedback(sink)

    def _follow(self, key, now: int, counter, *labels) -> None:
        """Add to ``counter`` (with ``labels``) what the running total ``now`` gained since ``key``
        was last seen (the label lookup only when it did)."""
        seen = self._totals.get(key, 0)
        if now > seen:
            (counter.labels(*labels) if labels else counter).inc(now - seen)
            self._totals[key] = now

    def observe_feedback(self, sink) -> None:
        """The feedback sink's counts (running totals; nothing when feedback is off)."""
        if not isinstance(sink, FeedbackSink):
            return
        for outcome in FED_BACK:
            self._follow(("fed_back", outcome), getattr(sink, outcome), self.fed_back, outcome)
        self._follow("resends", sink.resends, self.resends)

    def observe_forgotten(self, total: int) -> None:
        """The worker's LiveRequests.forgotten, a running total."""
        self._follow("forgotten", total, self.forgotten)

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
            self._follow(("lookups", outcome), getattr(source.stats, outcome), self.lookups, outcome)
        self._follow("opened", source.stats.opened, self.breaker_openings)
