"""Retention: expires_at on every finished video, 410 after it, files deleted unless still used."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from gateway.jobs.retention import Retention
from gateway.jobs.tables import make_engine
from gateway.storage.blobs import BlobStore
from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes


def _old(blobs: BlobStore, sha: str) -> None:
    """Make a blob look written two hours ago (retention leaves fresh files alone)."""
    past = time.time() - 7200
    os.utime(blobs.path(sha), (past, past))


async def test_files_go_after_expiry_unless_a_live_job_still_uses_them(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(retention_s=1.0, retention_sweep_s=3600)
    image = data_uri(image_bytes(320, 240))
    first = gw.wait(gw.client.post("/v1/videos", json={"prompt": "pan", "image": image}).json()["id"])
    assert first["status"] == "completed"
    assert first["expires_at"] in (first["completed_at"] + 1, first["completed_at"] + 2)
    await asyncio.sleep(1.2)
    gone = gw.client.get(f"/v1/videos/{first['id']}/content")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "video_expired"

    live = gw.client.post("/v1/videos", json={"prompt": "pan", "image": image}).json()  # same input bytes
    blobs = BlobStore(gw.settings.resolved_blob_dir)
    input_sha = _input_sha(gw, live["id"])
    output_sha = first["output"]["sha256"]
    for sha in (input_sha, output_sha):
        _old(blobs, sha)
    engine = make_engine(gw.settings.resolved_database_url)
    try:
        swept = await Retention(engine, blobs, 3600).sweep()
    finally:
        await engine.dispose()
    assert swept == 1
    assert not blobs.exists(output_sha)  # the expired job's video
    assert blobs.exists(input_sha)  # still the input of a job that has not expired
    assert gw.client.get(f"/v1/videos/{first['id']}").json()["output"]["sha256"] == output_sha  # facts stay


def _input_sha(gw: Gateway, video_id: str) -> str:
    import sqlite3

    db = gw.settings.data_dir / "gateway.db"
    return sqlite3.connect(db).execute("select input_sha256 from jobs where id = ?", (video_id,)).fetchone()[0]


def test_retention_zero_keeps_everything(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(retention_s=0)
    video = gw.wait(gw.client.post("/v1/videos", json={"prompt": "pan", "image": data_uri(image_bytes())}).json()["id"])
    assert video["status"] == "completed" and video["expires_at"] is None
    assert gw.client.get(f"/v1/videos/{video['id']}/content").status_code == 200
