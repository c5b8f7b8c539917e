"""bench/selection_ceiling.py: the oracle chain through every candidate, on a datastore whose answers are known."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from sssd.bench import replay

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "selection_ceiling.py"
spec = importlib.util.spec_from_file_location("selection_ceiling", SCRIPT)
selection_ceiling = sys.modules.setdefault("selection_ceiling", importlib.util.module_from_spec(spec))
spec.loader.exec_module(selection_ceiling)

VOCAB = 128
CASE = {"prompt": [1, 2, 3, 4], "response": list(range(5, 41))}  # 36 tokens, none repeated


@pytest.mark.parametrize("docs, budget, tau, covered", [
    # the datastore holds the response: its trie (8 deep) gives a chain as long as the budget allows,
    # so every step accepts min(budget, 8) tokens and the bonus: 36 tokens in 8 steps, then in 4
    ([list(range(1, 50))], 4, 4.5, 1.0),
    ([list(range(1, 50))], 16, 9.0, 1.0),
    # nothing in the datastore or the request's own text predicts a token: one per step
    ([list(range(60, 100))], 4, 1.0, 0.0),
])
def test_the_ceiling_is_the_longest_chain_the_candidates_hold(docs, budget, tau, covered):
    store = replay.InProcessDatastore([np.asarray(d, dtype=np.int32) for d in docs], VOCAB)
    row = selection_ceiling.ceiling([CASE], store, budget, pool=64, zero_wait=False)
    assert (row["tau_ceiling"], row["covered"]) == (tau, covered)
    assert row["steps"] == round(36 / tau)


def test_the_ceiling_is_not_below_what_the_product_draft_gets():
    # the response half in the datastore: the product's own tree at the budget against the oracle's
    docs = [list(range(1, 20)) + [90, 91] + list(range(25, 50))]
    store = replay.InProcessDatastore([np.asarray(d, dtype=np.int32) for d in docs], VOCAB)
    for budget in (2, 4, 8):
        product = replay.Replayer(replay.drafter_named("sssd"), budget, store.lookup, prefetch_outcomes=False)
        try:
            product.run_case(CASE["prompt"], CASE["response"])
        finally:
            product.spec.close()
        row = selection_ceiling.ceiling([CASE], store, budget, pool=64, zero_wait=False)
        assert row["tau_ceiling"] >= product.result()["tau"]
