"""Request metrics per route, and the sandbox header on every response."""

from __future__ import annotations

import time
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.metrics import GatewayMetrics


def metrics_middleware(metrics: GatewayMetrics, sandbox: bool) -> Any:
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
