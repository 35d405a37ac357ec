"""One attempt on one candidate: submit it once, follow the provider task to its end, record its end.

Money rules kept here (the caller holds the adapter's slot for the whole attempt):
- the attempt row is written as `submitting` *before* the provider is called, and the task id
  right after; a submit whose outcome is unknown (timeout, 5xx, malformed answer) is never
  repeated blindly: it is looked up by our attempt id where the protocol allows (Kling; a failed
  lookup is asked again), searched for in the provider's task list where it keeps none of our
  ids (DashScope), else the attempt ends `unconfirmed` (reconcile.py);
- a provider task created for a job this runner no longer holds goes to the outbox as a trail,
  so its cost is still counted;
- a poll that fails on the transport, or with a retryable error, is retried until the job's time
  runs out: it never fails a job the provider may be billing for;
- a cancel is a request: where the provider cannot stop the task, the attempt keeps being followed
  to its end, so its cost is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from adapters.base import (
    Adapter,
    InputImage,
    ProviderError,
    ProviderRequest,
    ProviderStatus,
    ProviderTask,
    TaskLookup,
    TaskSearch,
    VideoSource,
    passthrough,
)
from gateway.jobs.cancel import CancelWatch, cancelled_error
from gateway.jobs.context import RunContext
from gateway.jobs.ids import new_id
from gateway.jobs.present import shown_progress
from gateway.jobs.reconcile import Lost, look_up, reconcile
from gateway.jobs.store import LeaseLost
from gateway.jobs.tables import AttemptRow, JobRow, cancel_row, claim_row, trail_row
from gateway.routing.catalog import ModelSpec
from gateway.routing.planner import estimate_cost, shape_for, shape_notes
from gateway.status import LIVE_ATTEMPT, TERMINAL_JOB, AttemptStatus, JobStatus

log = logging.getLogger("i2v.runner")
#: Searches for one lost submit's task when each found was adopted by another search meanwhile
_RESEARCHES = 3


class Attempts:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    # --- submit ------------------------------------------------------------------------------

    async def submit(self, job: JobRow, attempts: list[AttemptRow], alias: str) -> AttemptRow:
        spec = self.ctx.rules().models[alias]
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
            # when the submit began: where a lost answer's task is searched for (reconcile.py)
            task_data={"opened_at": time.time()},
            usage={"seconds": shape.seconds, "resolution": shape.resolution},
        )
        now = time.time()
        expected = self.ctx.pacer.expected(alias) or spec.typical_latency_s
        values: dict[str, Any] = {
            "model": alias,
            # expected_s: what progress is estimated against while the provider reports none
            "request": {**req, "shape": shape.model_dump(), "expected_s": expected},
            "status": JobStatus.IN_PROGRESS,
            "adapter": spec.adapter,
            # a fallback starts from the progress shown so far: it never runs backwards
            "progress": shown_progress(job, attempts, now),
        }
        if attempts and alias != attempts[-1].model:
            known = set(job.warnings or [])
            fresh = [n for n in shape_notes(alias, spec, req, shape) if n not in known]
            if fresh:
                values["warnings"] = [*(job.warnings or []), *fresh]
        if job.started_at is None:
            values["started_at"] = now
        # A permit to send, taken before the row is written and the image read: a burst of
        # claimed jobs waits here holding no request body, and a shutdown leaves them untouched.
        async with self._permit(spec.adapter) as sent:
            log.info("submitting", extra={"model": alias, "est_cost_usd": estimate_cost(spec, shape)})
            # The `submitting` row and the send are one piece that cancelling the job cannot split:
            # a shutdown between them would leave a row that claims a submit which never happened,
            # and a protocol that cannot look tasks up would have to end it `unconfirmed`.
            await self.ctx.shielded(self._open(job, attempts, attempt, values, spec, sent))
        return attempt

    @contextlib.asynccontextmanager
    async def _permit(self, adapter: str) -> AsyncIterator[Once]:
        """The adapter's send permit (`max_submitting`), given back by the `Once` it yields as soon
        as the provider answers (`_send`), else when the block ends."""
        gate = self.ctx.sends[adapter]
        await gate.acquire()
        sent = Once(gate.release)
        try:
            yield sent
        finally:
            sent()

    async def _open(
        self,
        job: JobRow,
        attempts: list[AttemptRow],
        attempt: AttemptRow,
        values: dict[str, Any],
        spec: ModelSpec,
        sent: Once,
    ) -> None:
        await self.ctx.transition(job, values, new_attempt=attempt)
        if "started_at" in values:
            self.ctx.metrics.queue_seconds.labels(attempt.model).observe(values["started_at"] - job.created_at)
        for key, value in values.items():
            setattr(job, key, value)
        attempts.append(attempt)
        # From here the provider may be billing: shutdown waits for the outcome to be written.
        await self._send(job, attempt, self.request_for(job, attempt, spec), sent)

    def request_for(self, job: JobRow, attempt: AttemptRow, spec: ModelSpec) -> ProviderRequest:
        req = job.request
        shape = req["shape"]
        image = InputImage(data=self.ctx.blobs.path(req["image"]["sha256"]).read_bytes(), **req["image"])
        return ProviderRequest(
            job_id=job.id,
            attempt_id=attempt.id,
            provider_model=attempt.provider_model,
            prompt=job.prompt,
            negative_prompt=req.get("negative_prompt"),
            image=image,
            seconds=shape["seconds"],
            resolution=shape["resolution"],
            width=shape["width"],
            height=shape["height"],
            aspect_ratio=req.get("aspect_ratio"),
            seed=req.get("seed"),
            camera=req.get("camera"),
            loop=bool(req.get("loop")),
            params={**spec.params, **self._passthrough(attempt.adapter, req.get("parameters") or {})},
            callback_url=callback_url(self.ctx.settings.public_url, attempt.id),
        )

    def _passthrough(self, adapter: str, given: dict[str, Any]) -> dict[str, Any]:
        """The request's `parameters` this adapter passes on (a fallback of another family gets
        only its own; the API refused names no candidate takes)."""
        allowed = passthrough(self.ctx.adapters.get(adapter))
        return {k: v for k, v in given.items() if k in allowed}

    async def _send(self, job: JobRow, attempt: AttemptRow, request: ProviderRequest, sent: Once | None = None) -> None:
        """`sent`: gives the send permit back once the provider answered (not after a search)."""
        adapter = self.ctx.adapters[attempt.adapter]
        # a callback may name the task first
        self.ctx.sending.setdefault(attempt.id, asyncio.get_running_loop().create_future())
        try:
            try:
                try:
                    task = await adapter.submit(request)
                finally:
                    if sent is not None:
                        sent()
            except ProviderError as exc:
                if exc.maybe_submitted:
                    return await self._unsure(job, attempt, request, f"{exc.code}: {exc.message}", exc)
                log.info("submit refused", extra={"model": attempt.model, "code": exc.code})
                return await self.end(job, attempt, AttemptStatus.FAILED, provider_error(exc, attempt.adapter))
            except Exception as exc:  # an unmapped transport failure mid-request: the outcome is unknown
                err = ProviderError("provider_error", repr(exc), retryable=True, maybe_submitted=True)
                return await self._unsure(job, attempt, request, repr(exc), err)
            try:
                await self._accepted(job, attempt, task)
            except IntegrityError:  # a search elsewhere took our task for its own: it holds and counts it
                log.error("a searching attempt adopted this submit's task", extra={"provider_task_id": task.task_id})
                why = f"the provider answered with task {task.task_id}, which another attempt had already adopted"
                await self._unknown(job, attempt, why, code="provider_error")
        finally:
            self.ctx.sending.pop(attempt.id, None)

    async def _unsure(
        self, job: JobRow, attempt: AttemptRow, request: ProviderRequest, why: str, exc: ProviderError | None
    ) -> None:
        """The submit may have made a task. Where the provider finds tasks by our id or lists its
        tasks, look for it: adopt it, or, when it surely was never made, let the provider's error
        stand (`exc`) or, after a restart cut the submit short (`exc` None), send it now. Else the
        attempt is `unconfirmed`."""
        adapter = self.ctx.adapters[attempt.adapter]
        code = exc.code if exc else "interrupted"
        verdict = None
        if not isinstance(adapter, TaskLookup | TaskSearch):
            named = await self._named(attempt, request)
            if named is not None:
                try:
                    return await self._accepted(job, attempt, named)
                except IntegrityError:  # another attempt holds it: the callback's word was wrong
                    why = f"{why}; the task a callback named is another attempt's"
        elif isinstance(adapter, TaskLookup):
            verdict = await look_up(self.ctx, adapter, request, self.ctx.limit_at(job))
        elif isinstance(adapter, TaskSearch):
            since = float((attempt.task_data or {}).get("opened_at") or job.started_at or job.created_at)
            # searching now, not waiting for an answer: other searches need not wait for this one
            task_data = {**(attempt.task_data or {}), "lost_at": time.time()}
            await self.ctx.transition(job, attempt=(attempt.id, {"task_data": task_data}))
            attempt.task_data = task_data
            lost = Lost(attempt.id, job.prompt, since)
            for _ in range(_RESEARCHES):
                verdict = await reconcile(self.ctx, adapter, attempt.adapter, request, lost, self.ctx.limit_at(job))
                if verdict.task is None:
                    break
                try:
                    return await self._accepted(job, attempt, verdict.task)
                except IntegrityError:  # another search of this prompt adopted it at the same
                    # moment (a burst after a crash): look again, it is held now
                    log.info("lost submit: the task found was adopted by another attempt; searching again")
                    verdict = None
            if verdict is None:
                why = f"{why}; each task found was adopted by another attempt at the same moment"
        if verdict is not None:
            log.info(
                "lost submit searched", extra={"model": attempt.model, "verdict": verdict.kind, "why": verdict.why}
            )
            if verdict.task is not None:
                try:
                    return await self._accepted(job, attempt, verdict.task)
                except IntegrityError:  # another attempt adopted it first (a burst after a crash)
                    why = f"{why}; the one matching task was adopted by another attempt at the same moment"
                    return await self._unknown(job, attempt, why, code=code)
            if verdict.kind == "absent":
                if exc is None:
                    return await self._resend(job, attempt, request)
                return await self.end(job, attempt, AttemptStatus.FAILED, provider_error(exc, attempt.adapter))
            why = f"{why}; {verdict.why}"
        await self._unknown(job, attempt, why, code=code)
        if verdict is not None and verdict.candidates:
            await self._claim_one(job, attempt, verdict.candidates)

    async def _named(self, attempt: AttemptRow, request: ProviderRequest) -> ProviderTask | None:
        """The task a provider callback named for this attempt, where the protocol can neither find
        nor list tasks (MiniMax): its one way to say which task a submit with a lost answer made.
        Waits up to `callback_wait_s` for it (a callback comes when the task is made), then looks in
        memory (this process had the submit in flight) and in the trails (another process took the
        callback, or it came while the attempt was left `submitting`). Unheld tasks only: a callback
        names a task, it never takes one from another job."""
        named = self.ctx.sending.get(attempt.id)
        if named is not None and request.callback_url:
            await asyncio.wait([named], timeout=self.ctx.settings.callback_wait_s)
        if named is not None and named.done():
            task_id = named.result()
            if await self.ctx.store.held_tasks(attempt.adapter, [task_id]):
                return None
        elif (task_id := await self.ctx.store.trailed_task(attempt.job_id, attempt.id)) is None:
            return None
        log.info("lost submit named by a callback", extra={"model": attempt.model, "provider_task_id": task_id})
        return ProviderTask(task_id=task_id, provider_model=attempt.provider_model)

    async def _resend(self, job: JobRow, attempt: AttemptRow, request: ProviderRequest) -> None:
        """Send a submit that surely never made a task, under a fresh `opened_at`: if this send's
        answer is lost too, the search must look where its task can be (made after now), not
        around the first send (found in the PostgreSQL chaos run: a resend's task fell outside
        that window, the search said "absent", the job failed and the task billed uncounted).
        Written first, which also checks the lease: a runner that lost the job does not resend.
        Under the adapter's send permit, as a first send is: the attempts a restart resumes all
        search at once, and those that must send again wait for a permit, not for a connection
        with their bodies built (`max_submitting`)."""
        async with self._permit(attempt.adapter) as sent:
            task_data = {**(attempt.task_data or {}), "opened_at": time.time()}
            task_data.pop("lost_at", None)  # waiting for an answer again
            await self.ctx.transition(job, attempt=(attempt.id, {"task_data": task_data}))
            attempt.task_data = task_data
            await self._send(job, attempt, request, sent)

    async def _claim_one(self, job: JobRow, attempt: AttemptRow, tasks: list[ProviderTask]) -> None:
        """Several unheld tasks carry this prompt, made too close together to tell whose is whose
        (a crash in a burst of one prompt). Each such attempt takes one, nearest its submit first,
        and trails it: every task is counted once, on one attempt. None is delivered: which photo
        a task animates is unknown, and the job was told the submit's outcome is unknown."""
        reason = "one of several tasks with this prompt made too close together to tell apart: counted, not delivered"
        for task in tasks:
            row = claim_row(job.id, attempt, task.task_id, reason)
            if await self.ctx.retrying(functools.partial(self.ctx.store.claim_task, row), "claim a task"):
                log.info("claimed an ambiguous task to count", extra={"provider_task_id": task.task_id})
                self.ctx.outbox_wake.set()
                return

    async def _accepted(self, job: JobRow, attempt: AttemptRow, task: ProviderTask) -> None:
        values = {
            "provider_task_id": task.task_id,
            "task_data": task.data,
            "submitted_at": time.time(),
            "status": AttemptStatus.QUEUED,
        }
        try:
            await self.ctx.transition(job, attempt=(attempt.id, values))
        except LeaseLost:
            # The provider took a task for a job this runner no longer holds: never drop it.
            trail = trail_row(job.id, attempt, task.task_id, task.data, reason="the lease was lost while submitting")
            await self.ctx.retrying(lambda: self.ctx.store.add_outbox([trail]), "orphan trail")
            self.ctx.outbox_wake.set()
            raise
        for key, value in values.items():
            setattr(attempt, key, value)
        log.info("submitted", extra={"model": attempt.model, "provider_task_id": task.task_id})

    async def _unknown(self, job: JobRow, attempt: AttemptRow, why: str, code: str = "interrupted") -> None:
        """`code`: the provider's fault behind the unknown outcome, or `interrupted` when the gateway
        itself stopped mid-submit."""
        log.warning("submit outcome unknown; not resubmitted", extra={"model": attempt.model, "error": why})
        await self.end(
            job,
            attempt,
            AttemptStatus.UNCONFIRMED,
            {
                "code": code,
                "provider": attempt.adapter,
                "message": f"the submit may have reached the provider ({why}); it is not sent again, "
                "to avoid a second charge",
            },
        )

    async def resume_submitting(self, job: JobRow, attempt: AttemptRow) -> None:
        """An attempt found `submitting`: a runner stopped between writing it and recording the
        task id. Look for it (`_unsure`: found by our id, in the task list, or named by a provider
        callback that came meanwhile); else the attempt ends `unconfirmed`."""
        spec = self.ctx.rules().models.get(attempt.model)
        if spec is not None:  # found, listed, or named by a callback that came meanwhile
            request = self.request_for(job, attempt, spec)
            return await self.ctx.shielded(
                self._unsure(job, attempt, request, "the gateway stopped while submitting", None)
            )
        await self._unknown(job, attempt, "the gateway stopped while submitting")

    # --- follow ------------------------------------------------------------------------------

    async def follow(
        self, job: JobRow, attempt: AttemptRow, watch: CancelWatch
    ) -> tuple[AttemptStatus, VideoSource | None]:
        """Poll until the task ends or the job's time runs out; returns how the attempt ended
        (COMPLETED means the provider finished: the caller fetches the result) and where the
        result is when the answer that said so named it."""
        adapter = self.ctx.adapters[attempt.adapter]
        task = task_of(attempt)
        since = attempt.submitted_at or time.time()
        polls = 0
        looked = since  # when the task was last seen running (its submit, before the first poll)
        limit_at = self.ctx.limit_at(job)
        written: list[Any] = [attempt.status, job.progress, time.time()]
        self.ctx.metrics.in_flight.labels(attempt.adapter).inc()
        self.ctx.in_flight[attempt.adapter] = self.ctx.in_flight.get(attempt.adapter, 0) + 1
        self.ctx.nudges[attempt.id] = watch.nudge  # a provider callback for this attempt wakes the loop
        try:
            while True:
                if job.id in self.ctx.lost:
                    raise LeaseLost(job.id)
                soon = False
                if await watch.requested() and attempt.cancel_requested_at is None:
                    await self._request_cancel(job, attempt, task)
                    soon = True  # look again soon: most cancels are quick
                if time.time() >= limit_at:
                    await self.end(
                        job,
                        attempt,
                        AttemptStatus.FAILED,
                        {
                            "code": "timeout",
                            "provider": attempt.adapter,
                            "message": "the provider did not finish before the job's deadline",
                        },
                        trail=True,
                    )
                    return AttemptStatus.FAILED, None
                first = 0.0 if polls or soon else self.ctx.pacer.first(attempt.model, time.time() - since)
                if first > 0:  # a learned model: nothing to see before its usual end
                    await watch.sleep(max(0.01, min(first, limit_at - time.time())))
                    continue
                status = await self._poll_once(adapter, task)
                polls += 1
                now = time.time()
                if status is not None:
                    await self._record_progress(job, attempt, status, written)
                    if status.state in TERMINAL_JOB:
                        if status.state == "completed":
                            self.ctx.pacer.observe(attempt.model, now - since, now - looked)
                        return await self._ended(job, attempt, status), status.result
                looked = now
                if status and status.poll_after_s:
                    wait = status.poll_after_s
                elif soon:
                    wait = self.ctx.settings.poll_interval_s
                else:
                    wait = self.ctx.pacer.wait(attempt.model, time.time() - since, polls)
                await watch.sleep(max(0.01, min(wait, limit_at - time.time())))
        finally:
            self.ctx.nudges.pop(attempt.id, None)
            self.ctx.metrics.in_flight.labels(attempt.adapter).dec()
            self.ctx.in_flight[attempt.adapter] -= 1

    async def _ended(self, job: JobRow, attempt: AttemptRow, status: ProviderStatus) -> AttemptStatus:
        if status.state == "completed":
            return AttemptStatus.COMPLETED
        if status.state == "cancelled" and attempt.cancel_requested_at is not None:
            await self.end(job, attempt, AttemptStatus.CANCELLED, cancelled_error())
            return AttemptStatus.CANCELLED
        await self.end(job, attempt, AttemptStatus.FAILED, _status_err(status, attempt.adapter))
        return AttemptStatus.FAILED

    async def _request_cancel(self, job: JobRow, attempt: AttemptRow, task: ProviderTask) -> None:
        """Record the client's cancel on the attempt and send it to the provider (via the outbox).
        The attempt stays live: the provider says whether the task stops or runs to its end."""
        now = time.time()
        await self.ctx.transition(
            job,
            attempt=(attempt.id, {"cancel_requested_at": now}),
            outbox=[cancel_row(job.id, attempt, task.task_id, task.data)],
        )
        attempt.cancel_requested_at = now

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

    async def _record_progress(
        self, job: JobRow, attempt: AttemptRow, status: ProviderStatus, written: list[Any]
    ) -> None:
        """Keep the poll's news on the rows in memory; write it at most every `progress_write_s`.
        `written` is [attempt status, progress, at] as last written: progress and queued/running
        are hints (the end of the attempt is always written), and each write costs statements."""
        if status.usage:
            attempt.usage = {**attempt.usage, **status.usage}
        if status.cost_usd is not None:
            attempt.cost_usd = status.cost_usd
        job.progress = max(job.progress, max(0, min(99, status.progress or 0)))
        if status.state in ("queued", "in_progress"):
            attempt.status = AttemptStatus(status.state)
        moved, progressed = attempt.status != written[0], job.progress != written[1]
        if not (moved or progressed) or time.time() - written[2] < self.ctx.settings.progress_write_s:
            return
        changes = {"status": attempt.status, "usage": attempt.usage} if moved else None
        await self.ctx.transition(
            job, {"progress": job.progress} if progressed else None, attempt=(attempt.id, changes) if changes else None
        )
        written[:] = [attempt.status, job.progress, time.time()]

    # --- the end -----------------------------------------------------------------------------

    async def end(
        self,
        job: JobRow,
        attempt: AttemptRow,
        status: AttemptStatus,
        error: dict[str, Any] | None,
        *,
        trail: bool = False,
    ) -> None:
        """End the attempt. With `trail`, its provider task may still run: it is asked to stop,
        and followed from the outbox until it ends, so whatever it costs is counted."""
        values = {
            "status": status,
            "error": error,
            "finished_at": time.time(),
            "usage": attempt.usage,
            "cost_usd": attempt.cost_usd,
        }
        outbox = []
        if trail and attempt.provider_task_id:
            tid, data = attempt.provider_task_id, attempt.task_data or {}
            outbox = [cancel_row(job.id, attempt, tid, data), trail_row(job.id, attempt, tid, data, reason="deadline")]
        await self.ctx.transition(job, attempt=(attempt.id, values), outbox=outbox)
        for key, value in values.items():
            setattr(attempt, key, value)
        self.record(attempt)

    def record(self, attempt: AttemptRow) -> None:
        """Breakers and metrics for an attempt that ended (after its write succeeded)."""
        code = (attempt.error or {}).get("code", "")
        if attempt.status in (AttemptStatus.COMPLETED, AttemptStatus.FAILED):
            self.ctx.breakers.record(attempt.adapter, attempt.status == AttemptStatus.COMPLETED, code)
        self.ctx.metrics.attempts.labels(attempt.model, attempt.adapter, attempt.status, code).inc()
        if attempt.cost_usd:
            self.ctx.metrics.cost_usd.labels(attempt.model).inc(attempt.cost_usd)


def callback_url(public_url: str | None, attempt_id: str) -> str | None:
    return f"{public_url.rstrip('/')}/v1/provider-callbacks/{attempt_id}" if public_url else None


def live(attempts: list[AttemptRow]) -> AttemptRow | None:
    """The attempt whose provider task may still be running, if any (only ever the last)."""
    return attempts[-1] if attempts and attempts[-1].status in LIVE_ATTEMPT else None


def task_of(attempt: AttemptRow) -> ProviderTask:
    return ProviderTask(
        task_id=attempt.provider_task_id or "", provider_model=attempt.provider_model, data=attempt.task_data or {}
    )


def provider_error(exc: ProviderError, adapter: str) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "provider": adapter, "provider_code": exc.provider_code}


def _status_err(status: ProviderStatus, adapter: str) -> dict[str, Any]:
    if status.state == "cancelled":
        # Nobody asked: the provider stopped the task itself. That is its failure, not the
        # client's cancel, so the job may fall back.
        return {
            "code": "provider_error",
            "message": "the provider cancelled the task without being asked",
            "provider": adapter,
            "provider_code": "cancelled",
        }
    e = status.error
    if e is None:
        return {
            "code": "provider_error",
            "message": "the provider reported failure without a reason",
            "provider": adapter,
        }
    return {"code": e.code, "message": e.message, "provider": adapter, "provider_code": e.provider_code}


class Once:
    """Calls `fn` the first time it is called; later calls do nothing (a permit given back by
    whichever of the send and its caller ends first)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn: Callable[[], object] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()
