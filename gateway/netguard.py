"""Outbound fetches of user-given URLs, safe against SSRF.

The check happens where the socket is opened: the transport's resolver (aiohttp's, replaced)
resolves the host and refuses any non-public address, and the connection is made to the address
it checked; an address literal is checked before any connection. So DNS rebinding cannot slip
past, and every redirect hop is checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import httpx
from aiohttp.abc import ResolveResult

from adapters.aio import AiohttpTransport, CookielessClient
from gateway.errors import APIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class BlockedAddress(Exception):
    """A URL resolved to an address the policy refuses."""


class AddressPolicy:
    """Public unicast addresses only, unless an operator allows a network explicitly."""

    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow_networks]

    def why_refused(self, addr: IPAddress) -> str | None:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.allow):
            return None
        if addr in _METADATA:
            return "a cloud metadata address"
        if addr.is_loopback:
            return "a loopback address"
        if addr.is_link_local:
            return "a link-local address"
        if addr.is_multicast:
            return "a multicast address"
        if addr.is_private or addr.is_reserved or addr.is_unspecified or not addr.is_global:
            return "a private or reserved address"
        return None


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves a host name and refuses it when any of its addresses is one the policy refuses;
    aiohttp then connects to the addresses checked here (its DNS cache keeps only those)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        out: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = sockaddr[0].split("%")[0]
            reason = self.policy.why_refused(ipaddress.ip_address(address))
            if reason:
                raise BlockedAddress(f"host '{host}' resolves to {address}, {reason}")
            out.append(
                {"hostname": host, "host": sockaddr[0], "port": sockaddr[1], "family": fam, "proto": proto, "flags": 0}
            )
        return out

    async def close(self) -> None:
        pass


class GuardedTransport(AiohttpTransport):
    """An httpx transport whose every TCP connection passes the address policy: names through
    the resolver, address literals (which aiohttp does not resolve) here."""

    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__(max_connections=50, keepalive_s=5.0)
        self.policy = policy

    def resolver(self) -> aiohttp.abc.AbstractResolver:
        return _GuardedResolver(self.policy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            reason = self.policy.why_refused(literal)
            if reason:
                raise BlockedAddress(f"host '{host}' is {reason}")
        return await super().handle_async_request(request)


def guarded_client(policy: AddressPolicy, timeout_s: float) -> httpx.AsyncClient:
    return CookielessClient(
        transport=GuardedTransport(policy),
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        follow_redirects=False,
        headers={"User-Agent": "i2v-gateway/0.1 (+image fetch)"},
    )


def check_url(url: str, param: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise APIError(422, "invalid_image_url", f"{param}: only http and https URLs can be fetched.", param)
    if not parts.hostname:
        raise APIError(422, "invalid_image_url", f"{param}: the URL has no host.", param)


async def fetch_limited(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    param: str,
    max_redirects: int = 5,
    total_s: float | None = None,
) -> tuple[bytes, str | None]:
    """GET `url` with the policy, byte limit and redirects checked hop by hop, all of it within
    `total_s` (the client's timeouts are per read: a host that sends a byte a second would
    otherwise hold the request as long as it likes).

    Returns (body, content-type). Raises APIError with a message that says what went wrong.
    """
    try:
        async with asyncio.timeout(total_s):
            return await _fetch(client, url, max_bytes=max_bytes, param=param, max_redirects=max_redirects)
    except TimeoutError as exc:
        raise APIError(
            422,
            "image_fetch_timeout",
            f"{param}: the image host did not send the whole image within {total_s:g} s; host it somewhere faster "
            "or upload the file.",
            param,
        ) from exc


async def _fetch(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, param: str, max_redirects: int
) -> tuple[bytes, str | None]:
    for _ in range(max_redirects + 1):
        check_url(url, param)
        try:
            try:
                got = await _hop(client, url, max_bytes=max_bytes, param=param)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # most likely a kept-alive connection the host closed as we reused it (its idle
                # limit may be shorter than the pool's 5 s: gunicorn's is 2 s): a GET is safe to
                # send again, once, and the pool gives it a fresh connection
                got = await _hop(client, url, max_bytes=max_bytes, param=param)
        except BlockedAddress as exc:
            raise APIError(422, "image_url_blocked", f"{param}: refused to fetch: {exc}.", param) from exc
        except httpx.TimeoutException as exc:
            raise APIError(
                422, "image_fetch_timeout", f"{param}: the image host did not answer in time.", param
            ) from exc
        except httpx.HTTPError as exc:
            raise APIError(422, "image_fetch_failed", f"{param}: could not fetch the image: {exc}.", param) from exc
        if isinstance(got, str):
            url = got
            continue
        return got
    raise APIError(422, "image_fetch_failed", f"{param}: more than {max_redirects} redirects.", param)


async def _hop(client: httpx.AsyncClient, url: str, *, max_bytes: int, param: str) -> tuple[bytes, str | None] | str:
    """One GET: the body and its content type, or where a redirect points."""
    async with client.stream("GET", url) as resp:
        if resp.is_redirect:
            location = resp.headers.get("location")
            if not location:
                raise APIError(422, "image_fetch_failed", f"{param}: redirect without a Location.", param)
            return str(resp.url.join(location))
        if resp.status_code != 200:
            raise APIError(
                422,
                "image_fetch_failed",
                f"{param}: fetching the image gave HTTP {resp.status_code}.",
                param,
            )
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise _too_big(param, max_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _too_big(param, max_bytes)
            chunks.append(chunk)
        return b"".join(chunks), resp.headers.get("content-type")


def _too_big(param: str, max_bytes: int) -> APIError:
    return APIError(
        413, "image_too_large", f"{param}: the image is over the {max_bytes // (1024 * 1024)} MB limit.", param
    )
