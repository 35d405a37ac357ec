"""`/v1/experiments`: each experiment of the rules file, measured arm by arm against its control.

Per arm: jobs, success and error rates (Wilson intervals), latency percentiles, cost per clip
and per output second, quality aggregates and the human win rate of the arm's model in blind
votes; against the control arm: differences with 95% intervals (Newcombe for rates, Welch for
means) and how many more jobs would detect a success-rate difference of `mde`.
Experiments are the operator's: the figures aggregate every key's jobs and never list ids.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from litestar import get
from litestar.params import Parameter

from gateway.api.auth import Owner, Svc, owner_dependency
from gateway.api.comparisons import games
from gateway.api.openapi import errors
from gateway.errors import not_found
from gateway.jobs.tables import JobRow
from gateway.routing.catalog import Experiment, RulesFile
from gateway.routing.experiments import HOLDOUT, SHADOW
from gateway.stats import jobs_per_arm, newcombe, welch, wilson
from gateway.status import JobStatus

_QUALITY_MEANS = ("first_frame_ssim", "first_frame_psnr", "motion_magnitude", "flicker")


@get(
    "/v1/experiments",
    summary="Experiments in the rules file, with jobs per arm",
    dependencies=owner_dependency(),
    responses=errors(),
)
async def list_experiments(services: Svc, owner: Owner) -> dict[str, Any]:
    rules = services.rules()
    data = []
    for exp in rules.experiments:
        jobs = await services.experiments.jobs(exp.name)
        counts: dict[str, int] = defaultdict(int)
        for job in jobs:
            counts[job.route.get("arm") or ""] += 1
        data.append({**_describe(exp, rules), "jobs": dict(counts)})
    return {"object": "list", "data": data}


@get(
    "/v1/experiments/{name:str}",
    summary="One experiment measured arm by arm",
    dependencies=owner_dependency(),
    responses=errors(404, 422),
)
async def get_experiment(
    name: str,
    services: Svc,
    owner: Owner,
    mde: float = Parameter(default=0.05, gt=0, lt=1, description="Success-rate difference to size the test for."),
) -> dict[str, Any]:
    rules = services.rules()
    exp = rules.experiment(name)
    if exp is None:
        raise not_found("experiment", name, "name")
    jobs = await services.experiments.jobs(exp.name)
    human = games(await services.comparisons.votes(None))
    by_arm: dict[str, list[JobRow]] = defaultdict(list)
    for job in jobs:
        by_arm[job.route.get("arm") or ""].append(job)
    names = [a.name for a in exp.arms] + ([HOLDOUT] if exp.holdout else []) + ([SHADOW] if exp.shadow else [])
    measured = {n: _arm_stats(by_arm.get(n, []), _model_of(exp, n, rules), human) for n in names}
    control = measured[exp.control or exp.arms[0].name]
    arms = {}
    for n, (stats, samples) in measured.items():
        arms[n] = stats if n == exp.control else {**stats, "vs_control": _versus(samples, control, mde)}
    return {"object": "experiment", **_describe(exp, rules), "mde": mde, "arms": arms}


def _describe(exp: Experiment, rules: RulesFile) -> dict[str, Any]:
    return {
        "name": exp.name,
        "rule": exp.rule,
        "enabled": exp.enabled,
        "sticky": exp.sticky,
        "control": exp.control,
        "holdout": exp.holdout,
        "routes": {a.name: a.route for a in exp.arms},
        "weights": {a.name: a.weight for a in exp.arms},
        "shadow": exp.shadow.model_dump() if exp.shadow else None,
    }


def _model_of(exp: Experiment, arm: str, rules: RulesFile) -> str | None:
    """The model an arm stands for: its route's first; the rule's for the holdout."""
    if arm == SHADOW:
        return exp.shadow.model if exp.shadow else None
    if arm == HOLDOUT:
        rule = next(r for r in rules.rules if r.name == exp.rule)
        return rule.routes()[0][0]
    return next(a.route[0] for a in exp.arms if a.name == arm)


Samples = dict[str, Any]


def _arm_stats(
    jobs: list[JobRow], model: str | None, human: list[tuple[str, str, str]]
) -> tuple[dict[str, Any], Samples]:
    done = [j for j in jobs if j.status in (JobStatus.COMPLETED, JobStatus.FAILED)]
    ok = [j for j in done if j.status == JobStatus.COMPLETED]
    latency = [float(j.metrics["total_s"]) for j in ok if j.metrics.get("total_s") is not None]
    costs = [float(j.metrics.get("cost_usd") or 0.0) for j in done]
    seconds = sum(float(j.metrics.get("video_seconds") or 0.0) for j in ok)
    quality = [q for j in ok if isinstance(q := j.metrics.get("quality"), dict) and not q.get("pending")]
    conform = [q["camera_conformity"] for q in quality if q.get("camera_conformity") is not None]
    played = [(a, b, r) for a, b, r in human if model in (a, b)]
    won = 0.0
    for a, _, r in played:  # a tie is half a win
        won += 0.5 if r == "tie" else float((r == "a") == (a == model))
    stats = {
        "model": model,
        "jobs": len(jobs),
        "finished": len(done),
        "success_rate": wilson(len(ok), len(done)).model_dump(),
        "error_rate": wilson(len(done) - len(ok), len(done)).model_dump(),
        "latency_s": _percentiles(latency),
        "cost_per_clip_usd": round(sum(costs) / len(ok), 6) if ok else None,
        "cost_per_output_second_usd": round(sum(costs) / seconds, 6) if seconds else None,
        "quality": {
            **{k: _mean([q.get(k) for q in quality]) for k in _QUALITY_MEANS},
            "camera_conformity_rate": wilson(sum(conform), len(conform)).model_dump(),
            "measured": len(quality),
        },
        "human_win_rate": {**wilson(won, len(played)).model_dump(), "games": len(played)},
    }
    return stats, {"ok": len(ok), "done": len(done), "latency": latency, "costs": costs}


def _versus(a: Samples, control: tuple[dict[str, Any], Samples], mde: float) -> dict[str, Any]:
    c = control[1]
    p_control = control[0]["success_rate"]["value"]
    need = jobs_per_arm(p_control, -mde if p_control and p_control > 0.5 else mde) if p_control is not None else None
    return {
        "success_rate_diff": newcombe(a["ok"], a["done"], c["ok"], c["done"]).model_dump(),
        "latency_mean_diff_s": welch(a["latency"], c["latency"]).model_dump(),
        "cost_mean_diff_usd": welch(a["costs"], c["costs"]).model_dump(),
        "jobs_per_arm_for_mde": need,
        "more_jobs_needed": None if need is None else max(0, need - min(a["done"], c["done"])),
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(p50, 3), "p95": round(p95, 3), "p99": round(p99, 3), "mean": round(float(np.mean(values)), 3)}


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return round(float(np.mean(nums)), 4) if nums else None
