"""A tiny random-weight Wan I2V pipeline, saved once per session and loaded through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_engine.tiny import save_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("weights") / "wan-tiny")
