"""``sssd bench datastore``: build, memory, lookup latency, freshness and restart of the datastore.

Prints one JSON object. Everything runs in this process against a temporary SQLite file.
What each number means:
- build_tokens_per_s: tokens / seconds of the suffix-array segment build (memtable -> segment).
- ingest_tokens_per_s: tokens / seconds of durable ingest (SQLite commit) + build + snapshot.
- resident_bytes_per_token: RSS growth from before the corpus existed to after the build,
  with the input arrays freed, divided by tokens; measured in a process already warmed by a
  20k-token datastore (kernels compiled, SQLite loaded), so it is what each token costs.
- fixed_overhead_bytes: what that warm-up itself added (compiled kernels, libraries): paid
  once per process, whatever the corpus size; total_bytes_per_token includes it.
- lookup_us: one 4-token context per call, depth-8 tree, p50/p99.
- batch64_lookup_us: 64 contexts per call, p50/p99 per call.
- ingest_to_queryable_ms: a 10k-token batch into the store of N tokens, from the ingest call
  to the first lookup that finds its text (background maintenance running).
- restart_s: close, reopen the SQLite file, until the first lookup answers.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from datastore_service.core import Document, LookupParams, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig
from datastore_service.memory import release_free_memory
from sssd.bench.stats import percentiles
from sssd.bench.synthetic import corpus

NS = "bench"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load_docs_file(path: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Real tokens from a JSONL file of {"tokens": [...]} documents, up to ``limit`` tokens; read as
    ``sssd ingest`` reads them (a malformed line is a one-line error naming it, not a traceback)."""
    from sssd.client_commands import read_token_documents

    parts, starts, total = [], [0], 0
    for _, tokens in read_token_documents(path):
        parts.append(np.asarray(tokens, dtype=np.int32))
        total += len(tokens)
        starts.append(total)
        if total >= limit:
            break
    if not parts:
        raise ValueError(f"{path}: no documents")
    return np.concatenate(parts), np.asarray(starts, dtype=np.int64)


def _warm_up(workdir: str | None) -> None:
    """A 20k-token datastore built, saved, queried and closed: compiles every kernel."""
    text, starts = corpus(20_000, 1000, 12345)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        ds = Datastore(DatastoreConfig(db=str(Path(tmp) / "warm.db"), synchronous="NORMAL"))
        ds.create_namespace(NamespaceSpec(NS, 1000))
        bounds = starts.tolist()
        ds.ingest(NS, [Document(f"w{j}", text[bounds[j] : bounds[j + 1]]) for j in range(len(bounds) - 1)])
        ds.compact(NS)
        ds.lookup(NS, [text[:4], text[8:12]], LookupParams(depth=8))
        ds.close()
    gc.collect()
    release_free_memory()


def run(tokens: int, vocab: int, data: str | None = None, seed: int = 0, lookups: int = 20000, workdir: str | None = None) -> dict:
    start_rss = rss_bytes()
    _warm_up(workdir)
    base_rss = rss_bytes()
    if data:
        text, starts = load_docs_file(data, tokens)
        vocab = max(vocab, int(text.max()) + 1)
    else:
        text, starts = corpus(tokens, vocab, seed)
    n = int(text.shape[0])
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    path = str(Path(tmp.name) / "bench.db")
    config = DatastoreConfig(db=path, synchronous="NORMAL")
    ds = Datastore(config)
    ds.create_namespace(NamespaceSpec(NS, vocab))
    result: dict = {"tokens": n, "vocab": vocab, "documents": int(starts.shape[0] - 1), "data": data or "synthetic-zipf"}

    t0 = time.perf_counter()
    bounds = starts.tolist()
    batch = 2000
    for i in tqdm(range(0, len(bounds) - 1, batch), desc="ingest", unit="batch", disable=None):
        docs = [Document(f"d{j}", text[bounds[j] : bounds[j + 1]]) for j in range(i, min(i + batch, len(bounds) - 1))]
        ds.ingest(NS, docs)
    del docs  # its arrays are views of the input text
    t_ingest = time.perf_counter() - t0
    ns = ds.namespace(NS)
    frozen = ns.freeze()
    from datastore_service.core import build_segment  # timed alone: the pure build

    t1 = time.perf_counter()
    seg = build_segment(ds._segment_id(), vocab, frozen)
    t_build = time.perf_counter() - t1
    ns.install(seg)
    del frozen
    ds.store.save_segment(NS, seg)
    del seg
    t_total = time.perf_counter() - t0
    result["build_tokens_per_s"] = round(n / t_build)
    result["ingest_tokens_per_s"] = round(n / t_total)
    result["ingest_commit_s"] = round(t_ingest, 2)

    rng = np.random.default_rng(seed + 1)
    ctx_pos = _context_positions(rng, starts, lookups)
    contexts = [text[p - 4 : p].copy() for p in ctx_pos.tolist()]
    del text, starts
    gc.collect()
    release_free_memory()
    rss = rss_bytes()
    result["resident_bytes_per_token"] = round((rss - base_rss) / n, 2)
    result["fixed_overhead_bytes"] = base_rss - start_rss
    result["total_bytes_per_token"] = round((rss - start_rss) / n, 2)
    result["index_bytes_per_token"] = round(ns.resident_bytes() / n, 2)

    result.update(_latency(ds, contexts))
    result["ingest_to_queryable_ms"] = _freshness(ds, vocab, rng)
    ds.close()
    t2 = time.perf_counter()
    ds = Datastore(config)
    ds.lookup(NS, contexts[:1], LookupParams(depth=8))
    result["restart_s"] = round(time.perf_counter() - t2, 3)
    result["disk_bytes"] = sum(os.path.getsize(p) for p in Path(tmp.name).iterdir())
    ds.close()
    tmp.cleanup()
    return result


def _context_positions(rng: np.random.Generator, starts: np.ndarray, k: int) -> np.ndarray:
    docs = rng.integers(0, starts.shape[0] - 1, k)
    lo, hi = starts[docs] + 4, starts[docs + 1]
    return lo + (rng.random(k) * np.maximum(hi - lo, 1)).astype(np.int64)


def _latency(ds: Datastore, contexts: list[np.ndarray]) -> dict:
    params = LookupParams(depth=8)
    for c in contexts[:200]:  # warm-up: compile, page in
        ds.lookup(NS, [c], params)
    single, found, occ = [], 0, []
    for c in contexts:
        t = time.perf_counter()
        tree = ds.lookup(NS, [c], params)[0]
        single.append(time.perf_counter() - t)
        found += tree.match_length == 4
        occ.append(tree.occurrences)
    batched = []
    for i in range(0, len(contexts) - 63, 64):
        t = time.perf_counter()
        ds.lookup(NS, contexts[i : i + 64], params)
        batched.append(time.perf_counter() - t)
    return {
        "lookup_us": percentiles(single),
        "batch64_lookup_us": percentiles(batched),
        "lookup_match4_fraction": round(found / len(contexts), 3),
        "lookup_mean_occurrences": round(float(np.mean(occ)), 1),
    }


def _freshness(ds: Datastore, vocab: int, rng: np.random.Generator) -> float:
    """Ingest 10k new tokens and time until a lookup sees a pattern only they contain."""
    ds.start_maintenance()
    fresh = rng.integers(0, vocab, 10_000).astype(np.int32)
    probe = fresh[5000:5004]
    before = ds.lookup(NS, [probe], LookupParams(min_match=4))[0].occurrences
    docs = [Document(f"fresh-{i}", fresh[i * 1000 : (i + 1) * 1000]) for i in range(10)]
    t = time.perf_counter()
    ds.ingest(NS, docs)
    while ds.lookup(NS, [probe], LookupParams(min_match=4))[0].occurrences <= before:
        if time.perf_counter() - t > 30:
            return float("inf")
        time.sleep(0.0005)
    return round((time.perf_counter() - t) * 1e3, 1)
