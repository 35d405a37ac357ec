"""Turns whatever the client sent as the image into a validated `InputImage`.

Order matters: bytes are limited while they arrive, the header is read and the pixel count
checked before any full decode (so a decompression bomb never expands), then the image is
decoded once to prove it is whole.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import math
import warnings

import httpx
import numpy as np
from PIL import Image, ImageOps

from adapters.base import InputImage
from gateway.errors import APIError
from gateway.lru import LRU
from gateway.netguard import fetch_limited

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageLimits:
    def __init__(self, max_bytes: int, max_pixels: int, min_side: int, fetch_total_s: float | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.fetch_total_s = fetch_total_s


def decode_data_uri(uri: str, param: str, max_bytes: int) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or ";base64" not in header:
        raise APIError(422, "invalid_image", f"{param}: a data URI must look like data:image/png;base64,....", param)
    if len(payload) * 3 // 4 > max_bytes:
        raise APIError(413, "image_too_large", f"{param}: the image is over the {max_bytes // 2**20} MB limit.", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(422, "invalid_image", f"{param}: the data URI is not valid base64.", param) from exc


def inspect_image(data: bytes, param: str, limits: ImageLimits) -> InputImage:
    """Validate encoded image bytes; CPU-bound, so callers run it in a thread. Bytes that
    validated before (by hash) are not decoded again."""
    if len(data) > limits.max_bytes:
        raise APIError(
            413, "image_too_large", f"{param}: the image is over the {limits.max_bytes // 2**20} MB limit.", param
        )
    if not data:
        raise APIError(422, "invalid_image", f"{param}: the image is empty.", param)
    sha = hashlib.sha256(data).hexdigest()
    known = _CHECKED.get(sha)
    if known is not None:  # these very bytes decoded whole before: only the limits are asked again
        fmt, width, height = known
        _check_size(param, limits, width, height)
        return InputImage(data=data, sha256=sha, mime=FORMATS[fmt], width=width, height=height)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(param, limits, None) from exc
        except Exception as exc:
            raise APIError(
                415, "unsupported_image", f"{param}: could not read an image; send JPEG, PNG or WebP.", param
            ) from exc
        with img:
            fmt = img.format or ""
            if fmt not in FORMATS:
                raise APIError(
                    415,
                    "unsupported_image",
                    f"{param}: {fmt or 'this'} images are not supported; send JPEG, PNG or WebP.",
                    param,
                )
            width, height = img.size
            _check_size(param, limits, width, height)
            plain_jpeg = fmt == "JPEG" and _plain(img)  # a JPEG's EXIF comes before its image data
            try:
                if plain_jpeg:
                    # every byte of it is still decoded (a truncated or broken file fails), but at
                    # 1/8 scale in the DCT: 2-3x less CPU on a camera photo (12 MP: 31 -> 13 ms)
                    img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                img.load()
            except Exception as exc:
                raise APIError(
                    422, "invalid_image", f"{param}: the image is truncated or corrupt ({exc}).", param
                ) from exc
            # a JPEG's answer stands; other formats may keep their EXIF after the image data
            plain = plain_jpeg if fmt == "JPEG" else _plain(img)
            upright = None if plain else _normalized(img, fmt)
    if upright is not None:  # what every provider, the engine and the quality check then read
        data, fmt = upright
        sha = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    else:
        _CHECKED.put(sha, (fmt, width, height))
    return InputImage(data=data, sha256=sha, mime=FORMATS[fmt], width=width, height=height)


def _check_size(param: str, limits: ImageLimits, width: int, height: int) -> None:
    if width * height > limits.max_pixels:
        raise _too_many_pixels(param, limits, (width, height))
    if min(width, height) < limits.min_side:
        raise APIError(
            422,
            "image_too_small",
            f"{param}: the image is {width}x{height}; each side must be at least {limits.min_side} px.",
            param,
        )


#: The facts (format, width, height) of the last images that decoded whole and are kept as sent,
#: by the SHA-256 of their bytes: the same photo sent again (a retry, a comparison's models, a bulk
#: run of prompts over one product shot) is not decoded again.
_CHECKED: LRU[str, tuple[str, int, int]] = LRU(1024)


def crop_to_size(image: InputImage, size: str, param: str, limits: ImageLimits) -> tuple[InputImage, list[str]]:
    """The image centre-cropped to `size`'s aspect ratio, so that a provider that keeps the
    image's aspect (every hosted one) makes a video of the shape asked for. CPU-bound."""
    want_w, want_h = (int(v) for v in size.split("x"))
    if image.width * want_h == image.height * want_w:
        return image, []
    # the largest crop of exactly the size's ratio (16:9 -> 448x252 of a 451x300 photo), so that a
    # provider scaling it to a tier lands on the size itself; rounded when the ratio has no small terms
    a, b = want_w // math.gcd(want_w, want_h), want_h // math.gcd(want_w, want_h)
    k = min(image.width // a, image.height // b)
    want, have = want_w / want_h, image.width / image.height
    if k * min(a, b) >= limits.min_side:
        w, h = k * a, k * b
    elif abs(have - want) / want <= 0.01:
        return image, []
    else:
        w, h = (round(image.height * want), image.height) if have > want else (image.width, round(image.width / want))
    if min(w, h) < limits.min_side:
        raise APIError(
            422,
            "image_too_small",
            f"size: cropping the {image.width}x{image.height} image to {size}'s aspect ratio leaves {w}x{h}; "
            f"each side must be at least {limits.min_side} px. Send a size closer to the image's shape.",
            "size",
        )
    with Image.open(io.BytesIO(image.data)) as img:
        x0, y0 = (img.width - w) // 2, (img.height - h) // 2
        out = img.crop((x0, y0, x0 + w, y0 + h))
        buf = io.BytesIO()
        png = image.mime == "image/png"
        out.save(buf, "PNG" if png else "JPEG", **({} if png else {"quality": 95}))
    data = buf.getvalue()
    note = f"size: the {image.width}x{image.height} image was centre-cropped to {w}x{h} to match {size}'s aspect ratio."
    mime = "image/png" if png else "image/jpeg"
    return InputImage(data=data, sha256=hashlib.sha256(data).hexdigest(), mime=mime, width=w, height=h), [note]


def _normalized(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    """The image re-encoded upright and plain, when it is not already: EXIF orientation applied
    (a phone photo is stored sideways with a tag saying so, and providers ignore the tag), CMYK,
    16-bit and palette images made RGB, an animation reduced to its first frame (the caller
    keeps a `_plain` image as it is)."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    if img.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits, not a clipped white
        grey = np.asarray(img).astype(np.int64)
        img = Image.fromarray(((grey >> 8) if grey.max() > 255 else grey).clip(0, 255).astype(np.uint8))
    out = ImageOps.exif_transpose(img) or img
    alpha = "A" in out.mode or "transparency" in out.info
    out = out.convert("RGBA" if alpha else "RGB")
    buf = io.BytesIO()
    if alpha or fmt == "PNG":
        out.save(buf, "PNG")
        return buf.getvalue(), "PNG"
    out.save(buf, "JPEG", quality=95)
    return buf.getvalue(), "JPEG"


def _plain(img: Image.Image) -> bool:
    """Stored upright, in a mode every reader takes, one frame: kept byte for byte."""
    orientation = img.getexif().get(0x0112, 1)
    return orientation in (None, 1) and img.mode in ("RGB", "RGBA", "L") and not getattr(img, "is_animated", False)


def _too_many_pixels(param: str, limits: ImageLimits, size: tuple[int, int] | None) -> APIError:
    got = f"{size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP)" if size else "far too many pixels"
    return APIError(
        413,
        "image_too_large",
        f"{param}: the image has {got}; the limit is {limits.max_pixels / 1e6:.0f} MP. Downscale it first.",
        param,
    )


async def load_image(
    *,
    upload: bytes | None,
    reference: str | None,
    param: str,
    limits: ImageLimits,
    fetcher: httpx.AsyncClient,
) -> InputImage:
    """Resolve the image from an upload, a data URI or a URL, then validate it."""
    if upload is not None:
        data = upload
    elif reference is None:
        raise APIError(
            422,
            "missing_image",
            "image: send the input image as a multipart file "
            "`input_reference`, or as `image` (an http(s) URL or a data URI).",
            "image",
        )
    elif reference.startswith("data:"):
        data = decode_data_uri(reference, param, limits.max_bytes)
    else:
        data, _ = await fetch_limited(
            fetcher, reference, max_bytes=limits.max_bytes, param=param, total_s=limits.fetch_total_s
        )
    return await asyncio.to_thread(inspect_image, data, param, limits)
