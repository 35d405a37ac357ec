"""Assembles the gateway: `create_app(settings)` wires store, catalog, adapters and runner.

No import-time side effects and no module-level singletons: tests build apps with their own
settings and adapters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import ASGIApp, Receive, Scope, Send

from adapters.base import Adapter
from adapters.registry import build_adapter
from gateway import api
from gateway.blobs import BlobStore
from gateway.breaker import Breakers
from gateway.db import JobStore, make_engine
from gateway.errors import APIError
from gateway.ingest import ImageLimits
from gateway.logs import configure_logging
from gateway.metrics import GatewayMetrics
from gateway.migrate import migrate
from gateway.netguard import AddressPolicy, guarded_client
from gateway.rules_watch import RulesHolder
from gateway.runner import JobRunner
from gateway.services import Services
from gateway.settings import AdapterSettings, Settings
from gateway.webhooks import WebhookSender

log = logging.getLogger("i2v.app")


def _error_response(exc: APIError) -> Response[Any]:
    return Response(exc.envelope(), status_code=exc.status, headers=exc.headers, media_type=MediaType.JSON)


def _on_api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[Any]:
    return _error_response(exc)


def _http_error_handler(max_image_bytes: int) -> Any:
    def handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        if exc.status_code == 413:  # the body limit trips before the image is even parsed
            return _error_response(
                APIError(
                    413,
                    "image_too_large",
                    f"The request body is too large: images may be at most {max_image_bytes / 2**20:.1f} MB.",
                    "image",
                )
            )
        return _on_http_error(request, exc)

    return handler


def _on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = exc.detail
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        first = extra[0] if extra else {}
        param = first.get("key") if isinstance(first, dict) else None
        message = f"{param}: {first.get('message')}" if param else exc.detail
        return _error_response(
            APIError(422 if exc.status_code == 400 else exc.status_code, "invalid_field", message, param)
        )
    return _error_response(APIError(exc.status_code, code, message))


def _on_crash(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    return _error_response(APIError(500, "internal_error", "The gateway hit an internal error; it is logged."))


def _metrics_middleware(metrics: GatewayMetrics, sandbox: bool) -> Any:
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            t0 = time.perf_counter()
            status = {"code": 500}

            async def send_wrapper(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    if sandbox:
                        message["headers"] = [*message.get("headers", []), (b"x-i2v-sandbox", b"true")]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                route = scope.get("path_template") or "unmatched"
                metrics.http_requests.labels(scope["method"], route, str(status["code"])).inc()
                metrics.http_latency.labels(scope["method"], route).observe(time.perf_counter() - t0)

        return middleware

    return factory


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    return {name: build_adapter(name, cfg) for name, cfg in settings.adapters.items()}


def create_app(settings: Settings | None = None, adapters: dict[str, Adapter] | None = None) -> Litestar:
    """Build the gateway. `adapters` overrides what `settings.adapters` would build."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    sandbox = None
    if settings.sandbox:
        from adapters.emulators.common import EmulatorConfig
        from gateway.sandbox import Sandbox

        t = settings.sandbox_task_s
        sandbox = Sandbox(EmulatorConfig(queue_s=t / 5, run_s=t * 4 / 5))
        settings = settings.model_copy(update={"adapters": {**sandbox.adapters, **settings.adapters}})
    if settings.local_wan_path and "local" not in settings.adapters:
        local = AdapterSettings(max_concurrency=64, options={"model_path": str(settings.local_wan_path)})
        settings = settings.model_copy(update={"adapters": {**settings.adapters, "local": local}})
    rules = RulesHolder(settings.resolved_rules_file)
    breakers = Breakers(settings.breaker)
    live_adapters = adapters if adapters is not None else build_adapters(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    store = JobStore(engine)
    blobs = BlobStore(settings.resolved_blob_dir)
    metrics = GatewayMetrics()
    policy = AddressPolicy(settings.image_fetch_allow_networks)
    fetcher = guarded_client(policy, settings.image_fetch_timeout_s)
    downloads = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=True)
    runner = JobRunner(
        store=store,
        adapters=live_adapters,
        rules=rules.get,
        blobs=blobs,
        breakers=breakers,
        settings=settings,
        metrics=metrics,
        downloads=downloads,
        webhooks=WebhookSender(
            guarded_client(policy, 10.0),
            settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        ),
    )
    services = Services(
        settings=settings,
        rules=rules.get,
        rules_holder=rules,
        breakers=breakers,
        adapters=live_adapters,
        store=store,
        blobs=blobs,
        metrics=metrics,
        fetcher=fetcher,
        runner=runner,
        image_limits=ImageLimits(settings.max_image_bytes, settings.max_image_pixels, settings.min_image_side),
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if sandbox:
            sandbox.start()
        await migrate(engine)
        if settings.runner_enabled:
            await runner.start()
        rules.install_sighup()
        watcher = asyncio.create_task(rules.watch(settings.rules_reload_s)) if settings.rules_reload_s else None
        log.info(
            "gateway ready",
            extra={
                "database": engine.url.render_as_string(hide_password=True),
                "adapters": sorted(live_adapters),
                "runner": runner.id,
            },
        )
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            if settings.runner_enabled:
                await runner.stop()
            for adapter in live_adapters.values():
                await adapter.aclose()
            await fetcher.aclose()
            await downloads.aclose()
            await runner.webhooks.client.aclose()
            await engine.dispose()
            if sandbox:
                sandbox.stop()

    def provide_services(state: State) -> Services:
        return state.services  # type: ignore[no-any-return]

    return Litestar(
        route_handlers=[api.VideosController, api.explain_route, api.list_models, api.healthz, api.readyz, api.metrics],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        state=State({"services": services}),
        lifespan=[lifespan],
        exception_handlers={
            APIError: _on_api_error,
            HTTPException: _http_error_handler(settings.max_image_bytes),
            Exception: _on_crash,
        },
        middleware=[_metrics_middleware(metrics, settings.sandbox)],
        openapi_config=OpenAPIConfig(
            title="i2v-gateway",
            version="0.1.0",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin()],
            description="One HTTP API over every image-to-video backend.",
        ),
        request_max_body_size=int(settings.max_image_bytes * 1.4) + 65536,
        logging_config=None,  # ours (gateway/logs.py), not Litestar's default handlers
        debug=False,
    )
