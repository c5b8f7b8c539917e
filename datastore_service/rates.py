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

A namespace may have a rate of its own, in a ``--lookup-rates-file`` (a JSON object of
namespace names and contexts per second, 0 for no limit); the others have the server's
``--namespace-lookup-rate``. The file is read at start and again at each SIGHUP.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sssd_wire.types import NAMESPACE_NAME

REFERENCE_SAMPLES = 128  # samples per context that cost one context (the decode side's prefetch asks 128)
DEFAULT_SOURCE = "--namespace-lookup-rate"


def read_rates(path: str) -> dict[str, float]:
    """The namespaces' own rates in a --lookup-rates-file (``{"name": contexts/s, ...}``); a
    one-line ValueError naming the file and the entry that is not one."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--lookup-rates-file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f'--lookup-rates-file {path}: want a JSON object of namespaces and their rates, '
                         f'{{"name": contexts per second, ...}}, not {type(raw).__name__}')
    for name, rate in raw.items():
        if not NAMESPACE_NAME.match(name):
            raise ValueError(f"--lookup-rates-file {path}: {name!r} is no namespace name (want {NAMESPACE_NAME.pattern})")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < math.inf:
            raise ValueError(f"--lookup-rates-file {path}: the rate of {name!r} is {rate!r}, not a finite number "
                             "of contexts per second, or 0 (no limit)")
    return {name: float(rate) for name, rate in raw.items()}


class LookupRates:
    def __init__(self, rate: float, own: dict[str, float] | None = None, path: str = "") -> None:
        """rate: contexts per second that each namespace may look up (0: no limit); own: the
        namespaces with a rate of their own (read from ``path``, a --lookup-rates-file)."""
        if not 0 <= rate < math.inf:
            raise ValueError(f"rate {rate} must be a finite number >= 0")
        self.rate, self.own, self.path = rate, dict(own or {}), path
        self._buckets: dict[str, tuple[float, float]] = {}  # namespace -> (level, as of)

    @staticmethod
    def cost(contexts: int, samples: int) -> float:
        return contexts * max(1.0, samples / REFERENCE_SAMPLES)

    def rate_of(self, namespace: str) -> float:
        """The contexts per second ``namespace`` may look up here (0: no limit)."""
        return self.own.get(namespace, self.rate)

    def source(self, namespace: str) -> str:
        """Where that rate was set, for an operator: the flag or the file."""
        return f"its entry in --lookup-rates-file {self.path}" if namespace in self.own else DEFAULT_SOURCE

    def reload(self) -> int:
        """Read the --lookup-rates-file again (SIGHUP): its rates in place of these from the next
        call on (each bucket keeps its level, within its new second); the number of entries. A
        ValueError, and these rates kept, for a file that does not load."""
        if not self.path:
            raise ValueError("no --lookup-rates-file on this server: nothing to reload")
        self.own = read_rates(self.path)  # one assignment
        return len(self.own)

    def admit(self, namespace: str, cost: float, now: float, background: bool = False) -> bool:
        """Whether ``namespace`` may make a lookup of ``cost`` at ``now`` (monotonic seconds); an
        admitted one is charged, a refused one is not."""
        rate = self.own.get(namespace, self.rate)
        if not rate:
            return True
        level, then = self._buckets.get(namespace, (rate, now))
        level = min(rate, level + (now - then) * rate)
        if level <= 0 or (background and level - cost < rate / 2):
            self._buckets[namespace] = (level, now)
            return False
        self._buckets[namespace] = (level - cost, now)
        return True
