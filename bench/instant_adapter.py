"""A backend that answers at once, so a benchmark measures the gateway and nothing else."""

from __future__ import annotations

import numpy as np

from adapters.base import ProviderRequest, ProviderStatus, ProviderTask, VideoSource
from gateway.settings import AdapterSettings
from media import encode_mp4

_CLIP = encode_mp4([np.full((64, 64, 3), i * 20, np.uint8) for i in range(8)], fps=8)


class InstantAdapter:
    family = "instant"

    def __init__(self, name: str, settings: AdapterSettings) -> None:
        self.name = name
        self.max_concurrency = settings.max_concurrency
        self._n = 0

    async def submit(self, request: ProviderRequest) -> ProviderTask:
        self._n += 1
        return ProviderTask(task_id=f"instant-{self._n}", provider_model=request.provider_model)

    async def poll(self, task: ProviderTask) -> ProviderStatus:
        return ProviderStatus(state="completed", progress=100)

    async def fetch(self, task: ProviderTask) -> VideoSource:
        return VideoSource(content=_CLIP)

    async def cancel(self, task: ProviderTask) -> bool:
        return True

    async def aclose(self) -> None:
        return None
