"""A MiniMax program keeps working with only its base URL changed: the documented create example,
query, file retrieval (file_id a string in one answer and an integer in the other, as MiniMax
sends them), errors inside HTTP 200, and the callback body."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.gateway.api.facades.conftest import CAT_URI, KEY, is_mp4


def client(sandbox: Gateway, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=f"{sandbox.url}/minimax", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_the_documented_example_runs_end_to_end(sandbox: Gateway, receiver: Any) -> None:
    hook, got = receiver
    example = {  # provider-protocols.md §2.3, our image and callback
        "model": "MiniMax-Hailuo-2.3",
        "prompt": "The cat turns and looks up [Push in]",
        "first_frame_image": CAT_URI,
        "duration": 6,
        "resolution": "768P",
        "prompt_optimizer": True,
        "callback_url": hook,
    }
    with client(sandbox) as mm:
        made = mm.post("/v1/video_generation", json=example)
        assert made.status_code == 200 and made.json()["base_resp"] == {"status_code": 0, "status_msg": "success"}
        task = made.json()["task_id"]
        deadline = time.time() + 30
        while (q := mm.get("/v1/query/video_generation", params={"task_id": task}).json())["status"] not in (
            "Success",
            "Fail",
        ) and time.time() < deadline:
            assert q["status"] in ("Queueing", "Processing", "Preparing")
            time.sleep(0.1)
        assert q["status"] == "Success", q
        assert isinstance(q["file_id"], str) and q["video_height"] > 0
        file = mm.get("/v1/files/retrieve", params={"file_id": q["file_id"]}).json()
        assert isinstance(file["file"]["file_id"], int) and str(file["file"]["file_id"]) == q["file_id"]
        assert file["file"]["filename"] == "output.mp4" and file["base_resp"]["status_code"] == 0
        clip = httpx.get(file["file"]["download_url"]).content
        assert len(clip) == file["file"]["bytes"] and is_mp4(clip)
    served = sandbox.client.get(f"/v1/videos/{task}", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert served["model"] == "hailuo-2.3" and served["route"]["attempts"][0]["adapter"] == "hailuo"
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        time.sleep(0.05)
    assert got and got[0]["task_id"] == task and got[0]["status"] == "Success" and got[0]["file_id"] == q["file_id"]


@pytest.mark.parametrize(
    ("change", "key", "code"),
    [
        ({}, "sk-wrong", 1004),
        ({"model": "MiniMax-Hailuo-99"}, KEY, 2013),
        ({"first_frame_image": None}, KEY, 2013),
        ({"duration": 7}, KEY, 2013),
    ],
)
def test_errors_come_inside_http_200(sandbox: Gateway, change: dict, key: str, code: int) -> None:
    body = {"model": "MiniMax-Hailuo-2.3", "prompt": "a cat", "first_frame_image": CAT_URI, **change}
    with client(sandbox, key) as mm:
        resp = mm.post("/v1/video_generation", json={k: v for k, v in body.items() if v is not None})
    assert resp.status_code == 200, resp.text
    assert resp.json()["base_resp"]["status_code"] == code and resp.json()["base_resp"]["status_msg"]


def test_unknown_tasks_and_files(sandbox: Gateway) -> None:
    with client(sandbox) as mm:
        assert mm.get("/v1/query/video_generation", params={"task_id": "106916112212032"}).json()["base_resp"][
            "status_code"
        ]
        assert mm.get("/v1/files/retrieve", params={"file_id": "not-a-number"}).json()["base_resp"]["status_code"]
