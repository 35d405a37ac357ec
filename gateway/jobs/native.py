"""Videos in the providers' own task shapes, for the provider façades (gateway/api/facades) and
for the callbacks a façade's caller asked for: DashScope's task, Kling's task, MiniMax's query
answer and file, OpenRouter's video job. Pure functions of the unified video object."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.schemas import RESOLUTION_HEIGHT, Video
from gateway.status import JobStatus


def _first_submit(video: Video) -> float | None:
    return min((a.submitted_at for a in video.route.attempts if a.submitted_at), default=None)


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


# --- DashScope (provider-protocols.md §3) -------------------------------------------------------

DASHSCOPE_STATUS = {
    JobStatus.QUEUED: "PENDING",
    JobStatus.IN_PROGRESS: "RUNNING",
    JobStatus.COMPLETED: "SUCCEEDED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELLED: "CANCELED",
}


def _dashscope_time(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def dashscope_task(video: Video) -> dict[str, Any]:
    """`GET /api/v1/tasks/{id}`: `{request_id, output: {task_status, ...}, usage}`."""
    out: dict[str, Any] = {
        "task_id": video.id,
        "task_status": DASHSCOPE_STATUS[video.status],
        "submit_time": _dashscope_time(video.created_at),
        "orig_prompt": video.prompt,
    }
    if (started := _first_submit(video)) is not None:
        out["scheduled_time"] = _dashscope_time(started)
    if video.completed_at is not None:
        out["end_time"] = _dashscope_time(video.completed_at)
    body: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": out}
    if video.output is not None:
        out["video_url"] = video.output.url
        seconds = round(video.output.duration_s)
        body["usage"] = {
            "video_duration": seconds,
            "duration": seconds,
            "output_video_duration": seconds,
            "video_count": 1,
            "SR": min(RESOLUTION_HEIGHT.values(), key=lambda h: abs(h - min(video.output.width, video.output.height))),
        }
    if video.error is not None:
        out["code"] = "DataInspectionFailed" if video.error.code == "content_policy" else "InternalError"
        out["message"] = video.error.message
    return body


# --- Kling (§1) ---------------------------------------------------------------------------------

KLING_STATUS = {
    JobStatus.QUEUED: "submitted",
    JobStatus.IN_PROGRESS: "processing",
    JobStatus.COMPLETED: "succeed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "failed",
}


def kling_task(video: Video, external_task_id: str | None = None) -> dict[str, Any]:
    """The `data` of `GET /v1/videos/image2video/{id}` (and the flat body of Kling's callback)."""
    updated = video.completed_at or _first_submit(video) or video.created_at
    data: dict[str, Any] = {
        "task_id": video.id,
        "task_status": KLING_STATUS[video.status],
        "task_status_msg": (video.error.message if video.error else "")
        or ("cancelled" if video.status == JobStatus.CANCELLED else ""),
        "task_info": {"external_task_id": external_task_id} if external_task_id else {},
        "created_at": _ms(video.created_at),
        "updated_at": _ms(updated),
    }
    if video.output is not None:
        data["task_result"] = {
            "videos": [{"id": video.id, "url": video.output.url, "duration": f"{video.output.duration_s:.1f}"}]
        }
    return data


# --- MiniMax (§2) -------------------------------------------------------------------------------

MINIMAX_STATUS = {
    JobStatus.QUEUED: "Queueing",
    JobStatus.IN_PROGRESS: "Processing",
    JobStatus.COMPLETED: "Success",
    JobStatus.FAILED: "Fail",
    JobStatus.CANCELLED: "Fail",
}


def file_id(video_id: str) -> int:
    """MiniMax's file id for a video: the video id's hex digits as a number (ours are
    `vid_<24 hex>`), so it maps back without a table."""
    return int(video_id.split("_", 1)[1], 16)


def video_id_of(file: int | str) -> str | None:
    try:
        n = int(file)
    except (TypeError, ValueError):
        return None
    return f"vid_{n:024x}" if 0 <= n < 16**24 else None


def minimax_query(video: Video) -> dict[str, Any]:
    """`GET /v1/query/video_generation?task_id=`: file_id (a string here) once done."""
    body: dict[str, Any] = {"task_id": video.id, "status": MINIMAX_STATUS[video.status]}
    if video.output is not None:
        body.update(file_id=str(file_id(video.id)), video_width=video.output.width, video_height=video.output.height)
    if video.error is not None:
        body["error_message"] = video.error.message
    body["base_resp"] = {"status_code": 0, "status_msg": "success"}
    return body


def minimax_file(video: Video) -> dict[str, Any]:
    """`GET /v1/files/retrieve?file_id=`: file_id an integer here, as MiniMax sends it."""
    assert video.output is not None
    return {
        "file": {
            "file_id": file_id(video.id),
            "bytes": video.output.bytes,
            "created_at": video.completed_at or video.created_at,
            "filename": "output.mp4",
            "purpose": "video_generation",
            "download_url": video.output.url,
        },
        "base_resp": {"status_code": 0, "status_msg": "success"},
    }


# --- OpenRouter ---------------------------------------------------------------------------------

OPENROUTER_STATUS = {
    JobStatus.QUEUED: "pending",
    JobStatus.IN_PROGRESS: "in_progress",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def openrouter_job(video: Video, root: str = "") -> dict[str, Any]:
    """`GET /api/v1/videos/{id}`; `root`: the façade's absolute root for the content link."""
    body: dict[str, Any] = {
        "id": video.id,
        "polling_url": f"{root}/api/v1/videos/{video.id}",
        "status": OPENROUTER_STATUS[video.status],
        "generation_id": video.id,
    }
    if video.output is not None:
        body["unsigned_urls"] = [f"{root}/api/v1/videos/{video.id}/content?index=0"]
        body["urls"] = [video.output.url]  # signed: works without the key until it expires
    if "cost_usd" in video.metrics:
        body["usage"] = {"cost": video.metrics["cost_usd"], "is_byok": False}
    if video.error is not None:
        body["error"] = video.error.message
    return body


#: Callback bodies by the format a façade stored on the job (`callback_format`).
CALLBACKS: dict[str, Callable[[Video, dict[str, Any]], dict[str, Any]]] = {
    "kling": lambda v, req: kling_task(v, req.get("external_task_id")),
    "minimax": lambda v, req: minimax_query(v),
    "openrouter": lambda v, req: openrouter_job(v, req.get("callback_root", "")),
}
