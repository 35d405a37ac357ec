"""Image URLs are fetched only from public addresses, on every redirect hop, within limits."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from litestar import Litestar, Response, get
from litestar.response import Redirect, Stream

from gateway.netguard import AddressPolicy
from tests.conftest import Gateway
from tests.support.images import image_bytes
from tests.support.servers import serve_in_thread

IMG = image_bytes()


@get("/img.jpg", media_type="image/jpeg")
async def img() -> bytes:
    return IMG


@get("/to-metadata")
async def to_metadata() -> Redirect:
    return Redirect("http://169.254.169.254/latest/meta-data/")


@get("/to-ten")
async def to_ten() -> Redirect:
    return Redirect("http://10.1.2.3/x.jpg")


@get("/to-img")
async def to_img() -> Redirect:
    return Redirect("/img.jpg")


@get("/to-file")
async def to_file() -> Redirect:
    return Redirect("file:///etc/passwd")


@get("/big", media_type="image/jpeg")
async def big() -> bytes:
    return b"\xff" * 300_000


@get("/slow", media_type="image/jpeg")
async def slow() -> bytes:
    await asyncio.sleep(3)
    return IMG


@get("/trickle", media_type="image/jpeg")
async def trickle() -> Stream:
    async def drip() -> AsyncIterator[bytes]:
        for byte in IMG[:40]:  # a byte every 0.1 s: each read is quick, the whole never arrives
            yield bytes([byte])
            await asyncio.sleep(0.1)

    return Stream(drip(), media_type="image/jpeg")


@get("/missing")
async def missing() -> Response[str]:
    return Response("nope", status_code=404)


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with serve_in_thread(Litestar([img, to_metadata, to_ten, to_img, to_file, big, slow, trickle, missing])) as url:
        yield url


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.8", "private"),
        ("192.168.1.1", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "private or reserved"),
        ("100.64.0.1", "private or reserved"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6 must not sneak past
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_policy_refuses_non_public(addr: str, reason: str) -> None:
    why = AddressPolicy().why_refused(ipaddress.ip_address(addr))
    assert why is not None and reason in why


def test_policy_allows_public_and_configured_networks() -> None:
    assert AddressPolicy().why_refused(ipaddress.ip_address("93.184.216.34")) is None
    assert AddressPolicy().why_refused(ipaddress.ip_address("2606:4700::1111")) is None
    allow = AddressPolicy(["10.9.0.0/16"])
    assert allow.why_refused(ipaddress.ip_address("10.9.3.3")) is None
    assert allow.why_refused(ipaddress.ip_address("10.8.3.3")) is not None


def post_url(gw: Gateway, url: str) -> tuple[int, dict]:
    resp = gw.client.post("/v1/videos", json={"prompt": "pan", "image": url})
    return resp.status_code, resp.json()


def test_loopback_url_refused_by_default(gateway: Gateway, image_host: str) -> None:
    status, body = post_url(gateway, f"{image_host}/img.jpg")
    assert status == 422
    assert body["error"]["code"] == "image_url_blocked" and body["error"]["param"] == "image"
    assert "loopback" in body["error"]["message"]


def test_localhost_name_refused(gateway: Gateway, image_host: str) -> None:
    status, body = post_url(gateway, image_host.replace("127.0.0.1", "localhost") + "/img.jpg")
    assert status == 422 and body["error"]["code"] == "image_url_blocked"


def test_scheme_must_be_http(gateway: Gateway) -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/"):
        status, body = post_url(gateway, url)
        assert status == 422 and body["error"]["code"] == "invalid_image_url", url


@pytest.fixture
def allowing_gateway(gateway_factory) -> Gateway:
    return gateway_factory(
        image_fetch_allow_networks=["127.0.0.1/32"], max_image_bytes=200_000, image_fetch_timeout_s=1.0
    )


def test_allowed_network_fetches(allowing_gateway: Gateway, image_host: str) -> None:
    status, body = post_url(allowing_gateway, f"{image_host}/img.jpg")
    assert status == 202, body
    assert allowing_gateway.wait(body["id"])["status"] == "completed"
    status, body = post_url(allowing_gateway, f"{image_host}/to-img")  # a same-host redirect is fine
    assert status == 202, body


@pytest.mark.parametrize(
    ("path", "code", "needle"),
    [
        ("/to-metadata", "image_url_blocked", "metadata"),
        ("/to-ten", "image_url_blocked", "private"),
        ("/to-file", "invalid_image_url", "http and https"),
        ("/missing", "image_fetch_failed", "HTTP 404"),
        ("/slow", "image_fetch_timeout", "the image host did"),
    ],
)
def test_every_redirect_hop_and_failure_is_checked(
    allowing_gateway: Gateway, image_host: str, path: str, code: str, needle: str
) -> None:
    status, body = post_url(allowing_gateway, image_host + path)
    assert status == 422, body
    assert body["error"]["code"] == code
    assert needle in body["error"]["message"]


def test_a_host_that_trickles_is_cut_off_at_the_total_deadline(allowing_gateway: Gateway, image_host: str) -> None:
    import time

    t0 = time.monotonic()
    status, body = post_url(allowing_gateway, f"{image_host}/trickle")
    assert status == 422 and body["error"]["code"] == "image_fetch_timeout"
    assert "whole image within 1 s" in body["error"]["message"]
    assert time.monotonic() - t0 < 2.5  # the per-read timeout (1 s) alone would wait the whole 4 s


def test_byte_limit_while_streaming(allowing_gateway: Gateway, image_host: str) -> None:
    status, body = post_url(allowing_gateway, f"{image_host}/big")
    assert status == 413 and body["error"]["code"] == "image_too_large"


def raw_host(answer: Callable[[int, bytes], bytes | None]) -> tuple[socket.socket, str, list[socket.socket]]:
    """An HTTP/1.1 host on a bare socket: for the n-th request head on a connection, `answer(n,
    head)` gives the bytes to send back, or None to close the connection unanswered. Returns the
    listener (close it when done), the URL of /img.jpg, and the connections accepted."""
    connections: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            for n in itertools.count():
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                reply = answer(n, request)
                if reply is None:
                    return
                conn.sendall(reply)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/img.jpg", connections


def test_a_kept_alive_connection_the_host_closes_on_reuse_is_fetched_again_once() -> None:
    """A host whose idle limit is shorter than our pool's closes a connection just as we reuse
    it: the request goes out, no answer comes. The GET is sent once more, on a fresh connection,
    instead of failing the client's create."""
    from gateway.netguard import fetch_limited, guarded_client

    def answer(n: int, head: bytes) -> bytes | None:
        if n == 1:  # the second request on this connection: closed unanswered
            return None
        return b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(IMG) + IMG

    listener, url, connections = raw_host(answer)

    async def twice() -> list[tuple[bytes, str | None]]:
        async with guarded_client(AddressPolicy(["127.0.0.1/32"]), 5.0) as client:
            return [await fetch_limited(client, url, max_bytes=1 << 20, param="image") for _ in range(2)]

    try:
        first, second = asyncio.run(twice())
    finally:
        listener.close()
    assert first == second == (IMG, "image/jpeg")
    assert len(connections) == 2  # the second fetch went out again on a fresh connection


def test_a_cookie_one_fetch_is_given_never_goes_out_with_the_next() -> None:
    """One fetch client serves every tenant: a cookie user A's image host set must not go out
    with user B's fetch from that host (httpx's jar and aiohttp's both kept it before)."""
    from gateway.netguard import fetch_limited, guarded_client

    heads: list[bytes] = []

    def answer(n: int, head: bytes) -> bytes | None:
        heads.append(head)
        cookie = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nSet-Cookie: session=tenant-a; Path=/\r\n"
        return cookie + b"Content-Length: %d\r\n\r\n" % len(IMG) + IMG

    listener, url, _ = raw_host(answer)

    async def twice() -> None:
        async with guarded_client(AddressPolicy(["127.0.0.1/32"]), 5.0) as client:
            for _ in range(2):
                assert await fetch_limited(client, url, max_bytes=1 << 20, param="image") == (IMG, "image/jpeg")

    try:
        asyncio.run(twice())
    finally:
        listener.close()
    assert len(heads) == 2
    assert all(b"cookie" not in h.lower() for h in heads), heads
