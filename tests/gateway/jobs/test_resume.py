"""Durability: a gateway killed with SIGKILL mid-job resumes it after restart, submitting once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.jobs.ids import new_id
from gateway.jobs.tables import AttemptRow
from tests.conftest import RULES, toy_stats
from tests.support.images import data_uri, image_bytes
from tests.support.postgres import temporary_database
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


class GatewayProcess:
    """`i2v-gateway serve` in a child process, as an operator runs it."""

    def __init__(self, data_dir: Path, toy_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "I2V_PORT": str(self.port),
            "I2V_DATA_DIR": str(data_dir),
            "I2V_RULES_FILE": str(RULES),
            "I2V_ADAPTERS__TOY__CLASS_PATH": "tests.support.toy_adapter:ToyAdapter",
            "I2V_ADAPTERS__TOY__BASE_URL": toy_url,
            "I2V_LEASE_S": "2",
            "I2V_POLL_INTERVAL_S": "0.1",
            "I2V_RUNNER_SCAN_INTERVAL_S": "0.1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode() if self.proc.stderr else "gateway exited")
            time.sleep(0.1)
        raise RuntimeError("gateway did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def get(self, video_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/videos/{video_id}", timeout=5).json()

    def get_events(self, video_id: str) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/v1/videos/{video_id}/events", timeout=5).json()["data"]


@pytest.fixture
def gw(tmp_path: Path, toy_url: str) -> Iterator[GatewayProcess]:
    g = GatewayProcess(tmp_path, toy_url)
    yield g
    g.stop()


def wait_for(pred: Any, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_sigkill_mid_job_resumes_the_recorded_task(gw: GatewayProcess, toy_url: str) -> None:
    gw.start()
    submits = toy_stats(toy_url)["submits"]
    video = httpx.post(
        f"{gw.url}/v1/videos", json={"prompt": "[run=3] a slow pan", "image": data_uri(image_bytes())}
    ).json()
    wait_for(
        lambda: (
            gw.get(video["id"])["route"]["attempts"][:1]
            and gw.get(video["id"])["route"]["attempts"][0]["provider_task_id"]
        )
    )
    task_id = gw.get(video["id"])["route"]["attempts"][0]["provider_task_id"]
    gw.kill()

    gw.start()  # same data dir: the lease of the dead process expires, then this one resumes
    wait_for(lambda: gw.get(video["id"])["status"] in ("completed", "failed"))
    final = gw.get(video["id"])
    assert final["status"] == "completed", final
    assert [a["provider_task_id"] for a in final["route"]["attempts"]] == [task_id]
    assert toy_stats(toy_url)["submits"] == submits + 1
    assert httpx.get(final["output"]["url"]).content[4:8] == b"ftyp"  # absolute and signed: no key needed


def test_sigkill_before_submit_then_restart_completes(gw: GatewayProcess, toy_url: str, tmp_path: Path) -> None:
    gw.env["I2V_RUNNER_ENABLED"] = "false"  # accept only: the job stays queued
    gw.start()
    video = httpx.post(f"{gw.url}/v1/videos", json={"prompt": "a pan", "image": data_uri(image_bytes())}).json()
    gw.kill()
    submits = toy_stats(toy_url)["submits"]
    gw.env["I2V_RUNNER_ENABLED"] = "true"
    gw.start()
    wait_for(lambda: gw.get(video["id"])["status"] == "completed")
    assert toy_stats(toy_url)["submits"] == submits + 1


def test_attempt_interrupted_during_submit_is_not_resubmitted(gw: GatewayProcess, toy_url: str) -> None:
    """A crash between writing the attempt and learning the task id: that attempt ends, the next
    candidate runs, and the first candidate is never called again."""
    gw.env["I2V_RUNNER_ENABLED"] = "false"
    gw.start()
    video = httpx.post(f"{gw.url}/v1/videos", json={"prompt": "a pan", "image": data_uri(image_bytes())}).json()
    gw.kill()

    import asyncio

    from gateway.jobs.store import JobStore
    from gateway.jobs.tables import make_engine

    async def add_submitting_attempt() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(gw.env['I2V_DATA_DIR']) / 'gateway.db'}")
        store = JobStore(engine)
        async with store.sessions.begin() as session:  # the rows a crash mid-submit leaves
            session.add(
                AttemptRow(
                    id=new_id("att"),
                    job_id=video["id"],
                    seq=0,
                    model="toy-fast",
                    adapter="toy",
                    provider_model="toy-1",
                    status="submitting",
                    task_data={},
                    usage={},
                )
            )
        await store.update(video["id"], status="in_progress")
        await engine.dispose()

    asyncio.run(add_submitting_attempt())
    submits = toy_stats(toy_url)["submits"]
    gw.env["I2V_RUNNER_ENABLED"] = "true"
    gw.start()
    wait_for(lambda: gw.get(video["id"])["status"] == "completed")
    final = gw.get(video["id"])
    attempts = final["route"]["attempts"]
    # the toy protocol has no id of ours to look the task up by: possibly submitted, never resent
    assert [(a["model"], a["status"]) for a in attempts] == [("toy-fast", "unconfirmed"), ("toy-backup", "completed")]
    assert attempts[0]["error"]["code"] == "interrupted"
    assert toy_stats(toy_url)["submits"] == submits + 1


def test_sighup_reloads_the_rules_of_a_running_gateway(tmp_path: Path, toy_url: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.read_text())
    g = GatewayProcess(tmp_path / "data", toy_url)
    g.env.update(I2V_RULES_FILE=str(rules), I2V_RULES_RELOAD_S="0")  # no file watching: only SIGHUP
    g.start()
    try:
        body = {"prompt": "leaves sway", "image": data_uri(image_bytes(320, 240))}

        def rule() -> str | None:
            return httpx.post(f"{g.url}/v1/route/explain", json=body, timeout=10).json()["rule"]

        before = rule()
        assert before is not None
        rules.write_text(RULES.read_text().replace(f"name: {before}", "name: after-sighup"))
        time.sleep(0.3)
        assert rule() == before  # nothing watches the file
        assert g.proc is not None
        g.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: rule() == "after-sighup", timeout=10)
        assert g.proc.poll() is None  # SIGHUP did not kill it
    finally:
        g.stop()


@pytest.mark.parametrize("family", ["wan", "kling", "hailuo"])
def test_sigkill_mid_job_resumes_against_the_provider_emulator(tmp_path: Path, toy_url: str, family: str) -> None:
    """The same crash, against a real provider protocol: after the restart the gateway polls the
    task the emulator already has, and the emulator sees exactly one submission."""
    from adapters.emulators.common import EmulatorConfig
    from gateway.sandbox import Sandbox

    sandbox = Sandbox(EmulatorConfig(queue_s=1.0, run_s=3.0))
    sandbox.start()
    server = {"wan": "wan", "kling": "kling", "hailuo": "minimax"}[family]
    model = {"wan": "wan-2.6-i2v", "kling": "kling-v2.1", "hailuo": "hailuo-2.3-fast"}[family]
    g = GatewayProcess(tmp_path / "data", toy_url)
    settings = sandbox.adapters[family]
    g.env.update(
        {
            "I2V_RULES_FILE": str(ROOT / "router_rules.yaml"),
            f"I2V_ADAPTERS__{family.upper()}__BASE_URL": settings.base_url or "",
            f"I2V_ADAPTERS__{family.upper()}__API_KEY": settings.api_key.get_secret_value() if settings.api_key else "",
        }
    )
    if settings.secret_key is not None:
        g.env[f"I2V_ADAPTERS__{family.upper()}__SECRET_KEY"] = settings.secret_key.get_secret_value()
    stats_url = f"{sandbox.servers[server].url}/_emulator/stats"
    try:
        g.start()
        before = httpx.get(stats_url).json()
        body = {"model": model, "prompt": "leaves sway", "image": data_uri(image_bytes(800, 600))}
        video = httpx.post(f"{g.url}/v1/videos", json=body).json()
        wait_for(lambda: (g.get(video["id"])["route"]["attempts"] or [{}])[0].get("provider_task_id"))
        task_id = g.get(video["id"])["route"]["attempts"][0]["provider_task_id"]
        g.kill()
        g.start()
        wait_for(lambda: g.get(video["id"])["status"] in ("completed", "failed"), timeout=60)
        final = g.get(video["id"])
        assert final["status"] == "completed", final
        assert [a["provider_task_id"] for a in final["route"]["attempts"]] == [task_id]
        after = httpx.get(stats_url).json()
        assert after["tasks"] - before.get("tasks", 0) == 1  # tasks the emulator created: one
    finally:
        g.stop()
        sandbox.stop()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_frozen_runner_that_lost_its_lease_never_writes_and_its_task_is_counted(
    tmp_path: Path, toy_url: str, database: str
) -> None:
    """Runner A is frozen (SIGSTOP) mid-submit for longer than its lease; runner B takes the job
    over, records the attempt `unconfirmed` and completes on the next candidate. When A wakes,
    its submit comes back with a task id: A writes nothing to the job (its lease is gone) and
    hands the task to the outbox, which counts its cost on the attempt. One task per attempt."""
    with contextlib.ExitStack() as stack:
        a, b = GatewayProcess(tmp_path, toy_url), GatewayProcess(tmp_path, toy_url)
        if database == "postgres":
            url = stack.enter_context(temporary_database())
            a.env["I2V_DATABASE_URL"] = b.env["I2V_DATABASE_URL"] = url
        stack.callback(a.stop)
        stack.callback(b.stop)
        before = toy_stats(toy_url)
        a.start()
        video = httpx.post(
            f"{a.url}/v1/videos", json={"prompt": "[submit-delay=3] a pan", "image": data_uri(image_bytes())}
        ).json()
        wait_for(lambda: [x["status"] for x in a.get(video["id"])["route"]["attempts"]] == ["submitting"])
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        b.start()
        wait_for(lambda: b.get(video["id"])["status"] == "completed")
        a.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: b.get(video["id"])["route"]["attempts"][0]["cost_usd"] is not None)
        final = b.get(video["id"])
        attempts = final["route"]["attempts"]
        assert [(x["model"], x["status"]) for x in attempts] == [
            ("toy-fast", "unconfirmed"),
            ("toy-backup", "completed"),
        ]
        assert attempts[0]["provider_task_id"]  # the task A created, found by its trail
        assert final["metrics"]["cost_usd"] == pytest.approx(attempts[0]["cost_usd"] + attempts[1]["cost_usd"])
        after = toy_stats(toy_url)
        assert (after["submits"] - before["submits"], after["tasks"] - before["tasks"]) == (2, 2)
        trail = next(e for e in b.get_events(video["id"]) if e["type"] == "trail")
        assert trail["data"]["status"] == "delivered" and "counted" in trail["data"]["log"][-1]["detail"]
