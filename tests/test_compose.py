"""docker-compose.yml, run as it says: its services' own commands and environments started as
processes here (no Docker engine on CI), with host names mapped to loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.images import data_uri, image_bytes
from tests.support.postgres import temporary_database
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_compose_topology_runs_kling_jobs_on_the_worker_and_the_rest_on_the_replicas(tmp_path: Path) -> None:
    spec = services()
    assert set(spec) == {"postgres", "emu-wan", "emu-kling", "emu-minimax", "api-1", "api-2", "worker"}
    ports = {name: free_port() for name in spec}
    procs: list[subprocess.Popen[bytes]] = []

    def local(value: str, db: str) -> str:
        for name in spec:  # service host names -> loopback; container ports -> this run's ports
            for port in ("9101", "9102", "9103"):
                value = value.replace(f"http://{name}:{port}", f"http://127.0.0.1:{ports[name]}")
        return db if value.startswith("postgresql") else value

    with temporary_database() as db:
        try:
            for name, svc in spec.items():
                if name == "postgres":
                    continue
                cmd = list(svc["command"])
                assert cmd[0] == "i2v-gateway"
                if "--port" in cmd:
                    cmd[cmd.index("--port") + 1] = str(ports[name])
                if "--host" in cmd:
                    cmd[cmd.index("--host") + 1] = "127.0.0.1"
                env = {k: local(str(v), db) for k, v in (svc.get("environment") or {}).items()}
                env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "I2V_DATA_DIR": str(tmp_path / "data")}
                env |= {"I2V_PORT": str(ports[name]), "I2V_HOST": "127.0.0.1", "I2V_POLL_INTERVAL_S": "0.2"}
                env |= {"I2V_LOG_LEVEL": "WARNING"}
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway", *cmd[1:]],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            urls = {n: f"http://127.0.0.1:{ports[n]}" for n in ("api-1", "api-2", "worker")}
            for url in urls.values():
                _ready(f"{url}/readyz")
            assert httpx.get(f"{urls['worker']}/v1/models").status_code == 404  # a worker has no API
            key = json.loads(spec["api-1"]["environment"]["I2V_API_KEYS"])[0]
            auth = {"authorization": f"Bearer {key}"}
            assert httpx.get(f"{urls['api-1']}/v1/models").status_code == 401  # keys are on
            ids = []
            for i, model in enumerate(["kling-v2.1", "wan-2.6-i2v", "kling-v2.1", "hailuo-2.3-fast"]):
                front = urls["api-1" if i % 2 == 0 else "api-2"]
                body = {"model": model, "prompt": "leaves sway", "image": data_uri(image_bytes(640, 480))}
                resp = httpx.post(f"{front}/v1/videos", json=body, timeout=10, headers=auth)
                assert resp.status_code == 202, resp.text
                ids.append(resp.json()["id"])
            for vid in ids:
                _until(
                    lambda vid=vid: (
                        httpx.get(f"{urls['api-2']}/v1/videos/{vid}", headers=auth).json()["status"] == "completed"
                    )
                )
            kling_on = {n: _attempts(url, "kling") for n, url in urls.items()}
            assert kling_on == {"api-1": 0, "api-2": 0, "worker": 2}
            assert _attempts(urls["worker"], "wan") == 0
            assert _attempts(urls["api-1"], "wan") + _attempts(urls["api-2"], "wan") == 1
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(20)


def _attempts(url: str, adapter: str) -> int:
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("i2v_attempts_total{") and f'adapter="{adapter}"' in line and 'status="completed"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _ready(url: str) -> None:
    _until(lambda: _ok(url), 60)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _until(pred: Any, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.1)
