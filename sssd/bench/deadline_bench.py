"""``sssd bench deadline``: how long a draft call takes when the datastore is healthy, slow, stopped.

A real embedded server on 127.0.0.1; the speculator asks for every step's lookup with the
given deadline. Reports draft-call latency percentiles per phase and the overshoot beyond
the deadline (target: deadline + 0.2 ms).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from client_sdk.transport.breaker import CircuitBreaker
from client_sdk.transport.remote import DatastoreClient
from client_sdk.transport.source import RemoteSource
from client_sdk.runtime import build_speculator
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from sssd_wire.types import LookupParams
from datastore_service.embedded import EmbeddedServer
from datastore_service.server import ServerConfig
from sssd.bench.stats import percentiles


def _phase(spec: Speculator, calls: int) -> list[float]:
    out = []
    for i in range(calls):
        spec.commit("r", [i % 50])  # a new context every step: no prefetched answer applies
        t = time.perf_counter()
        spec.draft(["r"])
        out.append(time.perf_counter() - t)
    return out


def run(deadline_ms: float = 2.0, calls: int = 300) -> dict:
    deadline = deadline_ms / 1e3
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(ServerConfig.of(db=str(Path(tmp) / "d.db"), port=0)).start()
        client = DatastoreClient(server.address, timeout_s=5)
        client.create_namespace("ns", 100)
        rng = np.random.default_rng(0)
        client.ingest("ns", [(f"d{i}", rng.integers(0, 50, 200)) for i in range(200)])
        client.snapshot()
        source = RemoteSource(client, "ns", LookupParams(), CircuitBreaker(threshold=3, cooldown_s=0.5), timeout_s=0.05)
        blocking = SpeculatorConfig(lookup_deadline_s=deadline, prefetch_outcomes=False)  # the mode with a wait
        spec = build_speculator(fixed_budget=8, remote=source, config=blocking)
        spec.start("r", rng.integers(0, 50, 64).tolist())
        _phase(spec, 20)  # warm-up
        phases = {"healthy": _phase(spec, calls)}
        server.server.servicer.lookup_delay_s = 0.02
        phases["slow_20ms"] = _phase(spec, calls)
        server.server.servicer.lookup_delay_s = 0.0
        server.stop()
        phases["stopped"] = _phase(spec, calls)
        client.close()

    result = {"deadline_ms": deadline_ms, "calls_per_phase": calls}
    for name, xs in phases.items():
        result[f"{name}_draft_ms"] = percentiles(xs, "ms", 3, with_max=True)
        result[f"{name}_overshoot_p99_ms"] = round(percentiles(xs, "ms", 3, with_max=True)["p99"] - deadline_ms, 3)
    result["remote_stats"] = vars(source.stats)
    return result
