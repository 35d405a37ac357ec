"""`POST /v1/route/explain`: the routing decision for a request, shown instead of acted on."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from gateway.api.auth import Owner, Svc, owner_dependency
from gateway.api.body import image_of, parse_create
from gateway.api.openapi import errors
from gateway.api.responses import ExplainedCandidate, RouteExplanation
from gateway.routing.planner import check_model, estimate_cost, shape_for, shape_notes


@post(
    "/v1/route/explain",
    status_code=200,
    summary="Explain how a request would be routed, without creating a job",
    dependencies=owner_dependency(),
    responses=errors(400, 413, 415, 422, 503),
)
async def explain_route(request: Request[Any, Any, Any], services: Svc, owner: Owner) -> RouteExplanation:
    """Same body as POST /v1/videos. Returns the traits, the rule that matched (and the ones
    tried before it), every candidate with why it was kept or dropped, and the warnings."""
    req, upload = await parse_create(request, services)
    rules = services.rules()
    check_model(req, rules)
    image, notes = await image_of(req, upload, services)
    decision = await services.decide(req, image, rules, owner, refuse=False)
    route = decision.plan
    chain = [*route.candidates, *[a for a in route.dropped if a not in route.candidates]]
    candidates = []
    warnings = [*decision.warnings, *notes]
    for alias in chain:
        spec = rules.models[alias]
        shape = shape_for(spec, req.model_dump(), image.width, image.height)
        if route.candidates and alias == route.candidates[0]:
            warnings += shape_notes(alias, spec, req.model_dump(), shape)
        candidates.append(
            ExplainedCandidate(
                model=alias,
                adapter=spec.adapter,
                kept=alias in route.candidates,
                reason=route.dropped.get(alias, "can serve this request"),
                resolution=shape.resolution,
                seconds=shape.seconds,
                estimated_cost_usd=estimate_cost(spec, shape),
                typical_latency_s=spec.typical_latency_s,
                circuit=services.breakers.state(spec.adapter),
            )
        )
    return RouteExplanation(
        model=req.model,
        rule=route.rule,
        arm=route.arm,
        rules_tried=route.evaluated,
        traits=decision.traits,
        candidates=candidates,
        max_attempts=route.max_attempts,
        warnings=warnings,
    )
