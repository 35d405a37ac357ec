"""The jobs and attempts tables, and the database engine they live in.

SQLite (WAL) by default, PostgreSQL when `I2V_DATABASE_URL` names one. The schema is owned
by the Alembic migrations in `gateway/jobs/migrations`; these classes mirror it for queries.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import msgspec
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
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.jobs.ids import new_id


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
    #: Bumped by every runner write and every claim: a write that expected another version lost the job.
    version: Mapped[int] = mapped_column(Integer, default=0)
    #: The adapter the job needs next (its live attempt's, else its next candidate's): only a
    #: runner that has it claims the job.
    adapter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The comparison this job is an arm of (POST /v1/comparisons), if any.
    comparison_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    #: The experiment that chose this job's arm (`route.arm`), if any.
    experiment: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: The catalog's price for the first candidate at the job's shape: what a key's budget reserves.
    estimate_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The input image's blob, and when the job's files go (set at its end: I2V_RETENTION_S).
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)

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
    #: The client asked to cancel while the provider ran this task (it may not be able to stop it).
    cancel_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_attempts_job_seq"),
        # a provider task belongs to one attempt (migration 0004): two adoptions of one task collide
        Index("uq_attempts_adapter_task", "adapter", "provider_task_id", unique=True),
    )


class OutboxRow(Base):
    """Something that must leave the gateway because of a state change (a webhook, a provider
    cancel, an orphaned task to account for): written in the same transaction as the change,
    delivered by whichever process claims it, retried with backoff."""

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    next_at: Mapped[float] = mapped_column(Float)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_outbox_status_next", "status", "next_at"),)


class ComparisonRow(Base):
    """One input run on several models side by side; each arm is an ordinary job."""

    __tablename__ = "comparisons"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    prompt: Mapped[str] = mapped_column(Text)
    #: The requested arms in order: [{"model": "...", "job_id": "vid_..."}].
    arms: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_comparisons_owner_created", "owner", "created_at"),
        UniqueConstraint("owner", "idempotency_key", name="uq_comparisons_owner_idempotency_key"),
    )


class VoteRow(Base):
    """A human preference on one comparison: the arm judged best, a tie, or all bad. One per
    voter (the key, plus the optional `voter` name the client sends); voting again replaces it."""

    __tablename__ = "votes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    comparison_id: Mapped[str] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    voter: Mapped[str] = mapped_column(String(128), default="")
    #: "A".."F" (the arm in request order), "tie" or "both_bad".
    choice: Mapped[str] = mapped_column(String(16))
    #: The arms' models when the vote was cast, in request order (what the ranking fits).
    models: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("comparison_id", "owner", "voter", name="uq_votes_comparison_voter"),)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 is stored (the secret is shown once, at create or rotate).
    Its id owns the key's jobs, so rotating the secret keeps them."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    period: Mapped[str] = mapped_column(String(8), default="month")
    created_at: Mapped[float] = mapped_column(Float)
    rotated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Written by every guarded create: the row lock that serializes a key's creates.
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RateWindowRow(Base):
    """Requests of a key in one minute: one guarded upsert per request, shared by replicas."""

    __tablename__ = "rate_windows"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ShadowBudgetRow(Base):
    """Shadow jobs started per experiment and UTC day, and their catalog-estimated spend: the
    caps hold across replicas because each start is one guarded UPDATE of this row."""

    __tablename__ = "shadow_budget"

    experiment: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer, default=0)
    usd: Mapped[float] = mapped_column(Float, default=0.0)


def outbox_row(job_id: str, kind: str, payload: dict[str, Any], now: float | None = None) -> OutboxRow:
    now = time.time() if now is None else now
    return OutboxRow(
        id=new_id("obx"),
        job_id=job_id,
        kind=kind,
        payload=payload,
        status="pending",
        tries=0,
        created_at=now,
        next_at=now,
        log=[],
    )


def webhook_row(job: JobRow, now: float | None = None) -> OutboxRow:
    """A finished job's webhook; its body is rendered from the job when it is delivered."""
    return outbox_row(job.id, "webhook", {"url": job.webhook_url, "event": f"video.{job.status}"}, now)


def _task(attempt: AttemptRow, task_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt_id": attempt.id,
        "adapter": attempt.adapter,
        "model": attempt.model,
        "provider_model": attempt.provider_model,
        "task_id": task_id,
        "task_data": data,
        "seconds": (attempt.usage or {}).get("seconds"),
        "resolution": (attempt.usage or {}).get("resolution"),
    }


def cancel_row(job_id: str, attempt: AttemptRow, task_id: str, data: dict[str, Any]) -> OutboxRow:
    """Ask the provider to stop a task (the attempt's poll loop sees whether it did)."""
    return outbox_row(job_id, "provider_cancel", _task(attempt, task_id, data))


def trail_row(job_id: str, attempt: AttemptRow, task_id: str, data: dict[str, Any], reason: str) -> OutboxRow:
    """Follow a provider task that no attempt follows any more until it ends, and put what it
    cost on its attempt: every task that ran is counted in its job's cost."""
    return outbox_row(job_id, "trail", {**_task(attempt, task_id, data), "reason": reason})


def claim_row(job_id: str, attempt: AttemptRow, task_id: str, reason: str) -> OutboxRow:
    """A trail whose id is the task's own (one per provider task, ever): `JobStore.claim_task`."""
    row = trail_row(job_id, attempt, task_id, {}, reason)
    row.id = "trl_" + hashlib.sha256(f"{attempt.adapter}:{task_id}".encode()).hexdigest()[:36]
    return row


def _as_json_dumps_did(obj: Any) -> Any:
    """What msgspec does not encode itself and `json.dumps` did: subclasses of str, int and float
    (an np.float64 is a float), and numpy's other scalars (a measurement may hand one over)."""
    for base in (str, int, float):
        if isinstance(obj, base):
            return base(obj)
    if type(obj).__module__ == "numpy" and callable(getattr(obj, "item", None)):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = msgspec.json.Encoder(enc_hook=_as_json_dumps_did).encode
_decode = msgspec.json.Decoder().decode


def json_dumps(value: Any) -> str:
    """The JSON columns' encoder: msgspec, ~4x less CPU than `json.dumps` (SQLAlchemy's default),
    which was 2.7% of the gateway's CPU under load. A NaN or an infinity is written as null (what
    PostgreSQL's json would accept); `json.dumps` wrote `NaN`, which no JSON parser but Python's reads."""
    return _encode(value).decode()


def json_loads(text: str | bytes) -> Any:
    """The JSON columns' decoder; a row written by `json.dumps` with a NaN in it still reads."""
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


#: what every engine of the store is made with (the inline SQLite engine too)
JSON_CODEC: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": json_loads}


def make_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so readers never block the runner."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **JSON_CODEC)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True, **JSON_CODEC)
