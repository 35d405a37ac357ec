"""MiniMax video generation: Hailuo models and the I2V-01 series (Video-01-Live is `I2V-01-live`),
per provider-protocols.md §2. Errors arrive inside HTTP 200 as `base_resp.status_code`."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.base import ProviderError, ProviderErrorInfo, ProviderRequest, ProviderStatus, ProviderTask, VideoSource
from adapters.http import ProviderHTTP, http_error, json_body
from media.image import data_uri, fitted

DEFAULT_BASE_URL = "https://api.minimax.io"

_STATE = {
    "Preparing": "queued",
    "Queueing": "queued",
    "Processing": "in_progress",
    "Success": "completed",
    "Fail": "failed",
}
_CODES = {
    1000: "provider_unavailable",
    1001: "timeout",
    1002: "rate_limited",
    1004: "auth_failed",
    2049: "auth_failed",
    1008: "quota_exceeded",
    1028: "quota_exceeded",
    1030: "quota_exceeded",
    1024: "provider_unavailable",
    1033: "provider_unavailable",
    1026: "content_policy",
    1027: "content_policy",
    2013: "invalid_request",
}
#: Codes of a failure inside MiniMax (unknown error, request timeout, internal and system errors):
#: answered to a submit, the task may have been made before it (HTTP 200 all the same), so the
#: submit is never simply repeated. Refusals (rate limit, auth, balance, policy, params) made none.
_SERVER_SIDE = frozenset({1000, 1001, 1024, 1033})
#: Camera commands the Hailuo 02/2.3 and Director models read from brackets in the prompt.
_CAMERA = {
    "push_in": "Push in",
    "zoom_in": "Zoom in",
    "pull_back": "Pull out",
    "zoom_out": "Zoom out",
    "static": "Static shot",
    "tracking": "Tracking shot",
    "truck": "Truck",
    "pan": "Pan",
    "tilt": "Tilt",
    "pedestal": "Pedestal",
}
_BRACKET_MODELS = ("MiniMax-Hailuo-02", "MiniMax-Hailuo-2.3", "I2V-01-Director")


def _parse(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code >= 400:
        raise http_error(resp, None, f"HTTP {resp.status_code} from MiniMax")
    body = json_body(resp)
    base = body.get("base_resp") or {}
    code = int(base.get("status_code", 0))
    if code and body.get("status") != "Fail":  # a failed *task* is an answer, not a failed call
        raise ProviderError(
            _CODES.get(code, "provider_error"),
            str(base.get("status_msg", "")),
            provider_code=code,
            maybe_submitted=code in _SERVER_SIDE,
        )
    return body


def camera_tag(camera: Any) -> str:
    word = _CAMERA.get(camera.type)
    if word is None:
        return ""
    if camera.type in ("truck", "pan") and camera.direction in ("left", "right"):
        word = f"{word} {camera.direction}"
    elif camera.type in ("tilt", "pedestal") and camera.direction in ("up", "down"):
        word = f"{word} {camera.direction}"
    elif camera.type in ("truck", "pan", "tilt", "pedestal"):
        return ""
    return f" [{word}]"


class MiniMaxAdapter:
    #: Request `parameters` passed through to MiniMax; the rest are ours.
    parameters = frozenset({"prompt_optimizer", "fast_pretreatment", "aigc_watermark"})

    def __init__(self, name: str, settings: Any) -> None:
        if settings.api_key is None:
            raise ValueError(f"adapter '{name}' needs api_key (your MiniMax key)")
        self.name = name
        self.family = name if name in ("hailuo", "live") else "hailuo"
        self.max_concurrency = settings.max_concurrency
        self._key = settings.api_key.get_secret_value()
        self.http = ProviderHTTP.from_settings(settings, DEFAULT_BASE_URL)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    async def submit(self, request: ProviderRequest) -> ProviderTask:
        image, mime = await fitted(request.image, min_side=320, max_side=4096, max_bytes=19 * 2**20)
        prompt = request.prompt
        if request.camera and request.provider_model.startswith(_BRACKET_MODELS):
            prompt += camera_tag(request.camera)
        body: dict[str, Any] = {
            "model": request.provider_model,
            "prompt": prompt,
            "first_frame_image": data_uri(image, mime),
            "duration": request.seconds,
            "resolution": request.resolution.upper(),
            "prompt_optimizer": True,
        }
        if request.callback_url:  # MiniMax first checks it with a challenge the gateway echoes
            body["callback_url"] = request.callback_url
        body.update(request.params)
        answer = await self.http.call(
            "POST", "/v1/video_generation", parse=_parse, idempotent=False, headers=self._headers, json=body
        )
        if not answer.get("task_id"):
            raise ProviderError("provider_error", "MiniMax accepted the request but gave no task_id")
        return ProviderTask(task_id=str(answer["task_id"]), provider_model=request.provider_model)

    async def _query(self, task: ProviderTask) -> dict[str, Any]:
        return await self.http.call(
            "GET",
            "/v1/query/video_generation",
            parse=_parse,
            idempotent=True,
            headers=self._headers,
            params={"task_id": task.task_id},
        )

    async def poll(self, task: ProviderTask) -> ProviderStatus:
        try:
            body = await self._query(task)
        except ProviderError as exc:
            if exc.provider_code == "2013" and "not found" in exc.message:
                return ProviderStatus(
                    state="failed",
                    error=ProviderErrorInfo(
                        code="provider_error",
                        provider_code="2013",
                        retryable=True,
                        message=f"MiniMax no longer knows this task: {exc.message}",
                    ),
                )
            raise
        status = body.get("status")
        if status not in _STATE:
            raise ProviderError("provider_error", f"unexpected MiniMax status {status!r}", retryable=False)
        error = None
        if status == "Fail":
            code = int((body.get("base_resp") or {}).get("status_code") or 0)
            unified = _CODES.get(code, "provider_error")
            error = ProviderErrorInfo(
                code="provider_error" if unified == "provider_unavailable" else unified,
                provider_code=str(code) if code else None,
                retryable=unified != "content_policy",
                message=str(
                    body.get("error_message") or (body.get("base_resp") or {}).get("status_msg") or "the task failed"
                ),
            )
        return ProviderStatus(
            state=_STATE[status],
            error=error,
            usage={"video_width": body["video_width"], "video_height": body["video_height"]}
            if status == "Success"
            else {},
        )

    async def fetch(self, task: ProviderTask) -> VideoSource:
        file_id = (await self._query(task)).get("file_id")
        if not file_id:
            raise ProviderError("provider_error", "the finished task has no file_id")
        answer = await self.http.call(
            "GET",
            "/v1/files/retrieve",
            parse=_parse,
            idempotent=True,
            headers=self._headers,
            params={"file_id": str(file_id)},
        )
        url = (answer.get("file") or {}).get("download_url")
        if not url:
            raise ProviderError("provider_error", "MiniMax gave no download_url for the file")
        return VideoSource(url=url)

    async def cancel(self, task: ProviderTask) -> bool:
        """MiniMax documents no cancel for video tasks: the task runs to its end and is billed."""
        return False

    async def aclose(self) -> None:
        await self.http.aclose()
