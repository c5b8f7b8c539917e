"""The SGLang worker's hold on finished requests' Req objects is bounded (no SGLang needed)."""

from types import SimpleNamespace

import pytest

from sglang_integration.live_requests import LiveRequests


def reqs(*rids):
    return [SimpleNamespace(rid=r) for r in rids]


def run(live, batches):
    """Drive ``live`` as the worker does over decode batches (lists of rids): update before the
    draft, then departed() beside the GPU. Returns which rids it holds after each step."""
    prev, held = set(), []
    for batch in batches:
        live.update(reqs(*batch))
        current = set(batch)
        live.departed(current, prev - current)
        prev = current
        held.append(sorted(r for r in "abc" if r in live))
    return held


@pytest.mark.parametrize("batches, grace, held_after, forgotten", [
    # b leaves at step 2 and never finishes: dropped 2 steps later, at step 4
    ([["a", "b"], ["a"], ["a"], ["a"]], 2, [["a", "b"], ["a", "b"], ["a", "b"], ["a"]], 1),
    # ... with a longer grace, still held
    ([["a", "b"], ["a"], ["a"], ["a"]], 3, [["a", "b"]] * 4, 0),
    # ... with one step, dropped at the step after it left (its finish notice, processed a step
    # late, comes before that step)
    ([["a", "b"], ["a"], ["a"]], 1, [["a", "b"], ["a", "b"], ["a"]], 1),
    # b comes back before its old departure expires: kept
    ([["a", "b"], ["a"], ["a", "b"], ["a", "b"], ["a", "b"]], 2, [["a", "b"]] * 5, 0),
    # b leaves, comes back, leaves again at step 4: dropped 2 steps after that, at step 6
    ([["a", "b"], ["a"], ["a", "b"], ["a"], ["a"], ["a"]], 2, [["a", "b"]] * 5 + [["a"]], 1),
    # b leaves at 2 and c at 3, b is back at 3 and leaves again at 4: c is dropped at 6, b at 7
    # (b's newer departure does not hold up c's older one)
    ([["a", "b", "c"], ["a", "c"], ["a", "b"], ["a"], ["a"], ["a"], ["a"]], 3,
     [["a", "b", "c"]] * 5 + [["a", "b"], ["a"]], 2),
    # everything leaves (the batch ends): dropped together
    ([["a", "b"], [], [], []], 2, [["a", "b"], ["a", "b"], ["a", "b"], []], 2),
])
def test_a_request_that_left_the_batch_is_held_for_the_grace_steps_then_dropped(batches, grace, held_after, forgotten):
    live = LiveRequests(grace_steps=grace)
    assert run(live, batches) == held_after
    assert live.forgotten == forgotten


def test_a_finish_notice_after_the_request_left_still_finds_its_req_and_is_not_counted():
    live = LiveRequests(grace_steps=2)
    run(live, [["a", "b"], ["a"]])
    b = live.pop("b")
    assert b is not None and b.rid == "b" and "b" not in live
    assert live.pop("b") is None  # a second notice finds nothing
    live.departed({"a"}, set())
    live.departed({"a"}, set())
    assert live.forgotten == 0 and len(live) == 1


def test_clear_drops_and_counts_every_req():
    live = LiveRequests()
    run(live, [["a", "b", "c"], ["a"]])
    live.clear()
    assert len(live) == 0 and live.forgotten == 3
    run(live, [["a"], []])  # nothing left over from before the clear expires later
    assert live.forgotten == 3


def test_a_grace_below_one_step_is_refused():
    with pytest.raises(ValueError, match="grace_steps 0"):
        LiveRequests(grace_steps=0)
