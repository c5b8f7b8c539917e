"""Zero-wait prefetch sizes itself by whether its answers come back in time."""

import pytest

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.outcomes import ON_TIME
from client_sdk.drafting.speculator import STEP_KEY, Speculator
from client_sdk.types import DraftConfig


LATE, IN_TIME = [False], [True]


@pytest.mark.parametrize("arrivals, want", [
    ([], (4, 128)),
    (LATE, (4, 64)),  # late: first the samples fall to remote_samples
    (LATE * 2, (2, 64)),  # then half the ends
    (LATE * 3, (1, 64)),
    (LATE * 4, (1, 64)),  # never below one
    (LATE * 2 + IN_TIME * (ON_TIME - 1), (2, 64)),  # not yet enough answers in time
    (LATE * 2 + IN_TIME * ON_TIME, (3, 64)),  # one more end per ON_TIME answers in time
    (LATE * 2 + IN_TIME * (2 * ON_TIME), (4, 64)),  # the ends come back first
    (LATE * 2 + IN_TIME * (3 * ON_TIME), (4, 128)),  # then the samples
    (LATE * 2 + IN_TIME * (5 * ON_TIME), (4, 128)),  # and no further
    (LATE * 3 + IN_TIME * (ON_TIME - 1) + LATE + IN_TIME * (ON_TIME - 1), (1, 64)),  # a late one resets the count
])
def test_the_ask_shrinks_when_late_and_grows_back_when_in_time(arrivals, want):
    pacing = Speculator(SpeculatorConfig(outcomes=4)).pacing
    for arrived in arrivals:
        pacing.arrived(arrived)
    assert (pacing.now, pacing.samples) == want


def test_without_more_samples_to_give_up_a_late_answer_halves_the_ends():
    config = SpeculatorConfig(outcomes=4, draft=DraftConfig(prefetch_samples=64, remote_samples=64))
    pacing = Speculator(config).pacing
    pacing.arrived(False)
    assert (pacing.now, pacing.samples) == (2, 64)


def test_each_prefetch_asks_the_paced_samples():
    """The step's lookup and the cache fills carry the sample budget the pacing holds now."""
    asked = []

    class Source:
        def request(self, key, contexts, samples=None):
            asked.append((key, samples))

        def collect(self, key, contexts, deadline_s):
            return None  # never in time

    spec = Speculator(SpeculatorConfig(), remote=Source())
    spec.start("r", [1, 2, 3, 4, 5, 6] * 20)
    spec.draft(["r"])
    spec.prefetch(["r"])
    first = list(asked)
    spec.draft(["r"])  # the answer did not come: late
    spec.prefetch(["r"])
    second = asked[len(first):]
    assert (STEP_KEY, 128) in first and all(s == 128 for _, s in first)
    assert (STEP_KEY, 64) in second and all(s == 64 for _, s in second)


def test_prefetch_asks_the_datastore_before_it_learns():
    """The step's lookup goes out first; learning from the last verified step (its tokens'
    n-grams indexed, its calibration counted) runs after it, beside the lookup."""
    at_request = []

    class Source:
        def request(self, key, contexts, samples=None):
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


def test_lookup_params_with_a_sample_budget():
    from sssd_wire.errors import InvalidArgument
    from sssd_wire.types import LookupParams

    base = LookupParams(depth=9)
    assert base.sampling(None) is base and base.sampling(64) is base
    assert base.sampling(128) == LookupParams(depth=9, sample_budget=128)
    with pytest.raises(InvalidArgument, match="sample_budget 0"):
        base.sampling(0)


@pytest.mark.parametrize("requests, now, cap, asking, ends", [
    (64, 4, 4096, 64, 4),  # 768 contexts at most: as paced
    (341, 4, 4096, 341, 4),  # 4,092: still fits
    (342, 4, 4096, 342, 3),  # 4,104 would not: one end fewer each
    (1000, 4, 4096, 1000, 1),
    (1366, 4, 4096, 1365, 1),  # one end each is 4,098: the last request asks none
    (5000, 2, 4096, 1365, 1),
    (10, 1, 24, 8, 1),
    (0, 4, 24, 0, 4),
])
def test_a_prefetch_fits_the_services_cap_on_contexts(requests, now, cap, asking, ends, caplog):
    """Pacing.within: ``now`` ends each while requests x ends x 3 suffix lengths fit the cap, fewer
    ends when not, then the first cap // 3 requests alone; a cut prefetch is counted, the first said."""
    from client_sdk.drafting.outcomes import Pacing

    pacing = Pacing(4)
    pacing.now = now
    drafted = list(range(requests))
    with caplog.at_level("WARNING"):
        for _ in range(2):
            asked, per_request = pacing.within(drafted, 3, cap)
            assert (asked, per_request) == (drafted[:asking], ends) and len(asked) * per_request * 3 <= cap
    cut = (asking, ends) != (requests, now)
    assert pacing.capped == 2 * cut and caplog.text.count("to stay within") == cut
