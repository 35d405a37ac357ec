"""The `local` adapter end to end through the gateway, on the tiny pipeline, over real HTTP."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av

from adapters.base import ProviderTask
from adapters.local import LocalAdapter
from gateway.settings import AdapterSettings
from tests.support.images import data_uri, image_bytes

RULES = """
models:
  local-wan:
    adapter: local
    provider_model: wan-tiny
    resolutions: [480p]
    durations: [1]
    fps: 8
    usd_per_second: {480p: 0.025}
rules:
  - name: default
    when: {}
    route: [local-wan]
"""


def _options(path: Path, **kw: Any) -> dict[str, Any]:
    return {"model_path": str(path), "devices": ["cpu"], "steps": 3, "fps": 8, "max_frames": 9, **kw}


def test_local_adapter_through_the_gateway(gateway_factory: Any, tiny_wan: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    gw = gateway_factory(rules_file=rules, adapters={"local": AdapterSettings(options=_options(tiny_wan))})
    resp = gw.client.post(
        "/v1/videos", json={"prompt": "slow push in", "image": data_uri(image_bytes(640, 480)), "seed": 1}
    )
    assert resp.status_code == 202, resp.text
    video = gw.wait(resp.json()["id"], timeout=120)
    assert video["status"] == "completed", video
    out = video["output"]
    assert (out["width"], out["height"], out["frames"], out["fps"], out["codec"]) == (640, 480, 9, 8.0, "h264")
    assert video["route"]["attempts"][0]["adapter"] == "local"
    assert video["metrics"]["cost_usd"] == 0.025
    data = gw.client.get(out["url"]).content
    with av.open(io.BytesIO(data)) as c:
        assert len(list(c.decode(video=0))) == 9


async def test_a_task_lost_in_a_restart_is_interrupted_and_retryable(tiny_wan: Path) -> None:
    adapter = LocalAdapter("local", AdapterSettings(options=_options(tiny_wan)))
    try:
        status = await adapter.poll(ProviderTask(task_id="local-gone", provider_model="wan-tiny"))
        assert status.state == "failed" and status.error is not None
        assert (status.error.code, status.error.retryable) == ("interrupted", True)
    finally:
        await adapter.aclose()


def test_bad_options_name_the_adapter(tiny_wan: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="adapter 'local': invalid local engine options"):
        LocalAdapter("local", AdapterSettings(options=_options(tiny_wan, runtime="tensorflow")))
