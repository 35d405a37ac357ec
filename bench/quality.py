"""CPU per clip of `metrics.quality`, beside a plain decode of the same clip.

    python bench/quality.py [--runs 15]

Makes 5 s clips at 24 fps (a camera pan over scikit-image's astronaut, H.264 by PyAV/libx264,
as a provider would deliver them) at 480p, 720p and 1080p, and the small clip each job of
bench/peer_litellm.py gets from its emulator, then times on the process CPU clock
(all threads counted): (a) `media.quality.analyse` whole, with the input image as reference;
(b) its decode-and-scale stage alone; (c) the baseline: PyAV's default decode of the same clip
with every frame scaled to grey by swscale (what a straightforward implementation pays before
any analysis). Prints the median and min of each, in ms.

    python bench/quality.py --against REV [--runs 40]

This code's `analyse` against `media/quality.py` as it was at git revision REV, in alternating
rounds on the same clips (the peer bench's, and 720p), each measured with the input image as
its reference the way the gateway passes it (REV's way: bytes; this code's: the stored file);
both give their figures, so a change that moves a number shows too.

    python bench/quality.py --accuracy

The camera labels' accuracy against the tracker's cost: 180 synthetic clips with a known move
(zoom in/out, pan, tilt, orbit at two amounts, and static; 8, 48 and 120 frames at 320x180;
four scikit-image photos), each analysed with the tracker settings of the code (CORNERS corners
in LK_WINDOW windows) and with those before them (120 corners, 15x15): labels right, CPU per clip.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from peer_litellm import photo_jpeg
from PIL import Image
from rich.console import Console
from rich.table import Table
from rounds import cpu_times
from skimage import data

import media.quality as mq
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
    times = cpu_times(fn, runs)
    return statistics.median(times), min(times)


MOVES = {
    "zoom_in": (0.08, 0.3),
    "zoom_out": (0.08, 0.3),
    "pan_left": (0.06, 0.2),
    "pan_right": (0.06, 0.2),
    "tilt_up": (0.06, 0.2),
    "tilt_down": (0.06, 0.2),
    "orbit": (0.06, 0.1),
    "static": (0.0,),
}


def moving(big: np.ndarray, move: str, amount: float, n: int, w: int = 320, h: int = 180) -> list[np.ndarray]:
    """`n` frames of a camera `move` over `big` (zoom: scale change; pan/tilt: share of the
    frame; orbit: amount x 100 degrees), cropped from a window 1/1.3 of the photo."""
    bh, bw = big.shape[:2]
    cw, ch = int(bw / 1.3), int(bh / 1.3)
    frames = []
    for i in range(n):
        t = i / (n - 1)
        src, x0, y0 = big, (bw - cw) // 2, (bh - ch) // 2
        size = (cw, ch)
        if move.startswith("zoom"):
            z = 1 + amount * (t if move == "zoom_in" else 1 - t)
            size = (int(bw / z), int(bh / z))
            x0, y0 = (bw - size[0]) // 2, (bh - size[1]) // 2
        elif move == "orbit":
            src = np.asarray(Image.fromarray(big).rotate(amount * 100 * t, resample=Image.Resampling.BILINEAR))
        elif move != "static":  # pan/tilt: the window slides by `amount` of the frame, centred
            shift = amount / 0.3 * ((0.5 - t) if move in ("pan_left", "tilt_up") else (t - 0.5))
            if move.startswith("pan"):
                x0 = int((bw - cw) * (0.5 + shift))
            else:
                y0 = int((bh - ch) * (0.5 + shift))
        crop = src[y0 : y0 + size[1], x0 : x0 + size[0]]
        frames.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR)))
    return frames


def accuracy() -> None:
    photos = {k: getattr(data, k)() for k in ("astronaut", "coffee", "chelsea", "rocket")}
    table = Table("tracker", "labels right", "CPU per clip (ms)", "peer bench's clip (ms)", "wrong (clip: label)")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for name, img in photos.items():
            rgb = img if img.ndim == 3 else np.stack([img] * 3, -1)
            big = np.asarray(Image.fromarray(rgb).resize((512, 288)))
            for move, amounts in MOVES.items():
                for amount in amounts:
                    for n in (8, 48, 120):
                        path = Path(tmp) / f"{name}-{move}-{amount}-{n}.mp4"
                        path.write_bytes(encode_mp4(moving(big, move, amount, n), 24, crf=23))
                        cases.append((path, move))
        settings = {
            f"the code: {mq.CORNERS} corners, {mq.LK_WINDOW[0]}x{mq.LK_WINDOW[1]}": (mq.CORNERS, mq.LK_WINDOW),
            "before: 120 corners, 15x15": (120, (15, 15)),
        }
        peer = Path(tmp) / "peer.mp4"
        clip, ref = peer_clip()
        peer.write_bytes(clip)
        for label, (corners, window) in settings.items():
            mq.CORNERS, mq.LK_WINDOW = corners, window
            peer_ms = cpu_ms(lambda: analyse(peer, ref), 30)[0]
            t0, wrong = time.process_time(), []
            for path, move in cases:
                got = analyse(path).camera_motion
                if got != move:
                    wrong.append(f"{path.stem}: {got}")
            cpu = (time.process_time() - t0) * 1000 / len(cases)
            row = (f"{len(cases) - len(wrong)} / {len(cases)}", f"{cpu:.1f}", f"{peer_ms:.1f}", "; ".join(wrong))
            table.add_row(label, *row)
    Console(width=180).print(table)


def against(rev: str, runs: int) -> None:
    source = subprocess.run(["git", "show", f"{rev}:media/quality.py"], capture_output=True, check=True, text=True)
    spec = importlib.util.spec_from_loader(f"quality_{rev}", loader=None)
    assert spec is not None
    before = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = before  # pydantic resolves the models' annotations through it
    exec(compile(source.stdout, f"{rev}:media/quality.py", "exec"), before.__dict__)  # our own file, as it was
    table = Table("clip", f"{rev}, median / min ms", "this code", "figures (this code; * where they differ)")
    clips = {"peer bench's 160 px, 8 frames": (peer_clip(), runs), "720p 5 s": (make_clip(1280, 720), runs // 10 + 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, ((clip, ref), n) in clips.items():
            path, image = Path(tmp) / f"{n}.mp4", Path(tmp) / f"{n}.jpg"
            path.write_bytes(clip)
            image.write_bytes(ref)
            table.add_row(name, *_old_and_new(before, path, ref, image, n))
    Console(width=220).print(table)
    print("CPU ms per clip, process clock, three alternating rounds")


def _old_and_new(before: Any, path: Path, ref: bytes, image: Path, n: int) -> tuple[str, str, str]:
    """Each way's median / min CPU over alternating rounds, and this code's figures."""
    expected = mq.Expected(seconds=5, fps=24, width=1280, height=720)
    calls = {"old": lambda: before.analyse(path, ref, expected), "new": lambda: analyse(path, image, expected)}
    spent: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(3):  # alternating rounds: the VM's speed drifts by the minute
        for key, call in calls.items():
            spent[key] += cpu_times(call, n)
    old_q, new_q = (call().model_dump(exclude={"cpu_ms"}) for call in calls.values())
    figures = ", ".join(f"{k} {v}{'' if old_q[k] == v else ' *'}" for k, v in new_q.items())
    old_ms, new_ms = (f"{statistics.median(spent[k]):.1f} / {min(spent[k]):.1f}" for k in spent)
    return old_ms, new_ms, figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--accuracy", action="store_true", help="camera labels right against the tracker's cost")
    parser.add_argument("--against", metavar="REV", help="this code's analysis against media/quality.py at REV")
    args = parser.parse_args()
    if args.accuracy:
        return accuracy()
    if args.against:
        return against(args.against, args.runs)
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
