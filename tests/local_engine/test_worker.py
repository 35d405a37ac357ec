"""The engine as a GPU worker runs it: the pipeline loads when the engine starts (health says
loading, then ready, or failed with the reason), never inside the first job; /healthz, /readyz
and /metrics report it. And a LoRA (a step- and CFG-distilled one, say) is fused at load."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gateway.settings import AdapterSettings
from local_engine import engine as engine_module
from local_engine.config import EngineConfig
from local_engine.engine import LocalEngine, load_pipeline
from tests.local_engine.test_local_adapter import RULES
from tests.support.images import image_bytes


def _wait(predicate: Any, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_the_pipeline_loads_at_start_not_in_the_first_job(tiny_wan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()

    def slow_load(config: EngineConfig, device: str) -> Any:
        gate.wait(30)  # a 14B checkpoint takes minutes: hold the load until the test has looked
        return load_pipeline(config, device)

    monkeypatch.setattr(engine_module, "load_pipeline", slow_load)
    eng = LocalEngine(EngineConfig(model_path=tiny_wan, devices=["cpu"], steps=2, fps=8, max_frames=5))
    try:
        assert eng.health()["state"] == "loading"
        job = eng.submit(image_bytes(96, 64), "x", width=96, height=64, seconds=0.5)
        assert job.state == "queued"  # waits for the load, bounded by queue_size
        gate.set()
        _wait(lambda: eng.health()["state"] == "ready")
        device = eng.health()["devices"][0]
        assert device["device"] == "cpu" and device["gpu"] is None and device["load_s"] > 0
        _wait(lambda: job.state in ("completed", "failed"))
        assert job.state == "completed" and "load_s" not in job.timings  # the job did not pay for the load
    finally:
        eng.close()


def test_a_failed_load_is_reported_and_fails_each_job_with_the_reason(tmp_path: Path) -> None:
    eng = LocalEngine(EngineConfig(model_path=tmp_path, devices=["cpu"], steps=2))
    try:
        _wait(lambda: eng.health()["state"] == "failed")
        assert "no model_index.json" in eng.health()["devices"][0]["error"]
        job = eng.submit(image_bytes(96, 64), "x", width=96, height=64, seconds=0.5)
        _wait(lambda: job.state == "failed")
        assert "did not load" in (job.error or "") and "no model_index.json" in (job.error or "")
    finally:
        eng.close()


def test_health_readiness_and_metrics_report_the_engine(gateway_factory: Any, tiny_wan: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    options = {"model_path": str(tiny_wan), "devices": ["cpu"], "steps": 2, "fps": 8, "max_frames": 5}
    gw = gateway_factory(rules_file=rules, adapters={"local": AdapterSettings(options=options)})
    _wait(lambda: gw.client.get("/readyz").status_code == 200)
    health = gw.client.get("/healthz").json()
    assert health["status"] == "ok" and health["engines"]["local"]["state"] == "ready"
    assert health["engines"]["local"]["devices"][0]["queued"] == 0
    assert 'i2v_engine_state{adapter="local",device="cpu"} 1.0' in gw.client.get("/metrics").text

    broken = {**options, "model_path": str(tmp_path / "nothing-here")}
    bad = gateway_factory(rules_file=rules, adapters={"local": AdapterSettings(options=broken)})
    _wait(lambda: bad.client.get("/healthz").json()["engines"]["local"]["state"] == "failed")
    assert bad.client.get("/healthz").json()["status"] == "degraded"
    ready = bad.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["engine:local"] == "failed"
    assert 'i2v_engine_state{adapter="local",device="cpu"} 2.0' in bad.client.get("/metrics").text


def test_a_lora_is_fused_into_the_transformer_at_load(tiny_wan: Path, tmp_path: Path) -> None:
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    base = WanImageToVideoPipeline.from_pretrained(tiny_wan, dtype=torch.float32)
    transformer = base.transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = get_peft_model_state_dict(transformer)
    with torch.no_grad():  # a LoRA with a real delta (PEFT starts B at zero)
        for tensor in state.values():
            tensor.copy_(torch.randn_like(tensor) * 0.05)
    WanImageToVideoPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=state)
    lora_file = next((tmp_path / "lora").glob("*.safetensors"))

    plain = load_pipeline(EngineConfig(model_path=tiny_wan, devices=["cpu"]), "cpu")
    config = EngineConfig(model_path=tiny_wan, devices=["cpu"], lora_path=lora_file, lora_scale=0.5)
    fused = load_pipeline(config, "cpu")
    name = "blocks.0.attn1.to_q"
    w0 = dict(plain.transformer.named_parameters())[f"{name}.weight"]
    w1 = dict(fused.transformer.named_parameters())[f"{name}.weight"]
    a = next(v for k, v in state.items() if k.startswith(name) and "lora_A" in k)
    b = next(v for k, v in state.items() if k.startswith(name) and "lora_B" in k)
    torch.testing.assert_close(w1, w0 + 0.5 * (b @ a), rtol=1e-4, atol=1e-5)  # scale x alpha/r (=1) x B.A
    assert not any("lora" in k for k in fused.transformer.state_dict())  # fused and unloaded: plain weights
