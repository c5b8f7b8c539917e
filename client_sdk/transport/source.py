"""The datastore as a draft source for a decode worker: prefetch, deadline, breaker.

``request(key, contexts)`` starts a lookup (a future) as soon as the contexts are known;
``collect(key, contexts, deadline_s)`` returns its TrieBatch if it arrived within the
deadline and was asked for exactly these contexts, else None: drafting then goes on from
local sources and the step never waits longer than the deadline.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from concurrent import futures

import grpc
import numpy as np

from client_sdk.transport.breaker import CircuitBreaker
from client_sdk.transport.remote import DatastoreClient
from client_sdk.types import Busy
from sssd_wire.codec import MalformedAnswer
from sssd_wire.errors import connection_hint, one_line
from sssd_wire.settings import seconds_above_zero
from sssd_wire.types import LookupParams, TrieBatch, namespace_checked

log = logging.getLogger("sssd.sdk")


@dataclasses.dataclass
class SourceStats:
    requested: int = 0
    used: int = 0
    late: int = 0
    misaligned: int = 0
    failed: int = 0
    skipped_open: int = 0
    cancelled: int = 0  # late or superseded lookups given up on before they ended
    opened: int = 0  # times the breaker opened (the first one is warned about; each one logged)


class RemoteSource:
    """Thread-safe. One outstanding prefetch per key (e.g. per decode step)."""

    def __init__(self, client: DatastoreClient, namespace: str, options: LookupParams,
                 breaker: CircuitBreaker | None = None, timeout_s: float = 0.05, late_limit: int = 4,
                 late_window: int = 16, owns_client: bool = False) -> None:
        """owns_client: ``close()`` closes the client too (one made for this source alone).
        late_limit: this many answers late in a row count as one failure for the breaker (one
        late answer, e.g. a cold connection or one slow step, is no verdict on the service).
        late_window: when half of the last this many answers came late, the breaker opens at
        once: a service late that often is not keeping up, even when in-time answers between
        the late ones break every streak, and its lookups only add to the load (0: off)."""
        self.client = client
        self.owns_client = owns_client
        self.namespace = namespace_checked(namespace)  # (else every lookup refused, found one by one)
        self.options = options
        self.breaker = breaker or CircuitBreaker()
        self.timeout_s = seconds_above_zero(timeout_s)  # (-1 raised at the first lookup, in a decode step)
        self.stats = SourceStats()
        self._lock = threading.Lock()
        self._pending: dict[object, tuple[bytes | None, futures.Future]] = {}
        self._late: set[int] = set()  # ids of futures collected too late (their end is no success)
        # answers given up on, cancelled at the next request: cancelling a gRPC call takes ~0.1 ms,
        # which collect (on the decode step's critical path) leaves to request (beside the GPU)
        self._cancel_later: list[futures.Future] = []
        self.late_limit = late_limit
        self._late_streak = 0
        self._recent: collections.deque[bool] = collections.deque(maxlen=max(late_window, 1))
        self.late_window = late_window
        self._open = False  # whether the breaker was last seen open (for its log lines)

    @staticmethod
    def _fingerprint(contexts) -> bytes:
        return b"|".join(np.asarray(c, dtype="<i4").tobytes() for c in contexts)

    def request(self, key, contexts, samples: int | None = None) -> None:
        """Start the lookup for ``contexts``, replacing any earlier one under ``key``: that one is
        abandoned even when the breaker lets no new call through, so that ``collect`` never
        hands out an answer to contexts asked before the latest request. ``samples``: the
        occurrences each context samples (None: ``options``')."""
        fut = None
        if self.breaker.allow():
            fut = self.client.lookup_future(self.namespace, contexts, self.options.sampling(samples),
                                            timeout_s=self.timeout_s, flat=True)
            self.stats.requested += 1
        else:
            self.stats.skipped_open += 1
        with self._lock:
            old = self._pending.pop(key, None)
            if fut is not None:
                self._pending[key] = (self._fingerprint(contexts), fut)
        if fut is not None:
            fut.add_done_callback(self._record)
        if old is not None:  # never collected (e.g. a plain step came between): nobody will read it
            self._abandon(old[1])
        with self._lock:
            stale, self._cancel_later = self._cancel_later, []
        for fut in stale:
            if fut.cancel():
                self.stats.cancelled += 1

    def _abandon(self, fut: futures.Future) -> None:
        """Give up on an answer (late, superseded or misaligned): booked now, not as a failure of
        the service; its call is cancelled at the next ``request``, so that a service that falls
        behind is not kept behind by answers nobody reads. An answer that already came needs
        neither (its end was booked)."""
        with self._lock:
            if not fut.done():
                self._late.add(id(fut))
                self._cancel_later.append(fut)

    def _record(self, fut: futures.Future) -> None:
        with self._lock:
            late = id(fut) in self._late
            self._late.discard(id(fut))
        if late and fut.cancelled():  # given up on by this side: booked when it was
            return
        if fut.cancelled() or fut.exception() is not None:
            self.stats.failed += 1  # the reason named: NOT_FOUND (a dropped namespace) or PERMISSION_DENIED
            # (a revoked token) need the operator, UNAVAILABLE only time
            said = "cancelled" if fut.cancelled() else one_line(fut.exception())
            self._failure(f"lookups failing ({said}){self._hint(said)}")
        elif not late:  # a late answer was booked as a failure when it was missed
            self.breaker.success()
            reopened = False
            if self._open:  # (read without the lock first: most answers find it closed)
                with self._lock:
                    reopened, self._open = self._open, False
            if reopened:
                log.info("datastore %s answering in time again: lookups resume", self.client.address)

    def _note_lateness(self, late: bool) -> None:
        """Count one collected answer in the window of the last ``late_window``; open the
        breaker when half of a full window came late (the window then starts afresh)."""
        if not self.late_window:
            return
        recent = self._recent
        recent.append(late)
        if not late or len(recent) < recent.maxlen:
            return
        late_count = sum(recent)
        if 2 * late_count >= recent.maxlen:
            recent.clear()
            self._failure(f"{late_count} of the last {recent.maxlen} answers too late to use", trip=True)

    def _failure(self, why: str, trip: bool = False) -> None:
        """Tell the breaker (``trip``: open it now); when that opens it, say so (a warning the
        first time, then info): drafting goes on from local sources without the datastore until
        a trial call succeeds."""
        if trip:
            self.breaker.trip()
        else:
            self.breaker.failure()
        if self.breaker.state == "closed":
            return
        with self._lock:
            opened, self._open = not self._open, True
            if opened:
                self.stats.opened += 1
        if opened:
            level = logging.WARNING if self.stats.opened == 1 else logging.INFO
            log.log(level, "datastore %s: %s, breaker open: drafting without it, one trial lookup every %.1fs "
                    "(opened %d time(s); counted in RemoteSource.stats.opened)", self.client.address, why,
                    self.breaker.cooldown_s, self.stats.opened)

    def collect(self, key, contexts, deadline_s: float) -> TrieBatch | None:
        """The answer requested under ``key`` if it arrives within deadline_s (and, when
        ``contexts`` is given, is for exactly these). A late answer counts as a failure for the
        breaker: a datastore that is always late is as useless as a dead one."""
        with self._lock:
            entry = self._pending.pop(key, None)
        if entry is None:
            return None
        fingerprint, fut = entry
        if contexts is not None and fingerprint != self._fingerprint(contexts):
            self.stats.misaligned += 1
            self._abandon(fut)  # this side's mistake, not the service's failure
            return None
        try:
            if deadline_s > 0 or fut.done():
                result = fut.result(timeout=max(deadline_s, 0.0))
                self.stats.used += 1
                self._late_streak = 0
                self._note_lateness(False)
                return result
        except futures.TimeoutError:
            pass
        except (grpc.RpcError, futures.CancelledError, MalformedAnswer) as exc:  # (the last failed the decode step)
            log.debug("datastore lookup failed: %s", exc)  # counted by _record
            return None
        self.stats.late += 1
        with self._lock:
            self._late.add(id(fut))
        if fut.done():  # it ended between the wait and now: _record has already booked it
            with self._lock:
                self._late.discard(id(fut))
            return None
        self._late_streak += 1
        if self._late_streak >= self.late_limit:
            self._late_streak = 0
            self._failure(f"{self.late_limit} answers in a row too late to use")
        self._note_lateness(True)
        self._abandon(fut)  # a late answer is never used: the service need not finish it
        return None

    def close(self) -> None:
        """Give up the lookups in flight; close the client when this source owns it (its channels
        and its loop thread: a worker that built and closed speculators kept them all)."""
        with self._lock:
            given_up = [f for _, f in self._pending.values()] + self._cancel_later
            self._pending, self._cancel_later = {}, []
            self._late.update(id(f) for f in given_up)  # this side's doing: no failure for the breaker
        for fut in given_up:
            fut.cancel()
        if self.owns_client:
            self.client.close()

    def fetch(self, contexts, timeout_s: float = 30.0) -> TrieBatch:
        """A blocking lookup for background work (the single-token table): not a step's, so it
        neither waits on nor feeds the breaker, and the datastore serves it after the steps
        (LookupRequest.background); raises Busy when it is kept for them now, else grpc.RpcError."""
        try:
            return self.client.lookup_batch(self.namespace, contexts, self.options, timeout_s=timeout_s,
                                            background=True)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise Busy(one_line(exc)) from None
            raise

    def _hint(self, said: str) -> str:
        """What a failure's text (one_line) says of a server of the wrong kind (connection_hint)."""
        return connection_hint(said, bool(self.client.tls_ca), "SSSD_TLS_CA")

    def connect(self, timeout_s: float = 5.0) -> bool:
        """Open the connection now (a first lookup would otherwise pay for it, and be late)."""
        if self.client.ready(timeout_s):
            return True
        why = self.client.why_unreachable()
        if why:
            why = f" ({why}){self._hint(why)}"
        log.warning("datastore %s not reachable within %.1fs%s; drafting locally until it is",
                    self.client.address, timeout_s, why)
        return False
