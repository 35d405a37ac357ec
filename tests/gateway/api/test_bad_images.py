"""Hand-made bad and awkward images: each a clear 4xx or handled right, and the server stays healthy."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data

from tests.conftest import Gateway
from tests.gateway.api.test_bad_input import bomb_png
from tests.support.images import image_bytes


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rotated_phone_photo() -> bytes:
    """A portrait photo stored landscape with EXIF orientation 6 (rotate 90° clockwise to view)."""
    upright = Image.fromarray(data.astronaut()).resize((300, 400))  # 300 wide, 400 tall
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote: 400 x 300
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(stored, "JPEG", exif=exif.tobytes(), quality=95)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (200, 200), c) for c in ("red", "blue")]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (200, 200), c) for c in ("red", "blue")]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])


JPEG = image_bytes(320, 240)
#: a camera-size photo, validated at 1/8 scale: its last 200 bytes missing must still be found
PHOTO = _save(Image.fromarray(data.coffee()).resize((1600, 1200)), "JPEG", quality=90)
CASES: dict[str, tuple[bytes, int, str | None]] = {
    "zero bytes": (b"", 422, "invalid_image"),
    "truncated jpeg": (JPEG[: len(JPEG) // 2], 422, "invalid_image"),
    "photo short of its last 200 bytes": (PHOTO[:-200], 422, "invalid_image"),
    "photo": (PHOTO, 202, None),
    "text named .jpg": (b"hello, this is not an image\n" * 10, 415, "unsupported_image"),
    "pixel bomb": (bomb_png(60_000, 60_000), 413, "image_too_large"),
    "animated gif": (_animated_gif(), 415, "unsupported_image"),
    "polyglot jpeg+zip": (JPEG + b"PK\x03\x04" + b"\x00" * 100, 202, None),  # a valid JPEG with a tail: used as a JPEG
    "16-bit png": (
        _save(Image.fromarray((np.arange(256 * 256) % 65536).reshape(256, 256).astype(np.uint16)), "PNG"),
        202,
        None,
    ),
    "cmyk jpeg": (_save(Image.fromarray(data.coffee()).convert("CMYK"), "JPEG"), 202, None),
    "webp": (_save(Image.fromarray(data.chelsea()), "WEBP"), 202, None),
    "animated webp": (_animated_webp(), 202, None),
    "exif-rotated jpeg": (_rotated_phone_photo(), 202, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_image_gets_a_clear_answer(gateway: Gateway, name: str) -> None:
    payload, status, code = CASES[name]
    resp = gateway.client.post(
        "/v1/videos", data={"prompt": "pan"}, files={"input_reference": ("photo.jpg", payload, "image/jpeg")}
    )
    assert resp.status_code == status, resp.text
    if code:
        assert resp.json()["error"]["code"] == code
    else:
        video = gateway.wait(resp.json()["id"])
        assert video["status"] == "completed", video
    assert gateway.client.get("/healthz").json()["status"] == "ok"


def test_a_50_mb_upload_is_refused_before_it_is_read(gateway: Gateway) -> None:
    big = b"\xff\xd8\xff" + b"\x00" * (50 * 2**20)
    resp = gateway.client.post("/v1/videos", data={"prompt": "pan"}, files={"input_reference": ("big.jpg", big)})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "image_too_large"
    assert gateway.client.get("/healthz").json()["status"] == "ok"


def test_exif_rotation_is_applied_before_anyone_reads_the_image(gateway: Gateway) -> None:
    """The stored input (what providers, the engine and the quality check get) is upright."""
    resp = gateway.client.post(
        "/v1/videos",
        data={"prompt": "pan"},
        files={"input_reference": ("phone.jpg", _rotated_phone_photo(), "image/jpeg")},
    )
    video = resp.json()
    width, height = (int(v) for v in video["size"].split("x"))
    assert width < height  # the planned shape follows the upright photo
    assert video["route"]["traits"]["input_width"] == 300 and video["route"]["traits"]["input_height"] == 400
    done = gateway.wait(video["id"])
    width, height = done["output"]["width"], done["output"]["height"]
    assert width < height  # the clip is portrait, as the photo is


def test_cmyk_and_16_bit_images_are_stored_as_plain_rgb(gateway: Gateway) -> None:
    from gateway.api.ingest import ImageLimits, inspect_image

    limits = ImageLimits(20 * 2**20, 40_000_000, 64)
    for payload in (CASES["cmyk jpeg"][0], CASES["16-bit png"][0]):
        image = inspect_image(payload, "image", limits)
        with Image.open(io.BytesIO(image.data)) as img:
            assert img.mode == "RGB" or img.mode == "L"
            assert np.asarray(img.convert("L")).std() > 5  # not clipped to a flat white


def test_the_same_bytes_are_decoded_once_and_still_held_to_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo sent again is not decoded again (its facts are kept by hash), but the limits of
    the call are asked of it anew; a photo that is normalised (EXIF-rotated) is not kept."""
    from gateway.api import ingest
    from gateway.api.ingest import ImageLimits, inspect_image
    from gateway.errors import APIError
    from gateway.lru import LRU

    photo = _save(Image.fromarray(data.coffee()), "JPEG", quality=90)  # 600 x 400
    rotated = _rotated_phone_photo()
    opened = []
    real = ingest.Image.open
    monkeypatch.setattr(ingest.Image, "open", lambda *a, **k: opened.append(1) or real(*a, **k))
    monkeypatch.setattr(ingest, "_CHECKED", LRU(2))
    limits = ImageLimits(20 * 2**20, 40_000_000, 64)
    first, again = inspect_image(photo, "image", limits), inspect_image(photo, "image", limits)
    assert len(opened) == 1
    assert again == first and (again.width, again.height, again.mime) == (600, 400, "image/jpeg")
    with pytest.raises(APIError) as small:
        inspect_image(photo, "image", ImageLimits(20 * 2**20, 40_000_000, 500))
    assert small.value.status == 422 and "600x400" in small.value.message
    with pytest.raises(APIError) as many:
        inspect_image(photo, "image", ImageLimits(20 * 2**20, 200_000, 64))
    assert many.value.status == 413
    with pytest.raises(APIError):  # other bytes (the same photo cut short) are decoded, and fail
        inspect_image(photo[:-200], "image", limits)
    a, b = inspect_image(rotated, "image", limits), inspect_image(rotated, "image", limits)
    assert (a.width, a.height) == (b.width, b.height) == (300, 400) and a.sha256 == b.sha256
    opened.clear()
    for img in (JPEG, PHOTO, photo):  # two kept: the oldest is decoded again
        inspect_image(img, "image", limits)
    assert len(opened) == 3
    inspect_image(photo, "image", limits)
    assert len(opened) == 3
