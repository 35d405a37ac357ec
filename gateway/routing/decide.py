"""One routing decision: the request's traits, the plan they select, and the advice to return.

Create and explain both call `decide`; it runs in a worker thread, since the face detector
(when a rule asks for `portrait`) is tens of milliseconds of CPU.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from adapters.base import InputImage
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile
from gateway.routing.planner import RoutePlan, plan
from gateway.schemas import CreateVideoRequest
from gateway.traits import Load, Traits, TraitSettings, prompt_warnings

SANDBOX_WARNING = (
    "sandbox: made by a local emulator of the {adapter} API (a camera move over your image), not by the real model"
)


class Decision(NamedTuple):
    plan: RoutePlan
    traits: dict[str, Any]
    warnings: list[str]


async def decide(
    req: CreateVideoRequest,
    image: InputImage,
    rules: RulesFile,
    *,
    load: Load,
    trait_settings: TraitSettings,
    available: set[str],
    breakers: Breakers,
    sticky: str,
    sandbox: bool = False,
    refuse: bool = True,
    owner: str = "",
) -> Decision:
    """Traits, rule match, candidates and advice for one request; `refuse` raises when nothing fits."""

    def work() -> Decision:
        traits = Traits(req, image, load, trait_settings, batch=req.batch_id is not None)
        route = plan(req, image, rules, available, traits, breakers, sticky=sticky, refuse=refuse, owner=owner)
        loops = bool(route.candidates) and rules.models[route.candidates[0]].loop
        warnings = prompt_warnings(req.prompt, traits, loops_natively=loops) + _route_warnings(
            req, route, rules, sandbox
        )
        return Decision(route, traits.computed(), warnings)

    return await asyncio.to_thread(work)


def _route_warnings(req: CreateVideoRequest, route: RoutePlan, rules: RulesFile, sandbox: bool) -> list[str]:
    warnings: list[str] = []
    if not route.candidates:
        return warnings
    if req.model != "auto" and req.model in route.dropped:
        warnings.append(
            f"{req.model} cannot serve this request ({route.dropped[req.model]}); "
            f"it goes to its fallback {route.candidates[0]}"
        )
    first = rules.models[route.candidates[0]]
    if req.camera is not None and not first.camera_control:
        warnings.append(
            f"camera: {route.candidates[0]} has no native camera control, so the move is sent in words; "
            "models with camera_control in GET /v1/models follow it exactly"
        )
    if sandbox:
        warnings.append(SANDBOX_WARNING.format(adapter=first.adapter))
    return warnings
