"""The engine's accelerated torch path on a CUDA device: fused qkv, fp8 linears with static
scales calibrated at load, regional compile. Skipped without a GPU (CI); run on the lent H100
with `pytest --noconftest tests/local_engine/test_gpu.py` (this file needs no shared fixtures)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _image() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


def _frames(video: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(video)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)


def _generate(path: Path, **options) -> tuple[bytes, object]:
    from local_engine.config import EngineConfig
    from local_engine.engine import LocalEngine

    engine = LocalEngine(EngineConfig(model_path=path, devices=["cuda"], steps=4, fps=8, max_frames=9, **options))
    try:
        job = engine.submit(_image(), "slow push in", width=96, height=64, seconds=1.0, seed=5)
        deadline = time.time() + 600
        while job.state in ("queued", "in_progress"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert job.state == "completed", job.error
        return job.video or b"", engine.workers[0].pipe
    finally:
        engine.close()


def test_accelerated_engine_matches_plain_bf16(tmp_path: Path) -> None:
    from local_engine.accel import Fp8Linear
    from local_engine.tiny import save_tiny_pipeline

    path = save_tiny_pipeline(tmp_path / "wan-tiny")
    plain, _ = _generate(path)
    fast, pipe = _generate(path, fuse_qkv=True, fp8_linear=True, fp8_scaling="static", compile=True)
    layers = [m for m in pipe.transformer.modules() if isinstance(m, Fp8Linear)]
    assert layers and all(float(m.x_scale) > 0 for m in layers)  # calibrated at load
    a, b = _frames(plain), _frames(fast)
    assert a.shape == b.shape == (9, 64, 96, 3)
    assert np.abs(a - b).mean() < 8.0, np.abs(a - b).mean()  # of 255: same video, fp8 noise only
