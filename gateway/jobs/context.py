"""What the runner's parts share: the live dependencies, the adapter slots, and the two ways they
touch the database: `transition` (the lease-checked state change) and `retrying` (any other call),
both retried through transient database errors so that a database blip never ends a job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from adapters.base import Adapter
from gateway.jobs.links import Links, signing_key
from gateway.jobs.pacing import PollPacer
from gateway.jobs.store import JobStore, LeaseLost
from gateway.jobs.tables import AttemptRow, JobRow, OutboxRow
from gateway.jobs.webhooks import WebhookSender
from gateway.metrics import GatewayMetrics
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile
from gateway.settings import AdapterSettings, Settings
from gateway.storage.blobs import BlobStore

log = logging.getLogger("i2v.runner")
T = TypeVar("T")

__all__ = ["LeaseLost", "RunContext", "transient"]


def transient(exc: BaseException) -> bool:
    """An error of the database connection, not of our statement: retry it, never fail a job on it.
    A pool checkout that timed out (thousands of jobs waiting on a few SQLite connections) is one."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | TimeoutError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass
class RunContext:
    runner_id: str
    store: JobStore
    adapters: dict[str, Adapter]
    rules: Callable[[], RulesFile]
    blobs: BlobStore
    breakers: Breakers
    settings: Settings
    metrics: GatewayMetrics
    downloads: httpx.AsyncClient
    webhooks: WebhookSender
    #: Adapters this runner drives (claims jobs for); the router may also plan `remote` ones.
    drives: frozenset[str] = frozenset()
    remote: frozenset[str] = frozenset()
    #: Provider tasks in flight at once, per adapter (its `max_concurrency`).
    slots: dict[str, asyncio.Semaphore] = field(init=False)
    #: Submit calls on the wire at once, per adapter (`max_submitting`), taken inside a slot.
    sends: dict[str, asyncio.Semaphore] = field(init=False)
    #: Provider tasks this process is following, per adapter.
    in_flight: dict[str, int] = field(default_factory=dict)
    #: Jobs whose lease the lease loop found gone: their drivers stop at the next step.
    lost: set[str] = field(default_factory=set)
    #: Submits whose outcome must be written before shutdown may cancel them.
    critical: set[asyncio.Task[Any]] = field(default_factory=set)
    #: The nudge event of each attempt this process is following, by attempt id.
    nudges: dict[str, asyncio.Event] = field(default_factory=dict)
    #: Attempts whose submit this process has in flight, each with the task id a provider callback
    #: named for it (resolved when a callback comes before the submit's answer is read).
    sending: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    #: Set when an outbox row was written, so the deliverer looks at once.
    outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: When to poll each model next (learned from the tasks this process followed).
    pacer: PollPacer = field(init=False)
    #: Finished clips measured at once (`quality_concurrency`), in `quality_processes` workers.
    quality_slots: asyncio.Semaphore = field(init=False)
    #: Signs the download links in video objects (API answers and webhooks alike).
    links: Links = field(init=False)

    def __post_init__(self) -> None:
        self.slots = {name: asyncio.Semaphore(a.max_concurrency) for name, a in self.adapters.items()}
        configured = self.settings.adapters
        self.sends = {
            name: asyncio.Semaphore((configured.get(name) or AdapterSettings()).max_submitting)
            for name in self.adapters
        }
        self.quality_slots = asyncio.Semaphore(self.settings.quality_concurrency)
        s = self.settings
        key = signing_key(s.url_signing_key.get_secret_value() if s.url_signing_key else None, s.data_dir)
        self.links = Links(key, s.signed_url_ttl_s, s.public_url)
        self.pacer = PollPacer(first_s=self.settings.poll_interval_s, max_s=self.settings.poll_interval_max_s)

    @property
    def available(self) -> frozenset[str]:
        """Adapters the deployment can run: this runner's and the remote workers'."""
        return frozenset(self.adapters) | self.remote

    async def retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Run a database call, waiting out transient errors with capped backoff."""
        delay = 0.2
        while True:
            try:
                return await call()
            except Exception as exc:
                if not transient(exc):
                    raise
                log.warning("database error; retrying", extra={"step": what, "error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def transition(
        self,
        job: JobRow,
        job_values: dict[str, Any] | None = None,
        *,
        new_attempt: AttemptRow | None = None,
        attempt: tuple[str, dict[str, Any]] | None = None,
        outbox: Sequence[OutboxRow] = (),
        release: bool = False,
    ) -> None:
        """`JobStore.transition` under this runner's id, through transient errors. Raises
        `LeaseLost` when the lease is gone (also when the lease loop saw it go first)."""
        if job.id in self.lost:
            raise LeaseLost(job.id)
        await self.retrying(
            lambda: self.store.transition(
                job,
                self.runner_id,
                job_values,
                new_attempt=new_attempt,
                attempt=attempt,
                outbox=outbox,
                release=release,
            ),
            "transition",
        )
        if outbox:
            self.outbox_wake.set()

    def limit_at(self, job: JobRow) -> float:
        """When the job's time is up: its deadline, else `job_timeout_s` after it was created."""
        return job.deadline_at or (job.created_at + self.settings.job_timeout_s)

    async def shielded(self, coro: Awaitable[T]) -> T:
        """Run `coro` so that cancelling the job's task does not cut it short; shutdown waits
        for these (bounded) before it lets go of the leases."""
        task = asyncio.ensure_future(coro)
        self.critical.add(task)
        task.add_done_callback(self.critical.discard)
        task.add_done_callback(_observe)  # its error is seen even when the job's task was cancelled
        return await asyncio.shield(task)


def _observe(task: asyncio.Future[Any]) -> None:
    """A shielded piece that fails after its caller was cancelled (a lease lost mid-submit) has no
    one to raise to: its error is logged here (once, at info: a caller still waiting gets it too)
    instead of as asyncio's 'Task exception was never retrieved' error."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.info("a shielded step ended with an error", extra={"error": repr(exc)})
