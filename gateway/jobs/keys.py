"""API keys as data: created, listed, revoked and rotated by the operator, looked up per request.

Only a key's SHA-256 is stored (keys are 256-bit random tokens, so a plain hash is enough, as
GitHub and Stripe store theirs); the secret is printed once. Every replica reads the same
table, so a key made or revoked on one is seen by all within the lookup cache's life.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.ids import new_id
from gateway.jobs.tables import ApiKeyRow

Period = Literal["day", "month"]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _secret() -> str:
    return "i2v_" + secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create(
        self,
        name: str,
        *,
        admin: bool = False,
        rpm: int | None = None,
        concurrency: int | None = None,
        budget_usd: float | None = None,
        period: Period = "month",
    ) -> tuple[ApiKeyRow, str]:
        """A new key and its secret (shown once)."""
        secret = _secret()
        row = ApiKeyRow(
            id=new_id("key"),
            name=name,
            prefix=secret[:12],
            secret_sha256=digest(secret),
            admin=admin,
            rpm=rpm,
            concurrency=concurrency,
            budget_usd=budget_usd,
            period=period,
            created_at=time.time(),
        )
        async with self.sessions.begin() as s:
            s.add(row)
        return row, secret

    async def list(self) -> list[ApiKeyRow]:
        async with self.sessions() as s:
            return list(await s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)))

    async def revoke(self, key_id: str) -> bool:
        async with self.sessions.begin() as s:
            q = update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            return bool((await s.execute(q.values(revoked_at=time.time()))).rowcount)  # type: ignore[attr-defined]

    async def rotate(self, key_id: str) -> str | None:
        """A new secret for the key (the old one stops working); its jobs stay its own."""
        secret = _secret()
        async with self.sessions.begin() as s:
            q = update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            values = {"secret_sha256": digest(secret), "prefix": secret[:12], "rotated_at": time.time()}
            done = (await s.execute(q.values(**values))).rowcount  # type: ignore[attr-defined]
        return secret if done else None

    async def lookup(self, secret: str) -> ApiKeyRow | None:
        """The live key with this secret, if any."""
        async with self.sessions() as s:
            q = select(ApiKeyRow).where(ApiKeyRow.secret_sha256 == digest(secret), ApiKeyRow.revoked_at.is_(None))
            return await s.scalar(q)

    async def any_made(self) -> bool:
        """Whether a key was ever made (revoked ones count: revoking the last key must not open
        the gateway to everyone)."""
        async with self.sessions() as s:
            return bool(await s.scalar(select(func.count()).select_from(ApiKeyRow)))


class CachedKeys:
    """Lookups with a short memory, so a request costs no key query while its key is warm:
    a revoked or rotated key stops working within `ttl_s` on every replica."""

    def __init__(self, store: KeyStore, ttl_s: float) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._keys: dict[str, tuple[float, ApiKeyRow | None]] = {}
        self._any: tuple[float, bool] = (0.0, False)

    async def any_made(self) -> bool:
        at, value = self._any
        if value:  # once true, true for good
            return True
        if time.monotonic() - at > self.ttl_s:
            value = await self.store.any_made()
            self._any = (time.monotonic(), value)
        return value

    async def lookup(self, secret: str) -> ApiKeyRow | None:
        h = digest(secret)
        hit = self._keys.get(h)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl_s:
            return hit[1]
        row = await self.store.lookup(secret)
        if len(self._keys) > 10_000:  # bounded: forget everything rather than grow
            self._keys.clear()
        self._keys[h] = (time.monotonic(), row)
        return row
