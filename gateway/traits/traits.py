"""Request traits the router decides on, computed at most once per request.

Cheap traits (sizes, camera language, volume) are computed up front; the face detector runs
only when a rule or a warning asks for `portrait`, and its answer is cached by image hash (the
same photo sent twice is not scanned twice). Whatever was computed is stored on the job as
`route.traits`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.base import InputImage
from gateway.lru import LRU
from gateway.schemas import CreateVideoRequest
from gateway.traits.camera import camera_move, camera_moves
from gateway.traits.faces import FaceReport, face_report


@dataclass
class TraitSettings:
    portrait_face_area: float = 0.02
    min_face_share: float = 0.12
    high_volume_queued: int = 50


@dataclass
class Load:
    """Live load as the router sees it: jobs waiting to start, and running jobs per adapter."""

    queued: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)


class _FaceCache:
    """Face reports by image hash (and the settings they were made with). Decisions run in
    worker threads; the detector runs outside the cache's lock."""

    def __init__(self, size: int = 512) -> None:
        self._items: LRU[str, FaceReport] = LRU(size)

    def get(self, image: InputImage, settings: TraitSettings) -> FaceReport:
        key = f"{image.sha256}:{settings.min_face_share}:{settings.portrait_face_area}"
        report = self._items.get(key)
        if report is None:
            report = face_report(
                image.data, min_face_share=settings.min_face_share, portrait_area=settings.portrait_face_area
            )
            self._items.put(key, report)
        return report


FACES = _FaceCache()


def _ratio_name(w: int, h: int) -> str:
    r = w / h
    known = {
        "16:9": 16 / 9,
        "9:16": 9 / 16,
        "1:1": 1.0,
        "4:3": 4 / 3,
        "3:4": 3 / 4,
        "21:9": 21 / 9,
        "3:2": 1.5,
        "2:3": 2 / 3,
    }
    name, value = min(known.items(), key=lambda kv: abs(kv[1] - r))
    return name if abs(value - r) / value < 0.03 else f"{w}:{h}"


class Traits(Mapping[str, Any]):
    """A read-only mapping; `portrait`, `faces` and `face_share` are computed on first access."""

    _LAZY = ("portrait", "faces", "face_share")

    def __init__(
        self, req: CreateVideoRequest, image: InputImage, load: Load, settings: TraitSettings, batch: bool = False
    ) -> None:
        self._image = image
        self._settings = settings
        move = camera_move(req.prompt, req.camera)
        volume_reason = (
            "tier: bulk"
            if req.tier == "bulk"
            else "batch submission"
            if batch
            else f"{load.queued} jobs queued (threshold {settings.high_volume_queued})"
            if load.queued >= settings.high_volume_queued
            else None
        )
        self._values: dict[str, Any] = {
            "camera_move": move.model_dump() if move else None,
            "camera_source": None if move is None else ("field" if req.camera else "prompt"),
            "camera_moves": len(camera_moves(req.prompt)) + (1 if req.camera else 0),
            "volume": "high" if volume_reason else "normal",
            "volume_reason": volume_reason,
            "input_width": image.width,
            "input_height": image.height,
            "input_aspect_ratio": _ratio_name(image.width, image.height),
            "orientation": "landscape"
            if image.width > image.height
            else "portrait"
            if image.width < image.height
            else "square",
            "seconds": req.seconds,
            "resolution": req.resolution,
            "budget_usd": req.max_cost_usd,
            "deadline_s": req.deadline_s,
            "tier": req.tier,
            "loop": req.loop,
        }
        self.face_ms: float | None = None

    def _faces(self) -> None:
        t0 = time.perf_counter()
        report = FACES.get(self._image, self._settings)
        self.face_ms = round((time.perf_counter() - t0) * 1000, 2)
        self._values.update(portrait=report.portrait, faces=report.faces, face_share=report.largest_face_share)

    def __getitem__(self, key: str) -> Any:
        if key in self._LAZY and key not in self._values:
            self._faces()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._LAZY or key in self._values:
            return self[key]
        return default

    def computed(self) -> dict[str, Any]:
        """What was computed, to store on the job."""
        return dict(self._values)
