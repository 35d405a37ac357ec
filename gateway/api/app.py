"""Assembles the gateway: `create_app(settings)` wires store, catalog, adapters and runner.

No import-time side effects and no module-level singletons: tests build apps with their own
settings and adapters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from sqlalchemy import event

from adapters.aio import AiohttpTransport, CookielessClient
from adapters.base import Adapter
from adapters.registry import build_adapter
from gateway.api import health
from gateway.api.callbacks import provider_callback
from gateway.api.comparisons import ComparisonsController, leaderboard
from gateway.api.errors import exception_handlers
from gateway.api.experiments import get_experiment, list_experiments
from gateway.api.explain import explain_route
from gateway.api.facades import facade_routers
from gateway.api.ingest import ImageLimits
from gateway.api.middleware import metrics_middleware
from gateway.api.models import list_models
from gateway.api.openapi import JsonWithBodies, SwaggerWithBodies, swagger_asset
from gateway.api.services import Services
from gateway.api.ui import UI_ROUTES
from gateway.api.videos import VideosController
from gateway.jobs import quality
from gateway.jobs.comparisons import ComparisonStore
from gateway.jobs.experiments import ExperimentStore
from gateway.jobs.keys import CachedKeys, KeyStore
from gateway.jobs.limits import Limits
from gateway.jobs.migrate import migrate
from gateway.jobs.retention import Retention
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore
from gateway.jobs.tables import make_engine
from gateway.jobs.webhooks import WebhookSender
from gateway.logs import configure_logging
from gateway.metrics import GatewayMetrics
from gateway.netguard import AddressPolicy, guarded_client
from gateway.routing.breaker import Breakers
from gateway.routing.watch import RulesHolder
from gateway.settings import AdapterSettings, Settings
from gateway.storage.blobs import BlobStore

log = logging.getLogger("i2v.app")


def count_statements(store: JobStore, metrics: GatewayMetrics) -> None:
    """`i2v_db_statements_total{verb}`: the database work behind the jobs, watched like any load
    (the async engine's statements and the store's inline reads on SQLite)."""
    counters = {v: metrics.db_statements.labels(v) for v in ("select", "insert", "update", "delete", "other")}

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip()[:6].lower()
        counters.get(verb, counters["other"]).inc()

    for engine in store.sync_engines:
        event.listen(engine, "before_cursor_execute", count)


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    return {name: build_adapter(name, cfg) for name, cfg in settings.adapters.items()}


def create_app(
    settings: Settings | None = None, adapters: dict[str, Adapter] | None = None, *, api: bool = True
) -> Litestar:
    """Build the gateway. `adapters` overrides what `settings.adapters` would build. With
    `api=False` it is a worker: the same runner and outbox, and only the health routes."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    sandbox = None
    if settings.sandbox:
        from adapters.emulators.common import EmulatorConfig
        from gateway.sandbox import Sandbox

        t = settings.sandbox_task_s
        sandbox = Sandbox(EmulatorConfig(queue_s=t / 5, run_s=t * 4 / 5, max_side=settings.sandbox_max_side))
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
    retention = Retention(engine, blobs, settings.retention_sweep_s)
    limits = Limits(engine, settings.redis_url)

    def rules_result(ok: bool) -> None:
        metrics.rules_ok.set(1 if ok else 0)
        if not ok:
            metrics.rules_rejected.inc()

    rules.on_result = rules_result
    count_statements(store, metrics)
    policy = AddressPolicy(settings.image_fetch_allow_networks)
    fetcher = guarded_client(policy, settings.image_fetch_timeout_s)
    downloads = CookielessClient(
        timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=True, transport=AiohttpTransport()
    )
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
        drives=settings.runner_adapters,
    )
    services = Services(
        settings=settings,
        rules=rules.get,
        rules_holder=rules,
        breakers=breakers,
        adapters=live_adapters,
        store=store,
        comparisons=ComparisonStore(engine),
        experiments=ExperimentStore(engine),
        keys=CachedKeys(KeyStore(engine), settings.key_cache_s),
        limits=limits,
        blobs=blobs,
        metrics=metrics,
        fetcher=fetcher,
        runner=runner,
        image_limits=ImageLimits(
            settings.max_image_bytes,
            settings.max_image_pixels,
            settings.min_image_side,
            fetch_total_s=settings.image_fetch_timeout_s,
        ),
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if sandbox:
            sandbox.start()
        await migrate(engine)
        await runner.start(jobs=settings.runner_enabled, outbox=settings.outbox_enabled)
        rules.install_sighup()
        watcher = asyncio.create_task(rules.watch(settings.rules_reload_s)) if settings.rules_reload_s else None
        sweeper = asyncio.create_task(retention.run()) if settings.retention_s else None
        log.info(
            "gateway ready",
            extra={
                "database": engine.url.render_as_string(hide_password=True),
                "adapters": sorted(live_adapters),
                "claims_for": sorted(runner.ctx.drives),
                "runner": runner.id,
            },
        )
        quality.hold()
        try:
            yield
        finally:
            for task in (watcher, sweeper):
                if task is not None:
                    task.cancel()
            await runner.stop()
            # Each step below gets CLOSE_S: a peer that never answers a close cannot hold the exit.
            await _bounded(asyncio.to_thread(quality.let_go), "the measuring processes")
            for name, adapter in live_adapters.items():
                await _bounded(adapter.aclose(), f"adapter {name}")
            await _bounded(fetcher.aclose(), "the image fetcher")
            await _bounded(downloads.aclose(), "the download client")
            await _bounded(runner.webhooks.client.aclose(), "the webhook client")
            await _bounded(limits.aclose(), "the rate limiter")
            await _bounded(engine.dispose(), "the database engine")
            store.close()
            if sandbox:
                sandbox.stop()

    def provide_services(state: State) -> Services:
        return state.services  # type: ignore[no-any-return]

    return Litestar(
        route_handlers=[
            *(
                [
                    VideosController,
                    ComparisonsController,
                    leaderboard,
                    list_experiments,
                    get_experiment,
                    *UI_ROUTES,
                    explain_route,
                    list_models,
                    *facade_routers(),
                ]
                if api
                else []
            ),
            provider_callback,
            swagger_asset,
            health.healthz,
            health.readyz,
            health.metrics,
        ],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        state=State({"services": services}),
        lifespan=[lifespan],
        exception_handlers=exception_handlers(settings.max_image_bytes),
        middleware=[metrics_middleware(metrics, settings.sandbox)],
        openapi_config=OpenAPIConfig(
            title="i2v-gateway",
            version="0.1.0",
            path="/docs",
            render_plugins=[JsonWithBodies(), SwaggerWithBodies()],
            description="One HTTP API over every image-to-video backend.",
        ),
        request_max_body_size=int(settings.max_image_bytes * 1.4) + 65536,
        logging_config=None,  # ours (gateway/logs.py), not Litestar's default handlers
        debug=False,
    )


CLOSE_S = 10.0


async def _bounded(step: Awaitable[Any], what: str) -> None:
    """One shutdown step, given at most `CLOSE_S`; past that it is left behind, logged."""
    try:
        await asyncio.wait_for(step, CLOSE_S)
    except TimeoutError:
        log.warning("shutdown did not wait for a step", extra={"step": what, "after_s": CLOSE_S})
