"""MP4 with PyAV: probe the facts of a stored video, encode RGB frames to H.264."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from pydantic import BaseModel


class VideoFacts(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    frames: int
    codec: str
    bytes: int
    sha256: str


class NotAVideo(ValueError):
    """The bytes do not hold a decodable video stream."""


def probe(path: Path) -> VideoFacts:
    """Facts read back from the file itself, frames counted by demuxing (not trusted metadata)."""
    digest, size = _sha256(path)  # streamed: a large result is never held in memory whole
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NotAVideo("the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            frames = 0
            last_end = 0.0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                frames += 1
                if packet.pts is not None and packet.duration is not None:
                    last_end = max(last_end, float((packet.pts + packet.duration) * stream.time_base))
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            duration = last_end - start if last_end else (frames / float(rate) if rate else 0.0)
            facts = VideoFacts(
                duration_s=round(duration, 3),
                fps=round(float(rate), 3),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                frames=frames,
                codec=stream.codec_context.name,
                bytes=size,
                sha256=digest,
            )
    except av.error.FFmpegError as exc:
        raise NotAVideo(f"not a readable video: {exc}") from exc
    if facts.frames == 0:
        raise NotAVideo("the video has no frames")
    return facts


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def encode_mp4(frames: Iterable[np.ndarray], fps: int, *, crf: int = 23, preset: str = "veryfast") -> bytes:
    """Encode RGB uint8 frames (H x W x 3, even sides) as H.264 yuv420p MP4 bytes."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = out.add_stream("libx264", rate=fps)
                stream.width, stream.height = w - w % 2, h - h % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": preset, "movflags": "+faststart"}
            img = frame[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()
