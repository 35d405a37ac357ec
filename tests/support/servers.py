"""Run an ASGI app on a real loopback socket in a background thread, for tests over real HTTP."""

from __future__ import annotations

from typing import Any

from gateway.serving import ServerThread, free_port

__all__ = ["free_port", "serve_in_thread"]


def serve_in_thread(app: Any, port: int | None = None) -> ServerThread:
    return ServerThread(app, port)
