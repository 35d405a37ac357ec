"""Plans a request: which catalog models may serve it, in which order, and at what shape.

Rules are matched against the request's traits (first match wins), then every candidate that
cannot serve the request is dropped with the reason; a chain that comes out empty is refused
up front with those reasons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from adapters.base import InputImage
from gateway.errors import APIError
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RESOLUTION_HEIGHT, Arm, ModelSpec, Rule, RulesFile
from gateway.routing.conditions import matches
from gateway.routing.experiments import Assignment, assign, sticky_id
from gateway.schemas import CreateVideoRequest


class Shape(BaseModel):
    """What one model will be asked to make."""

    resolution: str
    seconds: int
    width: int
    height: int


class RoutePlan(BaseModel):
    rule: str | None
    arm: str | None = None
    experiment: str | None = Field(default=None, description="The experiment that assigned the arm.")
    shadow: str | None = Field(default=None, description="A shadow model to run too (measured, never returned).")
    candidates: list[str]
    dropped: dict[str, str] = Field(default_factory=dict)
    max_attempts: int | None = None
    fallback_on: list[str] = Field(default_factory=list)
    evaluated: list[dict[str, Any]] = Field(default_factory=list, description="Rules tried, in order.")


def _even16(x: float) -> int:
    return max(16, round(x / 16.0) * 16)


def tier_of_size(width: int, height: int) -> str:
    short = min(width, height)
    return min(RESOLUTION_HEIGHT, key=lambda r: abs(RESOLUTION_HEIGHT[r] - short))


def nearest_duration(spec: ModelSpec, seconds: int) -> int:
    """The model's clip length nearest to `seconds` (a tie goes to the longer: never less than
    halfway to what was asked)."""
    return min(spec.durations, key=lambda d: (abs(d - seconds), -d))


def nearest_resolution(spec: ModelSpec, short_side: int) -> str:
    """The model's resolution tier whose short side is nearest to `short_side` (a tie: the larger)."""
    return min(spec.resolutions, key=lambda r: (abs(RESOLUTION_HEIGHT[r] - short_side), -RESOLUTION_HEIGHT[r]))


def shape_for(spec: ModelSpec, req: dict[str, Any], image_w: int, image_h: int) -> Shape:
    """The resolution, duration and pixel size this model gets for a stored request: the model's
    nearest duration and, for a `size`, its nearest tier at the size's aspect ratio (the image
    was cropped to that ratio on the way in)."""
    seconds = nearest_duration(spec, req["seconds"]) if req.get("seconds") else spec.durations[0]
    if req.get("size"):
        w, h = (int(v) for v in req["size"].split("x"))
        resolution = nearest_resolution(spec, min(w, h))
        short = RESOLUTION_HEIGHT[resolution]
        if short != min(w, h):
            w, h = (_even16(short * w / h), short) if w >= h else (short, _even16(short * h / w))
        return Shape(resolution=resolution, seconds=seconds, width=w, height=h)
    resolution = req.get("resolution") or spec.resolutions[0]
    short = RESOLUTION_HEIGHT[resolution]
    if req.get("aspect_ratio"):
        a, b = (int(v) for v in req["aspect_ratio"].split(":"))
        ratio = a / b
    else:
        ratio = image_w / image_h
    if ratio >= 1:
        w, h = _even16(short * ratio), short
    else:
        w, h = short, _even16(short / ratio)
    return Shape(resolution=resolution, seconds=seconds, width=w, height=h)


def shape_notes(alias: str, spec: ModelSpec, req: dict[str, Any], shape: Shape) -> list[str]:
    """Warnings for a shape that is not what the request asked for (the nearest the model makes)."""
    notes = []
    if req.get("seconds") and shape.seconds != req["seconds"]:
        offered = ", ".join(map(str, spec.durations))
        notes.append(
            f"seconds: {alias} makes {offered} s clips, not {req['seconds']} s; making {shape.seconds} s "
            f"(the nearest). Set strict_duration: true to use only models that make {req['seconds']} s."
        )
    if req.get("size") and f"{shape.width}x{shape.height}" != req["size"]:
        offered = ", ".join(spec.resolutions)
        notes.append(
            f"size: {alias} does not make {req['size']} (it offers {offered}); making "
            f"{shape.width}x{shape.height} ({shape.resolution}, the nearest)."
        )
    return notes


def estimate_cost(spec: ModelSpec, shape: Shape) -> float | None:
    price = spec.price_per_second(shape.resolution)
    return None if price is None else round(price * shape.seconds, 6)


def chain_for(req: CreateVideoRequest, rules: RulesFile) -> tuple[str | None, list[str]]:
    """The chain for an explicit model (it bypasses the rules but keeps its fallbacks)."""
    if req.model not in rules.models:
        known = ", ".join(["auto", *rules.models])
        raise APIError(
            422,
            "unknown_model",
            f"model: '{req.model}' is not in the catalog. Use one of: {known} (GET /v1/models lists them).",
            "model",
        )
    spec = rules.models[req.model]
    return None, [req.model, *[f for f in spec.fallbacks if f != req.model]]


def check_model(req: CreateVideoRequest, rules: RulesFile) -> None:
    """Refuse an unknown model before the image is downloaded."""
    if req.model != "auto":
        chain_for(req, rules)


def _arm(rule: Rule, sticky: str) -> Arm:
    """Weighted, sticky arm choice: the same user (or key) always lands in the same arm."""
    arms = rule.split or []
    total = sum(a.weight for a in arms)
    point = int(hashlib.sha256(f"{rule.name}:{sticky}".encode()).hexdigest()[:12], 16) / 16**12 * total
    for arm in arms:
        point -= arm.weight
        if point < 0:
            return arm
    return arms[-1]


def _why_not(
    spec: ModelSpec, req: CreateVideoRequest, image: InputImage, available: set[str], breakers: Breakers | None
) -> str | None:
    if spec.adapter not in available:
        return f"adapter '{spec.adapter}' is not configured"
    if req.resolution and req.resolution not in spec.resolutions:
        return f"resolution {req.resolution} not offered (has {', '.join(spec.resolutions)})"
    if req.seconds and req.strict_duration and req.seconds not in spec.durations:
        return f"{req.seconds} s not offered (has {', '.join(map(str, spec.durations))} s; strict_duration is set)"
    if req.aspect_ratio and spec.aspect_ratios is not None and req.aspect_ratio not in spec.aspect_ratios:
        return f"aspect ratio {req.aspect_ratio} not offered (has {', '.join(spec.aspect_ratios)})"
    if req.max_cost_usd is not None:
        shape = shape_for(spec, req.model_dump(), image.width, image.height)
        cost = estimate_cost(spec, shape)
        if cost is None:
            return "no price known, so max_cost_usd cannot be honoured"
        if cost > req.max_cost_usd:
            return f"costs ${cost:.2f} for {shape.seconds} s at {shape.resolution}, over max_cost_usd"
    if breakers is not None and breakers.state(spec.adapter) == "open":
        return f"circuit open: adapter '{spec.adapter}' failed repeatedly and is cooling down"
    return None


def plan(
    req: CreateVideoRequest,
    image: InputImage,
    rules: RulesFile,
    available: set[str],
    traits: Mapping[str, Any] | None = None,
    breakers: Breakers | None = None,
    sticky: str = "",
    refuse: bool = True,
    owner: str = "",
) -> RoutePlan:
    """Match the rules (first match wins), pick the arm of a split or experiment, drop what cannot serve."""
    rule: Rule | None = None
    arm: Arm | None = None
    experiment: Assignment | None = None
    exp_name: str | None = None
    evaluated: list[dict[str, Any]] = []
    if req.model != "auto":
        _, chain = chain_for(req, rules)
    else:
        ctx = {
            "traits": traits if traits is not None else {},
            "request": req.model_dump(exclude={"image", "input_reference", "webhook_url"}),
            "metadata": req.metadata or {},
        }
        for candidate in rules.rules:
            hit = matches(candidate.when, ctx)
            evaluated.append({"rule": candidate.name, "matched": hit})
            if hit:
                rule = candidate
                break
        if rule is None:
            chain = list(rules.models)
        elif rule.split:
            arm = _arm(rule, sticky or req.user or "")
            chain = arm.route
        else:
            chain = rule.route
        exp = rules.experiment_for(rule.name) if rule else None
        if exp is not None:
            exp_name = exp.name
            experiment = assign(exp, sticky_id(exp, user=req.user, owner=owner, metadata=req.metadata))
            chain = experiment.route or chain
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for alias in chain:
        reason = _why_not(rules.models[alias], req, image, available, breakers)
        if reason:
            dropped[alias] = reason
        else:
            kept.append(alias)
    result = RoutePlan(
        rule=rule.name if rule else None,
        arm=experiment.arm if experiment else arm.name if arm else None,
        experiment=exp_name,
        shadow=experiment.shadow if experiment else None,
        candidates=kept,
        dropped=dropped,
        max_attempts=rule.max_attempts if rule else None,
        fallback_on=rule.fallback_on if rule else [],
        evaluated=evaluated,
    )
    if not kept and refuse:
        raise _refusal(req, dropped)
    return result


def _refusal(req: CreateVideoRequest, dropped: dict[str, str]) -> APIError:
    detail = "; ".join(f"{a}: {r}" for a, r in dropped.items())
    if all("not configured" in r for r in dropped.values()):
        return APIError(
            503,
            "no_backend_configured",
            f"No configured backend can serve '{req.model}' ({detail}). "
            "Configure the adapter (docs/configuration.md) or run with --sandbox.",
            "model",
        )
    if all("not configured" in r or "circuit open" in r for r in dropped.values()):
        return APIError(
            503,
            "backends_unavailable",
            f"Every backend that could serve this request is failing right now ({detail}). Retry in a minute.",
            "model",
        )
    param = "seconds" if req.seconds else "max_cost_usd" if req.max_cost_usd else "resolution"
    return APIError(422, "no_model_fits", f"No model can serve this request: {detail}.", param)
