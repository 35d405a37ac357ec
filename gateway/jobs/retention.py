"""Retention: a finished job's files (its input image and its video) go once it expires.

Jobs get `expires_at` at their terminal write (`I2V_RETENTION_S` after it). Every process
sweeps now and then; a file is deleted only when no job that has not expired still uses it
(blobs are shared by content), and never while it is fresh on disk (a new job may have just
stored the same bytes). The job row stays, with its facts; its content answers 410.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.tables import JobRow
from gateway.storage.blobs import BlobStore

log = logging.getLogger("i2v.retention")
FRESH_S = 3600.0  #: a blob written or reused this recently is never deleted


class Retention:
    def __init__(self, engine: AsyncEngine, blobs: BlobStore, every_s: float) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.blobs, self.every_s = blobs, every_s

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a sweep that fails is tried again next time
                log.exception("retention sweep failed")
            await asyncio.sleep(self.every_s)

    async def sweep(self, now: float | None = None, batch: int = 500) -> int:
        """Delete the files of jobs expired by `now`; returns how many jobs were swept."""
        now = time.time() if now is None else now
        q = (
            select(JobRow.id, JobRow.output_sha256, JobRow.input_sha256)
            .where(JobRow.expires_at < now, or_(JobRow.output_sha256.isnot(None), JobRow.input_sha256.isnot(None)))
            .limit(batch)
        )
        async with self.sessions() as s:
            expired = list(await s.execute(q))
        for job_id, output, image in expired:
            for sha in {output, image} - {None}:
                if not await self._still_used(sha, now):
                    await asyncio.to_thread(self._delete, sha, now)
            async with self.sessions.begin() as s:
                await s.execute(update(JobRow).where(JobRow.id == job_id).values(output_sha256=None, input_sha256=None))
        if expired:
            log.info("expired files deleted", extra={"jobs": len(expired)})
        return len(expired)

    async def _still_used(self, sha: str, now: float) -> bool:
        live = or_(JobRow.expires_at.is_(None), JobRow.expires_at >= now)
        q = select(JobRow.id).where(or_(JobRow.output_sha256 == sha, JobRow.input_sha256 == sha), live).limit(1)
        async with self.sessions() as s:
            return await s.scalar(q) is not None

    def _delete(self, sha: str, now: float) -> None:
        path = self.blobs.path(sha)
        try:
            if now - path.stat().st_mtime < FRESH_S:
                return
        except FileNotFoundError:
            return
        self.blobs.delete(sha)
