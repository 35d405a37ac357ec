"""The create body, JSON or multipart, validated into `CreateVideoRequest` with the image's bytes.

Shared by `POST /v1/videos` and `POST /v1/route/explain`: both read exactly the same body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, TypeVar

from litestar import Request
from litestar.datastructures import UploadFile
from pydantic import ValidationError

from adapters.base import InputImage
from gateway.api.ingest import crop_to_size, load_image
from gateway.api.services import Services
from gateway.errors import APIError
from gateway.jobs.store import IdempotencyConflict
from gateway.schemas import CreateVideoRequest

_JSON_FORM_FIELDS = ("camera", "metadata", "parameters", "input_reference")


def validation_error(exc: ValidationError) -> APIError:
    """Turn the first pydantic error into an envelope that names the field and what to fix."""
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    kind = err["type"]
    if kind in ("storable", "size_conflict"):
        param = (err.get("ctx") or {}).get("path") or param
        return APIError(422, "invalid_field", f"{param or 'body'}: {err['msg']}.", param)
    if kind == "missing":
        return APIError(422, "missing_field", f"{param}: this field is required.", param)
    if kind == "extra_forbidden":
        return APIError(422, "unknown_field", f"{param}: unknown field; check the spelling (see /docs).", param)
    if param == "prompt" and kind == "string_too_long":
        return APIError(422, "prompt_too_long", f"prompt: {err['msg']}.", param)
    ctx = err.get("ctx") or {}
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        return APIError(
            422, "invalid_field", f"{param}: {err['input']!r} is over the limit; use at most {bound}.", param
        )
    if kind in ("greater_than", "greater_than_equal"):
        bound = ctx.get("gt", ctx.get("ge"))
        word = "above" if kind == "greater_than" else "at least"
        return APIError(422, "invalid_field", f"{param}: {err['input']!r} is too small; use {word} {bound}.", param)
    if kind == "finite_number":
        return APIError(422, "invalid_field", f"{param}: must be a finite number.", param)
    return APIError(422, "invalid_field", f"{param}: {err['msg'].removeprefix('Value error, ')}.", param)


def decode_json(raw: bytes | str, what: str) -> Any:
    """JSON, or a 4xx that says what is wrong: bad syntax, bad UTF-8, NaN/Infinity, nesting
    too deep for the parser, integers too long to convert."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise APIError(400, "invalid_json", f"{what} is not valid JSON: {exc.msg} at char {exc.pos}.") from exc
    except UnicodeDecodeError as exc:
        raise APIError(400, "invalid_json", f"{what} is not valid UTF-8 (byte {exc.start}).") from exc
    except RecursionError as exc:
        raise APIError(400, "invalid_json", f"{what} nests too deeply; flatten it.") from exc
    except ValueError as exc:  # NaN/Infinity, or an integer beyond the conversion limit
        raise APIError(400, "invalid_json", f"{what} has a value JSON cannot carry here: {exc}.") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


MAX_IDEMPOTENCY_KEY = 255


def key_reused(exc: IdempotencyConflict) -> APIError:
    kind = "comparison" if exc.existing.id.startswith("cmp_") else "job"
    return APIError(
        422,
        "idempotency_key_reused",
        f"Idempotency-Key: this key was used with a different request ({kind} {exc.existing.id}). "
        "Use a new key for a new request.",
        "Idempotency-Key",
    )


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    """The `Idempotency-Key` header, checked: at most 255 printable ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise APIError(
            422,
            "invalid_idempotency_key",
            f"Idempotency-Key: use 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters (a UUID is a good key).",
            "Idempotency-Key",
        )
    return key


R = TypeVar("R", bound=CreateVideoRequest)


async def parse_create(
    request: Request[Any, Any, Any],
    services: Services,
    schema: type[R] = CreateVideoRequest,  # type: ignore[assignment]
) -> tuple[R, bytes | None]:
    """The create body, validated: the shared first step of create, explain and comparisons."""
    fields, upload = await _read_body(request)
    req = validate_create(fields, services, schema)
    if upload is not None and (req.image or req.input_reference):
        raise APIError(422, "ambiguous_image", "image: send either a file or a URL, not both.", "image")
    return req, upload


def validate_create(
    fields: dict[str, Any],
    services: Services,
    schema: type[R] = CreateVideoRequest,  # type: ignore[assignment]
) -> R:
    """Fields (from a body, or translated by a provider façade) as a create request."""
    try:
        req = schema.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    limit = services.settings.max_prompt_chars
    if len(req.prompt) > limit:
        raise APIError(
            422,
            "prompt_too_long",
            f"prompt: {len(req.prompt)} characters; the limit is {limit}. Describe the motion in fewer words.",
            "prompt",
        )
    return req


async def image_of(req: CreateVideoRequest, upload: bytes | None, services: Services) -> tuple[InputImage, list[str]]:
    """The request's image, from the upload, a data URI or a URL (fetched through the SSRF guard),
    cropped to `size`'s aspect ratio when one is asked for; with the warnings that crop earns."""
    reference = req.image or (req.input_reference.image_url if req.input_reference else None)
    param = "input_reference" if upload is not None or req.input_reference else "image"
    image = await load_image(
        upload=upload, reference=reference, param=param, limits=services.image_limits, fetcher=services.fetcher
    )
    if req.size is None:
        return image, []
    return await asyncio.to_thread(crop_to_size, image, req.size, param, services.image_limits)


def request_hash(req: CreateVideoRequest, image_sha: str) -> str:
    """What an Idempotency-Key is bound to: the validated body and the image's bytes."""
    canon = json.dumps({"req": req.model_dump(mode="json"), "image": image_sha}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


async def _read_body(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], bytes | None]:
    """JSON or multipart; returns (fields, uploaded image bytes or None)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form()
        except (UnicodeDecodeError, ValueError) as exc:  # a field that is not UTF-8, a broken boundary
            raise APIError(400, "invalid_form", f"The form could not be read: {exc}. Send UTF-8 form fields.") from exc
        fields: dict[str, Any] = {}
        upload: bytes | None = None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in ("input_reference", "image"):
                    raise APIError(
                        422, "unknown_field", f"{key}: only the image may be a file (field input_reference).", key
                    )
                upload = await value.read()
            elif key.startswith("input_reference[") and key.endswith("]"):
                fields.setdefault("input_reference", {})[key[16:-1]] = value
            elif key in _JSON_FORM_FIELDS and isinstance(value, str):
                try:
                    fields[key] = decode_json(value, f"form field {key}")
                except APIError as exc:
                    raise APIError(
                        422, "invalid_field", f"{key}: must be JSON in a form field ({exc.message})", key
                    ) from exc
            else:
                fields[key] = value
        return fields, upload
    if ctype.startswith("application/json") or not ctype:
        raw = await request.body()
        body = decode_json(raw or b"null", "The body")
        if not isinstance(body, dict):
            raise APIError(400, "invalid_json", "The body must be a JSON object.")
        return body, None
    raise APIError(415, "unsupported_media_type", "Send application/json or multipart/form-data.")
