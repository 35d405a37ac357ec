"""The local diffusion engine (local_engine/) behind the same adapter contract as the hosted
providers. The engine runs in this process; submit queues a job on the least busy device.

Options (`I2V_ADAPTERS__LOCAL__OPTIONS__*`) are `local_engine.config.EngineConfig` fields;
`I2V_LOCAL_WAN_PATH` alone is enough to turn it on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.base import ProviderError, ProviderErrorInfo, ProviderRequest, ProviderStatus, ProviderTask, VideoSource


class LocalAdapter:
    family = "local"
    parameters: frozenset[str] = frozenset()  # the engine takes everything from the request's own fields

    def __init__(self, name: str, settings: Any) -> None:
        from local_engine.config import EngineConfig
        from local_engine.engine import LocalEngine

        self.name = name
        self.max_concurrency = settings.max_concurrency
        try:
            config = EngineConfig(**settings.options)
        except ValueError as exc:
            raise ValueError(f"adapter '{name}': invalid local engine options: {exc}") from exc
        self.engine = LocalEngine(config)

    async def submit(self, request: ProviderRequest) -> ProviderTask:
        from local_engine.engine import QueueFull

        try:
            job = self.engine.submit(
                request.image.data,
                request.prompt,
                width=request.width,
                height=request.height,
                seconds=request.seconds,
                negative_prompt=request.negative_prompt,
                seed=request.seed,
            )
        except QueueFull as exc:
            raise ProviderError("rate_limited", str(exc), retryable=True) from exc
        return ProviderTask(task_id=job.id, provider_model=request.provider_model, data={"frames": job.num_frames})

    async def poll(self, task: ProviderTask) -> ProviderStatus:
        job = self.engine.get(task.task_id)
        if job is None:
            return ProviderStatus(
                state="failed",
                error=ProviderErrorInfo(
                    code="interrupted",
                    message="the local engine restarted and lost this job; it was not finished",
                    retryable=True,
                ),
            )
        error = None
        if job.state == "failed":
            error = ProviderErrorInfo(code="provider_error", message=job.error or "generation failed", retryable=True)
        usage = {"steps": job.steps, "frames": job.num_frames, **job.timings} if job.state == "completed" else {}
        return ProviderStatus(state=job.state, progress=job.progress, error=error, usage=usage, poll_after_s=0.5)

    async def fetch(self, task: ProviderTask) -> VideoSource:
        job = self.engine.get(task.task_id)
        if job is None or job.video is None:
            raise ProviderError("provider_error", "the local job has no video (restarted or not finished)")
        video = job.video
        self.engine.forget(task.task_id)
        return VideoSource(content=video)

    async def cancel(self, task: ProviderTask) -> bool:
        """The engine stops between denoising steps (or drops a queued job)."""
        self.engine.cancel(task.task_id)
        return True

    def health(self) -> dict[str, Any]:
        """Per device: loading / ready / failed, the GPU, the queue (for /healthz, /readyz, metrics)."""
        return self.engine.health()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)
