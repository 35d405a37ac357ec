"""Experiment rows: the jobs an experiment assigned, and the shadow budget per experiment and day."""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.tables import JobRow, ShadowBudgetRow


class ExperimentStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    async def take_shadow_slot(self, experiment: str, usd: float, max_jobs: int, max_usd: float) -> bool:
        """Count one shadow job of `usd` against today's caps; False when it would pass one.

        One guarded UPDATE decides, so replicas racing for the last slot cannot both win."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        row = ShadowBudgetRow.__table__
        async with self.sessions.begin() as s:
            blank = self.insert(row).values(experiment=experiment, day=day, jobs=0, usd=0.0)
            await s.execute(blank.on_conflict_do_nothing())
            q = (
                update(ShadowBudgetRow)
                .where(
                    ShadowBudgetRow.experiment == experiment,
                    ShadowBudgetRow.day == day,
                    ShadowBudgetRow.jobs < max_jobs,
                    ShadowBudgetRow.usd + usd <= max_usd,
                )
                .values(jobs=ShadowBudgetRow.jobs + 1, usd=ShadowBudgetRow.usd + usd)
            )
            return bool((await s.execute(q)).rowcount)  # type: ignore[attr-defined]

    async def jobs(self, experiment: str, limit: int = 100_000) -> list[JobRow]:
        """The experiment's jobs, newest first (shadow jobs included: their arm says so)."""
        q = select(JobRow).where(JobRow.experiment == experiment).order_by(JobRow.id.desc()).limit(limit)
        async with self.sessions() as s:
            return list(await s.scalars(q))
