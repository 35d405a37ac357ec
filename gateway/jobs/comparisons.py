"""Comparisons and votes: the rows behind A/B runs and human preference.

A comparison's arms are ordinary jobs (same runner, same durability); this store writes the
comparison and all its arm jobs in one transaction, so a comparison never exists half-made, and
keeps one vote per voter per comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.store import Guard, IdempotencyConflict
from gateway.jobs.tables import AttemptRow, ComparisonRow, JobRow, VoteRow


class ComparisonStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create(
        self, comparison: ComparisonRow, jobs: Sequence[JobRow], guard: Guard | None = None
    ) -> tuple[ComparisonRow, bool]:
        """Insert the comparison and its arm jobs; with an Idempotency-Key already used, the
        earlier comparison instead (nothing new runs, nothing is paid twice).

        Returns (comparison, created). Raises IdempotencyConflict when the key came with another body."""
        if comparison.idempotency_key:
            earlier = await self._by_key(comparison.owner, comparison.idempotency_key)
            if earlier is not None:
                return self._replay(earlier, comparison)
        try:
            async with self.sessions.begin() as s:
                if guard is not None:
                    await s.run_sync(lambda sync: guard(sync.connection()))
                s.add(comparison)
                await s.flush()  # the comparison row first: PostgreSQL checks each statement
                s.add_all(jobs)
        except IntegrityError:
            earlier = await self._by_key(comparison.owner, comparison.idempotency_key or "")
            if earlier is None:
                raise
            return self._replay(earlier, comparison)
        return comparison, True

    async def _by_key(self, owner: str, key: str) -> ComparisonRow | None:
        async with self.sessions() as s:
            q = select(ComparisonRow).where(ComparisonRow.owner == owner, ComparisonRow.idempotency_key == key)
            return await s.scalar(q)

    @staticmethod
    def _replay(earlier: ComparisonRow, new: ComparisonRow) -> tuple[ComparisonRow, bool]:
        if earlier.request_hash != new.request_hash:
            raise IdempotencyConflict(earlier)
        return earlier, False

    async def get(self, comparison_id: str) -> ComparisonRow | None:
        async with self.sessions() as s:
            return await s.get(ComparisonRow, comparison_id)

    async def arms(self, comparison: ComparisonRow) -> list[tuple[JobRow, list[AttemptRow]]]:
        """The arm jobs with their attempts, in the comparison's arm order (two statements)."""
        ids = [arm["job_id"] for arm in comparison.arms]
        async with self.sessions() as s:
            jobs = {j.id: j for j in await s.scalars(select(JobRow).where(JobRow.id.in_(ids)))}
            attempts: dict[str, list[AttemptRow]] = {i: [] for i in ids}
            q = select(AttemptRow).where(AttemptRow.job_id.in_(ids)).order_by(AttemptRow.seq)
            for a in await s.scalars(q):
                attempts[a.job_id].append(a)
        return [(jobs[i], attempts[i]) for i in ids if i in jobs]

    async def list(
        self, owner: str | None, *, after: str | None = None, limit: int = 20
    ) -> tuple[list[ComparisonRow], bool]:
        """Newest first; `owner=None` lists every owner's (admin)."""
        q = select(ComparisonRow)
        if owner is not None:
            q = q.where(ComparisonRow.owner == owner)
        if after:
            q = q.where(ComparisonRow.id < after)
        q = q.order_by(ComparisonRow.id.desc()).limit(limit + 1)
        async with self.sessions() as s:
            rows = list(await s.scalars(q))
        return rows[:limit], len(rows) > limit

    async def vote(self, vote: VoteRow) -> VoteRow:
        """Record `vote`, replacing the same voter's earlier vote on the comparison."""
        async with self.sessions.begin() as s:
            q = select(VoteRow).where(
                VoteRow.comparison_id == vote.comparison_id, VoteRow.owner == vote.owner, VoteRow.voter == vote.voter
            )
            earlier = await s.scalar(q.with_for_update())
            if earlier is None:
                s.add(vote)
                return vote
            earlier.choice, earlier.models, earlier.created_at = vote.choice, vote.models, vote.created_at
            return earlier

    async def votes_on(self, comparison_id: str) -> list[VoteRow]:
        async with self.sessions() as s:
            q = select(VoteRow).where(VoteRow.comparison_id == comparison_id).order_by(VoteRow.created_at)
            return list(await s.scalars(q))

    async def votes(self, owner: str | None) -> list[VoteRow]:
        """Every vote on the owner's comparisons (`None`: all), for the leaderboard."""
        q = select(VoteRow).join(ComparisonRow, ComparisonRow.id == VoteRow.comparison_id)
        if owner is not None:
            q = q.where(ComparisonRow.owner == owner)
        async with self.sessions() as s:
            return list(await s.scalars(q.order_by(VoteRow.created_at)))
