"""A step's requests committed at once: the same state as one commit per request."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.drafting import local as local_module
from client_sdk.drafting.speculator import Speculator, SpeculatorConfig


def _run(prompts, steps, batched):
    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0))
    for i, p in enumerate(prompts):
        spec.start(i, p)
    for tokens in steps:
        ids = list(range(len(prompts)))
        trees = spec.draft(ids)
        accepted = [t.longest_match(np.asarray(tok[:-1], np.int32)) for t, tok in zip(trees, tokens)]
        if batched:
            spec.commit_many(ids, tokens, trees, accepted)
        else:
            for i, tok, tree, acc in zip(ids, tokens, trees, accepted):
                spec.commit(i, tok, tree, acc)
    return spec


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=15), min_size=n, max_size=n),
    st.lists(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=5), min_size=n, max_size=n), max_size=4))))
def test_commit_many_equals_one_commit_per_request(case):
    prompts, steps = case
    for small_batch in (0, local_module.SMALL_APPEND):  # the batched kernel, and one call per index
        with mock.patch.object(local_module, "SMALL_APPEND", small_batch):
            one, many = _run(prompts, steps, False), _run(prompts, steps, True)
        for i in range(len(prompts)):
            assert many._requests[i].index().tokens.tolist() == one._requests[i].index().tokens.tolist()
            assert many._requests[i].last == one._requests[i].last
        assert len(many._to_learn) == len(one._to_learn)
        np.testing.assert_array_equal(many.draft(list(range(len(prompts))))[0].tokens,
                                      one.draft(list(range(len(prompts))))[0].tokens)


def test_a_request_twice_in_one_commit_is_refused():
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3])
    with pytest.raises(ValueError, match="twice"):
        spec.commit_many(["r", "r"], [[4], [5]])
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3]  # nothing half-committed


def test_an_unknown_request_fails_the_commit_before_anything_changes():
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3])
    with pytest.raises(KeyError):
        spec.commit_many(["r", "gone"], [[4], [5]])
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3] and spec._requests["r"].last == 3
