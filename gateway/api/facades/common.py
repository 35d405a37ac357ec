"""What every façade shares: the provider's model id made a catalog alias, the translated
request validated and created through the gateway's own path, and a job looked up by id."""

from __future__ import annotations

import time
from typing import Any

from gateway.api.auth import Caller
from gateway.api.body import validate_create
from gateway.api.services import Services
from gateway.api.videos import create_video
from gateway.errors import APIError
from gateway.jobs.present import video_object
from gateway.jobs.tables import AttemptRow, JobRow
from gateway.schemas import Video


def catalog_model(services: Services, model: str | None, param: str = "model") -> str:
    """The catalog alias for a provider's model id (`wan2.6-i2v` -> `wan-2.6-i2v`); a catalog
    alias or `auto` as is. With `I2V_FACADE_ROUTING=rules`, a provider model id is routed by the
    rules instead of kept."""
    rules = services.rules()
    if not model:
        raise APIError(422, "missing_field", f"{param}: this field is required.", param)
    if model == "auto" or model in rules.models:
        return model
    alias = next((a for a, spec in rules.models.items() if spec.provider_model == model), None)
    if alias is None:
        known = sorted({s.provider_model for s in rules.models.values() if s.provider_model} | set(rules.models))
        raise APIError(
            422, "unknown_model", f"{param}: '{model}' is not in the catalog. Use one of: {', '.join(known)}.", param
        )
    return "auto" if services.settings.facade_routing == "rules" else alias


async def create(
    services: Services,
    owner: Caller,
    fields: dict[str, Any],
    key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[JobRow, bool]:
    """Validate the translated fields as the gateway's create request and make the job; `extra`
    is kept on the job's request (the caller's own ids, the shape its callback takes)."""
    t0 = time.perf_counter()
    # a provider refuses a duration its model does not make, so a façade does too
    fields = {"strict_duration": True, **{k: v for k, v in fields.items() if v is not None}}
    req = validate_create(fields, services)
    job, created, _ = await create_video(services, req, None, owner, key, t0, extra=extra)
    return job, created


async def find_job(
    services: Services, owner: Caller, video_id: str, *, key: str | None = None
) -> tuple[JobRow, list[AttemptRow]] | None:
    """The caller's job and its attempts; by id, or by the idempotency key it was created with
    (Kling's external_task_id). None when there is none the caller may see."""
    job, attempts = await services.store.get_with_attempts(video_id)
    if job is None and key is not None:
        found = await services.store.by_idempotency_key(str(owner), key)
        if found is not None:
            job, attempts = await services.store.get_with_attempts(found.id)
    if job is None or not owner.sees(job.owner):
        return None
    return job, attempts


async def find(services: Services, owner: Caller, video_id: str, base: str) -> Video | None:
    """The caller's job as the unified video object, or None."""
    found = await find_job(services, owner, video_id)
    return None if found is None else video_object(*found, services.links, base)


def headers_for(item: JobRow | Video) -> dict[str, str]:
    """What a provider's shape has no field for rides in headers: the gateway's video id, the
    model that serves it and, once known, the cost."""
    headers = {"x-i2v-video-id": item.id, "x-i2v-model": item.model}
    cost = (item.metrics or {}).get("cost_usd")
    if cost is not None:
        headers["x-i2v-cost-usd"] = str(cost)
    return headers
