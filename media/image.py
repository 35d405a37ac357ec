"""Images: decode to RGB, and fit an encoded image to a provider's documented limits."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any, Protocol

from PIL import Image, ImageOps

_FORMATS = ("image/jpeg", "image/png")  #: what a provider takes unless it says more


class EncodedImage(Protocol):
    """What fitting needs to know of an image: its encoded bytes and their facts
    (`adapters.base.InputImage` is one)."""

    data: bytes
    mime: str
    width: int
    height: int


def decode_rgb(data: bytes, size: tuple[int, int] | None = None) -> Image.Image:
    """Encoded bytes as an RGB image, resized to `size` (width, height) with Lanczos when given."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")  # upright, whatever the tag says
    return img if size is None else img.resize(size, Image.Resampling.LANCZOS)


def decode_grey(data: bytes, at_least: tuple[int, int] | None = None) -> Image.Image:
    """Encoded bytes as an upright grey image. With `at_least` (width, height; matched to the
    stored image's orientation, long side to long side), a JPEG is decoded scaled down in the
    DCT (1/2..1/8) as far as it stays at least that size: far cheaper than a full decode."""
    img = Image.open(io.BytesIO(data))
    if at_least is not None:
        long, short = max(at_least), min(at_least)
        img.draft("L", (long, short) if img.size[0] >= img.size[1] else (short, long))
    return ImageOps.exif_transpose(img).convert("L")


def fit_image(
    image: EncodedImage,
    *,
    min_side: int,
    max_side: int,
    max_bytes: int,
    formats: tuple[str, ...] = _FORMATS,
) -> tuple[bytes, str]:
    """The image as-is when it fits; else resized into [min_side, max_side] and re-encoded as JPEG."""
    w, h = image.width, image.height
    if _fits(image, min_side=min_side, max_side=max_side, max_bytes=max_bytes, formats=formats):
        return image.data, image.mime
    scale = max(min_side / min(w, h), 1.0) if min(w, h) < min_side else min(max_side / max(w, h), 1.0)
    img = decode_rgb(image.data)
    if scale != 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    for quality in (92, 85, 75, 60):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= max_bytes:
            return buf.getvalue(), "image/jpeg"
    raise ValueError("the image cannot be made small enough for this provider")


def _fits(
    image: EncodedImage, *, min_side: int, max_side: int, max_bytes: int, formats: tuple[str, ...] = _FORMATS
) -> bool:
    w, h = image.width, image.height
    return min(w, h) >= min_side and max(w, h) <= max_side and image.mime in formats and len(image.data) <= max_bytes


async def fitted(image: EncodedImage, **limits: Any) -> tuple[bytes, str]:
    """`fit_image(image, **limits)` for a coroutine (an adapter's submit): an image that fits is
    returned on the spot; a re-encode runs on a worker thread. Why: a 12 MP phone photo sent to
    Wan (2,000 px at most) took ~0.3 s to decode, resize and encode, and on the event loop that
    stalled every other request and job of the process for as long."""
    if _fits(image, **limits):
        return image.data, image.mime
    return await asyncio.to_thread(fit_image, image, **limits)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
