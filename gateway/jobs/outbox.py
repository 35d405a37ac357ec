"""The outbox relay: delivers what state changes left in the outbox, from whichever process holds it.

Rows are written in the same transaction as the change that causes them (a finished job's
webhook, a cancel for the provider, a trail on a task no attempt follows any more), so a crash
loses none. A relay claims due rows under a short lease, tries each once, and records the try
on the row (`log`), which `GET /v1/videos/{id}/events` shows. Failed tries back off
exponentially and stop after `outbox_max_age_s` (24 h by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from adapters.base import ProviderError, ProviderTask
from gateway.jobs.context import RunContext, transient
from gateway.jobs.native import CALLBACKS
from gateway.jobs.present import video_object
from gateway.jobs.tables import OutboxRow

log = logging.getLogger("i2v.outbox")


class OutboxRelay:
    def __init__(self, ctx: RunContext, batch: int = 64, lease_s: float = 60.0) -> None:
        self.ctx = ctx
        self.batch = batch
        self.lease_s = lease_s

    async def run(self) -> None:
        while True:
            try:
                rows = await self.ctx.store.claim_outbox(self.ctx.runner_id, self.batch, self.lease_s)
            except Exception as exc:
                if not transient(exc):
                    log.exception("claiming outbox rows failed")
                rows = []
            if rows:
                await asyncio.gather(*(self._one(row) for row in rows))
                continue
            self.ctx.outbox_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.outbox_wake.wait(), 1.0)

    async def _one(self, row: OutboxRow) -> None:
        try:
            if row.kind == "webhook":
                outcome = await self._webhook(row)
            elif row.kind == "provider_cancel":
                outcome = await self._cancel(row)
            elif row.kind == "trail":
                outcome = await self._trail(row)
            else:
                outcome = ("failed", f"unknown outbox kind {row.kind!r}", None)
        except Exception as exc:  # a bug or a database error: try again later, never lose the row
            log.exception("outbox delivery crashed", extra={"kind": row.kind})
            outcome = ("retry", repr(exc), None)
        await self._settle(row, *outcome)

    async def _settle(self, row: OutboxRow, result: str, detail: str, wait_s: float | None) -> None:
        now = time.time()
        entry = {"at": round(now, 3), "result": result, "detail": detail}
        values: dict[str, Any] = {"log": [*(row.log or []), entry][-20:]}
        if result == "done":
            values.update(status="delivered", done_at=now, tries=row.tries + 1)
        elif result == "wait":  # not a failure: a trail whose task is still running
            values.update(next_at=now + (wait_s or 5.0), log=row.log)
        elif result == "failed" or now - row.created_at > self.ctx.settings.outbox_max_age_s:
            values.update(status="failed", done_at=now, tries=row.tries + 1, last_error=detail)
        else:
            backoff = min(self.ctx.settings.outbox_backoff_s * 2**row.tries, 3600.0)
            values.update(tries=row.tries + 1, next_at=now + backoff, last_error=detail)
        await self.ctx.retrying(lambda: self.ctx.store.settle_outbox(row, self.ctx.runner_id, **values), "outbox")

    async def _webhook(self, row: OutboxRow) -> tuple[str, str, None]:
        job, attempts = await self.ctx.store.get_with_attempts(row.job_id)
        if job is None:
            return "failed", "the job was deleted", None
        video = video_object(job, attempts, self.ctx.links)
        native = CALLBACKS.get(job.request.get("callback_format", ""))
        # a provider façade's caller gets the provider's callback body; everyone else the envelope
        payload = native(video, job.request) if native else video.model_dump(mode="json")
        ok, retry, detail = await self.ctx.webhooks.deliver(
            row.payload["url"], row.payload["event"], payload, row.id, wrap=native is None
        )
        return ("done" if ok else "retry" if retry else "failed"), detail, None

    def _task(self, row: OutboxRow) -> tuple[Any, ProviderTask] | None:
        p = row.payload
        adapter = self.ctx.adapters.get(p["adapter"])
        if adapter is None:
            return None
        return adapter, ProviderTask(task_id=p["task_id"], provider_model=p["provider_model"], data=p["task_data"])

    async def _cancel(self, row: OutboxRow) -> tuple[str, str, float | None]:
        found = self._task(row)
        if found is None:
            return "wait", f"adapter {row.payload['adapter']} is not run here", 5.0
        adapter, task = found
        try:
            stopped = await adapter.cancel(task)
        except ProviderError as exc:
            return ("retry" if exc.retryable else "failed"), f"{exc.code}: {exc.message}", None
        return "done", "the provider stops the task" if stopped else "the provider cannot stop the task", None

    async def _trail(self, row: OutboxRow) -> tuple[str, str, float | None]:
        """Poll the task once; when it has ended, put its cost on its attempt."""
        found = self._task(row)
        if found is None:
            return "wait", f"adapter {row.payload['adapter']} is not run here", 5.0
        adapter, task = found
        try:
            status = await adapter.poll(task)
        except ProviderError as exc:
            if exc.retryable:
                return "wait", f"poll: {exc.code}", self.ctx.settings.poll_interval_max_s
            return "done", f"the provider no longer knows the task ({exc.code})", None
        if status.state in ("queued", "in_progress"):
            return "wait", f"still {status.state}", status.poll_after_s or self.ctx.settings.poll_interval_max_s
        cost = status.cost_usd
        if cost is None and status.state == "completed":
            cost = self._catalog_cost(row)
        result = await self.ctx.store.account_trail(
            row.payload["attempt_id"], row.payload["task_id"], cost or 0.0, status.usage
        )
        if result == "pending":
            return "wait", "the attempt is still being resumed", 5.0
        if result == "counted" and cost:
            self.ctx.metrics.cost_usd.labels(row.payload["model"]).inc(cost)
        return "done", f"the task ended {status.state}; cost {cost or 0.0}: {result}", None

    def _catalog_cost(self, row: OutboxRow) -> float | None:
        spec = self.ctx.rules().models.get(row.payload["model"])
        price = spec.price_per_second(row.payload.get("resolution", "")) if spec else None
        return None if price is None else round(price * (row.payload.get("seconds") or 0), 6)
