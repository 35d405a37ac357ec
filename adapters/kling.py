"""Kling AI official API, image-to-video (provider-protocols.md §1): JWT auth from the access
and secret keys, raw base64 images, `external_task_id` so a lost submit answer is recovered
by querying instead of submitting again."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import jwt

from adapters.base import ProviderError, ProviderErrorInfo, ProviderRequest, ProviderStatus, ProviderTask, VideoSource
from adapters.http import ProviderHTTP, http_error, json_body
from media.image import fitted

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
PATH = "/v1/videos/image2video"
#: Motion control (§1.7): the subject of the image performs the motion of a reference video.
#: Used when the request carries `parameters.video_url`.
MOTION_PATH = "/v1/videos/motion-control"

_STATE = {"submitted": "queued", "processing": "in_progress", "succeed": "completed", "failed": "failed"}
#: Kling's structured camera control works on kling-v1-5 (pro, 5 s); other models get the move in words.
CAMERA_MODELS = ("kling-v1-5",)
_CAMERA_AXIS = {
    "pan": "pan",
    "tilt": "tilt",
    "roll": "roll",
    "truck": "horizontal",
    "pedestal": "vertical",
    "zoom_in": "zoom",
    "zoom_out": "zoom",
    "push_in": "zoom",
    "pull_back": "zoom",
    "dolly": "zoom",
}
_MODERATION_WORDS = ("risk", "content", "sensitive", "policy", "moderation")


def unified(code: int) -> str:
    if 1000 <= code <= 1004 or code in (1103, 1304):
        return "auth_failed"
    if code in (1100, 1101, 1102):
        return "quota_exceeded"
    if code in (1300, 1301):
        return "content_policy"
    if code in (1302, 1303):
        return "rate_limited"
    if 1200 <= code <= 1203:
        return "invalid_request"
    if 5000 <= code <= 5002:
        return "provider_unavailable"
    return "provider_error"


def _parse(resp: httpx.Response) -> dict[str, Any]:
    body = json_body(resp)
    code = body.get("code", 0)
    if resp.is_success and code == 0:
        return body.get("data") or {}
    err = http_error(resp, code, str(body.get("message", "")))
    if isinstance(code, int) and code:
        err.code = unified(code)
        err.retryable = err.code in ("rate_limited", "provider_unavailable", "quota_exceeded")
    raise err


def camera_control(camera: Any) -> dict[str, Any] | None:
    axis = _CAMERA_AXIS.get(camera.type)
    if axis is None:
        return None
    sign = -1 if camera.direction in ("left", "down", "out", "ccw") or camera.type in ("zoom_out", "pull_back") else 1
    return {
        "type": "simple",
        "config": {a: 0 for a in ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")}
        | {axis: round(sign * max(1, camera.intensity * 10), 1)},
    }


def camera_words(camera: Any) -> str:
    speed = "slow" if camera.intensity < 0.4 else "fast" if camera.intensity > 0.7 else "steady"
    move = camera.type.replace("_", " ")
    return f" Camera: {speed} {move}{' ' + camera.direction if camera.direction else ''}."


class KlingAdapter:
    family = "kling"
    #: Request `parameters` passed through to Kling. `mode` is not among them: it sets the price,
    #: so it comes from the catalog alias (`params`), never from a request.
    parameters = frozenset(
        {
            "cfg_scale",
            "image_tail",
            "static_mask",
            "dynamic_masks",
            "sound",
            "watermark_info",
            "video_url",
            "character_orientation",
        }
    )
    idempotent_submit = True  # external_task_id is unique per account

    def __init__(self, name: str, settings: Any) -> None:
        if settings.api_key is None or settings.secret_key is None:
            raise ValueError(f"adapter '{name}' needs api_key (Kling access key) and secret_key (secret key)")
        self.name = name
        self.max_concurrency = settings.max_concurrency
        self._ak = settings.api_key.get_secret_value()
        self._sk = settings.secret_key.get_secret_value()
        self._token: tuple[str, float] = ("", 0.0)
        self.http = ProviderHTTP.from_settings(settings, DEFAULT_BASE_URL)

    def _headers(self) -> dict[str, str]:
        """A fresh JWT every ~25 minutes: {iss: AK, exp: now+1800, nbf: now-5}, HS256 with SK."""
        token, until = self._token
        now = time.time()
        if now > until:
            token = jwt.encode(
                {"iss": self._ak, "exp": int(now) + 1800, "nbf": int(now) - 5},
                self._sk,
                algorithm="HS256",
                headers={"typ": "JWT"},
            )
            self._token = (token, now + 1500)
        return {"Authorization": f"Bearer {token}"}

    async def submit(self, request: ProviderRequest) -> ProviderTask:
        image, _ = await fitted(request.image, min_side=300, max_side=4096, max_bytes=10 * 2**20)
        params = dict(request.params)
        if params.get("video_url"):
            return await self._submit_motion(request, image, params)
        mode = params.pop("mode", "pro" if request.resolution == "1080p" else "std")
        body: dict[str, Any] = {
            "model_name": request.provider_model,
            "mode": mode,
            "duration": str(request.seconds),
            "image": base64.b64encode(image).decode(),
            "prompt": request.prompt,
            "external_task_id": request.attempt_id,
        }
        if request.callback_url:
            body["callback_url"] = request.callback_url
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.camera:
            control = camera_control(request.camera) if request.provider_model in CAMERA_MODELS else None
            if control:
                body["camera_control"] = control
            else:
                body["prompt"] += camera_words(request.camera)
        body.update(params)
        data = await self._create(PATH, body, request.attempt_id)
        return ProviderTask(task_id=str(data["task_id"]), provider_model=request.provider_model)

    async def _create(self, path: str, body: dict[str, Any], external_id: str) -> dict[str, Any]:
        """Create a task exactly once. Where the answer is lost (timeout, 5xx, malformed), the task
        may exist: look it up by our `external_task_id`; if it is not there, send it again: Kling
        refuses a second task with the same id (1201), and then the lookup finds the first."""
        for attempt in range(3):
            try:
                return await self.http.call(
                    "POST", path, parse=_parse, idempotent=False, headers=self._headers, json=body
                )
            except ProviderError as exc:
                duplicate = exc.provider_code == "1201" and "external_task_id" in exc.message
                if not (exc.maybe_submitted or duplicate):
                    raise
                exc.maybe_submitted = True  # a duplicate says a task with our id exists
                try:
                    found = await self._find(external_id, path)
                except ProviderError:
                    raise exc from None  # the lookup failed too: the outcome stays unknown
                if found is not None:
                    return found
                if duplicate or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def lookup(self, request: ProviderRequest) -> ProviderTask | None:
        """The task this attempt created, if Kling has one under our `external_task_id`."""
        path = MOTION_PATH if request.params.get("video_url") else PATH
        found = await self._find(request.attempt_id, path)
        if found is None:
            return None
        data = {"path": MOTION_PATH} if path == MOTION_PATH else {}
        return ProviderTask(task_id=str(found["task_id"]), provider_model=request.provider_model, data=data)

    async def _submit_motion(self, request: ProviderRequest, image: bytes, params: dict[str, Any]) -> ProviderTask:
        body: dict[str, Any] = {
            "model_name": request.provider_model,
            "mode": params.pop("mode", "pro" if request.resolution == "1080p" else "std"),
            "image_url": base64.b64encode(image).decode(),
            "video_url": params.pop("video_url"),
            "character_orientation": params.pop("character_orientation", "image"),
            "prompt": request.prompt,
            "external_task_id": request.attempt_id,
        }
        if request.callback_url:
            body["callback_url"] = request.callback_url
        body.update(params)
        data = await self._create(MOTION_PATH, body, request.attempt_id)
        return ProviderTask(
            task_id=str(data["task_id"]), provider_model=request.provider_model, data={"path": MOTION_PATH}
        )

    async def _find(self, external_id: str, path: str = PATH) -> dict[str, Any] | None:
        """The task under our external id; None when Kling answers that there is none (404)."""
        try:
            return await self.http.call(
                "GET", f"{path}/{external_id}", parse=_parse, idempotent=True, headers=self._headers
            )
        except ProviderError as exc:
            if exc.http_status == 404:
                return None
            raise

    async def _query(self, task: ProviderTask) -> dict[str, Any]:
        path = task.data.get("path", PATH)
        return await self.http.call(
            "GET", f"{path}/{task.task_id}", parse=_parse, idempotent=True, headers=self._headers
        )

    async def poll(self, task: ProviderTask) -> ProviderStatus:
        try:
            data = await self._query(task)
        except ProviderError as exc:
            if exc.http_status == 404:
                return ProviderStatus(
                    state="failed",
                    error=ProviderErrorInfo(
                        code="provider_error",
                        provider_code=exc.provider_code,
                        retryable=True,
                        message=f"Kling no longer knows this task: {exc.message}",
                    ),
                )
            raise
        status = data.get("task_status")
        if status not in _STATE:
            raise ProviderError("provider_error", f"unexpected Kling task_status {status!r}", retryable=False)
        error = None
        if status == "failed":
            msg = str(data.get("task_status_msg") or "the task failed")
            moderated = any(w in msg.lower() for w in _MODERATION_WORDS)
            error = ProviderErrorInfo(
                code="content_policy" if moderated else "provider_error",
                message=msg,
                provider_code="task_failed",
                retryable=not moderated,
            )
        usage, result = {}, None
        if status == "succeed":
            videos = (data.get("task_result") or {}).get("videos") or [{}]
            usage = {"units": data.get("final_unit_deduction"), "duration": videos[0].get("duration")}
            result = _video(data)
        return ProviderStatus(state=_STATE[status], error=error, usage=usage, result=result)

    async def fetch(self, task: ProviderTask) -> VideoSource:
        source = _video(await self._query(task))
        if source is None:
            raise ProviderError("provider_error", "the finished Kling task has no video url")
        return source

    async def cancel(self, task: ProviderTask) -> bool:
        """Kling documents no cancel for image-to-video: the task runs to its end and is billed."""
        return False

    async def aclose(self) -> None:
        await self.http.aclose()


def _video(data: dict[str, Any]) -> VideoSource | None:
    """Where a finished task's video is: its first `task_result.videos` url (a poll's answer and
    `fetch` read it alike)."""
    videos = (data.get("task_result") or {}).get("videos") or []
    return VideoSource(url=videos[0]["url"]) if videos and videos[0].get("url") else None
