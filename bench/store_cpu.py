"""CPU per job-store call: the code (Core statements on a plain connection, built once per shape)
against the ORM-session way it replaced, on one SQLite file, in this process.

    python bench/store_cpu.py [--calls 2000] [--rounds 3]

Each variant runs the same work on the same rows: a runner transition (a job's compare-and-set
plus an attempt's update, as a poll that moved the attempt writes), a job create, and a status
read (`get_with_attempts`: the job and its attempts in one join). Rounds alternate the variants;
CPU is the process clock. Prints one table (µs per call, each round).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import alternate, print_table

from gateway.jobs import store as jobstore
from gateway.jobs.ids import new_id
from gateway.jobs.migrate import migrate
from gateway.jobs.tables import AttemptRow, JobRow, make_engine

RUNNER = "bench-runner"


def new_job() -> JobRow:
    now = time.time()
    return JobRow(
        id=new_id("video"),
        owner="bench",
        status="in_progress",
        requested_model="wan-2.6-i2v",
        model="wan-2.6-i2v",
        prompt="slow push in, leaves drift",
        request={"shape": {"seconds": 5, "width": 1280, "height": 720}, "image": {"sha256": "0" * 64}},
        route={"rule": "default", "candidates": ["wan-2.6-i2v", "kling-2.1-i2v"], "traits": {"portrait": False}},
        metrics={},
        warnings=[],
        created_at=now,
        lease_owner=RUNNER,
        lease_until=now + 1e6,
    )


def new_attempt(job: JobRow) -> AttemptRow:
    return AttemptRow(
        id=new_id("att"),
        job_id=job.id,
        seq=1,
        model=job.model,
        adapter="wan",
        provider_model="wan2.6-i2v",
        status="queued",
        provider_task_id=new_id("task"),
        task_data={"region": "intl"},
        usage={"seconds": 5, "resolution": "720P"},
    )


async def main_async(calls: int, rounds: int) -> list[tuple[str, list[float]]]:
    engine = make_engine(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db")
    await migrate(engine)
    store = jobstore.JobStore(engine)
    assert store.inline is not None, "a SQLite file: the store's writes run inline"
    jobs = []
    for _ in range(calls):
        job = new_job()
        await store.create(job)
        attempt = new_attempt(job)
        await store.transition(job, RUNNER, {"started_at": time.time()}, new_attempt=attempt)
        jobs.append((job, attempt))

    async def transition_code(job: JobRow, attempt: AttemptRow) -> None:
        await store.transition(job, RUNNER, {"progress": 40}, attempt=(attempt.id, {"status": "in_progress"}))

    def core_each_call(job: JobRow, attempt: AttemptRow) -> Callable[[Any], None]:
        jobs_t, attempts_t = jobstore.JOBS, jobstore.ATTEMPTS
        held = and_(jobs_t.c.id == job.id, jobs_t.c.lease_owner == RUNNER, jobs_t.c.version == job.version)
        guard = update(jobs_t).where(held).values(progress=40, version=job.version + 1)
        moved = update(attempts_t).where(attempts_t.c.id == attempt.id).values(status="in_progress")

        def work(c: Any) -> None:
            assert c.execute(guard).rowcount
            c.execute(moved)

        return work

    async def transition_core_built(job: JobRow, attempt: AttemptRow) -> None:
        await store.execute(core_each_call(job, attempt))
        job.version += 1

    async def transition_orm(job: JobRow, attempt: AttemptRow) -> None:
        held = and_(JobRow.id == job.id, JobRow.lease_owner == RUNNER, JobRow.version == job.version)
        guard = update(JobRow).where(held).values(progress=40, version=job.version + 1)

        def work(s: Session) -> None:
            assert s.execute(guard.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
            s.execute(update(AttemptRow).where(AttemptRow.id == attempt.id).values(status="in_progress"))

        await store.write(work)
        job.version += 1

    async def create_code(job: JobRow, attempt: AttemptRow) -> None:
        await store.create(new_job())

    async def create_orm(job: JobRow, attempt: AttemptRow) -> None:
        row = new_job()
        await store.write(lambda s: s.add(row))

    async def read_code(job: JobRow, attempt: AttemptRow) -> None:
        await store.get_with_attempts(job.id)

    orm_read = (
        select(JobRow, AttemptRow)
        .outerjoin(AttemptRow, AttemptRow.job_id == JobRow.id)
        .where(JobRow.id == bindparam("job_id"))
        .order_by(AttemptRow.seq)
    )

    async def read_orm(job: JobRow, attempt: AttemptRow) -> None:
        assert store.inline is not None
        with store.inline() as s:  # an inline session, as the store's reads ran before
            rows = s.execute(orm_read, {"job_id": job.id}).all()
        assert rows[0][0].id == job.id

    variants: dict[str, Callable[[JobRow, AttemptRow], Awaitable[None]]] = {
        "transition: the code (Core, built once per shape, values bound)": transition_code,
        "transition: Core, statements built on each call": transition_core_built,
        "transition: ORM session (before)": transition_orm,
        "create: the code (Core insert on a connection)": create_code,
        "create: ORM session add (before)": create_orm,
        "status read: the code (Core join, objects built by Loader)": read_code,
        "status read: ORM session select(JobRow, AttemptRow) (before)": read_orm,
    }
    spent = await alternate(variants, jobs, rounds, warm=100)
    store.close()
    await engine.dispose()
    return list(spent.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = [
        (name, " / ".join(f"{us:.0f}" for us in values))
        for name, values in asyncio.run(main_async(args.calls, args.rounds))
    ]
    title = f"CPU per job-store call, µs per round ({os.cpu_count()} CPUs, SQLite file)"
    print_table(title, ("call", "µs CPU per call, each round"), rows)


if __name__ == "__main__":
    main()
