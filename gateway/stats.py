"""Statistics behind comparisons and experiments: pure functions of plain numbers.

Bradley-Terry ratings come from `choix` (iterative Luce spectral ranking on the win-count
matrix, with a small prior rate `alpha` so that a model that won every vote still gets a finite
score); ties count half a win each way, the way public arenas count them (each decisive vote is
entered twice, a tie once in each direction).
Intervals are percentile bootstraps over votes with a fixed seed, so a page shows the same
interval for the same votes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import choix
import numpy as np
from pydantic import BaseModel

Outcome = Literal["a", "b", "tie"]
#: Points per natural-log unit of strength, as chess and arena ratings print them (400 per 10x odds).
SCALE = 400 / math.log(10)
BASE = 1000.0


class Rating(BaseModel):
    model: str
    score: float
    ci_low: float
    ci_high: float
    votes: int
    wins: float
    losses: float
    ties: int


def _counts(index: dict[str, int], games: Sequence[tuple[str, str, Outcome]], weights: np.ndarray) -> np.ndarray:
    """Win counts, counts[i, j] = wins of i over j: a decisive game adds 2, a tie 1 each way."""
    counts = np.zeros((len(index), len(index)))
    for (a, b, result), w in zip(games, weights, strict=True):
        i, j = index[a], index[b]
        if result == "a":
            counts[i, j] += 2 * w
        elif result == "b":
            counts[j, i] += 2 * w
        else:
            counts[i, j] += w
            counts[j, i] += w
    return counts


def _fit(counts: np.ndarray, alpha: float) -> np.ndarray:
    if not counts.any():
        return np.zeros(len(counts))
    params = np.asarray(choix.ilsr_pairwise_dense(counts, alpha=alpha))
    return params - params.mean()


def bradley_terry(
    games: Sequence[tuple[str, str, Outcome]], *, resamples: int = 500, alpha: float = 0.01, seed: int = 0
) -> list[Rating]:
    """Ratings (1000-centred, 400 points per 10x odds) with 95% bootstrap intervals, best first."""
    models = sorted({m for a, b, _ in games for m in (a, b)})
    if not models:
        return []
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    point = _fit(_counts(index, games, np.ones(len(games))), alpha)
    rng = np.random.default_rng(seed)
    boots = np.empty((resamples, n))
    for r in range(resamples):  # a resample of the games is a multinomial draw of their weights
        weights = rng.multinomial(len(games), np.full(len(games), 1 / len(games)))
        boots[r] = _fit(_counts(index, games, weights), alpha)
    low, high = np.percentile(boots, [2.5, 97.5], axis=0)
    tally = {m: [0, 0.0, 0.0, 0] for m in models}  # votes, wins, losses, ties
    for a, b, result in games:
        for m in (a, b):
            tally[m][0] += 1
        if result == "tie":
            tally[a][3] += 1
            tally[b][3] += 1
        else:
            winner, loser = (a, b) if result == "a" else (b, a)
            tally[winner][1] += 1
            tally[loser][2] += 1
    ratings = [
        Rating(
            model=m,
            score=round(BASE + SCALE * point[i], 1),
            ci_low=round(BASE + SCALE * low[i], 1),
            ci_high=round(BASE + SCALE * high[i], 1),
            votes=tally[m][0],
            wins=tally[m][1],
            losses=tally[m][2],
            ties=tally[m][3],
        )
        for i, m in enumerate(models)
    ]
    return sorted(ratings, key=lambda r: r.score, reverse=True)


# --- experiments: rates, means, and how many more jobs a difference needs ------------------------

Z95 = 1.959963984540054  # the normal quantile behind every 95% interval here


class Interval(BaseModel):
    value: float | None
    ci_low: float | None
    ci_high: float | None


def wilson(successes: float, n: int, z: float = Z95) -> Interval:
    """A rate with its Wilson score interval (sound near 0 and 1, unlike the Wald interval)."""
    if n <= 0:
        return Interval(value=None, ci_low=None, ci_high=None)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(value=p, ci_low=max(0.0, centre - half), ci_high=min(1.0, centre + half))


def newcombe(k1: float, n1: int, k2: float, n2: int, z: float = Z95) -> Interval:
    """p1 - p2 with Newcombe's hybrid score interval (method 10): built from the two Wilson
    intervals, so it stays inside [-1, 1] and behaves with small counts."""
    a, b = wilson(k1, n1, z), wilson(k2, n2, z)
    if a.value is None or b.value is None:
        return Interval(value=None, ci_low=None, ci_high=None)
    assert a.ci_low is not None and a.ci_high is not None and b.ci_low is not None and b.ci_high is not None
    p1, p2 = a.value, b.value
    d = p1 - p2
    low = d - math.sqrt((p1 - a.ci_low) ** 2 + (b.ci_high - p2) ** 2)
    high = d + math.sqrt((a.ci_high - p1) ** 2 + (p2 - b.ci_low) ** 2)
    return Interval(value=d, ci_low=low, ci_high=high)


def welch(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Interval:
    """mean(x) - mean(y) with Welch's t interval (unequal variances)."""
    from scipy import stats as sps

    if len(x) < 2 or len(y) < 2:
        return Interval(value=None, ci_low=None, ci_high=None)
    mx, my = float(np.mean(x)), float(np.mean(y))
    vx, vy = float(np.var(x, ddof=1)) / len(x), float(np.var(y, ddof=1)) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return Interval(value=mx - my, ci_low=mx - my, ci_high=mx - my)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    t = float(sps.t.ppf(0.5 + level / 2, df))
    return Interval(value=mx - my, ci_low=mx - my - t * se, ci_high=mx - my + t * se)


def jobs_per_arm(p_control: float, difference: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Jobs per arm for a two-sided test at `alpha` to detect a rate moving from `p_control` by
    `difference` with `power` (normal approximation on Cohen's h, as statsmodels' NormalIndPower)."""
    from scipy.stats import norm

    p2 = p_control + difference
    if not 0 <= p2 <= 1 or difference == 0:
        return None
    h = abs(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p_control)))
    # each arm's 2*asin(sqrt(p)) has variance 1/n, so their difference 2/n
    return math.ceil(2 * ((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / h) ** 2)
