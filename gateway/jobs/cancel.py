"""Cancel: a flag in the database (any process may set it) and an event in the process that runs
the job (so a cancel sent to that process reaches the poll loop at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway.jobs.context import transient
from gateway.jobs.store import JobStore

log = logging.getLogger("i2v.runner")


def cancelled_error() -> dict[str, Any]:
    return {"code": "cancelled", "message": "Cancelled at the client's request."}


class CancelWatch:
    """One running job's view of its cancel: the local event, and the database flag re-read at
    most every `check_s` seconds (a cancel sent to another gateway process lands only there).
    A failed read is skipped, never fatal: the next check reads again."""

    def __init__(self, store: JobStore, job_id: str, event: asyncio.Event, check_s: float) -> None:
        self.store = store
        self.job_id = job_id
        self.event = event
        self.check_s = check_s
        self._checked_at = time.time()  # the job was read from the database just now

    async def requested(self) -> bool:
        if not self.event.is_set() and time.time() - self._checked_at >= self.check_s:
            self._checked_at = time.time()
            try:
                fresh = await self.store.get(self.job_id)
            except Exception as exc:
                if not transient(exc):
                    raise
                log.warning("reading the cancel flag failed; will read again", extra={"error": repr(exc)})
                fresh = None
            if fresh and fresh.cancel_requested:
                self.event.set()
        return self.event.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early on a local cancel."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
