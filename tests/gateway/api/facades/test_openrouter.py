"""A program written for OpenRouter's video API keeps working with only its base URL changed:
submit (202, `polling_url`), poll, download `unsigned_urls[0]` with the key, the models list,
`frame_images`, and OpenRouter's error shape."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.gateway.api.facades.conftest import CAT_URI, KEY, is_mp4

AUTH = {"Authorization": f"Bearer {KEY}"}


def frame(url: str = CAT_URI, kind: str = "first_frame") -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": url}, "frame_type": kind}]


def test_submit_poll_download(sandbox: Gateway) -> None:
    with httpx.Client(base_url=f"{sandbox.url}/api/v1", headers=AUTH, timeout=30) as orr:
        submitted = orr.post(
            "/videos",
            json={
                "model": "alibaba/wan2.6-i2v",  # a vendor prefix, as OpenRouter ids carry
                "prompt": "A cat looks around",
                "duration": 5,
                "resolution": "720p",
                "seed": 42,
                "frame_images": frame(),
            },
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["status"] == "pending" and job["polling_url"] == f"/api/v1/videos/{job['id']}"
        deadline = time.time() + 30
        while (polled := httpx.get(f"{sandbox.url}{job['polling_url']}", headers=AUTH).json())["status"] in (
            "pending",
            "in_progress",
        ) and time.time() < deadline:
            time.sleep(0.1)
        assert polled["status"] == "completed", polled
        assert polled["usage"]["cost"] == pytest.approx(0.5)  # 5 s x $0.10/s at 720p
        content = polled["unsigned_urls"][0]
        assert httpx.get(content).status_code == 401  # the content proxy needs the key
        clip = httpx.get(content, headers=AUTH)
        assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4" and is_mp4(clip.content)
        assert httpx.get(polled["urls"][0]).content == clip.content  # the signed URL needs none
        models = orr.get("/videos/models").json()["data"]
        wan = next(m for m in models if m["id"] == "wan-2.6-i2v")
        assert wan["supported_durations"] == [5, 10, 15] and wan["supported_frame_images"] == ["first_frame"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"model": "wan-2.6-i2v", "prompt": "x"}, 400, "frame_images"),
        ({"model": "wan-2.6-i2v", "prompt": "x", "frame_images": frame(kind="last_frame")}, 400, "last_frame"),
        ({"model": "google/veo-3.1", "prompt": "x", "frame_images": frame()}, 400, "not in the catalog"),
        ({"model": "wan-2.6-i2v", "prompt": "x", "duration": 8, "frame_images": frame()}, 400, "8 s not offered"),
    ],
)
def test_errors_in_openrouters_shape(sandbox: Gateway, body: dict, status: int, says: str) -> None:
    resp = httpx.post(f"{sandbox.url}/api/v1/videos", json=body, headers=AUTH)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == status and says in err["message"]
    assert httpx.get(f"{sandbox.url}/api/v1/videos/vid_nope", headers=AUTH).json()["error"]["code"] == 404
