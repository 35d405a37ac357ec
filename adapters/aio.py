"""An httpx transport that sends through aiohttp: the adapters keep httpx's API (requests,
responses, timeouts, exceptions), the bytes go through aiohttp's connection pool and C parser.

Why: httpx's own stack (httpcore on anyio) cost ~0.7 ms of CPU per provider call at 50 clients,
the same call through this transport ~0.23 ms (docs/benchmarks.md); a job makes five or six
calls (submit, polls, the download). LiteLLM sends its httpx calls through aiohttp the same way.
The fetches of user URLs use it too, with a resolver that enforces the address policy
(`gateway/netguard.py`).

What the adapters rely on, kept here: a failure before the request could reach the provider is
a `ConnectError` / `ConnectTimeout` (a submit may be sent again), anything after it a read-side
error (the submit is looked up, never blindly resent); the URL goes out byte for byte (a signed
result URL must not be re-quoted); the body's content-encoding is left to httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import aiohttp.abc
import httpx
import yarl

#: headers aiohttp writes itself from the URL and the body
_OWN_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session per event loop, made on first use (a session belongs to its loop)."""

    def __init__(self, *, max_connections: int = 100, keepalive_s: float = 15.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            if self._session is not None and not self._session.closed:
                _abandon(self._session)  # made on a loop that has gone (a test's, a restarted runner's)
            self._session = aiohttp.ClientSession(
                connector=self.connector(),
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # see CookielessClient
            )
            self._loop = loop
        return self._session

    def connector(self) -> aiohttp.TCPConnector:
        """The session's connection pool."""
        return aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_s,
            resolver=self.resolver(),
            ssl=httpx.create_ssl_context(),  # certifi's roots, as httpx verifies
        )

    def resolver(self) -> aiohttp.abc.AbstractResolver | None:
        """How host names become addresses: aiohttp's default, unless a subclass says otherwise."""
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_here()
        t = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, connect=t.get("pool"), sock_connect=t.get("connect"), sock_read=t.get("read")
        )
        raw = request.headers.raw
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw if k.lower() not in _OWN_HEADERS]
        if isinstance(request.stream, httpx.ByteStream):
            data: object = request.content or None
        else:
            data = request.stream  # an upload that streams
        with _mapped(request):
            resp = await session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                timeout=timeout,
                allow_redirects=False,
            )
        return httpx.Response(
            resp.status,
            headers=resp.raw_headers,
            stream=_Body(resp, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (resp.reason or "").encode("latin-1")},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._loop is asyncio.get_running_loop():
            await session.close()
        else:
            _abandon(session)


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing and is always empty (so httpx never builds a Cookie header)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        return None

    def __bool__(self) -> bool:
        return False


_NO_COOKIES = _NoCookies()


class CookielessClient(httpx.AsyncClient):
    """An httpx client that keeps no cookies (and its transport's aiohttp session none either).

    Why: one client serves every tenant, so a cookie that one user's image host set would go out
    with the next user's fetch from that host; providers authenticate by header, never by cookie;
    and httpx's jar ran stdlib `http.cookiejar` through `urllib.request` shims on every response,
    ~1.8% of the gateway's CPU under load (py-spy, docs/benchmarks.md).
    """

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("this client keeps no cookies; send a Cookie header where one is needed")


def _abandon(session: aiohttp.ClientSession) -> None:
    """Drop a session whose event loop has gone: its sockets cannot be closed from another loop,
    so they are let go, and nothing warns about an unclosed session at exit."""
    with contextlib.suppress(Exception):
        session.connector._close()  # type: ignore[union-attr]


class _Body(httpx.AsyncByteStream):
    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._resp = resp
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._resp.release()  # back to the pool when read to its end, else the connection closes


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    """aiohttp's failures as the httpx exceptions the adapters classify (module doc)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # no free connection, or none made, in time
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:  # sent; no answer (or no more of it) in time
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS handshake
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:  # a cut or malformed answer
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # a reset and the rest: the request may have gone out
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out", request=request) from exc
