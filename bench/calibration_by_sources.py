"""How well the draft's node scores predict acceptance, by which sources proposed the node (a diagnostic).

The replay (``sssd bench replay``'s Replayer: the real Speculator, the in-process ShareGPT
datastore) at one budget, in the product's zero-wait mode or with blocking lookups. Every
node the verification tested (its parent was accepted, or it hangs off the root) is counted
when the calibration learns from it: what its sources' calibration cells said (the largest
of them, as the merge combines them, from the table layer for its number of sources: the
learned table as it stood then, before the small tie-break by raw frequency) against whether
it was accepted. Groups: ``own`` (the request's own text alone), ``ds1``..``ds3`` (that many
datastore suffix lengths, and not the own text), ``own+dsN`` (both). Each group also by
predicted band (0-0.2, 0.2-0.4, ..., 0.8-1).

A group whose predicted mean is above its accepted rate is over-trusted against the groups
that are not: the merge ranks its nodes too high. τ is deterministic: one run is the figure.

    .venv/bin/python bench/calibration_by_sources.py [--dataset mtbench] [--budget 16] [--blocking-lookup]
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from client_sdk.drafting.tree import MAX_SLOTS, Calibration
from sssd.bench import datasets, llama3, replay
from sssd.bench.provenance import stamped


class RecordingCalibration(Calibration):
    """The product's calibration, also keeping (group, predicted, accepted) sums of what it learns from."""

    def __init__(self, prior=None) -> None:
        super().__init__(prior)
        self.groups: dict = collections.defaultdict(lambda: [0.0, 0.0, 0])

    def _count(self, node_cells: np.ndarray, accepted: np.ndarray) -> None:
        present, layer, cells = self.layers_of(node_cells)
        rows = layer[:, None] * MAX_SLOTS + cells[..., 0]
        values = np.where(present, self.table[rows, cells[..., 1], cells[..., 2], cells[..., 3]], 0.0)
        predicted = values.max(axis=1)
        remote = present[:, 1:].sum(axis=1)
        for own, n, p, hit in zip(present[:, 0].tolist(), remote.tolist(), predicted.tolist(), accepted.tolist()):
            name = "+".join((["own"] if own else []) + ([f"ds{n}"] if n else []))
            for key in (name, (name, min(int(p * 5), 4))):
                g = self.groups[key]
                g[0] += p
                g[1] += float(hit)
                g[2] += 1
        super()._count(node_cells, accepted)


def _row(key, sums) -> dict:
    p, h, n = sums
    return {"group": key, "nodes": n, "predicted": round(p / n, 4), "accepted": round(h / n, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mtbench", choices=sorted(datasets.LOADERS))
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--blocking-lookup", action="store_true", help="each step waits for its committed context's lookup")
    args = parser.parse_args()
    store = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    zero_wait = not args.blocking_lookup
    r = replay.Replayer(replay.drafter_named("sssd"), args.budget, store.lookup, prefetch_outcomes=zero_wait,
                        vocab_size=llama3.VOCAB_SIZE if zero_wait else None, calibration=RecordingCalibration())
    try:
        for case in datasets.LOADERS[args.dataset]():
            r.run_case(case["prompt"], case["response"])
    finally:
        r.spec.close()
    groups = r.calibration.groups
    whole = sorted(k for k in groups if isinstance(k, str))
    banded = sorted(k for k in groups if not isinstance(k, str))
    print(json.dumps(stamped({
        "dataset": args.dataset, "budget": args.budget, "lookup": "zero-wait" if zero_wait else "blocking",
        "tau": r.result()["tau"], "groups": [_row(k, groups[k]) for k in whole],
        "bands": [{**_row(k[0], groups[k]), "band": f"{k[1] / 5:.1f}-{(k[1] + 1) / 5:.1f}"} for k in banded],
    }), indent=1))


if __name__ == "__main__":
    main()
