"""`metrics.quality` of a finished clip: measured in a worker thread, bounded, never fatal.

The clip is measured after its job is marked completed (`metrics.quality` is `PENDING` until
then), so the measurement never delays the result. The numbers come from
`media.quality.analyse`; this module says what the clip was asked to be
(the job's shape, the model's fps, the camera move the request named or the prompt described),
bounds how many clips one process measures at once, and feeds the per-model histograms. A clip
that cannot be measured is still delivered: the job's quality then says why.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.jobs.context import RunContext
from gateway.jobs.tables import JobRow
from gateway.routing.catalog import ModelSpec
from media import VideoFacts
from media.quality import Expected, accepted_labels, analyse

log = logging.getLogger("i2v.runner")
#: `metrics.quality` between `completed` and the measurement's end (normally well under a second;
#: it stays so if the process stopped in between: the clip is not measured again).
PENDING: dict[str, Any] = {"pending": True}


def expected_for(job: JobRow, spec: ModelSpec | None) -> Expected:
    """What the clip should be: the shape the model was asked for and the requested camera move."""
    shape = job.request.get("shape") or {}
    move = (job.route.get("traits") or {}).get("camera_move") or None
    return Expected(
        seconds=shape.get("seconds"),
        fps=spec.fps if spec else None,
        width=shape.get("width"),
        height=shape.get("height"),
        camera=accepted_labels(move["type"], move.get("direction")) if move else None,
    )


async def measure(ctx: RunContext, job: JobRow, facts: VideoFacts, spec: ModelSpec | None) -> dict[str, Any] | None:
    """The clip's quality as stored in `metrics.quality`; None when the setting turns it off."""
    if not ctx.settings.quality_metrics:
        return None
    clip = ctx.blobs.path(facts.sha256)
    image = ctx.blobs.path((job.request.get("image") or {}).get("sha256", ""))
    expected = expected_for(job, spec)
    async with ctx.quality_slots:
        try:
            quality = await asyncio.to_thread(_analyse, clip, image, expected)
        except Exception as exc:  # a measurement must never cost the client the video
            log.warning("measuring the clip failed", extra={"error": repr(exc)[:300]})
            return {"error": f"not measured: {exc}"[:300]}
    for name, histogram in ctx.metrics.quality.items():
        value = quality.get(name)
        if value is not None:
            histogram.labels(job.model).observe(value)
    return quality


def _analyse(clip: Path, image: Path, expected: Expected) -> dict[str, Any]:
    reference = image.read_bytes() if image.is_file() else None
    return analyse(clip, reference, expected).model_dump()
