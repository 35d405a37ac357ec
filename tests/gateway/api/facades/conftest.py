"""A sandbox gateway with a key: façade requests are served by the emulated providers behind the
gateway's own routing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import pytest
from skimage import data

from tests.conftest import Gateway
from tests.support.images import data_uri
from tests.support.photos import jpeg

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
    )


def is_mp4(blob: bytes) -> bool:
    with av.open(io.BytesIO(blob)) as c:
        return c.streams.video[0].codec_context.name == "h264"
