"""Replay with the outcome prefetch asking for bigger datastore tries (``max_nodes``), the rest
as ``sssd bench replay --dataset D --sharegpt-datastore --drafter sssd --budgets 4,16 --json``
(zero-wait). τ is deterministic: one run is the figure.

    .venv/bin/python bench/replay_prefetch_nodes.py --nodes 128 [--dataset mtbench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from client_sdk import runtime
from sssd.bench import datasets, llama3
from sssd.bench import replay as R


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, required=True, help="max_nodes of the prefetched tries (64: default)")
    parser.add_argument("--dataset", default="mtbench", choices=sorted(datasets.LOADERS))
    args = parser.parse_args()

    def options(c, depth, outcomes=False):
        p = runtime.lookup_options(c, depth, outcomes)
        return dataclasses.replace(p, max_nodes=args.nodes) if outcomes else p

    R.lookup_options = options  # what the replay's datastore source is asked with
    lookup = R.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE).lookup
    out = R.replay(datasets.LOADERS[args.dataset](), R.drafter_named("sssd"), [4, 16], lookup, progress=False,
                   label="sssd", prefetch_outcomes=True, vocab_size=llama3.VOCAB_SIZE)
    print(json.dumps({"nodes": args.nodes, "dataset": args.dataset,
                      "tau": {r["budget"]: r["tau"] for r in out["results"]}}))


if __name__ == "__main__":
    main()
