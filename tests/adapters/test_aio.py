"""adapters.aio: httpx's API over aiohttp. Real HTTP/1.1 on loopback against a scripted asyncio
server: each way a provider call can fail must reach the adapters as the httpx exception that
says whether the request may have gone out (adapters/http.py decides retries on it)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import socket
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from adapters.aio import AiohttpTransport, CookielessClient
from adapters.http import ProviderHTTP

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Scripted:
    """Reads one request head (and a Content-Length body), keeps both, then runs `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.requests.append(head)
                body = b""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        body = await reader.readexactly(int(line.split(b":")[1]))
                    if line.lower() == b"transfer-encoding: chunked":
                        while (size := int((await reader.readline()).strip(), 16)) > 0:
                            body += await reader.readexactly(size)
                            await reader.readline()
                        await reader.readline()
                self.bodies.append(body)
                await self.handler(head, reader, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, Scripted]]]]:
    servers: list[asyncio.base_events.Server] = []

    async def start(handler: Handler) -> tuple[str, Scripted]:
        scripted = Scripted(handler)
        srv = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", scripted

    yield start
    for srv in servers:
        srv.close()


def client(base_url: str, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, transport=AiohttpTransport(), timeout=httpx.Timeout(timeouts.pop("read", 5.0), **timeouts)
    )


async def test_a_json_call_and_a_kept_alive_second_one(serve) -> None:  # type: ignore[no-untyped-def]
    async def ok(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b'{"output": {"task_status": "RUNNING"}}', "Content-Type: application/json"))
        await writer.drain()

    url, server = await serve(ok)
    async with client(url, read=5.0) as c:
        r = await c.post("/api/v1/x", content=b'{"a": 1}', headers={"Authorization": "Bearer k"})
        again = await c.get("/api/v1/tasks/t")
    assert r.status_code == 200 and r.json() == {"output": {"task_status": "RUNNING"}}
    assert again.status_code == 200 and server.connections == 1  # one connection, kept alive
    assert server.bodies[0] == b'{"a": 1}'
    assert b"authorization: bearer k" in server.requests[0].lower()


@pytest.mark.parametrize("layer", ["CookielessClient", "ProviderHTTP"])
async def test_a_cookie_a_host_sets_is_never_sent_back(serve, layer: str) -> None:  # type: ignore[no-untyped-def]
    """Neither httpx's jar nor aiohttp's keeps a cookie: one client serves every tenant."""

    async def sets_cookie(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"{}", "Content-Type: application/json", "Set-Cookie: sid=tenant-a; Path=/"))
        await writer.drain()

    url, server = await serve(sets_cookie)
    if layer == "ProviderHTTP":
        http = ProviderHTTP(url, timeout_s=5.0)
        for _ in range(2):
            await http.call("GET", "/api/v1/tasks/t", parse=lambda r: r.json(), idempotent=True)
        await http.client.aclose()
    else:
        async with CookielessClient(base_url=url, transport=AiohttpTransport()) as c:
            first = await c.get("/a")
            await c.get("/b")
            assert first.headers["set-cookie"] == "sid=tenant-a; Path=/"  # the answer still shows it
            assert not c.cookies
            with pytest.raises(TypeError):
                c.cookies = {"sid": "x"}
    assert len(server.requests) == 2
    assert all(b"cookie" not in r.lower() for r in server.requests), server.requests


async def test_the_url_goes_out_byte_for_byte(serve) -> None:  # type: ignore[no-untyped-def]
    """A signed result URL must reach the host as signed: no re-quoting of %2F, + or =."""

    async def ok(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"ok"))
        await writer.drain()

    url, server = await serve(ok)
    path = "/results/a%2Fb/out.mp4?Expires=1796488225&Signature=ab+c%2Bd%3D%3D&x=%E2%9C%93"
    async with client(url) as c:
        await c.get(path)
    assert server.requests[0].split(b" ")[1] == path.encode()


async def test_a_compressed_answer_is_decoded_by_httpx_once(serve) -> None:  # type: ignore[no-untyped-def]
    async def gz(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(gzip.compress(json.dumps({"ok": True}).encode()), "Content-Encoding: gzip"))
        await writer.drain()

    url, _ = await serve(gz)
    async with client(url) as c:
        r = await c.get("/")
    assert r.json() == {"ok": True}


async def test_a_streamed_upload_and_a_streamed_download(serve) -> None:  # type: ignore[no-untyped-def]
    big = bytes(range(256)) * 4096  # 1 MiB

    async def echo_size(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(big))
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        for i in range(4):
            yield bytes([i]) * 1000

    url, server = await serve(echo_size)
    async with client(url) as c:
        await c.post("/upload", content=parts())
        async with c.stream("GET", "/big") as r:
            got = b"".join([chunk async for chunk in r.aiter_bytes()])
    assert server.bodies[0] == b"".join(bytes([i]) * 1000 for i in range(4))
    assert got == big


async def test_a_refused_connection_is_a_connect_error_so_a_submit_may_be_sent_again() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}") as c:
        with pytest.raises(httpx.ConnectError):
            await c.post("/submit", content=b"{}")


async def test_no_answer_in_time_is_a_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    url, server = await serve(silent)
    async with client(url, read=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/submit", content=b"{}")
    assert len(server.requests) == 1  # it went out: the adapters treat it as maybe submitted


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # hangs up without an answer
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100,  # an answer cut short
        b"this is not http\r\n\r\n",  # a malformed status line
    ],
    ids=["hang-up", "cut-short", "malformed"],
)
async def test_a_broken_answer_is_a_protocol_error(serve, sent: bytes) -> None:  # type: ignore[no-untyped-def]
    """Sent, then no usable answer: the request may have reached the provider (never resent blind)."""

    async def broken(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(sent)
        await writer.drain()
        writer.close()

    url, _ = await serve(broken)
    async with client(url) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/")


async def test_no_free_connection_in_time_is_a_connect_timeout_and_nothing_was_sent(serve) -> None:  # type: ignore[no-untyped-def]
    async def slow(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0)
        writer.write(answer(b"ok"))
        await writer.drain()

    url, server = await serve(slow)
    transport = AiohttpTransport(max_connections=1)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=httpx.Timeout(5.0, pool=0.2)) as c:
        first = asyncio.ensure_future(c.get("/a"))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.ConnectTimeout):  # the adapters read it as never sent
            await c.post("/submit", content=b"{}")
        assert (await first).status_code == 200
    assert [r.split(b" ")[1] for r in server.requests] == [b"/a"]


def test_one_transport_serves_one_event_loop_after_another() -> None:
    """A transport outlives event loops (tests, a restarted runner): each loop gets its session,
    and the one left on a loop that has gone is dropped without a warning."""

    async def once(transport: AiohttpTransport, close: bool) -> int:
        async def ok(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            w.write(answer(b"ok"))
            await w.drain()
            w.close()

        srv = await asyncio.start_server(ok, "127.0.0.1", 0)
        async with srv:
            c = httpx.AsyncClient(transport=transport)
            r = await c.get(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/")
            if close:
                await c.aclose()
            return r.status_code

    transport = AiohttpTransport()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        assert asyncio.run(once(transport, close=False)) == 200  # its loop ends with the session open
        assert asyncio.run(once(transport, close=True)) == 200
        gc.collect()
