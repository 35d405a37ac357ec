"""Poll pacing: plain backoff until a model is known, then sparse early, dense near the usual end."""

from __future__ import annotations

from gateway.jobs.pacing import PollPacer


def test_an_unknown_model_gets_the_plain_backoff() -> None:
    p = PollPacer(first_s=2, max_s=15)
    assert [p.wait("m", 0, n) for n in range(6)] == [2, 3, 4.5, 6.75, 10.125, 15]


def test_a_learned_model_is_polled_densely_around_its_usual_end() -> None:
    p = PollPacer(first_s=2, max_s=15)
    p.observe("m", 10.0)
    assert p.wait("m", 0.0, 0) == 8.0  # nothing to see before two spreads (10 % of it) ahead of the end
    assert p.wait("m", 9.5, 1) == 0.3  # 3 % of it, around the end
    assert p.wait("m", 10.8, 5) == 0.3
    assert p.wait("m", 14.0, 20) == 1.0  # farther from it: a quarter of the distance
    later = [p.wait("m", t, 30) for t in (16, 20, 40, 100)]
    assert later == sorted(later) and later[-1] == 15  # later than usual: back off to the cap


def test_a_provider_whose_latency_varies_widely_is_not_polled_every_few_percent_of_it() -> None:
    """Kling-like: 60 to 180 s. Polls up to 240 s stay a few dozen: 25 here. Polling every 3 %
    of the latency over the whole window took 64; the pacing before that took 36 but looked
    at nothing before 0.8x the mean (a task done at 60 s was seen at ~101 s)."""
    p = PollPacer(first_s=2, max_s=60, weight=0.2)
    for seconds in [60, 180] * 20:
        p.observe("kling", float(seconds))
    t, polls = p.first("kling", 0.0), 0
    while t < 240:
        t += p.wait("kling", t, polls)
        polls += 1
    assert polls < 35, polls


def test_observations_move_the_estimate_slowly_and_fast_models_are_polled_at_the_floor() -> None:
    p = PollPacer(first_s=2, max_s=15)
    p.observe("m", 2.0)
    p.observe("m", 4.0)
    assert p.expected("m") == 2.4
    p.observe("fast", 0.5)
    assert p.wait("fast", 0.45, 3) == 0.1


def test_a_clockwork_provider_is_looked_at_once_or_twice_and_a_faster_one_is_followed_down() -> None:
    p = PollPacer(first_s=0.5, max_s=15)
    assert p.first("m", 0.0) == 0.0  # unknown: poll at once
    p.observe("m", 2.1)  # seen done 2.1 s after the submit
    for _ in range(30):  # done at 2.0 s each time, seen by a poll 0.1 s after the one before
        p.observe("m", 2.05, 0.1)
    mean, spread = p.expected("m"), p.spread("m")
    assert mean is not None and spread is not None and abs(mean - 2.0) < 0.01 and spread < 0.01
    start = p.first("m", 0.0)
    assert 1.7 < start < 2.0  # the first look lands just before the usual end ...
    assert p.wait("m", start, 1) == 0.1  # ... and the next one a dense step later
    for _ in range(30):  # the provider got faster: done 1.0 s after the submit, seen at the first look
        p.observe("m", p.first("m", 0.0), p.first("m", 0.0))
    assert p.expected("m") < 1.5  # type: ignore[operator]
    assert PollPacer(first_s=0.5, max_s=1.0, weight=1.0).first("x", 0.0) == 0.0
    capped = PollPacer(first_s=0.5, max_s=1.0)
    capped.observe("m", 5.0)
    assert capped.first("m", 0.0) == 1.0 and capped.first("m", 3.5) == 0.5  # slept in steps of at most max_s
