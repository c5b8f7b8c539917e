"""``sssd bench fleet``: simulated decode workers in their own processes against datastore servers.

Each worker process holds one ``DatastoreClient`` (the SDK's real client) and, every
``step_ms``, sends one Lookup of ``batch x contexts_per_request`` contexts (what a decode
step's zero-wait prefetch asks for), with the SDK's zero-wait lookup parameters (``--samples``
occurrences per context: by default the 128 the SDK asks while the datastore keeps up; its
pacing falls back to 64 when answers come late), then sleeps to
the next step. An answer that is not back by the next step is late (the step drafts
without it). Workers are independent engines, so their steps are out of phase: each starts at
its own random point of the first step (seeded), and calls from different workers arrive spread
over the step rather than all at once. ``--aligned`` starts every worker's steps at the same
instant instead, the adversarial case: each step's calls all arrive together and queue behind
each other in the server. Servers are real ``sssd serve`` processes on 127.0.0.1: the first is the
writer; more are read replicas following it (``--follow``), each with its own copy of the
documents, or, with ``--segment-readers``, segment readers that map the writer's segment
files. Lookups are spread over all of them by gRPC's ``round_robin`` policy. Each server's
memory is reported at the end (``servers``: resident and proportional set sizes, the
proportional one splitting each shared page between the processes that map it).

Per row: contexts/s served, server CPU-seconds per context (utime + stime of the server
processes over the measured window, from /proc: it does not depend on how the cores are
shared with the workers), latency p50/p99 as the workers see it and the late fraction, and
the servers' own Lookup latency p50/p99 (from their /metrics histograms: bucket upper
bounds, without the workers' queueing) and the time their garbage collections stopped them.
The workers' own CPU is reported too (per call, and the cores it kept busy): on a small box the
workers' encoding and decoding share its cores with the servers, so server plus workers says
how close to saturated the box ran.
Each row also gives the in-process cost of the same lookups made at the same call rate
against the same datastore in the bench process (``in_process_cpu_us_per_context``, thread
CPU time of the lookup calls alone): what the service's per-context CPU compares with like
for like. Everything is bounded in time.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sssd.bench.stats import percentiles, process_cpu_seconds
from sssd.bench.synthetic import corpus

NS = "fleet"
VOCAB = 32_000
IN_PROCESS_S = 3.0  # the in-process baseline's window per row (its cadence, not its length, matters)


def _memory_mb(pid: int) -> dict:
    """Resident (RSS), proportional (PSS: shared pages split between their mappers) and anonymous
    (private heap) memory of a process, MB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"rss_mb": round(fields.get("Rss", 0), 1), "pss_mb": round(fields.get("Pss", 0), 1),
            "anonymous_mb": round(fields.get("Anonymous", 0), 1)}


def prefetch_params(samples: int | None = None):
    """What a zero-wait prefetch asks per context (the SDK's defaults), with ``samples``
    occurrences if given (None: the SDK's ask while the datastore keeps up)."""
    from client_sdk.runtime import lookup_options
    from client_sdk.types import DraftConfig

    draft = DraftConfig()
    return lookup_options(draft, draft.max_depth, outcomes=True).sampling(samples)


def phase_offsets(workers: int, step_ms: float, aligned: bool, seed: int = 7) -> list[float]:
    """Each worker's first step, in seconds after the common start: a random point of the step
    (seeded: every run the same), or 0 for every worker (aligned)."""
    if aligned:
        return [0.0] * workers
    return np.random.default_rng(seed).uniform(0.0, step_ms / 1e3, workers).tolist()


def _worker(address: str, batch: int, per_request: int, step_ms: float, seconds: float, seed: int,
            contexts: np.ndarray, start_at: float, out, stream: bool = False, samples: int | None = None,
            namespace: str = NS) -> None:
    """One decode worker: a Lookup per step (unary, or on one LookupStream), on a fixed
    cadence, for ``seconds`` from ``start_at`` (a namespace's tenant: ``namespace``)."""
    from client_sdk.transport.remote import DatastoreClient

    rng = np.random.default_rng(seed)
    n = batch * per_request
    options = prefetch_params(samples)
    step = step_ms / 1e3
    latencies, late, failed = [], 0, 0
    with DatastoreClient(address, timeout_s=2.0, lookup_stream=stream) as client:
        client.lookup_future(namespace, list(contexts[:n]), options, flat=True).result()  # connect before the clock
        while time.time() < start_at:
            time.sleep(0.001)
        t_end = time.perf_counter() + seconds
        next_step = time.perf_counter()
        cpu0 = time.process_time()
        while next_step < t_end:
            picks = contexts[rng.integers(0, contexts.shape[0], n)]
            t0 = time.perf_counter()
            try:
                client.lookup_future(namespace, list(picks), options, timeout_s=2.0, flat=True).result(timeout=2.0)
                latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - any failed answer counts as late and failed
                failed += 1
            if time.perf_counter() - t0 > step:
                late += 1
            next_step += step
            pause = next_step - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:  # behind schedule: the next step starts now (a real worker does not batch up steps)
                next_step = time.perf_counter()
        cpu = time.process_time() - cpu0  # the worker's own CPU over its steps: the call's encoding and decoding
    out.put({"namespace": namespace, "latencies": latencies, "late": late, "failed": failed,
             "steps": len(latencies) + failed,
             "contexts": n * len(latencies), "cpu_s": cpu})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_metrics(metrics_port: int) -> tuple[dict[float, float], float]:
    """The server's own Lookup latency histogram (cumulative count per upper bound, seconds)
    and the seconds its garbage collections have stopped it so far."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    buckets = {float(s.labels["le"]): s.value for s in samples
               if s.name == "sssd_rpc_seconds_bucket" and s.labels.get("method") == "Lookup"}
    return buckets, sum(s.value for s in samples if s.name == "sssd_gc_pause_seconds_sum")


def _server_percentile(before: list[dict], after: list[dict], q: float) -> float | None:
    """The q-quantile (ms) of the servers' own Lookup latency in the window: the upper bound of
    the histogram bucket it falls in (coarse: buckets are 1, 2, 5, 10, 25 ... ms)."""
    bounds = sorted(after[0])
    counts = [sum(a.get(b, 0) - bf.get(b, 0) for a, bf in zip(after, before)) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= q * counts[-1]:
            return bound * 1e3 if bound != float("inf") else None
    return None


def fill(address: str, namespaces, text: np.ndarray, starts: np.ndarray) -> None:
    """Each of ``namespaces`` created on the server at ``address`` and given the corpus's
    documents (``starts``: their bounds in ``text``), merged into one segment."""
    from client_sdk.transport.remote import DatastoreClient

    bounds = starts.tolist()
    docs = [(f"d{j}", text[bounds[j] : bounds[j + 1]]) for j in range(len(bounds) - 1)]
    with DatastoreClient(address, timeout_s=600) as c:
        for name in namespaces:
            c.create_namespace(name, VOCAB)
            for i in range(0, len(docs), 512):
                c.ingest(name, docs[i : i + 512])
            c.compact(name, full=True, timeout_s=600)


def _servers(db: str, replicas: int, text: np.ndarray, starts: np.ndarray, segment_readers: bool):
    from sssd import serve_process

    ports = [free_port() for _ in range(replicas + 1)]
    shared = ("--segment-dir", str(Path(db).with_name("segments"))) if segment_readers else ()
    primary, address = serve_process.start_server(db, "--synchronous", "NORMAL", "--metrics-port", str(ports[0]),
                                                  *shared)
    procs, addresses = [primary], [address]
    fill(address, (NS,), text, starts)
    for k in range(replicas):
        proc, addr = serve_process.start_server(str(Path(db).with_name(f"replica{k}.db")), "--follow", address,
                                                "--synchronous", "NORMAL", "--metrics-port", str(ports[k + 1]),
                                                *shared)
        procs.append(proc)
        addresses.append(addr)
    return procs, addresses, ports


def _wait_caught_up(addresses: list[str], tokens: int, timeout_s: float = 120) -> None:
    from client_sdk.transport.remote import DatastoreClient

    deadline = time.monotonic() + timeout_s
    for address in addresses:
        with DatastoreClient(address, timeout_s=10) as c:
            while True:
                spaces = {n.name: n for n in c.stats().namespaces}
                if NS in spaces and spaces[NS].tokens >= tokens:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {address} did not catch up with the writer in {timeout_s:.0f} s")
                time.sleep(0.2)


def _in_process_store(db: str, text: np.ndarray, starts: np.ndarray):
    """The servers' datastore, in this process: the same documents, compacted the same way."""
    from datastore_service.core import Document, NamespaceSpec
    from datastore_service.datastore import Datastore, DatastoreConfig

    ds = Datastore(DatastoreConfig(db=db, synchronous="NORMAL"))
    ds.create_namespace(NamespaceSpec(NS, VOCAB))
    bounds = starts.tolist()
    for i in range(0, len(bounds) - 1, 512):
        ds.ingest(NS, [Document(f"d{j}", text[bounds[j] : bounds[j + 1]]) for j in range(i, min(i + 512, len(bounds) - 1))])
    ds.compact(NS, full=True)
    return ds


def _in_process_cost(ds, contexts: np.ndarray, calls_per_s: float, n: int, seconds: float,
                     samples: int | None = None) -> float:
    """CPU µs per context of the same lookups (n contexts per call, the workers' parameters) made
    in process at the row's call rate, so that the caches are as warm or cold as the servers':
    the like-for-like cost that the service's per-context CPU compares with."""
    from datastore_service.core.index import pack_tails

    params = prefetch_params(samples)
    rng = np.random.default_rng(7)
    gap, cpu, done = 1.0 / calls_per_s, 0.0, 0
    t_end = time.perf_counter() + seconds
    next_call = time.perf_counter()
    while next_call < t_end:
        ctx, offs = pack_tails(list(contexts[rng.integers(0, contexts.shape[0], n)]), params.max_match)
        c0 = time.thread_time()
        ds.lookup_packed(NS, ctx, offs, params)
        cpu += time.thread_time() - c0
        done += n
        next_call += gap
        pause = next_call - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return round(cpu / max(done, 1) * 1e6, 1)


def _row(procs, addresses, ports, contexts, workers: int, batch: int, per_request: int, step_ms: float,
         seconds: float, stream: bool, samples: int | None, aligned: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    target = "ipv4:" + ",".join(addresses) if len(addresses) > 1 else addresses[0]
    start_at = time.time() + 8.0  # workers import, connect and warm up first
    offsets = phase_offsets(workers, step_ms, aligned)
    kids = [ctx.Process(target=_worker, args=(target, batch, per_request, step_ms, seconds, 1000 + w, contexts,
                                              start_at + offsets[w], out, stream, samples)) for w in range(workers)]
    for k in kids:
        k.start()
    while time.time() < start_at:
        time.sleep(0.005)
    cpu0, t0 = sum(process_cpu_seconds(p.pid) for p in procs), time.perf_counter()
    hist0, gc0 = zip(*(_server_metrics(p) for p in ports))
    results = [out.get(timeout=seconds + 120) for _ in kids]
    cpu1, wall = sum(process_cpu_seconds(p.pid) for p in procs), time.perf_counter() - t0
    hist1, gc1 = zip(*(_server_metrics(p) for p in ports))
    for k in kids:
        k.join(timeout=30)
    latencies = [x for r in results for x in r["latencies"]]
    steps = sum(r["steps"] for r in results)
    contexts_served = sum(r["contexts"] for r in results)
    return {
        "workers": workers, "batch": batch, "step_ms": step_ms, "server_processes": len(procs),
        "rpc": "LookupStream" if stream else "Lookup", "phases": "aligned" if aligned else "staggered",
        "phase_offsets_ms": [round(x * 1e3, 2) for x in offsets],
        "contexts_per_request": per_request, "samples": prefetch_params(samples).sample_budget,
        "offered_contexts_per_s": round(workers * batch * per_request * 1e3 / step_ms),
        "contexts_per_s": round(contexts_served / wall),
        "server_cpu_us_per_context": round((cpu1 - cpu0) / max(contexts_served, 1) * 1e6, 1),
        "server_cpu_cores_busy": round((cpu1 - cpu0) / wall, 2),
        # the simulated workers' own CPU (each process's, over its steps): per call, and the cores they kept busy
        "worker_cpu_us_per_call": round(sum(r["cpu_s"] for r in results) / max(steps, 1) * 1e6, 1),
        "worker_cpu_cores_busy": round(sum(r["cpu_s"] for r in results) / seconds, 2),
        **{f"{k}_ms": v for k, v in percentiles(latencies, "ms", 2).items()},
        "late_fraction": round(sum(r["late"] for r in results) / max(steps, 1), 4),
        # in the servers themselves (no client queueing), bucket upper bounds
        "server_p50_ms_at_most": _server_percentile(hist0, hist1, 0.5),
        "server_p99_ms_at_most": _server_percentile(hist0, hist1, 0.99),
        # the servers' garbage collection pauses in the window, summed (each stops a whole server)
        "server_gc_ms": round((sum(gc1) - sum(gc0)) * 1e3, 1),
        "failed": sum(r["failed"] for r in results), "steps": steps,
    }


def run(workers: list[int], batch: int = 32, step_ms: float = 20.0, per_request: int = 4, servers: int = 1,
        tokens: int = 2_000_000, seconds: float = 10.0, progress: bool = True, stream: bool = False,
        segment_readers: bool = False, samples: int | None = None, aligned: bool = False) -> dict:
    """One row per worker count, all against the same ``servers`` processes; ``stream``: each
    worker keeps one LookupStream instead of unary calls (one server only); ``segment_readers``:
    the replicas map the writer's segment files instead of copying its documents; ``samples``:
    the occurrences each context samples (None: ``prefetch_params``'); ``aligned``: every
    worker's steps start at the same instant (default: each at a random point of the step)."""
    if stream and servers > 1:
        raise ValueError("--stream pins each worker to one server: use it with --servers 1")
    if servers < 1 or not workers or min(workers) < 1:
        raise ValueError("--servers and every --workers count must be at least 1")
    text, starts = corpus(tokens, VOCAB, seed=5)
    rng = np.random.default_rng(6)
    pos = rng.integers(16, tokens, 8192)
    contexts = np.stack([text[p - 16 : p] for p in pos.tolist()])  # each context's last 16 tokens, as the SDK sends
    with tempfile.TemporaryDirectory() as tmp:
        procs, addresses, ports = _servers(str(Path(tmp) / "writer.db"), servers - 1, text, starts, segment_readers)
        try:
            _wait_caught_up(addresses[1:], tokens)
            local = _in_process_store(str(Path(tmp) / "local.db"), text, starts)
            rows = []
            for w in tqdm(workers, desc="fleet", unit="row", disable=not progress):
                n = batch * per_request
                rows.append(_row(procs, addresses, ports, contexts, w, batch, per_request, step_ms, seconds, stream,
                                 samples, aligned))
                rows[-1]["in_process_cpu_us_per_context"] = _in_process_cost(
                    local, contexts, w * 1e3 / step_ms, n, min(seconds, IN_PROCESS_S), samples)
            local.close()
            role = "segment reader" if segment_readers else "replica"
            memory = [{"role": "writer" if i == 0 else role, **_memory_mb(p.pid)} for i, p in enumerate(procs)]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
    return {"tokens": tokens, "seconds_per_row": seconds, "rows": rows, "servers": memory}
