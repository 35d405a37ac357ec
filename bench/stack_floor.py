"""The floor under bench/peer_litellm.py: what our web stack alone spends per job on its workload.

    python bench/peer_litellm.py --floor ...   # runs this server as one more row, same run

A Litestar app on uvicorn (uvloop, httptools: the gateway's stack) that does only the HTTP a
job of that workload cannot avoid, with nothing kept but a dict: the create fetches the photo
and submits to the DashScope-protocol emulator (the photo passed by URL, as LiteLLM does: no
base64), one background task per job polls the emulator once at the provider's known finish
and every 0.1 s after it, then downloads the MP4 to a file; status reads answer from the dict
and `/content` serves the file. No database, validation, routing, metrics, quality or
durability: the row is a floor for the gateway's CPU per job, not a competitor.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from litestar import Litestar, get, post
from litestar.response import File

PROVIDER_S = 2.0
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"


class Floor:
    def __init__(self, emulator: str, key: str, folder: Path) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.folder = folder
        self.provider = httpx.AsyncClient(base_url=emulator, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.images = httpx.AsyncClient(timeout=30)
        self.tasks: set[asyncio.Task[None]] = set()

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        image_url = body["input_reference"]["image_url"]
        (await self.images.get(image_url)).raise_for_status()  # fetched (LiteLLM does not even do this)
        r = await self.provider.post(
            CREATE,
            headers={"X-DashScope-Async": "enable"},
            json={"model": "wan2.6-i2v", "input": {"prompt": body["prompt"], "img_url": image_url}, "parameters": {}},
        )
        r.raise_for_status()
        vid = uuid.uuid4().hex
        job = {"id": vid, "object": "video", "status": "queued", "created_at": time.time()}
        self.jobs[vid] = job
        task = asyncio.create_task(self.follow(job, r.json()["output"]["task_id"]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def follow(self, job: dict[str, Any], task_id: str) -> None:
        await asyncio.sleep(PROVIDER_S)
        while True:
            out = (await self.provider.get(f"/api/v1/tasks/{task_id}")).json()["output"]
            if out["task_status"] in ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"):
                break
            await asyncio.sleep(0.1)
        if out["task_status"] != "SUCCEEDED":
            job["status"] = "failed"
            return
        path = self.folder / f"{job['id']}.mp4"
        async with self.provider.stream("GET", out["video_url"]) as resp:
            with path.open("wb") as f:
                async for chunk in resp.aiter_bytes(1 << 16):
                    f.write(chunk)
        job.update(status="completed", completed_at=time.time())


def app(floor: Floor) -> Litestar:
    @post("/v1/videos", status_code=200)
    async def create(data: dict[str, Any]) -> dict[str, Any]:
        return await floor.create(data)

    @get("/v1/videos/{vid:str}")
    async def retrieve(vid: str) -> dict[str, Any]:
        return floor.jobs[vid]

    @get("/v1/videos/{vid:str}/content")
    async def content(vid: str) -> File:
        return File(floor.folder / f"{vid}.mp4", media_type="video/mp4")

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([create, retrieve, content, healthz])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9294)
    ap.add_argument("--emulator", default="http://127.0.0.1:9291")
    ap.add_argument("--key", default="sk-peer")
    args = ap.parse_args()
    floor = Floor(args.emulator, args.key, Path(tempfile.mkdtemp(prefix="i2v-floor-")))
    uvicorn.run(app(floor), host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
