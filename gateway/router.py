"""Plans a request: which catalog models may serve it, in which order, and at what shape.

This is the capability filter and fallback chain. Trait-driven rule matching plugs in at
`chain_for` (the rules issue); a chain that comes out empty is refused up front with the reasons.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from adapters.base import InputImage
from gateway.catalog import RESOLUTION_HEIGHT, ModelSpec, RulesFile
from gateway.errors import APIError
from gateway.schemas import CreateVideoRequest


class Shape(BaseModel):
    """What one model will be asked to make."""

    resolution: str
    seconds: int
    width: int
    height: int


class RoutePlan(BaseModel):
    rule: str | None
    candidates: list[str]
    dropped: dict[str, str] = Field(default_factory=dict)


def _even16(x: float) -> int:
    return max(16, round(x / 16.0) * 16)


def tier_of_size(width: int, height: int) -> str:
    short = min(width, height)
    return min(RESOLUTION_HEIGHT, key=lambda r: abs(RESOLUTION_HEIGHT[r] - short))


def shape_for(spec: ModelSpec, req: dict[str, Any], image_w: int, image_h: int) -> Shape:
    """The resolution, duration and pixel size this model gets for a stored request."""
    seconds = req.get("seconds") or spec.durations[0]
    if req.get("size"):
        w, h = (int(v) for v in req["size"].split("x"))
        return Shape(resolution=tier_of_size(w, h), seconds=seconds, width=w, height=h)
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


def estimate_cost(spec: ModelSpec, shape: Shape) -> float | None:
    price = spec.price_per_second(shape.resolution)
    return None if price is None else round(price * shape.seconds, 6)


def chain_for(req: CreateVideoRequest, rules: RulesFile) -> tuple[str | None, list[str]]:
    if req.model != "auto":
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
    rule = next((r for r in rules.rules if not r.when), None)
    return (rule.name if rule else None), rules.default_route


def _why_not(spec: ModelSpec, req: CreateVideoRequest, image: InputImage, available: set[str]) -> str | None:
    if spec.adapter not in available:
        return f"adapter '{spec.adapter}' is not configured"
    res = req.resolution or (tier_of_size(*map(int, req.size.split("x"))) if req.size else None)
    if res and res not in spec.resolutions:
        return f"resolution {res} not offered (has {', '.join(spec.resolutions)})"
    if req.seconds and req.seconds not in spec.durations:
        return f"{req.seconds} s not offered (has {', '.join(map(str, spec.durations))} s)"
    if req.aspect_ratio and spec.aspect_ratios is not None and req.aspect_ratio not in spec.aspect_ratios:
        return f"aspect ratio {req.aspect_ratio} not offered (has {', '.join(spec.aspect_ratios)})"
    if req.max_cost_usd is not None:
        shape = shape_for(spec, req.model_dump(), image.width, image.height)
        cost = estimate_cost(spec, shape)
        if cost is None:
            return "no price known, so max_cost_usd cannot be honoured"
        if cost > req.max_cost_usd:
            return f"costs ${cost:.2f} for {shape.seconds} s at {shape.resolution}, over max_cost_usd"
    return None


def plan(req: CreateVideoRequest, image: InputImage, rules: RulesFile, available: set[str]) -> RoutePlan:
    rule, chain = chain_for(req, rules)
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for alias in chain:
        reason = _why_not(rules.models[alias], req, image, available)
        if reason:
            dropped[alias] = reason
        else:
            kept.append(alias)
    if not kept:
        detail = "; ".join(f"{a}: {r}" for a, r in dropped.items())
        if all("not configured" in r for r in dropped.values()):
            raise APIError(
                503,
                "no_backend_configured",
                f"No configured backend can serve '{req.model}' ({detail}). "
                "Configure the adapter (docs/configuration.md) or run with --sandbox.",
                "model",
            )
        param = "seconds" if req.seconds else ("max_cost_usd" if req.max_cost_usd else "resolution")
        raise APIError(422, "no_model_fits", f"No model can serve this request: {detail}.", param)
    return RoutePlan(rule=rule, candidates=kept, dropped=dropped)
