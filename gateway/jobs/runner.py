"""The job runner: claims durable jobs under a lease and hands each to the driver.

Lifecycle only: the claim loop, the lease loop, the outbox relay, one task per job, shutdown.
What happens to a job once claimed is `gateway/jobs/drive.py`. A runner that dies lets its
leases expire and any runner (this process after a restart, or a replica) takes the jobs over;
a runner claims only jobs whose next adapter it runs (`drives`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Collection

import httpx

from adapters.base import Adapter
from gateway.jobs.context import RunContext, transient
from gateway.jobs.drive import JobDriver
from gateway.jobs.outbox import OutboxRelay
from gateway.jobs.store import JobStore, LeaseLost
from gateway.jobs.tables import claim_row
from gateway.jobs.webhooks import WebhookSender
from gateway.logs import job_id_var
from gateway.metrics import GatewayMetrics
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile
from gateway.settings import Settings
from gateway.status import TERMINAL_JOB, AttemptStatus, JobStatus
from gateway.storage.blobs import BlobStore

log = logging.getLogger("i2v.runner")


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
        drives: Collection[str] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.webhooks = webhooks
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.ctx = RunContext(
            runner_id=self.id,
            store=store,
            adapters=adapters,
            rules=rules,
            blobs=blobs,
            breakers=breakers,
            settings=settings,
            metrics=metrics,
            downloads=downloads,
            webhooks=webhooks,
            drives=frozenset(adapters if drives is None else drives),
            remote=frozenset(settings.remote_adapters),
        )
        self.driver = JobDriver(self.ctx)
        self.relay = OutboxRelay(self.ctx)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._claiming: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, *, jobs: bool = True, outbox: bool = True) -> None:
        """Start claiming and driving jobs, and/or relaying the outbox (a front-only process
        drives no jobs but still delivers what its own writes put in the outbox)."""
        if jobs:
            self._claiming = asyncio.create_task(self._scan_loop())
            self._tasks += [
                self._claiming,
                asyncio.create_task(self._lease_loop()),
                asyncio.create_task(self._cancel_loop()),
            ]
        if outbox:
            self._tasks.append(asyncio.create_task(self.relay.run()))
        if jobs and self.store.postgres:
            self._tasks.append(asyncio.create_task(self.store.listen_pokes(self.nudge)))

    async def stop(self) -> None:
        """Hand the work back: stop claiming, stop the jobs (a job waiting for a slot has written
        nothing), let submits in flight record their outcome (at most `shutdown_grace_s`), then
        free the leases so another runner resumes at once."""
        if self._claiming is not None:
            self._claiming.cancel()
        for t in self._active.values():
            t.cancel()
        await _settle(self._active.values(), "jobs")
        if self.ctx.critical:
            await asyncio.wait(self.ctx.critical, timeout=self.settings.shutdown_grace_s)
        for t in self._tasks:
            t.cancel()
        await _settle(self._tasks, "loops")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.store.release(self.id), 5)

    def wake(self) -> None:
        self._wake.set()

    def wake_outbox(self) -> None:
        self.ctx.outbox_wake.set()

    def request_cancel(self, job_id: str) -> None:
        if job_id in self._cancel:
            self._cancel[job_id].set()

    async def poke(self, attempt_id: str) -> bool:
        """A provider says an attempt's task changed: look at it now. Here if this process follows
        it, else through the database to whichever runner does (PostgreSQL NOTIFY)."""
        if self.nudge(attempt_id):
            return True
        await self.store.notify_poke(attempt_id)
        return False

    async def reported(self, attempt_id: str, task_id: str) -> bool:
        """A provider callback names the task of an attempt that holds none: its submit's answer is
        not read yet or never came. While this process has the submit in flight, the name waits in
        memory for it (`Attempts._unsure` adopts the task if the answer is lost). Otherwise (an
        `unconfirmed` attempt, or one left `submitting` by a crash or held by another process) the
        task is trailed, so that its cost is counted when it ends (a resume adopts it instead).
        The body is not trusted: the trail queries the task under our key (a task the provider does
        not know ends it), and a task another attempt or trail holds is left alone."""
        attempt = await self.store.attempt(attempt_id)
        if attempt is None or attempt.provider_task_id is not None:
            return False
        if attempt.status == AttemptStatus.SUBMITTING and (named := self.ctx.sending.get(attempt_id)):
            if not named.done():
                named.set_result(task_id)
            return True
        if attempt.status not in (AttemptStatus.UNCONFIRMED, AttemptStatus.SUBMITTING):
            return False
        reason = "a provider callback named the task of a submit whose answer was lost"
        if not await self.store.claim_task(claim_row(attempt.job_id, attempt, task_id, reason)):
            return False  # another attempt or trail holds it
        self.ctx.outbox_wake.set()
        return True

    def nudge(self, attempt_id: str) -> bool:
        event = self.ctx.nudges.get(attempt_id)
        if event is not None:
            event.set()
        return event is not None

    def in_flight(self) -> dict[str, int]:
        """Provider tasks this process is following, per adapter (live load for the router)."""
        return {k: v for k, v in self.ctx.in_flight.items() if v}

    @property
    def alive(self) -> bool:
        """Started and none of its loops has died."""
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    # --- the loops ---------------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        while True:
            free = min(self.settings.runner_concurrency - len(self._active), self.settings.runner_claim_batch)
            claimed: list[str] = []
            if free > 0:
                try:
                    claimed = await self.store.claim(
                        self.id, free, self.settings.lease_s, self.ctx.drives, exclude=list(self._active)
                    )
                except Exception as exc:
                    log.log(
                        logging.WARNING if transient(exc) else logging.ERROR,
                        "claiming jobs failed; retrying",
                        exc_info=not transient(exc),
                    )
                    claimed = []
                for job_id in claimed:
                    if job_id not in self._active:
                        self.ctx.lost.discard(job_id)
                        self._cancel[job_id] = asyncio.Event()
                        self._active[job_id] = asyncio.create_task(self._run(job_id))
            if free > 0 and len(claimed) == free:  # more may be waiting: let these start, then claim again
                await asyncio.sleep(0.05)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.runner_scan_interval_s)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                lost = await self.store.renew(self.id, list(self._active), self.settings.lease_s)
            except Exception as exc:
                log.warning("renewing leases failed", extra={"error": repr(exc)})
                continue
            for job_id in lost:
                # Another runner has it (or our lease ran out): stop following it here. A submit
                # in flight finishes inside its shield and reports its task to the outbox.
                log.warning("lease lost", extra={"job_id": job_id})
                self.ctx.lost.add(job_id)
                if (t := self._active.get(job_id)) is not None:
                    t.cancel()

    async def _cancel_loop(self) -> None:
        """Cancels asked through another process: one read finds every held job whose flag is set
        and nudges its driver, which reads the flag itself (`CancelWatch`). Each job is nudged
        once; a cancel sent to this process nudges at once (`request_cancel`)."""
        told: set[str] = set()
        while True:
            await asyncio.sleep(self.settings.cancel_check_s)
            if not self._active:
                continue
            try:
                asked = await self.store.cancels_asked(self.id)
            except Exception as exc:
                log.warning("reading cancel flags failed; will read again", extra={"error": repr(exc)})
                continue
            for job_id in asked - told:
                if (event := self._cancel.get(job_id)) is not None:
                    event.set()
            told = asked

    async def _run(self, job_id: str) -> None:
        token = job_id_var.set(job_id)
        try:
            delay = 0.5
            while True:
                try:
                    await self.driver.drive(job_id, self._cancel[job_id])
                    return
                except Exception as exc:
                    if not transient(exc):
                        raise
                    # The database went away mid-step: the job's state is in it, so drive again
                    # from there once it answers (never fail a job the provider may bill for).
                    log.warning("database error while driving; resuming", extra={"error": repr(exc)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
        except LeaseLost:
            log.warning("lease lost; another runner has the job")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not leave a job hanging: fail it loudly instead.
            log.exception("job crashed in the runner")
            await self._fail_crashed(job_id)
        finally:
            job_id_var.reset(token)
            self._active.pop(job_id, None)
            self._cancel.pop(job_id, None)
            self._wake.set()

    async def _fail_crashed(self, job_id: str) -> None:
        try:
            job, attempts = await self.store.get_with_attempts(job_id)
            if job is not None and job.status not in TERMINAL_JOB and job.lease_owner == self.id:
                await self.driver.finish(
                    job,
                    attempts,
                    JobStatus.FAILED,
                    error={
                        "code": "internal_error",
                        "message": "the gateway hit an internal error on this job; see the logs",
                    },
                )
        except Exception:
            log.exception("could not mark the crashed job failed; its lease will expire and it resumes")


SETTLE_S = 5.0


async def _settle(tasks: Collection[asyncio.Task[None]], what: str) -> None:
    """Wait for cancelled tasks to end, for at most `SETTLE_S`: one stuck task (a call that does
    not yield to cancellation) must not hold the shutdown, which promises to end within a bound."""
    if not tasks:
        return
    _, pending = await asyncio.wait(list(tasks), timeout=SETTLE_S)
    if pending:
        log.warning("shutdown did not wait for every task", extra={"what": what, "still_running": len(pending)})
