"""The runner: idempotent create, fallback across candidates, unusable results, webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Request, post
from litestar.datastructures import State

from tests.conftest import Gateway, toy_stats
from tests.support.images import data_uri, image_bytes
from tests.support.servers import serve_in_thread


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "gentle pan right", "image": data_uri(image_bytes()), **fields}


def test_idempotency_key_replays_without_second_submission(gateway: Gateway, toy_url: str) -> None:
    b = body(seconds=2)
    first = gateway.client.post("/v1/videos", json=b, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    gateway.wait(first.json()["id"])
    submits = toy_stats(toy_url)["submits"]
    again = gateway.client.post("/v1/videos", json=b, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "completed"
    time.sleep(0.3)
    assert toy_stats(toy_url)["submits"] == submits
    assert len(gateway.client.get("/v1/videos").json()["data"]) == 1


def test_idempotency_key_with_other_body_is_422(gateway: Gateway) -> None:
    gateway.client.post("/v1/videos", json=body(seconds=2), headers={"Idempotency-Key": "k-2"})
    resp = gateway.client.post("/v1/videos", json=body(seconds=4), headers={"Idempotency-Key": "k-2"})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "idempotency_key_reused" and err["param"] == "Idempotency-Key"


def test_late_failure_falls_back_to_next_candidate(gateway: Gateway) -> None:
    video = gateway.client.post("/v1/videos", json=body(prompt="[fail-late] birds fly")).json()
    # both toy models fail late on this prompt: two attempts, then the job fails with the last error
    final = gateway.wait(video["id"])
    assert final["status"] == "failed"
    assert [(a["model"], a["status"]) for a in final["route"]["attempts"]] == [
        ("toy-fast", "failed"),
        ("toy-backup", "failed"),
    ]
    assert final["error"]["code"] == "provider_error" and final["error"]["provider"] == "toy"


def test_content_policy_does_not_fall_back(gateway: Gateway) -> None:
    video = gateway.client.post("/v1/videos", json=body(prompt="[reject] something")).json()
    final = gateway.wait(video["id"])
    assert final["status"] == "failed"
    assert len(final["route"]["attempts"]) == 1
    assert final["error"]["code"] == "content_policy"
    assert final["metrics"]["cost_usd"] == 0.0


def test_result_that_is_not_a_video_fails_the_attempt(gateway: Gateway) -> None:
    video = gateway.client.post("/v1/videos", json=body(prompt="[not-video] x", model="toy-unpriced")).json()
    final = gateway.wait(video["id"])
    assert final["status"] == "failed"
    assert "not a video" in final["error"]["message"]


def test_deadline_fails_with_timeout_and_cancels_at_provider(gateway: Gateway, toy_url: str) -> None:
    cancels = toy_stats(toy_url)["cancels"]
    video = gateway.client.post("/v1/videos", json=body(prompt="[slow] dusk", deadline_s=0.5)).json()
    final = gateway.wait(video["id"])
    assert final["status"] == "failed" and final["error"]["code"] == "timeout"
    # the cancel goes out through the outbox, after the terminal write a client already sees
    deadline = time.time() + 10
    while toy_stats(toy_url)["cancels"] == cancels and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and only once
    assert toy_stats(toy_url)["cancels"] == cancels + 1


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    @post("/hook", status_code=204)
    async def hook(request: Request[Any, Any, Any], state: State) -> None:
        got.append({"headers": dict(request.headers), "body": await request.body()})

    with serve_in_thread(Litestar([hook])) as url:
        yield url, got


def test_webhook_on_completion_is_signed(gateway_factory, receiver) -> None:
    url, got = receiver
    gw = gateway_factory(webhook_secret="whsec_test", image_fetch_allow_networks=["127.0.0.1/32"])
    video = gw.client.post("/v1/videos", json=body(webhook_url=f"{url}/hook")).json()
    gw.wait(video["id"])
    for _ in range(100):
        if got:
            break
        time.sleep(0.05)
    assert len(got) == 1
    h, raw = got[0]["headers"], got[0]["body"]
    payload = json.loads(raw)
    assert payload["type"] == "video.completed"
    assert payload["data"]["id"] == video["id"] and payload["data"]["status"] == "completed"
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + raw
    expected = base64.b64encode(hmac.new(b"test", signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{expected}"


def test_webhook_to_private_address_is_not_sent(gateway: Gateway, receiver) -> None:
    url, got = receiver  # the default policy refuses loopback targets
    video = gateway.client.post("/v1/videos", json=body(webhook_url=f"{url}/hook")).json()
    assert gateway.wait(video["id"])["status"] == "completed"
    time.sleep(0.3)
    assert got == []


def test_cancel_sent_to_another_gateway_process_reaches_the_runner(gateway_factory, toy_url: str) -> None:
    """Two gateways on one database: the one without a runner takes the cancel; the runner in the
    other sees the flag at its next database check (`cancel_check_s`) and cancels at the provider."""
    worker = gateway_factory(cancel_check_s=0.2)
    front = gateway_factory(
        database_url=worker.settings.resolved_database_url,
        blob_dir=worker.settings.resolved_blob_dir,
        runner_enabled=False,
    )
    video = front.client.post("/v1/videos", json=body(prompt="[slow] clouds drift")).json()
    deadline = time.time() + 10
    while (
        not (attempts := worker.client.get(f"/v1/videos/{video['id']}").json()["route"]["attempts"])
        or not attempts[0]["provider_task_id"]
    ):
        assert time.time() < deadline
        time.sleep(0.05)
    before = toy_stats(toy_url)["cancels"]
    assert front.client.post(f"/v1/videos/{video['id']}/cancel").status_code == 200
    final = worker.wait(video["id"])
    assert final["status"] == "cancelled" and final["error"]["code"] == "cancelled"
    assert toy_stats(toy_url)["cancels"] == before + 1


def test_a_backlog_is_claimed_in_batches_and_all_of_it_runs(gateway_factory: Any, tmp_path: Path) -> None:
    """A process with room for hundreds claims at most `runner_claim_batch` per scan (claiming a
    backlog of thousands at one go starved the lease renewals of a 2-core replica: its leases
    ran out before it could submit), and takes the next batch at once, not after a scan wait."""
    from gateway.jobs.store import JobStore

    limits: list[int] = []
    real = JobStore.claim

    async def claim(self: JobStore, runner_id: str, limit: int, *args: Any, **kwargs: Any) -> list[str]:
        limits.append(limit)
        return await real(self, runner_id, limit, *args, **kwargs)

    gw = gateway_factory(runner_enabled=False)
    ids = [gw.client.post("/v1/videos", json=body()).json()["id"] for _ in range(12)]
    (tmp_path / "gw1").mkdir()
    (tmp_path / "gw1" / "blobs").symlink_to(gw.settings.data_dir / "blobs")  # the second process's photos
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JobStore, "claim", claim)
        runner = gateway_factory(
            database_url=gw.settings.resolved_database_url,
            runner_claim_batch=5,
            runner_concurrency=500,
            runner_scan_interval_s=5.0,
        )
        finals = [runner.wait(i, timeout=30) for i in ids]
    assert all(f["status"] == "completed" for f in finals)
    assert limits[:3] == [5, 5, 5]  # the 12 waiting jobs in full batches back to back, none above 5


def test_completed_does_not_wait_for_the_quality_measurement(gateway_factory, monkeypatch) -> None:
    """The job is `completed` (its video downloadable) while its clip is still being measured;
    `metrics.quality` says pending, then holds the measurement."""
    import threading

    from gateway.jobs import quality

    gate, measure = threading.Event(), quality._analyse
    monkeypatch.setattr(quality, "_analyse", lambda *a: gate.wait(30) and measure(*a))
    gw = gateway_factory(quality_metrics=True, quality_processes=0)  # the gate lives in this process
    vid = gw.client.post("/v1/videos", json=body()).json()["id"]
    deadline = time.time() + 20
    while (video := gw.client.get(f"/v1/videos/{vid}").json())["status"] != "completed" and time.time() < deadline:
        time.sleep(0.05)
    assert video["status"] == "completed" and video["metrics"]["quality"] == {"pending": True}
    assert gw.client.get(f"/v1/videos/{vid}/content").status_code == 200
    gate.set()
    measured = gw.wait(vid)["metrics"]["quality"]
    assert measured["frames_decoded"] > 0 and "pending" not in measured
