"""The job store on SQLite and on PostgreSQL: migrations, idempotency, leases across runners."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, select

from gateway.jobs.ids import new_id
from gateway.jobs.migrate import migrate
from gateway.jobs.store import IdempotencyConflict, JobStore, LeaseLost
from gateway.jobs.tables import AttemptRow, JobRow, claim_row, json_dumps, make_engine, webhook_row

T = TypeVar("T")
PG_ADMIN = os.environ.get("I2V_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg_reachable() -> bool:
    try:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(PG_ADMIN), 3)
        await conn.close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        dbname = None
    else:
        if not await _pg_reachable():
            pytest.skip(f"no PostgreSQL at {PG_ADMIN} (set I2V_TEST_POSTGRES_URL to test against one)")
        import asyncpg

        dbname = f"i2v_test_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{dbname}"')
        await admin.close()
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        engine = make_engine(f"{base}/{dbname}")
    await migrate(engine)
    await migrate(engine)  # idempotent: a second start finds the schema at head
    st = JobStore(engine)
    yield st
    st.close()
    await engine.dispose()
    if dbname:
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
        await admin.close()


def job(**kw: object) -> JobRow:
    values: dict = dict(
        id=new_id("vid"),
        owner="",
        status="queued",
        progress=0,
        requested_model="auto",
        model="m",
        prompt="p",
        request={"x": 1},
        route={"candidates": ["m"]},
        metrics={},
        warnings=[],
        cancel_requested=False,
        created_at=time.time(),
    )
    values.update(kw)
    return JobRow(**values)


def submitting(job_id: str, adapter: str = "toy") -> AttemptRow:
    """A job's first attempt, written before its submit is sent."""
    return AttemptRow(
        id=new_id("att"),
        job_id=job_id,
        seq=0,
        model="m",
        adapter=adapter,
        provider_model="p",
        status="submitting",
        task_data={},
        usage={},
    )


async def test_create_get_list(store: JobStore) -> None:
    a, created = await store.create(job(model="a"))
    assert created
    b, _ = await store.create(job(model="b", owner="other"))
    got = await store.get(a.id)
    assert got is not None and got.request == {"x": 1} and got.route == {"candidates": ["m"]}
    rows, more = await store.list("", limit=10)
    assert [r.id for r in rows] == [a.id] and not more
    assert (await store.list("other"))[0][0].id == b.id


async def test_idempotency(store: JobStore) -> None:
    first, created = await store.create(job(idempotency_key="k", request_hash="h1"))
    again, created2 = await store.create(job(idempotency_key="k", request_hash="h1"))
    assert created and not created2 and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        await store.create(job(idempotency_key="k", request_hash="h2"))
    # the same key under another owner is another job
    _, created3 = await store.create(job(owner="o2", idempotency_key="k", request_hash="h2"))
    assert created3


async def test_concurrent_same_key_makes_one_job(store: JobStore) -> None:
    results = await asyncio.gather(*[store.create(job(idempotency_key="race", request_hash="h")) for _ in range(8)])
    assert len({j.id for j, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_leases_are_exclusive_and_expire(store: JobStore) -> None:
    ids = [(await store.create(job()))[0].id for _ in range(3)]
    got_a = await store.claim("runner-a", 10, lease_s=0.5)
    assert sorted(got_a) == sorted(ids)
    assert await store.claim("runner-b", 10, lease_s=0.5) == []
    assert await store.update(ids[0], held_by="runner-a", progress=5)
    assert not await store.update(ids[0], held_by="runner-b", progress=6)
    await asyncio.sleep(0.6)
    got_b = await store.claim("runner-b", 10, lease_s=30)
    assert sorted(got_b) == sorted(ids)  # a dead runner's jobs are taken over
    assert not await store.update(ids[0], held_by="runner-a", progress=7)  # and the old owner is fenced off
    await store.release("runner-b")
    assert sorted(await store.claim("runner-c", 10, lease_s=30)) == sorted(ids)


async def test_terminal_jobs_are_never_claimed(store: JobStore) -> None:
    done, _ = await store.create(job(status="completed"))
    await store.create(job(status="failed"))
    assert await store.claim("r", 10, lease_s=30) == []
    assert (await store.get(done.id)).status == "completed"  # type: ignore[union-attr]


async def test_cancel_of_queued_job_ends_it(store: JobStore) -> None:
    j, _ = await store.create(job())
    row, ended = await store.request_cancel(j.id, time.time())
    assert row is not None and row.status == "cancelled" and row.cancel_requested and ended
    assert await store.request_cancel("vid_missing", time.time()) == (None, False)


async def test_annotate_sets_a_finished_jobs_metrics_only_at_the_version_it_read(store: JobStore) -> None:
    """`metrics.quality` lands after `completed`: on a finished job at the version read, once;
    a stale version (retention, a delete) or a job still running is left as it is."""
    done, _ = await store.create(job(status="completed"))
    read, stale = await store.get(done.id), await store.get(done.id)  # two readers of one version
    assert read is not None and stale is not None
    assert await store.annotate(read, {"quality": {"flicker": 1.5}})
    again = await store.get(done.id)
    assert again is not None and again.metrics == {"quality": {"flicker": 1.5}} and again.version == read.version
    assert not await store.annotate(stale, {"quality": {"flicker": 9.0}})  # its version is gone
    assert (await store.get(done.id)).metrics == {"quality": {"flicker": 1.5}}  # type: ignore[union-attr]
    running, _ = await store.create(job(status="running"))
    assert not await store.annotate(running, {"quality": {"flicker": 2.0}})
    assert (await store.get(running.id)).metrics == {}  # type: ignore[union-attr]


async def test_json_columns_round_trip_and_read_rows_that_json_dumps_wrote(store: JobStore) -> None:
    """The JSON columns go through msgspec: values come back as written, a NaN is stored as null
    (PostgreSQL's json refuses `NaN`), and a SQLite row written with `json.dumps` before (which
    wrote `NaN`) still reads."""
    import numpy as np

    metrics = {"quality": {"flicker": 0.125, "nan": float("nan"), "n": 3}, "cost": {"usd": 0.1}, "ok": True}

    class Label(str):
        pass

    # what json.dumps took (an np.float64 is a float, a str subclass a str) and msgspec alone refuses
    numpy_values = {"psnr": np.float64(31.5), "frames": np.int64(48), "label": Label("zoom_in")}
    j, _ = await store.create(job(metrics={**metrics, **numpy_values}, warnings=["é ✓"], metadata_={"k": "v"}))
    got = await store.get(j.id)
    assert got is not None
    plain = {"psnr": 31.5, "frames": 48, "label": "zoom_in"}
    assert got.metrics == {**metrics, "quality": {**metrics["quality"], "nan": None}, **plain}
    assert type(got.metrics["psnr"]) is float and type(got.metrics["frames"]) is int
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_dumps({"x": object()})
    assert got.warnings == ["é ✓"] and got.metadata_ == {"k": "v"}
    if store.engine.url.get_backend_name() == "sqlite":
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(
                "UPDATE jobs SET metrics = ? WHERE id = ?", ('{"quality": {"psnr": NaN, "x": Infinity}}', j.id)
            )
        old = await store.get(j.id)
        assert old is not None
        assert math.isnan(old.metrics["quality"]["psnr"]) and old.metrics["quality"]["x"] == math.inf


async def test_claim_is_one_statement_and_takes_only_jobs_for_its_adapters(store: JobStore) -> None:
    toy = [(await store.create(job(adapter="toy")))[0].id for _ in range(3)]
    gpu = [(await store.create(job(adapter="local")))[0].id for _ in range(2)]
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    for engine in store.sync_engines:  # writes run inline on a SQLite file
        event.listen(engine, "before_cursor_execute", listener)
    try:
        got = await store.claim("api-1", 10, lease_s=30, adapters={"toy", "wan"})
    finally:
        for engine in store.sync_engines:
            event.remove(engine, "before_cursor_execute", listener)
    assert sorted(got) == sorted(toy)
    assert len([s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]) == 1
    if store.postgres:
        assert "SKIP LOCKED" in statements[-1]
    assert sorted(await store.claim("gpu-1", 10, lease_s=30, adapters={"local"})) == sorted(gpu)


async def test_concurrent_claims_never_share_a_job(store: JobStore) -> None:
    ids = {(await store.create(job()))[0].id for _ in range(60)}
    batches = await asyncio.gather(*[store.claim(f"r{i}", 15, lease_s=30) for i in range(6)])
    claimed = [j for batch in batches for j in batch]
    assert len(claimed) == len(set(claimed)) == 60 and set(claimed) == ids


async def test_a_lease_that_ran_out_starts_no_submit_and_a_taken_job_refuses_every_write(store: JobStore) -> None:
    j, _ = await store.create(job())
    (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=0.3)]
    assert row is not None
    await asyncio.sleep(0.4)  # a GC pause: nobody has claimed it yet, but the lease ran out
    attempt = submitting(j.id)
    with pytest.raises(LeaseLost):  # no new attempt, so no provider call, on a lease that ran out
        await store.transition(row, "a", {"status": "in_progress"}, new_attempt=attempt, outbox=[webhook_row(row)])
    _, attempts = await store.get_with_attempts(j.id)
    assert attempts == [] and await store.outbox_for(j.id) == []  # nothing of the refused write landed
    assert await store.renew("a", [j.id], lease_s=0.3) == set()  # nobody took it: still ours
    await asyncio.sleep(0.4)
    assert await store.claim("b", 1, lease_s=30) == [j.id]
    assert await store.renew("a", [j.id], lease_s=30) == {j.id}  # now it is gone, and renew says so
    with pytest.raises(LeaseLost):
        await store.transition(row, "a", {"progress": 5})
    fresh = await store.get(j.id)
    assert fresh is not None and fresh.lease_owner == "b" and fresh.progress == 0


async def test_a_claim_never_takes_back_a_job_its_runner_is_driving(store: JobStore) -> None:
    a, _ = await store.create(job())
    b, _ = await store.create(job())
    assert sorted(await store.claim("r", 10, lease_s=0.2)) == sorted([a.id, b.id])
    await asyncio.sleep(0.3)  # both leases ran out under a busy runner that still drives `a`
    assert await store.claim("r", 10, lease_s=30, exclude=[a.id]) == [b.id]


async def test_a_transition_moves_job_attempt_and_outbox_together(store: JobStore) -> None:
    j, _ = await store.create(job(webhook_url="https://example.com/hook"))
    (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=30)]
    assert row is not None
    attempt = submitting(j.id)
    await store.transition(row, "a", {"status": "in_progress"}, new_attempt=attempt)
    row.status = "completed"
    await store.transition(
        row,
        "a",
        {"status": "completed"},
        attempt=(attempt.id, {"status": "completed"}),
        outbox=[webhook_row(row)],
        release=True,
    )
    fresh, attempts = await store.get_with_attempts(j.id)
    assert fresh is not None and fresh.status == "completed" and fresh.lease_owner is None and fresh.version == 3
    assert [a.status for a in attempts] == ["completed"]
    (hook,) = await store.outbox_for(j.id)
    assert hook.kind == "webhook" and hook.payload["event"] == "video.completed"
    assert [r.id for r in await store.claim_outbox("relay", 10, 60)] == [hook.id]
    assert await store.claim_outbox("relay-2", 10, 60) == []  # leased to the first relay


async def test_a_new_attempt_takes_its_column_defaults_and_each_write_shape_is_built_once(store: JobStore) -> None:
    """Writes are Core statements: a new attempt's unset columns get their defaults on the row
    and on the object (as a flush left them), and a transition's statement is built once per
    shape (the columns it sets), its values bound; 30 writes of one shape land, each its own."""
    j, _ = await store.create(job(metadata_={"team": "a"}))
    (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=30)]
    assert row is not None and row.metadata_ == {"team": "a"}  # an attribute named unlike its column
    attempt = AttemptRow(id=new_id("att"), job_id=j.id, seq=0, model="m", adapter="toy", provider_model="p")
    attempt.status = "submitting"
    await store.transition(row, "a", {"status": "in_progress"}, new_attempt=attempt)
    assert attempt.task_data == {} and attempt.usage == {} and attempt.cost_usd is None
    before = len(store._statements)
    for n in range(1, 31):
        await store.transition(row, "a", {"progress": n}, attempt=(attempt.id, {"usage": {"polls": n}}))
    assert len(store._statements) == before + 2  # the job's shape and the attempt's, once each
    fresh, (stored,) = await store.get_with_attempts(j.id)
    assert fresh is not None and fresh.progress == 30 and fresh.version == row.version == 32
    assert stored.usage == {"polls": 30} and stored.task_data == {} and stored.status == "submitting"
    assert fresh.metadata_ == {"team": "a"}


async def test_a_shielded_step_that_fails_after_its_job_stopped_is_logged_not_unobserved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A submit shielded from cancellation can end in an error after its job's task was cancelled
    (a lease lost mid-submit, seen at 10,000 jobs in flight): nobody awaits it any more, and
    asyncio reported 'Task exception was never retrieved' at error level. Now it is observed."""
    import gc

    from gateway.jobs.context import _observe
    from gateway.jobs.store import LeaseLost

    seen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: seen.append(context))

    async def step() -> None:
        await asyncio.sleep(0.01)
        raise LeaseLost("vid_x")

    task = asyncio.ensure_future(step())
    task.add_done_callback(_observe)
    outer = asyncio.ensure_future(asyncio.shield(task))
    await asyncio.sleep(0)
    outer.cancel()
    with caplog.at_level(logging.INFO, logger="i2v.runner"):
        await asyncio.sleep(0.05)
    del task, outer
    gc.collect()
    assert not seen, seen
    (record,) = [r for r in caplog.records if "a shielded step ended with an error" in r.getMessage()]
    assert record.error.startswith("LeaseLost")  # type: ignore[attr-defined]


def test_a_pool_checkout_timeout_is_retried_not_fatal() -> None:
    """At 10,000 jobs in flight on one SQLite replica, coroutines waited over 30 s for one of the
    pool's 15 connections; SQLAlchemy's pool TimeoutError was not counted as a connection error,
    so `watch.requested()` crashed paid jobs ("job crashed in the runner"). It is retried now."""
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from gateway.jobs.context import transient

    assert transient(PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out"))
    assert not transient(IntegrityError("insert", {}, Exception("unique")))  # our statement's fault: not retried


async def test_one_provider_task_is_adopted_by_one_attempt(store: JobStore) -> None:
    """Two runners that each found their lost submit in the provider's task list at the same
    moment and picked the same task: the second adoption fails, so the task is counted once."""
    from sqlalchemy.exc import IntegrityError

    rows = []
    for _ in range(2):
        j, _ = await store.create(job())
        (row,) = [await store.get(i) for i in await store.claim(f"r-{j.id}", 1, lease_s=30)]
        assert row is not None
        attempt = submitting(j.id, adapter="wan")
        await store.transition(row, f"r-{j.id}", {"status": "in_progress"}, new_attempt=attempt)
        rows.append((row, attempt))
    adopt = {"provider_task_id": "task-1", "status": "queued"}
    (first, a1), (second, a2) = rows
    await store.transition(first, f"r-{first.id}", attempt=(a1.id, adopt))
    with pytest.raises(IntegrityError):
        await store.transition(second, f"r-{second.id}", attempt=(a2.id, adopt))
    _, attempts = await store.get_with_attempts(second.id)
    assert attempts[0].provider_task_id is None  # nothing of the refused write landed
    other = {"provider_task_id": "task-1", "status": "queued", "adapter": "kling"}
    await store.transition(second, f"r-{second.id}", attempt=(a2.id, other))  # another provider's task-1


async def _sqlite_store(path: Path) -> JobStore:
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    return JobStore(engine)


async def test_status_reads_on_a_sqlite_file_run_inline_and_see_every_commit(tmp_path: Path) -> None:
    """A status read does not go through the async engine (no statement there), and it sees what
    the async engine committed a moment before."""
    store = await _sqlite_store(tmp_path / "db.sqlite")
    try:
        assert store.inline is not None
        j, _ = await store.create(job())
        (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=30)]
        assert row is not None
        await store.transition(row, "a", {"status": "in_progress", "progress": 40}, new_attempt=submitting(j.id))
        through_async: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            through_async.append(statement)

        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        fresh, attempts = await store.get_with_attempts(j.id)
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
        assert fresh is not None and (fresh.status, fresh.progress) == ("in_progress", 40)
        assert [a.status for a in attempts] == ["submitting"]
        assert through_async == []
        assert await store.get_with_attempts("vid_missing") == (None, [])
    finally:
        store.close()
        await store.engine.dispose()


async def _beside_a_ticking_loop(work: Awaitable[T]) -> tuple[T, float, int]:
    """Await `work` while a 10 ms ticker runs on the same loop: its result, the seconds it took
    and how many ticks the loop ran meanwhile (a wait for a lock on the loop's thread shows as none)."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        result = await work
    finally:
        ticker.cancel()
    return result, time.monotonic() - started, ticks


async def test_an_inline_read_of_a_locked_file_waits_on_the_async_engine_not_on_the_event_loop(
    tmp_path: Path,
) -> None:
    """Another connection holds the file exclusively for 0.4 s: the inline read fails at once,
    the read completes through the async engine once the lock is gone, and the event loop kept
    running meanwhile (the inline path must never hold it for a lock)."""
    import sqlite3
    import threading

    db = tmp_path / "db.sqlite"
    store = await _sqlite_store(db)
    try:
        j, _ = await store.create(job())
        await store.engine.dispose()  # pooled connections would keep the locker out
        store.close()
        locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("UPDATE jobs SET progress = 7 WHERE id = ?", (j.id,))
        with pytest.raises(sqlite3.OperationalError):  # what the inline reader meets
            sqlite3.connect(db, timeout=0).execute("SELECT progress FROM jobs").fetchall()
        threading.Timer(0.4, lambda: (locker.execute("COMMIT"), locker.close())).start()
        (fresh, _), waited, ticks = await _beside_a_ticking_loop(store.get_with_attempts(j.id))
        assert fresh is not None and fresh.progress == 7  # read after the lock's commit
        assert waited >= 0.3
        assert ticks >= 10, ticks  # ~40 expected; an inline wait would have frozen the loop
    finally:
        store.close()
        await store.engine.dispose()


async def test_transitions_on_a_sqlite_file_run_inline_with_the_async_engines_guarantees(tmp_path: Path) -> None:
    """A runner's writes go inline too (nothing through the async engine), on connections set up
    as the async engine's are (foreign keys on, no fsync per commit) that leave WAL checkpoints
    (an fsync) to the async engine; the lease check still refuses a stale writer."""
    store = await _sqlite_store(tmp_path / "db.sqlite")
    try:
        assert store.inline_engine is not None
        with store.inline_engine.connect() as conn:
            pragmas = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("foreign_keys", "synchronous")]
            assert pragmas == [1, 1]  # on, NORMAL
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        j, _ = await store.create(job())
        (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=30)]
        assert row is not None
        stale = JobRow(id=row.id, version=row.version)
        through_async: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            through_async.append(statement)

        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        attempt = submitting(j.id)
        await store.transition(row, "a", {"status": "in_progress"}, new_attempt=attempt)
        await store.transition(row, "a", attempt=(attempt.id, {"status": "queued", "provider_task_id": "t-1"}))
        with pytest.raises(LeaseLost):
            await store.transition(stale, "a", {"progress": 99})
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
        assert through_async == []
        async with store.sessions() as s:  # what the async engine sees
            fresh = await s.get(JobRow, j.id)
            rows = list(await s.scalars(select(AttemptRow).where(AttemptRow.job_id == j.id)))
        assert fresh is not None and (fresh.status, fresh.progress, fresh.version) == ("in_progress", 0, row.version)
        assert [(a.status, a.provider_task_id) for a in rows] == [("queued", "t-1")]
    finally:
        store.close()
        await store.engine.dispose()


async def test_a_transition_while_another_connection_writes_waits_beside_the_loop(tmp_path: Path) -> None:
    """Another connection holds the write lock for 0.4 s: the inline write fails at once, is
    rolled back and tried again after short sleeps, and lands once after the lock is gone; the
    event loop kept running meanwhile, and no statement went through the async engine (whose
    transactions, holding the lock across loop turns, collapsed the 10,000-job bench)."""
    import sqlite3
    import threading

    db = tmp_path / "db.sqlite"
    store = await _sqlite_store(db)
    try:
        j, _ = await store.create(job())
        (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=30)]
        assert row is not None
        version = row.version
        locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")  # the write lock; WAL readers still read
        locker.execute("UPDATE jobs SET progress = 7 WHERE id = ?", (j.id,))
        threading.Timer(0.4, lambda: (locker.execute("COMMIT"), locker.close())).start()
        attempt = submitting(j.id)
        through_async: list[str] = []
        event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: through_async.append(a[2]))
        _, waited, ticks = await _beside_a_ticking_loop(
            store.transition(row, "a", {"status": "in_progress"}, new_attempt=attempt)
        )
        assert through_async == []
        assert waited >= 0.3
        assert ticks >= 10, ticks  # an inline wait for the lock would have frozen the loop
        fresh, attempts = await store.get_with_attempts(j.id)
        assert fresh is not None and (fresh.status, fresh.progress, fresh.version) == ("in_progress", 7, version + 1)
        assert [a.id for a in attempts] == [attempt.id]  # written once
    finally:
        store.close()
        await store.engine.dispose()


async def test_an_in_memory_database_has_no_inline_reader() -> None:
    engine = make_engine("sqlite+aiosqlite://")
    try:
        assert JobStore(engine).inline is None
    finally:
        await engine.dispose()


async def test_ping_asks_the_async_engine_that_writes_take(tmp_path: Path) -> None:
    """Readiness must not pass on the inline reader alone: a database the async engine cannot
    open fails `ping`."""
    store = await _sqlite_store(tmp_path / "db.sqlite")
    try:
        await store.ping()
    finally:
        store.close()
        await store.engine.dispose()
    broken = JobStore(make_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'db.sqlite'}"))
    try:
        with pytest.raises(Exception, match="unable to open"):
            await broken.ping()
    finally:
        broken.close()
        await broken.engine.dispose()


async def _submitting_job(store: JobStore, runner: str) -> tuple[JobRow, JobRow, AttemptRow]:
    """A job claimed by `runner` with its first attempt written `submitting`: (job as created,
    job as claimed, attempt)."""
    j, _ = await store.create(job())
    (row,) = [await store.get(i) for i in await store.claim(runner, 1, lease_s=30)]
    assert row is not None
    attempt = submitting(j.id)
    await store.transition(row, runner, {"status": "in_progress"}, new_attempt=attempt)
    return j, row, attempt


async def test_a_late_task_of_an_attempt_that_went_on_with_another_is_counted_once(store: JobStore) -> None:
    """The chaos run's case (PostgreSQL, a replica frozen mid-submit): the runner that took the
    job over found no task, sent again and finished with task B; the frozen runner's submit then
    made task A, and its trail reached A's end. A is counted once, on an extra `cancelled`
    attempt appended after the job's attempts once the job has ended; never while it runs (the
    last attempt must stay the live one). Before the fix A was "followed" and counted nowhere."""
    j, row, attempt = await _submitting_job(store, "r2")
    await store.transition(row, "r2", attempt=(attempt.id, {"status": "in_progress", "provider_task_id": "task-B"}))
    assert await store.account_trail(attempt.id, "task-A", 0.25, {"seconds": 5}) == "pending"  # the job runs
    done = {"status": "completed", "cost_usd": 0.25, "finished_at": time.time()}
    await store.transition(row, "r2", {"status": "completed"}, attempt=(attempt.id, done), release=True)
    assert await store.account_trail(attempt.id, "task-A", 0.25, {"seconds": 5}) == "counted"
    assert await store.account_trail(attempt.id, "task-A", 0.25, {"seconds": 5}) == "followed"  # once
    _, attempts = await store.get_with_attempts(j.id)
    assert [(a.seq, a.status, a.provider_task_id, a.cost_usd) for a in attempts] == [
        (0, "completed", "task-B", 0.25),
        (1, "cancelled", "task-A", 0.25),
    ]
    assert attempts[1].error is not None and attempts[1].error["code"] == "duplicate_task"
    assert sum(a.cost_usd or 0 for a in attempts) == 0.5


async def test_a_trailed_task_goes_on_the_attempt_that_ended_without_one(store: JobStore) -> None:
    """The usual trail: an `unconfirmed` attempt with no task takes the task it trailed, once."""
    j, row, attempt = await _submitting_job(store, "r")
    assert await store.account_trail(attempt.id, "task-A", 0.5, {}) == "pending"  # still submitting
    await store.transition(row, "r", attempt=(attempt.id, {"status": "unconfirmed"}))
    assert await store.account_trail(attempt.id, "task-A", 0.5, {}) == "counted"
    assert await store.account_trail(attempt.id, "task-A", 0.5, {}) == "followed"
    _, attempts = await store.get_with_attempts(j.id)
    assert [(a.status, a.provider_task_id, a.cost_usd) for a in attempts] == [("unconfirmed", "task-A", 0.5)]


async def test_a_trail_of_an_attempts_own_task_is_counted_on_it(store: JobStore) -> None:
    """An attempt that let go of its own task (deadline, lease) trails it: the task it holds is
    counted on it once it ends (a check for "some attempt holds it" must not mistake the
    attempt itself for another holder)."""
    j, row, attempt = await _submitting_job(store, "r")
    await store.transition(row, "r", attempt=(attempt.id, {"status": "cancelled", "provider_task_id": "task-A"}))
    assert await store.account_trail(attempt.id, "task-A", 0.4, {}) == "counted"
    assert await store.account_trail(attempt.id, "task-A", 0.4, {}) == "followed"
    _, attempts = await store.get_with_attempts(j.id)
    assert [(a.status, a.provider_task_id, a.cost_usd) for a in attempts] == [("cancelled", "task-A", 0.4)]


async def test_held_tasks_are_those_of_attempts_and_of_pending_trails_of_that_adapter(store: JobStore) -> None:
    """What a search or a callback may not take: a task an attempt holds, or one a pending trail
    follows on the same adapter (matched inside the database's JSON, not by reading every trail)."""
    j, row, attempt = await _submitting_job(store, "r")
    assert await store.claim_task(claim_row(j.id, attempt, "task-A", "callback"))
    assert not await store.claim_task(claim_row(j.id, attempt, "task-A", "callback"))  # once
    other = submitting(j.id)
    other.seq, other.provider_task_id, other.status = 1, "task-C", "in_progress"
    await store.transition(row, "r", attempt=(attempt.id, {"status": "unconfirmed"}), new_attempt=other)
    assert await store.held_tasks("toy", ["task-A", "task-B", "task-C"]) == {"task-A", "task-C"}
    assert await store.held_tasks("wan", ["task-A", "task-C"]) == set()  # another adapter's ids
    assert await store.held_tasks("toy", []) == set()


async def test_inline_writes_keep_the_wal_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline connections never checkpoint; the store runs a RESTART checkpoint on a worker
    thread every `CHECKPOINT_EVERY` commits, so the WAL starts over instead of growing (without
    it: ~8 KB a transition here, for ever; a passive checkpoint racing the writes did not help)."""
    from gateway.jobs import store as store_module

    async def wal_after(every: int, writes: int) -> int:
        monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", every)
        db = tmp_path / f"every-{every}.sqlite"
        store = await _sqlite_store(db)
        try:
            j, _ = await store.create(job())
            (row,) = [await store.get(i) for i in await store.claim("a", 1, lease_s=3600)]
            assert row is not None
            attempt = submitting(j.id)
            await store.transition(row, "a", {"status": "in_progress"}, new_attempt=attempt)
            for i in range(writes):
                await store.transition(row, "a", attempt=(attempt.id, {"status": ("queued", "in_progress")[i % 2]}))
                await store.get_with_attempts(j.id)
                if i % 10 == 0:
                    await asyncio.sleep(0)  # a loop that serves other work between writes
            await asyncio.sleep(0.2)
            return await asyncio.to_thread(os.path.getsize, f"{db}-wal")
        finally:
            store.close()
            await store.engine.dispose()

    bounded = await wal_after(100, 1500)
    unbounded = await wal_after(10**9, 1500)
    assert bounded < 2_000_000 < unbounded, (bounded, unbounded)


def test_a_checkpoint_keeps_trying_while_a_writer_holds_the_file_and_then_resets_the_wal(tmp_path: Path) -> None:
    """`_checkpoint_file` tries again (every millisecond, within its bound) while another
    connection writes, instead of leaving the WAL to grow until the next one; it says whether
    the WAL was reset."""
    import sqlite3
    import threading

    from gateway.jobs.store import _checkpoint_file

    db = str(tmp_path / "ck.sqlite")
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x BLOB)")
    for _ in range(50):
        writer.execute("INSERT INTO t VALUES (randomblob(4000))")

    wal = Path(f"{db}-wal")
    assert wal.stat().st_size > 50 * 4000
    writer.execute("BEGIN IMMEDIATE")  # a write in progress: the checkpoint cannot have the file
    writer.execute("INSERT INTO t VALUES (1)")
    assert _checkpoint_file(db, within_s=0.05) is False
    released = threading.Timer(0.05, lambda: writer.execute("COMMIT"))
    released.start()
    assert _checkpoint_file(db, within_s=5.0) is True
    released.join()
    size = wal.stat().st_size
    for _ in range(40):  # the WAL started over: these are written from its start, not appended
        writer.execute("INSERT INTO t VALUES (randomblob(4000))")
    assert wal.stat().st_size == size
    writer.close()
