"""DashScope (Alibaba Model Studio) emulator for Wan image-to-video, per provider-protocols.md §3.

Quirks kept: `X-DashScope-Async: enable` is required; the image field is `input.img_url`;
errors are `{"request_id","code","message"}`; a missing or expired task is HTTP 200 with
`task_status: UNKNOWN`; a failure's `code`/`message` sit inside `output`; usage keys differ
between the wan2.5 and wan2.6 eras; only PENDING tasks can be cancelled; tasks are listed by
time window and model (how the gateway finds a task whose submit answer was lost).
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from PIL import Image

from adapters.emulators.common import (
    ACCEPTED_FAULTS,
    MALFORMED,
    SHARED_ROUTES,
    SLOW_ANSWER,
    EmulatorConfig,
    EmuTask,
    TaskBook,
    fit_size,
    hang,
    result_url,
)

# model -> (resolutions, durations, fps, usage era, prompt limit)
MODELS: dict[str, tuple[tuple[str, ...], tuple[int, ...], int, str, int]] = {
    "wan2.6-i2v": (("720P", "1080P"), (5, 10, 15), 24, "2.6", 1500),
    "wan2.6-i2v-flash": (("720P", "1080P"), tuple(range(2, 16)), 24, "2.6", 1500),
    "wan2.5-i2v-preview": (("480P", "720P", "1080P"), (5, 10), 24, "2.5", 2000),
    "wan2.2-i2v-flash": (("480P", "720P", "1080P"), (5,), 30, "2.5", 800),
    "wan2.2-i2v-plus": (("480P", "1080P"), (5,), 30, "2.5", 800),
    "wanx2.1-i2v-plus": (("720P",), (5,), 16, "2.5", 800),
    "wan2.1-i2v-plus": (("720P",), (5,), 16, "2.5", 800),
    "wanx2.1-i2v-turbo": (("480P", "720P"), (3, 4, 5), 16, "2.5", 800),
}
STATUS = {
    "queued": "PENDING",
    "running": "RUNNING",
    "succeeded": "SUCCEEDED",
    "failed": "FAILED",
    "cancelled": "CANCELED",
    "unknown": "UNKNOWN",
}


def _err(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(
        {"request_id": str(uuid.uuid4()), "code": code, "message": message}, status_code=status, headers=headers or {}
    )


def _auth(request: Request[Any, Any, Any], keys: list[str]) -> Response[dict[str, Any]] | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer ") or header[7:] not in keys:
        return _err(401, "InvalidApiKey", "Invalid API-key provided.")
    return None


async def _fault_response(book: TaskBook, fault: str | None) -> Response[Any] | None:
    """The immediate answer for a fault; late faults (and none) answer normally."""
    if fault == "rate_limit":
        return _err(
            429,
            "Throttling.RateQuota",
            "Requests rate limit exceeded, please try again later.",
            {"Retry-After": str(book.config.faults.retry_after_s)},
        )
    if fault == "server_error":
        return _err(500, "InternalError", "An internal error has occured, please try again later.")
    if fault == "timeout":
        await hang(book)
        return _err(504, "RequestTimeOut", "Request timed out, please try again later.")
    if fault == "malformed":
        return MALFORMED
    if fault == "moderation_submit":
        return _err(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
    return None


async def _load_image(img_url: str) -> bytes:
    if img_url.startswith("data:"):
        header, _, payload = img_url.partition(",")
        if ";base64" not in header:
            raise ValueError("img_url data URI must be base64")
        return base64.b64decode(payload, validate=True)
    if img_url.startswith(("http://", "https://")):
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(img_url)
            resp.raise_for_status()
            return resp.content
    raise ValueError("img_url must be an http(s) URL or a data URI")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@post("/api/v1/services/aigc/video-generation/video-synthesis", status_code=200)  # DashScope: 200, not 201
async def create_task(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    with state.book.answering():
        return await _create_task(request, state)


async def _create_task(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    book.stats["submits"] += 1
    if denied := _auth(request, state.api_keys):
        return denied
    if request.headers.get("x-dashscope-async") != "enable":
        return _err(403, "AccessDenied", "current user api does not support synchronous calls")
    fault = book.fault("submit")
    if answer := await _fault_response(book, fault):
        return answer
    try:
        body = await request.json()
    except Exception:
        return _err(400, "InvalidParameter", "The request body is not valid JSON.")
    if not isinstance(body, dict) or not body.get("model"):
        return _err(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    spec = MODELS.get(body["model"])
    if spec is None:
        return _err(400, "InvalidParameter", f"Model not exist: {body['model']}")
    resolutions, durations, fps, era, prompt_limit = spec
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        return _err(400, "BadRequest.EmptyInput", 'Required input "input" missing from request.')
    if "img_url" not in inp:
        return _err(400, "InvalidParameter", "Field required: input.img_url")
    params = body.get("parameters") or {}
    resolution = params.get("resolution", resolutions[-1])
    duration = params.get("duration", durations[0])
    if resolution not in resolutions:
        return _err(
            400,
            "InvalidParameter",
            f"The resolution {resolution} is not supported by {body['model']}; supported: {', '.join(resolutions)}.",
        )
    if not isinstance(duration, int) or duration not in durations:
        return _err(400, "InvalidParameter", f"The duration {duration!r} is not supported by {body['model']}.")
    seed = params.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed <= 2147483647):
        return _err(400, "InvalidParameter", "seed must be an integer in [0, 2147483647].")
    try:
        data = await _load_image(inp["img_url"])
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            fmt = img.format
    except (ValueError, binascii.Error, httpx.HTTPError, OSError) as exc:
        return _err(400, "InvalidURL", f"The img_url could not be read: {exc}")
    if fmt not in ("JPEG", "PNG", "BMP", "WEBP") or len(data) > 10 * 2**20:
        return _err(400, "InvalidParameter.DataInspection", "The image format or size is not supported.")
    if not (360 <= w <= 2000 and 360 <= h <= 2000):
        return _err(
            400,
            "InvalidParameter",
            f"The image size {w}x{h} is out of range; width and height must be between 360 and 2000 pixels.",
        )
    out_w, out_h = fit_size(w, h, int(resolution[:-1]))
    task = EmuTask(
        id=str(uuid.uuid4()),
        created=time.time(),
        prompt=str(inp.get("prompt", ""))[:prompt_limit],
        image=data,
        width=out_w,
        height=out_h,
        seconds=duration,
        fps=book.config.fps or fps,
        fate=fault,
        extra={"model": body["model"], "era": era, "resolution": resolution},
    )
    book.add(task)
    if fault == SLOW_ANSWER:
        await hang(book)
    if fault in ACCEPTED_FAULTS:
        return await _fault_response(book, ACCEPTED_FAULTS[fault]) or MALFORMED
    return Response({"output": {"task_status": "PENDING", "task_id": task.id}, "request_id": str(uuid.uuid4())})


@get("/api/v1/tasks/{task_id:str}")
async def get_task(task_id: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    book.stats["polls"] += 1
    if denied := _auth(request, state.api_keys):
        return denied
    if answer := await _fault_response(book, book.fault("poll")):
        return answer
    task = book.find(task_id)
    if task is None:
        return Response({"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
    phase = book.looked_at(task)
    out: dict[str, Any] = {"task_id": task.id, "task_status": STATUS[phase], "submit_time": _stamp(task.created)}
    body: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": out}
    if phase in ("running", "succeeded", "failed"):
        out["scheduled_time"] = _stamp(task.created + book.config.queue_s)
    if phase == "succeeded":
        out.update(
            end_time=_stamp(task.created + book.config.queue_s + book.config.run_s),
            video_url=result_url(request, task) + f"?Expires={int(time.time()) + 86400}",
            orig_prompt=task.prompt,
            actual_prompt=task.prompt,
        )
        sr = int(task.extra["resolution"][:-1])
        if task.extra["era"] == "2.6":
            body["usage"] = {
                "duration": task.seconds,
                "input_video_duration": 0,
                "output_video_duration": task.seconds,
                "video_count": 1,
                "SR": sr,
            }
        else:
            body["usage"] = {"video_duration": task.seconds, "video_count": 1, "video_ratio": "standard", "SR": sr}
    elif phase == "failed":
        if task.fate == "moderation_late":
            out.update(code="DataInspectionFailed", message="Output data may contain inappropriate content.")
        else:
            out.update(code="InternalError.Algo", message="An error occurred in the algorithm service.")
    elif phase == "unknown":
        body["output"] = {"task_id": task.id, "task_status": "UNKNOWN"}
    return Response(body)


def _parse_stamp(value: str | None) -> float | None:
    """The list's `start_time`/`end_time` form, YYYYMMDDhhmmss (the SDK's example), in the same
    clock as the task's `submit_time`."""
    return datetime.strptime(value, "%Y%m%d%H%M%S").timestamp() if value else None


@get("/api/v1/tasks")
async def list_tasks(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """`GET /api/v1/tasks?start_time&end_time&model_name&status&page_no&page_size` (§3.5, the
    SDK's `list`). The reference names the query, not the answer: `data` holds one summary per
    task (id, status, model, creation time), newest first."""
    book: TaskBook = state.book
    book.stats["lists"] += 1
    if denied := _auth(request, state.api_keys):
        return denied
    if answer := await _fault_response(book, book.fault("poll")):
        return answer
    q = request.query_params
    try:
        start, end = _parse_stamp(q.get("start_time")), _parse_stamp(q.get("end_time"))
    except ValueError:
        return _err(400, "InvalidParameter", "start_time and end_time must be of the form YYYYMMDDhhmmss.")
    try:
        page_no, page_size = int(q.get("page_no", 1)), int(q.get("page_size", 10))
    except ValueError:
        return _err(400, "InvalidParameter", "page_no and page_size must be integers.")
    if page_no < 1 or not 1 <= page_size <= 100:
        return _err(400, "InvalidParameter", "page_no must be >= 1 and page_size between 1 and 100.")
    rows = []
    for task in sorted(book.tasks.values(), key=lambda t: t.created, reverse=True):
        status = STATUS[book.phase(task)]
        if (start is not None and task.created < start) or (end is not None and task.created > end + 1):
            continue
        if q.get("model_name") not in (None, task.extra["model"]) or q.get("status") not in (None, status):
            continue
        model, created = task.extra["model"], _stamp(task.created)
        rows.append({"task_id": task.id, "status": status, "model_name": model, "gmt_create": created})
    page = rows[(page_no - 1) * page_size : page_no * page_size]
    return Response(
        {"request_id": str(uuid.uuid4()), "data": page, "page_no": page_no, "page_size": page_size, "total": len(rows)}
    )


@post("/api/v1/tasks/{task_id:str}/cancel", status_code=200)
async def cancel_task(task_id: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    book.stats["cancels"] += 1
    if denied := _auth(request, state.api_keys):
        return denied
    task = book.find(task_id)
    if task is None or book.phase(task) != "queued":
        return _err(
            400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the task is in PENDING status."
        )
    task.cancelled = True
    return Response({"request_id": str(uuid.uuid4())})


def create_wan_emulator(api_keys: list[str], config: EmulatorConfig | None = None) -> Litestar:
    config = config or EmulatorConfig()
    return Litestar(
        [create_task, list_tasks, get_task, cancel_task, *SHARED_ROUTES],
        state=State({"book": TaskBook(config), "api_keys": list(api_keys)}),
        logging_config=None,
    )
