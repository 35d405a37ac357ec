"""HTTP handlers: parse and validate at the edge, then hand over to ingest, router and store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from typing import Any, NamedTuple

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter
from pydantic import ValidationError

from adapters.base import InputImage
from gateway.advice import prompt_warnings
from gateway.catalog import RulesFile
from gateway.db import IdempotencyConflict, JobRow
from gateway.errors import APIError, not_found
from gateway.ids import new_id
from gateway.ingest import load_image
from gateway.results import video_object
from gateway.router import RoutePlan, check_model, estimate_cost, plan, shape_for
from gateway.sandbox import WARNING as SANDBOX_WARNING
from gateway.schemas import (
    TERMINAL,
    CreateVideoRequest,
    DeletedVideo,
    ExplainedCandidate,
    ModelInfo,
    ModelList,
    RouteExplanation,
    Video,
    VideoList,
)
from gateway.services import Services
from gateway.traits import Traits

Svc = NamedDependency[Services]
Owner = NamedDependency[str]

_JSON_FORM_FIELDS = ("camera", "metadata", "parameters", "input_reference")


async def resolve_owner(request: Request[Any, Any, Any], services: Svc) -> str:
    """Bearer auth when keys are configured. The owner is a hash of the key: jobs are per key."""
    keys = services.settings.api_keys
    if not keys:
        return ""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    for key in keys:
        if token and hmac.compare_digest(token, key.get_secret_value()):
            return hashlib.sha256(token.encode()).hexdigest()[:32]
    raise APIError(401, "invalid_api_key", "Send a valid API key as 'Authorization: Bearer <key>'.")


def validation_error(exc: ValidationError) -> APIError:
    """Turn the first pydantic error into an envelope that names the field and what to fix."""
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    kind = err["type"]
    if kind == "missing":
        return APIError(422, "missing_field", f"{param}: this field is required.", param)
    if kind == "extra_forbidden":
        return APIError(422, "unknown_field", f"{param}: unknown field; check the spelling (see /docs).", param)
    if param == "prompt" and kind == "string_too_long":
        return APIError(422, "prompt_too_long", f"prompt: {err['msg']}.", param)
    return APIError(422, "invalid_field", f"{param}: {err['msg'].removeprefix('Value error, ')}.", param)


async def parse_create(request: Request[Any, Any, Any], services: Services) -> tuple[CreateVideoRequest, bytes | None]:
    """The create body, validated: the shared first step of create and explain."""
    fields, upload = await _read_body(request)
    try:
        req = CreateVideoRequest.model_validate(fields)
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
    if upload is not None and (req.image or req.input_reference):
        raise APIError(422, "ambiguous_image", "image: send either a file or a URL, not both.", "image")
    return req, upload


async def _image_of(req: CreateVideoRequest, upload: bytes | None, services: Services) -> InputImage:
    reference = req.image or (req.input_reference.image_url if req.input_reference else None)
    param = "input_reference" if upload is not None or req.input_reference else "image"
    return await load_image(
        upload=upload, reference=reference, param=param, limits=services.image_limits, fetcher=services.fetcher
    )


async def _read_body(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], bytes | None]:
    """JSON or multipart; returns (fields, uploaded image bytes or None)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
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
                    fields[key] = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise APIError(422, "invalid_field", f"{key}: must be JSON in a form field.", key) from exc
            else:
                fields[key] = value
        return fields, upload
    if ctype.startswith("application/json") or not ctype:
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise APIError(400, "invalid_json", f"The body is not valid JSON: {exc.msg} at char {exc.pos}.") from exc
        if not isinstance(body, dict):
            raise APIError(400, "invalid_json", "The body must be a JSON object.")
        return body, None
    raise APIError(415, "unsupported_media_type", "Send application/json or multipart/form-data.")


def _request_hash(req: CreateVideoRequest, image_sha: str) -> str:
    canon = json.dumps({"req": req.model_dump(mode="json"), "image": image_sha}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


class VideosController(Controller):
    path = "/v1/videos"
    dependencies = {"owner": Provide(resolve_owner)}

    @post("/", status_code=202, summary="Create a video from an image and a motion prompt")
    async def create(self, request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Video]:
        """JSON (`image`: URL or data URI) or multipart (`input_reference`: the file). See docs/api.md."""
        t0 = time.perf_counter()
        req, upload = await parse_create(request, services)
        rules = services.rules()
        check_model(req, rules)  # refuse an unknown model before paying for an image download
        image = await _image_of(req, upload, services)
        decision = await decide(req, image, rules, services, owner)
        route = decision.plan
        first = rules.models[route.candidates[0]]
        req_dict = req.model_dump(
            mode="json", exclude={"image", "input_reference", "prompt", "model", "webhook_url", "metadata"}
        )
        req_dict["image"] = {"sha256": image.sha256, "mime": image.mime, "width": image.width, "height": image.height}
        req_dict["shape"] = shape_for(first, req_dict, image.width, image.height).model_dump()
        now = time.time()
        job = JobRow(
            id=new_id("vid"),
            owner=owner,
            status="queued",
            progress=0,
            requested_model=req.model,
            model=route.candidates[0],
            prompt=req.prompt,
            request=req_dict,
            route={
                "rule": route.rule,
                "arm": route.arm,
                "traits": decision.traits,
                "candidates": route.candidates,
                "dropped": route.dropped,
                "max_attempts": route.max_attempts,
                "fallback_on": route.fallback_on,
            },
            metrics={},
            warnings=decision.warnings,
            metadata_=req.metadata,
            webhook_url=req.webhook_url,
            idempotency_key=request.headers.get("idempotency-key"),
            request_hash=_request_hash(req, image.sha256),
            cancel_requested=False,
            created_at=now,
            deadline_at=now + req.deadline_s if req.deadline_s else None,
        )
        services.blobs.put(image.data)
        job.metrics = {"create_ms": round((time.perf_counter() - t0) * 1000, 2)}
        try:
            job, created = await services.store.create(job)
        except IdempotencyConflict as exc:
            raise APIError(
                422,
                "idempotency_key_reused",
                "Idempotency-Key: this key was used with a different "
                f"request (job {exc.existing.id}). Use a new key for a new request.",
                "Idempotency-Key",
            ) from exc
        if created:
            services.metrics.jobs_created.labels(req.model).inc()
            services.runner.wake()
            attempts = []
        else:
            _, attempts = await services.store.get_with_attempts(job.id)
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return Response(video_object(job, attempts), status_code=202 if created else 200, headers=headers)

    @get("/", summary="List videos")
    async def list_videos(
        self,
        services: Svc,
        owner: Owner,
        status: str | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int = Parameter(default=20, ge=1, le=100),
        order: str = Parameter(default="desc", pattern="^(asc|desc)$"),
    ) -> VideoList:
        rows, has_more = await services.store.list(
            owner, status=status, model=model, after=after, limit=limit, order=order
        )
        attempts = await services.store.attempts_for([r.id for r in rows])
        data = [video_object(r, attempts[r.id]) for r in rows]
        return VideoList(
            data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=has_more
        )

    @get("/{video_id:str}", summary="Retrieve a video")
    async def retrieve(self, video_id: str, services: Svc, owner: Owner) -> Video:
        job, attempts = await services.store.get_with_attempts(video_id)
        return video_object(_owned(job, owner, video_id), attempts)

    @get("/{video_id:str}/content", summary="Download the MP4 (HTTP Range supported)")
    async def content(
        self,
        request: Request[Any, Any, Any],
        video_id: str,
        services: Svc,
        owner: Owner,
        variant: str = "video",
    ) -> Response[bytes]:
        job = _owned(await services.store.get(video_id), owner, video_id)
        if variant != "video":
            raise APIError(422, "invalid_field", "variant: only 'video' is available.", "variant")
        if job.status != "completed" or not job.output:
            raise APIError(
                409, "video_not_ready", f"Video {video_id} is {job.status}; content exists once it is completed."
            )
        path = services.blobs.path(job.output["sha256"])
        size = path.stat().st_size
        headers = {
            "accept-ranges": "bytes",
            "etag": f'"{job.output["sha256"]}"',
            "content-disposition": f'inline; filename="{video_id}.mp4"',
        }
        rng = _parse_range(request.headers.get("range"), size)
        if rng is None:
            return Response(path.read_bytes(), media_type="video/mp4", headers=headers)
        start, end = rng
        with path.open("rb") as f:
            f.seek(start)
            chunk = f.read(end - start + 1)
        headers["content-range"] = f"bytes {start}-{end}/{size}"
        return Response(chunk, status_code=206, media_type="video/mp4", headers=headers)

    @post("/{video_id:str}/cancel", status_code=200, summary="Cancel a video job")
    async def cancel(self, video_id: str, services: Svc, owner: Owner) -> Video:
        job = _owned(await services.store.get(video_id), owner, video_id)
        if job.status in TERMINAL:
            raise APIError(
                409, "video_already_finished", f"Video {video_id} is already {job.status}; nothing to cancel."
            )
        await services.store.request_cancel(video_id, time.time())
        services.runner.request_cancel(video_id)
        fresh, attempts = await services.store.get_with_attempts(video_id)
        assert fresh is not None
        return video_object(fresh, attempts)

    @delete("/{video_id:str}", status_code=200, summary="Delete a finished video and its stored file")
    async def delete_video(self, video_id: str, services: Svc, owner: Owner) -> DeletedVideo:
        job = _owned(await services.store.get(video_id), owner, video_id)
        if job.status not in TERMINAL:
            raise APIError(
                409,
                "video_in_progress",
                f"Video {video_id} is {job.status}; cancel it first (POST /v1/videos/{video_id}/cancel).",
            )
        await services.store.delete(video_id)
        sha = (job.output or {}).get("sha256")
        if sha and not await services.store.other_jobs_use_blob(sha, video_id):
            services.blobs.delete(sha)
        return DeletedVideo(id=video_id)


class Decision(NamedTuple):
    plan: RoutePlan
    traits: dict[str, Any]
    warnings: list[str]


async def decide(
    req: CreateVideoRequest, image: InputImage, rules: RulesFile, services: Services, owner: str, refuse: bool = True
) -> Decision:
    """Traits, rule match, candidates and advice for one request. Runs in a worker thread: the
    face detector, when a rule asks for it, is tens of milliseconds of CPU."""
    load = await services.load()

    def work() -> Decision:
        traits = Traits(req, image, load, services.trait_settings, batch=req.batch_id is not None)
        route = plan(
            req,
            image,
            rules,
            set(services.adapters),
            traits,
            services.breakers,
            sticky=req.user or owner,
            refuse=refuse,
        )
        loops = bool(route.candidates) and rules.models[route.candidates[0]].loop
        warnings = prompt_warnings(req.prompt, traits, loops_natively=loops) + _route_warnings(
            req, route, services, rules
        )
        return Decision(route, traits.computed(), warnings)

    return await asyncio.to_thread(work)


def _route_warnings(req: CreateVideoRequest, route: RoutePlan, services: Services, rules: RulesFile) -> list[str]:
    warnings: list[str] = []
    if not route.candidates:
        return warnings
    if req.model != "auto" and req.model in route.dropped:
        warnings.append(
            f"{req.model} cannot serve this request ({route.dropped[req.model]}); "
            f"it goes to its fallback {route.candidates[0]}"
        )
    first = rules.models[route.candidates[0]]
    if req.camera is not None and not first.camera_control:
        warnings.append(
            f"camera: {route.candidates[0]} has no native camera control, so the move is sent in words; "
            "models with camera_control in GET /v1/models follow it exactly"
        )
    if services.settings.sandbox:
        adapter = first.adapter
        warnings.append(SANDBOX_WARNING.format(adapter=adapter))
    return warnings


@post(
    "/v1/route/explain",
    status_code=200,
    summary="Explain how a request would be routed, without creating a job",
    dependencies={"owner": Provide(resolve_owner)},
)
async def explain_route(request: Request[Any, Any, Any], services: Svc, owner: Owner) -> RouteExplanation:
    """Same body as POST /v1/videos. Returns the traits, the rule that matched (and the ones
    tried before it), every candidate with why it was kept or dropped, and the warnings."""
    req, upload = await parse_create(request, services)
    rules = services.rules()
    check_model(req, rules)
    image = await _image_of(req, upload, services)
    decision = await decide(req, image, rules, services, owner, refuse=False)
    route = decision.plan
    chain = [*route.candidates, *[a for a in route.dropped if a not in route.candidates]]
    candidates = []
    for alias in chain:
        spec = rules.models[alias]
        shape = shape_for(spec, req.model_dump(), image.width, image.height)
        candidates.append(
            ExplainedCandidate(
                model=alias,
                adapter=spec.adapter,
                kept=alias in route.candidates,
                reason=route.dropped.get(alias, "can serve this request"),
                resolution=shape.resolution,
                seconds=shape.seconds,
                estimated_cost_usd=estimate_cost(spec, shape),
                typical_latency_s=spec.typical_latency_s,
                circuit=services.breakers.state(spec.adapter),
            )
        )
    return RouteExplanation(
        model=req.model,
        rule=route.rule,
        arm=route.arm,
        rules_tried=route.evaluated,
        traits=decision.traits,
        candidates=candidates,
        max_attempts=route.max_attempts,
        warnings=decision.warnings,
    )


def _owned(job: JobRow | None, owner: str, video_id: str) -> JobRow:
    # Another key's job answers 404, not 403: ids of other tenants are not confirmed to exist.
    if job is None or job.owner != owner:
        raise not_found("video", video_id, "video_id")
    return job


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise APIError(
            416,
            "invalid_range",
            f"Range: '{header}' is not a single byte range like bytes=0-1023.",
            "Range",
            headers={"content-range": f"bytes */{size}"},
        )
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        start, end = max(0, size - int(m.group(2))), size - 1
    if start >= size or start > end:
        raise APIError(
            416,
            "invalid_range",
            f"Range: '{header}' is outside the {size}-byte file.",
            "Range",
            headers={"content-range": f"bytes */{size}"},
        )
    return start, end


@get("/v1/models", dependencies={"owner": Provide(resolve_owner)}, summary="The model catalog")
async def list_models(services: Svc, owner: Owner) -> ModelList:
    rules = services.rules()
    available = set(services.adapters)
    return ModelList(
        data=[
            ModelInfo(
                id=alias,
                owned_by=spec.adapter,
                adapter=spec.adapter,
                provider_model=spec.provider_model,
                available=spec.adapter in available,
                description=spec.description,
                resolutions=spec.resolutions,
                durations=spec.durations,
                aspect_ratios=spec.aspect_ratios,
                camera_control=spec.camera_control,
                loop=spec.loop,
                usd_per_second=spec.usd_per_second,
                typical_latency_s=spec.typical_latency_s,
                fallbacks=spec.fallbacks,
            )
            for alias, spec in rules.models.items()
        ]
    )


@get("/healthz", summary="Liveness", include_in_schema=True)
async def healthz(services: Svc) -> dict[str, Any]:
    return {"status": "ok", "sandbox": True} if services.settings.sandbox else {"status": "ok"}


@get("/readyz", summary="Readiness: the database answers and the runner is alive")
async def readyz(services: Svc) -> Response[dict[str, Any]]:
    checks: dict[str, Any] = {"runner": services.runner_alive()}
    try:
        await services.store.get("vid_readyz")
        checks["database"] = True
    except Exception as exc:  # the point is to report, not to raise
        checks["database"] = f"error: {exc}"
    ok = all(v is True for v in checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)


@get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
async def metrics(services: Svc) -> bytes:
    return services.metrics.render()
