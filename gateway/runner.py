"""The job runner: takes durable jobs and walks each through submit, poll, fetch, finish.

Reads top to bottom as the life of one job (`_drive`). Durability rules:
- a job is driven only under a lease in the database; a runner that dies lets it expire and
  any runner (this process after a restart, or a replica) takes the job over;
- an attempt row is written *before* the provider is called, and the provider task id right
  after, so a resumed job polls the task it has and never submits the same attempt twice;
- a poll that fails on the transport never fails a job the provider may be billing for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from adapters.base import Adapter, InputImage, ProviderError, ProviderRequest, ProviderStatus, ProviderTask
from gateway.blobs import BlobStore
from gateway.breaker import Breakers
from gateway.catalog import RulesFile
from gateway.db import AttemptRow, JobRow, JobStore
from gateway.ids import new_id
from gateway.logs import job_id_var
from gateway.media import VideoFacts, make_loop, probe
from gateway.metrics import GatewayMetrics
from gateway.results import merged_metrics, store_video, video_object
from gateway.router import estimate_cost, shape_for
from gateway.schemas import TERMINAL
from gateway.settings import Settings
from gateway.webhooks import WebhookSender

log = logging.getLogger("i2v.runner")

LIVE = ("submitting", "queued", "in_progress")
NO_FALLBACK = frozenset({"content_policy", "invalid_request", "cancelled"})


class LeaseLost(Exception):
    """Another runner owns this job now; stop touching it."""


class JobRunner:
    def __init__(
        self,
        *,
        store: JobStore,
        adapters: dict[str, Adapter],
        rules: Callable[[], RulesFile],
        blobs: BlobStore,
        breakers: Breakers,
        settings: Settings,
        metrics: GatewayMetrics,
        downloads: httpx.AsyncClient,
        webhooks: WebhookSender,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.rules = rules
        self.blobs = blobs
        self.breakers = breakers
        self.settings = settings
        self.metrics = metrics
        self.downloads = downloads
        self.webhooks = webhooks
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._active: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._slots = {name: asyncio.Semaphore(a.max_concurrency) for name, a in adapters.items()}
        self._in_flight: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._scan_loop()), asyncio.create_task(self._lease_loop())]

    async def stop(self) -> None:
        for t in [*self._tasks, *self._active.values()]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._active.values(), return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.store.release(self.id)

    def wake(self) -> None:
        self._wake.set()

    def request_cancel(self, job_id: str) -> None:
        if job_id in self._cancel:
            self._cancel[job_id].set()

    def in_flight(self) -> dict[str, int]:
        """Provider tasks this process is following, per adapter (live load for the router)."""
        return {k: v for k, v in self._in_flight.items() if v}

    @property
    def alive(self) -> bool:
        """Started and none of its loops has died."""
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    async def _scan_loop(self) -> None:
        while True:
            free = self.settings.runner_concurrency - len(self._active)
            if free > 0:
                try:
                    for job_id in await self.store.claim(self.id, free, self.settings.lease_s):
                        if job_id not in self._active:
                            self._cancel[job_id] = asyncio.Event()
                            self._active[job_id] = asyncio.create_task(self._run(job_id))
                except Exception:
                    log.exception("claiming jobs failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.runner_scan_interval_s)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self.store.renew(self.id, list(self._active), self.settings.lease_s)
            except Exception:
                log.exception("renewing leases failed")

    async def _run(self, job_id: str) -> None:
        token = job_id_var.set(job_id)
        try:
            await self._drive(job_id)
        except LeaseLost:
            log.warning("lease lost; another runner has the job")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not leave a job hanging: fail it loudly instead.
            log.exception("job crashed in the runner")
            try:
                job, attempts = await self.store.get_with_attempts(job_id)
                if job is not None and job.status not in TERMINAL:
                    await self._finish(
                        job,
                        attempts,
                        "failed",
                        error={
                            "code": "internal_error",
                            "message": "the gateway hit an internal error on this job; see the logs",
                        },
                    )
            except Exception:
                log.exception("could not mark the crashed job failed; its lease will expire and it resumes")
        finally:
            job_id_var.reset(token)
            self._active.pop(job_id, None)
            self._cancel.pop(job_id, None)
            self._wake.set()

    # --- the life of one job ---------------------------------------------------------------

    async def _drive(self, job_id: str) -> None:
        job, attempts = await self.store.get_with_attempts(job_id)
        if job is None or job.status in TERMINAL:
            return
        while True:
            attempt = attempts[-1] if attempts and attempts[-1].status in LIVE else None
            if attempt is None:
                if job.cancel_requested:
                    return await self._finish(job, attempts, "cancelled", error=_cancelled())
                alias = self._next_candidate(job, attempts)
                if alias is None:
                    return await self._finish(job, attempts, "failed", error=self._final_error(job, attempts))
                attempt = await self._submit(job, attempts, alias)
                if attempt.status == "failed":
                    continue
            elif attempt.status == "submitting":
                # We died between writing the attempt and recording the provider's task id.
                # Submitting again could double-charge, so this attempt ends here.
                await self._end_attempt(
                    attempt,
                    "failed",
                    {
                        "code": "interrupted",
                        "provider": attempt.adapter,
                        "message": "the gateway stopped while submitting; not resubmitted, to avoid a double charge",
                    },
                )
                continue

            state = await self._follow(job, attempt)
            if state == "completed":
                if await self._complete(job, attempts, attempt):
                    return
            elif state == "cancelled":
                return await self._finish(job, attempts, "cancelled", error=_cancelled())

    def _next_candidate(self, job: JobRow, attempts: list[AttemptRow]) -> str | None:
        """The next model of the chain after the last one tried, skipping adapters whose circuit
        is open; None when the chain, `max_attempts` or the deadline is spent."""
        last_code = (attempts[-1].error or {}).get("code") if attempts else None
        if last_code in NO_FALLBACK and last_code not in job.route.get("fallback_on", []):
            return None
        if job.deadline_at and time.time() >= job.deadline_at:
            return None
        candidates: list[str] = job.route.get("candidates", [])
        if len(attempts) >= (job.route.get("max_attempts") or len(candidates)):
            return None
        start = candidates.index(attempts[-1].model) + 1 if attempts and attempts[-1].model in candidates else 0
        rules = self.rules()
        for alias in candidates[start:]:
            spec = rules.models.get(alias)
            if spec is not None and spec.adapter in self.adapters and self.breakers.allow(spec.adapter):
                return alias
        return None

    def _final_error(self, job: JobRow, attempts: list[AttemptRow]) -> dict[str, Any]:
        if job.deadline_at and time.time() >= job.deadline_at:
            return {"code": "timeout", "message": "the job's deadline passed before a backend finished it"}
        if attempts and attempts[-1].error:
            return attempts[-1].error
        return {"code": "provider_error", "message": "no backend could take the job"}

    async def _submit(self, job: JobRow, attempts: list[AttemptRow], alias: str) -> AttemptRow:
        rules = self.rules()
        spec = rules.models[alias]
        adapter = self.adapters[spec.adapter]
        req = job.request
        shape = shape_for(spec, req, req["image"]["width"], req["image"]["height"])
        attempt = AttemptRow(
            id=new_id("att"),
            job_id=job.id,
            seq=len(attempts),
            model=alias,
            adapter=spec.adapter,
            provider_model=spec.provider_model,
            status="submitting",
            task_data={},
            usage={},
        )
        await self.store.add_attempt(attempt)
        attempts.append(attempt)
        now = time.time()
        job.model = alias
        job.request = {**req, "shape": shape.model_dump()}
        values: dict[str, Any] = {"model": alias, "request": job.request, "status": "in_progress"}
        if job.started_at is None:
            job.started_at = now
            values["started_at"] = now
            self.metrics.queue_seconds.labels(alias).observe(now - job.created_at)
        job.status = "in_progress"
        await self._update(job, **values)

        image = InputImage(data=self.blobs.path(req["image"]["sha256"]).read_bytes(), **req["image"])
        request = ProviderRequest(
            job_id=job.id,
            attempt_id=attempt.id,
            provider_model=spec.provider_model,
            prompt=job.prompt,
            negative_prompt=req.get("negative_prompt"),
            image=image,
            seconds=shape.seconds,
            resolution=shape.resolution,
            width=shape.width,
            height=shape.height,
            aspect_ratio=req.get("aspect_ratio"),
            seed=req.get("seed"),
            camera=req.get("camera"),
            loop=bool(req.get("loop")),
            params={**spec.params, **(req.get("parameters") or {})},
        )
        try:
            async with self._slots[spec.adapter]:
                task = await adapter.submit(request)
        except ProviderError as exc:
            log.info("submit failed", extra={"model": alias, "code": exc.code, "provider_code": exc.provider_code})
            await self._end_attempt(attempt, "failed", _err(exc, spec.adapter))
            return attempt
        except Exception as exc:
            # Unknown outcome (e.g. connection dropped mid-request): treat as interrupted, never resubmit.
            log.warning("submit outcome unknown", extra={"model": alias, "error": repr(exc)})
            await self._end_attempt(
                attempt,
                "failed",
                {"code": "interrupted", "provider": spec.adapter, "message": f"submit did not complete: {exc!r}"},
            )
            return attempt
        attempt.provider_task_id = task.task_id
        attempt.task_data = task.data
        attempt.submitted_at = time.time()
        attempt.status = "queued"
        cost = estimate_cost(spec, shape)
        attempt.usage = {"seconds": shape.seconds, "resolution": shape.resolution}
        await self.store.update_attempt(
            attempt.id,
            provider_task_id=task.task_id,
            task_data=task.data,
            submitted_at=attempt.submitted_at,
            status="queued",
            usage=attempt.usage,
        )
        log.info("submitted", extra={"model": alias, "provider_task_id": task.task_id, "est_cost_usd": cost})
        return attempt

    async def _follow(self, job: JobRow, attempt: AttemptRow) -> str:
        """Poll until the task ends, the job is cancelled, or its time runs out."""
        adapter = self.adapters[attempt.adapter]
        task = ProviderTask(
            task_id=attempt.provider_task_id or "", provider_model=attempt.provider_model, data=attempt.task_data or {}
        )
        interval = self.settings.poll_interval_s
        limit_at = job.deadline_at or (job.created_at + self.settings.job_timeout_s)
        cancel_event = self._cancel.get(job.id) or asyncio.Event()
        flag_checked_at = time.time()  # the job was read from the database just now
        async with self._slots[attempt.adapter]:
            self.metrics.in_flight.labels(attempt.adapter).inc()
            self._in_flight[attempt.adapter] = self._in_flight.get(attempt.adapter, 0) + 1
            try:
                while True:
                    if not cancel_event.is_set() and time.time() - flag_checked_at >= self.settings.cancel_check_s:
                        flag_checked_at = time.time()
                        if await self._cancel_flagged(job):
                            cancel_event.set()
                    if cancel_event.is_set():
                        with contextlib.suppress(Exception):
                            await adapter.cancel(task)
                        await self._end_attempt(attempt, "cancelled", _cancelled())
                        return "cancelled"
                    if time.time() >= limit_at:
                        with contextlib.suppress(Exception):
                            await adapter.cancel(task)
                        await self._end_attempt(
                            attempt,
                            "failed",
                            {
                                "code": "timeout",
                                "provider": attempt.adapter,
                                "message": "the provider did not finish before the job's deadline",
                            },
                        )
                        return "failed"
                    status = await self._poll_once(adapter, task, attempt)
                    if status is not None:
                        await self._record_progress(job, attempt, status)
                        if status.state in TERMINAL:
                            if status.state != "completed":
                                await self._end_attempt(attempt, status.state, _status_err(status, attempt.adapter))
                            return status.state
                    wait = status.poll_after_s if status and status.poll_after_s else interval
                    interval = min(interval * 1.5, self.settings.poll_interval_max_s)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(cancel_event.wait(), max(0.01, min(wait, limit_at - time.time())))
            finally:
                self.metrics.in_flight.labels(attempt.adapter).dec()
                self._in_flight[attempt.adapter] -= 1

    async def _poll_once(self, adapter: Adapter, task: ProviderTask, attempt: AttemptRow) -> ProviderStatus | None:
        try:
            return await adapter.poll(task)
        except ProviderError as exc:
            if exc.retryable:
                log.warning("poll failed; will poll again", extra={"code": exc.code, "error": exc.message})
                return None
            return ProviderStatus(state="failed", error=exc.info())
        except Exception as exc:
            log.warning("poll transport error; will poll again", extra={"error": repr(exc)})
            return None

    async def _record_progress(self, job: JobRow, attempt: AttemptRow, status: ProviderStatus) -> None:
        if status.usage:
            attempt.usage = {**attempt.usage, **status.usage}
        if status.cost_usd is not None:
            attempt.cost_usd = status.cost_usd
        if status.state in ("queued", "in_progress") and status.state != attempt.status:
            attempt.status = status.state
            await self.store.update_attempt(attempt.id, status=status.state, usage=attempt.usage)
        progress = max(0, min(99, status.progress or 0))
        if progress != job.progress:
            job.progress = progress
            await self._update(job, progress=progress)

    async def _complete(self, job: JobRow, attempts: list[AttemptRow], attempt: AttemptRow) -> bool:
        """Fetch and store the result. False when the result was unusable (the attempt failed)."""
        adapter = self.adapters[attempt.adapter]
        task = ProviderTask(
            task_id=attempt.provider_task_id or "", provider_model=attempt.provider_model, data=attempt.task_data or {}
        )
        t0 = time.perf_counter()
        try:
            source = await adapter.fetch(task)
            facts = await store_video(source, self.blobs, self.downloads, self.settings.max_video_bytes)
        except ProviderError as exc:
            await self._end_attempt(attempt, "failed", _err(exc, attempt.adapter))
            return False
        spec = self.rules().models.get(attempt.model)
        post: list[str] = []
        if job.request.get("loop") and not (spec and spec.loop):
            original = facts.sha256
            facts = await asyncio.to_thread(self._loop, facts)
            post.append("loop_crossfade")
            if not await self.store.other_jobs_use_blob(original, job.id):
                self.blobs.delete(original)
        store_ms = (time.perf_counter() - t0) * 1000
        if attempt.cost_usd is None and spec is not None:
            shape = job.request["shape"]
            price = spec.price_per_second(shape["resolution"])
            if price is not None:
                attempt.cost_usd = round(price * shape["seconds"], 6)
                attempt.usage = {**attempt.usage, "cost_source": "catalog"}
        await self._end_attempt(attempt, "completed", None)
        job.output = facts.model_dump() | ({"post_processing": post} if post else {})
        job.output_sha256 = facts.sha256
        await self._finish(job, attempts, "completed", facts=facts, store_ms=store_ms)
        return True

    def _loop(self, facts: VideoFacts) -> VideoFacts:
        """The model cannot loop: make the stored clip a seamless loop (crossfade)."""
        looped = make_loop(self.blobs.path(facts.sha256))
        tmp = self.blobs.temp_path()
        try:
            tmp.write_bytes(looped)
            new = probe(tmp)
            self.blobs.put_file(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        return new

    async def _end_attempt(self, attempt: AttemptRow, status: str, error: dict[str, Any] | None) -> None:
        attempt.status = status
        attempt.error = error
        attempt.finished_at = time.time()
        await self.store.update_attempt(
            attempt.id,
            status=status,
            error=error,
            finished_at=attempt.finished_at,
            usage=attempt.usage,
            cost_usd=attempt.cost_usd,
        )
        code = (error or {}).get("code", "")
        if status in ("completed", "failed"):
            self.breakers.record(attempt.adapter, status == "completed", code)
        self.metrics.attempts.labels(attempt.model, attempt.adapter, status, code).inc()
        if attempt.cost_usd:
            self.metrics.cost_usd.labels(attempt.model).inc(attempt.cost_usd)

    async def _finish(
        self,
        job: JobRow,
        attempts: list[AttemptRow],
        status: str,
        *,
        error: dict[str, Any] | None = None,
        facts: Any = None,
        store_ms: float = 0.0,
    ) -> None:
        now = time.time()
        job.status = status
        job.error = error
        job.completed_at = now
        job.metrics = merged_metrics(job, attempts, now, facts, fetch_ms=store_ms)
        if status == "completed":
            job.progress = 100
        await self._update(
            job,
            status=status,
            error=error,
            completed_at=now,
            metrics=job.metrics,
            output=job.output,
            output_sha256=job.output_sha256,
            progress=job.progress,
            lease_owner=None,
            lease_until=None,
        )
        adapter = attempts[-1].adapter if attempts else ""
        self.metrics.jobs_finished.labels(job.model, adapter, status, (error or {}).get("code", "")).inc()
        self.metrics.total_seconds.labels(job.model, status).observe(now - job.created_at)
        if job.started_at:
            self.metrics.run_seconds.labels(job.model, adapter).observe(now - job.started_at)
        if facts is not None:
            self.metrics.video_seconds.labels(job.model).inc(facts.duration_s)
        log.info("job finished", extra={"status": status, "model": job.model, "error_code": (error or {}).get("code")})
        if job.webhook_url:
            payload = video_object(job, attempts).model_dump(mode="json")
            t = asyncio.create_task(self.webhooks.send(job.webhook_url, f"video.{status}", payload))
            self._background.add(t)
            t.add_done_callback(self._background.discard)

    async def _update(self, job: JobRow, **values: Any) -> None:
        if not await self.store.update(job.id, held_by=self.id, **values):
            raise LeaseLost(job.id)

    async def _cancel_flagged(self, job: JobRow) -> bool:
        fresh = await self.store.get(job.id)
        return bool(fresh and fresh.cancel_requested)


def _cancelled() -> dict[str, Any]:
    return {"code": "cancelled", "message": "Cancelled at the client's request."}


def _err(exc: ProviderError, adapter: str) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "provider": adapter, "provider_code": exc.provider_code}


def _status_err(status: ProviderStatus, adapter: str) -> dict[str, Any]:
    if status.state == "cancelled":
        return {"code": "cancelled", "message": "the provider cancelled the task", "provider": adapter}
    e = status.error
    if e is None:
        return {
            "code": "provider_error",
            "message": "the provider reported failure without a reason",
            "provider": adapter,
        }
    return {"code": e.code, "message": e.message, "provider": adapter, "provider_code": e.provider_code}
