"""What the runner's parts share: the live dependencies, the adapter slots, and the job write
that checks the lease."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.base import Adapter
from gateway.jobs.store import JobStore
from gateway.jobs.tables import JobRow
from gateway.jobs.webhooks import WebhookSender
from gateway.metrics import GatewayMetrics
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile
from gateway.settings import Settings
from gateway.storage.blobs import BlobStore


class LeaseLost(Exception):
    """Another runner owns this job now; stop touching it."""


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
    #: Provider tasks in flight at once, per adapter (its `max_concurrency`).
    slots: dict[str, asyncio.Semaphore] = field(init=False)
    #: Provider tasks this process is following, per adapter.
    in_flight: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slots = {name: asyncio.Semaphore(a.max_concurrency) for name, a in self.adapters.items()}

    async def update_job(self, job: JobRow, **values: Any) -> None:
        """Write to a job only while this runner holds its lease; else stop driving it."""
        if not await self.store.update(job.id, held_by=self.runner_id, **values):
            raise LeaseLost(job.id)
