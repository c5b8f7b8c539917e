"""How soon a zero-wait prefetch's answer is in: the SDK's ``DatastoreClient.lookup_future``
against a real ``sssd serve`` filled with the ShareGPT datastore, in the pattern of a decode
step (the serving simulation's): issue one lookup of ``--contexts`` contexts (real MT-Bench /
HumanEval suffixes of 4, 2 and 1 tokens), do ``--busy-ms`` of Python work (the CPU beside the
GPU), sleep until ``--step-ms`` have passed (the rest of the verify), then check whether the
answer is in, as the next step's drafting does, and wait for it.

    .venv/bin/python bench/lookup_arrival.py [--steps 150] [--rounds 3] [--conversations 15000]

Prints JSON: per round, the fraction of answers in at the check, and the issue time (until
``lookup_future`` returns) and arrival time (until its future is done) p50 / p90 in ms. It uses
only what older trees have too, so that it runs over an earlier commit with
``PYTHONPATH=<its tree>``; compare two builds taking turns.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.runtime import lookup_options
from client_sdk.transport.remote import DatastoreClient
from sssd.bench import datasets, llama3, serve_sim
from sssd.bench.provenance import stamped
from sssd.serve_process import start_server


def suffixes(cases: list[dict], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        r = np.asarray(cases[rng.integers(len(cases))]["response"], dtype=np.int32)
        k = (4, 2, 1)[rng.integers(3)]
        i = int(rng.integers(k, max(k + 1, r.shape[0])))
        out.append(r[max(0, i - k) : i])
    return out


def traffic(conversations: int) -> tuple[list[dict], list[np.ndarray], object]:
    """(decode cases, the serving simulation's datastore documents, the SDK's prefetch lookup
    parameters): what the lookup benches send and to what."""
    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    docs = datasets.sharegpt_datastore(2000, 2000 + conversations)
    config = SpeculatorConfig()
    return cases, docs, lookup_options(config.draft, config.draft.max_depth, True)


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def one_round(client: DatastoreClient, cases, options, args, rng) -> dict:
    issued, arrived, ready = [], [], 0
    for _ in range(args.steps):
        contexts = suffixes(cases, args.contexts, rng)
        t0 = time.perf_counter()
        fut = client.lookup_future(serve_sim.NAMESPACE, contexts, options, 5.0, True)
        issued.append(time.perf_counter() - t0)
        fut.add_done_callback(lambda _f, t0=t0: arrived.append(time.perf_counter() - t0))
        busy(args.busy_ms / 1e3)
        time.sleep(max(0.0, args.step_ms / 1e3 - (time.perf_counter() - t0)))
        ready += fut.done()
        fut.result()
        time.sleep(0.001)
    ms = lambda xs, q: round(float(np.percentile(xs, q)) * 1e3, 3)  # noqa: E731
    return {"in_at_check": round(ready / args.steps, 3), "issue_ms": {"p50": ms(issued, 50), "p90": ms(issued, 90)},
            "arrival_ms": {"p50": ms(arrived, 50), "p90": ms(arrived, 90)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contexts", type=int, default=80, help="contexts per lookup (batch 16 x 5: serve-sim's)")
    parser.add_argument("--busy-ms", type=float, default=1.5)
    parser.add_argument("--step-ms", type=float, default=6.8, help="Llama-3.1-8B at batch 16 on the H100 roofline")
    parser.add_argument("--conversations", type=int, default=15_000)
    args = parser.parse_args()
    cases, docs, options = traffic(args.conversations)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(str(Path(tmp) / "arrival.db"), "--synchronous", "NORMAL")
        try:
            serve_sim.fill_service(address, docs, llama3.VOCAB_SIZE, False, settle=False)
            with DatastoreClient(address, timeout_s=5) as client:
                grpc.channel_ready_future(client.channel).result(timeout=10)
                rounds = [one_round(client, cases, options, args, rng) for _ in range(args.rounds)]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(json.dumps(stamped({"rounds": rounds, "contexts": args.contexts, "busy_ms": args.busy_ms,
                              "step_ms": args.step_ms, "steps": args.steps}), indent=1))


if __name__ == "__main__":
    main()
