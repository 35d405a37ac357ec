"""A DashScope program keeps working with only its base URL changed: the `dashscope` SDK itself,
and DashScope's documented HTTP example, against `/dashscope/api/v1`."""

from __future__ import annotations

import time

import dashscope
import httpx
import pytest
from dashscope import VideoSynthesis

from tests.conftest import Gateway
from tests.gateway.api.facades.conftest import CAT_URI, KEY, is_mp4


@pytest.fixture
def base(sandbox: Gateway, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"{sandbox.url}/dashscope/api/v1"
    monkeypatch.setattr(dashscope, "base_http_api_url", url)
    return url


def test_the_dashscope_sdk_creates_waits_and_downloads(sandbox: Gateway, base: str) -> None:
    rsp = VideoSynthesis.async_call(
        model="wan2.6-i2v", prompt="A cat turns its head", img_url=CAT_URI, api_key=KEY, duration=5, resolution="720P"
    )
    assert rsp.status_code == 200, rsp
    task_id = rsp.output.task_id
    assert task_id.startswith("vid_") and rsp.output.task_status == "PENDING"
    done = VideoSynthesis.wait(rsp, api_key=KEY)
    assert done.status_code == 200 and done.output.task_status == "SUCCEEDED", done
    assert done.usage.video_count == 1 and done.usage.SR == 720
    clip = httpx.get(done.output.video_url)  # the signed link: no key needed
    assert clip.status_code == 200 and is_mp4(clip.content)
    # the same job, seen through the gateway's own API: routed by the catalog alias of wan2.6-i2v
    video = sandbox.client.get(f"/v1/videos/{task_id}", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert video["model"] == "wan-2.6-i2v" and video["route"]["attempts"][0]["adapter"] == "wan"


def test_dashscope_http_example_and_its_quirks(sandbox: Gateway, base: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    example = {  # provider-protocols.md §3.3, with our image
        "model": "wan2.6-i2v",
        "input": {"prompt": "A cat runs across the lawn", "negative_prompt": "low quality", "img_url": CAT_URI},
        "parameters": {"resolution": "720P", "duration": 5, "prompt_extend": True, "watermark": False, "seed": 12345},
    }
    url = f"{base}/services/aigc/video-generation/video-synthesis"
    sync = httpx.post(url, json=example, headers=auth)
    assert sync.status_code == 403 and sync.json()["code"] == "AccessDenied"  # X-DashScope-Async is required
    made = httpx.post(url, json=example, headers={**auth, "X-DashScope-Async": "enable"})
    assert made.status_code == 200, made.text
    body = made.json()
    assert set(body) == {"output", "request_id"} and body["output"]["task_status"] == "PENDING"
    assert made.headers["x-i2v-model"] == "wan-2.6-i2v"
    task_id = body["output"]["task_id"]
    deadline = time.time() + 30
    while (task := httpx.get(f"{base}/tasks/{task_id}", headers=auth).json())["output"]["task_status"] in (
        "PENDING",
        "RUNNING",
    ) and time.time() < deadline:
        time.sleep(0.1)
    out = task["output"]
    assert out["task_status"] == "SUCCEEDED", task
    assert out["submit_time"][4] == "-" and out["end_time"] >= out["scheduled_time"] >= out["submit_time"]
    assert task["usage"]["duration"] == 5
    # a task it does not know: HTTP 200 and UNKNOWN, as DashScope answers
    unknown = httpx.get(f"{base}/tasks/0385dc79-5ff8-4d82-bcb6-000000000000", headers=auth)
    assert unknown.status_code == 200 and unknown.json()["output"]["task_status"] == "UNKNOWN"
    # only PENDING tasks cancel
    late = httpx.post(f"{base}/tasks/{task_id}/cancel", headers=auth)
    assert late.status_code == 400 and late.json()["code"] == "InvalidParameter"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"model": None}, 400, "BadRequest.EmptyModel"),
        ({"model": "wan9-i2v"}, 400, "InvalidParameter"),
        ({"input": {"prompt": "x"}}, 400, "InvalidParameter"),
        ({"parameters": {"duration": 5, "resolution": "480P"}}, 400, "InvalidParameter"),
        ({"parameters": {"colour": "blue"}}, 400, "InvalidParameter"),
    ],
)
def test_dashscope_errors_come_in_dashscope_shape(base: str, change: dict, status: int, code: str) -> None:
    body = {"model": "wan2.6-i2v", "input": {"prompt": "a cat", "img_url": CAT_URI}, **change}
    body = {k: v for k, v in body.items() if v is not None}
    resp = httpx.post(
        f"{base}/services/aigc/video-generation/video-synthesis",
        json=body,
        headers={"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"},
    )
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"request_id", "code", "message"} and resp.json()["code"] == code


def test_a_wrong_key_is_dashscopes_invalid_api_key(base: str) -> None:
    resp = httpx.get(f"{base}/tasks/vid_x", headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status_code == 401 and resp.json()["code"] == "InvalidApiKey"
