"""The test adapter for the toy provider: the smallest real implementation of the protocol."""

from __future__ import annotations

import base64

import httpx

from adapters.base import ProviderError, ProviderRequest, ProviderStatus, ProviderTask, VideoSource
from gateway.settings import AdapterSettings

_STATE = {
    "queued": "queued",
    "running": "in_progress",
    "done": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


class ToyAdapter:
    family = "toy"
    parameters = frozenset({"style"})

    def __init__(self, name: str, settings: AdapterSettings) -> None:
        self.name = name
        self.max_concurrency = settings.max_concurrency
        self.http = httpx.AsyncClient(base_url=settings.base_url or "", timeout=settings.timeout_s)

    async def submit(self, request: ProviderRequest) -> ProviderTask:
        resp = await self.http.post(
            "/tasks",
            json={
                "prompt": request.prompt,
                "image": base64.b64encode(request.image.data).decode(),
                "seconds": request.seconds,
                "width": request.width,
                "height": request.height,
            },
        )
        if resp.status_code == 400:
            raise ProviderError(
                "content_policy", resp.json()["message"], provider_code="content_policy", http_status=400
            )
        if resp.status_code >= 500:
            raise ProviderError("provider_unavailable", f"HTTP {resp.status_code}", http_status=resp.status_code)
        return ProviderTask(task_id=resp.json()["id"], provider_model=request.provider_model)

    async def poll(self, task: ProviderTask) -> ProviderStatus:
        resp = await self.http.get(f"/tasks/{task.task_id}")
        if resp.status_code == 404:
            raise ProviderError("provider_error", "task not found", retryable=False)
        body = resp.json()
        state = _STATE[body["status"]]
        error = None
        if state == "failed":
            error = {
                "code": "provider_error",
                "message": "the toy task failed",
                "provider_code": "failed",
                "retryable": True,
            }
        return ProviderStatus(
            state=state, progress=body["progress"], usage=body["usage"], error=error, poll_after_s=0.05
        )

    async def fetch(self, task: ProviderTask) -> VideoSource:
        return VideoSource(url=str(self.http.base_url.join(f"/tasks/{task.task_id}/video")))

    async def cancel(self, task: ProviderTask) -> bool:
        await self.http.post(f"/tasks/{task.task_id}/cancel")
        return True

    async def aclose(self) -> None:
        await self.http.aclose()
