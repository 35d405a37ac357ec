"""Small test images made in memory."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def image_bytes(width: int = 320, height: int = 240, fmt: str = "JPEG", noise: bool = False) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1)
    if noise:  # incompressible, for byte-limit tests
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
