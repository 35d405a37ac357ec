"""Shared fixtures: a toy provider and a gateway, each on a real loopback socket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.settings import AdapterSettings, Settings
from tests.support.servers import serve_in_thread
from tests.support.toy_provider import create_toy_provider

RULES = Path(__file__).parent / "support" / "rules.yaml"


@pytest.fixture(scope="session")
def toy_url() -> Iterator[str]:
    with serve_in_thread(create_toy_provider()) as url:
        yield url


def toy_stats(toy_url: str) -> dict[str, Any]:
    return httpx.get(f"{toy_url}/stats").json()


def make_settings(data_dir: Path, toy_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "rules_file": RULES,
        "adapters": {"toy": AdapterSettings(class_path="tests.support.toy_adapter:ToyAdapter", base_url=toy_url)},
        "poll_interval_s": 0.05,
        "runner_scan_interval_s": 0.05,
        "log_json": False,
        "log_level": "WARNING",
        # measuring every clip costs CPU in every test that finishes a job; the tests of the
        # measurement (quality, comparisons, experiments, sandbox moves) turn it on
        "quality_metrics": False,
        "sandbox_max_side": 640,  # light clips; the size tests ask for real ones
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Gateway:
    url: str
    settings: Settings
    client: httpx.Client

    def wait(self, video_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            video = self.client.get(f"/v1/videos/{video_id}").json()
            measuring = ((video.get("metrics") or {}).get("quality") or {}).get("pending")  # follows completed
            if (video["status"] in ("completed", "failed", "cancelled") and not measuring) or time.time() > deadline:
                return video
            time.sleep(0.05)


@pytest.fixture
def gateway_factory(tmp_path: Path, toy_url: str) -> Iterator[Any]:
    stack: list[Any] = []

    def start(**overrides: Any) -> Gateway:
        settings = make_settings(tmp_path / f"gw{len(stack)}", toy_url, **overrides)
        cm = serve_in_thread(create_app(settings))
        url = cm.__enter__()
        client = httpx.Client(base_url=url, timeout=30)
        stack.append((cm, client))
        return Gateway(url, settings, client)

    yield start
    for cm, client in reversed(stack):
        client.close()
        cm.__exit__(None, None, None)


@pytest.fixture
def gateway(gateway_factory: Any) -> Gateway:
    return gateway_factory()
