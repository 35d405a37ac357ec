"""A sandbox gateway with a key: façade requests are served by the emulated providers behind the
gateway's own routing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from litestar import Litestar, Request, post
from skimage import data

from tests.conftest import Gateway
from tests.support.images import data_uri
from tests.support.photos import jpeg
from tests.support.servers import serve_in_thread

ROOT = Path(__file__).resolve().parents[4]
KEY = "sk-gw-facade"
CAT = jpeg(data.chelsea())  # 451x300
CAT_URI = data_uri(CAT)


@pytest.fixture
def sandbox(gateway_factory: Any) -> Gateway:
    return gateway_factory(
        sandbox=True,
        sandbox_task_s=0.4,
        sandbox_max_side=1280,
        rules_file=ROOT / "router_rules.yaml",
        adapters={},
        api_keys=[KEY],
        image_fetch_allow_networks=["127.0.0.1/32"],  # callbacks to the receiver below
    )


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    """Where a façade's caller takes its callbacks: every body it gets, in order."""
    got: list[Any] = []

    @post("/hook", status_code=200)
    async def hook(request: Request[Any, Any, Any]) -> dict[str, str]:
        got.append(await request.json())
        return {}

    with serve_in_thread(Litestar([hook])) as url:
        yield f"{url}/hook", got


def is_mp4(blob: bytes) -> bool:
    with av.open(io.BytesIO(blob)) as c:
        return c.streams.video[0].codec_context.name == "h264"
