"""Portrait detection with the LBP frontal-face cascade that ships inside scikit-image.

Nothing is downloaded at run time: the cascade XML is part of the scikit-image wheel. The image
is decoded small (JPEG draft mode decodes at 1/2..1/8 scale for free), so a 1024 px photo costs
about 25 ms on one core. Only faces big enough to matter for routing are
searched for: a face under `min_face_share` of the short side cannot dominate the frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from pydantic import BaseModel

from media import decode_grey

#: Long side the detector works at. A face that dominates a portrait is >= ~30 px here.
WORK_SIDE = 256
SCALE_FACTOR = 1.15
#: Window step as a share of the window side; 1.5 is 3x faster than 1 at the same precision.
STEP_RATIO = 1.5


class FaceReport(BaseModel):
    faces: int
    largest_face_share: float
    """Area of the largest face box over the frame area, 0..1."""
    portrait: bool


@lru_cache(maxsize=1)
def _cascade():  # type: ignore[no-untyped-def]
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    return Cascade(lbp_frontal_face_cascade_filename())


def _gray_small(data: bytes) -> np.ndarray:
    img = decode_grey(data, at_least=(WORK_SIDE, WORK_SIDE))
    img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    """Boxes whose centres lie inside each other are one face found at two scales."""
    ca = (a["r"] + a["height"] / 2, a["c"] + a["width"] / 2)
    cb = (b["r"] + b["height"] / 2, b["c"] + b["width"] / 2)
    inside = lambda p, box: box["r"] <= p[0] <= box["r"] + box["height"] and box["c"] <= p[1] <= box["c"] + box["width"]  # noqa: E731
    return inside(ca, b) or inside(cb, a)


def detect_faces(data: bytes, *, min_face_share: float = 0.12) -> list[dict[str, int]]:
    """Face boxes (r, c, width, height) in work-scale pixels, overlapping detections merged.

    `min_neighbor_number=3`: a face must fire at three neighbouring windows. Lone hits of an
    LBP cascade are mostly texture (flags, fabric, brick); see docs/benchmarks.md for the
    precision and recall this gives on the photos that ship in scikit-image and friends.
    """
    gray = _gray_small(data)
    short = min(gray.shape)
    side = max(16, int(short * min_face_share))
    hits = _cascade().detect_multi_scale(
        img=gray,
        scale_factor=SCALE_FACTOR,
        step_ratio=STEP_RATIO,
        min_size=(side, side),
        max_size=(short, short),
        min_neighbor_number=3,
    )
    groups: list[list[dict[str, int]]] = []
    for hit in sorted(hits, key=lambda h: -h["width"]):
        for group in groups:
            if _overlap(hit, group[0]):
                group.append(hit)
                break
        else:
            groups.append([hit])
    faces = [g[0] for g in groups]
    return [dict(f, frame_h=gray.shape[0], frame_w=gray.shape[1]) for f in faces]


def face_report(data: bytes, *, min_face_share: float = 0.12, portrait_area: float = 0.02) -> FaceReport:
    """`portrait` when the largest face covers at least `portrait_area` of the frame."""
    faces = detect_faces(data, min_face_share=min_face_share)
    share = max((f["width"] * f["height"] / (f["frame_h"] * f["frame_w"]) for f in faces), default=0.0)
    return FaceReport(faces=len(faces), largest_face_share=round(share, 4), portrait=share >= portrait_area)
