"""What validating an input image costs: `inspect_image` (the code) against a full decode.

    python bench/ingest.py [--runs 20]

Three JPEGs: the peer benchmark's 640x480 noise photo, scikit-image's astronaut at 2048x2048 and
coffee at 4000x3000 (quality 90, as a camera or phone writes them). For each, CPU per call
(process clock, median of `--runs`) of `gateway.api.ingest.inspect_image`, which decodes every
byte of a plain JPEG at 1/8 scale in the DCT, beside the baseline: PIL's full decode of the same
bytes (what the code did before). Prints one table.
"""

from __future__ import annotations

import argparse
import io
import statistics
from collections.abc import Callable

import numpy as np
from peer_litellm import photo_jpeg
from PIL import Image
from rich.console import Console
from rich.table import Table
from rounds import cpu_times
from skimage import data

from gateway.api.ingest import ImageLimits, inspect_image

LIMITS = ImageLimits(max_bytes=50 * 2**20, max_pixels=40_000_000, min_side=64)


def jpeg(image: np.ndarray, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).resize(size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def full_decode(blob: bytes) -> None:
    with Image.open(io.BytesIO(blob)) as img:
        img.load()


def cpu_ms(fn: Callable[[], object], runs: int) -> float:
    return statistics.median(cpu_times(fn, runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    photos = {
        "peer bench noise 640x480": photo_jpeg(),
        "astronaut 2048x2048": jpeg(data.astronaut(), (2048, 2048)),
        "coffee 4000x3000": jpeg(data.coffee(), (4000, 3000)),
    }
    table = Table("photo", "bytes", "inspect_image (the code), ms", "baseline: full decode, ms")
    for name, blob in photos.items():
        ours = cpu_ms(lambda b=blob: inspect_image(b, "image", LIMITS), args.runs)
        base = cpu_ms(lambda b=blob: full_decode(b), args.runs)
        table.add_row(name, f"{len(blob) // 1024} KB", f"{ours:.1f}", f"{base:.1f}")
    Console(width=120).print(table)
    print("CPU per call, process clock, median of", args.runs)


if __name__ == "__main__":
    main()
