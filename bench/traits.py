"""Trait extraction and routing decision cost, and the face detector's precision and recall.

    python bench/traits.py [--runs 200]

Times, on one core, (a) the portrait detector on 1024 px JPEGs made from the packaged photos,
(b) all cheap traits + prompt advice, (c) the full routing decision (traits incl. faces, rule
match, candidate filter) with the shipped router_rules.yaml. Then precision/recall of
`portrait` on the labelled packaged photos and on scikit-image's LFW subset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console
from rich.table import Table

from adapters.base import InputImage
from gateway.api.ingest import ImageLimits, inspect_image
from gateway.routing.breaker import Breakers, BreakerSettings
from gateway.routing.catalog import load_rules
from gateway.routing.planner import plan
from gateway.schemas import CreateVideoRequest
from gateway.traits import Load, Traits, TraitSettings
from gateway.traits.advice import prompt_warnings
from gateway.traits.faces import face_report
from tests.support.photos import jpeg, labelled_photos, lfw_crops

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError):
        pass
    import io

    import numpy as np
    from PIL import Image

    photos = labelled_photos()
    big = [jpeg(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), size=1024) for data, _ in photos.values()]
    limits = ImageLimits(20 * 2**20, 40_000_000, 64)
    images = [inspect_image(b, "image", limits) for b in big]
    rules = load_rules(ROOT / "router_rules.yaml")
    available = {spec.adapter for spec in rules.models.values()}
    settings = TraitSettings()
    req = CreateVideoRequest(prompt="mist drifts over the lake while leaves sway", image="https://x/y.jpg")

    def timed(fn, n: int) -> list[float]:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    faces = timed(lambda i: face_report(big[i % len(big)]), args.runs)

    def cheap(i: int) -> None:
        t = Traits(req, images[i % len(images)], Load(), settings)
        prompt_warnings(req.prompt, {k: v for k, v in t.computed().items()}, loops_natively=False)

    cheap_ms = timed(cheap, args.runs * 5)

    def decision(i: int) -> None:
        image: InputImage = images[i % len(images)]
        import gateway.traits.traits as tr

        tr.FACES._items.clear()  # no cache hits: every decision scans its image
        t = Traits(req, image, Load(), settings)
        plan(req, image, rules, available, t, Breakers(BreakerSettings()))

    decision_ms = timed(decision, args.runs)

    table = Table(title="Trait extraction and routing, one core, 1024 px JPEG inputs")
    for col in ("step", "runs", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(col)
    for name, vals in (
        ("portrait detector (decode + LBP cascade)", faces),
        ("cheap traits + prompt advice", cheap_ms),
        ("routing decision (traits incl. faces, rules, filter)", decision_ms),
    ):
        table.add_row(
            name, str(len(vals)), f"{pct(vals, 0.5):.2f}", f"{pct(vals, 0.99):.2f}", f"{statistics.mean(vals):.2f}"
        )
    Console().print(table)

    tp = fp = fn = tn = 0
    for data, truth in photos.values():
        pred = face_report(data).portrait
        tp, fp, fn, tn = (
            tp + (pred and truth),
            fp + (pred and not truth),
            fn + (truth and not pred),
            tn + (not pred and not truth),
        )
    lf_faces, lf_other = lfw_crops()
    ltp = sum(face_report(d).portrait for d in lf_faces)
    lfp = sum(face_report(d).portrait for d in lf_other)
    pr = Table(title="portrait: precision and recall")
    for col in ("set", "positives", "negatives", "TP", "FP", "FN", "precision", "recall"):
        pr.add_column(col)
    pr.add_row(
        "packaged photos",
        str(tp + fn),
        str(fp + tn),
        str(tp),
        str(fp),
        str(fn),
        f"{tp / max(1, tp + fp):.2f}",
        f"{tp / max(1, tp + fn):.2f}",
    )
    pr.add_row(
        "LFW subset crops",
        "100",
        "100",
        str(ltp),
        str(lfp),
        str(100 - ltp),
        f"{ltp / max(1, ltp + lfp):.2f}",
        f"{ltp / 100:.2f}",
    )
    Console().print(pr)


if __name__ == "__main__":
    main()
