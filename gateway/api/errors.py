"""Every failure on the HTTP surface leaves in the error envelope, whoever raised it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gateway.errors import APIError

log = logging.getLogger("i2v.app")


def _error_response(exc: APIError) -> Response[Any]:
    return Response(exc.envelope(), status_code=exc.status, headers=exc.headers, media_type=MediaType.JSON)


def _on_api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[Any]:
    return _error_response(exc)


def _http_error_handler(max_image_bytes: int) -> Any:
    def handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        if exc.status_code == 413:  # the body limit trips before the image is even parsed
            return _error_response(
                APIError(
                    413,
                    "image_too_large",
                    f"The request body is too large: images may be at most {max_image_bytes / 2**20:.1f} MB.",
                    "image",
                )
            )
        return _on_http_error(request, exc)

    return handler


def _on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _error_response(as_api_error(exc))


def as_api_error(exc: HTTPException) -> APIError:
    """Litestar's own refusals (404, 405, a bad query parameter) as the gateway's error."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = exc.detail
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        first = extra[0] if extra else {}
        param = first.get("key") if isinstance(first, dict) else None
        message = f"{param}: {first.get('message')}" if param else exc.detail
        return APIError(422 if exc.status_code == 400 else exc.status_code, "invalid_field", message, param)
    return APIError(exc.status_code, code, message)


def _on_crash(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    return _error_response(APIError(500, "internal_error", "The gateway hit an internal error; it is logged."))


def translated(render: Callable[[APIError], Response[Any]]) -> dict[Any, Any]:
    """Exception handlers for a provider façade: every failure, in that provider's error shape."""

    def on_api(_: Request[Any, Any, Any], exc: APIError) -> Response[Any]:
        return render(exc)

    def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        return render(as_api_error(exc))

    def on_crash(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        log.exception("unhandled error", exc_info=exc)
        return render(APIError(500, "internal_error", "The gateway hit an internal error; it is logged."))

    return {APIError: on_api, HTTPException: on_http, Exception: on_crash}


def exception_handlers(max_image_bytes: int) -> dict[Any, Any]:
    """Ours, Litestar's and everything else's, each to the envelope."""
    return {APIError: _on_api_error, HTTPException: _http_error_handler(max_image_bytes), Exception: _on_crash}
