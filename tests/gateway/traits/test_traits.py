"""Traits computed from the request, the image and live load; the face detector runs lazily."""

from __future__ import annotations

from adapters.base import CameraMove
from gateway.api.ingest import ImageLimits, inspect_image
from gateway.schemas import CreateVideoRequest
from gateway.traits import Load, Traits, TraitSettings
from tests.support.images import image_bytes

IMAGE = inspect_image(image_bytes(1280, 720), "image", ImageLimits(2**24, 10**8, 16))


def traits(load: Load | None = None, batch: bool = False, **req) -> Traits:
    request = CreateVideoRequest(prompt=req.pop("prompt", "leaves sway"), image="https://x/y.jpg", **req)
    return Traits(request, IMAGE, load or Load(), TraitSettings(high_volume_queued=10), batch=batch)


def test_volume_from_tier_batch_and_live_load() -> None:
    assert traits()["volume"] == "normal"
    assert traits(tier="bulk")["volume_reason"] == "tier: bulk"
    assert traits(batch=True)["volume_reason"] == "batch submission"
    high = traits(Load(queued=12))
    assert (high["volume"], high["volume_reason"]) == ("high", "12 jobs queued (threshold 10)")


def test_sizes_and_request_fields() -> None:
    t = traits(seconds=10, resolution="1080p", max_cost_usd=2.0, deadline_s=600, loop=True)
    assert (t["input_width"], t["input_height"], t["input_aspect_ratio"], t["orientation"]) == (
        1280,
        720,
        "16:9",
        "landscape",
    )
    assert (t["seconds"], t["resolution"], t["budget_usd"], t["deadline_s"], t["loop"]) == (10, "1080p", 2.0, 600, True)


def test_camera_from_field_or_prompt() -> None:
    assert traits(prompt="slow pan left")["camera_move"]["type"] == "pan"
    assert traits(prompt="slow pan left")["camera_source"] == "prompt"
    field = traits(prompt="slow pan left", camera=CameraMove(type="orbit", direction="cw"))
    assert (field["camera_move"]["type"], field["camera_source"], field["camera_moves"]) == ("orbit", "field", 2)
    assert traits(prompt="hair blowing in the wind")["camera_move"] is None


def test_portrait_is_computed_only_when_read() -> None:
    t = traits()
    assert "portrait" not in t.computed() and t.face_ms is None
    assert t["portrait"] is False  # a gradient has no face
    assert t.computed()["faces"] == 0 and t.face_ms is not None
