"""Absolute, signed links in the video objects the API returns, and the signed link as an
alternative to the API key on `GET /v1/videos/{id}/content`."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request
from litestar.di import Provide

from gateway.api.auth import Caller, Svc, resolve_owner
from gateway.errors import APIError
from gateway.jobs.present import video_object
from gateway.jobs.tables import AttemptRow, JobRow
from gateway.schemas import Video


def base_of(request: Request[Any, Any, Any]) -> str:
    """The address the caller reached us at: what a proxy says it forwarded (X-Forwarded-* or
    RFC 7239 Forwarded), else the Host header."""
    h = request.headers
    proto, host = h.get("x-forwarded-proto"), h.get("x-forwarded-host")
    if not (proto or host) and (fwd := h.get("forwarded")):
        pairs = dict(
            p.strip().split("=", 1) for p in fwd.split(",")[0].split(";") if "=" in p
        )  # first hop: for=...;proto=https;host=example.com
        proto, host = pairs.get("proto", "").strip('"') or None, pairs.get("host", "").strip('"') or None
    proto = (proto or request.url.scheme).split(",")[0].strip()
    host = (host or h.get("host") or request.url.netloc).split(",")[0].strip()
    prefix = h.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
    return f"{proto}://{host}{prefix}"


def render(services: Svc, request: Request[Any, Any, Any], job: JobRow, attempts: list[AttemptRow]) -> Video:
    return video_object(job, attempts, services.links, base_of(request))


async def owner_or_signed(request: Request[Any, Any, Any], services: Svc) -> Caller:
    """A valid `expires` + `signature` pair for this video stands in for the API key."""
    query = request.query_params
    if "signature" not in query:
        return await resolve_owner(request, services)
    video_id = str(request.path_params.get("video_id", ""))
    if services.links.verify(video_id, query.get("expires", ""), query["signature"], time.time()):
        return Caller.of("", admin=True, name="signed-link")
    raise APIError(
        403,
        "link_expired",
        f"This download link has expired or is not valid. GET /v1/videos/{video_id} for a fresh one "
        "(links last between one and two I2V_SIGNED_URL_TTL_S).",
    )


def signed_dependency() -> dict[str, Provide]:
    return {"owner": Provide(owner_or_signed)}
