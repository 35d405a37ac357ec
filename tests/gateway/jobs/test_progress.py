"""Progress reads 0 -> 100 and never backwards, for every adapter: estimated from the model's usual
latency where the provider reports none (Kling, MiniMax), kept as a floor across fallbacks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from skimage import data

from gateway.jobs.present import estimated_progress, shown_progress
from gateway.jobs.tables import AttemptRow, JobRow
from tests.conftest import Gateway
from tests.support.images import data_uri
from tests.support.photos import jpeg

ROOT = Path(__file__).resolve().parents[3]
CAT = data_uri(jpeg(data.chelsea()))


def test_the_estimate_climbs_to_90_at_the_usual_latency_then_creeps_short_of_100() -> None:
    seen = [estimated_progress(t / 10, 10.0) for t in range(0, 1000)]
    assert seen == sorted(seen)
    assert estimated_progress(5, 10) == 45 and estimated_progress(10, 10) == 90
    assert max(seen) == 98 and estimated_progress(1e6, 10) == 99  # never 100 before the clip exists


def _job(progress: int, expected_s: float) -> JobRow:
    return JobRow(id="vid_x", status="in_progress", progress=progress, request={"expected_s": expected_s})


def _attempt(model: str, submitted_at: float, status: str) -> AttemptRow:
    return AttemptRow(id=f"att_{model}", model=model, submitted_at=submitted_at, status=status)


def test_a_fallback_starts_from_the_progress_shown_before_it() -> None:
    now = 1000.0
    first = _attempt("fast", now - 9, "failed")
    job = _job(0, expected_s=10)
    before = shown_progress(job, [first], now)
    assert before == 81
    # the runner stores what was shown as the floor when it submits the fallback (a slower model)
    job = _job(before, expected_s=200)
    second = _attempt("slow", now, "in_progress")
    readings = [shown_progress(job, [first, second], now + t) for t in range(0, 400, 5)]
    assert readings[0] == before and readings == sorted(readings) and readings[-1] > before


@pytest.fixture
def sandbox(gateway_factory: Any) -> Gateway:
    return gateway_factory(sandbox=True, sandbox_task_s=1.5, rules_file=ROOT / "router_rules.yaml", adapters={})


@pytest.mark.parametrize("model", ["kling-v2.1", "hailuo-2.3-fast", "wan-2.6-i2v-flash"])
def test_progress_moves_before_the_end_and_never_backwards(sandbox: Gateway, model: str) -> None:
    body = {"prompt": "the cat blinks", "image": CAT, "model": model}
    first = sandbox.client.post("/v1/videos", json=body).json()
    assert sandbox.wait(first["id"], 30)["status"] == "completed"  # the runner learns the usual latency
    video = sandbox.client.post("/v1/videos", json=body).json()
    readings: list[tuple[str, int]] = []
    deadline = time.time() + 30
    while time.time() < deadline:
        v = sandbox.client.get(f"/v1/videos/{video['id']}").json()
        readings.append((v["status"], v["progress"]))
        if v["status"] == "completed":
            break
        time.sleep(0.05)
    values = [p for _, p in readings]
    assert values == sorted(values), readings
    assert readings[-1] == ("completed", 100)
    assert any(s == "in_progress" and 30 <= p < 100 for s, p in readings), readings
