"""Wan image-to-video through Alibaba DashScope's async task API (provider-protocols.md §3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx

from adapters.base import (
    FoundTask,
    ProviderError,
    ProviderErrorInfo,
    ProviderRequest,
    ProviderStatus,
    ProviderTask,
    VideoSource,
)
from adapters.http import ProviderHTTP, http_error, json_body
from media.image import data_uri, fitted

DEFAULT_BASE_URL = "https://dashscope-intl.aliyuncs.com"
CREATE_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
#: DashScope's time strings carry no zone. Until a poll has shown how `submit_time` relates to our
#: clock, a search spans every zone (UTC-12..UTC+14) around the instant sought.
_ANY_ZONE_S = 14 * 3600
_SEARCH_MARGIN_S = 120.0
_SEARCH_PAGES = 10

_STATE = {
    "PENDING": "queued",
    "SUSPENDED": "queued",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELED": "cancelled",
}


def _code(provider_code: str) -> str:
    """DashScope's string codes to unified ones."""
    if provider_code.startswith("DataInspectionFailed"):
        return "content_policy"
    if provider_code.startswith("Throttling"):
        return "rate_limited"
    if provider_code == "Arrearage":
        return "quota_exceeded"
    if provider_code.startswith(("InvalidApiKey", "AccessDenied")):
        return "auth_failed"
    if provider_code.startswith(("InvalidParameter", "BadRequest", "InvalidURL", "UnsupportedOperation")):
        return "invalid_request"
    if provider_code == "RequestTimeOut":
        return "timeout"
    if provider_code.startswith("InternalError"):
        return "provider_error"
    return ""


def _parse(resp: httpx.Response) -> dict[str, Any]:
    body = json_body(resp)
    if resp.is_success:
        return body
    provider_code = str(body.get("code", ""))
    message = str(body.get("message", resp.reason_phrase))
    err = http_error(resp, provider_code, message)
    mapped = _code(provider_code)
    if mapped and not (mapped == "provider_error" and resp.status_code >= 500):
        err.code = mapped
        err.retryable = mapped in ("rate_limited", "provider_error", "timeout")
    raise err


class WanAdapter:
    family = "wan"
    #: Request `parameters` passed through to DashScope's `parameters` (docs/api.md); the rest are ours.
    parameters = frozenset({"prompt_extend", "watermark", "audio", "shot_type"})

    def __init__(self, name: str, settings: Any) -> None:
        if settings.api_key is None:
            raise ValueError(f"adapter '{name}' needs api_key (your DashScope key)")
        self.name = name
        self.max_concurrency = settings.max_concurrency
        self._key = settings.api_key.get_secret_value()
        self.http = ProviderHTTP.from_settings(settings, DEFAULT_BASE_URL)
        #: DashScope's clock minus ours, learned from polls (its time strings have no zone).
        self._offset_s: float | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    async def submit(self, request: ProviderRequest) -> ProviderTask:
        image, mime = await fitted(
            request.image,
            min_side=360,
            max_side=2000,
            max_bytes=10 * 2**20,
            formats=("image/jpeg", "image/png", "image/webp"),
        )
        inp: dict[str, Any] = {"prompt": request.prompt, "img_url": data_uri(image, mime)}
        if request.negative_prompt:
            inp["negative_prompt"] = request.negative_prompt
        params: dict[str, Any] = {
            "resolution": request.resolution.upper(),
            "duration": request.seconds,
            "prompt_extend": True,
            "watermark": False,
        }
        if request.seed is not None:
            params["seed"] = request.seed % 2147483648
        params.update(request.params)
        sent_at = time.time()
        body = await self.http.call(
            "POST",
            CREATE_PATH,
            parse=_parse,
            idempotent=False,
            headers=lambda: {**self._headers(), "X-DashScope-Async": "enable"},
            json={"model": request.provider_model, "input": inp, "parameters": params},
        )
        return ProviderTask(
            task_id=body["output"]["task_id"], provider_model=request.provider_model, data={"sent_at": sent_at}
        )

    async def _task(self, task: ProviderTask) -> dict[str, Any]:
        return await self.http.call(
            "GET", f"/api/v1/tasks/{task.task_id}", parse=_parse, idempotent=True, headers=self._headers
        )

    def _learn_offset(self, task: ProviderTask, out: dict[str, Any]) -> None:
        """DashScope's `submit_time` against the moment we sent the task, to the quarter hour."""
        sent, stamp = task.data.get("sent_at"), out.get("submit_time")
        if self._offset_s is None and isinstance(sent, int | float) and isinstance(stamp, str):
            theirs = _epoch(stamp)
            if theirs is not None and abs(theirs - sent) <= _ANY_ZONE_S:
                self._offset_s = round((theirs - sent) / 900) * 900

    async def search(self, request: ProviderRequest, since: float) -> list[FoundTask]:
        """The tasks `request.provider_model` made since `since`, through `GET /api/v1/tasks`."""
        spread = _SEARCH_MARGIN_S + (_ANY_ZONE_S if self._offset_s is None else 0)
        shift = self._offset_s or 0.0
        params: dict[str, Any] = {
            "start_time": _list_stamp(since + shift - spread),
            "end_time": _list_stamp(time.time() + shift + spread),
            "model_name": request.provider_model,
            "page_size": 100,
        }
        rows: list[dict[str, Any]] = []
        for page in range(1, _SEARCH_PAGES + 1):
            query = {**params, "page_no": page}
            body = await self.http.call(
                "GET", "/api/v1/tasks", parse=_parse, idempotent=True, headers=self._headers, params=query
            )
            data = body.get("data")
            if not isinstance(data, list):
                raise ProviderError("provider_error", "DashScope's task list has no `data` array")
            rows += data
            if len(rows) >= int(body.get("total") or 0) or not data:
                break
        else:
            raise ProviderError("provider_error", f"more than {len(rows)} tasks to search; the outcome stays unknown")
        found = []
        for row in rows:
            state = _STATE.get(str(row.get("status") or row.get("task_status")))
            if state is None or not row.get("task_id"):
                continue
            found.append(
                FoundTask(
                    task=ProviderTask(task_id=str(row["task_id"]), provider_model=request.provider_model),
                    state=state,
                    created_at=self._our_clock(_epoch(str(row.get("gmt_create") or "")), since),
                )
            )
        return found

    def _our_clock(self, theirs: float | None, near: float) -> float | None:
        """A DashScope time in our clock: with the learned offset, else in whichever whole
        quarter-hour zone puts it nearest `near` (zones are quarter hours; a task made while our
        submit was in flight lands within seconds of it in the right one)."""
        if theirs is None:
            return None
        if self._offset_s is not None:
            return theirs - self._offset_s
        return theirs - round((theirs - near) / 900) * 900

    async def inspect(self, request: ProviderRequest, found: FoundTask) -> FoundTask:
        """A finished task shows the prompt it was made with (`orig_prompt`); DashScope cuts long
        prompts, so the fingerprint is the part it kept."""
        out = (await self._task(found.task)).get("output") or {}
        shown = str(out.get("orig_prompt") or "")
        state = _STATE.get(str(out.get("task_status")), found.state)
        return found.model_copy(update={"state": state, "matches": request.prompt.startswith(shown) if shown else None})

    async def poll(self, task: ProviderTask) -> ProviderStatus:
        body = await self._task(task)
        out = body.get("output") or {}
        self._learn_offset(task, out)
        status = out.get("task_status")
        if status == "UNKNOWN":
            # DashScope's answer for a task that does not exist or expired (>24 h): it is gone.
            return ProviderStatus(
                state="failed",
                error=ProviderErrorInfo(
                    code="provider_error",
                    provider_code="UNKNOWN",
                    retryable=True,
                    message="DashScope no longer knows this task (UNKNOWN: missing or expired)",
                ),
            )
        if status not in _STATE:
            raise ProviderError("provider_error", f"unexpected DashScope task_status {status!r}", retryable=False)
        state = _STATE[status]
        error = None
        if state == "failed":
            code = str(out.get("code", ""))
            error = ProviderErrorInfo(
                code=_code(code) or "provider_error",
                provider_code=code or None,
                message=str(out.get("message", "the task failed")),
                retryable=not code.startswith(("DataInspection", "InvalidParameter")),
            )
        return ProviderStatus(
            state=state,
            error=error,
            usage=_usage(body.get("usage") or {}),
            progress=50 if state == "in_progress" else None,
            result=_video(out) if state == "completed" else None,
        )

    async def fetch(self, task: ProviderTask) -> VideoSource:
        source = _video((await self._task(task)).get("output") or {})
        if source is None:
            raise ProviderError("provider_error", "the finished task has no video_url")
        return source

    async def cancel(self, task: ProviderTask) -> bool:
        """DashScope cancels PENDING tasks only; a RUNNING one answers UnsupportedOperation and runs on."""
        try:
            await self.http.call(
                "POST", f"/api/v1/tasks/{task.task_id}/cancel", parse=_parse, idempotent=True, headers=self._headers
            )
        except ProviderError as exc:
            if exc.provider_code != "UnsupportedOperation":
                raise
            return False
        return True

    async def aclose(self) -> None:
        await self.http.aclose()


def _usage(raw: dict[str, Any]) -> dict[str, Any]:
    """Both eras' keys, plus `billed_seconds` in one name (wan2.6 `duration`, older `video_duration`)."""
    if not raw:
        return {}
    billed = raw.get("duration", raw.get("video_duration"))
    return {**raw, "billed_seconds": billed}


def _epoch(stamp: str) -> float | None:
    """A DashScope time string ("2025-07-27 21:05:15.212", no zone) read as if it were UTC."""
    for form in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(stamp, form).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def _list_stamp(t: float) -> str:
    """The list query's form (YYYYMMDDhhmmss), in DashScope's clock when `t` is already shifted."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%d%H%M%S")


def _video(out: dict[str, Any]) -> VideoSource | None:
    """Where a finished task's video is: its `video_url` (a poll's answer and `fetch` read it alike)."""
    return VideoSource(url=out["video_url"]) if out.get("video_url") else None
