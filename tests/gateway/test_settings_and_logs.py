"""Settings from a config file and the environment; JSON logs that carry the job id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.logs import JSONFormatter, job_id_var
from gateway.settings import Settings


def test_config_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("port: 9000\nlease_s: 12\napi_keys: [k1]\nadapters:\n  kling: {api_key: AK, secret_key: SK}\n")
    monkeypatch.setenv("I2V_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("I2V_LEASE_S", "7")  # the environment wins over the file
    s = Settings()
    assert s.port == 9000 and s.lease_s == 7
    assert [k.get_secret_value() for k in s.api_keys] == ["k1"]
    assert s.adapters["kling"].secret_key is not None and s.adapters["kling"].secret_key.get_secret_value() == "SK"
    assert "SK" not in repr(s)  # secrets never print


def test_toml_config_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('host = "0.0.0.0"\n[adapters.wan]\napi_key = "sk"\nmax_concurrency = 3\n')
    monkeypatch.setenv("I2V_CONFIG_FILE", str(cfg))
    s = Settings()
    assert s.host == "0.0.0.0" and s.adapters["wan"].max_concurrency == 3
    monkeypatch.setenv("I2V_CONFIG_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        Settings()


def test_json_log_lines_carry_the_job_id() -> None:
    record = logging.LogRecord("i2v.runner", logging.INFO, __file__, 1, "submitted", None, None)
    record.model = "wan-2.6-i2v"
    token = job_id_var.set("vid_123")
    try:
        line = json.loads(JSONFormatter().format(record))
    finally:
        job_id_var.reset(token)
    assert line["msg"] == "submitted" and line["job_id"] == "vid_123" and line["model"] == "wan-2.6-i2v"
    assert line["level"] == "info" and line["logger"] == "i2v.runner"
