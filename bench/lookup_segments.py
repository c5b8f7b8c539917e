"""The datastore's lookup over one segment and over several, in process, on real contexts.

A namespace holds the ShareGPT datastore (conversations 2000-17000, Llama-3 tokens, the serving
simulation's) cut into N equal segments, as a service that has ingested for a while holds
several until compaction merges them. The contexts are the last 16 tokens at random points of
MT-Bench and HumanEval responses (most of their 4-token suffixes do not occur, so a lookup
also searches the shorter ones), in batches of 38 (a batch-16 step's prefetch), looked up with
the SDK's prefetch parameters (depth 9, 64 samples). It isolates the kernel for A/B runs of a
change to it; it imports only what older trees have, so that it runs over an earlier commit
with ``PYTHONPATH=<its tree>``.

    .venv/bin/python bench/lookup_segments.py [--segments 1,5] [--batches 60]

Prints JSON: per segment count, p50 / p90 of a batch's lookup (ms) and p50 per context (µs),
each the median over 3 passes of the same batches.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.runtime import lookup_options
from datastore_service.core import Document, NamespaceIndex, NamespaceSpec, build_segment
from datastore_service.core.index import pack_tails
from sssd.bench import datasets, llama3
from sssd.bench.provenance import stamped

PER_BATCH = 38


def contexts(batches: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    pool = []
    for case in cases:
        full = list(case["prompt"]) + list(case["response"])
        for p in rng.integers(len(case["prompt"]), len(full), 5):
            pool.append(np.asarray(full[max(0, p - 16) : p], dtype=np.int32))
    return [[pool[i] for i in rng.integers(0, len(pool), PER_BATCH)] for _ in range(batches)]


def batch_times(lookup, packed) -> tuple[float, float]:
    """p50 and p90 (s) of ``lookup(ctx, off)`` over the packed batches, each the median of 3
    passes (after one call that compiles or loads the kernels)."""
    lookup(*packed[0])
    passes = []
    for _ in range(3):
        times = []
        for ctx, off in packed:
            start = time.perf_counter()
            lookup(ctx, off)
            times.append(time.perf_counter() - start)
        passes.append((np.median(times), np.percentile(times, 90)))
    return tuple(float(np.median([p[i] for p in passes])) for i in (0, 1))


def namespace(docs: list[np.ndarray], segments: int) -> NamespaceIndex:
    ns = NamespaceIndex(NamespaceSpec("segments", llama3.VOCAB_SIZE))
    per = -(-len(docs) // segments)
    for s in range(segments):
        part = docs[s * per : (s + 1) * per]
        ns.add([Document(f"d{s * per + i}", np.asarray(d, dtype=np.int32)) for i, d in enumerate(part)])
        ns.install(build_segment(s + 1, llama3.VOCAB_SIZE, ns.freeze()))
    return ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", default="1,5")
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    config = SpeculatorConfig()
    params = lookup_options(config.draft, config.draft.max_depth, True)
    packed = [pack_tails(b, params.max_match) for b in contexts(args.batches, np.random.default_rng(0))]
    docs = datasets.sharegpt_datastore(2000, 17000)
    rows = []
    for segments in (int(s) for s in args.segments.split(",")):
        ns = namespace(docs, segments)
        p50, p90 = batch_times(lambda ctx, off: ns.lookup_packed(ctx, off, params), packed)
        rows.append({"segments": segments, "batch_ms": {"p50": round(p50 * 1e3, 3), "p90": round(p90 * 1e3, 3)},
                     "per_context_us": round(p50 / PER_BATCH * 1e6, 1)})
        del ns
    print(json.dumps(stamped({"contexts_per_batch": PER_BATCH, "batches": args.batches, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
