"""MiniMax video emulator (Hailuo and the I2V-01 series, Video-01-Live among them), per
provider-protocols.md §2.

Quirks kept: errors come back as HTTP 200 with `base_resp.status_code != 0`; statuses are
capitalized (`Preparing, Queueing, Processing, Success, Fail`); resolutions are uppercase
(`768P`); `file_id` is a string in the query answer and an integer in `/v1/files/retrieve`;
there is no cancel endpoint.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from typing import Any

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

HAILUO = {"768P": (6, 10), "1080P": (6,)}
MODELS: dict[str, tuple[dict[str, tuple[int, ...]], int]] = {
    "MiniMax-Hailuo-2.3": (HAILUO, 24),
    "MiniMax-Hailuo-2.3-Fast": (HAILUO, 24),
    "MiniMax-Hailuo-02": ({"512P": (6, 10), "768P": (6, 10), "1080P": (6,)}, 24),
    "I2V-01-live": ({"720P": (6,)}, 25),
    "I2V-01": ({"720P": (6,)}, 25),
    "I2V-01-Director": ({"720P": (6,)}, 25),
}


def _base(code: int = 0, msg: str = "success", **body: Any) -> Response[dict[str, Any]]:
    return Response({**body, "base_resp": {"status_code": code, "status_msg": msg}})


def _authorized(request: Request[Any, Any, Any], keys: list[str]) -> bool:
    header = request.headers.get("authorization", "")
    return header.startswith("Bearer ") and header[7:] in keys


async def _fault_response(book: TaskBook, fault: str | None) -> Response[Any] | None:
    if fault == "rate_limit":
        return _base(1002, "rate limit exceeded(RPM)", task_id="")
    if fault == "server_error":
        return Response(b"<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502, media_type="text/html")
    if fault == "timeout":
        await hang(book)
        return _base(1001, "request timeout", task_id="")
    if fault == "malformed":
        return MALFORMED
    if fault == "moderation_submit":
        return _base(1026, "input new_sensitive", task_id="")
    return None


def _image(value: Any) -> tuple[bytes, str] | str:
    """The first frame's bytes and format, or the error message MiniMax gives."""
    if not isinstance(value, str) or not value:
        return "invalid params, first_frame_image is required"
    if value.startswith("data:"):
        _, _, payload = value.partition(",")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return "invalid params, first_frame_image is not valid base64"
    else:
        return "invalid params, first_frame_image url cannot be fetched by this emulator; send a data URL"
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            fmt = img.format or ""
    except OSError:
        return "invalid params, first_frame_image cannot be decoded"
    if fmt not in ("JPEG", "PNG", "WEBP") or len(data) >= 20 * 2**20:
        return "invalid params, first_frame_image must be JPG/JPEG/PNG/WebP under 20MB"
    if min(w, h) <= 300 or not (2 / 5 <= w / h <= 5 / 2):
        return "invalid params, first_frame_image short side must be > 300px and aspect ratio within 2:5 to 5:2"
    return data, fmt


@post("/v1/video_generation", status_code=200)
async def create(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    with state.book.answering():
        return await _create(request, state)


async def _create(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    book.stats["submits"] += 1
    if not _authorized(request, state.api_keys):
        return _base(1004, "authorized error, token not match group", task_id="")
    fault = book.fault("submit")
    if answer := await _fault_response(book, fault):
        return answer
    try:
        body = await request.json()
    except Exception:
        return _base(2013, "invalid params, body is not valid json", task_id="")
    spec = MODELS.get(body.get("model", ""))
    if spec is None:
        return _base(2013, f"invalid params, model {body.get('model')!r} not supported", task_id="")
    table, fps = spec
    resolution = body.get("resolution", "768P" if "768P" in table else next(iter(table)))
    duration = body.get("duration", 6)
    if resolution not in table:
        return _base(
            2013, f"invalid params, resolution {resolution} not supported, use one of {'/'.join(table)}", task_id=""
        )
    if not isinstance(duration, int) or duration not in table[resolution]:
        return _base(2013, f"invalid params, duration {duration!r} not supported at {resolution}", task_id="")
    if len(body.get("prompt", "")) > 2000:
        return _base(2013, "invalid params, prompt too long", task_id="")
    image = _image(body.get("first_frame_image"))
    if isinstance(image, str):
        return _base(2013, image, task_id="")
    data = image[0]
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
    out_w, out_h = fit_size(w, h, int(resolution[:-1]))
    task = EmuTask(
        id=str(106916112212032 + book.next_seq()),
        created=time.time(),
        prompt=body.get("prompt", ""),
        image=data,
        width=out_w,
        height=out_h,
        seconds=duration,
        fps=book.config.fps or fps,
        fate=fault if fault in LATE_FAULTS else None,
        extra={"file_id": 361721749176519 + book.next_seq(), "callback_url": body.get("callback_url")},
    )
    book.add(task)
    if fault == SLOW_ANSWER:
        await hang(book)
    if fault in ACCEPTED_FAULTS:
        return await _fault_response(book, ACCEPTED_FAULTS[fault]) or MALFORMED
    return _base(task_id=task.id)


@get("/v1/query/video_generation")
async def query(task_id: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    book.stats["polls"] += 1
    if not _authorized(request, state.api_keys):
        return _base(1004, "authorized error, token not match group")
    if answer := await _fault_response(book, book.fault("poll")):
        return answer
    task = book.find(task_id)
    phase = book.looked_at(task) if task else "unknown"
    if task is None or phase == "unknown":
        return _base(2013, "invalid params, task not found", task_id=task_id, status="")
    if phase == "queued":
        half = time.time() - task.created < book.config.queue_s / 2
        return _base(task_id=task.id, status="Preparing" if half else "Queueing", file_id="")
    if phase == "running":
        return _base(task_id=task.id, status="Processing", file_id="")
    if phase == "failed":
        code, msg = (1027, "output new_sensitive") if task.fate == "moderation_late" else (1033, "system error")
        return Response(
            {
                "task_id": task.id,
                "status": "Fail",
                "file_id": "",
                "error_message": msg,
                "base_resp": {"status_code": code, "status_msg": msg},
            }
        )
    return _base(
        task_id=task.id,
        status="Success",
        file_id=str(task.extra["file_id"]),
        video_width=task.width,
        video_height=task.height,
    )


@get("/v1/files/retrieve")
async def retrieve(file_id: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    book: TaskBook = state.book
    if not _authorized(request, state.api_keys):
        return _base(1004, "authorized error, token not match group")
    task = next((t for t in book.tasks.values() if str(t.extra.get("file_id")) == file_id), None)
    if task is None or book.phase(task) != "succeeded":
        return _base(2013, "invalid params, file not found")
    url = result_url(request, task)
    return _base(
        file={
            "file_id": task.extra["file_id"],
            "bytes": 0,
            "created_at": int(time.time()),
            "filename": "output.mp4",
            "purpose": "video_generation",
            "download_url": url,
            "backup_download_url": url,
        }
    )


_CALLBACK_STATUS = {"queued": "processing", "running": "processing", "succeeded": "success", "failed": "failed"}


def _callback_body(book: TaskBook, task: EmuTask) -> dict[str, Any]:
    """§2.7: after the challenge, each status change as a query-shaped body (lowercase status)."""
    phase = book.phase(task)
    body = {
        "task_id": task.id,
        "status": _CALLBACK_STATUS.get(phase, "failed"),
        "base_resp": {"status_code": 0, "status_msg": "success"},
    }
    if phase == "succeeded":
        body["file_id"] = str(task.extra["file_id"])
    return body


def create_minimax_emulator(api_keys: list[str], config: EmulatorConfig | None = None) -> Litestar:
    config = config or EmulatorConfig()
    book = TaskBook(config)
    return Litestar(
        [create, query, retrieve, *SHARED_ROUTES],
        state=State({"book": book, "api_keys": list(api_keys)}),
        logging_config=None,
        **callback_hooks(book, _callback_body, challenge=True),
    )
