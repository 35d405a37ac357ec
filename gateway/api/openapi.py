"""The OpenAPI document: every status a route answers, and the create bodies (JSON and multipart).

Create, explain and comparisons read their body themselves (JSON or multipart, one validator),
so Litestar cannot see it; `enrich` adds those request bodies, built from the same pydantic
models, to the document as it is rendered. `errors(...)` lists a route's error statuses, each in
the error envelope, so clients and fuzzers know every answer a route can give.
"""

from __future__ import annotations

import copy
from typing import Any

from litestar import Request
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from pydantic import BaseModel

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
            "content": {"application/json": {"schema": ref}, "multipart/form-data": {"schema": form}},
        }
    return doc


class JsonWithBodies(JsonRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, enrich(openapi_schema))


class SwaggerWithBodies(SwaggerRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, enrich(openapi_schema))
