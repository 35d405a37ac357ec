"""Could a durable-job library replace our claim/lease/outbox layer? Each one, measured on the
same local PostgreSQL, running N jobs with the bookkeeping shape of one gateway job.

    python3 -m venv /tmp/libs && /tmp/libs/bin/pip install dbos procrastinate pgqueuer \\
        'psycopg[binary]' asyncpg aiosqlite pydantic pytest
    PYTHONPATH=. /tmp/libs/bin/python bench/job_libraries.py --jobs 2000

A job here is what the gateway's runner does around one provider task, with the provider
left out: take the job, record the attempt before the call, record the task id after it, finish.
- ours: `JobStore` create, claim (one statement), three lease-checked transitions;
- DBOS: a workflow of two checkpointed steps on a queue (DBOS records each step);
- procrastinate / pgqueuer: one task per job (they record start and end; the attempt rows
  would be ours to write on top).
Printed per library: jobs/s with 32 at once, PostgreSQL transactions per job (from
`pg_stat_database`, so any driver counts the same), and whether it ran on SQLite at all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import PG_ADMIN, temporary_database

CONCURRENCY = 32


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _commits(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(_plain(url))
    try:
        return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


# --- ours --------------------------------------------------------------------------------------


async def ours(url: str, n: int) -> None:
    from gateway.jobs.ids import new_id
    from gateway.jobs.migrate import migrate
    from gateway.jobs.store import JobStore
    from gateway.jobs.tables import AttemptRow, JobRow, make_engine

    engine = make_engine(url)
    await migrate(engine)
    store = JobStore(engine)
    now = time.time()
    for _ in range(n):
        await store.create(
            JobRow(
                id=new_id("vid"),
                owner="",
                status="queued",
                progress=0,
                requested_model="m",
                model="m",
                prompt="p",
                request={},
                route={},
                metrics={},
                warnings=[],
                cancel_requested=False,
                created_at=now,
                adapter="toy",
            )
        )
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(job_id: str) -> None:
        async with sem:
            job = await store.get(job_id)
            assert job is not None
            attempt = AttemptRow(
                id=new_id("att"),
                job_id=job.id,
                seq=0,
                model="m",
                adapter="toy",
                provider_model="p",
                status="submitting",
                task_data={},
                usage={},
            )
            await store.transition(job, "r", {"status": "in_progress"}, new_attempt=attempt)
            await store.transition(job, "r", attempt=(attempt.id, {"status": "queued", "provider_task_id": "t"}))
            await store.transition(
                job, "r", {"status": "completed"}, attempt=(attempt.id, {"status": "completed"}), release=True
            )

    tasks = []
    while len(tasks) < n:
        claimed = await store.claim("r", CONCURRENCY * 4, 30, adapters={"toy"})
        tasks += [asyncio.create_task(one(j)) for j in claimed]
        if not claimed:
            await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    await engine.dispose()


# --- DBOS --------------------------------------------------------------------------------------


def dbos_run(system_url: str, n: int) -> None:
    from dbos import DBOS, DBOSConfig

    DBOS.destroy(destroy_registry=True)
    config: DBOSConfig = {"name": "i2v-bench", "system_database_url": system_url}
    DBOS(config=config)

    @DBOS.step()
    def submit(i: int) -> str:
        return f"task-{i}"

    @DBOS.step()
    def finish(task: str) -> str:
        return task

    @DBOS.workflow()
    def job(i: int) -> str:
        return finish(submit(i))

    DBOS.launch()
    queue = DBOS.register_queue("jobs", worker_concurrency=CONCURRENCY, polling_interval_sec=0.05)
    try:
        handles = [queue.enqueue(job, i) for i in range(n)]
        for h in handles:
            h.get_result()
    finally:
        DBOS.destroy()


# --- procrastinate -----------------------------------------------------------------------------


async def procrastinate_run(url: str, n: int) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_plain(url)))

    @app.task(queue="jobs")
    async def job(i: int) -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for i in range(n):
            await job.defer_async(i=i)
        await app.run_worker_async(queues=["jobs"], concurrency=CONCURRENCY, wait=False)


# --- pgqueuer ----------------------------------------------------------------------------------


async def pgqueuer_run(url: str, n: int) -> None:
    import asyncpg
    from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
    from pgqueuer.adapters.persistence.queries import Queries
    from pgqueuer.core.qm import QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(_plain(url))
    driver = AsyncpgDriver(conn)
    queries = Queries(driver)
    await queries.install()
    for start in range(0, n, 500):
        k = min(500, n - start)
        await queries.enqueue(["job"] * k, [None] * k, [0] * k)
    qm = QueueManager(queries)
    done = [0]

    @qm.entrypoint("job")
    async def job(_: Any) -> None:
        done[0] += 1

    await qm.run(batch_size=CONCURRENCY // 2, mode=QueueExecutionMode.drain, max_concurrent_tasks=CONCURRENCY)
    assert done[0] == n, done
    await conn.close()


# --- SQLite probes -----------------------------------------------------------------------------


def sqlite_support() -> dict[str, str]:
    out: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp())
    try:
        dbos_run(f"sqlite:///{tmp / 'dbos.sqlite'}", 20)
        out["DBOS"] = "yes (system database on SQLite)"
    except Exception as exc:
        out["DBOS"] = f"no: {type(exc).__name__}: {exc}"[:120]
    import procrastinate

    kinds = sorted(n for n in dir(procrastinate) if n.endswith("Connector"))
    out["procrastinate"] = f"no: connectors are {', '.join(kinds)} (PostgreSQL, or in-memory for tests)"
    import pgqueuer.adapters.drivers as drivers

    names = sorted(p.stem for p in Path(drivers.__file__).parent.glob("*.py") if p.stem != "__init__")
    out["pgqueuer"] = f"no: drivers are {', '.join(names)} (PostgreSQL)"
    out["ours"] = "yes (the default)"
    return out


def measure(name: str, run: Callable[[str, int], Any], n: int) -> dict[str, Any]:
    with temporary_database() as url:
        before = asyncio.run(_commits(url))
        t0 = time.perf_counter()
        if asyncio.iscoroutinefunction(run):
            asyncio.run(run(url, n))
        else:
            run(_plain(url).replace("postgresql://", "postgresql+psycopg://"), n)
        wall = time.perf_counter() - t0
        time.sleep(0.6)  # pg_stat_database is flushed about every 500 ms
        commits = asyncio.run(_commits(url)) - before
    return {"library": name, "jobs/s": round(n / wall, 1), "transactions/job": round(commits / n, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    args = ap.parse_args()
    os.environ.setdefault("I2V_TEST_POSTGRES_URL", PG_ADMIN)
    rows = []
    for name, fn in (
        ("ours (JobStore)", ours),
        ("DBOS", dbos_run),
        ("procrastinate", procrastinate_run),
        ("pgqueuer", pgqueuer_run),
    ):
        try:
            rows.append(measure(name, fn, args.jobs))
        except Exception as exc:
            rows.append({"library": name, "error": f"{type(exc).__name__}: {exc}"[:160]})
    sqlite = sqlite_support()
    print(f"{args.jobs} jobs, {CONCURRENCY} at once, local PostgreSQL\n")
    print("| library | jobs/s | PG transactions per job | runs on SQLite |\n|---|---|---|---|")
    for r in rows:
        key = r["library"].split(" ")[0]
        key = "ours" if key == "ours" else key
        if "error" in r:
            print(f"| {r['library']} | error: {r['error']} | | {sqlite.get(key, '')} |")
        else:
            print(f"| {r['library']} | {r['jobs/s']} | {r['transactions/job']} | {sqlite.get(key, '')} |")


if __name__ == "__main__":
    main()
