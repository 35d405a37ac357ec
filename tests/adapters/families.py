"""Each provider family as the contract suite sees it: its emulator, its adapter, a request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar

from adapters.base import InputImage, ProviderRequest
from adapters.emulators.common import EmulatorConfig
from adapters.emulators.kling import create_kling_emulator
from adapters.emulators.minimax import create_minimax_emulator
from adapters.emulators.wan import create_wan_emulator
from adapters.kling import KlingAdapter
from adapters.minimax import MiniMaxAdapter
from adapters.wan import WanAdapter
from gateway.api.ingest import ImageLimits, inspect_image
from gateway.settings import AdapterSettings
from tests.support.images import image_bytes


@dataclass
class Family:
    name: str
    emulator: Callable[[EmulatorConfig], Litestar]
    adapter_cls: Any
    credentials: dict[str, Any]
    provider_model: str
    resolution: str
    seconds: int
    can_cancel: bool
    names_result: bool  # the answer that says `completed` says where the video is
    secrets: list[str] = field(default_factory=list)

    def adapter(self, base_url: str, **options: Any) -> Any:
        settings = AdapterSettings(
            base_url=base_url, timeout_s=options.pop("timeout_s", 5.0), options=options, **self.credentials
        )
        return self.adapter_cls(name=self.name, settings=settings)


def request(fam: Family, prompt: str = "slow push in on the scene", **kw: Any) -> ProviderRequest:
    img: InputImage = inspect_image(image_bytes(640, 480), "image", ImageLimits(10**8, 10**8, 1))
    values: dict[str, Any] = dict(
        job_id="vid_test",
        attempt_id="att_test",
        provider_model=fam.provider_model,
        prompt=prompt,
        image=img,
        seconds=fam.seconds,
        resolution=fam.resolution,
        width=0,
        height=0,
    )
    values.update(kw)
    return ProviderRequest(**values)


FAMILIES = [
    Family(
        name="kling",
        emulator=lambda cfg: create_kling_emulator({"ak-emu": "sk-emu-kling-secret-0123456789abcdef"}, cfg),
        adapter_cls=KlingAdapter,
        credentials={"api_key": "ak-emu", "secret_key": "sk-emu-kling-secret-0123456789abcdef"},
        provider_model="kling-v2-6",
        resolution="720p",
        seconds=5,
        can_cancel=False,
        names_result=True,
        secrets=["sk-emu-kling-secret-0123456789abcdef"],
    ),
    Family(
        name="wan",
        emulator=lambda cfg: create_wan_emulator(["sk-emu-wan"], cfg),
        adapter_cls=WanAdapter,
        credentials={"api_key": "sk-emu-wan"},
        provider_model="wan2.6-i2v",
        resolution="720p",
        seconds=5,
        can_cancel=True,
        names_result=True,
        secrets=["sk-emu-wan"],
    ),
    Family(
        name="hailuo",
        emulator=lambda cfg: create_minimax_emulator(["mm-emu-key"], cfg),
        adapter_cls=MiniMaxAdapter,
        credentials={"api_key": "mm-emu-key"},
        provider_model="MiniMax-Hailuo-2.3-Fast",
        resolution="768p",
        seconds=6,
        can_cancel=False,
        names_result=False,  # a file_id: the download URL is one more call away
        secrets=["mm-emu-key"],
    ),
    Family(
        name="live",
        emulator=lambda cfg: create_minimax_emulator(["mm-emu-key"], cfg),
        adapter_cls=MiniMaxAdapter,
        credentials={"api_key": "mm-emu-key"},
        provider_model="I2V-01-live",
        resolution="720p",
        seconds=6,
        can_cancel=False,
        names_result=False,  # a file_id: the download URL is one more call away
        secrets=["mm-emu-key"],
    ),
]
