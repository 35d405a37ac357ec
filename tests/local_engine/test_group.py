"""A local worker on a torchrun group, run on CPU with two processes (gloo): rank 0's engine
shares each job with rank 1, both run it, rank 0 delivers the MP4; a cancel stops both ranks
at the same step, and the group takes the next job."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from local_engine.config import EngineConfig
from local_engine.engine import LocalEngine
from local_engine.group import plan
from local_engine.parallel import ParallelPlan
from tests.local_engine.test_engine import wait
from tests.local_engine.test_local_adapter import RULES
from tests.support.images import data_uri, image_bytes
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _config(weights: str, **kw: object) -> EngineConfig:
    return EngineConfig(model_path=weights, devices=["cpu"], steps=3, fps=8, max_frames=9, **kw)


def _frames(video: bytes | None) -> np.ndarray:
    with av.open(io.BytesIO(video or b"")) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]).astype(np.float32)


def _rank(rank: int, rendezvous: str, weights: str, out: str) -> None:
    from local_engine.group import GroupWorker, follow

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config = _config(weights)
    if rank > 0:
        return follow(config, f"file://{rendezvous}")
    engine = LocalEngine(config, workers=[GroupWorker(config, f"file://{rendezvous}")])
    try:
        image = image_bytes(96, 64)
        first = wait(engine.submit(image, "mist drifts", width=96, height=64, seconds=1.0, seed=7))
        engine.config.steps = 40  # long enough to be cancelled mid-way
        long = engine.submit(image, "mist drifts", width=96, height=64, seconds=1.0, seed=7)
        while long.step < 1:
            time.sleep(0.002)
        engine.cancel(long.id)
        wait(long)
        engine.config.steps = 3
        after = wait(engine.submit(image, "leaves sway", width=96, height=64, seconds=1.0, seed=8))
        results = {
            "first": (first.state, first.error, first.video, first.progress),
            "cancelled": (long.state, long.step),
            "after": (after.state, after.error, after.video is not None),
            "health": engine.health(),
        }
    finally:
        engine.close()  # tells rank 1 to stop: the spawn below joins both
    Path(out).write_bytes(pickle.dumps(results))


@pytest.mark.slow
def test_a_two_process_group_runs_jobs_like_one_process_and_cancels_together(tiny_wan: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.pickle"
    mp.start_processes(
        _rank, args=(str(tmp_path / "rendezvous"), str(tiny_wan), str(out)), nprocs=2, join=True, start_method="spawn"
    )
    got = pickle.loads(out.read_bytes())
    state, error, video, progress = got["first"]
    assert (state, progress) == ("completed", 100), error
    single = LocalEngine(_config(str(tiny_wan)))
    try:
        alone = wait(single.submit(image_bytes(96, 64), "mist drifts", width=96, height=64, seconds=1.0, seed=7))
    finally:
        single.close()
    group_frames, alone_frames = _frames(video), _frames(alone.video)
    assert group_frames.shape == alone_frames.shape == (9, 64, 96, 3)
    # CFG split over two processes is the same arithmetic: within a grey level of one process
    assert float(np.abs(group_frames - alone_frames).mean()) < 0.5
    cancelled, step = got["cancelled"]
    assert cancelled == "cancelled" and 1 <= step < 40  # both ranks left the loop (else the next job hangs)
    assert got["after"][0] == "completed", got["after"][1]
    (device,) = got["health"]["devices"]
    assert got["health"]["state"] == "ready" and device["device"] == "cpu" and device["group"]["ranks"] == 2


@pytest.mark.parametrize(
    ("parallel", "guidance", "expected"),
    [
        ("auto", 5.0, ParallelPlan(cfg=2)),
        ("auto", 1.0, ParallelPlan(ulysses=2)),  # a CFG-distilled model: nothing to split by halves
        ("ulysses", 5.0, ParallelPlan(ulysses=2)),
        ("ring", 5.0, ParallelPlan(ring=2)),
        ("cfg", 5.0, ParallelPlan(cfg=2)),
    ],
)
def test_the_configured_split_for_two_gpus(
    tmp_path: Path, parallel: str, guidance: float, expected: ParallelPlan
) -> None:
    config = EngineConfig(model_path=tmp_path, parallel=parallel, guidance_scale=guidance)
    assert plan(config, 2) == expected


@pytest.mark.slow
def test_torchrun_starts_a_two_process_worker_that_takes_the_apis_local_jobs(
    gateway_factory: Any, tiny_wan: Path, tmp_path: Path
) -> None:
    """The command docs/deployment.md gives, on CPU: `torchrun --nproc-per-node 2 -m gateway
    worker --adapters local` beside an API that runs no local adapter (it lists `local` as
    remote); the API's job is claimed by rank 0 and made by both ranks."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    api = gateway_factory(rules_file=rules, adapters={}, remote_adapters=["local"])
    port = free_port()
    options = {"model_path": str(tiny_wan), "devices": ["cpu"], "steps": 3, "fps": 8, "max_frames": 9}
    env = {
        **os.environ,
        "I2V_DATA_DIR": str(api.settings.data_dir),  # one SQLite file and one blob store, as on a shared volume
        "I2V_RULES_FILE": str(rules),
        "I2V_ADAPTERS": json.dumps({"local": {"options": options}}),
        "I2V_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
    }
    command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    worker = subprocess.Popen(
        [sys.executable, *command, "-m", "gateway", "worker", "--adapters", "local", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.time() + 120
        while True:
            assert worker.poll() is None, "the worker group exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the worker group did not become ready"
            time.sleep(0.2)
        body = {"prompt": "slow push in", "image": data_uri(image_bytes(640, 480)), "seed": 1}
        created = api.client.post("/v1/videos", json=body)
        assert created.status_code == 202, created.text
        video = api.wait(created.json()["id"], timeout=120)
        assert video["status"] == "completed", video
        assert [a["adapter"] for a in video["route"]["attempts"]] == ["local"]
        content = api.client.get(f"/v1/videos/{video['id']}/content")
        with av.open(io.BytesIO(content.content)) as c:
            assert len(list(c.decode(c.streams.video[0]))) == 9
        (device,) = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["engines"]["local"]["devices"]
        assert device["group"] == {"ranks": 2, "cfg": 2, "ring": 1, "ulysses": 1}  # guided: the CFG halves split
    finally:
        worker.terminate()  # torchrun passes SIGTERM on: rank 0 stops its queue and releases rank 1
        worker.wait(60)
