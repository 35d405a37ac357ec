"""A Kling program keeps working with only its base URL changed: Kling's JWT (the gateway key as
the access key), the documented image2video example, task polling by task_id or
external_task_id, the list, Kling's error codes and its callback body."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import Gateway
from tests.gateway.api.facades.conftest import CAT, KEY, is_mp4


def token(ak: str = KEY, sk: str = "any-secret", **claims: Any) -> str:
    """As Kling's docs sign it (§1.2): HS256 over {iss, exp, nbf}."""
    now = int(time.time())
    payload = {"iss": ak, "exp": now + 1800, "nbf": now - 5, **claims}
    return jwt.encode(payload, sk, algorithm="HS256", headers={"alg": "HS256", "typ": "JWT"})


def kling(sandbox: Gateway, jwt_token: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"{sandbox.url}/kling", headers={"Authorization": f"Bearer {jwt_token or token()}"}, timeout=30
    )


def poll(client: httpx.Client, task: str) -> dict[str, Any]:
    deadline = time.time() + 30
    while True:
        data = client.get(f"/v1/videos/image2video/{task}").json()["data"]
        if data["task_status"] in ("succeed", "failed") or time.time() > deadline:
            return data
        time.sleep(0.1)


def test_the_documented_example_runs_end_to_end(sandbox: Gateway, receiver: Any) -> None:
    hook, got = receiver
    raw = base64.b64encode(CAT).decode()  # Kling takes raw base64, no data: prefix
    example = {  # provider-protocols.md §1.3, our image and callback
        "model_name": "kling-v2-1",
        "mode": "pro",
        "duration": "5",
        "image": raw,
        "prompt": "The cat stands up and walks away",
        "negative_prompt": "blur, distortion",
        "callback_url": hook,
        "external_task_id": "gw-7f3a",
    }
    with kling(sandbox) as client:
        made = client.post("/v1/videos/image2video", json=example)
        assert made.status_code == 200, made.text
        body = made.json()
        assert (body["code"], body["message"]) == (0, "SUCCEED") and body["request_id"]
        data = body["data"]
        assert data["task_status"] == "submitted" and data["task_info"] == {"external_task_id": "gw-7f3a"}
        assert data["created_at"] > 1_600_000_000_000  # milliseconds
        done = poll(client, data["task_id"])
        assert done["task_status"] == "succeed", done
        video = done["task_result"]["videos"][0]
        assert float(video["duration"]) == pytest.approx(5, abs=0.5)
        assert is_mp4(httpx.get(video["url"]).content)
        # by external_task_id too, and a repeat of it is the same task, not a second payment
        assert poll(client, "gw-7f3a")["task_id"] == data["task_id"]
        again = client.post("/v1/videos/image2video", json=example).json()["data"]
        assert again["task_id"] == data["task_id"]
        listed = client.get("/v1/videos/image2video", params={"pageNum": 1, "pageSize": 30}).json()["data"]
        assert [t["task_id"] for t in listed] == [data["task_id"]]
        assert client.get("/v1/videos/image2video", params={"pageNum": 2, "pageSize": 30}).json()["data"] == []
    served = sandbox.client.get(f"/v1/videos/{data['task_id']}", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert served["model"] == "kling-v2.1" and served["route"]["attempts"][0]["adapter"] == "kling"
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        time.sleep(0.05)
    assert got and got[0]["task_id"] == data["task_id"] and got[0]["task_status"] == "succeed"  # Kling's flat body
    assert got[0]["task_info"] == {"external_task_id": "gw-7f3a"}


def test_camera_control_becomes_the_gateways_camera_move(sandbox: Gateway) -> None:
    body = {
        "model_name": "kling-v1-5",
        "mode": "pro",
        "image": base64.b64encode(CAT).decode(),
        "prompt": "a cat",
        "camera_control": {"type": "simple", "config": {"zoom": 5, "pan": 0}},
    }
    with kling(sandbox) as client:
        task = client.post("/v1/videos/image2video", json=body).json()["data"]["task_id"]
    served = sandbox.client.get(f"/v1/videos/{task}", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert served["route"]["traits"]["camera_move"]["type"] == "zoom_in"


@pytest.mark.parametrize(
    ("jwt_token", "code"),
    [
        ("", 1001),
        (token(exp=int(time.time()) - 60), 1004),
        (token(nbf=int(time.time()) + 600), 1003),
        (token(ak="sk-not-a-key"), 1002),
        ("not.a.jwt", 1002),
    ],
)
def test_auth_failures_are_klings_codes(sandbox: Gateway, jwt_token: str, code: int) -> None:
    headers = {"Authorization": f"Bearer {jwt_token}"} if jwt_token else {}
    resp = httpx.get(f"{sandbox.url}/kling/v1/videos/image2video", headers=headers)
    assert resp.status_code == 401 and resp.json()["code"] == code, resp.text


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"model_name": "kling-v9"}, 400, 1203),
        ({"image": None}, 400, 1201),
        ({"duration": "7", "model_name": "kling-v2-1"}, 400, 1201),
        ({"cfg_scale": 2.0, "colour": "blue"}, 200, 0),  # unknown top-level fields are Kling's to ignore
    ],
)
def test_bad_requests_are_klings_codes(sandbox: Gateway, change: dict, status: int, code: int) -> None:
    body = {"model_name": "kling-v2-1", "image": base64.b64encode(CAT).decode(), "prompt": "a cat", **change}
    body = {k: v for k, v in body.items() if v is not None}
    with kling(sandbox) as client:
        resp = client.post("/v1/videos/image2video", json=body)
        missing = client.get("/v1/videos/image2video/vid_000000000000000000000000")
    assert resp.status_code == status and resp.json()["code"] == code, resp.text
    assert missing.status_code == 404 and missing.json()["code"] == 1203
