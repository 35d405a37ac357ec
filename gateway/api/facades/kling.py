"""Kling's image2video API (provider-protocols.md §1) at `/kling`: a program written for Kling
sets its base URL to `http://gateway/kling` and keeps working. Its access key is the gateway API
key (the JWT's `iss`); the JWT's expiry is checked, its signature is not (the key itself is the
credential, as a Bearer key is). Task ids are the gateway's video ids; `external_task_id` works
as Kling's does (unique per caller: a repeat returns the first task; queries accept it)."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.params import Parameter

from gateway.api.auth import Caller, Owner, Svc, authenticate
from gateway.api.body import decode_json
from gateway.api.errors import translated
from gateway.api.facades.common import catalog_model, create, find_job, headers_for
from gateway.api.links import base_of
from gateway.errors import APIError
from gateway.jobs.native import kling_task
from gateway.jobs.present import video_object

#: Kling's business codes for the gateway's errors (§1.8), by our code, then by HTTP status.
_BY_CODE = {
    "auth_empty": 1001,
    "auth_expired": 1004,
    "auth_not_yet_valid": 1003,
    "rate_limited": 1302,
    "budget_exceeded": 1102,
    "content_policy": 1301,
    "not_found": 1203,
    "unknown_model": 1203,
}
_BY_STATUS = {401: 1002, 403: 1103, 404: 1203, 429: 1302, 503: 5001}
_KEY_PREFIX = "kling:"  # external_task_id is kept as the job's idempotency key under this prefix
_PASSED = ("cfg_scale", "image_tail", "static_mask", "dynamic_masks", "sound", "watermark_info", "voice_list")


def _error(exc: APIError) -> Response[Any]:
    code = _BY_CODE.get(exc.code) or _BY_STATUS.get(exc.status) or (5000 if exc.status >= 500 else 1201)
    status = 400 if exc.status == 422 else exc.status
    return Response(
        {"code": code, "message": exc.message, "request_id": str(uuid.uuid4())}, status_code=status, headers=exc.headers
    )


async def kling_owner(request: Request[Any, Any, Any], services: Svc) -> Caller:
    """The gateway key is the JWT's `iss` (Kling's access key)."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        try:
            return await authenticate("", services)  # an open gateway takes anyone
        except APIError:
            raise APIError(401, "auth_empty", "Authorization is empty.") from None
    try:
        claims = jwt.decode(
            token,
            options={"verify_signature": False, "verify_exp": True, "verify_nbf": True, "require": ["iss"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise APIError(401, "auth_expired", "Authorization token has expired; sign a new JWT.") from None
    except jwt.ImmatureSignatureError:
        raise APIError(401, "auth_not_yet_valid", "Authorization token is not yet valid (nbf).") from None
    except jwt.InvalidTokenError as exc:
        raise APIError(401, "invalid_api_key", f"Authorization is invalid: {exc}.") from None
    return await authenticate(str(claims["iss"]), services)


def camera(control: Any) -> dict[str, Any] | None:
    """Kling's `camera_control` as the gateway's camera move (the inverse of the Kling adapter's)."""
    if not isinstance(control, dict):
        return None
    preset = {
        "down_back": {"type": "pull_back"},
        "forward_up": {"type": "push_in"},
        "right_turn_forward": {"type": "orbit", "direction": "right"},
        "left_turn_forward": {"type": "orbit", "direction": "left"},
    }.get(control.get("type", ""))
    if preset:
        return preset
    config = control.get("config") or {}
    axis, value = next(((k, v) for k, v in config.items() if v), (None, 0))
    if axis is None or not isinstance(value, int | float):
        raise APIError(400, "invalid_field", "camera_control.config: exactly one axis must be non-zero.", "camera")
    up, intensity = value > 0, min(1.0, abs(value) / 10)
    move = {
        "zoom": {"type": "zoom_in" if up else "zoom_out"},
        "pan": {"type": "pan", "direction": "right" if up else "left"},
        "tilt": {"type": "tilt", "direction": "up" if up else "down"},
        "roll": {"type": "roll", "direction": "cw" if up else "ccw"},
        "horizontal": {"type": "truck", "direction": "right" if up else "left"},
        "vertical": {"type": "pedestal", "direction": "up" if up else "down"},
    }.get(axis)
    if move is None:
        raise APIError(400, "invalid_field", f"camera_control.config: unknown axis '{axis}'.", "camera")
    return {**move, "intensity": intensity}


def _fields(body: Any, services: Svc) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "The request body must be a JSON object.")
    image = body.get("image")
    if not image:
        raise APIError(400, "missing_field", "image: the first frame is required (a URL or raw base64).", "image")
    if not str(image).startswith(("http://", "https://", "data:")):
        image = f"data:image/png;base64,{image}"  # Kling takes raw base64 without a data: prefix
    mode = body.get("mode")
    duration = body.get("duration")
    callback = body.get("callback_url")
    return {
        "model": catalog_model(services, body.get("model_name") or body.get("model") or "kling-v1", "model_name"),
        "prompt": body.get("prompt") or " ",
        "negative_prompt": body.get("negative_prompt"),
        "image": image,
        "seconds": duration,
        "resolution": {"pro": "1080p", "std": "720p"}.get(mode) if mode else None,
        "camera": camera(body.get("camera_control")),
        "webhook_url": callback,
        "parameters": {k: body[k] for k in _PASSED if k in body} or None,
    }


@post("/v1/videos/image2video", status_code=200)
async def image2video(request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Any]:
    body = decode_json(await request.body(), "body")
    fields = _fields(body, services)
    external = body.get("external_task_id")
    key = f"{_KEY_PREFIX}{external}" if external else None
    job, _ = await create(
        services, owner, fields, key, extra={"external_task_id": external, "callback_format": "kling"}
    )
    data = {
        "task_id": job.id,
        "task_status": "submitted",
        "task_info": {"external_task_id": external} if external else {},
        "created_at": int(job.created_at * 1000),
        "updated_at": int(job.created_at * 1000),
    }
    return Response(
        {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}, headers=headers_for(job)
    )


@get("/v1/videos/image2video/{task_id:str}")
async def query_task(request: Request[Any, Any, Any], task_id: str, services: Svc, owner: Owner) -> Response[Any]:
    found = await find_job(services, owner, task_id, key=f"{_KEY_PREFIX}{task_id}")
    if found is None:
        raise APIError(404, "not_found", f"task {task_id} not found.")
    job, attempts = found
    video = video_object(job, attempts, services.links, base_of(request))
    data = kling_task(video, job.request.get("external_task_id"))
    body = {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}
    return Response(body, headers=headers_for(video))


@get("/v1/videos/image2video")
async def list_tasks(
    request: Request[Any, Any, Any],
    services: Svc,
    owner: Owner,
    pageNum: int = Parameter(default=1, ge=1, le=1000),  # Kling's names, camelCase
    pageSize: int = Parameter(default=30, ge=1, le=500),
) -> dict[str, Any]:
    page_num, page_size = pageNum, pageSize
    after: str | None = None
    for page in range(1, page_num + 1):  # the store pages by cursor; Kling by page number
        rows, more = await services.store.list(None if owner.admin else owner, after=after, limit=page_size)
        if page < page_num:
            if not more:
                rows = []
                break
            after = rows[-1].id
    attempts = await services.store.attempts_for([r.id for r in rows])  # one query for the page
    base = base_of(request)
    data = [
        kling_task(video_object(r, attempts[r.id], services.links, base), r.request.get("external_task_id"))
        for r in rows
    ]
    return {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}


def kling_router() -> Router:
    return Router(
        "/kling",
        route_handlers=[image2video, query_task, list_tasks],
        dependencies={"owner": Provide(kling_owner)},
        exception_handlers=translated(_error),
        include_in_schema=False,  # the provider's own API reference describes it (docs/clients.md)
    )
