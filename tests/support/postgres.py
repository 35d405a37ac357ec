"""A throwaway PostgreSQL database per test, on the server named by I2V_TEST_POSTGRES_URL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN = os.environ.get("I2V_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncio.wait_for(asyncpg.connect(PG_ADMIN), 3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def temporary_database() -> Iterator[str]:
    """Yields a SQLAlchemy asyncpg URL of a fresh database; skips the test without a server."""
    name = f"i2v_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN} ({exc!r}); set I2V_TEST_POSTGRES_URL to test against one")
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
