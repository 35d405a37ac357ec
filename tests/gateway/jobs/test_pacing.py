"""Poll pacing: plain backoff until a model is known, then sparse early, dense near the usual end."""

from __future__ import annotations

from gateway.jobs.pacing import PollPacer


def test_an_unknown_model_gets_the_plain_backoff() -> None:
    p = PollPacer(first_s=2, max_s=15)
    assert [p.wait("m", 0, n) for n in range(6)] == [2, 3, 4.5, 6.75, 10.125, 15]


def test_a_learned_model_is_polled_densely_around_its_usual_end() -> None:
    p = PollPacer(first_s=2, max_s=15)
    p.observe("m", 10.0)
    assert p.wait("m", 0.0, 0) == 8.0  # nothing to see before 80 % of the usual latency
    assert p.wait("m", 8.5, 1) == 0.3  # 3 % of it, around the end
    assert p.wait("m", 14.9, 20) == 0.3
    later = [p.wait("m", t, 30) for t in (16, 20, 40, 100)]
    assert later == sorted(later) and later[-1] == 15  # later than usual: back off to the cap


def test_observations_move_the_estimate_slowly_and_fast_models_are_polled_at_the_floor() -> None:
    p = PollPacer(first_s=2, max_s=15)
    p.observe("m", 2.0)
    p.observe("m", 4.0)
    assert p.expected("m") == 2.4
    p.observe("fast", 0.5)
    assert p.wait("fast", 0.45, 3) == 0.1
