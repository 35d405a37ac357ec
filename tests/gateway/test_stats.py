"""Bradley-Terry ratings checked against an independent maximum-likelihood fit on fixed votes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from gateway.api.comparisons import games
from gateway.jobs.tables import VoteRow
from gateway.stats import BASE, SCALE, bradley_terry

GAMES = (
    [("kling", "wan", "a")] * 7
    + [("kling", "wan", "b")] * 3
    + [("wan", "hailuo", "a")] * 6
    + [("wan", "hailuo", "tie")] * 2
    + [("hailuo", "kling", "a")] * 2
    + [("hailuo", "kling", "b")] * 5
)


def _scipy_fit(games: list, alpha: float) -> dict[str, float]:
    """Plain maximum likelihood, ties as half a win each way (the arena convention)."""
    models = sorted({m for a, b, _ in games for m in (a, b)})
    idx = {m: i for i, m in enumerate(models)}

    def nll(theta: np.ndarray) -> float:
        total = alpha * float(np.sum(theta**2))  # 0: no prior
        for a, b, r in games:
            w = {"a": 1.0, "b": 0.0, "tie": 0.5}[r]
            p = expit(theta[idx[a]] - theta[idx[b]])
            total -= 2 * (w * math.log(p) + (1 - w) * math.log(1 - p))
        return total

    theta = minimize(nll, np.zeros(len(models)), method="BFGS", options={"gtol": 1e-10}).x
    theta -= theta.mean()
    return {m: BASE + SCALE * theta[i] for m, i in idx.items()}


def test_scores_match_an_independent_fit_and_intervals_hold_them() -> None:
    ratings = bradley_terry(GAMES, alpha=1e-6)  # no separation in these votes: the plain ML exists
    expected = _scipy_fit(GAMES, 0.0)
    assert [r.model for r in ratings] == ["kling", "wan", "hailuo"]
    for r in ratings:
        assert r.score == pytest.approx(expected[r.model], abs=0.5)
        assert r.ci_low < r.score < r.ci_high
    wan = next(r for r in ratings if r.model == "wan")
    assert (wan.votes, wan.wins, wan.losses, wan.ties) == (18, 9, 7, 2)


def test_more_votes_narrow_the_interval_and_ties_alone_rate_equal() -> None:
    few = bradley_terry(GAMES)[0]
    many = bradley_terry(GAMES * 8)[0]
    assert many.ci_high - many.ci_low < 0.6 * (few.ci_high - few.ci_low)
    even = bradley_terry([("a", "b", "tie")] * 4)
    assert even[0].score == pytest.approx(BASE) and even[1].score == pytest.approx(BASE)
    assert bradley_terry([]) == []


def test_a_best_of_three_vote_is_two_wins_and_ties_tie_every_pair() -> None:
    def vote(choice: str, models: list[str]) -> VoteRow:
        return VoteRow(choice=choice, models=models)

    assert games([vote("B", ["x", "y", "z"])]) == [("x", "y", "b"), ("y", "z", "a")]
    assert games([vote("both_bad", ["x", "y"])]) == [("x", "y", "tie")]
    assert games([vote("A", ["x", "x", "y"])]) == [("x", "y", "a")]  # the same model plays no game with itself


# --- experiment intervals against scipy and statsmodels on fixed data -----------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (47, 50), (500, 1000), (1, 1)])
def test_wilson_matches_statsmodels(k: int, n: int) -> None:
    from statsmodels.stats.proportion import proportion_confint

    from gateway.stats import wilson

    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    got = wilson(k, n)
    assert got.value == pytest.approx(k / n)
    assert (got.ci_low, got.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"), [(56, 70, 48, 80), (9, 10, 3, 10), (0, 20, 2, 20), (90, 100, 90, 100)]
)
def test_newcombe_matches_statsmodels(k1: int, n1: int, k2: int, n2: int) -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    from gateway.stats import newcombe

    low, high = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff", alpha=0.05)
    got = newcombe(k1, n1, k2, n2)
    assert got.value == pytest.approx(k1 / n1 - k2 / n2)
    assert (got.ci_low, got.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def test_welch_matches_scipy() -> None:
    from scipy.stats import ttest_ind

    from gateway.stats import welch

    rng = np.random.default_rng(7)
    x, y = rng.normal(40, 9, 23), rng.normal(35, 3, 41)
    ci = ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    got = welch(list(x), list(y))
    assert got.value == pytest.approx(x.mean() - y.mean())
    assert (got.ci_low, got.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert welch([1.0], [2.0, 3.0]).value is None


@pytest.mark.parametrize(("p", "d"), [(0.9, -0.05), (0.5, 0.1), (0.2, 0.02)])
def test_jobs_per_arm_matches_statsmodels_power(p: float, d: float) -> None:
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    from gateway.stats import jobs_per_arm

    n = NormalIndPower().solve_power(proportion_effectsize(p + d, p), alpha=0.05, power=0.8, ratio=1.0)
    assert jobs_per_arm(p, d) == pytest.approx(n, rel=0.01, abs=1)
    assert jobs_per_arm(0.99, 0.05) is None
