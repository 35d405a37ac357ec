"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Response, get

from gateway.api.auth import Svc


@get("/healthz", summary="Liveness (and whether the rules file on disk was refused)", include_in_schema=True)
async def healthz(services: Svc) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "ok", "sandbox": True} if services.settings.sandbox else {"status": "ok"}
    if services.rules_holder.last_error:  # still serving, on the last good rules
        body |= {"status": "degraded", "rules_error": services.rules_holder.last_error}
    return body


@get("/readyz", summary="Readiness: the database answers and the runner is alive")
async def readyz(services: Svc) -> Response[dict[str, Any]]:
    checks: dict[str, Any] = {"runner": services.runner_alive()}
    try:
        await services.store.get("vid_readyz")
        checks["database"] = True
    except Exception as exc:  # the point is to report, not to raise
        checks["database"] = f"error: {exc}"
    ok = all(v is True for v in checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)


@get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
async def metrics(services: Svc) -> bytes:
    return services.metrics.render()
