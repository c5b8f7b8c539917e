"""Each namespace's share of a server's lookups: a tenant that asks for more than its rate is
refused (RESOURCE_EXHAUSTED) instead of making every other tenant's answers late.

A bucket per namespace holds up to one second of its rate and refills continuously. A call is
let through while its namespace's bucket is not empty, and its cost is taken from it (the
bucket may go below zero: a call larger than one second's rate is not refused forever, the
calls after it wait until the bucket has refilled). Over any span of T seconds a namespace is
served at most rate x T plus one second's worth and one call. A context that samples more
occurrences than REFERENCE_SAMPLES costs in proportion: the work of a lookup grows with its
samples, and a tenant could otherwise ask for 32 times the work at the same rate.

A background lookup (``LookupRequest.background``: a worker's single-token table, which no step
waits for) is let through only if the bucket still holds half a second of the rate after its
cost: it takes what the namespace's steps leave, never what they need. Used on the event loop
only (no lock).
"""

from __future__ import annotations

REFERENCE_SAMPLES = 128  # samples per context that cost one context (the decode side's prefetch asks 128)


class LookupRates:
    def __init__(self, rate: float) -> None:
        """rate: contexts per second that each namespace may look up (> 0)."""
        if not rate > 0:
            raise ValueError(f"rate {rate} must be > 0")
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}  # namespace -> (level, as of)

    @staticmethod
    def cost(contexts: int, samples: int) -> float:
        return contexts * max(1.0, samples / REFERENCE_SAMPLES)

    def admit(self, namespace: str, cost: float, now: float, background: bool = False) -> bool:
        """Whether ``namespace`` may make a lookup of ``cost`` at ``now`` (monotonic seconds); an
        admitted one is charged, a refused one is not."""
        level, then = self._buckets.get(namespace, (self.rate, now))
        level = min(self.rate, level + (now - then) * self.rate)
        if level <= 0 or (background and level - cost < self.rate / 2):
            self._buckets[namespace] = (level, now)
            return False
        self._buckets[namespace] = (level - cost, now)
        return True
