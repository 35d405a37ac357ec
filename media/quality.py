"""Objective quality of a finished clip: a dozen numbers per video on a bounded CPU budget.

Every frame is decoded once and scaled by swscale to a small grey image (long side <= 256 px);
cheap per-frame statistics (black, duplicate and frozen frames) use all of them, and the optical
flow that gives motion, flicker and the camera move uses at most 16 evenly spaced pairs of
adjacent frames (32 frames). The camera move is a robust similarity fit (RANSAC) of each pair's
flow: scale is zoom, rotation is orbit, the displacement of the frame's centre is pan or tilt.
Where the pairs follow on from each other (a clip of up to 17 frames), the corners found in the
first frame are tracked on from pair to pair, as a KLT tracker does, and found again only when
too few are left.

Conventions (those of cinematography): `pan_left` is the camera turning left, so the content
moves right; `tilt_up` the camera turning up, so the content moves down; `zoom_in` the content
growing. Runs off the event loop (a worker process or thread); imports nothing from the gateway.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Literal, NamedTuple

import av
import cv2
import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from media.image import decode_grey

CameraLabel = Literal[
    "static", "zoom_in", "zoom_out", "pan_left", "pan_right", "tilt_up", "tilt_down", "orbit", "mixed"
]

SIDE = 256  #: long side of the analysis frames, px
PAIRS = 16  #: adjacent frame pairs sampled for the flow (32 frames)
MAX_FRAMES = 2000  #: decoding stops here (a minute at 30 fps and then some)
STATS_SIDE = 96  #: per-frame statistics (black, repeats) sample the luma on a grid this fine (short side)
BLACK_LUMA = 32  #: a pixel darker than this is black ...
BLACK_SHARE = 0.98  #: ... and a frame with this share of black pixels is a black frame
REPEAT_DIFF = 0.6  #: mean absolute grey-level change (on the grid) under which a frame repeats its predecessor
FROZEN_S = 0.5  #: repeats in a run at least this long are frozen frames; shorter ones are duplicates
#: Lucas-Kanade stops after 10 iterations or a 0.03 px update (OpenCV's default: 30, 0.01 px; on
#: noisy content the extra iterations cost most of the tracking time and move nothing visible)
LK_STOP = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
#: Corners tracked per pair, and the tracking window: 60 corners in 9x9 windows read the same
#: camera labels as 120 in 15x15 (177 of 180 synthetic moves, bench/quality.py's accuracy table)
#: with ~5x fewer window pixels to track; the similarity fit needs a few dozen inliers, not more.
CORNERS = 60
LK_WINDOW = (9, 9)
REFERENCES = 8  #: input images a measuring process keeps decoded and fitted (a few MB at most)
# Whole-clip amounts under which a camera component counts as no move.
ZOOM_MIN = math.log(1.05)  # 5% change of scale
SHIFT_MIN = 0.03  # 3% of the frame's side
ROTATE_MIN = math.radians(3.0)


class Expected(BaseModel):
    """What the clip was asked to be; each check is None when its expectation is unknown."""

    seconds: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    camera: list[CameraLabel] | None = Field(default=None, description="Labels that satisfy the requested move.")


class Quality(BaseModel):
    """`metrics.quality` of a finished video (docs/api.md defines each field)."""

    first_frame_ssim: float | None = None
    first_frame_psnr: float | None = None
    flicker: float
    motion_magnitude: float
    camera_motion: CameraLabel
    camera_conformity: bool | None = None
    frozen_frames: int
    black_frames: int
    duplicate_frames: int
    duration_ok: bool | None = None
    fps_ok: bool | None = None
    resolution_ok: bool | None = None
    frames_decoded: int
    frames_sampled: int
    cpu_ms: float


def analyse(
    path: Path,
    reference: bytes | Path | None = None,
    expected: Expected | None = None,
    *,
    reference_id: str | None = None,
) -> Quality:
    """The quality of the clip at `path`; `reference` is the input image: its encoded bytes, or
    the file that holds them (read only when its fitted frames are not kept already).
    `reference_id` names the reference's content where the caller knows it (a content hash, as
    the gateway's blob store has): its fitted frames are then kept under that name alone."""
    t0 = time.thread_time()
    cv2.setNumThreads(1)  # OpenCV's pool would spend more CPU than it saves on 256 px frames
    expected = expected or Expected()
    clip = _decode(path)
    frozen, duplicate = _repeats(np.asarray(clip.diffs), clip.fps)
    flicker, motion, camera, sampled = _flow(clip.pairs, clip.frames - 1)
    ssim = psnr = None
    if reference is not None:
        ssim, psnr = _first_frame(clip.first, reference, reference_id)
    q = Quality(
        first_frame_ssim=ssim,
        first_frame_psnr=psnr,
        flicker=round(flicker, 3),
        motion_magnitude=round(motion * SIDE / max(clip.first.shape), 3),
        camera_motion=camera,
        camera_conformity=None if expected.camera is None else camera in expected.camera,
        frozen_frames=frozen,
        black_frames=clip.black,
        duplicate_frames=duplicate,
        duration_ok=None if expected.seconds is None else _near(clip.duration, expected.seconds, 0.1, 0.5),
        fps_ok=(12.0 <= clip.fps <= 61.0) if expected.fps is None else abs(clip.fps - expected.fps) <= 1.0,
        resolution_ok=_size_ok(clip.width, clip.height, expected),
        frames_decoded=clip.frames,
        frames_sampled=sampled,
        cpu_ms=0.0,
    )
    q.cpu_ms = round((time.thread_time() - t0) * 1000, 1)
    return q


class _Decoded(NamedTuple):
    """What one decoding pass keeps: per-frame statistics of every frame, and a bounded set of
    evenly spaced adjacent pairs for the flow (never the whole clip: memory stays flat)."""

    first: np.ndarray
    pairs: list[tuple[np.ndarray, np.ndarray]]
    diffs: list[float]  # mean absolute change of each frame from its predecessor
    black: int
    frames: int
    fps: float
    width: int
    height: int
    duration: float


def _decode(path: Path) -> _Decoded:
    """One pass over the clip (up to MAX_FRAMES) at analysis size.

    One decoding thread and no deblocking (invisible at 256 px): the analysis's CPU is mostly
    decoding, and frame threads cost more CPU than they save wall time here. Pairs are kept at
    the stride that spreads PAIRS over the frame count the container states (MP4 does), and
    that stride doubles whenever more than 2 x PAIRS are held, so they stay evenly spaced when
    the count is unknown or wrong.
    """
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    diffs: list[float] = []
    black = frames = 0
    stride = 1
    first = prev = prev_tiny = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        ctx = stream.codec_context
        ctx.options = {"skip_loop_filter": "all"}
        width, height = ctx.width, ctx.height
        scale = min(1.0, SIDE / max(width, height))
        size = (max(2, round(width * scale)), max(2, round(height * scale)))
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        step = max(1, min(width, height) // STATS_SIDE)  # per-frame statistics on a sampled grid
        if stream.frames > PAIRS:  # the container knows the count: start at the final stride, so
            stride = (min(stream.frames, MAX_FRAMES) - 1) // PAIRS  # only sampled frames are scaled
        last = 0.0
        for frame in container.decode(stream):
            plane = _luma(frame)
            tiny = _full_range(np.ascontiguousarray(plane[::step, ::step]), frame)
            black += int(np.count_nonzero(tiny < BLACK_LUMA) >= BLACK_SHARE * tiny.size)
            # the analysis image only where a kept pair needs it (and the first frame)
            grey = _small(plane, size, frame) if frames % stride == 0 or (frames - 1) % stride == 0 else None
            if frames == 0:
                first = grey
            else:
                diffs.append(float(cv2.absdiff(tiny, prev_tiny).mean()))
                if (frames - 1) % stride == 0 and grey is not None:
                    pairs.append((prev, grey))
                    if len(pairs) > 2 * PAIRS:
                        pairs, stride = pairs[::2], stride * 2
            prev, prev_tiny = grey, tiny
            frames += 1
            if frame.pts is not None and frame.duration:
                last = max(last, float((frame.pts + frame.duration) * stream.time_base))
            if frames >= MAX_FRAMES:
                break
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        duration = last - start if last else (frames / fps if fps else 0.0)
    if first is None:
        raise ValueError("the clip has no frames")
    if len(pairs) > PAIRS:
        pairs = [pairs[round(i)] for i in np.linspace(0, len(pairs) - 1, PAIRS)]
    return _Decoded(first, pairs, diffs, black, frames, fps, width, height, duration)


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma plane as it lies in the decoder's buffer (no copy)."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuvj422p", "yuvj444p", "gray"):
        return frame.reformat(format="gray").to_ndarray()
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]


def _full_range(y: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
    """Limited-range (16-235) luma stretched to 0-255, so thresholds mean the same in any clip."""
    if frame.format.name.startswith("yuvj") or frame.color_range == 2 or frame.format.name == "gray":
        return y
    return cv2.convertScaleAbs(y, alpha=255 / 219, beta=-16 * 255 / 219)


def _small(y: np.ndarray, size: tuple[int, int], frame: av.VideoFrame) -> np.ndarray:
    """Luma scaled to `size` by halvings (a 2x2 mean each, after one by sampling), full range."""
    if y.shape[1] >= 4 * size[0] and y.shape[0] >= 4 * size[1]:
        y = y[::2, ::2]  # the first halving by sampling: a quarter of the bytes to average
    while y.shape[1] >= 2 * size[0] and y.shape[0] >= 2 * size[1]:
        y = cv2.resize(y, (y.shape[1] // 2, y.shape[0] // 2), interpolation=cv2.INTER_LINEAR)
    return _full_range(cv2.resize(y, size, interpolation=cv2.INTER_AREA), frame)


def _repeats(diffs: np.ndarray, fps: float) -> tuple[int, int]:
    """(frozen, duplicate): frames that repeat their predecessor, in long runs and in short ones."""
    run_min = max(2, round(FROZEN_S * (fps or 24)))
    frozen = duplicate = run = 0
    for repeat in [*(diffs < REPEAT_DIFF), False]:
        if repeat:
            run += 1
            continue
        if run >= run_min:
            frozen += run
        else:
            duplicate += run
        run = 0
    return frozen, duplicate


def _flow(pairs: list[tuple[np.ndarray, np.ndarray]], steps: int) -> tuple[float, float, CameraLabel, int]:
    """Flicker, motion (px per frame at analysis size), camera label and frames sampled, from
    adjacent frame pairs; `steps` is the clip's frame count less one (the camera move's scale).

    Tracked corners (pyramidal Lucas-Kanade, sub-pixel accurate) give the motion and the
    similarity fit; a dense flow (DIS) gives the motion compensation behind the flicker.
    """
    if not pairs:
        return 0.0, 0.0, "static", 1
    h, w = pairs[0][0].shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    step = max(4, min(h, w) // 12)
    cells = (slice(step // 2, None, step), slice(step // 2, None, step))
    grid = np.stack([xs[cells].ravel(), ys[cells].ravel()], 1)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    levels = int(np.clip(math.log2(min(h, w) / 24), 1, 3))  # the coarsest level keeps >= 24 px
    flickers, motions, zooms, rots, shifts = [], [], [], [], []
    centre = np.array([w / 2, h / 2, 1.0])
    carried: tuple[np.ndarray, np.ndarray] | None = None  # (frame, corners tracked onto it)
    for prev, nxt in pairs:
        # backward flow: nxt(x) ~ prev(x + g(x)), so prev warped by g lands on nxt's pixels
        g = dis.calc(nxt, prev, None)
        mx, my = xs + g[..., 0], ys + g[..., 1]
        warped = cv2.remap(prev.astype(np.float32), mx, my, cv2.INTER_LINEAR)
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        delta = np.abs(nxt.astype(np.float32) - warped)[inside]
        flickers.append(float(delta.mean()) if delta.size else 0.0)
        if carried is not None and carried[0] is prev and len(carried[1]) >= CORNERS // 2:
            pts = carried[1]  # adjacent pairs (a short clip): the corners tracked so far go on
        else:
            corners = cv2.goodFeaturesToTrack(prev, maxCorners=CORNERS, qualityLevel=0.01, minDistance=8)
            pts = (corners.reshape(-1, 2) if corners is not None and len(corners) >= 12 else grid).astype(np.float32)
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(
            prev, nxt, pts, None, winSize=LK_WINDOW, maxLevel=levels, criteria=LK_STOP
        )
        ok = ok.ravel() == 1
        src, dst = pts[ok], moved.reshape(-1, 2)[ok]
        kept = (dst[:, 0] >= 0) & (dst[:, 0] <= w - 1) & (dst[:, 1] >= 0) & (dst[:, 1] <= h - 1)
        carried = (nxt, np.ascontiguousarray(dst[kept]))
        if ok.sum() < 6:
            continue
        motions.append(float(np.hypot(*(dst - src).T).mean()))
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if m is None:
            continue
        zooms.append(math.log(max(1e-6, math.hypot(m[0, 0], m[1, 0]))))
        rots.append(math.atan2(m[1, 0], m[0, 0]))
        shifts.append(m @ centre - centre[:2])
    camera = _camera(zooms, rots, shifts, steps, w, h)
    return float(np.mean(flickers)), float(np.mean(motions)) if motions else 0.0, camera, len(pairs) * 2


def _camera(zooms: list[float], rots: list[float], shifts: list[np.ndarray], steps: int, w: int, h: int) -> CameraLabel:
    """The whole clip's move: per-pair means (trimmed: a cut or a glitch in one pair does not
    decide) times the number of steps, scored by threshold. A mean, not a median: a slow move
    shows in some pairs and not in others (whole-pixel steps), and the mean adds them up."""
    if not zooms:
        return "static"
    dx, dy = (_trimmed([s[k] for s in shifts]) * steps for k in (0, 1))
    zoom = _trimmed(zooms) * steps
    rot = _trimmed(rots) * steps
    scores = {
        ("zoom_in" if zoom > 0 else "zoom_out"): abs(zoom) / ZOOM_MIN,
        ("pan_left" if dx > 0 else "pan_right"): abs(dx) / (SHIFT_MIN * w),
        ("tilt_up" if dy > 0 else "tilt_down"): abs(dy) / (SHIFT_MIN * h),
        "orbit": abs(rot) / ROTATE_MIN,
    }
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    if top < 1.0:
        return "static"
    if second >= 1.0 and second >= 0.5 * top:
        return "mixed"
    return best  # type: ignore[return-value]


def _trimmed(values: list[float]) -> float:
    """scipy's `trim_mean(values, 0.1)` from five values up (a tenth cut from each end), without
    its argument checking, which cost more than the analysis's flow fit on a short clip."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.1 * len(ordered)) if len(ordered) >= 5 else 0
    return float(ordered[cut : len(ordered) - cut].mean())


def _first_frame(first: np.ndarray, reference: bytes | Path, reference_id: str | None = None) -> tuple[float, float]:
    """SSIM and PSNR of the first frame against the input image fitted to the frame, by
    scaling alone, cropping to cover, or letterboxing: whichever the provider did fits best,
    i.e. leaves the least squared error (an SSIM for each fit cost ~3x the one kept)."""
    h, w = first.shape
    fits = _fitted(reference, w, h, reference_id)
    errors = [cv2.norm(first, r, cv2.NORM_L2SQR) for r in fits]
    best = int(np.argmin(errors))
    mse = errors[best] / first.size
    psnr = 10 * math.log10(255**2 / mse) if mse else math.inf  # as skimage's peak_signal_noise_ratio
    return round(ssim_of(first, fits[best]), 4), round(min(psnr, 100.0), 2)


_FITTED: OrderedDict[tuple[object, ...], list[np.ndarray]] = OrderedDict()
_FITTED_LOCK = threading.Lock()


def _fitted(reference: bytes | Path, w: int, h: int, reference_id: str | None = None) -> list[np.ndarray]:
    """The input image decoded in grey and fitted to a w x h frame, each way `_fits` tries; the
    last REFERENCES images' are kept (by the caller's `reference_id`, else a hash of the bytes,
    or a file's path, size and modification time): a comparison or a bulk run sends one photo to
    many models, and decoding it was a fifth of a small clip's analysis. A content-addressed
    store touches a reused file's mtime (retention keeps it), so it passes the hash instead."""
    if reference_id is not None:
        key: tuple[object, ...] = ("id", reference_id, w, h)
    elif isinstance(reference, Path):
        st = reference.stat()
        key = (str(reference), st.st_size, st.st_mtime_ns, w, h)
    else:
        key = (hashlib.blake2b(reference, digest_size=16).digest(), w, h)
    with _FITTED_LOCK:
        fitted = _FITTED.get(key)
        if fitted is not None:
            _FITTED.move_to_end(key)
            return fitted
    data = reference.read_bytes() if isinstance(reference, Path) else reference
    img = decode_grey(data, at_least=(2 * w, 2 * h))
    fitted = [np.asarray(f) for f in _fits(img, w, h)]
    with _FITTED_LOCK:
        _FITTED[key] = fitted
        while len(_FITTED) > REFERENCES:
            _FITTED.popitem(last=False)
    return fitted


def ssim_of(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Mean SSIM of two grey uint8 images, as skimage's `structural_similarity(a, b,
    data_range=255)` computes it (7x7 uniform windows, sample covariance, the border a window
    does not fit cropped), with OpenCV's box filter: about a third of the CPU on a small frame."""
    x, y = a.astype(np.float64), b.astype(np.float64)

    def box(m: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(m, cv2.CV_64F, (win, win), borderType=cv2.BORDER_REFLECT)

    ux, uy = box(x), box(y)
    norm = win * win / (win * win - 1)  # sample covariance
    vx, vy, vxy = (norm * (box(p) - q) for p, q in ((x * x, ux * ux), (y * y, uy * uy), (x * y, ux * uy)))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def _fits(img: Image.Image, w: int, h: int) -> list[Image.Image]:
    stretched = img.resize((w, h), Image.Resampling.BILINEAR)
    if abs(img.width / img.height - w / h) < 0.02 * w / h:
        return [stretched]
    cover = ImageOps.fit(img, (w, h), Image.Resampling.BILINEAR)
    contain = ImageOps.pad(img, (w, h), Image.Resampling.BILINEAR, color=0)
    return [stretched, cover, contain]


def _size_ok(width: int, height: int, expected: Expected) -> bool | None:
    if expected.width is None or expected.height is None:
        return None
    short = _near(min(width, height), min(expected.width, expected.height), 0.03)
    return short and _near(width / height, expected.width / expected.height, 0.03)


def _near(value: float, target: float, share: float, floor: float = 0.0) -> bool:
    return abs(value - target) <= max(floor, share * target)


CAMERA_ACCEPTS: dict[str, list[CameraLabel]] = {
    "static": ["static"],
    "rack_focus": ["static"],
    "push_in": ["zoom_in"],
    "zoom_in": ["zoom_in"],
    "pull_back": ["zoom_out"],
    "zoom_out": ["zoom_out"],
    "orbit": ["orbit", "pan_left", "pan_right", "mixed"],
    "roll": ["orbit", "mixed"],
    "tracking": ["pan_left", "pan_right", "mixed"],
}
_DIRECTIONAL: dict[str, dict[str, list[CameraLabel]]] = {
    "pan": {"left": ["pan_left"], "right": ["pan_right"]},
    "truck": {"left": ["pan_left"], "right": ["pan_right"]},
    "tilt": {"up": ["tilt_up"], "down": ["tilt_down"]},
    "pedestal": {"up": ["tilt_up"], "down": ["tilt_down"]},
    "crane": {"up": ["tilt_up"], "down": ["tilt_down"]},
    "dolly": {"in": ["zoom_in"], "out": ["zoom_out"]},
}


def accepted_labels(move_type: str, direction: str | None) -> list[CameraLabel] | None:
    """The labels that satisfy a requested camera move (`CameraMove.type`/`direction`); None
    when nothing 2-D can check it."""
    if move_type in CAMERA_ACCEPTS:
        return CAMERA_ACCEPTS[move_type]
    by_dir = _DIRECTIONAL.get(move_type)
    if by_dir is None:
        return None
    if direction in by_dir:
        return by_dir[direction]
    return [label for labels in by_dir.values() for label in labels]
