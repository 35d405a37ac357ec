"""MiniMax's video_generation API (provider-protocols.md §2) at `/minimax`: a program written for
MiniMax sets its base URL to `http://gateway/minimax` and keeps working. As MiniMax does, errors
come back as HTTP 200 with `base_resp.status_code` set (auth too); task ids are the gateway's
video ids and file ids map to them."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post

from gateway.api.auth import Owner, Svc, owner_dependency
from gateway.api.body import decode_json
from gateway.api.errors import translated
from gateway.api.facades.common import catalog_model, create, find, headers_for
from gateway.api.links import base_of
from gateway.errors import APIError
from gateway.jobs.native import minimax_file, minimax_query, video_id_of

#: MiniMax's base_resp codes (§2.8) for the gateway's errors.
_BY_CODE = {"rate_limited": 1002, "budget_exceeded": 1008, "content_policy": 1026, "not_found": 1000}
_BY_STATUS = {401: 1004, 403: 1004, 429: 1002, 408: 1001}
_PASSED = ("prompt_optimizer", "fast_pretreatment", "aigc_watermark", "last_frame_image")


def _error(exc: APIError) -> Response[Any]:
    code = _BY_CODE.get(exc.code) or _BY_STATUS.get(exc.status) or (1024 if exc.status >= 500 else 2013)
    return Response({"task_id": "", "base_resp": {"status_code": code, "status_msg": exc.message}}, status_code=200)


def _fields(body: Any, services: Svc) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The request body must be a JSON object.")
    if not body.get("first_frame_image"):
        raise APIError(422, "missing_field", "first_frame_image: required for image-to-video.", "first_frame_image")
    resolution = body.get("resolution")
    return {
        "model": catalog_model(services, body.get("model")),
        "prompt": body.get("prompt") or " ",
        "image": body["first_frame_image"],
        "seconds": body.get("duration"),
        "resolution": resolution.lower() if isinstance(resolution, str) else resolution,
        "webhook_url": body.get("callback_url"),
        "parameters": {k: body[k] for k in _PASSED if k in body} or None,
    }


@post("/v1/video_generation", status_code=200)
async def video_generation(request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Any]:
    fields = _fields(decode_json(await request.body(), "body"), services)
    job, _ = await create(services, owner, fields, extra={"callback_format": "minimax"})
    body = {"task_id": job.id, "base_resp": {"status_code": 0, "status_msg": "success"}}
    return Response(body, headers=headers_for(job))


@get("/v1/query/video_generation")
async def query(request: Request[Any, Any, Any], services: Svc, owner: Owner, task_id: str) -> Response[Any]:
    video = await find(services, owner, task_id, base_of(request))
    if video is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    return Response(minimax_query(video), headers=headers_for(video))


@get("/v1/files/retrieve")
async def retrieve_file(request: Request[Any, Any, Any], services: Svc, owner: Owner, file_id: str) -> Response[Any]:
    video_id = video_id_of(file_id)
    video = await find(services, owner, video_id, base_of(request)) if video_id else None
    if video is None or video.output is None:
        raise APIError(404, "not_found", f"file {file_id} not found")
    return Response(minimax_file(video), headers=headers_for(video))


def minimax_router() -> Router:
    return Router(
        "/minimax",
        route_handlers=[video_generation, query, retrieve_file],
        dependencies=owner_dependency(),
        exception_handlers=translated(_error),
        include_in_schema=False,  # the provider's own API reference describes it (docs/clients.md)
    )
