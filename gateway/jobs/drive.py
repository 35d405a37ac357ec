"""The life of one job: submit an attempt, follow it, fetch the result, finish; fall back on failure.

`JobDriver.drive` reads top to bottom as that life; one attempt's submit and poll loop are in
`attempts.py`, the download and probe in `fetch.py`. Every write goes through the lease-checked
`transition`: a runner that lost the job raises `LeaseLost` and stops touching it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from adapters.base import ProviderError, ProviderTask, VideoSource
from gateway.jobs.attempts import Attempts, live, provider_error, task_of
from gateway.jobs.cancel import CancelWatch, cancelled_error
from gateway.jobs.context import RunContext
from gateway.jobs.fetch import loop_clip, store_video
from gateway.jobs.present import merged_metrics
from gateway.jobs.quality import PENDING, measure
from gateway.jobs.tables import AttemptRow, JobRow, webhook_row
from gateway.routing.fallback import next_candidate
from gateway.status import TERMINAL_JOB, AttemptStatus, JobStatus
from media import VideoFacts

log = logging.getLogger("i2v.runner")


class JobDriver:
    """Drives jobs for one runner; shared by all its jobs (per-job state lives in locals)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.attempts = Attempts(ctx)

    async def drive(self, job_id: str, cancel: asyncio.Event) -> None:
        job, attempts = await self.ctx.retrying(lambda: self.ctx.store.get_with_attempts(job_id), "read job")
        if job is None or job.status in TERMINAL_JOB:
            return
        watch = CancelWatch(self.ctx.store, job.id, cancel)
        while True:
            attempt = live(attempts)
            alias = None
            if attempt is None:
                if job.cancel_requested:
                    return await self.finish(job, attempts, JobStatus.CANCELLED, error=cancelled_error())
                alias = self._next_candidate(job, attempts)
                if alias is None:
                    return await self.finish(job, attempts, JobStatus.FAILED, error=self._final_error(job, attempts))
            adapter = attempt.adapter if attempt else self.ctx.rules().models[alias or ""].adapter
            if adapter not in self.ctx.drives:
                return await self._hand_off(job, adapter)
            # One slot per provider task in flight, taken before the attempt is written: a job
            # waiting for a slot has nothing at the provider, and shutdown leaves it untouched.
            async with self.ctx.slots[adapter]:
                if attempt is None:
                    attempt = await self.attempts.submit(job, attempts, alias or "")
                elif attempt.status == AttemptStatus.SUBMITTING:
                    await self.attempts.resume_submitting(job, attempt)
                if attempt.status not in (AttemptStatus.QUEUED, AttemptStatus.IN_PROGRESS):
                    continue  # refused or unconfirmed: the next candidate
                ended, result = await self.attempts.follow(job, attempt, watch)
            if ended == AttemptStatus.COMPLETED:
                if await self._complete(job, attempts, attempt, result):
                    return
            elif ended == AttemptStatus.CANCELLED:
                return await self.finish(job, attempts, JobStatus.CANCELLED, error=cancelled_error())

    # --- choosing the next candidate --------------------------------------------------------

    def _next_candidate(self, job: JobRow, attempts: list[AttemptRow]) -> str | None:
        if job.deadline_at and time.time() >= job.deadline_at:
            return None
        tried = [(a.model, (a.error or {}).get("code")) for a in attempts]
        return next_candidate(job.route, tried, self.ctx.rules(), self.ctx.available, self.ctx.breakers)

    def _final_error(self, job: JobRow, attempts: list[AttemptRow]) -> dict[str, Any]:
        if job.deadline_at and time.time() >= job.deadline_at:
            return {"code": "timeout", "message": "the job's deadline passed before a backend finished it"}
        if attempts and attempts[-1].error:
            return attempts[-1].error
        return {"code": "provider_error", "message": "no backend could take the job"}

    async def _hand_off(self, job: JobRow, adapter: str) -> None:
        """The job needs an adapter another process runs (a GPU worker): say which, let go."""
        log.info("handing the job to a runner with its adapter", extra={"adapter": adapter})
        await self.ctx.transition(job, {"adapter": adapter}, release=True)

    # --- the result and the end -------------------------------------------------------------

    async def _complete(
        self, job: JobRow, attempts: list[AttemptRow], attempt: AttemptRow, result: VideoSource | None
    ) -> bool:
        """Fetch and store the result (from `result`, where the last poll named it). False when
        the attempt failed and the job moves on."""
        spec = self.ctx.rules().models.get(attempt.model)
        if attempt.cost_usd is None and spec is not None:
            price = spec.price_per_second(attempt.usage.get("resolution", ""))
            if price is not None:
                attempt.cost_usd = round(price * attempt.usage.get("seconds", 0), 6)
                attempt.usage = {**attempt.usage, "cost_source": "catalog"}
        if attempt.cancel_requested_at is not None and not self.ctx.settings.keep_results_after_cancel:
            # The provider could not stop the task: it finished and is billed; the client asked
            # for nothing, so the result is dropped and the job ends cancelled, cost counted.
            error = {
                **cancelled_error(),
                "message": "Cancelled at the client's request; the provider could not stop the task, "
                "so it ran to its end and is billed (see metrics.cost_usd); the result was dropped.",
            }
            await self._finish_with(job, attempts, attempt, JobStatus.CANCELLED, error=error)
            return True
        t0 = time.perf_counter()
        try:
            facts = await self._fetch(job, attempt, result)
        except ProviderError as exc:
            await self.attempts.end(job, attempt, AttemptStatus.FAILED, provider_error(exc, attempt.adapter))
            return False
        post: list[str] = []
        if job.request.get("loop") and not (spec and spec.loop):
            original = facts.sha256
            facts = await asyncio.to_thread(loop_clip, facts, self.ctx.blobs)
            post.append("loop_crossfade")
            if not await self.ctx.store.other_jobs_use_blob(original, job.id):
                self.ctx.blobs.delete(original)
        job.output = facts.model_dump() | ({"post_processing": post} if post else {})
        job.output_sha256 = facts.sha256
        store_ms = (time.perf_counter() - t0) * 1000
        if self.ctx.settings.quality_metrics:
            job.metrics = {**(job.metrics or {}), "quality": PENDING}
        await self._finish_with(job, attempts, attempt, JobStatus.COMPLETED, facts=facts, store_ms=store_ms)
        # Measured once the client has the video: on a busy host the analysis otherwise delayed
        # `completed` by most of a second (docs/benchmarks.md).
        quality = await measure(self.ctx, job, facts, spec)
        if quality is not None:
            metrics = {**(job.metrics or {}), "quality": quality}
            await self.ctx.retrying(lambda: self.ctx.store.annotate(job, metrics), "quality")
        return True

    async def _fetch(self, job: JobRow, attempt: AttemptRow, seen: VideoSource | None) -> VideoFacts:
        """The finished task's MP4, stored and probed: first from where the poll that saw the
        task finish said it is (`seen`; one provider query fewer), else and on every retry from
        asking the provider afresh (`fetch`). A failed download is tried again (an expired URL
        by a fresh query); only the provider saying the task failed, an unusable result, or the
        job's time running out ends the attempt."""
        adapter = self.ctx.adapters[attempt.adapter]
        task = task_of(attempt)
        limit_at = self.ctx.limit_at(job)
        delay, tries = 0.5, 0
        while True:
            try:
                source = seen or await adapter.fetch(task)
                seen = None  # a retry asks the provider afresh: the URL may have expired
                return await store_video(source, self.ctx.blobs, self.ctx.downloads, self.ctx.settings.max_video_bytes)
            except ProviderError as exc:
                tries += 1
                if not exc.retryable or time.time() + delay >= limit_at or tries >= self.ctx.settings.fetch_attempts:
                    raise
                log.warning("fetching the result failed; trying again", extra={"code": exc.code, "error": exc.message})
                if exc.http_status in (403, 404, 410):
                    await self._still_succeeded(adapter, task)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _still_succeeded(self, adapter: Any, task: ProviderTask) -> None:
        """After an expired or missing result URL: raise if the provider now says the task failed."""
        try:
            status = await adapter.poll(task)
        except ProviderError:
            return  # cannot tell: fetch again
        if status.state == "failed":
            err = status.error
            raise ProviderError(err.code if err else "provider_error", err.message if err else "the task failed")

    async def _finish_with(
        self,
        job: JobRow,
        attempts: list[AttemptRow],
        attempt: AttemptRow,
        status: JobStatus,
        *,
        error: dict[str, Any] | None = None,
        facts: VideoFacts | None = None,
        store_ms: float = 0.0,
    ) -> None:
        """End the attempt as completed and the job as `status` in one write."""
        values = {
            "status": AttemptStatus.COMPLETED,
            "error": None,
            "finished_at": time.time(),
            "usage": attempt.usage,
            "cost_usd": attempt.cost_usd,
        }
        for key, value in values.items():
            setattr(attempt, key, value)
        await self.finish(job, attempts, status, error=error, facts=facts, store_ms=store_ms, attempt=attempt)
        self.attempts.record(attempt)

    async def finish(
        self,
        job: JobRow,
        attempts: list[AttemptRow],
        status: JobStatus,
        *,
        error: dict[str, Any] | None = None,
        facts: VideoFacts | None = None,
        store_ms: float = 0.0,
        attempt: AttemptRow | None = None,
    ) -> None:
        """The job's terminal write (under the lease, with its webhook in the outbox), then its metrics."""
        now = time.time()
        metrics = merged_metrics(job, attempts, now, facts, fetch_ms=store_ms)
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "completed_at": now,
            "metrics": metrics,
            "output": job.output,
            "output_sha256": job.output_sha256,
            "progress": 100 if status == JobStatus.COMPLETED else job.progress,
            # its files (input and result) are deleted after this (jobs/retention.py)
            "expires_at": now + self.ctx.settings.retention_s if self.ctx.settings.retention_s else None,
        }
        job.status = status  # the webhook row names the event by it
        outbox = [webhook_row(job, now)] if job.webhook_url else []
        attempt_write = None
        if attempt is not None:
            attempt_write = (
                attempt.id,
                {k: getattr(attempt, k) for k in ("status", "error", "finished_at", "usage", "cost_usd")},
            )
        await self.ctx.transition(job, values, attempt=attempt_write, outbox=outbox, release=True)
        for key, value in values.items():
            setattr(job, key, value)
        adapter = attempts[-1].adapter if attempts else ""
        self.ctx.metrics.jobs_finished.labels(job.model, adapter, status, (error or {}).get("code", "")).inc()
        self.ctx.metrics.total_seconds.labels(job.model, status).observe(now - job.created_at)
        if job.started_at:
            self.ctx.metrics.run_seconds.labels(job.model, adapter).observe(now - job.started_at)
        if facts is not None:
            self.ctx.metrics.video_seconds.labels(job.model).inc(facts.duration_s)
        log.info("job finished", extra={"status": status, "model": job.model, "error_code": (error or {}).get("code")})
