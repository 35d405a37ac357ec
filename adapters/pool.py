"""httpx transports whose connection pool does not poll every idle socket on every request.

Why: httpcore's pool (1.0.x) re-checks each idle keep-alive connection for a server-side close
(`has_expired`: an anyio attribute lookup and a `poll()` syscall per connection) whenever a
request is queued or a response closed. With the tens of connections a gateway keeps open to one
provider, that scan was ~10% of the event loop's CPU at 50 clients (docs/benchmarks.md; upstream:
encode/httpcore#928). Here the connection about to be reused is still checked every time (a dead
one would turn a provider submit into an ambiguous failure), and the other idle connections are
swept at most once per `SWEEP_S`.
"""

from __future__ import annotations

import time
from typing import Any

import httpcore
import httpx

SWEEP_S = 1.0  #: how often, at most, all idle connections are checked for expiry


class LeanPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with the same assignment rules and a cheaper expiry check (module doc)."""

    _swept_at = 0.0

    def _assign_requests_to_connections(self) -> list[Any]:
        closing: list[Any] = []
        conns = self._connections
        now = time.monotonic()
        sweep = now - self._swept_at >= SWEEP_S
        if sweep:
            self._swept_at = now
        for conn in list(conns):
            if conn.is_closed():
                conns.remove(conn)
            elif sweep and conn.is_idle() and conn.has_expired():
                conns.remove(conn)
                closing.append(conn)
        idle = [c for c in conns if c.is_idle()]
        for conn in idle[: max(0, len(idle) - self._max_keepalive_connections)]:
            conns.remove(conn)
            closing.append(conn)

        for pool_request in [r for r in self._requests if r.is_queued()]:
            origin = pool_request.request.url.origin
            chosen = None
            for conn in list(conns):
                if not (conn.can_handle_request(origin) and conn.is_available()):
                    continue
                if conn.is_idle() and conn.has_expired():  # closed by the server, or past keep-alive
                    conns.remove(conn)
                    closing.append(conn)
                    continue
                chosen = conn
                break
            if chosen is None:
                if len(conns) >= self._max_connections:
                    idle = [c for c in conns if c.is_idle()]
                    if not idle:
                        continue  # stays queued until a connection frees up
                    conns.remove(idle[0])
                    closing.append(idle[0])
                chosen = self.create_connection(origin)
                conns.append(chosen)
            pool_request.assign_to_connection(chosen)
        return closing


def lean_transport(**kwargs: Any) -> httpx.AsyncHTTPTransport:
    """`httpx.AsyncHTTPTransport(**kwargs)` (httpx's own defaults, limits included) with its pool
    made a `LeanPool` (same settings: the class adds behaviour, no state)."""
    transport = httpx.AsyncHTTPTransport(**kwargs)
    if type(transport._pool) is not httpcore.AsyncConnectionPool:  # a proxy or another pool: leave it
        return transport
    transport._pool.__class__ = LeanPool
    return transport
