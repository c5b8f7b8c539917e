"""What a request's admission costs the decode step that first sees it: ``BatchDrafter.admit``
(``Speculator.start``: its prompt and output made one token array, its own-text index built
here or, from 4,096 tokens, queued to a background thread), with the prompt held as
sglang 0.5.23 holds it (``array("q")``) and as a Python list.

    .venv/bin/python bench/admit_cost.py [--prompt-lengths 1024,4096,32768] [--rounds 30]

Prints JSON: per prompt length and container, the p50 µs of one admission. It runs over an
earlier commit with ``PYTHONPATH=<its tree>``.
"""

from __future__ import annotations

import argparse
import json
import time
from array import array

import numpy as np

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from sglang_integration.drafts import BatchDrafter, RequestView
from sssd.bench.provenance import stamped


def run(length: int, container: str, rounds: int) -> dict:
    drafter = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=8)), 9, 128_256)
    tokens = np.random.default_rng(0).integers(0, 128_256, length).tolist()
    prompt = array("q", tokens) if container == "array" else tokens
    times = []
    for i in range(rounds):
        view = RequestView(f"r{i}", prompt, array("q", [7]) if container == "array" else [7])
        t0 = time.perf_counter()
        drafter.admit(view)
        times.append((time.perf_counter() - t0) * 1e6)
        drafter.spec._requests[f"r{i}"].index(wait=True)  # a built index before the next admission
        drafter.drop([f"r{i}"])
    drafter.spec.close()
    return {"prompt_tokens": length, "container": container, "p50_us": round(float(np.median(times)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-lengths", default="1024,4096,32768")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rows = [run(n, c, args.rounds) for n in map(int, args.prompt_lengths.split(",")) for c in ("array", "list")]
    print(json.dumps(stamped({"rows": rows}), indent=1))


if __name__ == "__main__":
    main()
