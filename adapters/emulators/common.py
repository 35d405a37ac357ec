"""What every emulator shares: the task book (status over time), fault injection, the clip
renderer, result serving and the `/_emulator` control routes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from litestar import Request, Response, get, post
from litestar.datastructures import State
from PIL import Image
from pydantic import BaseModel, Field

from media import decode_rgb, encode_mp4

Fault = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "malformed",
    "moderation_submit",
    "moderation_late",
    "task_fail",
    "expired_url",
    "unknown",
    "accepted_error",
    "accepted_timeout",
    "accepted_malformed",
    "accepted_slow",
    "expired_url_once",
    "cancel_late",
]
Endpoint = Literal["submit", "poll", "fetch"]
#: Where each fault can strike. Late faults are decided at submit and play out in the task.
FAULT_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "rate_limit": ("submit", "poll"),
    "server_error": ("submit", "poll"),
    "timeout": ("submit", "poll"),
    "malformed": ("submit", "poll"),
    "moderation_submit": ("submit",),
    "moderation_late": ("submit",),
    "task_fail": ("submit",),
    "expired_url": ("submit",),
    "unknown": ("submit",),
    "accepted_error": ("submit",),
    "accepted_timeout": ("submit",),
    "accepted_malformed": ("submit",),
    "accepted_slow": ("submit",),
    "expired_url_once": ("submit",),
    "cancel_late": ("submit",),
}
#: Decided at submit, played out later: `expired_url_once` answers the first download with 410
#: (a signed URL that expired; asking again works), `cancel_late` ends the task cancelled on the
#: provider's side (DashScope's CANCELED, nobody asked).
LATE_FAULTS = {"moderation_late", "task_fail", "expired_url", "unknown", "expired_url_once", "cancel_late"}
#: The task is created, then the answer is lost as the named fault: the submit's outcome is
#: unknown to the caller (what a dropped connection or a proxy's 5xx after the fact looks like).
ACCEPTED_FAULTS = {"accepted_error": "server_error", "accepted_timeout": "timeout", "accepted_malformed": "malformed"}
#: The task is created and its answer comes, but only after `hang_s` (a slow network or proxy):
#: meanwhile the task exists and no attempt holds it.
SLOW_ANSWER = "accepted_slow"


class FaultPlan(BaseModel):
    """Faults by rate (a probability per call) and by script (consumed in order per endpoint;
    `null` entries mean a normal answer)."""

    rates: dict[Fault, float] = Field(default_factory=dict)
    script: dict[Endpoint, list[Fault | None]] = Field(default_factory=dict)
    hang_s: float = Field(default=30.0, description="How long a `timeout` fault stalls before answering.")
    retry_after_s: int = 1
    seed: int | None = None


class EmulatorConfig(BaseModel):
    queue_s: float = Field(default=0.5, description="Seconds a task waits before running.")
    run_s: float = Field(default=2.0, description="Seconds a task runs before it ends.")
    fps: int | None = Field(default=None, description="Output fps; None: the provider's own.")
    max_side: int = Field(default=640, description="Rendered clips are capped to this long side.")
    max_frames: int = Field(default=48, description="Cap on rendered frames (keeps the sandbox light).")
    max_tasks: int = Field(default=20_000, ge=1, description="Tasks remembered; the oldest are forgotten past it.")
    faults: FaultPlan = Field(default_factory=FaultPlan)


@dataclass
class EmuTask:
    id: str
    created: float
    prompt: str
    image: bytes
    width: int
    height: int
    seconds: float
    fps: int
    fate: str | None = None
    cancelled: bool = False
    token: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    extra: dict[str, Any] = field(default_factory=dict)


class TaskBook:
    """In-memory tasks whose status follows the clock: queued, then running, then an ending."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.tasks: dict[str, EmuTask] = {}
        self.by_external: dict[str, str] = {}
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(config.faults.seed)
        self._script: dict[str, list[str | None]] = {k: list(v) for k, v in config.faults.script.items()}
        self._clips: dict[tuple[bytes, str, int, int, int, int], bytes] = {}
        self._ids = itertools.count(1)
        self._sending = 0

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """A submit being answered: `most_sending` in the stats is the most at once since the
        last fault plan was set (each plan starts an experiment), what a client's bound on its
        submits in flight is checked against."""
        self._sending += 1
        self.stats["most_sending"] = max(self.stats["most_sending"], self._sending)
        try:
            yield
        finally:
            self._sending -= 1

    def set_faults(self, plan: FaultPlan) -> None:
        self.config.faults = plan
        self.stats["most_sending"] = self._sending
        self._rng = random.Random(plan.seed)
        self._script = {k: list(v) for k, v in plan.script.items()}

    def fault(self, endpoint: str) -> str | None:
        """The fault for this call: the script first, then the rates."""
        queue = self._script.get(endpoint)
        fault = queue.pop(0) if queue else self._by_rate(endpoint)
        if fault:
            self.stats[f"fault.{fault}"] += 1
        return fault

    def _by_rate(self, endpoint: str) -> str | None:
        for name, rate in self.config.faults.rates.items():
            if endpoint in FAULT_ENDPOINTS[name] and self._rng.random() < rate:
                return name
        return None

    def next_seq(self) -> int:
        return next(self._ids)

    def add(self, task: EmuTask, external_id: str | None = None) -> EmuTask:
        self.tasks[task.id] = task
        if external_id:
            self.by_external[external_id] = task.id
            task.extra["external_id"] = external_id
        while len(self.tasks) > self.config.max_tasks:  # bounded: forget the oldest (insertion order)
            old = self.tasks.pop(next(iter(self.tasks)))
            self.by_external.pop(old.extra.get("external_id", ""), None)
        self.stats["tasks"] += 1
        return task

    def find(self, ident: str) -> EmuTask | None:
        return self.tasks.get(ident) or self.tasks.get(self.by_external.get(ident, ""))

    def phase(self, task: EmuTask) -> str:
        """queued | running | succeeded | failed | cancelled | unknown, with progress implied by time."""
        if task.cancelled:
            return "cancelled"
        if task.fate == "cancel_late" and time.time() - task.created >= self.config.queue_s:
            return "cancelled"
        age = time.time() - task.created
        if age < self.config.queue_s:
            return "queued"
        if age < self.config.queue_s + self.config.run_s:
            return "running"
        if task.fate == "unknown":
            return "unknown"
        if task.fate in ("moderation_late", "task_fail"):
            return "failed"
        return "succeeded"

    def looked_at(self, task: EmuTask) -> str:
        """A query's answer about `task`: its phase, with the queries that found it finished
        counted (`reads_done` in /_emulator/tasks: a client that needs one is not asking twice)."""
        phase = self.phase(task)
        if phase == "succeeded":
            task.extra["reads_done"] = task.extra.get("reads_done", 0) + 1
        return phase

    def progress(self, task: EmuTask) -> int:
        age = time.time() - task.created - self.config.queue_s
        return max(0, min(100, int(100 * age / max(self.config.run_s, 1e-6))))

    async def clip(self, task: EmuTask) -> bytes:
        # The render is a pure function of these: the same inputs share one clip (bounded cache).
        key = (task.image, task.prompt, task.width, task.height, task.fps, int(task.seconds * 10))
        if key not in self._clips:
            if len(self._clips) >= 256:
                self._clips.pop(next(iter(self._clips)))
            self.stats["renders"] += 1
            self._clips[key] = await asyncio.to_thread(
                render_clip,
                task.image,
                task.width,
                task.height,
                task.seconds,
                task.fps,
                task.prompt,
                self.config.max_side,
                self.config.max_frames,
            )
        return self._clips[key]


# --- the clip: a camera move over the submitted image, following the prompt ---------------------

_MOVES = [
    (r"push(ing)? in|zoom(s|ing)? in|dolly in|move(s)? closer", "zoom_in"),
    (r"pull(s|ing)? (back|out)|zoom(s|ing)? out|dolly out", "zoom_out"),
    (r"pan(s|ning)? left|truck(s|ing)? left", "pan_left"),
    (r"pan(s|ning)? right|truck(s|ing)? right|tracking", "pan_right"),
    (r"tilt(s|ing)? up|pedestal up|crane up", "tilt_up"),
    (r"tilt(s|ing)? down|pedestal down|crane down", "tilt_down"),
    (r"static|locked[- ]off|still camera", "static"),
]


def camera_move(prompt: str) -> str:
    text = prompt.lower()
    for pattern, move in _MOVES:
        if re.search(pattern, text):
            return move
    return "zoom_in"


def render_clip(
    image: bytes, width: int, height: int, seconds: float, fps: int, prompt: str, max_side: int, max_frames: int
) -> bytes:
    """Frames cropped from the image along the prompt's camera move, encoded as H.264."""
    scale = min(1.0, max_side / max(width, height))
    w, h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    src = decode_rgb(image).resize((int(w * 1.25), int(h * 1.25)))
    big = np.asarray(src)
    bh, bw = big.shape[:2]
    n = max(2, min(max_frames, round(seconds * fps)))
    move = camera_move(prompt)
    frames = []
    for i in range(n):
        t = i / (n - 1)
        if move in ("zoom_in", "zoom_out"):
            z = 1 + 0.25 * (t if move == "zoom_in" else 1 - t)
            cw, ch = int(bw / z), int(bh / z)
            x0, y0 = (bw - cw) // 2, (bh - ch) // 2
        else:
            cw, ch = w, h
            dx, dy = bw - w, bh - h
            x0 = {"pan_left": int(dx * (1 - t)), "pan_right": int(dx * t)}.get(move, dx // 2)
            y0 = {"tilt_up": int(dy * (1 - t)), "tilt_down": int(dy * t)}.get(move, dy // 2)
        crop = big[y0 : y0 + ch, x0 : x0 + cw]
        frames.append(np.asarray(Image.fromarray(crop).resize((w, h))))
    # the clip lasts `seconds`: frames are spread over it at the rate the count allows
    rate = max(1, round(n / seconds)) if seconds else fps
    return encode_mp4(frames, fps=rate, preset="ultrafast")


def fit_size(img_w: int, img_h: int, short_side: int) -> tuple[int, int]:
    """Output size for a resolution tier: the short side fixed, the image's aspect kept."""
    if img_w >= img_h:
        return round(short_side * img_w / img_h / 2) * 2, short_side
    return short_side, round(short_side * img_h / img_w / 2) * 2


# --- shared routes ----------------------------------------------------------------------------------


@get("/results/{token:str}/output.mp4", media_type="video/mp4", include_in_schema=False)
async def result_file(token: str, state: State) -> Response[bytes]:
    book: TaskBook = state.book
    task = next((t for t in book.tasks.values() if t.token == token), None)
    if task is None or task.fate == "expired_url":
        # what an object store says for an expired signed URL
        return Response(
            b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            status_code=403,
            media_type="application/xml",
        )
    if task.fate == "expired_url_once":
        task.fate = None
        book.stats["expired_downloads"] += 1
        return Response(b"<Error><Code>Gone</Code></Error>", status_code=410, media_type="application/xml")
    book.stats["downloads"] += 1
    task.extra["downloads"] = task.extra.get("downloads", 0) + 1
    return Response(await book.clip(task), media_type="video/mp4")


@post("/_emulator/faults", status_code=200, include_in_schema=False)
async def set_faults(data: FaultPlan, state: State) -> dict[str, str]:
    state.book.set_faults(data)
    return {"status": "ok"}


@get("/_emulator/stats", include_in_schema=False)
async def stats(state: State) -> dict[str, int]:
    return dict(state.book.stats)


@get("/_emulator/tasks", include_in_schema=False)
async def tasks(state: State) -> list[dict[str, Any]]:
    """Every task the emulator created, with how it stands: what a chaos test counts against."""
    book: TaskBook = state.book
    return [
        {
            "id": t.id,
            "external_id": t.extra.get("external_task_id"),
            "phase": book.phase(t),
            "fate": t.fate,
            "created": t.created,
            "downloads": t.extra.get("downloads", 0),
            "reads_done": t.extra.get("reads_done", 0),
        }
        for t in book.tasks.values()
    ]


SHARED_ROUTES = [result_file, set_faults, stats, tasks]


class Callbacks:
    """The provider's side of `callback_url`: a task that carries one is POSTed to on every change
    of its phase (Kling: the task object; MiniMax: a challenge to echo first, then status bodies).
    The emulator's app runs `run()` for its whole life; a receiver that fails is not retried, as
    neither provider documents retries."""

    def __init__(self, book: TaskBook, render: Any, challenge: bool = False, every_s: float = 0.05) -> None:
        self.book, self.render, self.challenge, self.every_s = book, render, challenge, every_s

    async def run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=3.0) as client:
            while True:
                for task in list(self.book.tasks.values()):
                    url = task.extra.get("callback_url")
                    if url and not task.extra.get("callback_off"):
                        await self._one(client, task, url)
                await asyncio.sleep(self.every_s)

    async def _one(self, client: Any, task: EmuTask, url: str) -> None:
        if self.challenge and not task.extra.get("callback_checked"):
            token = secrets.token_hex(8)
            try:
                resp = await client.post(url, json={"challenge": token})
                ok = resp.json().get("challenge") == token
            except Exception:
                ok = False
            task.extra["callback_checked"] = True
            task.extra["callback_off"] = not ok
            self.book.stats["callback_challenges_failed" if not ok else "callback_challenges"] += 1
            if not ok:
                return
        phase = self.book.phase(task)
        if task.extra.get("callback_phase") == phase:
            return
        task.extra["callback_phase"] = phase
        try:
            await client.post(url, json=self.render(self.book, task))
            self.book.stats["callbacks"] += 1
        except Exception:
            self.book.stats["callbacks_failed"] += 1


def callback_hooks(book: TaskBook, render: Any, challenge: bool = False) -> dict[str, Any]:
    """Litestar `on_startup` / `on_shutdown` that run a `Callbacks` loop beside the app."""
    sender = Callbacks(book, render, challenge)
    running: list[asyncio.Task[None]] = []

    async def start() -> None:
        running.append(asyncio.create_task(sender.run()))

    async def stop() -> None:
        for t in running:
            t.cancel()

    return {"on_startup": [start], "on_shutdown": [stop]}


def result_url(request: Request[Any, Any, Any], task: EmuTask) -> str:
    task.extra["base_url"] = str(request.base_url).rstrip("/")
    return task.extra["base_url"] + f"/results/{task.token}/output.mp4"


async def hang(book: TaskBook) -> None:
    await asyncio.sleep(book.config.faults.hang_s)


MALFORMED = Response(b'{"request_id": "x", "output": {"task_', media_type="application/json")
