"""Sandbox mode: the shipped catalog served end to end by the in-process provider emulators."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(gateway_factory) -> Gateway:
    return gateway_factory(
        sandbox=True, sandbox_task_s=0.5, rules_file=ROOT / "router_rules.yaml", adapters={}, quality_metrics=True
    )


@pytest.mark.parametrize(
    ("model", "adapter", "camera"),
    [
        ("auto", "wan", None),
        ("kling-v2.6-motion", "kling", {"type": "pan", "direction": "left"}),
        ("kling-v1.5-camera", "kling", {"type": "zoom_in", "intensity": 0.6}),  # native camera_control
        ("hailuo-2.3-fast", "hailuo", {"type": "tilt", "direction": "up"}),  # bracket command
        ("video-01-live", "live", None),
    ],
)
def test_every_family_makes_a_real_mp4_from_the_photo(sandbox: Gateway, model: str, adapter: str, camera) -> None:
    body = {"model": model, "prompt": "leaves sway in a gentle breeze", "image": data_uri(image_bytes(800, 600))}
    if camera:
        body["camera"] = camera
    resp = sandbox.client.post("/v1/videos", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.headers["x-i2v-sandbox"] == "true"
    video = sandbox.wait(resp.json()["id"], timeout=60)
    assert video["status"] == "completed", video
    assert video["route"]["attempts"][0]["adapter"] == adapter
    assert any(w.startswith("sandbox:") and adapter in w for w in video["warnings"])
    data = sandbox.client.get(video["output"]["url"]).content
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert abs(stream.codec_context.width / stream.codec_context.height - 4 / 3) < 0.05
    assert video["metrics"]["cost_usd"] > 0


def test_sandbox_says_so(sandbox: Gateway) -> None:
    assert sandbox.client.get("/healthz").json() == {"status": "ok", "sandbox": True}
    models = {m["id"]: m["available"] for m in sandbox.client.get("/v1/models").json()["data"]}
    assert models["wan-2.6-i2v"] and models["kling-v2.6-motion"] and models["video-01-live"]


def test_kling_motion_control_through_the_gateway(sandbox: Gateway) -> None:
    """`parameters.video_url` on a Kling 2.6 alias uses the motion-control endpoint (§1.7)."""
    body = {
        "model": "kling-v2.6-motion",
        "prompt": "she dances like the reference",
        "image": data_uri(image_bytes(800, 600)),
        "parameters": {"video_url": "https://example.com/dance.mp4", "character_orientation": "video"},
    }
    resp = sandbox.client.post("/v1/videos", json=body)
    assert resp.status_code == 202, resp.text
    video = sandbox.wait(resp.json()["id"], timeout=60)
    assert video["status"] == "completed", video
    assert video["route"]["attempts"][0]["adapter"] == "kling"
    assert video["output"]["codec"] == "h264"


def test_kling_motion_control_refusal_is_not_retried(sandbox: Gateway) -> None:
    body = {
        "model": "kling-v2.6-motion",
        "prompt": "dance",
        "image": data_uri(image_bytes(800, 600)),
        "parameters": {"video_url": "https://example.com/dance.gif"},
    }
    video = sandbox.wait(sandbox.client.post("/v1/videos", json=body).json()["id"], timeout=60)
    assert video["status"] == "failed"
    assert video["error"]["code"] == "invalid_request" and "mp4" in video["error"]["message"]


@pytest.mark.parametrize(
    ("prompt", "label"),
    [
        ("slow pan left across the cat", "pan_left"),
        ("the camera tilts up over the cat", "tilt_up"),
        ("push in on the cat's face", "zoom_in"),
        ("pull back to reveal the room", "zoom_out"),
    ],
)
def test_the_emulators_camera_moves_are_measured_as_the_prompt_asked(sandbox: Gateway, prompt: str, label: str) -> None:
    """Every finished video carries metrics.quality; the sandbox's moves are what was asked."""
    from skimage import data

    from tests.support.photos import jpeg

    body = {"model": "wan-2.6-i2v-flash", "prompt": prompt, "image": data_uri(jpeg(data.chelsea()))}
    video = sandbox.wait(sandbox.client.post("/v1/videos", json=body).json()["id"], timeout=60)
    assert video["status"] == "completed", video
    quality = video["metrics"]["quality"]
    assert quality["camera_motion"] == label
    assert quality["camera_conformity"] is True
    assert quality["frozen_frames"] == quality["black_frames"] == 0
    assert quality["fps_ok"] is False  # the sandbox spreads its 48 frames over 5 s, not the model's 24 fps
    if label == "zoom_out":  # starts 1.25x in: the first frame is a crop of the photo
        assert quality["first_frame_ssim"] < 0.6
    elif label == "zoom_in":  # starts on the whole photo
        assert quality["first_frame_ssim"] > 0.8
    metrics = sandbox.client.get("/metrics").text
    assert 'i2v_quality_motion_magnitude_count{model="wan-2.6-i2v-flash"}' in metrics


def test_kling_mode_sets_the_price_so_a_request_cannot_override_it(sandbox: Gateway) -> None:
    body = {"model": "kling-v2.6-motion", "prompt": "pan", "image": data_uri(image_bytes(800, 600))}
    resp = sandbox.client.post("/v1/videos", json={**body, "parameters": {"mode": "std"}})
    assert resp.status_code == 422 and "mode is set by the gateway" in resp.json()["error"]["message"]
    assert "kling: cfg_scale" in resp.json()["error"]["message"]
