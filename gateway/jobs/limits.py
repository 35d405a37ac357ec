"""A key's limits, held in the database so every replica enforces the same ones.

- Requests per minute: one guarded upsert per request on the key's row for this minute, or,
  with `I2V_REDIS_URL`, one INCR of a counter that expires with the minute.
- Concurrent jobs and budget: checked inside the transaction that inserts the job, after a
  write to the key's row. That write takes the row's lock on PostgreSQL (SQLite: the single
  write lock), so two replicas creating jobs for one key take turns, and the count they read
  includes each other's jobs. A budget reserves each running job's catalog estimate and settles
  finished jobs at their actual cost, so it is never overrun by more than what running jobs
  cost beyond their estimates.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.store import Guard
from gateway.jobs.tables import ApiKeyRow, AttemptRow, JobRow, RateWindowRow
from gateway.status import ACTIVE_JOB


class LimitReached(Exception):
    """A key's limit refuses the request; `retry_after_s` says when it may pass."""

    def __init__(self, reason: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.reason, self.message, self.retry_after_s = reason, message, retry_after_s


def period_start(period: str, now: float) -> float:
    """Start of the key's budget period (UTC day or month) containing `now`."""
    t = time.gmtime(now)
    day = (t.tm_year, t.tm_mon, t.tm_mday if period == "day" else 1, 0, 0, 0)
    return float(calendar.timegm(day))


def period_end(period: str, now: float) -> float:
    if period == "day":
        return period_start(period, now) + 86400
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


class Limits:
    def __init__(self, engine: AsyncEngine, redis_url: str | None = None) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self.redis: Any = None
        if redis_url:
            from redis.asyncio import Redis

            self.redis = Redis.from_url(redis_url)

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def take_request(self, key: ApiKeyRow, now: float | None = None) -> None:
        """Count one request against the key's per-minute limit; LimitReached when it is spent."""
        if not key.rpm:
            return
        now = time.time() if now is None else now
        minute = int(now // 60)
        if self.redis is not None:
            counted = await self._redis_count(key.id, minute)
            if counted > key.rpm:
                self._refuse(key, minute, now)
            return
        q = (
            self.insert(RateWindowRow)
            .values(key_id=key.id, minute=minute, count=1)
            .on_conflict_do_update(
                index_elements=["key_id", "minute"],
                set_={"count": RateWindowRow.count + 1},
                where=RateWindowRow.count < key.rpm,
            )
            .returning(RateWindowRow.count)
        )
        async with self.sessions.begin() as s:
            counted = (await s.execute(q)).scalar_one_or_none()
        if counted is None:
            self._refuse(key, minute, now)

    async def _redis_count(self, key_id: str, minute: int) -> int:
        """INCR the key's counter for this minute (it expires with the minute); one round trip."""
        name = f"i2v:rpm:{key_id}:{minute}"
        async with self.redis.pipeline(transaction=True) as pipe:
            count, _ = await pipe.incr(name).expire(name, 120).execute()
        return int(count)

    @staticmethod
    def _refuse(key: ApiKeyRow, minute: int, now: float) -> None:
        wait = max(1, int((minute + 1) * 60 - now) + 1)
        raise LimitReached("rate_limited", f"This key may send {key.rpm} requests a minute; retry in {wait} s.", wait)

    def guard(self, key: ApiKeyRow | None, new_jobs: int, new_estimate_usd: float) -> Guard | None:
        """The check to run inside the create transaction, or None when the key has no such limits."""
        if key is None or (key.concurrency is None and key.budget_usd is None):
            return None

        def check(s: Connection) -> None:
            now = time.time()
            s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key.id).values(used_at=now))  # take turns
            if key.concurrency is not None:
                q = (
                    select(func.count())
                    .select_from(JobRow)
                    .where(JobRow.owner == key.id, JobRow.status.in_(ACTIVE_JOB))
                )
                running = int(s.scalar(q) or 0)
                if running + new_jobs > key.concurrency:
                    raise LimitReached(
                        "concurrency",
                        f"This key may run {key.concurrency} jobs at once and has {running} running; "
                        "retry when one finishes.",
                        5,
                    )
            if key.budget_usd is not None:
                start = period_start(key.period, now)
                settled = select(func.coalesce(func.sum(AttemptRow.cost_usd), 0.0)).join(
                    JobRow, JobRow.id == AttemptRow.job_id
                )
                settled = settled.where(
                    JobRow.owner == key.id, JobRow.created_at >= start, JobRow.status.not_in(ACTIVE_JOB)
                )
                reserved = select(func.coalesce(func.sum(JobRow.estimate_usd), 0.0)).where(
                    JobRow.owner == key.id, JobRow.created_at >= start, JobRow.status.in_(ACTIVE_JOB)
                )
                used = float(s.scalar(settled) or 0.0) + float(s.scalar(reserved) or 0.0)
                if used + new_estimate_usd > key.budget_usd + 1e-9:
                    wait = int(period_end(key.period, now) - now) + 1
                    raise LimitReached(
                        "budget_exceeded",
                        f"This key's budget is ${key.budget_usd:.2f} a {key.period}; ${used:.2f} is spent or "
                        f"reserved and this request is estimated at ${new_estimate_usd:.2f}. "
                        f"It resets in {wait // 3600} h.",
                        wait,
                    )

        return check
