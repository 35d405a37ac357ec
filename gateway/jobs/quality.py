"""`metrics.quality` of a finished clip: measured in a worker process, bounded, never fatal.

The clip is measured after its job is marked completed (`metrics.quality` is `PENDING` until
then), so the measurement never delays the result. The numbers come from
`media.quality.analyse`; this module says what the clip was asked to be
(the job's shape, the model's fps, the camera move the request named or the prompt described),
bounds how many clips one process measures at once, and feeds the per-model histograms. A clip
that cannot be measured is still delivered: the job's quality then says why.

The analysis runs in `quality_processes` processes beside the gateway (0: its own threads). In a
thread it competed with request handling for the GIL: at 50 clients on two cores that cost ~15%
of the throughput and ~100 ms on the way to `completed` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from gateway.jobs.context import RunContext
from gateway.jobs.tables import JobRow
from gateway.routing.catalog import ModelSpec
from media import VideoFacts
from media.quality import Expected, accepted_labels, analyse

log = logging.getLogger("i2v.runner")
#: `metrics.quality` between `completed` and the measurement's end (normally well under a second;
#: it stays so if the process stopped in between: the clip is not measured again).
PENDING: dict[str, Any] = {"pending": True}


def expected_for(job: JobRow, spec: ModelSpec | None) -> Expected:
    """What the clip should be: the shape the model was asked for and the requested camera move."""
    shape = job.request.get("shape") or {}
    move = (job.route.get("traits") or {}).get("camera_move") or None
    return Expected(
        seconds=shape.get("seconds"),
        fps=spec.fps if spec else None,
        width=shape.get("width"),
        height=shape.get("height"),
        camera=accepted_labels(move["type"], move.get("direction")) if move else None,
    )


async def measure(ctx: RunContext, job: JobRow, facts: VideoFacts, spec: ModelSpec | None) -> dict[str, Any] | None:
    """The clip's quality as stored in `metrics.quality`; None when the setting turns it off."""
    if not ctx.settings.quality_metrics:
        return None
    clip = ctx.blobs.path(facts.sha256)
    image_sha256 = (job.request.get("image") or {}).get("sha256", "")
    image = ctx.blobs.path(image_sha256)
    expected = expected_for(job, spec)
    async with ctx.quality_slots:
        try:
            quality = await in_pool(ctx.settings.quality_processes, clip, image, expected, image_sha256)
        except Exception as exc:  # a measurement must never cost the client the video
            log.warning("measuring the clip failed", extra={"error": repr(exc)[:300]})
            return {"error": f"not measured: {exc}"[:300]}
    for name, histogram in ctx.metrics.quality.items():
        value = quality.get(name)
        if value is not None:
            histogram.labels(job.model).observe(value)
    return quality


_POOLS: dict[int, Executor] = {}
_holders = 0  # gateways in this interpreter that may use the pools (tests run several)


def hold() -> None:
    """A gateway starts: the pools (made on first use) stay until the last holder lets go."""
    global _holders
    _holders += 1


def let_go() -> None:
    """A gateway stops: the last one shuts the measuring processes down, so that a stopped
    gateway leaves no worker (nor its semaphores: Python's resource tracker would warn)."""
    global _holders
    _holders = max(0, _holders - 1)
    if _holders == 0:
        while _POOLS:
            _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


async def in_pool(
    processes: int, clip: Path, image: Path, expected: Expected, image_sha256: str | None = None
) -> dict[str, Any]:
    """`_analyse` in the pool (threads with 0). `image_sha256`: the stored image's hash, which
    names its content (the blob store touches a reused file, so its mtime cannot). A worker that
    died (a decoder's crash, the OOM killer) breaks its pool for good: that clip fails, the next
    one gets a fresh pool."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_pool(processes), _analyse, clip, image, expected, image_sha256)
    except BrokenProcessPool:
        _POOLS.pop(processes, None)
        raise


def _pool(processes: int) -> Executor | None:
    """None: the event loop's worker threads. Else one pool per interpreter, of processes forked
    from a server that imported the analysis once: the gateway's threads are never forked, and
    the analysis never holds the gateway's GIL (measured in docs/benchmarks.md)."""
    if processes <= 0:
        return None
    if processes not in _POOLS:
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload(["media.quality"])
        _POOLS[processes] = ProcessPoolExecutor(processes, mp_context=mp, initializer=_watch, initargs=(os.getpid(),))
    return _POOLS[processes]


def _watch(gateway_pid: int) -> None:
    """In each measuring process: exit once the gateway is gone. After a SIGKILL nobody shuts the
    pool down, and an idle worker would wait for work for ever (holding the forkserver too). A
    pidfd turns readable when the process ends, even while it is an unreaped zombie, which a
    signal-0 probe would take for alive; where there is none (not Linux), poll."""
    try:
        fd = os.pidfd_open(gateway_pid)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _alive(gateway_pid):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="gateway-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _analyse(clip: Path, image: Path, expected: Expected, image_sha256: str | None) -> dict[str, Any]:
    reference = image if image.is_file() else None
    return analyse(clip, reference, expected, reference_id=image_sha256 or None).model_dump()
