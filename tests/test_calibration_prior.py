"""The shipped calibration prior (client_sdk/drafting/calibration_prior.npy) is what drafting
starts from; a missing file or one of another shape falls back to the flat prior with a warning,
never silently."""

import logging

import numpy as np
import pytest

from client_sdk.drafting import tree


def test_the_shipped_prior_loads_and_is_what_a_calibration_starts_from():
    table = tree.learned_prior(tree.LEARNED_PRIOR)
    assert table is not None and table.shape == (tree.MAX_SLOTS, tree.K_BUCKETS) + tree.PRIOR.shape
    assert table.min() >= 0.01 and table.max() <= 0.99
    assert np.array_equal(tree.default_prior(), table)


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "is missing: drafting starts from a flat calibration prior"),
        (np.full((2, 3, 5, 4), 0.5), "holds a (2, 3, 5, 4) calibration table, not"),
    ],
)
def test_a_prior_that_cannot_be_used_is_warned_about(tmp_path, caplog, content, message):
    path = tmp_path / "prior.npy"
    if content is not None:
        np.save(path, content)
    with caplog.at_level(logging.WARNING, logger="client_sdk.drafting.tree"):
        assert tree.learned_prior(path) is None
    assert message in caplog.text


def test_a_prior_of_the_right_shape_is_clipped_to_probabilities_a_draft_can_use(tmp_path):
    path = tmp_path / "prior.npy"
    shape = (tree.MAX_SLOTS, tree.K_BUCKETS) + tree.PRIOR.shape
    np.save(path, np.linspace(0.0, 1.0, int(np.prod(shape))).reshape(shape))
    table = tree.learned_prior(path)
    assert table.min() == 0.01 and table.max() == 0.99
