"""The circuit breaker's states on an injected clock."""

import re

import pytest

from client_sdk.transport.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def opened(threshold: int = 2, cooldown: float = 1.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    breaker = CircuitBreaker(threshold=threshold, cooldown_s=cooldown, clock=clock)
    for _ in range(threshold):
        assert breaker.allow()
        breaker.failure()
    return breaker, clock


def test_failures_below_the_threshold_keep_it_closed_and_a_success_resets_them():
    breaker = CircuitBreaker(threshold=3, clock=Clock())
    for _ in range(2):
        breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()


@pytest.mark.parametrize("outcome, state_after, allowed_at_once, allowed_after_cooldown", [
    ("success", "closed", True, True),
    ("failure", "open", False, True),
    ("nothing", "open", False, True),  # a trial answered too late reports nothing: it lapses
])
def test_one_trial_after_the_cooldown_and_what_its_outcome_does(outcome, state_after, allowed_at_once,
                                                                 allowed_after_cooldown):
    breaker, clock = opened()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.0
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    if outcome == "success":
        breaker.success()
    elif outcome == "failure":
        breaker.failure()
    assert breaker.state == state_after and breaker.allow() == allowed_at_once
    clock.now += 1.0
    assert breaker.allow() == allowed_after_cooldown


def test_a_trial_that_never_reports_does_not_keep_the_breaker_open():
    breaker, clock = opened()
    for _ in range(5):  # each lapsed trial is followed by another, one per cooldown
        clock.now += 1.0
        assert breaker.allow()
        clock.now += 0.5
        assert not breaker.allow()
    breaker.success()
    assert breaker.state == "closed"


@pytest.mark.parametrize("kw, said", [
    ({"threshold": 0}, "threshold 0 must be >= 1"),  # (it began half-open: one call, then none until one succeeded)
    ({"threshold": 1.5}, "threshold 1.5 must be an integer, not float"),
    ({"cooldown_s": -1}, "cooldown_s -1 must be a finite number of seconds above 0"),
    ({"cooldown_s": float("nan")}, "cooldown_s nan must be a finite number of seconds above 0"),
])
def test_a_breaker_that_could_not_guard_is_a_one_line_error(kw, said):
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        CircuitBreaker(**kw)


@pytest.mark.parametrize("kw, said", [
    ({"namespace": "a b"}, "namespace 'a b' is no namespace name"),  # (every lookup refused, one by one)
    ({"timeout_s": -1}, "timeout_s -1 must be a finite number of seconds above 0"),  # (raised at the first lookup)
])
def test_a_remote_source_that_could_not_look_up_is_refused_when_made(kw, said):
    from client_sdk.transport.remote import DatastoreClient
    from client_sdk.transport.source import RemoteSource
    from sssd_wire.types import LookupParams

    client = DatastoreClient("127.0.0.1:1")
    try:
        with pytest.raises(ValueError, match=f"^{re.escape(said)}"):
            RemoteSource(**{"client": client, "namespace": "n", "options": LookupParams(), **kw})
    finally:
        client.close()
