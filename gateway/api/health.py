"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, route

from gateway.api.auth import Svc


def engines(services: Svc) -> dict[str, dict[str, Any]]:
    """Adapters that run an engine in this process (the local one) and say how it is."""
    return {
        name: adapter.health()  # type: ignore[attr-defined]
        for name, adapter in services.adapters.items()
        if callable(getattr(adapter, "health", None))
    }


@get("/healthz", summary="Liveness (and whether the rules file on disk was refused)", include_in_schema=True)
async def healthz(services: Svc) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "ok", "sandbox": True} if services.settings.sandbox else {"status": "ok"}
    if services.rules_holder.last_error:  # still serving, on the last good rules
        body |= {"status": "degraded", "rules_error": services.rules_holder.last_error}
    if found := engines(services):  # a GPU worker: loading, ready or failed, per device
        body["engines"] = found
        if any(e["state"] == "failed" for e in found.values()):
            body["status"] = "degraded"
    return body


@get("/readyz", summary="Readiness: the database answers and the runner is alive")
async def readyz(services: Svc) -> Response[dict[str, Any]]:
    checks: dict[str, Any] = {"runner": services.runner_alive()}
    for name, engine in engines(services).items():  # not ready while a pipeline loads (or failed to)
        checks[f"engine:{name}"] = True if engine["state"] in ("ready", "idle") else engine["state"]
    try:
        await services.store.ping()
        checks["database"] = True
    except Exception as exc:  # the point is to report, not to raise
        checks["database"] = f"error: {exc}"
    ok = all(v is True for v in checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)


_BREAKER = {"closed": 0, "half_open": 1, "open": 2}
_ENGINE = {"idle": 0, "loading": 0, "ready": 1, "failed": 2}


@route("/metrics", http_method=["GET", "HEAD"], summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
async def metrics(services: Svc) -> bytes:
    """Gauges read at scrape time (breakers, queue depth), then every series."""
    m = services.metrics
    for adapter in services.adapters:
        m.breaker_state.labels(adapter).set(_BREAKER.get(services.breakers.state(adapter), 0))
    for name, engine in engines(services).items():
        for d in engine["devices"]:
            m.engine_state.labels(name, d["device"]).set(_ENGINE.get(d["state"], 0))
            m.engine_queued.labels(name, d["device"]).set(d["queued"])
    try:
        m.jobs_queued.set(await services.store.count_queued())
    except Exception:  # a scrape must answer even when the database does not
        pass
    return m.render()
