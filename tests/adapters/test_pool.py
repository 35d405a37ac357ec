"""adapters.pool: the lean connection pool keeps httpcore's reuse rules and checks far fewer
sockets. Real HTTP/1.1 over loopback against a small asyncio server that counts connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters import pool
from adapters.pool import LeanPool, lean_transport


class Server:
    """Answers every request with a tiny keep-alive response after `delay_s`; `close_idle_after_s`
    makes it drop a connection that has been idle that long (a server-side keep-alive timeout),
    without telling the client."""

    def __init__(self, delay_s: float = 0.0, close_idle_after_s: float | None = None) -> None:
        self.delay_s = delay_s
        self.close_idle_after_s = close_idle_after_s
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.close_idle_after_s)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                self.requests += 1
                await asyncio.sleep(self.delay_s)
                assert head.startswith(b"GET ")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    servers: list[asyncio.base_events.Server] = []

    async def start(server: Server) -> str:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


async def test_the_transport_uses_the_lean_pool_with_httpx_default_limits() -> None:
    transport = lean_transport()
    assert type(transport._pool) is LeanPool
    assert (transport._pool._max_connections, transport._pool._max_keepalive_connections) == (100, 20)
    await transport.aclose()


async def test_sequential_requests_share_one_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server = Server()
    url = await serve(server)
    async with httpx.AsyncClient(transport=lean_transport()) as client:
        for _ in range(5):
            assert (await client.get(url)).text == "ok"
    assert (server.connections, server.requests) == (1, 5)


async def test_a_connection_the_server_dropped_is_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    """The server closes an idle keep-alive connection; the next request opens a new one and
    succeeds. Sending on the dropped one would fail the request after it was written (for a
    provider submit: an ambiguous answer)."""
    server = Server(close_idle_after_s=0.1)
    url = await serve(server)
    async with httpx.AsyncClient(transport=lean_transport()) as client:
        assert (await client.get(url)).text == "ok"
        await asyncio.sleep(0.3)  # the server has dropped the connection by now
        assert (await client.get(url)).text == "ok"
    assert (server.connections, server.requests) == (2, 2)


async def test_a_request_checks_only_the_connection_it_reuses(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """20 idle connections: one more request checks one socket, not all 20 (httpcore's own pool
    checks every idle connection on every request and again when the response closes)."""
    server = Server(delay_s=0.2)
    url = await serve(server)
    async with httpx.AsyncClient(transport=lean_transport()) as client:
        await asyncio.gather(*(client.get(url) for _ in range(20)))
        assert server.connections == 20
        checks = 0
        conn_type = type(client._transport._pool._connections[0])  # type: ignore[attr-defined]
        real = conn_type.has_expired

        def counted(self) -> bool:  # type: ignore[no-untyped-def]
            nonlocal checks
            checks += 1
            return real(self)

        monkeypatch.setattr(conn_type, "has_expired", counted)
        monkeypatch.setattr(pool, "SWEEP_S", 3600.0)  # no periodic sweep inside this request
        client._transport._pool._swept_at = time.monotonic()  # type: ignore[attr-defined]
        assert (await client.get(url)).text == "ok"
    assert server.connections == 20  # an idle connection was reused
    assert checks <= 2, checks


async def test_idle_connections_beyond_the_keepalive_limit_are_closed(serve) -> None:  # type: ignore[no-untyped-def]
    server = Server(delay_s=0.2)
    url = await serve(server)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=5)
    async with httpx.AsyncClient(transport=lean_transport(limits=limits)) as client:
        await asyncio.gather(*(client.get(url) for _ in range(12)))
        assert server.connections == 12
        assert (await client.get(url)).text == "ok"  # the next assignment trims the idle ones
        assert len(client._transport._pool._connections) <= 5  # type: ignore[attr-defined]


async def test_a_full_pool_queues_requests_until_a_connection_frees(serve) -> None:  # type: ignore[no-untyped-def]
    server = Server(delay_s=0.05)
    url = await serve(server)
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    async with httpx.AsyncClient(transport=lean_transport(limits=limits)) as client:
        answers = await asyncio.gather(*(client.get(url) for _ in range(10)))
    assert [a.text for a in answers] == ["ok"] * 10
    assert server.connections == 3
