"""Zero-wait prefetch sizes itself by whether its answers come back in time."""

import pytest

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.outcomes import ON_TIME
from client_sdk.drafting.speculator import Speculator


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
    pacing = Speculator(SpeculatorConfig(outcomes=4)).pacing
    for arrived in arrivals:
        pacing.arrived(arrived)
    assert pacing.now == want


def test_prefetch_asks_the_datastore_before_it_learns():
    """The step's lookup goes out first; learning from the last verified step (its tokens'
    n-grams indexed, its calibration counted) runs after it, beside the lookup."""
    at_request = []

    class Source:
        def request(self, key, contexts):
            at_request.append((len(spec._unindexed), len(spec._to_learn)))

        def collect(self, key, contexts, deadline_s):
            return None

    spec = Speculator(SpeculatorConfig(), remote=Source())
    spec.start("r", [1, 2, 3, 4, 5, 6] * 20)
    tree = spec.draft(["r"])[0]
    assert len(tree) > 0  # the prompt repeats itself: something to verify and learn from
    spec.prefetch(["r"])
    spec.commit("r", [1, 2, 9], tree, tree.longest_match([1, 2]))
    spec.draft(["r"])
    spec.prefetch(["r"])
    assert at_request[-1] == (1, 1)  # asked while the committed step was still to be learned from
    assert (len(spec._unindexed), len(spec._to_learn)) == (0, 0)  # learned after
