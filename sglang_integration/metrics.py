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
# decode steps noted before their drafts are counted anyway, when no upkeep ran (bounds the list)
UNBOOKED_LIMIT = 1024


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
        self.not_fed_back = Counter("sssd_generations_not_fed_back", "finished generations kept from the datastore, "
                                    "by reason (aborted: SGLang's FINISH_ABORT, a cancel, timeout or error)", ["reason"],
                                    registry=registry)
        self._totals: dict = {}  # the running totals the counters above follow, as last seen
        self._unbooked: list[tuple[int, int]] = []  # (batch, width) of decode steps not counted yet

    def drafted(self, batch: int, width: int) -> None:
        """A decode step's drafts, ``batch`` requests at ``width``: noted on the critical path,
        counted beside the GPU (``observe_upkeep``)."""
        self._unbooked.append((batch, width))
        if len(self._unbooked) >= UNBOOKED_LIMIT:  # (a caller that never runs the upkeep)
            self._book_drafts()

    def observe_upkeep(self, forgotten: int, sink, source=None) -> None:
        """A decode step's bookkeeping beside the GPU: the drafts noted since the last one, the
        remote source's lookups (``observe_lookups``), ``observe_forgotten``, ``observe_feedback``."""
        self._book_drafts()
        self.observe_lookups(source)
        self.observe_forgotten(forgotten)
        self.observe_feedback(sink)

    def _book_drafts(self) -> None:
        for batch, width in self._unbooked:
            self.drafts.labels(str(width)).inc(batch)
        self._unbooked.clear()

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

    def aborted(self) -> None:
        """A finished request whose generation was aborted: not fed back."""
        self.not_fed_back.labels("aborted").inc()

    def observe_lookups(self, source) -> None:
        """The remote source's lookup outcomes and breaker openings (running totals; source: the
        RemoteSource, or None without a datastore)."""
        if source is None:
            return
        for outcome in OUTCOMES:
            self._follow(("lookups", outcome), getattr(source.stats, outcome), self.lookups, outcome)
        self._follow("opened", source.stats.opened, self.breaker_openings)
