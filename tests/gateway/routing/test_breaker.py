"""Circuit breakers: open on consecutive failures or error rate, cool down, one half-open probe."""

from __future__ import annotations

from gateway.routing.breaker import Breakers, BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**kw) -> tuple[Breakers, Clock]:
    clock = Clock()
    return Breakers(BreakerSettings(**kw), clock=clock), clock


def test_consecutive_failures_open_then_a_probe_closes() -> None:
    b, clock = make(failures=3, cooldown_s=10)
    for _ in range(2):
        b.record("wan", False, "provider_unavailable")
    assert b.state("wan") == "closed" and b.allow("wan")
    b.record("wan", False, "timeout")
    assert b.state("wan") == "open" and not b.allow("wan")
    clock.t += 10
    assert b.state("wan") == "half_open"
    assert b.allow("wan") is True  # the one probe
    assert b.allow("wan") is False  # everyone else waits for its outcome
    b.record("wan", True)
    assert b.state("wan") == "closed" and b.allow("wan")


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    b, clock = make(failures=1, cooldown_s=5)
    b.record("kling", False, "provider_error")
    clock.t += 5
    assert b.allow("kling")
    b.record("kling", False, "provider_error")
    assert b.state("kling") == "open"
    clock.t += 4.9
    assert not b.allow("kling")


def test_error_rate_opens_even_without_a_streak() -> None:
    b, _ = make(failures=100, error_rate=0.5, min_calls=10, window_s=60)
    for i in range(10):
        b.record("hailuo", i % 2 == 0, None if i % 2 == 0 else "rate_limited")
    assert b.state("hailuo") == "open"


def test_client_faults_do_not_count_against_the_backend() -> None:
    b, _ = make(failures=2)
    for _ in range(5):
        b.record("wan", False, "content_policy")
        b.record("wan", False, "invalid_request")
    assert b.state("wan") == "closed"
    assert b.snapshot() == {}


def test_old_outcomes_leave_the_window() -> None:
    b, clock = make(failures=100, error_rate=0.5, min_calls=4, window_s=10)
    for _ in range(3):
        b.record("wan", False, "timeout")
    clock.t += 11
    b.record("wan", True)
    b.record("wan", False, "timeout")
    assert b.state("wan") == "closed"


def test_a_probe_ending_in_an_uncounted_code_still_ends_the_probe() -> None:
    """A content-policy refusal says the backend answered: the probe is over and the circuit
    closes (before the fix, the breaker stayed half-open and refused every job for ever)."""
    b, clock = make(failures=1, cooldown_s=5)
    b.record("wan", False, "timeout")
    clock.t += 5
    assert b.allow("wan")
    b.record("wan", False, "content_policy")
    assert b.state("wan") == "closed" and b.allow("wan")


def test_a_probe_that_never_reports_frees_the_half_open_slot_after_a_cooldown() -> None:
    """The probing job was cancelled or moved to another runner and reported nothing: after
    another cooldown a new probe is let through instead of the circuit staying shut."""
    b, clock = make(failures=1, cooldown_s=5)
    b.record("wan", False, "timeout")
    clock.t += 5
    assert b.allow("wan") and not b.allow("wan")
    clock.t += 4.9
    assert not b.allow("wan")
    clock.t += 0.2
    assert b.state("wan") == "half_open" and b.allow("wan")
