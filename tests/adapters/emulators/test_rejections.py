"""The emulators refuse what the real providers refuse, in the providers' own error shapes."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from litestar.testing import TestClient

from adapters.emulators.kling import create_kling_emulator
from adapters.emulators.minimax import create_minimax_emulator
from adapters.emulators.wan import create_wan_emulator
from tests.support.images import data_uri, image_bytes

AK, SK = "ak-test", "sk-test-secret-0123456789abcdef0123"
RAW = base64.b64encode(image_bytes(640, 480)).decode()


def token(**claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": AK, "exp": now + 1800, "nbf": now - 5, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, claims.pop("key", SK), algorithm="HS256")


@pytest.fixture
def kling() -> Iterator[TestClient]:
    with TestClient(create_kling_emulator({AK: SK})) as c:
        yield c


def kling_post(c: TestClient, body: dict[str, Any], auth: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": auth if auth is not None else f"Bearer {token()}"}
    r = c.post("/v1/videos/image2video", json=body, headers=headers)
    return r.status_code, r.json()


GOOD = {"model_name": "kling-v2-6", "image": RAW, "prompt": "pan left", "duration": "5"}


def test_kling_accepts_a_good_request(kling: TestClient) -> None:
    status, body = kling_post(kling, GOOD)
    assert status == 200 and body["code"] == 0 and body["message"] == "SUCCEED"
    assert body["data"]["task_status"] == "submitted" and body["data"]["task_id"].isdigit()
    assert body["data"]["created_at"] > 10**12  # milliseconds


def signed(payload: dict[str, Any], key: str = SK) -> str:
    return "Bearer " + jwt.encode(payload, key, algorithm="HS256")


NOW = int(time.time())


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        ("", 1001),
        ("Bearer not-a-jwt", 1002),
        (signed({"iss": AK, "exp": NOW + 600, "nbf": 0}, key="wrong-key-0123456789abcdef0123"), 1002),
        (signed({"iss": "someone-else", "exp": NOW + 600, "nbf": 0}), 1002),
        (signed({"iss": AK, "exp": NOW - 10, "nbf": 0}), 1004),
        (signed({"iss": AK, "exp": NOW + 3600, "nbf": NOW + 600}), 1003),
        (signed({"iss": AK, "nbf": 0}), 1002),  # no exp
    ],
)
def test_kling_jwt_checks(kling: TestClient, auth: str, code: int) -> None:
    status, body = kling_post(kling, GOOD, auth=auth)
    assert status == 401 and body["code"] == code and body["request_id"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"image": "data:image/png;base64," + RAW}, "data: prefix"),
        ({"duration": 5}, "as a string"),
        ({"model_name": "kling-v9"}, "not supported"),
        ({"prompt": "x" * 2501}, "2500"),
        ({"camera_control": {"type": "simple", "config": {"zoom": 5}}}, "only supported by kling-v1-5"),
        ({"image": base64.b64encode(image_bytes(200, 200)).decode()}, "at least 300px"),
    ],
)
def test_kling_field_rules(kling: TestClient, change: dict[str, Any], needle: str) -> None:
    status, body = kling_post(kling, {**GOOD, **change})
    assert status == 400 and body["code"] == 1201 and needle in body["message"]


def test_kling_camera_control_rules(kling: TestClient) -> None:
    base = {**GOOD, "model_name": "kling-v1-5", "mode": "pro"}
    ok = {"type": "simple", "config": {"horizontal": 0, "vertical": 0, "pan": 0, "tilt": 0, "roll": 0, "zoom": 4}}
    assert kling_post(kling, {**base, "camera_control": ok})[0] == 200
    two = {"type": "simple", "config": {"pan": 3, "zoom": 4}}
    assert "exactly one" in kling_post(kling, {**base, "camera_control": two})[1]["message"]
    both = kling_post(kling, {**base, "camera_control": ok, "image_tail": RAW})
    assert "cannot be used together" in both[1]["message"]


MOTION = {"model_name": "kling-v2-6", "mode": "std", "image_url": RAW, "video_url": "https://x.example/ref.mp4"}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"model_name": "kling-v1-5"}, "does not support motion control"),
        ({"mode": None}, "mode: required"),
        ({"duration": "5"}, "duration: not supported"),
        ({"video_url": None}, "video_url is required"),
        ({"video_url": "https://x.example/ref.gif"}, "only mp4/mov"),
        ({"video_url": "data:video/mp4;base64,AAAA"}, "data: prefix"),
        ({"image_url": "data:image/jpeg;base64," + RAW}, "data: prefix"),
        ({"character_orientation": "sideways"}, "character_orientation"),
    ],
)
def test_kling_motion_control_rules(kling: TestClient, change: dict[str, Any], needle: str) -> None:
    body = {k: v for k, v in {**MOTION, **change}.items() if v is not None}
    r = kling.post("/v1/videos/motion-control", json=body, headers={"Authorization": f"Bearer {token()}"})
    assert r.status_code == 400 and r.json()["code"] == 1201 and needle in r.json()["message"], r.json()


def test_kling_motion_control_task_is_queried_on_its_own_path(kling: TestClient) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    r = kling.post("/v1/videos/motion-control", json=MOTION, headers=auth)
    assert r.status_code == 200 and r.json()["code"] == 0
    task_id = r.json()["data"]["task_id"]
    assert kling.get(f"/v1/videos/motion-control/{task_id}", headers=auth).json()["data"]["task_id"] == task_id
    assert kling.get(f"/v1/videos/image2video/{task_id}", headers=auth).status_code == 200  # same task book
    assert kling.post("/v1/videos/motion-control", json=MOTION).status_code == 401


def test_kling_external_task_id_is_unique_and_queryable(kling: TestClient) -> None:
    status, body = kling_post(kling, {**GOOD, "external_task_id": "gw-1"})
    assert status == 200
    again = kling_post(kling, {**GOOD, "external_task_id": "gw-1"})
    assert again[0] == 400 and "already exists" in again[1]["message"]
    got = kling.get("/v1/videos/image2video/gw-1", headers={"Authorization": f"Bearer {token()}"}).json()
    assert got["data"]["task_id"] == body["data"]["task_id"]


@pytest.fixture
def wan() -> Iterator[TestClient]:
    with TestClient(create_wan_emulator(["sk-good"])) as c:
        yield c


WAN_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
WAN_BODY = {
    "model": "wan2.6-i2v",
    "input": {"prompt": "x", "img_url": data_uri(image_bytes(640, 480))},
    "parameters": {"resolution": "720P", "duration": 5},
}
WAN_HEADERS = {"Authorization": "Bearer sk-good", "X-DashScope-Async": "enable"}


def test_wan_accepts_a_good_request_with_http_200(wan: TestClient) -> None:
    """DashScope answers an accepted async task with 200 and the task PENDING (not 201)."""
    r = wan.post(WAN_PATH, json=WAN_BODY, headers=WAN_HEADERS)
    assert r.status_code == 200 and r.json()["output"]["task_status"] == "PENDING"


def test_wan_requires_async_header(wan: TestClient) -> None:
    r = wan.post(WAN_PATH, json=WAN_BODY, headers={"Authorization": "Bearer sk-good"})
    assert r.status_code == 403 and r.json()["code"] == "AccessDenied"


def test_wan_rejects_image_url_instead_of_img_url(wan: TestClient) -> None:
    body = {**WAN_BODY, "input": {"prompt": "x", "image_url": WAN_BODY["input"]["img_url"]}}
    r = wan.post(WAN_PATH, json=body, headers=WAN_HEADERS)
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter" and "img_url" in r.json()["message"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"resolution": "720p", "duration": 5}, "resolution"),
        ({"resolution": "720P", "duration": 7}, "duration"),
        ({"resolution": "720P", "duration": "5"}, "duration"),
    ],
)
def test_wan_parameter_rules(wan: TestClient, params: dict[str, Any], needle: str) -> None:
    r = wan.post(WAN_PATH, json={**WAN_BODY, "parameters": params}, headers=WAN_HEADERS)
    assert r.status_code == 400 and needle in r.json()["message"]


def test_wan_bad_key_and_unknown_task(wan: TestClient) -> None:
    r = wan.post(WAN_PATH, json=WAN_BODY, headers={**WAN_HEADERS, "Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
    r = wan.get("/api/v1/tasks/does-not-exist", headers=WAN_HEADERS)
    assert r.status_code == 200 and r.json()["output"]["task_status"] == "UNKNOWN"


def test_wan_image_size_limits(wan: TestClient) -> None:
    body = {**WAN_BODY, "input": {"prompt": "x", "img_url": data_uri(image_bytes(300, 300))}}
    r = wan.post(WAN_PATH, json=body, headers=WAN_HEADERS)
    assert r.status_code == 400 and "between 360 and 2000" in r.json()["message"]


@pytest.fixture
def minimax() -> Iterator[TestClient]:
    with TestClient(create_minimax_emulator(["mm-good"])) as c:
        yield c


MM_BODY = {
    "model": "MiniMax-Hailuo-2.3",
    "prompt": "x",
    "first_frame_image": data_uri(image_bytes(640, 480)),
    "duration": 6,
    "resolution": "768P",
}


def test_minimax_errors_come_inside_http_200(minimax: TestClient) -> None:
    r = minimax.post("/v1/video_generation", json=MM_BODY, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 200 and r.json()["base_resp"]["status_code"] == 1004
    auth = {"Authorization": "Bearer mm-good"}
    for change, needle in [
        ({"resolution": "768p"}, "resolution"),
        ({"resolution": "1080P", "duration": 10}, "duration"),
        ({"first_frame_image": None}, "required"),
    ]:
        r = minimax.post("/v1/video_generation", json={**MM_BODY, **change}, headers=auth)
        assert r.status_code == 200 and r.json()["base_resp"]["status_code"] == 2013 and needle in r.text


def test_minimax_file_id_string_then_int(minimax: TestClient) -> None:
    from adapters.emulators.common import TaskBook

    auth = {"Authorization": "Bearer mm-good"}
    task_id = minimax.post("/v1/video_generation", json=MM_BODY, headers=auth).json()["task_id"]
    book: TaskBook = minimax.app.state.book
    book.tasks[task_id].created -= 60  # fast-forward to the end
    q = minimax.get("/v1/query/video_generation", params={"task_id": task_id}, headers=auth).json()
    assert q["status"] == "Success" and isinstance(q["file_id"], str)
    f = minimax.get("/v1/files/retrieve", params={"file_id": q["file_id"]}, headers=auth).json()
    assert isinstance(f["file"]["file_id"], int) and f["file"]["download_url"].endswith("output.mp4")


def test_the_task_book_forgets_its_oldest_tasks_past_its_bound() -> None:
    import time as _time

    from adapters.emulators.common import EmulatorConfig, EmuTask, TaskBook

    book = TaskBook(EmulatorConfig(max_tasks=3))
    for i in range(5):
        task = EmuTask(id=f"t{i}", created=_time.time(), prompt="p", image=b"", width=2, height=2, seconds=1, fps=1)
        book.add(task, external_id=f"x{i}")
    assert list(book.tasks) == ["t2", "t3", "t4"] and set(book.by_external) == {"x2", "x3", "x4"}
    assert book.find("x1") is None and book.find("x4") is book.tasks["t4"]
