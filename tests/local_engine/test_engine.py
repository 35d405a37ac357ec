"""The engine end to end on CPU: load from a saved folder, generate, encode, progress, cancel."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import numpy as np
import pytest

from local_engine.config import EngineConfig
from local_engine.engine import Job, LocalEngine, frames_for, snap16
from tests.support.images import image_bytes


def wait(job: Job, timeout: float = 120) -> Job:
    deadline = time.time() + timeout
    while job.state in ("queued", "in_progress"):
        assert time.time() < deadline, f"job still {job.state}"
        time.sleep(0.02)
    return job


@pytest.fixture
def engine(tiny_wan: Path):
    eng = LocalEngine(EngineConfig(model_path=tiny_wan, devices=["cpu"], steps=3, fps=8, max_frames=9))
    yield eng
    eng.close()


def test_generates_an_h264_mp4_with_the_requested_frames_fps_and_size(engine: LocalEngine) -> None:
    job = engine.submit(image_bytes(200, 130), "slow push in", width=100, height=60, seconds=1.0, seed=3)
    assert (job.width, job.height, job.num_frames) == (96, 64, 9)
    wait(job)
    assert job.state == "completed", job.error
    assert job.progress == 100 and job.timings["generate_s"] > 0
    with av.open(io.BytesIO(job.video or b"")) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (96, 64)
        assert float(stream.average_rate) == 8
    assert len(frames) == 9


def test_same_seed_same_video(engine: LocalEngine) -> None:
    a = wait(engine.submit(image_bytes(96, 64), "mist drifts", width=96, height=64, seconds=1.0, seed=7))
    b = wait(engine.submit(image_bytes(96, 64), "mist drifts", width=96, height=64, seconds=1.0, seed=7))
    fa, fb = _frames(a.video), _frames(b.video)
    other = _frames(
        wait(engine.submit(image_bytes(96, 64), "mist drifts", width=96, height=64, seconds=1.0, seed=8)).video
    )
    # Threaded CPU kernels may round differently from run to run, so "the same" is "within a
    # tenth of a grey level on average", against a different seed that differs by far more.
    same = float(np.abs(fa - fb).mean())
    assert same < 0.5, same
    assert float(np.abs(fa - other).mean()) > 10 * max(same, 0.05)


def _frames(video: bytes | None) -> np.ndarray:
    with av.open(io.BytesIO(video or b"")) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)


def test_cancel_stops_between_steps(tiny_wan: Path) -> None:
    eng = LocalEngine(EngineConfig(model_path=tiny_wan, devices=["cpu"], steps=200, fps=8, max_frames=9))
    try:
        job = eng.submit(image_bytes(96, 64), "waves", width=96, height=64, seconds=1.0)
        queued = eng.submit(image_bytes(96, 64), "waves", width=96, height=64, seconds=1.0)
        while job.step < 2:
            assert job.state in ("queued", "in_progress"), job.error
            time.sleep(0.01)
        eng.cancel(job.id)
        eng.cancel(queued.id)
        assert wait(job).state == "cancelled" and 2 <= job.step < 200 and job.video is None
        assert wait(queued).state == "cancelled" and queued.step == 0  # never started
    finally:
        eng.close()


def test_a_folder_without_weights_fails_the_job_with_a_clear_error(tmp_path: Path) -> None:
    eng = LocalEngine(EngineConfig(model_path=tmp_path, devices=["cpu"], steps=2))
    try:
        job = wait(eng.submit(image_bytes(96, 64), "x", width=96, height=64, seconds=1.0))
        assert job.state == "failed" and "no model_index.json" in (job.error or "")
    finally:
        eng.close()


@pytest.mark.parametrize(
    ("seconds", "fps", "cap", "frames"), [(5, 16, 81, 81), (1, 8, 81, 9), (10, 16, 81, 81), (2, 24, 81, 49)]
)
def test_frame_counts_are_4k_plus_1(seconds: float, fps: int, cap: int, frames: int) -> None:
    assert frames_for(seconds, fps, cap) == frames and (frames - 1) % 4 == 0


def test_sizes_snap_to_16() -> None:
    assert (snap16(832), snap16(481), snap16(7)) == (832, 480, 16)


def test_wan22_ti2v_layout_loads_and_generates(tmp_path: Path) -> None:
    """The Wan 2.2 TI2V-5B layout (no image encoder, 48-channel latents, timestep-masked first
    frame) through the same loader and engine."""
    from local_engine.tiny import save_tiny_pipeline

    path = save_tiny_pipeline(tmp_path / "ti2v", layout="wan2.2-ti2v")
    eng = LocalEngine(EngineConfig(model_path=path, devices=["cpu"], steps=3, fps=24, max_frames=9))
    try:
        job = wait(eng.submit(image_bytes(200, 130), "waves", width=96, height=64, seconds=1.0, seed=1))
        assert job.state == "completed", job.error
        assert eng.workers[0].pipe.config.expand_timesteps is True and eng.workers[0].pipe.image_encoder is None
        with av.open(io.BytesIO(job.video or b"")) as c:
            stream = c.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (96, 64)
            assert float(stream.average_rate) == 24
            assert len(list(c.decode(stream))) == job.num_frames == 9
    finally:
        eng.close()


def test_onnx_runtime_engine_makes_the_same_video(
    engine: LocalEngine, tiny_wan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`i2v-gateway engine build` exports a transformer block and the VAE decoder (external data)
    for a shape ahead of time; runtime: onnx then runs them in ONNX Runtime (CPU provider here) with
    no export inside the job, and the video matches the torch engine's. A shape nobody built
    fails the job with the command to run, instead of exporting for minutes inside it."""
    from typer.testing import CliRunner

    from gateway.cli import app

    args = dict(width=96, height=64, seconds=1.0, seed=4)
    reference = _frames(wait(engine.submit(image_bytes(96, 64), "leaves sway", **args)).video)
    options = {"model_path": str(tiny_wan), "steps": 3, "fps": 8, "max_frames": 9, "onnx_dir": str(tmp_path)}
    for key, value in options.items():
        monkeypatch.setenv(f"I2V_ADAPTERS__LOCAL__OPTIONS__{key.upper()}", str(value))
    built = CliRunner().invoke(app, ["engine", "build", "--shape", "96x64", "--seconds", "1"])
    assert built.exit_code == 0, built.output
    assert "built 96x64x9" in built.output
    graphs = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.onnx")}
    assert len(list(tmp_path.glob("transformer-block-*.onnx"))) == 1  # one block graph; weights are inputs
    (decoder,) = tmp_path.glob("vae-decoder-*.onnx")
    assert decoder.with_name(decoder.name + ".data").exists()  # the decoder's weights as external data
    config = EngineConfig(**{**options, "devices": ["cpu"], "runtime": "onnx"})
    onnx_engine = LocalEngine(config)
    try:
        job = wait(onnx_engine.submit(image_bytes(96, 64), "leaves sway", **args), timeout=600)
        unbuilt = wait(onnx_engine.submit(image_bytes(96, 64), "x", width=64, height=64, seconds=1.0), timeout=600)
    finally:
        onnx_engine.close()
    assert job.state == "completed", job.error
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.onnx")} == graphs  # nothing exported in the jobs
    assert unbuilt.state == "failed" and "i2v-gateway engine build" in (unbuilt.error or "")
    diff = float(np.abs(_frames(job.video) - reference).mean())
    assert diff < 1.0, diff  # of 255: float32 in both, other kernels


def test_fp8_attention_is_calibrated_at_load_and_makes_the_same_video(engine: LocalEngine, tiny_wan: Path) -> None:
    """`attention: cudnn_fp8` fixes V's scale and the K and V means in a calibration run at load,
    even with the linears left in bf16, so no job pays for them (its CPU twin runs here)."""
    args = dict(width=96, height=64, seconds=1.0, seed=4)
    reference = _frames(wait(engine.submit(image_bytes(96, 64), "leaves sway", **args)).video)
    fp8 = LocalEngine(EngineConfig(model_path=tiny_wan, devices=["cpu"], steps=3, fps=8, max_frames=9,
                                   attention="cudnn_fp8"))  # fmt: skip
    try:
        job = wait(fp8.submit(image_bytes(96, 64), "leaves sway", **args), timeout=300)
        blocks = fp8.workers[0].pipe.transformer.blocks
    finally:
        fp8.close()
    assert job.state == "completed", job.error
    # two steps of cond and uncond forwards
    assert all(b.attn1.i2v_fp8_scales.v_static and b.attn1.i2v_fp8_scales.calls == 4 for b in blocks)
    diff = float(np.abs(_frames(job.video) - reference).mean())
    assert 0 < diff < 4.0, diff  # of 255: fp8 attention's rounding, not another video


def test_finished_jobs_are_kept_only_up_to_the_bound() -> None:
    """A finished job holds its MP4 until fetched; unfetched ones cannot pile up for ever."""
    from types import SimpleNamespace

    from local_engine.engine import Job, LocalEngine

    def job(i: int, state: str) -> Job:
        j = Job(f"j{i}", b"", "p", None, 16, 16, 5, None, 1, 1.0)
        j.state = state  # type: ignore[assignment]
        j.video = b"x" * 1000
        return j

    states = ["completed", "in_progress", "failed", "completed", "queued", "cancelled", "completed"]
    fake = SimpleNamespace(jobs={f"j{i}": job(i, s) for i, s in enumerate(states)}, config=SimpleNamespace(keep_jobs=2))
    LocalEngine._bound(fake)  # type: ignore[arg-type]
    assert sorted(fake.jobs) == ["j1", "j4", "j5", "j6"]  # running and queued stay; the 2 newest finished stay
