"""The OpenAPI document: every status a route answers, and the create bodies (JSON and multipart).

Create, explain and comparisons read their body themselves (JSON or multipart, one validator),
so Litestar cannot see it; `enrich` adds those request bodies, built from the same pydantic
models, to the document as it is rendered. `errors(...)` lists a route's error statuses, each in
the error envelope, so clients and fuzzers know every answer a route can give.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from pydantic import BaseModel

from gateway.errors import not_found
from gateway.schemas import CreateComparisonRequest, CreateVideoRequest


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorEnvelope(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorBody


_WHY = {
    400: "The body is not valid JSON (syntax, encoding, NaN, nesting, huge integers).",
    401: "No valid API key (once any key exists).",
    404: "No such object for this key.",
    409: "The object is not in a state that allows this.",
    410: "The file expired and was deleted (retention).",
    413: "The image or body is too large.",
    415: "Unsupported content type or image format.",
    416: "The Range is outside the file.",
    422: "A field is invalid; the message says which and what to fix.",
    429: "A key limit (requests per minute, jobs at once, budget); see Retry-After.",
    503: "No configured or healthy backend can serve the request.",
}
#: What any route behind a key can answer besides its own errors (400: a URL with a NUL character).
KEYED = (400, 401, 429)


def errors(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorEnvelope, description=_WHY[code], generate_examples=False)
        for code in sorted({*codes, *KEYED})
    }


_BODIES = {
    ("/v1/videos", "post"): CreateVideoRequest,
    ("/v1/route/explain", "post"): CreateVideoRequest,
    ("/v1/comparisons", "post"): CreateComparisonRequest,
}
_EXAMPLE = {
    "model": "auto",
    "prompt": "Slow push in; she turns toward the camera and smiles",
    "image": "https://example.com/portrait.jpg",
    "seconds": "5",
    "size": "1280x720",
}
_EXAMPLES = {
    "/v1/videos": _EXAMPLE,
    "/v1/route/explain": _EXAMPLE,
    "/v1/comparisons": {
        **{k: v for k, v in _EXAMPLE.items() if k != "model"},
        "models": ["wan-2.6-i2v", "kling-v2.1"],
    },
}
_MULTIPART_FILE = {
    "input_reference": {"type": "string", "format": "binary", "description": "The image file (or send `image`)."}
}


def enrich(document: dict[str, Any]) -> dict[str, Any]:
    """The rendered document with the create bodies added (a copy; the app's stays as built)."""
    doc = copy.deepcopy(document)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for (path, method), model in _BODIES.items():
        operation = doc.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body
        ref = {"$ref": f"#/components/schemas/{model.__name__}"}
        form = {"allOf": [ref, {"type": "object", "properties": _MULTIPART_FILE}]}
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": ref, "example": _EXAMPLES[path]},
                "multipart/form-data": {"schema": form},
            },
        }
    return doc


class JsonWithBodies(JsonRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, enrich(openapi_schema))


class SwaggerWithBodies(SwaggerRenderPlugin):
    """Swagger UI from the `swagger-ui-bundle-v2` package, served by the gateway: the page works
    offline (no CDN)."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{ASSETS}/swagger-ui-bundle.js",
            css_url=f"{ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
            favicon="<link rel='icon' href='data:,'>",  # Litestar's default comes from a CDN
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, enrich(openapi_schema))


ASSETS = "/docs/assets"
_SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
}


@cache
def _swagger_file(name: str) -> bytes:
    from swagger_ui_bundle import swagger_ui_path

    return Path(swagger_ui_path, name).read_bytes()


@get(f"{ASSETS}/{{name:str}}", include_in_schema=False)
async def swagger_asset(name: str) -> Response[bytes]:
    if name not in _SWAGGER_FILES:
        raise not_found("asset", name, "name")
    return Response(_swagger_file(name), media_type=_SWAGGER_FILES[name], headers={"cache-control": "max-age=3600"})
