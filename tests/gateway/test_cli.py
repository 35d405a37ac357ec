"""The `i2v-gateway` command against a running gateway and with an in-process one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import pytest
from typer.testing import CliRunner

from gateway.cli import app
from tests.conftest import RULES, Gateway
from tests.support.images import data_uri, image_bytes

runner = CliRunner()


def test_generate_in_process_saves_an_mp4(tmp_path: Path, toy_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I2V_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("I2V_RULES_FILE", str(RULES))
    monkeypatch.setenv("I2V_ADAPTERS__TOY__CLASS_PATH", "tests.support.toy_adapter:ToyAdapter")
    monkeypatch.setenv("I2V_ADAPTERS__TOY__BASE_URL", toy_url)
    monkeypatch.setenv("I2V_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("I2V_LOG_LEVEL", "WARNING")
    image = tmp_path / "still.jpg"
    image.write_bytes(image_bytes())
    out = tmp_path / "clip.mp4"
    result = runner.invoke(
        app, ["generate", str(image), "--prompt", "slow zoom", "--in-process", "--out", str(out), "--seconds", "4"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["file"] == str(out)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_generate_reports_api_errors(tmp_path: Path, gateway: Gateway) -> None:
    image = tmp_path / "still.jpg"
    image.write_bytes(image_bytes())
    result = runner.invoke(app, ["generate", str(image), "--prompt", "x", "--model", "nope", "--base-url", gateway.url])
    assert result.exit_code == 1
    assert "unknown_model" in result.output


def test_models_and_jobs_commands(gateway: Gateway) -> None:
    result = runner.invoke(app, ["models", "--base-url", gateway.url])
    assert result.exit_code == 0 and "toy-fast" in result.stdout
    video = gateway.client.post("/v1/videos", json={"prompt": "[slow] x", "image": data_uri(image_bytes())}).json()
    listed = runner.invoke(app, ["jobs", "list", "--base-url", gateway.url])
    assert video["id"] in listed.stdout
    shown = runner.invoke(app, ["jobs", "show", video["id"], "--base-url", gateway.url])
    assert json.loads(shown.stdout)["id"] == video["id"]
    cancelled = runner.invoke(app, ["jobs", "cancel", video["id"], "--base-url", gateway.url])
    assert cancelled.exit_code == 0, cancelled.output
    assert gateway.wait(video["id"])["status"] == "cancelled"


def test_compare_writes_each_clip_and_a_side_by_side(tmp_path: Path, gateway_factory) -> None:
    from skimage import data

    from tests.support.photos import jpeg

    root = Path(__file__).resolve().parents[2]
    gw = gateway_factory(
        sandbox=True, sandbox_task_s=0.5, rules_file=root / "router_rules.yaml", adapters={}, quality_metrics=True
    )
    image = tmp_path / "cat.jpg"
    image.write_bytes(jpeg(data.chelsea()))
    models = "wan-2.6-i2v-flash,hailuo-2.3-fast"
    args = ["compare", str(image), "-p", "pan left", "--models", models, "-o", str(tmp_path), "--base-url", gw.url]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    files = [Path(f) for f in json.loads(result.stdout.strip().splitlines()[-1])["files"]]
    assert [f.name.split("_", 2)[2] for f in files] == ["A_wan-2.6-i2v-flash.mp4", "B_hailuo-2.3-fast.mp4"]
    both = next(tmp_path.glob("*_side_by_side.mp4"))
    with av.open(str(both)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.height == 360
    assert "pan_left" in result.output  # the summary table's camera column


def test_a_refused_connection_is_a_sentence_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from gateway.cli import main

    argv = sys.argv
    sys.argv = ["i2v-gateway", "models", "--base-url", "http://127.0.0.1:1"]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "cannot reach the gateway" in err and "Traceback" not in err


def test_serve_says_where_it_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """...and keeps idle connections longer than clients do (I2V_KEEP_ALIVE_S, 75 s unless set)."""
    import uvicorn

    monkeypatch.setenv("I2V_DATA_DIR", str(tmp_path / "data"))
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: runs.append(k))
    result = runner.invoke(app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "listening on http://127.0.0.1:8123" in result.output
    assert "API docs: http://127.0.0.1:8123/docs/swagger" in result.output
    monkeypatch.setenv("I2V_KEEP_ALIVE_S", "120")
    assert runner.invoke(app, ["serve", "--port", "8123"]).exit_code == 0
    assert [r["timeout_keep_alive"] for r in runs] == [75, 120]


def test_generate_in_process_keeps_the_terminal_free_of_json_logs(
    tmp_path: Path, toy_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("I2V_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("I2V_RULES_FILE", str(RULES))
    monkeypatch.setenv("I2V_ADAPTERS__TOY__CLASS_PATH", "tests.support.toy_adapter:ToyAdapter")
    monkeypatch.setenv("I2V_ADAPTERS__TOY__BASE_URL", toy_url)
    monkeypatch.setenv("I2V_POLL_INTERVAL_S", "0.05")
    image = tmp_path / "still.jpg"
    image.write_bytes(image_bytes())
    result = runner.invoke(app, ["generate", str(image), "-p", "zoom", "--in-process", "-o", str(tmp_path / "c.mp4")])
    assert result.exit_code == 0, result.output
    assert '"level"' not in result.output and '{"ts"' not in result.output
    assert "submitting" not in result.output
    # -v: the gateway's INFO logs, as plain lines
    loud = runner.invoke(
        app, ["-v", "generate", str(image), "-p", "zoom", "--in-process", "-o", str(tmp_path / "d.mp4")]
    )
    assert loud.exit_code == 0, loud.output
    assert "submitting" in loud.output and '{"ts"' not in loud.output
