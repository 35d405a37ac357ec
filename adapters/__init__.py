"""Provider adapters: one file per provider family behind the protocol in `adapters.base`."""

from adapters.base import (
    Adapter,
    CameraMove,
    InputImage,
    ProviderError,
    ProviderRequest,
    ProviderStatus,
    ProviderTask,
    VideoSource,
)

__all__ = [
    "Adapter",
    "CameraMove",
    "InputImage",
    "ProviderError",
    "ProviderRequest",
    "ProviderStatus",
    "ProviderTask",
    "VideoSource",
]
