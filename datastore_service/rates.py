"""Each namespace's share of a server's lookups and ingests: a tenant that asks for more than its
rate is refused (lookups) or made to wait (ingests) instead of making every other tenant's answers
late.

Lookups: a bucket per namespace holds up to one second of its rate and refills continuously. A
call is let through while its namespace's bucket is not empty, and its cost is taken from it (the
bucket may go below zero: a call larger than one second's rate is not refused forever, the calls
after it wait until the bucket has refilled). Over any span of T seconds a namespace is served at
most rate x T plus one second's worth and one call. A context that samples more occurrences than
REFERENCE_SAMPLES costs in proportion: the work of a lookup grows with its samples, and a tenant
could otherwise ask for 32 times the work at the same rate. A background lookup
(``LookupRequest.background``: a worker's single-token table, which no step waits for) is let
through only if the bucket still holds half a second of the rate after its cost: it takes what
the namespace's steps leave, never what they need.

Ingests (tokens per second): the same bucket, but a call over it waits for its turn instead of
being refused (the bucket's debt divided by the rate; each call reserves its tokens as it is let
in), so a bulk load and the feedback of a fleet slow down rather than fail. A unary call whose wait
would pass ``max_wait`` (a few seconds, or its deadline) is refused, not charged: the tokens that
wait in the server stay bounded by a few seconds of the rate and one call. A call cancelled while it
waits (its client gone) gives its reservation back.

A namespace may have rates of its own, in a ``--namespace-rates-file``: a JSON object of namespace
names, each an object with "lookups" (contexts per second) and/or "ingest" (tokens per second), 0
for no limit; a kind it does not name has the server's flag (``--namespace-lookup-rate``,
``--namespace-ingest-rate``). The file is read at start and again at each SIGHUP. Used on the
event loop only (no lock).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sssd_wire.types import NAMESPACE_NAME

REFERENCE_SAMPLES = 128  # samples per context that cost one context (the decode side's prefetch asks 128)
KINDS = {"lookups": ("--namespace-lookup-rate", "contexts"), "ingest": ("--namespace-ingest-rate", "tokens")}


def read_rates(path: str) -> dict[str, dict[str, float]]:
    """The namespaces' own rates in a --namespace-rates-file (``{"name": {"lookups": contexts/s,
    "ingest": tokens/s}, ...}``); a one-line ValueError naming the file and the entry that is not one."""
    where = f"--namespace-rates-file {path}"
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: want a JSON object of namespaces and their rates, {{"name": {{"lookups": '
                         f'contexts per second, "ingest": tokens per second}}, ...}}, not {type(raw).__name__}')
    own = {}
    for name, rates in raw.items():
        if not NAMESPACE_NAME.match(name):
            raise ValueError(f"{where}: {name!r} is no namespace name (want {NAMESPACE_NAME.pattern})")
        if not isinstance(rates, dict) or not rates or set(rates) - set(KINDS):
            raise ValueError(f'{where}: the entry of {name!r} is {rates!r}: want an object of "lookups" and/or '
                             '"ingest"')
        for kind, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < math.inf:
                raise ValueError(f"{where}: the {kind} rate of {name!r} is {rate!r}, not a finite number of "
                                 f"{KINDS[kind][1]} per second, or 0 (no limit)")
        own[name] = {kind: float(rate) for kind, rate in rates.items()}
    return own


class Rates:
    """One kind's rate per namespace ("lookups" or "ingest"): the server's, or the namespace's own."""

    def __init__(self, kind: str, rate: float, own: dict[str, dict[str, float]] | None = None, path: str = "") -> None:
        """rate: what each namespace may use per second (0: no limit); own: the namespaces with
        rates of their own (read from ``path``, a --namespace-rates-file)."""
        if not 0 <= rate < math.inf:
            raise ValueError(f"rate {rate} must be a finite number >= 0")
        self.kind, self.rate, self.own, self.path = kind, rate, dict(own or {}), path
        self._buckets: dict[str, tuple[float, float]] = {}  # namespace -> (level, as of)

    def rate_of(self, namespace: str) -> float:
        """What ``namespace`` may use per second here (0: no limit)."""
        return self.own.get(namespace, {}).get(self.kind, self.rate)

    def says(self, namespace: str) -> str:
        """Its rate and where it was set, for an operator: "100 contexts/s, --namespace-lookup-rate"."""
        flag, unit = KINDS[self.kind]
        where = f"its entry in --namespace-rates-file {self.path}" if self.kind in self.own.get(namespace, {}) else flag
        return f"{self.rate_of(namespace):g} {unit}/s, {where}"

    def _level(self, namespace: str, rate: float, now: float) -> float:
        level, then = self._buckets.get(namespace, (rate, now))
        return min(rate, level + (now - then) * rate)


class LookupRates(Rates):
    def __init__(self, rate: float, own: dict[str, dict[str, float]] | None = None, path: str = "") -> None:
        super().__init__("lookups", rate, own, path)

    @staticmethod
    def cost(contexts: int, samples: int) -> float:
        return contexts * max(1.0, samples / REFERENCE_SAMPLES)

    def admit(self, namespace: str, cost: float, now: float, background: bool = False) -> bool:
        """Whether ``namespace`` may make a lookup of ``cost`` at ``now`` (monotonic seconds); an
        admitted one is charged, a refused one is not."""
        rate = self.rate_of(namespace)
        if not rate:
            return True
        level = self._level(namespace, rate, now)
        if level <= 0 or (background and level - cost < rate / 2):
            self._buckets[namespace] = (level, now)
            return False
        self._buckets[namespace] = (level - cost, now)
        return True


class IngestRates(Rates):
    def __init__(self, rate: float, own: dict[str, dict[str, float]] | None = None, path: str = "") -> None:
        super().__init__("ingest", rate, own, path)

    def reserve(self, namespace: str, tokens: int, now: float, max_wait: float) -> float | None:
        """Seconds an ingest of ``tokens`` into ``namespace`` at ``now`` waits for its turn (0: none),
        its tokens reserved; None when that would pass ``max_wait`` (refused, not charged)."""
        rate = self.rate_of(namespace)
        if not rate:
            return 0.0
        level = self._level(namespace, rate, now)
        wait = max(0.0, -level / rate)
        if wait > max_wait:
            self._buckets[namespace] = (level, now)
            return None
        self._buckets[namespace] = (level - tokens, now)
        return wait

    def release(self, namespace: str, tokens: int, now: float) -> None:
        """Give back the reservation of an ingest that was cancelled while it waited for its turn
        (nothing of it was stored): the calls after it come sooner. The ones already waiting keep
        their turns; the bucket still holds at most one second."""
        rate = self.rate_of(namespace)
        if rate:
            self._buckets[namespace] = (min(rate, self._level(namespace, rate, now) + tokens), now)


def reload_rates(path: str, *rates: Rates | None) -> int:
    """Read the --namespace-rates-file at ``path`` again (SIGHUP) into each of ``rates``: its rates
    in place of theirs from the next call on (each bucket keeps its level, within its new
    second); the number of entries. A ValueError, and their rates kept, for a file that does not load."""
    if not path:
        raise ValueError("no --namespace-rates-file on this server: nothing to reload")
    own = read_rates(path)
    for r in rates:
        if r is not None:
            r.own = own  # one assignment
    return len(own)
