"""CPU per clip of `metrics.quality`, beside a plain decode of the same clip.

    python bench/quality.py [--runs 15]

Makes 5 s clips at 24 fps (a camera pan over scikit-image's astronaut, H.264 by PyAV/libx264,
as a provider would deliver them) at 480p, 720p and 1080p, and the small clip each job of
bench/peer_litellm.py gets from its emulator, then times on the process CPU clock
(all threads counted): (a) `media.quality.analyse` whole, with the input image as reference;
(b) its decode-and-scale stage alone; (c) the baseline: PyAV's default decode of the same clip
with every frame scaled to grey by swscale (what a straightforward implementation pays before
any analysis). Prints the median and min of each, in ms.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from peer_litellm import photo_jpeg
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data

from adapters.emulators.common import render_clip
from media import encode_mp4
from media.quality import SIDE, _decode, analyse

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}


def make_clip(width: int, height: int, seconds: int = 5, fps: int = 24) -> tuple[bytes, bytes]:
    big = np.asarray(Image.fromarray(data.astronaut()).resize((int(width * 1.25), int(height * 1.25))))
    n = seconds * fps
    dx = big.shape[1] - width
    frames = [
        np.ascontiguousarray(big[:height, int(dx * i / (n - 1)) : int(dx * i / (n - 1)) + width]) for i in range(n)
    ]
    ref = io.BytesIO()
    Image.fromarray(frames[0]).save(ref, "JPEG", quality=92)
    return encode_mp4(frames, fps), ref.getvalue()


def peer_clip() -> tuple[bytes, bytes]:
    """The clip bench/peer_litellm.py's emulator renders (160 px, 8 frames, a push-in over a
    640x480 noise photo) and that photo: what each of that bench's jobs measures."""
    photo = photo_jpeg()
    return render_clip(photo, 1280, 720, 5, 24, "slow push in, leaves drift", 160, 8), photo


def plain_decode(path: Path) -> None:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = SIDE / max(w, h)
        for frame in c.decode(stream):
            frame.reformat(width=round(w * scale), height=round(h * scale), format="gray").to_ndarray()


def cpu_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm: imports, codec tables
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    table = Table("clip", "metrics.quality (ours)", "its decode+scale", "baseline: PyAV decode+swscale", "frames")
    with tempfile.TemporaryDirectory() as tmp:
        clips = {f"{name} 5 s 24 fps": make_clip(w, h) for name, (w, h) in SIZES.items()}
        clips["peer bench's 160 px, 8 frames"] = peer_clip()
        for n, (name, (clip, ref)) in enumerate(clips.items()):
            path = Path(tmp) / f"{n}.mp4"
            path.write_bytes(clip)
            ours = cpu_ms(lambda p=path, r=ref: analyse(p, r), args.runs)
            stage = cpu_ms(lambda p=path: _decode(p), args.runs)
            base = cpu_ms(lambda p=path: plain_decode(p), args.runs)
            q = analyse(path, ref)
            table.add_row(
                name,
                f"{ours[0]:.0f} (min {ours[1]:.0f})",
                f"{stage[0]:.0f} (min {stage[1]:.0f})",
                f"{base[0]:.0f} (min {base[1]:.0f})",
                f"{q.frames_decoded} decoded, {q.frames_sampled} sampled; {q.camera_motion}",
            )
    Console(width=150).print(table)
    print("CPU ms per clip, process clock (all threads), median of", args.runs)


if __name__ == "__main__":
    main()
