"""The datastore as a draft source for a decode worker: prefetch, deadline, breaker.

``request(key, contexts)`` starts a lookup (a future) as soon as the contexts are known;
``collect(key, contexts, deadline_s)`` returns its TrieBatch if it arrived within the
deadline and was asked for exactly these contexts, else None: drafting then goes on from
local sources and the step never waits longer than the deadline.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent import futures

import grpc
import numpy as np

from client_sdk.transport.breaker import CircuitBreaker
from client_sdk.transport.remote import DatastoreClient
from sssd_wire.types import LookupParams, TrieBatch

log = logging.getLogger("sssd.sdk")


@dataclasses.dataclass
class SourceStats:
    requested: int = 0
    used: int = 0
    late: int = 0
    misaligned: int = 0
    failed: int = 0
    skipped_open: int = 0


class RemoteSource:
    """Thread-safe. One outstanding prefetch per key (e.g. per decode step)."""

    def __init__(self, client: DatastoreClient, namespace: str, options: LookupParams,
                 breaker: CircuitBreaker | None = None, timeout_s: float = 0.05) -> None:
        self.client = client
        self.namespace = namespace
        self.options = options
        self.breaker = breaker or CircuitBreaker()
        self.timeout_s = timeout_s
        self.stats = SourceStats()
        self._lock = threading.Lock()
        self._pending: dict[object, tuple[bytes, futures.Future]] = {}

    @staticmethod
    def _fingerprint(contexts) -> bytes:
        return b"|".join(np.asarray(c, dtype="<i4").tobytes() for c in contexts)

    def request(self, key, contexts) -> None:
        """Start the lookup for ``contexts`` (replacing any earlier one under ``key``)."""
        if not self.breaker.allow():
            self.stats.skipped_open += 1
            return
        fut = self.client.lookup_future(self.namespace, contexts, self.options, timeout_s=self.timeout_s, flat=True)
        fut.add_done_callback(self._record)
        with self._lock:
            self._pending[key] = (self._fingerprint(contexts), fut)
        self.stats.requested += 1

    def _record(self, fut: futures.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.stats.failed += 1
            self.breaker.failure()
        else:
            self.breaker.success()

    def collect(self, key, contexts, deadline_s: float) -> TrieBatch | None:
        """The prefetched answer if it is for these contexts and arrives within deadline_s."""
        with self._lock:
            entry = self._pending.pop(key, None)
        if entry is None:
            return None
        fingerprint, fut = entry
        if fingerprint != self._fingerprint(contexts):
            self.stats.misaligned += 1
            fut.cancel()
            return None
        try:
            result = fut.result(timeout=max(deadline_s, 0.0))
        except futures.TimeoutError:
            self.stats.late += 1
            return None  # the call continues and reports to the breaker when it ends
        except (grpc.RpcError, futures.CancelledError) as exc:
            log.debug("datastore lookup failed: %s", exc)
            return None
        self.stats.used += 1
        return result
