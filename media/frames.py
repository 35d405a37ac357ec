"""Frames out of a stored clip, and the one edit the gateway makes to clips: a seamless loop."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from media.video import encode_mp4


def decode_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames as RGB uint8 arrays, and the stream's frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 24)
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], rate


def make_loop(path: Path, *, crossfade_s: float = 0.5) -> bytes:
    """A seamless loop: the clip's last `crossfade_s` dissolves into its first frames.

    Output = frames[k:n-k] + blend(frames[n-k:n] -> frames[0:k]); its last frame is nearly
    frames[k-1], so playing it again from frames[k] has no seam. It is k frames shorter.
    Streamed: only the first k and a window of the last k frames are held, whatever the length.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 24)
        n = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
    k = max(1, min(round(crossfade_s * fps), n // 3))
    if n < 4:
        raise ValueError("a clip of fewer than 4 frames cannot be looped")
    head: list[np.ndarray] = []
    tail: deque[np.ndarray] = deque()

    def frames() -> Iterator[np.ndarray]:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                rgb = frame.to_ndarray(format="rgb24")
                if len(head) < k:
                    head.append(rgb)
                    continue
                tail.append(rgb)
                if len(tail) > k:  # frames[k : n-k], as they come
                    yield tail.popleft()
        for i, (last, first) in enumerate(zip(tail, head, strict=False)):
            alpha = (i + 1) / (k + 1)
            yield ((1 - alpha) * last.astype(np.float32) + alpha * first.astype(np.float32) + 0.5).astype(np.uint8)

    return encode_mp4(frames(), round(fps))
