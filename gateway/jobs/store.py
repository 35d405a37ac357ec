"""The job store: every read and write of job, attempt and outbox rows, one short transaction each.

A runner changes a job only through `transition`: one transaction that compares-and-sets the
job's lease owner, lease expiry (in database time) and version, then writes the attempt and the
outbox rows that must go out with the change. A write that finds the lease gone raises
`LeaseLost` and changes nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    and_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import Table

from gateway.jobs.ids import new_id
from gateway.jobs.tables import JSON_CODEC, AttemptRow, ComparisonRow, JobRow, OutboxRow, webhook_row
from gateway.status import ACTIVE_JOB, TERMINAL_JOB, AttemptStatus, JobStatus

POKE_CHANNEL = "i2v_poke"
#: A check that runs inside a create's transaction (a key's limits) and refuses by raising.
Guard = Callable[[Connection], None]
T = TypeVar("T")
#: The tables under the ORM classes: the runner's writes go through Core on a plain connection.
JOBS: Table = JobRow.__table__  # type: ignore[assignment]
ATTEMPTS: Table = AttemptRow.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]


class Loader:
    """A mapped class's columns, and its objects built from their values without a session:
    a read through the ORM session cost ~2x the same statement on a connection (session,
    identity map, ORM compile state), and no reader here needs a session's object (every
    change is a Core statement)."""

    def __init__(self, cls: Any) -> None:
        attrs = list(cls.__mapper__.column_attrs)
        self.keys = [a.key for a in attrs]
        self.columns = [a.columns[0] for a in attrs]
        self._new = cls.__mapper__.class_manager.new_instance

    def build(self, values: Sequence[Any]) -> Any:
        obj = self._new()
        obj.__dict__.update(zip(self.keys, values, strict=True))  # as the ORM's own loading sets them
        return obj


JOB_LOADER, ATTEMPT_LOADER = Loader(JobRow), Loader(AttemptRow)
#: A status read's one statement, built once: building a select (column comparisons, joins,
#: its cache key) on every call cost about a fifth of a read through the async engine.
WITH_ATTEMPTS = (
    select(*JOB_LOADER.columns, *ATTEMPT_LOADER.columns)
    .select_from(JOBS.outerjoin(ATTEMPTS, ATTEMPTS.c.job_id == JOBS.c.id))
    .where(JOBS.c.id == bindparam("job_id"))
    .order_by(ATTEMPTS.c.seq)
)
INSERT_ATTEMPT, INSERT_OUTBOX = ATTEMPTS.insert(), OUTBOX.insert()
COUNT_QUEUED = select(func.count()).select_from(JOBS).where(JOBS.c.status == JobStatus.QUEUED)
GET_JOB = select(*JOB_LOADER.columns).where(JOBS.c.id == bindparam("job_id"))
#: `annotate`: compare-and-set of a finished job's metrics, built once (each job runs it)
ANNOTATE = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("k_id"), JOBS.c.version == bindparam("k_version"), JOBS.c.status.in_(TERMINAL_JOB))
    .values(metrics=bindparam("v_metrics", type_=JOBS.c.metrics.type), version=JOBS.c.version + 1)
)


def _inline_engine(engine: AsyncEngine) -> Engine | None:
    """For a SQLite file, a plain (sync) engine whose statements run on the calling thread. Why:
    through aiosqlite and SQLAlchemy's async layer one status read cost ~1.4 ms of CPU (six thread
    hops, greenlet switches), the same read inline ~0.25 ms (bench/status_read.py) -- less than
    the hops alone. `timeout=0`: a file another connection is writing (or checkpointing) fails at
    once instead of holding the event loop; a read then goes through the async engine, a write
    waits beside the loop and tries again (`JobStore.query`, `JobStore.write`). Its connections
    never checkpoint the WAL (an fsync): the store does, on a worker thread (`_checkpoint`)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or "memory" in str(url.query):
        return None
    inline = create_engine(url.set(drivername="sqlite+pysqlite"), connect_args={"timeout": 0}, **JSON_CODEC)

    @event.listens_for(inline, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")  # as the async engine's (WAL: no fsync per commit)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    return inline


#: How long an inline write waits for a busy SQLite file (a checkpoint, another process) before
#: it raises; the async engine's connections wait as long (`make_engine`'s timeout).
BUSY_WAIT_S = 30.0


def _busy(exc: OperationalError | sqlite3.OperationalError) -> bool:
    """SQLite's "database is locked" / "database is busy": someone else holds the lock (the
    driver's error, or SQLAlchemy's around it)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "locked" in text or "busy" in text


#: Inline commits between two WAL checkpoints. The inline connections never checkpoint (an
#: fsync on the event loop): the store runs one on a worker thread (`JobStore._checkpoint`).
CHECKPOINT_EVERY = 500


def _checkpoint_file(path: str, within_s: float = 1.0) -> bool:
    """One RESTART checkpoint, tried every millisecond while another connection holds the file,
    for at most `within_s`; True when the WAL was copied and starts over. Not SQLite's busy
    handler: it sleeps 1, 2, 5, 10, 15, 20, 25 ms ... between tries, and the loop's inline
    writes (~0.1 ms each) kept filling those gaps: a checkpoint that lost its first race ran
    ~25 ms later and the WAL grew past three times its bound (1 run in ~30 of
    `test_inline_writes_keep_the_wal_small`)."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        deadline = time.monotonic() + within_s
        while True:
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                busy = 1
            if not busy:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
    finally:
        conn.close()


def insert_values(row: Any) -> dict[str, Any]:
    """A new ORM row's column values for a Core insert. Unset attributes take their column's
    default, set on the row too, as a flush would leave it (`row.usage` is `{}`, not None)."""
    values: dict[str, Any] = {}
    for attr in row.__mapper__.column_attrs:
        column = attr.columns[0]
        if attr.key in row.__dict__:
            value = row.__dict__[attr.key]
        elif column.default is not None and column.default.is_scalar:
            value = column.default.arg
        elif column.default is not None and column.default.is_callable:
            value = column.default.arg(None)
        else:
            value = None
        setattr(row, attr.key, value)
        values[column.key] = value
    return values


def _columns(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """ORM attribute names to column names (`JobRow.metadata_` is the column `metadata`)."""
    return {table.__mapper__.attrs[k].columns[0].key: v for k, v in values.items()}


class LeaseLost(Exception):
    """Another runner owns this job now (or this runner's lease expired): stop touching it."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key came back with another body; `existing` is what the key made first."""

    def __init__(self, existing: JobRow | ComparisonRow) -> None:
        self.existing = existing


class JobStore:
    """Every read and write of job state goes through here; one short transaction each."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.postgres = engine.dialect.name == "postgresql"
        self.inline_engine = _inline_engine(engine)
        self.inline = None if self.inline_engine is None else sessionmaker(self.inline_engine, expire_on_commit=False)
        self._commits = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._statements: dict[tuple[Any, ...], Any] = {}  # `_statement`'s, by shape

    @property
    def sync_engines(self) -> list[Engine]:
        """Every engine statements go through (what event listeners must hook): the async
        engine's sync core, and the inline reader on a SQLite file."""
        return [self.engine.sync_engine] + ([self.inline_engine] if self.inline_engine is not None else [])

    def close(self) -> None:
        """Close the inline connections (the async engine is disposed by its owner)."""
        if self._checkpointing is not None:
            self._checkpointing.cancel()
        if self.inline_engine is not None:
            self.inline_engine.dispose()

    def now(self) -> ColumnElement[float]:
        """The database's clock, in epoch seconds: every lease is set and checked against it, so
        replicas with skewed clocks agree on who holds a job."""
        if self.postgres:
            return cast(func.extract("epoch", func.clock_timestamp()), Float)
        return (func.julianday("now") - literal(2440587.5)) * literal(86400.0)

    def _held(self, job_id: Any, runner_id: Any) -> ColumnElement[bool]:
        """The job is `runner_id`'s and its lease is live in database time (values or bound parameters)."""
        return and_(JOBS.c.id == job_id, JOBS.c.lease_owner == runner_id, JOBS.c.lease_until > self.now())

    async def create(self, job: JobRow, guard: Guard | None = None) -> tuple[JobRow, bool]:
        """Insert `job`; with an idempotency key already used, return the earlier job instead.
        `guard` runs first in the same transaction (a key's limits) and may refuse by raising.

        Returns (job, created). Raises IdempotencyConflict when the key came with another body.
        """
        if job.idempotency_key:
            existing = await self.by_idempotency_key(job.owner, job.idempotency_key)
            if existing is not None:
                return self._replay(existing, job)

        values = insert_values(job)

        def work(c: Connection) -> None:
            if guard is not None:
                guard(c)
            c.execute(JOBS.insert(), values)

        try:
            await self.execute(work)
        except IntegrityError:
            # Lost a race with the same key: the winner's row is the answer.
            existing = await self.by_idempotency_key(job.owner, job.idempotency_key or "")
            if existing is None:
                raise
            return self._replay(existing, job)
        return job, True

    @staticmethod
    def _replay(existing: JobRow, job: JobRow) -> tuple[JobRow, bool]:
        if existing.request_hash != job.request_hash:
            raise IdempotencyConflict(existing)
        return existing, False

    async def by_idempotency_key(self, owner: str, key: str) -> JobRow | None:
        async with self.sessions() as s:
            return await s.scalar(select(JobRow).where(JobRow.owner == owner, JobRow.idempotency_key == key))

    async def query(self, query: Callable[[Connection], T]) -> T:
        """Run a read-only `query` on a plain connection (Core statements; see `Loader`): inline
        on a SQLite file (`_inline_engine`), else (or when the file is busy) through the async
        engine."""
        if self.inline_engine is not None:
            try:
                with self.inline_engine.connect() as c:
                    return query(c)
            except OperationalError:  # busy (rare under WAL): the async path waits its turn
                pass
        async with self.engine.connect() as conn:
            return await conn.run_sync(query)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` as one transaction: inline on a SQLite file, else through the async engine.
        `work` must touch nothing but its session: a busy try is rolled back and runs again.

        A busy file (the checkpoint below, another process) is waited for on the loop, not on a
        pooled async connection: the write is tried again after a short sleep, for up to
        `BUSY_WAIT_S`, and only a timeout raises (`OperationalError`, which the runner retries).
        Falling back to the async engine instead collapsed under 10,000 jobs: an aiosqlite
        transaction holds the write lock across event-loop turns, so one checkpoint sent every
        inline write after it to the async engine, where they queued on the lock until the pool
        of 15 connections timed out (bench/emulator_load.py, docs/benchmarks.md)."""
        return await self._transact(work, orm=True)

    async def execute(self, work: Callable[[Connection], T]) -> T:
        """`write` on a plain connection, for Core statements: no ORM session, flush or unit of
        work. Why: a runner transition through the ORM session cost ~0.55 ms of CPU, through Core
        ~0.3 ms, with its statements built once per shape ~0.12 ms (bench/store_cpu.py); a job
        makes four to six."""
        return await self._transact(work, orm=False)

    async def _transact(self, work: Callable[[Any], T], *, orm: bool) -> T:
        if self.inline is not None and self.inline_engine is not None:
            delay, deadline = 0.002, time.monotonic() + BUSY_WAIT_S
            while True:
                try:
                    with self.inline.begin() if orm else self.inline_engine.begin() as s:
                        out = work(s)
                except OperationalError as exc:
                    if not _busy(exc):
                        break  # not a lock: the async engine raises it properly
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                self._commits += 1
                if self._commits >= CHECKPOINT_EVERY and self._checkpointing is None:
                    self._commits = 0
                    self._checkpointing = asyncio.ensure_future(self._checkpoint())
                return out
        if orm:
            async with self.sessions.begin() as s:
                return await s.run_sync(work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database file on a worker thread, so that the WAL stays small
        under inline writes. RESTART, not PASSIVE: a passive checkpoint racing the loop's writes
        never finds the whole WAL copied, so the WAL never starts over and grows without end
        (41 MB after 5,000 transitions). RESTART holds writers off while it runs: inline writes
        then wait for it on the loop (`write`)."""
        try:
            await asyncio.to_thread(_checkpoint_file, str(self.engine.url.database))
        except Exception:  # a busy or closing database: the next one catches up
            pass
        finally:
            self._checkpointing = None

    async def ping(self) -> None:
        """Raise unless the database answers on the path every write takes (the async engine)."""
        async with self.sessions() as s:
            await s.execute(select(literal(1)))

    async def get(self, job_id: str) -> JobRow | None:
        """Status reads, a nudged job's cancel check and downloads run it."""
        row = await self.query(lambda c: c.execute(GET_JOB, {"job_id": job_id}).first())
        return None if row is None else JOB_LOADER.build(row)  # type: ignore[no-any-return]

    async def cancels_asked(self, runner_id: str) -> set[str]:
        """The live jobs this runner holds whose cancel was asked, in any process: one statement
        per sweep for all of them (a read per job per interval cost 10,000 jobs 10,000 reads)."""
        jobs = JOBS.c
        stmt = select(jobs.id).where(
            jobs.status.in_(ACTIVE_JOB), jobs.lease_owner == runner_id, jobs.cancel_requested.is_(True)
        )
        return await self.query(lambda c: set(c.execute(stmt).scalars()))

    async def get_with_attempts(self, job_id: str) -> tuple[JobRow | None, list[AttemptRow]]:
        """One statement (a left join): every status poll runs it."""
        rows = await self.query(lambda c: c.execute(WITH_ATTEMPTS, {"job_id": job_id}).all())
        if not rows:
            return None, []
        n = len(JOB_LOADER.keys)
        return JOB_LOADER.build(rows[0][:n]), [ATTEMPT_LOADER.build(r[n:]) for r in rows if r[n] is not None]

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
        return int(await self.query(lambda c: c.execute(COUNT_QUEUED).scalar_one()))

    async def list(
        self,
        owner: str | None,
        *,
        status: str | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> tuple[list[JobRow], bool]:
        """A page of jobs (an owner's; `None`: everyone's, for admin keys); ids sort by creation
        time, so `after` is a plain id cursor."""
        q = select(JobRow) if owner is None else select(JobRow).where(JobRow.owner == owner)
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
        """Update a job; with `held_by`, only while that runner's lease is live."""
        q = update(JobRow).where(self._held(job_id, held_by) if held_by is not None else JobRow.id == job_id)
        return await self.write(lambda s: bool(s.execute(q.values(**values)).rowcount))  # type: ignore[attr-defined]

    async def request_cancel(self, job_id: str, now: float) -> tuple[JobRow | None, bool]:
        """Flag a job for cancel, only while it is not finished (compare-and-set on its status).

        A queued job that never reached a provider ends at once, with its webhook in the outbox,
        in the same transaction. Returns (the job as it is now, whether this call ended it)."""
        return await self.write(lambda s: self._request_cancel(s, job_id, now))

    @staticmethod
    def _request_cancel(s: Session, job_id: str, now: float) -> tuple[JobRow | None, bool]:
        job = s.get(JobRow, job_id, with_for_update=True)
        if job is None or job.status in TERMINAL_JOB:
            return job, False
        has_attempts = s.scalar(select(AttemptRow.id).where(AttemptRow.job_id == job_id).limit(1))
        job.cancel_requested = True
        if job.status == JobStatus.QUEUED and not has_attempts:
            # A runner may hold the lease, about to submit: the version bump fences it off,
            # so its submitting attempt is never written.
            job.status = JobStatus.CANCELLED
            job.completed_at = now
            job.error = {"code": "cancelled", "message": "Cancelled before it reached a provider."}
            job.lease_owner, job.lease_until = None, None
            job.version += 1
            if job.webhook_url:
                s.add(webhook_row(job, now))
            return job, True
        return job, False

    async def delete(self, job_id: str) -> None:
        def work(s: Session) -> None:
            job = s.get(JobRow, job_id)
            if job is not None:
                s.delete(job)

        await self.write(work)

    async def other_jobs_use_blob(self, sha256: str, job_id: str) -> bool:
        async with self.sessions() as s:
            other = await s.scalar(
                select(JobRow.id).where(JobRow.output_sha256 == sha256, JobRow.id != job_id).limit(1)
            )
            return other is not None

    # --- runner side -------------------------------------------------------------------

    async def claim(
        self,
        runner_id: str,
        limit: int,
        lease_s: float,
        adapters: Collection[str] | None = None,
        exclude: Collection[str] = (),
    ) -> list[str]:
        """Take up to `limit` active jobs whose lease is free or expired, in one statement.

        PostgreSQL skips rows another replica is claiming (`FOR UPDATE SKIP LOCKED`); SQLite has
        one writer at a time. With `adapters`, only jobs that need one of them next are taken.
        Each claim bumps the version, so a runner that held the job before is fenced off."""
        shape = ("claim", adapters is not None, bool(exclude))
        stmt = self._statements.get(shape)
        if stmt is None:  # built once per shape, every value bound (see `_statement`)
            now, jobs = self.now(), JOBS.c
            free = or_(jobs.lease_until.is_(None), jobs.lease_until < now)
            ready = select(jobs.id).where(jobs.status.in_(ACTIVE_JOB), free)
            if adapters is not None:
                ready = ready.where(
                    or_(jobs.adapter.is_(None), jobs.adapter.in_(bindparam("k_adapters", expanding=True)))
                )
            if exclude:  # jobs this runner is driving: a late renewal must not turn into a re-claim
                ready = ready.where(jobs.id.not_in(bindparam("k_exclude", expanding=True)))
            ready = ready.order_by(jobs.created_at).limit(bindparam("k_limit", type_=Integer))
            if self.postgres:
                ready = ready.with_for_update(skip_locked=True)
            stmt = self._statements[shape] = (
                update(JOBS)
                .where(jobs.id.in_(ready.scalar_subquery()))
                .values(lease_owner=bindparam("k_owner"), lease_until=now + bindparam("k_lease_s", type_=Float))
                .values(version=jobs.version + 1)
                .returning(jobs.id)
            )
        params: dict[str, Any] = {"k_owner": runner_id, "k_lease_s": lease_s, "k_limit": limit}
        if adapters is not None:
            params["k_adapters"] = list(adapters)
        if exclude:
            params["k_exclude"] = list(exclude)
        return await self.execute(lambda c: list(c.execute(stmt, params).scalars()))

    async def renew(self, runner_id: str, job_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend this runner's leases; returns the ids it no longer holds (another runner claimed
        them). A lease that ran out but that nobody took is simply extended: the version the
        driver holds still fences off any runner that took the job in between."""
        if not job_ids:
            return set()
        now = self.now()
        stmt = (
            update(JobRow)
            .where(JobRow.id.in_(list(job_ids)), JobRow.lease_owner == runner_id)
            .values(lease_until=now + lease_s)
            .returning(JobRow.id)
            .execution_options(synchronize_session=False)
        )

        def work(s: Session) -> set[str]:
            kept = set(s.execute(stmt).scalars())
            rest = set(job_ids) - kept
            if not rest:
                return set()
            # Jobs this runner just finished or handed back hold no lease either: not lost.
            taken = select(JobRow.id).where(JobRow.id.in_(list(rest)), JobRow.lease_owner.is_not(None))
            return set(s.execute(taken).scalars())

        return await self.write(work)

    async def release(self, runner_id: str, job_ids: Sequence[str] | None = None) -> None:
        """Free this runner's leases (all, or `job_ids`) so another runner resumes them at once."""
        q = update(JobRow).where(JobRow.lease_owner == runner_id)
        if job_ids is not None:
            q = q.where(JobRow.id.in_(list(job_ids)))
        await self.write(lambda s: s.execute(q.values(lease_owner=None, lease_until=None, version=JobRow.version + 1)))

    async def transition(
        self,
        job: JobRow,
        runner_id: str,
        job_values: dict[str, Any] | None = None,
        *,
        new_attempt: AttemptRow | None = None,
        attempt: tuple[str, dict[str, Any]] | None = None,
        outbox: Sequence[OutboxRow] = (),
        release: bool = False,
    ) -> None:
        """The one way a runner changes a job: compare-and-set on (id, lease owner, version), then
        the attempt insert or update and the outbox rows, all in one transaction.

        Raises `LeaseLost` (and writes nothing) when another runner claimed the job since. A new
        attempt (the step before a provider is paid) also needs the lease to be live in database
        time: a runner that was frozen past its lease does not start a submit. On success
        `job.version` is the new version."""
        values = _columns(JobRow, job_values or {})
        values["version"] = job.version + 1
        if release:
            values.update(lease_owner=None, lease_until=None)
        guard = self._statement("job", tuple(values), live=new_attempt is not None)
        params = {"k_id": job.id, "k_owner": runner_id, "k_version": job.version}
        params.update({f"v_{k}": v for k, v in values.items()})
        writes: list[tuple[Any, Any]] = []
        if new_attempt is not None:
            writes.append((INSERT_ATTEMPT, insert_values(new_attempt)))
        if attempt is not None:
            attempt_id, changes = attempt
            stmt = self._statement("attempt", tuple(changes))
            writes.append((stmt, {"k_id": attempt_id, **{f"v_{k}": v for k, v in changes.items()}}))
        if outbox:
            writes.append((INSERT_OUTBOX, [insert_values(row) for row in outbox]))

        def work(c: Connection) -> None:
            if not c.execute(guard, params).rowcount:
                raise LeaseLost(job.id)
            for stmt, rows in writes:
                c.execute(stmt, rows)

        await self.execute(work)
        job.version += 1

    def _statement(self, table: str, keys: tuple[str, ...], *, live: bool = False) -> Any:
        """A transition's update of a job or an attempt, built once per shape (which columns it
        sets; for a job, whether the lease must be live in database time) with every value a
        bound parameter: building the statement and its cache key on each call cost twice what
        running it does (bench/store_cpu.py)."""
        shape = (table, keys, live)
        stmt = self._statements.get(shape)
        if stmt is None:
            t, key = (JOBS if table == "job" else ATTEMPTS), bindparam("k_id")
            if t is ATTEMPTS:
                where = [ATTEMPTS.c.id == key]
            else:
                owner = bindparam("k_owner")
                held = self._held(key, owner) if live else and_(JOBS.c.id == key, JOBS.c.lease_owner == owner)
                where = [held, JOBS.c.version == bindparam("k_version")]
            sets = {k: bindparam(f"v_{k}", type_=t.c[k].type) for k in keys}
            stmt = self._statements[shape] = update(t).where(*where).values(sets)
        return stmt

    async def annotate(self, job: JobRow, metrics: dict[str, Any]) -> bool:
        """Replace a finished job's `metrics` (what is measured after the result is out, such as
        `metrics.quality`): compare-and-set on (id, version, a terminal status). A finished job
        has no lease; the version check keeps a later writer's change (retention, a delete).
        Returns whether it was written; on success `job.version` is the new version."""
        values = {"k_id": job.id, "k_version": job.version, "v_metrics": metrics}
        written = await self.execute(lambda c: bool(c.execute(ANNOTATE, values).rowcount))
        if written:
            job.version += 1
            job.metrics = metrics
        return written

    # --- provider callbacks across processes ---------------------------------------------

    async def notify_poke(self, attempt_id: str) -> None:
        """Tell the runner that follows `attempt_id` (in any process) to look now. PostgreSQL
        only; on SQLite there is one process, and the poll loop catches up on its own."""
        if self.postgres:
            async with self.sessions.begin() as s:
                await s.execute(select(func.pg_notify(POKE_CHANNEL, attempt_id)))

    async def listen_pokes(self, nudge: Callable[[str], Any]) -> None:
        """Hold one connection LISTENing for pokes and hand each to `nudge`, for ever."""
        while True:
            try:
                async with self.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    assert driver is not None
                    await driver.add_listener(POKE_CHANNEL, lambda *args: nudge(args[-1]))
                    while True:
                        await asyncio.sleep(30)
                        await conn.exec_driver_sql("SELECT 1")  # notice a dead connection
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)

    # --- outbox ------------------------------------------------------------------------

    async def add_outbox(self, rows: Sequence[OutboxRow]) -> None:
        """Outbox rows that belong to no state change of ours (an orphaned task found late)."""
        await self.write(lambda s: s.add_all(rows))

    async def claim_outbox(self, owner: str, limit: int, lease_s: float) -> list[OutboxRow]:
        """Pending outbox rows that are due, leased to `owner` (one deliverer at a time)."""
        now = self.now()
        due = (
            select(OutboxRow.id)
            .where(
                OutboxRow.status == "pending",
                OutboxRow.next_at <= now,
                or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
            )
            .order_by(OutboxRow.next_at)
            .limit(limit)
        )
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(OutboxRow)
            .where(OutboxRow.id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_until=now + lease_s)
            .returning(OutboxRow)
            .execution_options(synchronize_session=False)
        )
        return await self.write(lambda s: list(s.execute(stmt).scalars()))

    async def settle_outbox(self, row: OutboxRow, owner: str, **values: Any) -> bool:
        """Record a delivery try (status, tries, next_at, log...) while `owner` holds the row."""
        stmt = (
            update(OutboxRow)
            .where(OutboxRow.id == row.id, OutboxRow.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, **values)
        )
        return await self.write(lambda s: bool(s.execute(stmt).rowcount))  # type: ignore[attr-defined]

    async def attempt(self, attempt_id: str) -> AttemptRow | None:
        async with self.sessions() as s:
            return await s.get(AttemptRow, attempt_id)

    async def held_tasks(self, adapter: str, task_ids: Sequence[str]) -> set[str]:
        """Which of these provider tasks an attempt or a pending trail already holds."""
        if not task_ids:
            return set()
        async with self.sessions() as s:
            held = set(
                await s.scalars(
                    select(AttemptRow.provider_task_id).where(
                        AttemptRow.adapter == adapter, AttemptRow.provider_task_id.in_(list(task_ids))
                    )
                )
            )
            # a trail that ended put its task on its attempt: the pending ones are enough. Matched
            # in SQL (JSON_EXTRACT on SQLite, ->> on PostgreSQL): only the held ids come back, not
            # every pending trail's payload
            trailed = OutboxRow.payload["task_id"].as_string()
            held |= set(
                await s.scalars(
                    select(trailed).where(
                        OutboxRow.kind == "trail",
                        OutboxRow.done_at.is_(None),
                        OutboxRow.payload["adapter"].as_string() == adapter,
                        trailed.in_(list(task_ids)),
                    )
                )
            )
        return {t for t in held if t is not None}

    async def later_submits(self, adapter: str, attempt_id: str, prompt: str, after: float) -> int:
        """Other attempts on this adapter still waiting for their submit's answer (`submitting`,
        the answer not lost: no `lost_at`), opened after `after`, for a job with this prompt: a
        task made for one of them looks like this attempt's to a search by prompt until that
        attempt records it."""
        waiting = await self._unanswered(adapter, attempt_id, prompt)
        return sum(1 for data in waiting if float(data.get("opened_at") or 0.0) > after and "lost_at" not in data)

    async def searching_submits(self, adapter: str, attempt_id: str, prompt: str) -> list[float]:
        """When the other attempts on this adapter that search for their own lost answer (`lost_at`)
        for a job with this prompt were sent (`opened_at`): one task of this prompt is most likely
        the one whose submit was sent nearest to when it was made."""
        waiting = await self._unanswered(adapter, attempt_id, prompt)
        return [float(d["opened_at"]) for d in waiting if "lost_at" in d and d.get("opened_at")]

    async def _unanswered(self, adapter: str, attempt_id: str, prompt: str) -> list[dict[str, Any]]:
        """`task_data` of the other attempts on this adapter, for a job with this prompt, whose
        submit has no recorded task yet."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(AttemptRow.task_data)
                .join(JobRow, JobRow.id == AttemptRow.job_id)
                .where(
                    AttemptRow.adapter == adapter,
                    AttemptRow.status == AttemptStatus.SUBMITTING,
                    AttemptRow.provider_task_id.is_(None),
                    AttemptRow.id != attempt_id,
                    JobRow.prompt == prompt,
                )
            )
            return [data or {} for (data,) in rows]

    async def trailed_task(self, job_id: str, attempt_id: str) -> str | None:
        """The task a pending trail follows for this attempt (a callback named it), if any."""
        async with self.sessions() as s:
            trails = await s.scalars(
                select(OutboxRow.payload).where(
                    OutboxRow.job_id == job_id, OutboxRow.kind == "trail", OutboxRow.done_at.is_(None)
                )
            )
            return next((t["task_id"] for t in trails if t.get("attempt_id") == attempt_id), None)

    async def claim_task(self, row: OutboxRow) -> bool:
        """Add the trail `row` unless an attempt or a pending trail already holds its task.
        `row.id` is made from the task (`claim_row`): two claims of one task at the same moment
        (two attempts of a burst, or a repeated provider callback) collide on the primary key, and
        only one of them gets it."""
        if await self.held_tasks(row.payload["adapter"], [row.payload["task_id"]]):
            return False
        try:
            await self.write(lambda s: s.add(row))
        except IntegrityError:
            return False
        return True

    async def outbox_for(self, job_id: str) -> list[OutboxRow]:
        async with self.sessions() as s:
            return list(
                await s.scalars(select(OutboxRow).where(OutboxRow.job_id == job_id).order_by(OutboxRow.created_at))
            )

    async def account_trail(self, attempt_id: str, task_id: str, cost_usd: float, usage: dict[str, Any]) -> str:
        """A trailed provider task ended: put its cost on its job, once.

        On its attempt when that attempt ended without a task of its own. When the attempt went on
        with another task (a runner that lost its lease sent its submit late, after the runner that
        took the job over had found nothing and sent again), this task is an extra one of that
        submit: it is added after the job's attempts as a `cancelled` attempt holding it, once the
        job has ended, so that a live job's last attempt stays its live one.

        Returns "counted"; "followed" when an attempt holds the task and counts it itself;
        "pending" while the attempt is still `submitting` (a runner may yet adopt the task) or,
        for an extra task, while its job runs."""
        return await self.write(lambda s: self._account_trail(s, attempt_id, task_id, cost_usd, usage))

    @staticmethod
    def _account_trail(s: Session, attempt_id: str, task_id: str, cost_usd: float, usage: dict[str, Any]) -> str:
        ended = (AttemptStatus.FAILED, AttemptStatus.CANCELLED, AttemptStatus.UNCONFIRMED)
        row = s.get(AttemptRow, attempt_id, with_for_update=True)
        if row is None:
            return "followed"  # the job was deleted with its attempts
        if row.status == AttemptStatus.SUBMITTING:
            return "pending"
        elsewhere = select(AttemptRow.id).where(
            AttemptRow.adapter == row.adapter, AttemptRow.provider_task_id == task_id, AttemptRow.id != row.id
        )
        if s.scalar(elsewhere):
            return "followed"  # another attempt holds this task and counts it: never twice
        if row.provider_task_id in (None, task_id):  # the attempt's own task (or none yet)
            if row.status not in ended or row.cost_usd is not None:
                return "followed"  # it follows the task, or counted it, itself
            row.provider_task_id = task_id
            row.cost_usd = cost_usd
            row.usage = {**(row.usage or {}), **usage, "cost_source": "trail"}
            return "counted"
        job = s.get(JobRow, row.job_id, with_for_update=True)
        if job is None:
            return "followed"
        if job.status not in TERMINAL_JOB:
            return "pending"
        last = s.scalar(select(func.max(AttemptRow.seq)).where(AttemptRow.job_id == row.job_id))
        s.add(
            AttemptRow(
                id=new_id("att"),
                job_id=row.job_id,
                seq=(last or 0) + 1,
                model=row.model,
                adapter=row.adapter,
                provider_model=row.provider_model,
                status=AttemptStatus.CANCELLED,
                provider_task_id=task_id,
                task_data={},
                usage={**usage, "cost_source": "trail", "extra_task_of": row.id},
                cost_usd=cost_usd,
                finished_at=time.time(),
                error={
                    "code": "duplicate_task",
                    "message": "a runner that had lost this job sent its submit late, after the job was "
                    "sent again: the provider made and billed a second task; counted here, its result "
                    "dropped",
                    "provider": row.adapter,
                },
            )
        )
        return "counted"
