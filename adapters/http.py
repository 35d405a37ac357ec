"""One way to call a provider over HTTP: timeouts, retries that honour Retry-After, and
transport failures turned into unified errors. Each adapter supplies `parse`, which reads a
response and raises `ProviderError` for the provider's own error shapes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adapters.aio import AiohttpTransport, CookielessClient
from adapters.base import ProviderError

log = logging.getLogger("i2v.adapters")

#: Provider answers that say "try again later"; the request was refused, so repeating is safe.
RETRY_CODES = frozenset({"rate_limited", "provider_unavailable"})


def retry_after(resp: httpx.Response) -> float | None:
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = resp.headers.get(header)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None


def http_error(resp: httpx.Response, provider_code: str | int | None, message: str) -> ProviderError:
    """Map an HTTP status to a unified code when the provider's own code says nothing finer."""
    status = resp.status_code
    code = (
        "rate_limited"
        if status == 429
        else "auth_failed"
        if status in (401, 403)
        else "timeout"
        if status in (408, 504)
        else "provider_unavailable"
        if status >= 500
        else "invalid_request"
    )
    return ProviderError(
        code,
        message,
        provider_code=provider_code,
        http_status=status,
        retry_after_s=retry_after(resp),
        maybe_submitted=status >= 500 or status == 408,
    )


class ProviderHTTP:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        max_attempts: int = 4,
        max_wait_s: float = 20.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self.client = CookielessClient(
            base_url=base_url, timeout=timeout, headers=headers or {}, transport=AiohttpTransport()
        )
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s

    @classmethod
    def from_settings(cls, settings: Any, default_base_url: str) -> ProviderHTTP:
        """The client an adapter's `AdapterSettings` describe (`options.max_attempts` bounds retries)."""
        return cls(
            settings.base_url or default_base_url,
            timeout_s=settings.timeout_s,
            max_attempts=int(settings.options.get("max_attempts", 4)),
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[httpx.Response], Any],
        idempotent: bool,
        headers: Callable[[], dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send, parse, retry what is safe to retry. A non-idempotent call (a submit) is retried only
        when the request surely did not reach the provider, or the provider refused it; where it
        may have reached it (a timeout, a 5xx, a malformed answer) the error says `maybe_submitted`
        and the caller reconciles instead of sending it again."""

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, ProviderError):
                safe = idempotent or not exc.maybe_submitted
                return safe and exc.code in RETRY_CODES and exc.retryable
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                return True
            return idempotent and isinstance(exc, httpx.TransportError)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = exc.retry_after_s if isinstance(exc, ProviderError) else None
            if hinted is not None:
                return min(hinted, self.max_wait_s)
            return float(wait_exponential_jitter(multiplier=0.2, max=self.max_wait_s)(state))

        extra: dict[str, str] = {}
        if "json" in kwargs:
            # encoded here, once for every try: msgspec writes a submit with its data-URI image
            # (~250 KB) in ~0.09 ms of CPU, httpx's json.dumps in ~0.55 ms (bench/submit_body.py)
            kwargs["content"] = msgspec.json.encode(kwargs.pop("json"))
            extra["content-type"] = "application/json"
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_attempts),
                wait=wait,
                retry=retry_if_exception(should_retry),
                reraise=True,
            ):
                with attempt:
                    sent = {**(headers() if headers else {}), **extra} or None
                    resp = await self.client.request(method, path, headers=sent, **kwargs)
                    return parse(resp)
        except httpx.TimeoutException as exc:
            raise ProviderError(
                "timeout", f"{method} {path}: the provider did not answer in time", maybe_submitted=_sent(exc)
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderError(
                "provider_unavailable", f"{method} {path}: {type(exc).__name__}", maybe_submitted=_sent(exc)
            ) from exc
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.client.aclose()


def _sent(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached the provider: anything after the connection was made."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def json_body(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of a response; a body that is not JSON is the provider's error."""
    try:
        body = resp.json()
    except ValueError as exc:
        raise ProviderError(
            "provider_error",
            f"malformed JSON from the provider (HTTP {resp.status_code})",
            http_status=resp.status_code,
            retryable=True,
            maybe_submitted=True,
        ) from exc
    if not isinstance(body, dict):
        raise ProviderError("provider_error", "the provider answered with JSON that is not an object")
    return body
