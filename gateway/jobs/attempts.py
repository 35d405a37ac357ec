"""One attempt on one candidate: submit it, follow the provider task until it ends, record its end.

The attempt row is written as `submitting` *before* the provider is called and gets the task id
right after, so a resumed job polls the task it has and never submits the same attempt twice.
A poll that fails on the transport, or with a retryable error, is retried until the job's time
runs out: it never fails a job the provider may be billing for.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from adapters.base import Adapter, InputImage, ProviderError, ProviderRequest, ProviderStatus, ProviderTask
from gateway.jobs.cancel import CancelWatch, cancelled_error
from gateway.jobs.context import RunContext
from gateway.jobs.ids import new_id
from gateway.jobs.tables import AttemptRow, JobRow
from gateway.routing.planner import estimate_cost, shape_for
from gateway.status import TERMINAL_JOB, AttemptStatus, JobStatus

log = logging.getLogger("i2v.runner")


class Attempts:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def submit(self, job: JobRow, attempts: list[AttemptRow], alias: str) -> AttemptRow:
        rules = self.ctx.rules()
        spec = rules.models[alias]
        adapter = self.ctx.adapters[spec.adapter]
        req = job.request
        shape = shape_for(spec, req, req["image"]["width"], req["image"]["height"])
        attempt = AttemptRow(
            id=new_id("att"),
            job_id=job.id,
            seq=len(attempts),
            model=alias,
            adapter=spec.adapter,
            provider_model=spec.provider_model,
            status=AttemptStatus.SUBMITTING,
            task_data={},
            usage={},
        )
        await self.ctx.store.add_attempt(attempt)
        attempts.append(attempt)
        now = time.time()
        job.model = alias
        job.request = {**req, "shape": shape.model_dump()}
        values: dict[str, Any] = {"model": alias, "request": job.request, "status": JobStatus.IN_PROGRESS}
        if job.started_at is None:
            job.started_at = now
            values["started_at"] = now
            self.ctx.metrics.queue_seconds.labels(alias).observe(now - job.created_at)
        job.status = JobStatus.IN_PROGRESS
        await self.ctx.update_job(job, **values)

        image = InputImage(data=self.ctx.blobs.path(req["image"]["sha256"]).read_bytes(), **req["image"])
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
            async with self.ctx.slots[spec.adapter]:
                task = await adapter.submit(request)
        except ProviderError as exc:
            log.info("submit failed", extra={"model": alias, "code": exc.code, "provider_code": exc.provider_code})
            await self.end(attempt, AttemptStatus.FAILED, provider_error(exc, spec.adapter))
            return attempt
        except Exception as exc:
            # Unknown outcome (e.g. connection dropped mid-request): treat as interrupted, never resubmit.
            log.warning("submit outcome unknown", extra={"model": alias, "error": repr(exc)})
            await self.end(
                attempt,
                AttemptStatus.FAILED,
                {"code": "interrupted", "provider": spec.adapter, "message": f"submit did not complete: {exc!r}"},
            )
            return attempt
        attempt.provider_task_id = task.task_id
        attempt.task_data = task.data
        attempt.submitted_at = time.time()
        attempt.status = AttemptStatus.QUEUED
        cost = estimate_cost(spec, shape)
        attempt.usage = {"seconds": shape.seconds, "resolution": shape.resolution}
        await self.ctx.store.update_attempt(
            attempt.id,
            provider_task_id=task.task_id,
            task_data=task.data,
            submitted_at=attempt.submitted_at,
            status=AttemptStatus.QUEUED,
            usage=attempt.usage,
        )
        log.info("submitted", extra={"model": alias, "provider_task_id": task.task_id, "est_cost_usd": cost})
        return attempt

    async def follow(self, job: JobRow, attempt: AttemptRow, watch: CancelWatch) -> str:
        """Poll until the task ends, the job is cancelled, or its time runs out."""
        adapter = self.ctx.adapters[attempt.adapter]
        task = task_of(attempt)
        interval = self.ctx.settings.poll_interval_s
        limit_at = job.deadline_at or (job.created_at + self.ctx.settings.job_timeout_s)
        async with self.ctx.slots[attempt.adapter]:
            self.ctx.metrics.in_flight.labels(attempt.adapter).inc()
            self.ctx.in_flight[attempt.adapter] = self.ctx.in_flight.get(attempt.adapter, 0) + 1
            try:
                while True:
                    if await watch.requested():
                        with contextlib.suppress(Exception):
                            await adapter.cancel(task)
                        await self.end(attempt, AttemptStatus.CANCELLED, cancelled_error())
                        return JobStatus.CANCELLED
                    if time.time() >= limit_at:
                        with contextlib.suppress(Exception):
                            await adapter.cancel(task)
                        await self.end(
                            attempt,
                            AttemptStatus.FAILED,
                            {
                                "code": "timeout",
                                "provider": attempt.adapter,
                                "message": "the provider did not finish before the job's deadline",
                            },
                        )
                        return JobStatus.FAILED
                    status = await self._poll_once(adapter, task)
                    if status is not None:
                        await self._record_progress(job, attempt, status)
                        if status.state in TERMINAL_JOB:
                            if status.state != JobStatus.COMPLETED:
                                await self.end(
                                    attempt, AttemptStatus(status.state), _status_err(status, attempt.adapter)
                                )
                            return status.state
                    wait = status.poll_after_s if status and status.poll_after_s else interval
                    interval = min(interval * 1.5, self.ctx.settings.poll_interval_max_s)
                    await watch.sleep(max(0.01, min(wait, limit_at - time.time())))
            finally:
                self.ctx.metrics.in_flight.labels(attempt.adapter).dec()
                self.ctx.in_flight[attempt.adapter] -= 1

    async def _poll_once(self, adapter: Adapter, task: ProviderTask) -> ProviderStatus | None:
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
        if status.state in (AttemptStatus.QUEUED, AttemptStatus.IN_PROGRESS) and status.state != attempt.status:
            attempt.status = AttemptStatus(status.state)
            await self.ctx.store.update_attempt(attempt.id, status=attempt.status, usage=attempt.usage)
        progress = max(0, min(99, status.progress or 0))
        if progress != job.progress:
            job.progress = progress
            await self.ctx.update_job(job, progress=progress)

    async def end(self, attempt: AttemptRow, status: AttemptStatus, error: dict[str, Any] | None) -> None:
        attempt.status = status
        attempt.error = error
        attempt.finished_at = time.time()
        await self.ctx.store.update_attempt(
            attempt.id,
            status=status,
            error=error,
            finished_at=attempt.finished_at,
            usage=attempt.usage,
            cost_usd=attempt.cost_usd,
        )
        code = (error or {}).get("code", "")
        if status in (AttemptStatus.COMPLETED, AttemptStatus.FAILED):
            self.ctx.breakers.record(attempt.adapter, status == AttemptStatus.COMPLETED, code)
        self.ctx.metrics.attempts.labels(attempt.model, attempt.adapter, status, code).inc()
        if attempt.cost_usd:
            self.ctx.metrics.cost_usd.labels(attempt.model).inc(attempt.cost_usd)


def task_of(attempt: AttemptRow) -> ProviderTask:
    return ProviderTask(
        task_id=attempt.provider_task_id or "", provider_model=attempt.provider_model, data=attempt.task_data or {}
    )


def provider_error(exc: ProviderError, adapter: str) -> dict[str, Any]:
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
