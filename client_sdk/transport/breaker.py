"""Circuit breaker for the datastore: a slow or dead service must never stall a decode step."""

from __future__ import annotations

import threading
import time

from sssd_wire.settings import require_at_least, seconds_above_zero
from sssd_wire.types import integer


class CircuitBreaker:
    """closed -> (failures >= threshold) -> open for cooldown_s -> half-open (one trial) -> ...

    ``allow()`` says whether to call the service now; report each outcome with
    ``success()`` or ``failure()``. A trial that reports neither (its answer came too late to
    be used, or was never read) is given up after another cooldown_s, and a new trial allowed:
    an undecided trial must not keep the breaker open for good. Thread-safe.
    """

    def __init__(self, threshold: int = 3, cooldown_s: float = 1.0, clock=time.monotonic) -> None:
        self.threshold = integer(threshold, "threshold")
        require_at_least(self, 1, ("threshold",))  # (0 began half-open: one call, then none until one succeeded)
        self.cooldown_s = seconds_above_zero(cooldown_s, "cooldown_s")
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0  # no call before this while open; a trial moves it on by a cooldown

    @property
    def state(self) -> str:
        with self._lock:
            if self._failures < self.threshold:
                return "closed"
            return "half-open" if self.clock() >= self._open_until else "open"

    def allow(self) -> bool:
        with self._lock:
            if self._failures < self.threshold:
                return True
            now = self.clock()
            if now >= self._open_until:  # one trial call; its outcome decides, or it lapses after a cooldown
                self._open_until = now + self.cooldown_s
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0

    def trip(self) -> None:
        """Open now, whatever the count (a verdict reached elsewhere, e.g. from a window of late
        answers); a trial call after cooldown_s decides as after any other opening."""
        with self._lock:
            self._failures = max(self._failures, self.threshold)
            self._open_until = self.clock() + self.cooldown_s

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._open_until = self.clock() + self.cooldown_s
