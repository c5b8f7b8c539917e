"""How far the draft's selection is from the best its candidates allow (a diagnostic, issue 16).

The replay (``sssd bench replay``'s Replayer: the real Speculator, the in-process ShareGPT
datastore) drafts every step with a budget of ``--pool`` nodes, which keeps every candidate the
sources propose (the request's own text, each datastore suffix's trie, the single-token table
and the trie cache, as the product builds them: same depth, same branching limit). An oracle
that knows the recorded response then verifies, at budget B, the longest path of that pool
that matches it, cut to B tokens: a chain of B nodes is the best any tree of B nodes could do
with these candidates. Its τ is the ceiling of selection at B; what the product's own tree at B
gives (``sssd bench replay``) is how much of it the selection takes.

``covered`` is the share of steps whose next token is somewhere in the pool's first level.
τ is deterministic (no timing enters it): one run is the figure.

    .venv/bin/python bench/selection_ceiling.py [--datasets mtbench,humaneval] [--budgets 4,8,16,32]
                                                [--pool 512] [--blocking-lookup] [--config remote_nodes=256,...]

``--config`` overrides DraftConfig fields for the pool (a wider pool than the product's: more
datastore samples and nodes, more own-text occurrences, more children per node), which bounds
what larger sources could give.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from client_sdk.types import DraftConfig
from sssd.bench import datasets, llama3, replay
from sssd.bench.provenance import stamped


def ceiling(cases: list[dict], store: replay.InProcessDatastore, budget: int, pool: int, zero_wait: bool,
            config: DraftConfig = DraftConfig()) -> dict:
    """τ of the oracle chain of at most ``budget`` tokens through a ``pool``-node draft, per step."""
    r = replay.Replayer(replay.drafter_named("sssd", config), pool, store.lookup, config, records=True,
                        prefetch_outcomes=zero_wait, vocab_size=llama3.VOCAB_SIZE if zero_wait else None,
                        verify_depth=budget)
    try:
        for case in cases:
            r.run_case(case["prompt"], case["response"])
    finally:
        r.spec.close()
    result = r.result()
    # a step accepts a first token exactly when the next token is one of the pool's first level
    return {"budget": budget, "tau_ceiling": result["tau"], "steps": result["steps"],
            "covered": result["accept_by_depth"][0],
            "pool_nodes_mean": round(float(np.mean([rec.draft for rec in r.records])), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="mtbench,humaneval")
    parser.add_argument("--budgets", default="4,8,16,32")
    parser.add_argument("--pool", type=int, default=512, help="the budget the pool is drafted with (every candidate)")
    parser.add_argument("--blocking-lookup", action="store_true", help="each step waits for its committed context's lookup")
    parser.add_argument("--config", default="", help="DraftConfig overrides for the pool: field=int,...")
    args = parser.parse_args()
    try:
        overrides = {k: int(v) for k, v in (item.split("=") for item in args.config.split(",") if item)}
        config = dataclasses.replace(DraftConfig(), **overrides)
    except (ValueError, TypeError) as e:
        parser.error(f"--config {args.config!r}: {e}")
    names = args.datasets.split(",")
    unknown = sorted(set(names) - set(datasets.LOADERS))
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(sorted(datasets.LOADERS))}")
    store = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    rows = [{"dataset": name,
             **ceiling(datasets.LOADERS[name](), store, int(b), args.pool, not args.blocking_lookup, config)}
            for name in names for b in args.budgets.split(",")]
    print(json.dumps(stamped({"pool": args.pool, "lookup": "blocking" if args.blocking_lookup else "zero-wait",
                              "config": overrides,
                              "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
