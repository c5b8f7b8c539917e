"""Zero-wait prefetch sizes itself by whether its answers come back in time."""

import pytest

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import ON_TIME, Speculator


@pytest.mark.parametrize("arrivals, want", [
    ([], 4),
    ([False], 2),  # late: half the ends
    ([False, False], 1),
    ([False, False, False], 1),  # never below one
    ([False] + [True] * (ON_TIME - 1), 2),  # not yet enough answers in time
    ([False] + [True] * ON_TIME, 3),  # one more end per ON_TIME answers in time
    ([False] + [True] * (3 * ON_TIME), 4),  # back to the configured number, and no further
    ([False] + [True] * (ON_TIME - 1) + [False] + [True] * (ON_TIME - 1), 1),  # a late one resets the count
])
def test_outcomes_shrink_when_late_and_grow_back_when_in_time(arrivals, want):
    spec = Speculator(SpeculatorConfig(outcomes=4))
    for arrived in arrivals:
        spec._pace(arrived)
    assert spec.outcomes_now == want
