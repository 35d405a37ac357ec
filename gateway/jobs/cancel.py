"""Cancel: a flag in the database (any process may set it) and a nudge in the process that runs
the job (so a cancel sent to that process reaches the poll loop at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.jobs.context import transient
from gateway.jobs.store import JobStore

log = logging.getLogger("i2v.runner")


def cancelled_error() -> dict[str, Any]:
    return {"code": "cancelled", "message": "Cancelled at the client's request."}


class CancelWatch:
    """One running job's view of its cancel. The database flag is the truth (any process may set
    it); it is read when the job's `nudge` event is set: by a cancel that reached this process,
    by the runner's sweep (`cancel_check_s`: one statement finds every job it holds whose flag
    another process set), or by a provider callback (then the poll loop looks at the task now
    too). A failed read is skipped, never fatal."""

    def __init__(self, store: JobStore, job_id: str, nudge: asyncio.Event) -> None:
        self.store = store
        self.job_id = job_id
        self.nudge = nudge
        self.cancelled = False

    async def requested(self) -> bool:
        nudged = self.nudge.is_set()
        self.nudge.clear()
        if self.cancelled:
            return True
        if nudged:
            try:
                fresh = await self.store.get(self.job_id)
            except Exception as exc:
                if not transient(exc):
                    raise
                log.warning("reading the cancel flag failed; will read again", extra={"error": repr(exc)})
                fresh = None
            self.cancelled = bool(fresh and fresh.cancel_requested)
        return self.cancelled

    async def sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when the job is nudged."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.nudge.wait(), seconds)
