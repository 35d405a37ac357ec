"""OpenRouter's video API at `/api/v1/videos`: a program written for OpenRouter sets its base URL
to `http://gateway/api/v1` and keeps working (submit → poll `polling_url` → download). Model
ids are catalog aliases or provider model ids, with or without a `vendor/` prefix."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.params import Parameter
from litestar.response import Stream

from gateway.api.auth import Owner, Svc, owner_dependency
from gateway.api.body import decode_json
from gateway.api.errors import translated
from gateway.api.facades.common import catalog_model, create, find, headers_for
from gateway.api.links import base_of
from gateway.api.videos import stream_content
from gateway.errors import APIError
from gateway.jobs.native import openrouter_job


def _error(exc: APIError) -> Response[Any]:
    status = 400 if exc.status == 422 else exc.status
    body = {"error": {"code": status, "message": exc.message, "metadata": {"code": exc.code, "param": exc.param}}}
    return Response(body, status_code=status, headers=exc.headers)


def _first_frame(body: dict[str, Any]) -> str:
    for frame in body.get("frame_images") or []:
        if not isinstance(frame, dict):
            continue
        url = (frame.get("image_url") or {}).get("url")
        if frame.get("frame_type", "first_frame") == "first_frame" and url:
            return str(url)
        if frame.get("frame_type") == "last_frame":
            raise APIError(
                400, "unsupported_field", "frame_images: last_frame is not offered; send one first_frame image."
            )
    raise APIError(
        400,
        "missing_image",
        'frame_images: image-to-video needs [{"type": "image_url", "image_url": {"url": ...}, '
        '"frame_type": "first_frame"}].',
        "frame_images",
    )


def _fields(body: Any, services: Svc) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The request body must be a JSON object.")
    model = body.get("model")
    if isinstance(model, str) and "/" in model:
        model = model.split("/", 1)[1]
    options = ((body.get("provider") or {}).get("options") or {}) if isinstance(body.get("provider"), dict) else {}
    passed: dict[str, Any] = {}
    for value in options.values():  # {"<provider slug>": {passthrough}}
        if isinstance(value, dict):
            passed.update(value)
    return {
        "model": catalog_model(services, model),
        "prompt": body.get("prompt") or " ",
        "image": _first_frame(body),
        "seconds": body.get("duration"),
        "resolution": body.get("resolution"),
        "aspect_ratio": body.get("aspect_ratio"),
        "size": body.get("size"),
        "seed": body.get("seed"),
        "webhook_url": body.get("callback_url"),
        "parameters": passed or None,
    }


@post("/videos", status_code=202)
async def submit(request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Any]:
    fields = _fields(decode_json(await request.body(), "body"), services)
    job, _ = await create(
        services, owner, fields, extra={"callback_format": "openrouter", "callback_root": base_of(request)}
    )
    body = {"id": job.id, "polling_url": f"/api/v1/videos/{job.id}", "status": "pending"}
    return Response(body, status_code=202, headers=headers_for(job))


@get("/videos/models")
async def models(services: Svc) -> dict[str, Any]:
    rules = services.rules()
    data = [
        {
            "id": alias,
            "name": spec.description or alias,
            "provider_model": spec.provider_model,
            "supported_durations": spec.durations,
            "supported_resolutions": spec.resolutions,
            "supported_aspect_ratios": spec.aspect_ratios or [],
            "supported_frame_images": ["first_frame"],
            "supported_sizes": [],
            "generate_audio": False,
            "seed": True,
            "pricing_skus": {f"per_second_{res}": price for res, price in spec.usd_per_second.items()},
        }
        for alias, spec in rules.models.items()
    ]
    return {"data": data}


@get("/videos/{job_id:str}")
async def poll(request: Request[Any, Any, Any], job_id: str, services: Svc, owner: Owner) -> Response[Any]:
    base = base_of(request)
    video = await find(services, owner, job_id, base)
    if video is None:
        raise APIError(404, "not_found", f"Video job {job_id} not found.")
    return Response(openrouter_job(video, base), headers=headers_for(video))


@get("/videos/{job_id:str}/content", media_type="video/mp4")
async def content(
    request: Request[Any, Any, Any], job_id: str, services: Svc, owner: Owner, index: int = Parameter(default=0, ge=0)
) -> Response[bytes] | Stream:
    job = await services.store.get(job_id)
    if job is None or not owner.sees(job.owner) or index != 0:
        raise APIError(404, "not_found", f"Video job {job_id} has no output {index}.")
    return await stream_content(request, services, job)


def openrouter_router() -> Router:
    return Router(
        "/api/v1",
        route_handlers=[submit, models, poll, content],
        dependencies=owner_dependency(),
        exception_handlers=translated(_error),
        include_in_schema=False,  # the provider's own API reference describes it (docs/clients.md)
    )
