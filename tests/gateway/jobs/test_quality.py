"""The measuring processes (`gateway/jobs/quality.py`): they outlive no gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from gateway.jobs.quality import _pool, in_pool
from media import encode_mp4
from media.quality import Expected
from tests.support.images import image_bytes

ROOT = Path(__file__).resolve().parents[3]

GATEWAY = """
import os, signal
from gateway.jobs.quality import _pool
pool = _pool(1)
print(pool.submit(os.getpid).result(timeout=60), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no shutdown, no atexit: what a crash leaves
"""


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_measuring_process_exits_when_its_gateway_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("w") as f:  # a file, not a pipe: a worker left behind would hold a pipe open
        subprocess.run([sys.executable, "-c", GATEWAY], cwd=ROOT, stdout=f, timeout=120)
    worker = int(out.read_text().split()[0])
    deadline = time.time() + 10
    while running(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not running(worker), f"measuring process {worker} outlived its SIGKILLed gateway"


def test_a_worker_that_dies_costs_one_clip_not_the_pool(tmp_path: Path) -> None:
    clip, image = tmp_path / "clip.mp4", tmp_path / "image.jpg"
    frames = [np.full((96, 160, 3), 40 + 4 * i, np.uint8) for i in range(12)]
    clip.write_bytes(encode_mp4(frames, 12))
    image.write_bytes(image_bytes(160, 96))
    worker = _pool(1).submit(os.getpid).result(timeout=60)
    os.kill(worker, signal.SIGKILL)  # what a crash inside a decoder or the OOM killer does

    async def twice() -> tuple[BaseException | dict, dict]:
        try:
            first: BaseException | dict = await in_pool(1, clip, image, Expected())
        except BrokenProcessPool as exc:
            first = exc
        return first, await in_pool(1, clip, image, Expected())

    first, second = asyncio.run(twice())
    assert isinstance(first, BrokenProcessPool)  # the clip it was given, or the next one, is lost
    assert second["frames_decoded"] == 12


def test_the_last_gateway_to_stop_shuts_the_measuring_processes_down() -> None:
    """Two gateways in one interpreter share the pool: the first to stop leaves it working for
    the other; the last one ends the workers (before, a stopped gateway left them, and Python
    warned about leaked semaphores at exit)."""
    from gateway.jobs import quality

    quality.hold()
    quality.hold()
    worker = _pool(1).submit(os.getpid).result(timeout=60)
    quality.let_go()
    assert _pool(1).submit(os.getpid).result(timeout=60) == worker  # still serving the other gateway
    quality.let_go()
    deadline = time.time() + 10
    while running(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not running(worker), "the measuring process outlived the last gateway"


def test_a_photo_sent_again_is_decoded_once_though_the_store_touches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blob store touches a reused image (retention keeps fresh files), which changes its
    mtime: the measurement keys the fitted photo on the stored hash, so the second clip made
    from the same photo does not decode it again (keyed on the mtime, every job did)."""
    import media.quality as mq
    from gateway.storage.blobs import BlobStore

    decodes = []
    real = mq.decode_grey
    monkeypatch.setattr(mq, "decode_grey", lambda *a, **k: decodes.append(1) or real(*a, **k))
    mq._FITTED.clear()
    blobs = BlobStore(tmp_path / "blobs")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(encode_mp4([np.full((96, 160, 3), 40 + 4 * i, np.uint8) for i in range(8)], 8))
    photo = image_bytes(160, 96)

    async def measure_twice() -> list[dict]:
        out = []
        for _ in range(2):
            sha = blobs.put(photo)  # a create of the same photo: stored once, touched after
            before = blobs.path(sha).stat().st_mtime_ns
            out.append(await in_pool(0, clip, blobs.path(sha), Expected(), sha))
            os.utime(blobs.path(sha), ns=(before + 10**9, before + 10**9))  # as a later touch would
        return out

    first, second = asyncio.run(measure_twice())
    assert len(decodes) == 1
    assert second["first_frame_ssim"] == first["first_frame_ssim"] is not None
