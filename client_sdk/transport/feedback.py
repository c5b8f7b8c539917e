"""Finished generations flow back to the datastore in the background, batched.

Bounded: when the datastore is down the oldest pending generations are dropped (counted),
never the decode loop blocked; a batch whose Ingest failed because the datastore was away or
slow goes back to the queue and is sent again (``RESEND``); one it refused as invalid is sent
again in halves, down to the generation it refuses alone (``SPLIT``); one it had no room for is
sent again in halves, and a generation alone is kept and sent again (``FULL``). The queue holds at most
``max_pending`` generations and ``max_pending_tokens`` tokens, each generation as int32, 4 bytes
a token: a list of Python ints took 40, and making one cost the SGLang worker's scheduler thread
3,458 / 3,180 µs for a 32K-token generation against 67 / 53 µs now (worst / median of 3 runs of
bench/feedback_submit.py on the 2-core Intel Xeon VM; BENCHMARKS.md, "Finished generations
queued as int32"). Every generation gets its own document id,
``<worker>/<n>-<request>`` (n counts this sink's submissions; ``id_part`` gives the request's
part), so a resent batch is
idempotent on the service side and two generations never share an id, even when request ids
repeat. An id the service reports as a conflict (stored with other tokens, e.g. by another
process that chose the same worker id) is counted and logged; the batch's other documents
are stored regardless.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import sys
import threading
import time

import grpc

from client_sdk.transport.remote import DatastoreClient
from sssd_wire.errors import one_line
from sssd_wire.settings import require_at_least, seconds_above_zero
from sssd_wire.types import integer, namespace_checked, token_array, worker_name

log = logging.getLogger("sssd.sdk.feedback")

# an Ingest that failed with one of these goes back to the queue's front and is sent again (each
# document's id makes a resend idempotent, also after a deadline the service met); any other
# failure but SPLIT's and FULL's drops the batch, counted in ``failed``
RESEND = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED})
# an Ingest of several generations refused with this (one generation over the service's
# --max-doc-tokens, say) goes back to the queue's front and is sent in halves, down to the refused
# one alone, which is dropped: one refused generation dropped every other of its batch with it
SPLIT = grpc.StatusCode.INVALID_ARGUMENT
# a service's full disk, or an Ingest over its caps per call: several generations are sent again in
# halves (under the caps), one alone is kept and sent again, as RESEND's are (the queue's bounds hold
# while the disk is full: every batch was dropped until it had room)
FULL = grpc.StatusCode.RESOURCE_EXHAUSTED


def id_part(request_id) -> str:
    """The request's part of a fed-back document's id: the id itself, or a digest of one too long or
    not printable. A service takes ids of 1..256 printable characters and refuses a whole Ingest
    over one that is not (SGLang takes a client's own ``rid``: one bad one lost its whole batch)."""
    rid = str(request_id)
    if len(rid) <= 128 and rid.isprintable():
        return rid
    return "h" + hashlib.blake2b(rid.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class FeedbackSink:
    def __init__(self, client: DatastoreClient, namespace: str, worker_id: str, batch: int = 32,
                 interval_s: float = 1.0, max_pending: int = 10_000, min_tokens: int = 8,
                 owns_client: bool = False, max_pending_tokens: int = 16 << 20, batch_tokens: int = 4 << 20) -> None:
        """owns_client: ``close()`` closes the client too (one made for feedback alone);
        max_pending_tokens: the queue's token bound (16M: 64 MB while the datastore is away; the
        newest generation is kept even when it alone is larger); batch_tokens: the most tokens
        one Ingest carries (4M: 16 MB, well inside gRPC's 64 MB message limit on both sides and
        the service's 32M-token cap per call; a generation larger than that goes alone)."""
        # (a bad namespace or worker id had every Ingest refused, each generation dropped in turn)
        self.client, self.namespace, self.worker_id = client, namespace_checked(namespace), worker_name(worker_id)
        self.owns_client = owns_client
        self.batch, self.batch_tokens, self.interval_s, self.min_tokens = batch, batch_tokens, interval_s, min_tokens
        self.max_pending, self.max_pending_tokens = max_pending, max_pending_tokens
        # (a batch of 0 sent empty Ingests, refused, and kept every generation queued; an interval of
        # 0 or less spun the sender thread on a core of the decode worker)
        # (a min_tokens of 0 queued empty generations, each refused by the service)
        counts = ("batch", "batch_tokens", "max_pending", "max_pending_tokens", "min_tokens")
        for name in counts:  # (a batch of 1.5 failed in the sender thread)
            integer(getattr(self, name), name)
        require_at_least(self, 1, counts)
        seconds_above_zero(interval_s, "interval_s")
        self._queue: collections.deque = collections.deque()
        self._queued_tokens = 0
        self._lock = threading.Lock()  # the queue and its token count: submit's thread against the sender's
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sent = self.dropped = self.failed = self.conflicts = 0
        self.resends = 0  # failed Ingest calls whose batch was kept to send again
        self.refused = 0  # generations the service refused alone (also in failed)
        self._limit = batch  # generations per Ingest now: halved while a refused batch is split
        self._suspect = 0  # generations at the queue's front from the last refused batch (then _limit is batch again)
        self._failing = False  # the last Ingest failed (warned once per run of failures)
        self._submitted = 0
        self._closed = self._said_closed = False  # closed; a generation submitted since was said in the log
        self._thread = threading.Thread(target=self._run, name="sssd-feedback", daemon=True)
        self._thread.start()

    def submit(self, request_id: str, tokens) -> None:
        """Queue a finished generation (its output tokens); never blocks."""
        if len(tokens) < self.min_tokens:
            return
        # a one-line ValueError for what is no token ids (a float was truncated, a -1 refused by the
        # service; one past int32 wrapped around or raised OverflowError); an array of our own
        ids = token_array(tokens, f"the generation of request {request_id!r}")
        if self._closed:  # nothing would ever send it (it was queued, and lost unsaid)
            self.dropped += 1
            log.log(logging.WARNING if not self._said_closed else logging.DEBUG, "feedback: the sink is closed; "
                    "the generation of request %r is not sent (counted in dropped; later ones are not logged)",
                    request_id)
            self._said_closed = True
            return
        doc = (f"{self.worker_id}/{self._submitted}-{id_part(request_id)}", ids.copy() if ids is tokens else ids)
        self._submitted += 1
        with self._lock:
            self._queue.append(doc)
            self._queued_tokens += doc[1].shape[0]
            self._trim()
            queued = len(self._queue)
        if queued >= self.batch:
            self._wake.set()

    def _trim(self) -> None:
        """Drop the oldest generations beyond the bounds (the newest is kept); under the lock."""
        while len(self._queue) > self.max_pending or (self._queued_tokens > self.max_pending_tokens
                                                      and len(self._queue) > 1):
            self._queued_tokens -= self._queue.popleft()[1].shape[0]
            self.dropped += 1

    def _put_back(self, docs: list) -> None:
        with self._lock:
            self._queue.extendleft(reversed(docs))
            self._queued_tokens += sum(d[1].shape[0] for d in docs)
            self._trim()

    def _take(self, n: int, max_tokens: int) -> list:
        """The oldest n generations at most, of max_tokens at most together (but at least one)."""
        docs, tokens = [], 0
        with self._lock:
            while self._queue and len(docs) < n:
                size = self._queue[0][1].shape[0]
                if docs and tokens + size > max_tokens:
                    break
                docs.append(self._queue.popleft())
                tokens += size
            self._queued_tokens -= tokens
        return docs

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()

    def flush(self, deadline: float | None = None) -> bool:
        """Send what is queued; False when a call failed or ``deadline`` (monotonic) passed."""
        refused = False
        while self._queue:
            left = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
            if left <= 0:
                return False
            docs = self._take(self._limit, self.batch_tokens)
            try:
                reply = self.client.ingest(self.namespace, docs, timeout_s=left)
                self._cleared(len(docs))
                if self._failing:
                    log.info("feedback: the datastore takes generations again (%d failed calls resent)", self.resends)
                    self._failing = False
                conflicts = list(reply.conflict_ids)
                self.sent += len(docs) - len(conflicts)
                if conflicts:
                    self.conflicts += len(conflicts)
                    log.warning("feedback: %d document id(s) already stored with other tokens, not stored: %s",
                                len(conflicts), ", ".join(conflicts[:3]) + (" ..." if len(conflicts) > 3 else ""))
            except grpc.RpcError as exc:
                if exc.code() in (SPLIT, FULL) and len(docs) > 1:
                    self._put_back(docs)
                    self._suspect, self._limit = len(docs), len(docs) // 2  # sent again in halves
                    continue
                if exc.code() == SPLIT:  # the service refused this generation, not the call: the rest goes on
                    refused = True
                    self._refused(docs[0], exc)
                    continue
                resend = exc.code() in RESEND or exc.code() == FULL
                if resend:
                    self._put_back(docs)
                    self.resends += 1
                else:
                    self.failed += len(docs)
                if not self._failing or not resend:
                    log.warning("feedback ingest of %d generations failed (%s); %s", len(docs), one_line(exc),
                                "kept to send again (warned once until it works again; counted in resends)"
                                if resend else "dropped (counted in failed)")
                self._failing = True
                return False
        return not refused

    def _cleared(self, count: int) -> None:
        """``count`` generations of the queue's front were stored or dropped: past the last refused
        batch's, Ingests carry whole batches again."""
        if self._suspect:
            self._suspect = max(self._suspect - count, 0)
            if not self._suspect:
                self._limit = self.batch

    def _refused(self, doc: tuple, exc: grpc.RpcError) -> None:
        """A generation the service refused alone (SPLIT): dropped, counted in ``failed`` and
        ``refused`` (the first one warned about)."""
        self._cleared(1)
        self.failed += 1
        self.refused += 1
        log.log(logging.WARNING if self.refused == 1 else logging.DEBUG,
                "feedback: the datastore refused generation %s (%s); dropped (counted in failed; later ones "
                "are not logged)", doc[0], one_line(exc))

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued within ``timeout_s``; what is left is dropped, counted and logged."""
        deadline = time.monotonic() + timeout_s
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)
        while not self.flush(deadline) and self._queue and time.monotonic() < deadline:
            time.sleep(0.05)  # a batch the datastore did not take was put back: try again until the deadline
        left = self._take(len(self._queue), sys.maxsize)
        if left:
            self.dropped += len(left)
            log.warning("feedback: %d finished generations not sent at close (datastore unreachable or slow); "
                        "%d sent, %d failed, %d dropped in all", len(left), self.sent, self.failed, self.dropped)
        if self.owns_client:
            self.client.close()
