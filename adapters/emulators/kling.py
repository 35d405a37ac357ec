"""Kling AI official API emulator (image-to-video), per provider-protocols.md §1.

Quirks kept: auth is a JWT (HS256 over {iss: access key, exp, nbf}) signed with the secret
key, checked for signature, issuer, nbf and exp (codes 1001-1004); `image` is a URL or raw
base64 *without* a `data:` prefix; `duration` is a string; timestamps are milliseconds; the
status is `succeed`; a moderation failure after acceptance is `failed` + `task_status_msg` with
HTTP 200 / code 0; a task can be queried by `external_task_id`; there is no cancel endpoint.
Motion control (`/v1/videos/motion-control`) takes `image_url` + `video_url`, no `duration`.

Over 300 lines on purpose: it is one protocol, read as one page beside §1 of the reference.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from typing import Any

import jwt
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from PIL import Image

from adapters.emulators.common import (
    ACCEPTED_FAULTS,
    LATE_FAULTS,
    MALFORMED,
    SHARED_ROUTES,
    SLOW_ANSWER,
    EmulatorConfig,
    EmuTask,
    TaskBook,
    callback_hooks,
    fit_size,
    hang,
    result_url,
)

# model -> {mode: output short side}; durations "5"/"10" ("3".."15" for v3)
MODELS: dict[str, dict[str, int]] = {
    "kling-v1": {"std": 720, "pro": 720},
    "kling-v1-5": {"std": 720, "pro": 1080},
    "kling-v1-6": {"std": 720, "pro": 1080},
    "kling-v2-master": {"": 720},
    "kling-v2-1": {"std": 720, "pro": 1080},
    "kling-v2-1-master": {"": 1080},
    "kling-v2-5-turbo": {"std": 720, "pro": 1080},
    "kling-v2-6": {"std": 720, "pro": 1080},
    "kling-v3": {"std": 720, "pro": 1080},
}
CAMERA_TYPES = {"simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"}
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
STATUS = {"queued": "submitted", "running": "processing", "succeeded": "succeed", "failed": "failed"}


def _err(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(
        {"code": code, "message": message, "request_id": str(uuid.uuid4())}, status_code=status, headers=headers or {}
    )


def _auth(request: Request[Any, Any, Any], keys: dict[str, str]) -> Response[dict[str, Any]] | None:
    header = request.headers.get("authorization", "")
    if not header:
        return _err(401, 1001, "Authorization is empty")
    if not header.startswith("Bearer "):
        return _err(401, 1002, "Authorization is invalid")
    token = header[7:]
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        if jwt.get_unverified_header(token).get("alg") != "HS256":
            return _err(401, 1002, "Authorization is invalid")
    except jwt.PyJWTError:
        return _err(401, 1002, "Authorization is invalid")
    secret = keys.get(str(claims.get("iss", "")))
    if secret is None:
        return _err(401, 1002, "Authorization is invalid")
    try:
        jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["iss", "exp", "nbf"]})
    except jwt.ImmatureSignatureError:
        return _err(401, 1003, "Authorization is not yet valid")
    except jwt.ExpiredSignatureError:
        return _err(401, 1004, "Authorization has expired")
    except jwt.PyJWTError:
        return _err(401, 1002, "Authorization is invalid")
    return None


async def _fault_response(book: TaskBook, fault: str | None) -> Response[Any] | None:
    if fault == "rate_limit":
        return _err(429, 1302, "API rate limit exceeded", {"Retry-After": str(book.config.faults.retry_after_s)})
    if fault == "server_error":
        return _err(500, 5000, "Server internal error")
    if fault == "timeout":
        await hang(book)
        return _err(504, 5002, "Server internal timeout")
    if fault == "malformed":
        return MALFORMED
    if fault == "moderation_submit":
        return _err(400, 1301, "Failure to pass the content security policy check")
    return None


def _image(value: Any, field: str) -> bytes | Response[dict[str, Any]]:
    if not isinstance(value, str) or not value:
        return _err(400, 1201, f"{field} is required")
    if value.startswith("data:"):
        return _err(400, 1201, f"{field}: invalid image, base64 must not include a data: prefix")
    if value.startswith(("http://", "https://")):
        return _err(400, 1201, f"{field}: this emulator cannot fetch URLs; send raw base64")
    try:
        data = base64.b64decode(value, validate=True)
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            fmt = img.format
    except (binascii.Error, ValueError, OSError):
        return _err(400, 1201, f"{field}: invalid image, cannot decode base64 as jpg/png")
    if fmt not in ("JPEG", "PNG") or len(data) > 10 * 2**20:
        return _err(400, 1201, f"{field}: only .jpg/.jpeg/.png up to 10MB are supported")
    if min(w, h) < 300 or not (1 / 2.5 <= w / h <= 2.5):
        return _err(400, 1201, f"{field}: width and height must be at least 300px, aspect ratio 1:2.5 to 2.5:1")
    return data


def _camera_error(camera: Any, model: str, mode: str, duration: str) -> str | None:
    if not isinstance(camera, dict) or camera.get("type") not in CAMERA_TYPES:
        return f"camera_control.type must be one of {', '.join(sorted(CAMERA_TYPES))}"
    if not (model == "kling-v1-5" and mode == "pro" and duration == "5"):
        return "camera_control is only supported by kling-v1-5 in pro mode at 5s"
    config = camera.get("config")
    if camera["type"] != "simple":
        return "camera_control.config must be empty unless type is simple" if config else None
    if not isinstance(config, dict):
        return "camera_control.config is required when type is simple"
    values = [config.get(axis, 0) for axis in CAMERA_AXES]
    if any(not isinstance(v, int | float) or not -10 <= v <= 10 for v in values):
        return "camera_control.config values must be numbers in [-10, 10]"
    if sum(1 for v in values if v) != 1:
        return "camera_control.config must have exactly one non-zero field"
    return None


def _task_body(book: TaskBook, task: EmuTask, request: Request[Any, Any, Any]) -> dict[str, Any]:
    phase = book.phase(task)
    data: dict[str, Any] = {
        "task_id": task.id,
        "task_status": STATUS[phase],
        "task_status_msg": "",
        "task_info": {"external_task_id": task.extra.get("external_task_id")}
        if task.extra.get("external_task_id")
        else {},
        "created_at": int(task.created * 1000),
        "updated_at": int(time.time() * 1000),
    }
    if phase == "succeeded":
        data["final_unit_deduction"] = "1" if task.seconds <= 5 else "2"
        data["watermark_info"] = {"enabled": False}
        data["task_result"] = {
            "videos": [
                {
                    "id": str(uuid.uuid4().int)[:18],
                    "url": result_url(request, task),
                    "duration": f"{task.seconds + 0.1:.1f}",
                }
            ]
        }
    elif phase == "failed":
        data["task_status_msg"] = (
            "Failure to pass the risk control system"
            if task.fate == "moderation_late"
            else "Task failed due to an internal error, please retry"
        )
    return {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}


async def _open_submit(
    request: Request[Any, Any, Any], state: State
) -> tuple[str | None, dict[str, Any]] | Response[Any]:
    """What every submit does first: count it, check the JWT, play a scripted fault, parse JSON."""
    book: TaskBook = state.book
    book.stats["submits"] += 1
    if denied := _auth(request, state.api_keys):
        return denied
    fault = book.fault("submit")
    if answer := await _fault_response(book, fault):
        return answer
    try:
        return fault, await request.json()
    except Exception:
        return _err(400, 1200, "Invalid request parameters: body is not JSON")


async def _new_task(
    book: TaskBook,
    request: Request[Any, Any, Any],
    body: dict[str, Any],
    image: bytes,
    fault: str | None,
    short_side: int,
    seconds: int,
    endpoint: str | None = None,
) -> Response[Any]:
    """Book an accepted task (unique external_task_id) and answer with its body."""
    external = body.get("external_task_id")
    if external and external in book.by_external:
        return _err(400, 1201, "external_task_id already exists")
    with Image.open(io.BytesIO(image)) as img:
        out_w, out_h = fit_size(*img.size, short_side)
    task = EmuTask(
        id=str(867283741759111202 + book.next_seq()),
        created=time.time(),
        prompt=body.get("prompt", ""),
        image=image,
        width=out_w,
        height=out_h,
        seconds=seconds,
        fps=book.config.fps or 24,
        fate=fault if fault in LATE_FAULTS else None,
        extra={
            "external_task_id": external,
            "endpoint": endpoint,
            "callback_url": body.get("callback_url"),
            "base_url": str(request.base_url).rstrip("/"),
        },
    )
    book.add(task, external_id=external)
    if fault == SLOW_ANSWER:
        await hang(book)
    if fault in ACCEPTED_FAULTS:
        return await _fault_response(book, ACCEPTED_FAULTS[fault]) or MALFORMED
    return Response(_task_body(book, task, request))


async def _query(task_id: str, request: Request[Any, Any, Any], state: State, endpoint: str | None) -> Response[Any]:
    """One poll. With `endpoint`, only tasks created there are found; the image2video query
    (endpoint None) answers for every task in the book."""
    book: TaskBook = state.book
    book.stats["polls"] += 1
    if denied := _auth(request, state.api_keys):
        return denied
    if answer := await _fault_response(book, book.fault("poll")):
        return answer
    task = book.find(task_id)
    wrong_path = endpoint is not None and task is not None and task.extra.get("endpoint") != endpoint
    if task is None or wrong_path or book.looked_at(task) == "unknown":
        return _err(404, 1203, "Task not found")
    return Response(_task_body(book, task, request))


@post("/v1/videos/image2video", status_code=200)
async def create(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    with state.book.answering():
        return await _create(request, state)


async def _create(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    opened = await _open_submit(request, state)
    if isinstance(opened, Response):
        return opened
    fault, body = opened
    model = body.get("model_name") or "kling-v1"
    if model not in MODELS:
        return _err(400, 1201, f"model_name: {model} is not supported")
    modes = MODELS[model]
    mode = body.get("mode", "std" if "std" in modes else "")
    if mode not in modes and not (mode == "std" and "" in modes):
        return _err(400, 1201, f"mode: {mode} is not supported by {model}")
    duration = body.get("duration", "5")
    allowed = {str(d) for d in range(3, 16)} if model == "kling-v3" else {"5", "10"}
    if not isinstance(duration, str) or duration not in allowed:
        return _err(400, 1201, f"duration: must be one of {sorted(allowed, key=int)} as a string")
    image = _image(body.get("image"), "image")
    if isinstance(image, Response):
        return image
    if "image_tail" in body:
        tail = _image(body["image_tail"], "image_tail")
        if isinstance(tail, Response):
            return tail
    for field in ("prompt", "negative_prompt"):
        if len(body.get(field) or "") > 2500:
            return _err(400, 1201, f"{field}: must be at most 2500 characters")
    groups = [
        bool(body.get("image_tail")),
        bool(body.get("static_mask") or body.get("dynamic_masks")),
        bool(body.get("camera_control")),
    ]
    if sum(groups) > 1:
        return _err(400, 1201, "image_tail, motion brush masks and camera_control cannot be used together")
    if body.get("camera_control") and (why := _camera_error(body["camera_control"], model, mode, duration)):
        return _err(400, 1201, why)
    return await _new_task(book, request, body, image, fault, modes.get(mode) or modes.get("") or 720, int(duration))


@get("/v1/videos/image2video/{task_id:str}")
async def query(task_id: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    return await _query(task_id, request, state, endpoint=None)


MOTION_MODELS = ("kling-v2-6", "kling-v3")


def _video_ref(value: Any) -> str | None:
    """Motion control's reference video: a URL or raw base64 (mp4/mov); None when valid."""
    if not isinstance(value, str) or not value:
        return "video_url is required"
    if value.startswith("data:"):
        return "video_url: base64 must not include a data: prefix"
    if value.startswith(("http://", "https://")):
        return None if value.lower().split("?")[0].endswith((".mp4", ".mov")) else "video_url: only mp4/mov"
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "video_url: not a URL and not valid base64"
    return None if data[4:8] == b"ftyp" else "video_url: the base64 is not an mp4/mov file"


@post("/v1/videos/motion-control", status_code=200)
async def create_motion(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Motion control (§1.7): the character in `image_url` performs the motion of `video_url`.
    No `duration`: the output follows the reference video (5 s here)."""
    book: TaskBook = state.book
    opened = await _open_submit(request, state)
    if isinstance(opened, Response):
        return opened
    fault, body = opened
    model = body.get("model_name", "kling-v2-6")
    if model not in MOTION_MODELS:
        return _err(400, 1201, f"model_name: {model} does not support motion control")
    if body.get("mode") not in ("std", "pro"):
        return _err(400, 1201, "mode: required, std or pro")
    if body.get("character_orientation", "image") not in ("image", "video"):
        return _err(400, 1201, "character_orientation: image or video")
    if "duration" in body:
        return _err(400, 1201, "duration: not supported by motion control; the output follows video_url")
    image = _image(body.get("image_url"), "image_url")
    if isinstance(image, Response):
        return image
    if why := _video_ref(body.get("video_url")):
        return _err(400, 1201, why)
    if len(body.get("prompt") or "") > 2500:
        return _err(400, 1201, "prompt: must be at most 2500 characters")
    short_side = 1080 if body["mode"] == "pro" else 720
    return await _new_task(book, request, body, image, fault, short_side, 5, endpoint="motion-control")


@get("/v1/videos/motion-control/{task_id:str}")
async def query_motion(task_id: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    return await _query(task_id, request, state, endpoint="motion-control")


def _callback_body(book: TaskBook, task: EmuTask) -> dict[str, Any]:
    """§1.6: the flat task object, POSTed on every status change."""
    phase = book.phase(task)
    body: dict[str, Any] = {
        "task_id": task.id,
        "task_status": STATUS.get(phase, "failed"),
        "task_status_msg": "",
        "task_info": {"external_task_id": task.extra.get("external_task_id")},
        "created_at": int(task.created * 1000),
        "updated_at": int(time.time() * 1000),
    }
    if phase == "succeeded":
        url = f"{task.extra['base_url']}/results/{task.token}/output.mp4"
        body["task_result"] = {"videos": [{"id": task.id, "url": url, "duration": f"{task.seconds + 0.1:.1f}"}]}
    return body


def create_kling_emulator(keys: dict[str, str], config: EmulatorConfig | None = None) -> Litestar:
    """`keys` maps access key -> secret key."""
    config = config or EmulatorConfig()
    book = TaskBook(config)
    return Litestar(
        [create, query, create_motion, query_motion, *SHARED_ROUTES],
        state=State({"book": book, "api_keys": dict(keys)}),
        logging_config=None,
        **callback_hooks(book, _callback_body),
    )
