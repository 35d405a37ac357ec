"""Who is calling: a Bearer key from the configured list, turned into the owner of its jobs."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from gateway.api.services import Services
from gateway.errors import APIError

Svc = NamedDependency[Services]
Owner = NamedDependency[str]


async def resolve_owner(request: Request[Any, Any, Any], services: Svc) -> str:
    """Bearer auth when keys are configured. The owner is a hash of the key: jobs are per key."""
    keys = services.settings.api_keys
    if not keys:
        return ""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    for key in keys:
        if token and hmac.compare_digest(token, key.get_secret_value()):
            return hashlib.sha256(token.encode()).hexdigest()[:32]
    raise APIError(401, "invalid_api_key", "Send a valid API key as 'Authorization: Bearer <key>'.")


def owner_dependency() -> dict[str, Provide]:
    """The `owner` dependency every owned route declares (a fresh mapping per route)."""
    return {"owner": Provide(resolve_owner)}
