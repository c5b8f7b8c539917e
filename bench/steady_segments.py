"""How many segments a datastore holds while feedback keeps arriving, what its maintenance costs,
and what its lookups cost then: by compaction fanout and flush interval.

A Datastore (in process, SQLite synchronous NORMAL as the benches' servers) holds ShareGPT
conversations 2000-13999 (Llama-3 tokens) merged into one segment. Then ``--rate`` feedback
documents per second (200-token generations: the start of conversations 14000-16999) arrive in
batches every 0.1 s, and ``maintain()`` (flush, then compaction by policy) runs every
``flush_every_s``, as the server's maintenance loop does every ``--maintenance-interval-s``.
Time is simulated: ``--seconds`` of arrivals run as fast as the machine allows, so the figures
do not depend on the machine's other load except for the CPU times. Per configuration
``fanout:flush_every_s`` of ``--configs``: the segment count every 10 simulated seconds (mean,
max), maintenance CPU (thread time of ``maintain`` over simulated time: the cores it keeps
busy), and at the end the lookup cost per context, in batches of 38 real contexts with the
SDK's prefetch parameters (``bench/lookup_segments.py``'s, median of 3 passes).

    .venv/bin/python bench/steady_segments.py [--configs 4:0.1,2:0.1,4:0.5] [--rate 100] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from lookup_segments import PER_BATCH, batch_times, contexts  # bench/ is on the path when run as a script

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.runtime import lookup_options
from datastore_service.core import Document, NamespaceSpec
from datastore_service.core.index import pack_tails
from datastore_service.datastore import Datastore, DatastoreConfig
from sssd.bench import datasets, llama3
from sssd.bench.provenance import stamped

TICK_S = 0.1
FEEDBACK_TOKENS = 200


def run(fanout: int, flush_every_s: float, rate: int, seconds: float, base, feedback, packed, params) -> dict:
    every = max(1, round(flush_every_s / TICK_S))
    with tempfile.TemporaryDirectory() as tmp:
        ds = Datastore(DatastoreConfig(db=str(Path(tmp) / "steady.db"), synchronous="NORMAL",
                                       compaction_fanout=fanout, idle_compaction_s=0))
        try:
            ds.create_namespace(NamespaceSpec("n", llama3.VOCAB_SIZE))
            ds.ingest("n", [Document(f"s{i}", d) for i, d in enumerate(base)])
            ds.compact("n", full=True)
            counts, maintenance_s, k = [], 0.0, 0
            ticks = round(seconds / TICK_S)
            for tick in range(ticks):
                batch = []
                for _ in range(max(1, round(rate * TICK_S))):
                    batch.append(Document(f"f{k}", feedback[k % len(feedback)][:FEEDBACK_TOKENS]))
                    k += 1
                ds.ingest("n", batch)
                if tick % every == every - 1:
                    start = time.thread_time()
                    ds.maintain()
                    maintenance_s += time.thread_time() - start
                if tick % round(10 / TICK_S) == round(10 / TICK_S) - 1:
                    counts.append(len(ds.namespace("n").segments))
            p50 = batch_times(lambda ctx, off: ds.lookup_packed("n", ctx, off, params), packed)[0]
            return {"fanout": fanout, "flush_every_s": flush_every_s, "segments_mean": round(float(np.mean(counts)), 2),
                    "segments_max": int(max(counts)), "maintenance_cores": round(maintenance_s / seconds, 4),
                    "lookup_us_per_context": round(p50 / PER_BATCH * 1e6, 1), "feedback_documents": k}
        finally:
            ds.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="4:0.1,2:0.1,4:0.5", help="fanout:flush interval (s), comma-separated")
    parser.add_argument("--rate", type=int, default=100, help="feedback documents per second")
    parser.add_argument("--seconds", type=float, default=120.0, help="simulated time of arrivals")
    args = parser.parse_args()
    configs = [(int(f), float(e)) for f, e in (c.split(":") for c in args.configs.split(","))]
    docs = datasets.sharegpt_datastore(2000, 17000)
    base, feedback = docs[:12000], [d for d in docs[12000:] if d.shape[0] >= 2]
    config = SpeculatorConfig()
    params = lookup_options(config.draft, config.draft.max_depth, True)
    packed = [pack_tails(b, params.max_match) for b in contexts(40, np.random.default_rng(0))]
    rows = [run(f, e, args.rate, args.seconds, base, feedback, packed, params) for f, e in configs]
    print(json.dumps(stamped({"rate": args.rate, "seconds": args.seconds, "feedback_tokens": FEEDBACK_TOKENS,
                              "rows": rows})))


if __name__ == "__main__":
    main()
