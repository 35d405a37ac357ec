"""Who is calling: a Bearer key, from the keys table (or `I2V_API_KEYS`), as the owner of jobs.

Once a key has been made (even if revoked since) every request needs one, loopback included;
with none ever made the gateway is open (and `serve` refuses to listen beyond loopback that way unless told
`--insecure-no-auth`). A key's id owns its jobs, comparisons and votes; admin keys see all.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from gateway.api.services import Services
from gateway.errors import APIError
from gateway.jobs.limits import LimitReached
from gateway.jobs.tables import ApiKeyRow

Svc = NamedDependency[Services]


class Caller(str):
    """The owner id of a request (what its rows are owned by), with the key that made it."""

    key: ApiKeyRow | None = None
    admin: bool = False
    name: str = ""

    @classmethod
    def of(cls, owner: str, key: ApiKeyRow | None = None, *, admin: bool = False, name: str = "") -> Caller:
        caller = cls(owner)
        caller.key, caller.admin, caller.name = key, admin, name
        return caller

    def sees(self, owner: str) -> bool:
        """Whether rows owned by `owner` are this caller's to see."""
        return self.admin or owner == self


Owner = NamedDependency[Caller]


async def resolve_owner(request: Request[Any, Any, Any], services: Svc) -> Caller:
    header = request.headers.get("authorization", "")
    return await authenticate(header[7:].strip() if header[:7].lower() == "bearer " else "", services)


async def authenticate(token: str, services: Services) -> Caller:
    """The caller a key belongs to (anyone, while no key was ever made); 401 otherwise. The
    provider façades call it with the key taken from where each provider's clients put it."""
    env_keys = services.settings.api_keys
    if not env_keys and not await services.keys.any_made():
        return Caller.of("", admin=False, name="open")
    if token:
        for key in env_keys:
            if hmac.compare_digest(token, key.get_secret_value()):
                return Caller.of(hashlib.sha256(token.encode()).hexdigest()[:32], name="env")
        row = await services.keys.lookup(token)
        if row is not None:
            services.metrics.key_requests.labels(row.name).inc()
            try:
                await services.limits.take_request(row)
            except LimitReached as exc:
                raise refusal(services, row.name, exc) from exc
            return Caller.of(row.id, row, admin=row.admin, name=row.name)
    raise APIError(401, "invalid_api_key", "Send a valid API key as 'Authorization: Bearer <key>'.")


def refusal(services: Services, key_name: str, exc: LimitReached) -> APIError:
    """A key's limit as a 429 in the envelope, with Retry-After; counted per key name."""
    services.metrics.key_refusals.labels(key_name, exc.reason).inc()
    return APIError(429, exc.reason, exc.message, headers={"retry-after": str(exc.retry_after_s)})


def owner_dependency() -> dict[str, Provide]:
    """The `owner` dependency every owned route declares (a fresh mapping per route)."""
    return {"owner": Provide(resolve_owner)}
