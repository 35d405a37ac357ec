"""DashScope's video-synthesis API (provider-protocols.md §3) at `/dashscope/api/v1`: a program
using the `dashscope` SDK or DashScope's HTTP examples sets its base URL to
`http://gateway/dashscope/api/v1` and keeps working. Task ids are the gateway's video ids."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, Router, get, post

from gateway.api.auth import Owner, Svc, owner_dependency
from gateway.api.body import decode_json
from gateway.api.errors import translated
from gateway.api.facades.common import catalog_model, create, find, headers_for
from gateway.api.links import base_of
from gateway.api.videos import cancel_job
from gateway.errors import APIError
from gateway.jobs.native import dashscope_task
from gateway.status import JobStatus

_CODES = {
    401: "InvalidApiKey",
    403: "AccessDenied",
    404: "InvalidParameter",
    408: "RequestTimeOut",
    413: "BadRequest.TooLarge",
    429: "Throttling.RateQuota",
}


def _error(exc: APIError) -> Response[Any]:
    code = _CODES.get(exc.status) or ("InternalError" if exc.status >= 500 else "InvalidParameter")
    if exc.code == "missing_field" and exc.param == "model":
        code = "BadRequest.EmptyModel"
    status = 400 if exc.status == 422 else exc.status
    body = {"request_id": str(uuid.uuid4()), "code": code, "message": exc.message}
    return Response(body, status_code=status, headers=exc.headers)


def _fields(body: Any, services: Svc) -> dict[str, Any]:
    """DashScope's `{model, input, parameters}` as the gateway's create fields."""
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The request body must be a JSON object.")
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        raise APIError(400, "missing_field", 'Required input "input" missing from request.', "input")
    image = inp.get("img_url")
    for item in inp.get("media") or []:  # wan2.7's media protocol
        if isinstance(item, dict) and item.get("type") == "first_frame":
            image = item.get("url")
    if not image:
        raise APIError(400, "missing_field", "Field required: input.img_url", "input.img_url")
    params = dict(body.get("parameters") or {})
    resolution = params.pop("resolution", None)
    return {
        "model": catalog_model(services, body.get("model")),
        "prompt": inp.get("prompt") or " ",
        "negative_prompt": inp.get("negative_prompt"),
        "image": image,
        "resolution": resolution.lower() if isinstance(resolution, str) else resolution,
        "seconds": params.pop("duration", None),
        "seed": params.pop("seed", None),
        "parameters": params or None,
    }


@post("/services/aigc/video-generation/video-synthesis", status_code=200)
async def video_synthesis(request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Any]:
    if request.headers.get("x-dashscope-async", "").lower() != "enable":
        raise APIError(403, "synchronous_call", "current user api does not support synchronous calls")
    fields = _fields(decode_json(await request.body(), "body"), services)
    job, _ = await create(services, owner, fields)
    body = {"output": {"task_status": "PENDING", "task_id": job.id}, "request_id": str(uuid.uuid4())}
    return Response(body, headers=headers_for(job))


@get("/tasks/{task_id:str}")
async def fetch_task(request: Request[Any, Any, Any], task_id: str, services: Svc, owner: Owner) -> Response[Any]:
    video = await find(services, owner, task_id, base_of(request))
    if video is None:  # as DashScope answers a task it does not know: 200, UNKNOWN
        return Response({"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
    return Response(dashscope_task(video), headers=headers_for(video))


@post("/tasks/{task_id:str}/cancel", status_code=200)
async def cancel_task(request: Request[Any, Any, Any], task_id: str, services: Svc, owner: Owner) -> dict[str, Any]:
    video = await find(services, owner, task_id, base_of(request))
    if video is None or video.status != JobStatus.QUEUED:  # DashScope cancels only PENDING tasks
        raise APIError(
            400,
            "unsupported_operation",
            "Failed to cancel the task, please confirm that the task status is PENDING.",
        )
    await cancel_job(services, task_id)
    return {"request_id": str(uuid.uuid4())}


def dashscope_router() -> Router:
    return Router(
        "/dashscope/api/v1",
        route_handlers=[video_synthesis, fetch_task, cancel_task],
        dependencies=owner_dependency(),
        exception_handlers=translated(_error),
        include_in_schema=False,  # the provider's own API reference describes it (docs/clients.md)
    )
