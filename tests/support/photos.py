"""Real photos that ship inside packages (scikit-image, matplotlib, scikit-learn), as JPEG bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg(array: np.ndarray, size: int | None = None) -> bytes:
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(array)
    if size:
        img = img.resize((size, round(size * img.height / img.width)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def labelled_photos() -> dict[str, tuple[bytes, bool]]:
    """name -> (JPEG bytes, is a portrait: a face dominates the frame)."""
    import matplotlib
    import sklearn.datasets
    from skimage import data

    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    skl = Path(sklearn.datasets.__file__).parent / "images"
    return {
        "astronaut": (jpeg(data.astronaut()), True),
        "grace_hopper": ((mpl / "grace_hopper.jpg").read_bytes(), True),
        "camera": (jpeg(data.camera()), False),  # a person, but the face is small
        "coffee": (jpeg(data.coffee()), False),
        "chelsea": (jpeg(data.chelsea()), False),  # a cat
        "cat": (jpeg(data.cat()), False),
        "rocket": (jpeg(data.rocket()), False),
        "immunohistochemistry": (jpeg(data.immunohistochemistry()), False),
        "hubble_deep_field": (jpeg(data.hubble_deep_field()), False),
        "retina": (jpeg(data.retina()), False),
        "coins": (jpeg(data.coins()), False),
        "moon": (jpeg(data.moon()), False),
        "page": (jpeg(data.page()), False),
        "text": (jpeg(data.text()), False),
        "brick": (jpeg(data.brick()), False),
        "gravel": (jpeg(data.gravel()), False),
        "motorcycle": (jpeg(data.stereo_motorcycle()[0]), False),
        "clock": (jpeg(data.clock()), False),
        "china": ((skl / "china.jpg").read_bytes(), False),
        "flower": ((skl / "flower.jpg").read_bytes(), False),
    }


def lfw_crops() -> tuple[list[bytes], list[bytes]]:
    """scikit-image's LFW subset: 100 face crops and 100 non-face crops (25 px), upscaled and
    centred on a grey canvas so the face fills a portrait-like share of the frame."""
    from skimage import data

    def one(a: np.ndarray) -> bytes:
        face = Image.fromarray((a * 255).astype(np.uint8)).resize((120, 120), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (200, 200), 128)
        canvas.paste(face, (40, 40))
        buf = io.BytesIO()
        canvas.save(buf, "JPEG")
        return buf.getvalue()

    crops = data.lfw_subset()
    return [one(a) for a in crops[:100]], [one(a) for a in crops[100:]]
