"""``sssd bench service``: the datastore over loopback gRPC, server in its own process.

Prints one JSON object:
- ingest_stream_tokens_per_s: bulk load of the store over IngestStream (client-measured,
  until the summary arrives, i.e. every document committed).
- lookup64_ms {p50, p99}: round trip of one Lookup carrying 64 contexts (4 tokens each).
- load: ``clients`` concurrent lookup clients + one ingest stream + a full compaction for
  ``seconds``; errors, lookup p50/p99 and throughput.
All traffic goes to 127.0.0.1 and every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from sssd_wire.codec import lookup_request
from sssd_wire.types import LookupParams
from sssd.bench.stats import percentiles
from sssd.bench.synthetic import corpus
from sssd import serve_process
from sssd_wire.v1 import datastore_pb2 as pb
from sssd_wire.v1 import datastore_pb2_grpc as pb_grpc

NS = "bench"


def start_server(db: str) -> tuple[subprocess.Popen, str]:
    return serve_process.start_server(db, "--synchronous", "NORMAL")


def batches(text: np.ndarray, starts: np.ndarray, prefix: str, per_request: int = 256):
    bounds = starts.tolist()
    for i in range(0, len(bounds) - 1, per_request):
        docs = [pb.TokenDocument(id=f"{prefix}{j}", tokens=text[bounds[j]:bounds[j + 1]].tobytes())
                for j in range(i, min(i + per_request, len(bounds) - 1))]
        yield pb.IngestRequest(namespace=NS, documents=docs)


async def bulk_load(stub, text, starts) -> float:
    t = time.perf_counter()
    summary = await stub.IngestStream(batches(text, starts, "d"), timeout=3600)
    elapsed = time.perf_counter() - t
    return summary.tokens / elapsed


async def lookup_latency(stub, contexts: list[np.ndarray], calls: int) -> dict:
    opts = LookupParams(depth=8)
    reqs = [lookup_request(NS, contexts[(i * 64) % (len(contexts) - 64):][:64], opts) for i in range(calls)]
    for r in reqs[:20]:
        await stub.Lookup(r, timeout=10)
    samples = []
    for r in reqs:
        t = time.perf_counter()
        await stub.Lookup(r, timeout=10)
        samples.append(time.perf_counter() - t)
    return percentiles(samples, "ms", 3)


async def load_run(stub, contexts, clients: int, seconds: float, vocab: int, batch: int) -> dict:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    opts = LookupParams(depth=8)

    async def lookup_client(k: int) -> None:
        i = k * 997
        while time.monotonic() < deadline:
            req = lookup_request(NS, contexts[i % (len(contexts) - batch):][:batch], opts)
            t = time.perf_counter()
            try:
                await stub.Lookup(req, timeout=10)
                latencies.append(time.perf_counter() - t)
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
            i += batch

    async def ingest_stream() -> int:
        rng = np.random.default_rng(99)

        def gen():
            n = 0
            while time.monotonic() < deadline:
                toks = rng.integers(0, vocab, (64, 256)).astype(np.int32)
                yield pb.IngestRequest(namespace=NS, documents=[pb.TokenDocument(id=f"load{n + j}", tokens=toks[j].tobytes()) for j in range(64)])
                n += 64

        try:
            return (await stub.IngestStream(gen(), timeout=seconds + 60)).tokens
        except grpc.RpcError as exc:
            errors.append("ingest:" + exc.code().name)
            return 0

    async def compaction() -> float:
        await asyncio.sleep(seconds / 3)
        t = time.perf_counter()
        try:
            await stub.Compact(pb.CompactRequest(namespace=NS, full=True), timeout=seconds * 4)
        except grpc.RpcError as exc:
            errors.append("compact:" + exc.code().name)
        return time.perf_counter() - t

    t0 = time.perf_counter()
    results = await asyncio.gather(ingest_stream(), compaction(), *[lookup_client(k) for k in range(clients)])
    wall = time.perf_counter() - t0
    return {
        "clients": clients, "contexts_per_lookup": batch, "seconds": round(wall, 1), "errors": len(errors),
        "error_codes": sorted(set(errors)), "lookups": len(latencies),
        "lookups_per_s": round(len(latencies) / wall, 1), "contexts_per_s": round(len(latencies) * batch / wall),
        "lookup_ms": percentiles(latencies, "ms", 3),
        "ingested_tokens_during_load": int(results[0]), "compaction_s": round(results[1], 2),
    }


async def _main(tokens: int, vocab: int, clients: int, seconds: float, batch: int, db: str) -> dict:
    text, starts = corpus(tokens, vocab, seed=3)
    rng = np.random.default_rng(4)
    pos = rng.integers(4, tokens, 4096)
    contexts = [text[p - 4 : p].copy() for p in pos.tolist()]
    proc, address = start_server(db)
    try:
        async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.DatastoreStub(channel)
            await stub.CreateNamespace(pb.CreateNamespaceRequest(name=NS, vocab_size=vocab))
            result = {"tokens": tokens, "vocab": vocab}
            result["ingest_stream_tokens_per_s"] = round(await bulk_load(stub, text, starts))
            await stub.Compact(pb.CompactRequest(namespace=NS, full=True), timeout=600)
            result["lookup64_ms"] = await lookup_latency(stub, contexts, 500)
            result["load"] = await load_run(stub, contexts, clients, seconds, vocab, batch)
            return result
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def run(tokens: int = 10_000_000, vocab: int = 128_000, clients: int = 32, seconds: float = 30.0, batch: int = 16) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_main(tokens, vocab, clients, seconds, batch, str(Path(tmp) / "svc.db")))
