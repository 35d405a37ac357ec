"""LiteLLM as the client, pinned (dev extra): its OpenAI video route creates, polls, downloads
and lists through the gateway, and the route, cost and warnings reach the caller in `usage`,
the one extension field LiteLLM's VideoObject keeps."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list (no network here)
import litellm

from tests.conftest import Gateway
from tests.support.images import image_bytes

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def sandbox(gateway_factory: Any) -> Gateway:
    return gateway_factory(sandbox=True, sandbox_task_s=0.4, rules_file=ROOT / "router_rules.yaml", adapters={})


def test_litellm_video_route_end_to_end(sandbox: Gateway, tmp_path: Path) -> None:
    photo = tmp_path / "still.jpg"
    photo.write_bytes(image_bytes(640, 480))
    common = {"api_base": f"{sandbox.url}/v1", "api_key": "unused-without-keys"}
    with photo.open("rb") as f:
        created = litellm.video_generation(
            model="openai/wan-2.6-i2v-flash",
            prompt="the camera pans slowly left",
            input_reference=f,
            seconds="4",  # an OpenAI value: made as the model's nearest, 5 s
            size="1280x720",
            **common,
        )
    assert created.status == "queued" and created.seconds == "5" and created.size == "1280x720"
    deadline = time.time() + 30
    while (status := litellm.video_status(video_id=created.id, **common)).status not in ("completed", "failed"):
        assert time.time() < deadline
        time.sleep(0.1)
    assert status.status == "completed" and status.progress == 100 and status.expires_at
    usage = status.usage or {}
    assert usage["model"] == "wan-2.6-i2v-flash" and usage["adapter"] == "wan"
    assert usage["cost_usd"] == pytest.approx(0.25) and usage["attempts"] == 1
    assert usage["duration_seconds"] > 4 and usage["total_s"] > 0
    assert any(w.startswith("seconds: wan-2.6-i2v-flash makes") for w in usage["warnings"])
    data = litellm.video_content(video_id=created.id, **common)
    assert data[4:8] == b"ftyp"
    listed = litellm.video_list(custom_llm_provider="openai", **common)
    assert [v["id"] for v in listed["data"]] and listed["data"][0]["usage"]["cost_usd"] == pytest.approx(0.25)


def test_litellm_surfaces_the_gateways_refusal(sandbox: Gateway, tmp_path: Path) -> None:
    photo = tmp_path / "still.jpg"
    photo.write_bytes(image_bytes(640, 480))
    with photo.open("rb") as f, pytest.raises(litellm.exceptions.BadRequestError) as info:
        litellm.video_generation(
            model="openai/sora-2",
            prompt="x",
            input_reference=f,
            api_base=f"{sandbox.url}/v1",
            api_key="unused",
        )
    assert "'sora-2' is not in the catalog" in str(info.value) and "unknown_model" in str(info.value)
