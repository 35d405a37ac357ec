"""Request metrics per route, the sandbox header on every response, and URLs no database can
take (a NUL character in the path or query) refused before any handler sees them."""

from __future__ import annotations

import json
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
            if (
                "\x00" in scope.get("path", "")
                or b"%00" in scope.get("query_string", b"")
                or b"\x00" in scope.get("query_string", b"")
            ):
                await _refuse_nul(send)
                metrics.http_requests.labels(scope["method"], "unmatched", "400").inc()
                return

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


async def _refuse_nul(send: Send) -> None:
    body = json.dumps(
        {
            "error": {
                "message": "The URL contains a NUL character (%00); remove it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_url",
            }
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
