"""Quality metrics on synthetic clips whose answers are known by construction."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from media import encode_mp4
from media.quality import Expected, accepted_labels, analyse

W, H, N, FPS = 320, 192, 48, 24


def _photo() -> np.ndarray:
    return np.asarray(Image.fromarray(data.coffee()).resize((int(W * 1.3), int(H * 1.3))))


def _moving(move: str, n: int = N) -> list[np.ndarray]:
    """Crops of a real photo along a known camera move (the way a camera would see it)."""
    big = _photo()
    bh, bw = big.shape[:2]
    frames = []
    for i in range(n):
        t = i / (n - 1)
        if move in ("zoom_in", "zoom_out"):
            z = 1 + 0.3 * (t if move == "zoom_in" else 1 - t)
            cw, ch = int(bw / z), int(bh / z)
            x0, y0 = (bw - cw) // 2, (bh - ch) // 2
        elif move == "orbit":
            angle = 8 * t
            rot = np.asarray(Image.fromarray(big).rotate(angle, resample=Image.Resampling.BILINEAR))
            x0, y0 = (bw - W) // 2, (bh - H) // 2
            frames.append(np.ascontiguousarray(rot[y0 : y0 + H, x0 : x0 + W]))
            continue
        else:
            cw, ch = W, H
            dx, dy = bw - W, bh - H
            # pan_left: the camera turns left, the window slides left, the content moves right
            x0 = {"pan_left": int(dx * (1 - t)), "pan_right": int(dx * t)}.get(move, dx // 2)
            y0 = {"tilt_up": int(dy * (1 - t)), "tilt_down": int(dy * t)}.get(move, dy // 2)
        crop = big[y0 : y0 + ch, x0 : x0 + cw]
        frames.append(np.asarray(Image.fromarray(crop).resize((W, H), Image.Resampling.BILINEAR)))
    return frames


def _clip(tmp_path: Path, frames: list[np.ndarray], name: str = "clip.mp4", fps: int = FPS) -> Path:
    path = tmp_path / name
    path.write_bytes(encode_mp4(frames, fps, crf=18))
    return path


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize("move", ["zoom_in", "zoom_out", "pan_left", "pan_right", "tilt_up", "tilt_down", "orbit"])
def test_known_camera_moves_are_recognised(tmp_path: Path, move: str) -> None:
    q = analyse(_clip(tmp_path, _moving(move)))
    assert q.camera_motion == move
    assert q.motion_magnitude > 0.1
    assert q.frames_sampled <= 32


def test_a_long_clip_keeps_a_bounded_evenly_spread_sample(tmp_path: Path) -> None:
    from media.quality import PAIRS, _decode

    path = _clip(tmp_path, _moving("tilt_down", 150))
    clip = _decode(path)
    assert clip.frames == 150 and len(clip.diffs) == 149
    assert len(clip.pairs) == PAIRS and all(a is not None and b is not None for a, b in clip.pairs)
    q = analyse(path)
    assert q.camera_motion == "tilt_down" and q.frames_decoded == 150 and q.frames_sampled == 2 * PAIRS


def test_a_frozen_clip_is_static_with_no_motion_and_all_frames_frozen(tmp_path: Path) -> None:
    still = _moving("zoom_in")[0]
    q = analyse(_clip(tmp_path, [still] * N))
    assert q.camera_motion == "static"
    assert q.motion_magnitude < 0.05
    assert q.frozen_frames == N - 1 and q.duplicate_frames == 0
    assert q.flicker < 1.0


def test_a_clip_that_starts_on_the_input_image_scores_high_first_frame_ssim(tmp_path: Path) -> None:
    frames = _moving("zoom_in")
    path = _clip(tmp_path, frames)
    same = analyse(path, reference=_jpeg(frames[0]))
    other = analyse(path, reference=_jpeg(np.asarray(Image.fromarray(data.astronaut()).resize((W, H)))))
    assert same.first_frame_ssim is not None and same.first_frame_ssim > 0.85
    assert same.first_frame_psnr is not None and same.first_frame_psnr > 28
    assert other.first_frame_ssim is not None and other.first_frame_ssim < 0.4
    assert other.first_frame_psnr is not None and other.first_frame_psnr < same.first_frame_psnr - 10


def test_an_input_image_is_decoded_once_for_many_clips_and_few_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A comparison sends one photo to several models: its clips are measured against one decode
    of it, with the same figures as a cold measurement; only the last REFERENCES images are kept."""
    import media.quality as mq

    decodes = []
    real = mq.decode_grey
    monkeypatch.setattr(mq, "decode_grey", lambda *a, **k: decodes.append(1) or real(*a, **k))
    mq._FITTED.clear()
    frames = _moving("zoom_in")
    path, ref = _clip(tmp_path, frames), _jpeg(frames[0])
    cold, warm = analyse(path, reference=ref), analyse(path, reference=ref)
    assert len(decodes) == 1
    assert (warm.first_frame_ssim, warm.first_frame_psnr) == (cold.first_frame_ssim, cold.first_frame_psnr)
    others = [_jpeg(np.roll(frames[0], k, axis=1)) for k in range(1, mq.REFERENCES + 2)]
    for other in others:
        analyse(path, reference=other)
    assert len(mq._FITTED) == mq.REFERENCES
    analyse(path, reference=ref)  # pushed out by the others: decoded again
    assert len(decodes) == 1 + len(others) + 1


def test_the_reference_is_fitted_the_way_the_provider_fitted_it(tmp_path: Path) -> None:
    """A square photo letterboxed into a wide frame matches once letterboxed the same way."""
    square = np.asarray(Image.fromarray(data.astronaut()).resize((H, H)))
    frame = np.zeros((H, W, 3), np.uint8)
    frame[:, (W - H) // 2 : (W - H) // 2 + H] = square
    q = analyse(_clip(tmp_path, [frame] * 8), reference=_jpeg(square))
    assert q.first_frame_ssim is not None and q.first_frame_ssim > 0.85


def test_the_fit_kept_is_the_one_with_least_squared_error_and_its_psnr_is_skimages(tmp_path: Path) -> None:
    """One SSIM, for the fit that leaves the least squared error; its PSNR is skimage's."""
    from skimage.metrics import peak_signal_noise_ratio

    import media.quality as mq

    square = np.asarray(Image.fromarray(data.astronaut()).resize((H, H)))
    frame = np.zeros((H, W, 3), np.uint8)
    frame[:, (W - H) // 2 : (W - H) // 2 + H] = square
    q = analyse(_clip(tmp_path, [frame] * 8), reference=_jpeg(square))
    first = mq._decode(tmp_path / "clip.mp4").first
    fits = mq._fitted(_jpeg(square), first.shape[1], first.shape[0])
    errors = [float(((first.astype(float) - f) ** 2).sum()) for f in fits]
    best = fits[int(np.argmin(errors))]
    assert int(np.argmin(errors)) == 2  # letterboxed, as the clip was made
    assert q.first_frame_ssim == round(mq.ssim_of(first, best), 4)
    assert q.first_frame_psnr == round(float(peak_signal_noise_ratio(best, first, data_range=255)), 2)


def test_a_reference_file_is_read_and_decoded_only_when_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway passes the stored input image's path: a kept reference costs a stat, not a
    read and a hash; a changed file is read afresh. The figures equal those from the bytes."""
    import media.quality as mq

    decodes = []
    real = mq.decode_grey
    monkeypatch.setattr(mq, "decode_grey", lambda *a, **k: decodes.append(1) or real(*a, **k))
    mq._FITTED.clear()
    frames = _moving("zoom_in", 12)
    path, ref = _clip(tmp_path, frames), tmp_path / "photo.jpg"
    ref.write_bytes(_jpeg(frames[0]))
    by_bytes = analyse(path, reference=ref.read_bytes())
    by_file, again = analyse(path, reference=ref), analyse(path, reference=ref)
    assert by_file.first_frame_ssim == by_bytes.first_frame_ssim
    assert by_file.first_frame_psnr == by_bytes.first_frame_psnr
    assert again == by_file.model_copy(update={"cpu_ms": again.cpu_ms})
    assert len(decodes) == 2  # the bytes once, the file once
    size = ref.stat().st_size
    ref.write_bytes(_jpeg(frames[-1]))  # another image at the same path
    assert ref.stat().st_size != size  # (the key is path, size and mtime: mtime alone may be coarse)
    changed = analyse(path, reference=ref)
    assert len(decodes) == 3
    assert changed.first_frame_ssim is not None and changed.first_frame_ssim < by_file.first_frame_ssim


def test_adjacent_pairs_track_the_corners_found_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short clip's pairs are adjacent: corners are found in the first frame and tracked on
    (found again only where too few survive), and the move still reads right."""
    import cv2

    calls = []
    real = cv2.goodFeaturesToTrack
    monkeypatch.setattr(cv2, "goodFeaturesToTrack", lambda *a, **k: calls.append(1) or real(*a, **k))
    q = analyse(_clip(tmp_path, _moving("pan_left", 8)))
    assert q.camera_motion == "pan_left"
    assert q.frames_sampled == 14  # 7 adjacent pairs
    assert len(calls) == 1
    calls.clear()
    long = analyse(_clip(tmp_path, _moving("pan_left", 120), "long.mp4"))  # pairs 7 frames apart
    assert long.camera_motion == "pan_left"
    assert len(calls) == 16


def test_shuffled_frames_flicker_far_more_than_the_smooth_clip(tmp_path: Path) -> None:
    frames = _moving("pan_right")
    shuffled = [frames[i] for i in np.random.default_rng(3).permutation(len(frames))]
    smooth = analyse(_clip(tmp_path, frames, "smooth.mp4"))
    jumpy = analyse(_clip(tmp_path, shuffled, "jumpy.mp4"))
    assert smooth.flicker < 3.0
    assert jumpy.flicker > 3 * smooth.flicker


def test_black_duplicate_and_frozen_frames_are_counted(tmp_path: Path) -> None:
    frames = _moving("pan_right")
    black = np.zeros_like(frames[0])
    # 4 black frames (3 of them repeats: a short run), one doubled frame, then a 0.75 s freeze
    clip = frames[:10] + [black] * 4 + frames[10:20] + [frames[20]] * 2 + frames[21:30] + [frames[30]] * 19
    q = analyse(_clip(tmp_path, clip))
    assert q.black_frames == 4
    assert q.duplicate_frames == 3 + 1
    assert q.frozen_frames == 18


def test_expectations_are_checked(tmp_path: Path) -> None:
    path = _clip(tmp_path, _moving("zoom_in"))  # 2 s, 24 fps, 320x192
    right = analyse(path, expected=Expected(seconds=2, fps=24, width=320, height=192, camera=["zoom_in"]))
    assert (right.duration_ok, right.fps_ok, right.resolution_ok, right.camera_conformity) == (True, True, True, True)
    wrong = analyse(path, expected=Expected(seconds=5, fps=16, width=1280, height=720, camera=["pan_left"]))
    assert (wrong.duration_ok, wrong.fps_ok, wrong.resolution_ok, wrong.camera_conformity) == (False,) * 4
    unknown = analyse(path)
    assert (unknown.duration_ok, unknown.resolution_ok, unknown.camera_conformity) == (None, None, None)


def test_requested_moves_map_to_the_labels_that_satisfy_them() -> None:
    assert accepted_labels("pan", "left") == ["pan_left"]
    assert accepted_labels("push_in", None) == ["zoom_in"]
    assert accepted_labels("tilt", None) == ["tilt_up", "tilt_down"]
    assert accepted_labels("crane", "up") == ["tilt_up"]
    assert accepted_labels("static", None) == ["static"]


def test_side_by_side_puts_clips_on_one_clock_with_labels(tmp_path: Path) -> None:
    import av

    from media.sidebyside import side_by_side

    short = _clip(tmp_path, _moving("pan_left", 24), "short.mp4")  # 1 s
    long = _clip(tmp_path, _moving("zoom_in", 48), "long.mp4")  # 2 s
    out = tmp_path / "both.mp4"
    out.write_bytes(side_by_side([short, long], ["A: wan", "B: kling"], height=160))
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert frames[0].shape[:2] == (160, 2 * (2 * round(W * 160 / H / 2)))  # two clips of 266 px
    assert abs(len(frames) - 48) <= 1  # the longer clip's length
    half = frames[0].shape[1] // 2
    assert frames[0][:12, :40].mean() < 120  # the label's dark box, top left of each half
    assert frames[0][:12, half : half + 40].mean() < 120
    # the short clip holds its last frame while the long one goes on
    assert np.abs(frames[-1][20:, :half].astype(int) - frames[-5][20:, :half].astype(int)).mean() < 2
    assert np.abs(frames[-1][20:, half:].astype(int) - frames[-5][20:, half:].astype(int)).mean() > 2


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_ssim_is_skimages_on_real_photos(name: str) -> None:
    """`ssim_of` (OpenCV box filters) gives skimage's `structural_similarity` to 1e-9: noisy,
    shifted and identical frames of real photos."""
    from skimage.metrics import structural_similarity

    from media.quality import ssim_of

    a = np.asarray(Image.fromarray(getattr(data, name)()).convert("L").resize((256, 144)))
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    for other in (noisy, np.roll(a, 3, axis=1), a):
        assert ssim_of(a, other) == pytest.approx(structural_similarity(a, other, data_range=255), abs=1e-9)


def test_trimmed_mean_is_scipys() -> None:
    from scipy.stats import trim_mean

    from media.quality import _trimmed

    for n in range(1, 30):
        values = list(np.random.default_rng(n).normal(size=n))
        expected = trim_mean(values, 0.1) if n >= 5 else np.mean(values)
        assert _trimmed(values) == pytest.approx(float(expected), abs=1e-12)
