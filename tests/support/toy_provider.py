"""A toy video provider for gateway tests: a real HTTP server with a minimal async task API.

It is not a product emulator (those live in adapters/emulators): it exists so the gateway core
can be tested over real HTTP before any provider family lands. Prompt tags script behaviour:
`[reject]` content-policy at submit, `[fail-late]` fails after accepting, `[not-video]` serves
junk, `[slow]` takes 30 s, `[run=N]` takes N seconds, `[submit-delay=N]` answers the submit N seconds
after creating the task (`/stats` keeps the most such answers pending at once).
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import re
import time
from typing import Any

import numpy as np
from litestar import Litestar, Response, get, post
from litestar.datastructures import State
from PIL import Image

from media import encode_mp4


class ToyState:
    def __init__(self, run_s: float = 0.3) -> None:
        self.run_s = run_s
        self.tasks: dict[str, dict[str, Any]] = {}
        self.submits = 0
        self.cancels = 0
        self.sending = 0  # submits being answered now
        self.most_sending = 0
        self.ids = itertools.count(1)


def _status(task: dict[str, Any], run_s: float) -> tuple[str, int]:
    if task["cancelled"]:
        return "cancelled", 0
    m = re.search(r"\[run=([\d.]+)\]", task["prompt"])
    run = float(m.group(1)) if m else 30.0 if "[slow]" in task["prompt"] else run_s
    frac = (time.time() - task["t0"]) / run
    if frac < 0.2:
        return "queued", 0
    if frac < 1:
        return "running", int(frac * 100)
    return ("failed" if "[fail-late]" in task["prompt"] else "done"), 100


def _frames(image: bytes, width: int, height: int, n: int) -> list[np.ndarray]:
    img = Image.open(io.BytesIO(image)).convert("RGB").resize((width, height))
    arr = np.asarray(img)
    frames = []
    for i in range(n):  # a slow push-in: crop towards the centre, resize back
        z = 1 + 0.2 * i / max(1, n - 1)
        cw, ch = int(width / z), int(height / z)
        x0, y0 = (width - cw) // 2, (height - ch) // 2
        crop = Image.fromarray(arr[y0 : y0 + ch, x0 : x0 + cw]).resize((width, height))
        frames.append(np.asarray(crop))
    return frames


@post("/tasks")
async def submit(data: dict[str, Any], state: State) -> Response[dict[str, Any]]:
    toy: ToyState = state.toy
    toy.submits += 1
    if "[reject]" in data["prompt"]:
        return Response({"error": "content_policy", "message": "prompt refused"}, status_code=400)
    task_id = f"toy-{next(toy.ids)}"
    toy.tasks[task_id] = {**data, "t0": time.time(), "cancelled": False}
    if m := re.search(r"\[submit-delay=([\d.]+)\]", data["prompt"]):
        toy.sending += 1
        toy.most_sending = max(toy.most_sending, toy.sending)
        try:
            await asyncio.sleep(float(m.group(1)))  # the task exists; the answer is late
        finally:
            toy.sending -= 1
    return Response({"id": task_id}, status_code=201)


@get("/tasks/{task_id:str}")
async def poll(task_id: str, state: State) -> Response[dict[str, Any]]:
    toy: ToyState = state.toy
    task = toy.tasks.get(task_id)
    if task is None:
        return Response({"error": "not_found"}, status_code=404)
    status, progress = _status(task, toy.run_s)
    return Response({"id": task_id, "status": status, "progress": progress, "usage": {"seconds": task["seconds"]}})


@get("/tasks/{task_id:str}/video", media_type="video/mp4")
async def video(task_id: str, state: State) -> Response[bytes]:
    task = state.toy.tasks[task_id]
    if "[not-video]" in task["prompt"]:
        return Response(b"this is not an mp4", media_type="video/mp4")
    frames = _frames(base64.b64decode(task["image"]), task["width"] // 4 * 2, task["height"] // 4 * 2, 8)
    return Response(encode_mp4(frames, fps=8), media_type="video/mp4")


@post("/tasks/{task_id:str}/cancel")
async def cancel(task_id: str, state: State) -> dict[str, Any]:
    state.toy.cancels += 1
    state.toy.tasks[task_id]["cancelled"] = True
    return {"ok": True}


@get("/stats")
async def stats(state: State) -> dict[str, Any]:
    toy: ToyState = state.toy
    return {"submits": toy.submits, "cancels": toy.cancels, "tasks": len(toy.tasks), "most_sending": toy.most_sending}


def create_toy_provider(run_s: float = 0.3) -> Litestar:
    return Litestar([submit, poll, video, cancel, stats], state=State({"toy": ToyState(run_s)}))
