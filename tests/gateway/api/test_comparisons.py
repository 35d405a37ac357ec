"""Comparisons through the sandbox emulators: arms side by side, votes, the leaderboard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from skimage import data

from tests.conftest import Gateway
from tests.support.images import data_uri
from tests.support.photos import jpeg

ROOT = Path(__file__).resolve().parents[3]
PHOTO = jpeg(data.chelsea())
ARMS = ["wan-2.6-i2v-flash", "hailuo-2.3-fast", "kling-v2.1"]


@pytest.fixture
def sandbox(gateway_factory: Any) -> Gateway:
    return gateway_factory(
        sandbox=True, sandbox_task_s=0.5, rules_file=ROOT / "router_rules.yaml", adapters={}, quality_metrics=True
    )


def compare(gw: Gateway, models: list[str], **fields: Any) -> Any:
    body = {"prompt": "slow pan left across the cat", "image": data_uri(PHOTO), "models": models, **fields}
    return gw.client.post("/v1/comparisons", json=body)


def wait(gw: Gateway, cid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        cmp = gw.client.get(f"/v1/comparisons/{cid}").json()
        measuring = any((q or {}).get("pending") for q in cmp["summary"]["quality"].values())
        if (cmp["status"] in ("completed", "failed", "cancelled") and not measuring) or time.time() > deadline:
            return cmp
        time.sleep(0.1)


def test_a_comparison_runs_every_arm_as_its_own_job_and_summarises_them(sandbox: Gateway) -> None:
    resp = compare(sandbox, ARMS)
    assert resp.status_code == 202, resp.text
    made = resp.json()
    assert made["object"] == "comparison" and made["id"].startswith("cmp_")
    assert [a["label"] for a in made["arms"]] == ["A", "B", "C"]
    assert [a["video"]["route"]["candidates"] for a in made["arms"]] == [[m] for m in ARMS]  # fallbacks off
    cmp = wait(sandbox, made["id"])
    assert cmp["status"] == "completed", cmp
    adapters = [a["video"]["route"]["attempts"][0]["adapter"] for a in cmp["arms"]]
    assert adapters == ["wan", "hailuo", "kling"]
    summary = cmp["summary"]
    assert summary["completed"] == 3 and summary["failed"] == 0
    assert summary["first_finished"] in ("A", "B", "C")
    assert all(summary["cost_usd"][label] > 0 for label in "ABC")
    assert summary["total_cost_usd"] == pytest.approx(sum(summary["cost_usd"].values()))
    assert all(summary["quality"][label]["camera_motion"] == "pan_left" for label in "ABC")
    # each arm is an ordinary video too
    one = sandbox.client.get(f"/v1/videos/{cmp['arms'][1]['video']['id']}").json()
    assert one["status"] == "completed" and one["model"] == "hailuo-2.3-fast"
    listed = sandbox.client.get("/v1/comparisons").json()
    assert [c["id"] for c in listed["data"]] == [made["id"]]


def test_multipart_comparison_with_auto_as_an_arm(sandbox: Gateway) -> None:
    resp = sandbox.client.post(
        "/v1/comparisons",
        data={"prompt": "leaves drift", "models": "auto,hailuo-2.3-fast", "seconds": "6"},
        files={"input_reference": ("cat.jpg", PHOTO, "image/jpeg")},
    )
    assert resp.status_code == 202, resp.text
    arms = resp.json()["arms"]
    assert arms[0]["model"] == "auto" and arms[0]["video"]["route"]["rule"] is not None
    assert len(arms[0]["video"]["route"]["candidates"]) == 1


@pytest.mark.parametrize(
    ("fields", "status", "code", "param"),
    [
        ({"models": ["wan-2.6-i2v-flash"]}, 422, "invalid_field", "models"),
        ({"models": ["wan-2.6-i2v-flash", "nope"]}, 422, "unknown_model", "models.1"),
        ({"models": ARMS, "model": "kling-v2.1"}, 422, "invalid_field", "model"),
        (
            {"models": ["wan-2.6-i2v-flash", "kling-v2.6-motion"], "seconds": 15, "strict_duration": True},
            422,
            "arm_cannot_run",
            "models.1",
        ),
    ],
)
def test_bad_comparisons_say_what_to_fix(sandbox: Gateway, fields: dict, status: int, code: str, param: str) -> None:
    body = {"prompt": "pan left", "image": data_uri(PHOTO), **fields}
    resp = sandbox.client.post("/v1/comparisons", json=body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert (err["code"], err["param"]) == (code, param)


def test_with_fallbacks_an_arm_may_run_another_model(sandbox: Gateway) -> None:
    resp = compare(
        sandbox, ["wan-2.6-i2v-flash", "kling-v2.6-motion"], seconds=15, strict_duration=True, fallbacks=True
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["arms"][1]["video"]["model"] == "wan-2.6-i2v"


def test_votes_are_blind_until_cast_replace_earlier_ones_and_move_the_leaderboard(sandbox: Gateway) -> None:
    cid = compare(sandbox, ARMS[:2]).json()["id"]
    early = sandbox.client.post(f"/v1/comparisons/{cid}/votes", json={"choice": "A"})
    assert early.status_code in (201, 409)  # the arms may already be done on a fast machine
    assert wait(sandbox, cid)["status"] == "completed"
    bad = sandbox.client.post(f"/v1/comparisons/{cid}/votes", json={"choice": "C"})
    assert bad.status_code == 422 and "A, B, tie, both_bad" in bad.json()["error"]["message"]
    vote = sandbox.client.post(f"/v1/comparisons/{cid}/votes", json={"choice": "b", "voter": "ann"})
    assert vote.status_code == 201, vote.text
    assert vote.json()["revealed"] == {"A": ARMS[0], "B": ARMS[1]}
    sandbox.client.post(f"/v1/comparisons/{cid}/votes", json={"choice": "tie", "voter": "bob"})
    board = sandbox.client.get("/v1/leaderboard").json()
    scores = {r["model"]: r for r in board["data"]}
    assert board["votes"] == 2 + (early.status_code == 201)
    assert scores[ARMS[1]]["score"] > scores[ARMS[0]]["score"]
    assert scores[ARMS[1]]["ci_low"] <= scores[ARMS[1]]["score"] <= scores[ARMS[1]]["ci_high"]
    # ann changes her mind: one vote each, the latest counts
    sandbox.client.post(f"/v1/comparisons/{cid}/votes", json={"choice": "A", "voter": "ann"})
    cmp = sandbox.client.get(f"/v1/comparisons/{cid}").json()
    assert cmp["summary"]["votes"]["tie"] == 1 and cmp["summary"]["votes"]["best"]["A"] >= 1
    assert cmp["summary"]["votes"]["best"]["B"] == 0
    scores = {r["model"]: r["score"] for r in sandbox.client.get("/v1/leaderboard").json()["data"]}
    assert scores[ARMS[0]] > scores[ARMS[1]]


def test_cancel_stops_every_running_arm(gateway_factory: Any) -> None:
    slow = gateway_factory(sandbox=True, sandbox_task_s=30, rules_file=ROOT / "router_rules.yaml", adapters={})
    # DashScope cancels a task still PENDING (Kling and MiniMax cannot cancel: their arms would
    # run to the end, cost counted, as for any video)
    cid = compare(slow, ["wan-2.6-i2v-flash", "wan-2.5-i2v-preview"]).json()["id"]
    resp = slow.client.post(f"/v1/comparisons/{cid}/cancel")
    assert resp.status_code == 200
    cmp = wait(slow, cid, timeout=20)
    assert cmp["status"] == "cancelled", cmp
    assert all(a["video"]["status"] == "cancelled" for a in cmp["arms"])


def test_another_key_never_sees_a_comparison(gateway_factory: Any) -> None:
    gw = gateway_factory(
        sandbox=True, sandbox_task_s=0.5, rules_file=ROOT / "router_rules.yaml", adapters={}, api_keys=["k1", "k2"]
    )
    mine = {"authorization": "Bearer k1"}
    theirs = {"authorization": "Bearer k2"}
    body = {"prompt": "pan left", "image": data_uri(PHOTO), "models": ARMS[:2]}
    cid = gw.client.post("/v1/comparisons", json=body, headers=mine).json()["id"]
    assert gw.client.get(f"/v1/comparisons/{cid}", headers=mine).status_code == 200
    assert gw.client.get(f"/v1/comparisons/{cid}", headers=theirs).status_code == 404
    assert gw.client.post(f"/v1/comparisons/{cid}/votes", json={"choice": "A"}, headers=theirs).status_code == 404
    assert gw.client.get("/v1/comparisons", headers=theirs).json()["data"] == []


def test_an_idempotency_key_replays_the_comparison_and_never_runs_arms_twice(sandbox: Gateway) -> None:
    key = {"idempotency-key": "cmp-retry-1"}
    body = {"prompt": "pan left", "image": data_uri(PHOTO), "models": ARMS[:2]}
    first = sandbox.client.post("/v1/comparisons", json=body, headers=key)
    again = sandbox.client.post("/v1/comparisons", json=body, headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == first.json()["id"]
    videos = sandbox.client.get("/v1/videos?limit=100").json()["data"]
    assert len(videos) == 2  # one job per arm, once
    other = sandbox.client.post("/v1/comparisons", json={**body, "prompt": "tilt up"}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
