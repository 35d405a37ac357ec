"""Durable state: the jobs and attempts tables, and the store that reads and writes them.

SQLite (WAL) by default, PostgreSQL when `I2V_DATABASE_URL` names one. The schema is owned
by the Alembic migrations in `gateway/migrations`; these classes mirror it for queries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACTIVE = ("queued", "in_progress")


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    requested_model: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    prompt: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    route: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    output_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_status_lease", "status", "lease_until"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
    )


class AttemptRow(Base):
    __tablename__ = "attempts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    adapter: Mapped[str] = mapped_column(String(64))
    provider_model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    provider_task_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    task_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_attempts_job_seq"),)


def make_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so readers never block the runner."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


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
            result = await session.execute(select(func.count()).select_from(JobRow).where(JobRow.status == "queued"))
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
            if job.status == "queued" and not has_attempts:
                job.status = "cancelled"
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
            ids = list(
                await s.scalars(
                    select(JobRow.id).where(JobRow.status.in_(ACTIVE), free).order_by(JobRow.created_at).limit(limit)
                )
            )
        claimed: list[str] = []
        for job_id in ids:
            async with self.sessions.begin() as s:
                res = await s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status.in_(ACTIVE), free)
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
