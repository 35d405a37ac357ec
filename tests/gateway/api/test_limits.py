"""A key's limits: requests per minute, jobs at once, budget; held across replicas by the database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app
from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes
from tests.support.postgres import temporary_database

runner = CliRunner()
BODY = {"model": "toy-fast", "seconds": 2, "resolution": "480p", "image": data_uri(image_bytes())}


def make_key(*args: str) -> dict[str, str]:
    result = runner.invoke(app, ["keys", "create", *args])
    assert result.exit_code == 0, result.output
    return {"authorization": f"Bearer {result.stdout.strip().splitlines()[-1]}"}


@pytest.fixture
def gw(gateway_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    g = gateway_factory(key_cache_s=0)
    monkeypatch.setenv("I2V_DATA_DIR", str(g.settings.data_dir))
    return g


def test_requests_per_minute(gw: Gateway) -> None:
    tight, other = make_key("--name", "tight", "--rpm", "3"), make_key("--name", "other")
    assert [gw.client.get("/v1/videos", headers=tight).status_code for _ in range(3)] == [200] * 3
    refused = gw.client.get("/v1/videos", headers=tight)
    assert refused.status_code == 429
    assert (
        refused.json()["error"]["code"] == "rate_limited"
        and "3 requests a minute" in refused.json()["error"]["message"]
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert gw.client.get("/v1/videos", headers=other).status_code == 200
    assert 'i2v_key_refusals_total{key="tight",reason="rate_limited"} 1.0' in gw.client.get("/metrics").text


def test_jobs_at_once(gw: Gateway) -> None:
    key = make_key("--name", "two", "--concurrency", "2")
    gw.client.headers.update(key)  # gw.wait reads with it
    slow = {**BODY, "prompt": "[slow] pan"}
    first, second = (gw.client.post("/v1/videos", json=slow, headers=key) for _ in range(2))
    assert first.status_code == second.status_code == 202
    third = gw.client.post("/v1/videos", json=slow, headers=key)
    assert third.status_code == 429 and third.json()["error"]["code"] == "concurrency"
    comparison = {**slow, "models": ["toy-fast", "toy-backup"]}
    comparison.pop("model")
    assert gw.client.post("/v1/comparisons", json=comparison, headers=key).status_code == 429
    gw.client.post(f"/v1/videos/{first.json()['id']}/cancel", headers=key)
    assert gw.wait(first.json()["id"])["status"] == "cancelled"
    assert gw.client.post("/v1/videos", json=slow, headers=key).status_code == 202


def test_budget_reserves_estimates_and_settles_actual_costs(gw: Gateway) -> None:
    key = make_key("--name", "thrifty", "--budget-usd", "0.05", "--period", "day")
    gw.client.headers.update(key)
    ids = []
    for _ in range(2):  # toy-fast at 480p: $0.01/s x 2 s = $0.02 each, reserved up front
        resp = gw.client.post("/v1/videos", json={**BODY, "prompt": "pan"}, headers=key)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    refused = gw.client.post("/v1/videos", json={**BODY, "prompt": "pan"}, headers=key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert "$0.05 a day" in refused.json()["error"]["message"] and int(refused.headers["retry-after"]) <= 86401
    costs = [gw.wait(i)["metrics"]["cost_usd"] for i in ids]
    assert sum(costs) == pytest.approx(0.04)  # settled at actual cost: still no room for $0.02 more
    assert gw.client.post("/v1/videos", json={**BODY, "prompt": "pan"}, headers=key).status_code == 429


@pytest.mark.postgres
def test_jobs_at_once_hold_across_two_replicas(
    gateway_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with temporary_database() as db:
        # one blob store, as replicas share a volume: a job is run by whichever replica claims it
        replicas = [gateway_factory(database_url=db, key_cache_s=0, blob_dir=tmp_path / "blobs") for _ in range(2)]
        monkeypatch.setenv("I2V_DATABASE_URL", db)
        key = make_key("--name", "shared", "--concurrency", "3")
        slow = {**BODY, "prompt": "[slow] pan"}

        def post(i: int) -> int:
            return httpx.post(f"{replicas[i % 2].url}/v1/videos", json=slow, headers=key, timeout=30).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(post, range(12)))
        assert sorted(codes) == [202] * 3 + [429] * 9
        running = replicas[0].client.get("/v1/videos?limit=100", headers=key).json()["data"]
        assert len(running) == 3
        for v in running:
            replicas[0].client.post(f"/v1/videos/{v['id']}/cancel", headers=key)


@pytest.mark.postgres
def test_a_budget_holds_under_concurrent_creates_on_two_replicas(
    gateway_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """12 creates at once, half on each replica, against a $0.05 budget of $0.02 jobs: estimates
    are reserved in the create transaction, so exactly two get in and the spend settled from
    actual costs never passes the budget by more than one job's estimate."""
    with temporary_database() as db:
        # one blob store, as replicas share a volume: a job is run by whichever replica claims it
        replicas = [gateway_factory(database_url=db, key_cache_s=0, blob_dir=tmp_path / "blobs") for _ in range(2)]
        monkeypatch.setenv("I2V_DATABASE_URL", db)
        key = make_key("--name", "shared-budget", "--budget-usd", "0.05", "--period", "day")
        body = {**BODY, "prompt": "pan"}

        def post(i: int) -> httpx.Response:
            return httpx.post(f"{replicas[i % 2].url}/v1/videos", json=body, headers=key, timeout=30)

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(post, range(12)))
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code != 202]
        assert len(accepted) == 2, [a.status_code for a in answers]
        assert all(a.status_code == 429 and a.json()["error"]["code"] == "budget_exceeded" for a in refused)
        replicas[0].client.headers.update(key)
        spent = sum(replicas[0].wait(i)["metrics"]["cost_usd"] for i in accepted)
        assert spent <= 0.05 + 0.02


def test_requests_per_minute_in_redis_hold_across_two_replicas(
    gateway_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({exc!r})")
    with temporary_database() as db:
        replicas = [
            gateway_factory(
                database_url=db, key_cache_s=0, redis_url="redis://127.0.0.1:6379/0", blob_dir=tmp_path / "blobs"
            )
            for _ in range(2)
        ]
        monkeypatch.setenv("I2V_DATABASE_URL", db)
        key = make_key("--name", "redis-rpm", "--rpm", "5")

        def get(i: int) -> int:
            return httpx.get(f"{replicas[i % 2].url}/v1/videos", headers=key, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(get, range(12)))
        # a minute boundary inside the burst could allow up to 10; the burst takes well under a second
        assert codes.count(200) == 5 or (5 < codes.count(200) <= 10), codes
        assert set(codes) <= {200, 429}
