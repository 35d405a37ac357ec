"""The job runner: claims durable jobs under a lease and hands each to the driver.

Lifecycle only: the claim loop, the lease loop, one task per job, shutdown. What happens to a
job once claimed is `gateway/jobs/drive.py`. A runner that dies lets its leases expire and any
runner (this process after a restart, or a replica) takes the jobs over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable

import httpx

from adapters.base import Adapter
from gateway.jobs.context import LeaseLost, RunContext
from gateway.jobs.drive import JobDriver
from gateway.jobs.store import JobStore
from gateway.jobs.webhooks import WebhookSender
from gateway.logs import job_id_var
from gateway.metrics import GatewayMetrics
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile
from gateway.settings import Settings
from gateway.status import TERMINAL_JOB, JobStatus
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
    ) -> None:
        self.store = store
        self.settings = settings
        self.webhooks = webhooks
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.driver = JobDriver(
            RunContext(
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
            )
        )
        self._active: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._scan_loop()), asyncio.create_task(self._lease_loop())]

    async def stop(self) -> None:
        """Stop driving, let webhooks in flight finish (bounded), and free this runner's leases."""
        for t in [*self._tasks, *self._active.values()]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._active.values(), return_exceptions=True)
        if self.driver.background:
            await asyncio.wait(self.driver.background, timeout=5)
        await self.store.release(self.id)

    def wake(self) -> None:
        self._wake.set()

    def request_cancel(self, job_id: str) -> None:
        if job_id in self._cancel:
            self._cancel[job_id].set()

    def in_flight(self) -> dict[str, int]:
        """Provider tasks this process is following, per adapter (live load for the router)."""
        return {k: v for k, v in self.driver.ctx.in_flight.items() if v}

    @property
    def alive(self) -> bool:
        """Started and none of its loops has died."""
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    # --- the loops ---------------------------------------------------------------------------

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
            await self.driver.drive(job_id, self._cancel[job_id])
        except LeaseLost:
            log.warning("lease lost; another runner has the job")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not leave a job hanging: fail it loudly instead.
            log.exception("job crashed in the runner")
            try:
                job, attempts = await self.store.get_with_attempts(job_id)
                if job is not None and job.status not in TERMINAL_JOB:
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
        finally:
            job_id_var.reset(token)
            self._active.pop(job_id, None)
            self._cancel.pop(job_id, None)
            self._wake.set()
