"""A validated request, its image and its routing decision, made into a durable job row.

`POST /v1/videos` makes one (and, when an experiment puts the request in its shadow share, a
shadow job beside it); `POST /v1/comparisons` one per arm (with fallbacks off, so an arm is the
model it names).
"""

from __future__ import annotations

import time
from typing import Any

from adapters.base import InputImage, passthrough
from adapters.registry import BUILTIN, AdapterConfigError, load_class
from gateway.errors import APIError
from gateway.jobs.ids import new_id
from gateway.jobs.tables import JobRow
from gateway.routing.catalog import RulesFile
from gateway.routing.decide import Decision
from gateway.routing.experiments import SHADOW
from gateway.routing.planner import RoutePlan, Shape, estimate_cost, shape_for, shape_notes
from gateway.schemas import CreateVideoRequest
from gateway.status import JobStatus


def new_job(
    req: CreateVideoRequest,
    image: InputImage,
    decision: Decision,
    rules: RulesFile,
    owner: str,
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    comparison_id: str | None = None,
    fallbacks: bool = True,
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JobRow:
    """`notes`: warnings from reading the image (a crop to the size's aspect ratio); `extra`:
    kept on the stored request (what a provider façade needs back: the caller's ids, its
    callback format)."""
    route = decision.plan
    candidates = route.candidates if fallbacks else route.candidates[:1]
    first = rules.models[candidates[0]]
    req_dict = req.model_dump(
        mode="json",
        exclude={"image", "input_reference", "prompt", "model", "models", "fallbacks", "webhook_url", "metadata"},
    )
    req_dict["image"] = {"sha256": image.sha256, "mime": image.mime, "width": image.width, "height": image.height}
    shape = shape_for(first, req_dict, image.width, image.height)
    req_dict["shape"] = shape.model_dump()
    req_dict.update({k: v for k, v in (extra or {}).items() if v is not None})
    warnings = [*decision.warnings, *(notes or []), *shape_notes(candidates[0], first, req_dict, shape)]
    now = time.time()
    return JobRow(
        id=new_id("vid"),
        owner=str(owner),
        status=JobStatus.QUEUED,
        progress=0,
        requested_model=req.model,
        model=candidates[0],
        adapter=first.adapter,
        prompt=req.prompt,
        request=req_dict,
        route={
            "rule": route.rule,
            "arm": route.arm,
            "experiment": route.experiment,
            "traits": decision.traits,
            "candidates": candidates,
            "dropped": route.dropped,
            "max_attempts": route.max_attempts,
            "fallback_on": route.fallback_on,
        },
        metrics={},
        warnings=warnings,
        metadata_=req.metadata,
        webhook_url=req.webhook_url,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        cancel_requested=False,
        created_at=now,
        deadline_at=now + req.deadline_s if req.deadline_s else None,
        comparison_id=comparison_id,
        experiment=route.experiment,
        estimate_usd=estimate_cost(first, shape),
        input_sha256=image.sha256,
    )


def shadow_job(
    req: CreateVideoRequest, image: InputImage, decision: Decision, rules: RulesFile, owner: str, shadow_of: str
) -> tuple[JobRow, float] | None:
    """The shadow job of an experiment's request, with its estimated cost; None when the plan
    has no shadow. It is owned by `shadow:<owner>`, so no client list or lookup ever shows it."""
    plan = decision.plan
    if plan.shadow is None or plan.experiment is None:
        return None
    spec = rules.models[plan.shadow]
    shadow_req = req.model_copy(update={"model": plan.shadow, "webhook_url": None})
    shadow_plan = RoutePlan(rule=plan.rule, arm=SHADOW, experiment=plan.experiment, candidates=[plan.shadow])
    job = new_job(shadow_req, image, Decision(shadow_plan, decision.traits, []), rules, f"shadow:{owner}")
    job.route = {**job.route, "shadow_of": shadow_of}
    cost = estimate_cost(spec, Shape.model_validate(job.request["shape"])) or 0.0
    return job, cost


#: Provider fields the gateway sets from the request's own fields or the catalog; a `parameters`
#: entry can never override them (they decide what is made and what it costs).
OWNED = frozenset(
    {
        "model",
        "model_name",
        "prompt",
        "image",
        "img_url",
        "first_frame_image",
        "duration",
        "seconds",
        "resolution",
        "size",
        "aspect_ratio",
        "mode",
        "seed",
        "negative_prompt",
        "camera_control",
        "external_task_id",
        "callback_url",
    }
)


def check_parameters(req: CreateVideoRequest, candidates: list[str], rules: RulesFile, live: dict[str, object]) -> None:
    """Refuse `parameters` no candidate's adapter passes on, naming what each one allows."""
    given = set(req.parameters or {})
    if not given:
        return
    allowed = {rules.models[alias].adapter: _passes(rules.models[alias].adapter, live) for alias in candidates}
    unknown = sorted(given - set().union(*allowed.values()))
    if not unknown:
        return
    owned = [k for k in unknown if k in OWNED]
    lists = "; ".join(f"{a}: {', '.join(sorted(p)) or 'none'}" for a, p in allowed.items())
    why = (
        f"{', '.join(owned)} {'is' if len(owned) == 1 else 'are'} set by the gateway from the request's own fields "
        "and the catalog, never from parameters. "
        if owned
        else ""
    )
    raise APIError(
        422,
        "unknown_parameter",
        f"parameters: {', '.join(unknown)} not accepted. {why}Accepted by this request's backends: {lists}.",
        f"parameters.{unknown[0]}",
    )


def _passes(adapter: str, live: dict[str, object]) -> frozenset[str]:
    if adapter in live:
        return passthrough(live[adapter])
    if adapter in BUILTIN:  # run by a remote worker: the family's class says
        try:
            return passthrough(load_class(BUILTIN[adapter]))
        except AdapterConfigError:
            return frozenset()
    return frozenset()
