"""What handing a finished generation back costs the SGLang worker's scheduler thread, and what
a queued generation holds while the datastore is away: ``BatchDrafter.finished`` (the worker's
``note_request_finished``: ``Speculator.submit_generation``, then ``FeedbackSink.submit``), with
the output as sglang 0.5.23 holds it (``array("q")``). The sink's batch is never reached, so
nothing is sent and every generation stays queued, as while the datastore is away.

    .venv/bin/python bench/feedback_submit.py [--output-lengths 1024,8192,32768] [--rounds 30]

Prints JSON: per output length, the p50 µs of one ``finished`` call and the bytes the queue holds
per token (tracemalloc, over the rounds' generations). It runs over an earlier commit with
``PYTHONPATH=<its tree>``.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from array import array

import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from client_sdk.transport.feedback import FeedbackSink
from sglang_integration.drafts import BatchDrafter
from sssd.bench.provenance import stamped


class Away:
    """A datastore client the bench never calls (the sink's sender is never woken)."""

    def ingest(self, *args, **kwargs):
        raise AssertionError("the bench's sink sends nothing")


def run(length: int, rounds: int) -> dict:
    outputs = [array("q", np.random.default_rng(i).integers(0, 128_256, length).tolist()) for i in range(rounds)]
    times = []
    drafter, sink = _worker()
    for i, output in enumerate(outputs):
        t0 = time.perf_counter()
        drafter.finished(f"r{i}", output)
        times.append((time.perf_counter() - t0) * 1e6)
    sink._stop.set()  # (nothing is sent: close() would try)
    drafter, sink = _worker()  # the queue's memory apart: tracing allocations slows the calls down
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, output in enumerate(outputs):
        drafter.finished(f"r{i}", output)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    sink._stop.set()
    return {"output_tokens": length, "p50_us": round(float(np.median(times)), 1),
            "queued_bytes_per_token": round(held / (rounds * length), 2)}


def _worker() -> tuple[BatchDrafter, FeedbackSink]:
    sink = FeedbackSink(Away(), "bench", "w0", batch=10**9, interval_s=3600.0)
    return BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=8), feedback=sink), 9, 128_256), sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-lengths", default="1024,8192,32768")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rows = [run(n, args.rounds) for n in map(int, args.output_lengths.split(","))]
    print(json.dumps(stamped({"rows": rows}), indent=1))


if __name__ == "__main__":
    main()
