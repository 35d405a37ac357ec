"""Several clips in one MP4, side by side on one clock, each with its label: the CLI's
`compare` writes it so a comparison can be watched (or shared) as one file.

Clips are decoded as they are drawn, one frame each at a time, so memory stays at one frame
per clip whatever their length; a clip that ends early holds its last frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from media.video import encode_mp4


def _frames(path: Path, height: int) -> tuple[Iterator[tuple[float, np.ndarray]], float, float]:
    """(time, RGB frame scaled to `height`) in order; the clip's fps and duration."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 24)
    duration = float(stream.duration * stream.time_base) if stream.duration else stream.frames / fps
    ctx = stream.codec_context
    width = max(2, round(ctx.width * height / ctx.height / 2) * 2)

    def gen() -> Iterator[tuple[float, np.ndarray]]:
        with container:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else i / fps
                yield t, frame.reformat(width=width, height=height, format="rgb24").to_ndarray()

    return gen(), fps, duration


def _label(frame: np.ndarray, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> np.ndarray:
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((8, 6), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((8, 6), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def side_by_side(paths: list[Path], labels: list[str], *, height: int = 360) -> bytes:
    """One H.264 MP4 of `paths` next to each other at `height` px, each labelled."""
    if not paths or len(paths) != len(labels):
        raise ValueError("give one label per clip")
    height -= height % 2
    sources = [_frames(p, height) for p in paths]
    fps = max(f for _, f, _ in sources)
    total = max(d for _, _, d in sources)
    font = ImageFont.load_default(size=max(12, height // 18))
    current: list[np.ndarray | None] = [None] * len(paths)
    pending: list[tuple[float, np.ndarray] | None] = [next(it, None) for it, _, _ in sources]

    def frames() -> Iterator[np.ndarray]:
        for k in range(max(1, round(total * fps))):
            t = k / fps + 1e-6
            row = []
            for i, (it, _, _) in enumerate(sources):
                while pending[i] is not None and pending[i][0] <= t:  # type: ignore[index]
                    current[i] = _label(pending[i][1], labels[i], font)  # type: ignore[index]
                    pending[i] = next(it, None)
                if current[i] is None and pending[i] is not None:
                    current[i] = _label(pending[i][1], labels[i], font)  # type: ignore[index]
                row.append(current[i])
            yield np.hstack(row)

    return encode_mp4(frames(), round(fps))
