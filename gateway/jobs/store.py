"""The job store: every read and write of job and attempt rows, one short transaction each."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.tables import AttemptRow, JobRow
from gateway.status import ACTIVE_JOB, JobStatus


class IdempotencyConflict(Exception):
    def __init__(self, existing: JobRow) -> None:
        self.existing = existing


class JobStore:
    """Every read and write of job state goes through here; one short transaction each."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create(self, job: JobRow) -> tuple[JobRow, bool]:
        """Insert `job`; with an idempotency key already used, return the earlier job instead.

        Returns (job, created). Raises IdempotencyConflict when the key came with another body.
        """
        if job.idempotency_key:
            existing = await self._by_idempotency_key(job.owner, job.idempotency_key)
            if existing is not None:
                return self._replay(existing, job)
        try:
            async with self.sessions.begin() as s:
                s.add(job)
        except IntegrityError:
            # Lost a race with the same key: the winner's row is the answer.
            existing = await self._by_idempotency_key(job.owner, job.idempotency_key or "")
            if existing is None:
                raise
            return self._replay(existing, job)
        return job, True

    @staticmethod
    def _replay(existing: JobRow, job: JobRow) -> tuple[JobRow, bool]:
        if existing.request_hash != job.request_hash:
            raise IdempotencyConflict(existing)
        return existing, False

    async def _by_idempotency_key(self, owner: str, key: str) -> JobRow | None:
        async with self.sessions() as s:
            return await s.scalar(select(JobRow).where(JobRow.owner == owner, JobRow.idempotency_key == key))

    async def get(self, job_id: str) -> JobRow | None:
        async with self.sessions() as s:
            return await s.get(JobRow, job_id)

    async def get_with_attempts(self, job_id: str) -> tuple[JobRow | None, list[AttemptRow]]:
        """One statement (a left join): every status poll runs it."""
        q = (
            select(JobRow, AttemptRow)
            .outerjoin(AttemptRow, AttemptRow.job_id == JobRow.id)
            .where(JobRow.id == job_id)
            .order_by(AttemptRow.seq)
        )
        async with self.sessions() as s:
            rows = (await s.execute(q)).all()
        if not rows:
            return None, []
        return rows[0][0], [attempt for _, attempt in rows if attempt is not None]

    async def attempts_for(self, job_ids: Sequence[str]) -> dict[str, list[AttemptRow]]:
        out: dict[str, list[AttemptRow]] = {j: [] for j in job_ids}
        if not job_ids:
            return out
        async with self.sessions() as s:
            rows = await s.scalars(select(AttemptRow).where(AttemptRow.job_id.in_(job_ids)).order_by(AttemptRow.seq))
            for row in rows:
                out[row.job_id].append(row)
        return out

    async def count_queued(self) -> int:
        async with self.sessions() as session:
            queued = select(func.count()).select_from(JobRow).where(JobRow.status == JobStatus.QUEUED)
            result = await session.execute(queued)
            return int(result.scalar_one())

    async def list(
        self,
        owner: str,
        *,
        status: str | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> tuple[list[JobRow], bool]:
        """A page of jobs; ids sort by creation time, so `after` is a plain id cursor."""
        q = select(JobRow).where(JobRow.owner == owner)
        if status:
            q = q.where(JobRow.status == status)
        if model:
            q = q.where(or_(JobRow.model == model, JobRow.requested_model == model))
        if after:
            q = q.where(JobRow.id < after if order == "desc" else JobRow.id > after)
        q = q.order_by(JobRow.id.desc() if order == "desc" else JobRow.id.asc()).limit(limit + 1)
        async with self.sessions() as s:
            rows = list(await s.scalars(q))
        return rows[:limit], len(rows) > limit

    async def update(self, job_id: str, held_by: str | None = None, **values: Any) -> bool:
        """Update a job; with `held_by`, only while that runner still holds the lease."""
        q = update(JobRow).where(JobRow.id == job_id)
        if held_by is not None:
            q = q.where(JobRow.lease_owner == held_by)
        async with self.sessions.begin() as s:
            res = await s.execute(q.values(**values))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def request_cancel(self, job_id: str, now: float) -> JobRow | None:
        """Flag a job for cancel; a queued job that never reached a provider ends at once."""
        async with self.sessions.begin() as s:
            job = await s.get(JobRow, job_id, with_for_update=True)
            if job is None:
                return None
            has_attempts = await s.scalar(
                select(func.count()).select_from(AttemptRow).where(AttemptRow.job_id == job_id)
            )
            job.cancel_requested = True
            if job.status == JobStatus.QUEUED and not has_attempts:
                job.status = JobStatus.CANCELLED
                job.completed_at = now
                job.error = {"code": "cancelled", "message": "Cancelled before it reached a provider."}
                job.lease_owner = None
                job.lease_until = None
        return job

    async def delete(self, job_id: str) -> None:
        async with self.sessions.begin() as s:
            job = await s.get(JobRow, job_id)
            if job is not None:
                await s.delete(job)

    async def other_jobs_use_blob(self, sha256: str, job_id: str) -> bool:
        async with self.sessions() as s:
            other = await s.scalar(
                select(JobRow.id).where(JobRow.output_sha256 == sha256, JobRow.id != job_id).limit(1)
            )
            return other is not None

    # --- runner side -------------------------------------------------------------------

    async def claim(self, runner_id: str, limit: int, lease_s: float) -> list[str]:
        """Take up to `limit` active jobs whose lease is free or expired (safe across replicas)."""
        now = time.time()
        free = or_(JobRow.lease_until.is_(None), JobRow.lease_until < now)
        async with self.sessions() as s:
            ready = select(JobRow.id).where(JobRow.status.in_(ACTIVE_JOB), free)
            ids = list(await s.scalars(ready.order_by(JobRow.created_at).limit(limit)))
        claimed: list[str] = []
        for job_id in ids:
            async with self.sessions.begin() as s:
                res = await s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status.in_(ACTIVE_JOB), free)
                    .values(lease_owner=runner_id, lease_until=now + lease_s)
                )
            if res.rowcount:  # type: ignore[attr-defined]
                claimed.append(job_id)
        return claimed

    async def renew(self, runner_id: str, job_ids: Sequence[str], lease_s: float) -> None:
        if not job_ids:
            return
        async with self.sessions.begin() as s:
            await s.execute(
                update(JobRow)
                .where(JobRow.id.in_(job_ids), JobRow.lease_owner == runner_id)
                .values(lease_until=time.time() + lease_s)
            )

    async def release(self, runner_id: str) -> None:
        """On a clean shutdown, free this runner's leases so a restart resumes at once."""
        async with self.sessions.begin() as s:
            await s.execute(
                update(JobRow).where(JobRow.lease_owner == runner_id).values(lease_owner=None, lease_until=None)
            )

    async def add_attempt(self, attempt: AttemptRow) -> None:
        async with self.sessions.begin() as s:
            s.add(attempt)

    async def update_attempt(self, attempt_id: str, **values: Any) -> None:
        async with self.sessions.begin() as s:
            await s.execute(update(AttemptRow).where(AttemptRow.id == attempt_id).values(**values))
