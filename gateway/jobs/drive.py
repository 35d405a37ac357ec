"""The life of one job: submit an attempt, follow it, fetch the result, finish; fall back on failure.

`JobDriver.drive` reads top to bottom as that life; one attempt's submit and poll loop are in
`attempts.py`, the download and probe in `fetch.py`. Every job write checks the lease: a
runner that lost the job raises `LeaseLost` and stops touching it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from adapters.base import ProviderError
from gateway.jobs.attempts import Attempts, provider_error, task_of
from gateway.jobs.cancel import CancelWatch, cancelled_error
from gateway.jobs.context import RunContext
from gateway.jobs.fetch import loop_clip, store_video
from gateway.jobs.present import merged_metrics, video_object
from gateway.jobs.tables import AttemptRow, JobRow
from gateway.routing.fallback import next_candidate
from gateway.status import LIVE_ATTEMPT, TERMINAL_JOB, AttemptStatus, JobStatus
from media import VideoFacts

log = logging.getLogger("i2v.runner")


class JobDriver:
    """Drives jobs for one runner; shared by all its jobs (per-job state lives in locals)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.attempts = Attempts(ctx)
        #: Webhook deliveries in flight (awaited, bounded, at shutdown).
        self.background: set[asyncio.Task[Any]] = set()

    async def drive(self, job_id: str, cancel: asyncio.Event) -> None:
        job, attempts = await self.ctx.store.get_with_attempts(job_id)
        if job is None or job.status in TERMINAL_JOB:
            return
        watch = CancelWatch(self.ctx.store, job.id, cancel, self.ctx.settings.cancel_check_s)
        while True:
            attempt = attempts[-1] if attempts and attempts[-1].status in LIVE_ATTEMPT else None
            if attempt is None:
                if job.cancel_requested:
                    return await self.finish(job, attempts, JobStatus.CANCELLED, error=cancelled_error())
                alias = self._next_candidate(job, attempts)
                if alias is None:
                    return await self.finish(job, attempts, JobStatus.FAILED, error=self._final_error(job, attempts))
                attempt = await self.attempts.submit(job, attempts, alias)
                if attempt.status == AttemptStatus.FAILED:
                    continue
            elif attempt.status == AttemptStatus.SUBMITTING:
                # We died between writing the attempt and recording the provider's task id.
                # Submitting again could double-charge, so this attempt ends here.
                await self.attempts.end(
                    attempt,
                    AttemptStatus.FAILED,
                    {
                        "code": "interrupted",
                        "provider": attempt.adapter,
                        "message": "the gateway stopped while submitting; not resubmitted, to avoid a double charge",
                    },
                )
                continue

            state = await self.attempts.follow(job, attempt, watch)
            if state == JobStatus.COMPLETED:
                if await self._complete(job, attempts, attempt):
                    return
            elif state == JobStatus.CANCELLED:
                return await self.finish(job, attempts, JobStatus.CANCELLED, error=cancelled_error())

    # --- choosing and submitting -----------------------------------------------------------

    def _next_candidate(self, job: JobRow, attempts: list[AttemptRow]) -> str | None:
        if job.deadline_at and time.time() >= job.deadline_at:
            return None
        tried = [(a.model, (a.error or {}).get("code")) for a in attempts]
        return next_candidate(job.route, tried, self.ctx.rules(), self.ctx.adapters, self.ctx.breakers)

    def _final_error(self, job: JobRow, attempts: list[AttemptRow]) -> dict[str, Any]:
        if job.deadline_at and time.time() >= job.deadline_at:
            return {"code": "timeout", "message": "the job's deadline passed before a backend finished it"}
        if attempts and attempts[-1].error:
            return attempts[-1].error
        return {"code": "provider_error", "message": "no backend could take the job"}

    # --- following the provider task --------------------------------------------------------

    # --- the result and the end -------------------------------------------------------------

    async def _complete(self, job: JobRow, attempts: list[AttemptRow], attempt: AttemptRow) -> bool:
        """Fetch and store the result. False when the result was unusable (the attempt failed)."""
        adapter = self.ctx.adapters[attempt.adapter]
        t0 = time.perf_counter()
        try:
            source = await adapter.fetch(task_of(attempt))
            facts = await store_video(source, self.ctx.blobs, self.ctx.downloads, self.ctx.settings.max_video_bytes)
        except ProviderError as exc:
            await self.attempts.end(attempt, AttemptStatus.FAILED, provider_error(exc, attempt.adapter))
            return False
        spec = self.ctx.rules().models.get(attempt.model)
        post: list[str] = []
        if job.request.get("loop") and not (spec and spec.loop):
            original = facts.sha256
            facts = await asyncio.to_thread(loop_clip, facts, self.ctx.blobs)
            post.append("loop_crossfade")
            if not await self.ctx.store.other_jobs_use_blob(original, job.id):
                self.ctx.blobs.delete(original)
        store_ms = (time.perf_counter() - t0) * 1000
        if attempt.cost_usd is None and spec is not None:
            shape = job.request["shape"]
            price = spec.price_per_second(shape["resolution"])
            if price is not None:
                attempt.cost_usd = round(price * shape["seconds"], 6)
                attempt.usage = {**attempt.usage, "cost_source": "catalog"}
        await self.attempts.end(attempt, AttemptStatus.COMPLETED, None)
        job.output = facts.model_dump() | ({"post_processing": post} if post else {})
        job.output_sha256 = facts.sha256
        await self.finish(job, attempts, JobStatus.COMPLETED, facts=facts, store_ms=store_ms)
        return True

    async def finish(
        self,
        job: JobRow,
        attempts: list[AttemptRow],
        status: JobStatus,
        *,
        error: dict[str, Any] | None = None,
        facts: VideoFacts | None = None,
        store_ms: float = 0.0,
    ) -> None:
        """The job's terminal write (under the lease), its metrics, and its webhook."""
        now = time.time()
        job.status = status
        job.error = error
        job.completed_at = now
        job.metrics = merged_metrics(job, attempts, now, facts, fetch_ms=store_ms)
        if status == JobStatus.COMPLETED:
            job.progress = 100
        await self.ctx.update_job(
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
        self.ctx.metrics.jobs_finished.labels(job.model, adapter, status, (error or {}).get("code", "")).inc()
        self.ctx.metrics.total_seconds.labels(job.model, status).observe(now - job.created_at)
        if job.started_at:
            self.ctx.metrics.run_seconds.labels(job.model, adapter).observe(now - job.started_at)
        if facts is not None:
            self.ctx.metrics.video_seconds.labels(job.model).inc(facts.duration_s)
        log.info("job finished", extra={"status": status, "model": job.model, "error_code": (error or {}).get("code")})
        if job.webhook_url:
            payload = video_object(job, attempts).model_dump(mode="json")
            t = asyncio.create_task(self.ctx.webhooks.send(job.webhook_url, f"video.{status}", payload))
            self.background.add(t)
            t.add_done_callback(self.background.discard)
