"""The media leaf on its own: encode and probe H.264, decode frames, loop, fit images."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from media import NotAVideo, data_uri, decode_frames, decode_rgb, encode_mp4, fit_image, fitted, make_loop, probe
from tests.support.images import image_bytes


def _frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    # a bright square moving right: every frame differs, so nothing is encoded as a duplicate
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[10:30, 2 * i : 2 * i + 20] = 255
        out.append(f)
    return out


def test_encoded_frames_probe_back_as_h264_with_their_count_size_and_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(_frames(24), fps=12))
    facts = probe(path)
    assert (facts.codec, facts.width, facts.height, facts.frames, facts.fps) == ("h264", 64, 48, 24, 12.0)
    assert facts.duration_s == pytest.approx(2.0, abs=0.01)
    assert facts.bytes == path.stat().st_size and len(facts.sha256) == 64


def test_odd_sides_are_cropped_to_even_for_yuv420(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    path.write_bytes(encode_mp4(_frames(4, w=65, h=49), fps=8))
    assert (probe(path).width, probe(path).height) == (64, 48)


def test_bytes_that_are_not_a_video_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(NotAVideo):
        probe(path)
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4([], fps=8)


def test_decoded_frames_match_what_was_encoded(tmp_path: Path) -> None:
    src = _frames(10)
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(src, fps=10, crf=0))
    frames, fps = decode_frames(path)
    assert fps == 10.0 and len(frames) == 10
    # near-lossless encode: the moving square is where it was, frame by frame
    for got, want in zip(frames, src, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6


def test_a_loop_ends_where_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(_frames(24), fps=12, crf=0))
    looped = tmp_path / "loop.mp4"
    looped.write_bytes(make_loop(path, crossfade_s=0.5))
    frames, _ = decode_frames(looped)
    k = 6  # 0.5 s at 12 fps
    assert len(frames) == 24 - k
    original, _ = decode_frames(path)
    seam = np.abs(frames[-1].astype(int) - original[k - 1].astype(int)).mean()
    jump = np.abs(original[-1].astype(int) - original[0].astype(int)).mean()
    assert seam < jump / 3  # the last frame dissolves into the first: no jump when it repeats


class _Encoded:
    def __init__(self, data: bytes, mime: str) -> None:
        self.data, self.mime = data, mime
        self.width, self.height = Image.open(io.BytesIO(data)).size


def test_fit_image_keeps_what_fits_and_shrinks_what_does_not() -> None:
    small = _Encoded(image_bytes(640, 480), "image/jpeg")
    assert fit_image(small, min_side=300, max_side=4096, max_bytes=10 * 2**20) == (small.data, "image/jpeg")
    buf = io.BytesIO()
    Image.fromarray(samples.astronaut()).save(buf, format="PNG")
    big = _Encoded(buf.getvalue(), "image/png")
    data, mime = fit_image(big, min_side=100, max_side=256, max_bytes=50_000)
    assert mime == "image/jpeg" and len(data) <= 50_000
    assert Image.open(io.BytesIO(data)).size == (256, 256)
    tiny = _Encoded(image_bytes(200, 100), "image/jpeg")
    data, _ = fit_image(tiny, min_side=300, max_side=4096, max_bytes=10 * 2**20)
    assert Image.open(io.BytesIO(data)).size == (600, 300)


async def test_fitted_re_encodes_off_the_event_loop_and_returns_what_fits_at_once() -> None:
    """A re-encode (a 12 MP phone photo to Wan's 2,000 px: ~0.3 s) runs on a worker thread, so
    the event loop keeps serving while it runs; an image that fits comes back as it is."""
    buf = io.BytesIO()
    Image.fromarray(samples.astronaut()).resize((4032, 3024)).save(buf, format="JPEG", quality=90)
    photo = _Encoded(buf.getvalue(), "image/jpeg")
    ticks, running = 0, True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    data, mime = await fitted(photo, min_side=360, max_side=2000, max_bytes=10 * 2**20)
    during = ticks - before
    running = False
    await task
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == (2000, 1500)
    assert during > 0  # the loop went on while the photo was re-encoded
    small = _Encoded(image_bytes(640, 480), "image/jpeg")
    assert await fitted(small, min_side=300, max_side=4096, max_bytes=10 * 2**20) == (small.data, "image/jpeg")


def test_decode_rgb_and_data_uri() -> None:
    raw = image_bytes(320, 240)
    assert decode_rgb(raw).size == (320, 240) and decode_rgb(raw).mode == "RGB"
    assert decode_rgb(raw, (160, 120)).size == (160, 120)
    assert data_uri(b"\x01\x02", "image/png") == "data:image/png;base64,AQI="
