"""The portrait trait on real photos, with the face detector that ships in scikit-image."""

from __future__ import annotations

import pytest

from gateway.traits.faces import face_report
from tests.support.photos import labelled_photos, lfw_crops

PHOTOS = labelled_photos()


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_portrait_on_packaged_photos(name: str) -> None:
    data, portrait = PHOTOS[name]
    report = face_report(data)
    assert report.portrait is portrait, report
    if portrait:
        assert report.faces >= 1 and report.largest_face_share >= 0.02


def test_precision_and_recall_on_lfw_crops() -> None:
    faces, others = lfw_crops()
    tp = sum(face_report(d).portrait for d in faces)
    fp = sum(face_report(d).portrait for d in others)
    recall, precision = tp / len(faces), tp / max(1, tp + fp)
    # Measured 0.93 / 1.00 (docs/benchmarks.md); the bounds leave room for codec differences.
    assert recall >= 0.9, recall
    assert precision >= 0.9, precision


def test_a_face_too_small_to_dominate_is_not_a_portrait() -> None:
    data, _ = PHOTOS["grace_hopper"]
    from io import BytesIO

    from PIL import Image

    small = Image.open(BytesIO(data)).convert("RGB").resize((120, 160))
    canvas = Image.new("RGB", (1600, 1200), (90, 110, 130))
    canvas.paste(small, (700, 500))
    buf = BytesIO()
    canvas.save(buf, "JPEG")
    assert face_report(buf.getvalue()).portrait is False
