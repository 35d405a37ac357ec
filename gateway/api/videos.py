"""`/v1/videos`: create, list, retrieve, download, cancel, delete.

Create reads top to bottom as the first half of a job's life: parse the body, resolve the
image, decide the route, write the durable job, wake the runner. The runner does the rest.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream

from adapters.base import InputImage
from gateway.api.auth import Caller, Owner, Svc, owner_dependency, refusal
from gateway.api.body import idempotency_key, image_of, key_reused, parse_create, request_hash
from gateway.api.create import check_parameters, new_job, shadow_job
from gateway.api.links import render, signed_dependency
from gateway.api.openapi import errors
from gateway.api.responses import DeletedVideo, VideoEventList, VideoList
from gateway.errors import APIError, not_found
from gateway.jobs.limits import LimitReached
from gateway.jobs.present import history
from gateway.jobs.store import IdempotencyConflict
from gateway.jobs.tables import AttemptRow, JobRow
from gateway.routing.catalog import RulesFile
from gateway.routing.decide import Decision
from gateway.routing.planner import check_model
from gateway.schemas import CreateVideoRequest, Video
from gateway.status import TERMINAL_JOB, JobStatus


class VideosController(Controller):
    path = "/v1/videos"
    dependencies = owner_dependency()

    @post(
        "/",
        status_code=202,
        summary="Create a video from an image and a motion prompt",
        responses={
            **errors(400, 413, 415, 422, 503),
            200: ResponseSpec(Video, description="Replayed: the Idempotency-Key was used with this body before."),
        },
    )
    async def create(self, request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Video]:
        """JSON (`image`: URL or data URI) or multipart (`input_reference`: the file). See docs/api.md."""
        t0 = time.perf_counter()
        key = idempotency_key(request)
        req, upload = await parse_create(request, services)
        job, created, attempts = await create_video(services, req, upload, owner, key, t0)
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return Response(render(services, request, job, attempts), status_code=202 if created else 200, headers=headers)

    @get("/", summary="List videos", responses=errors(422))
    async def list_videos(
        self,
        request: Request[Any, Any, Any],
        services: Svc,
        owner: Owner,
        status: str | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int = Parameter(default=20, ge=1, le=100),
        order: str = Parameter(default="desc", pattern="^(asc|desc)$"),
    ) -> VideoList:
        if status is not None and status not in set(JobStatus):
            raise APIError(422, "invalid_field", f"status: one of {', '.join(JobStatus)}.", "status")
        rows, has_more = await services.store.list(
            None if owner.admin else owner, status=status, model=model, after=after, limit=limit, order=order
        )
        attempts = await services.store.attempts_for([r.id for r in rows])
        data = [render(services, request, r, attempts[r.id]) for r in rows]
        return VideoList(
            data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=has_more
        )

    @get("/{video_id:str}", summary="Retrieve a video", responses=errors(404))
    async def retrieve(self, request: Request[Any, Any, Any], video_id: str, services: Svc, owner: Owner) -> Video:
        job, attempts = await services.store.get_with_attempts(video_id)
        return render(services, request, _owned(job, owner, video_id), attempts)

    @get(
        "/{video_id:str}/events",
        summary="A video's history: state changes, attempts, deliveries",
        responses=errors(404),
    )
    async def events(self, video_id: str, services: Svc, owner: Owner) -> VideoEventList:
        job, attempts = await services.store.get_with_attempts(video_id)
        job = _owned(job, owner, video_id)
        rows = await services.store.outbox_for(video_id)
        return VideoEventList.model_validate({"data": history(job, attempts, rows)})

    @get(
        "/{video_id:str}/content",
        summary="Download the MP4 (HTTP Range supported)",
        responses={**errors(400, 404, 409, 410, 416, 422), 206: ResponseSpec(None, description="The Range asked for.")},
        media_type="video/mp4",
        dependencies=signed_dependency(),
    )
    async def content(
        self,
        request: Request[Any, Any, Any],
        video_id: str,
        services: Svc,
        owner: Owner,
        variant: str = "video",
    ) -> Response[bytes] | Stream:
        job = _owned(await services.store.get(video_id), owner, video_id)
        if variant != "video":
            raise APIError(422, "invalid_field", "variant: only 'video' is available.", "variant")
        return await stream_content(request, services, job)

    @post("/{video_id:str}/cancel", status_code=200, summary="Cancel a video job", responses=errors(404, 409))
    async def cancel(self, request: Request[Any, Any, Any], video_id: str, services: Svc, owner: Owner) -> Video:
        job = _owned(await services.store.get(video_id), owner, video_id)
        if job.status in TERMINAL_JOB:
            raise APIError(
                409, "video_already_finished", f"Video {video_id} is already {job.status}; nothing to cancel."
            )
        row, ended = await cancel_job(services, video_id)
        if row is not None and row.status in TERMINAL_JOB and not ended:
            raise APIError(
                409, "video_already_finished", f"Video {video_id} is already {row.status}; nothing to cancel."
            )
        fresh, attempts = await services.store.get_with_attempts(video_id)
        assert fresh is not None
        return render(services, request, fresh, attempts)

    @post(
        ["/{video_id:str}/remix", "/{video_id:str}/extend", "/{video_id:str}/edit"],
        summary="Remix, extend, edit: not offered (every backend here makes a video from an image)",
        responses=errors(400, 404),
        status_code=400,
    )
    async def unsupported(self, request: Request[Any, Any, Any], video_id: str, services: Svc, owner: Owner) -> None:
        _owned(await services.store.get(video_id), owner, video_id)
        verb = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        raise APIError(
            400,
            "unsupported_operation",
            f"{verb}: not supported. i2v-gateway turns an image and a prompt into a video (POST /v1/videos); no "
            f"backend here can {verb} an existing video. For a variation, create a new video from the same image "
            "with another prompt or seed; to continue a clip, use its last frame as the new image.",
        )

    @delete(
        "/{video_id:str}",
        status_code=200,
        summary="Delete a finished video and its stored file",
        responses=errors(404, 409),
    )
    async def delete_video(self, video_id: str, services: Svc, owner: Owner) -> DeletedVideo:
        job = _owned(await services.store.get(video_id), owner, video_id)
        if job.status not in TERMINAL_JOB:
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


async def stream_content(request: Request[Any, Any, Any], services: Svc, job: JobRow) -> Response[bytes] | Stream:
    """A finished job's MP4 from disk (HTTP Range honoured): 409 before it exists, 410 once it
    expired. Up to `CHUNK` bytes are read whole in one trip to a worker thread; more are streamed
    in chunks (memory stays flat for any size), at four thread trips for the first chunk."""
    video_id = job.id
    if job.status != JobStatus.COMPLETED or not job.output:
        raise APIError(
            409, "video_not_ready", f"Video {video_id} is {job.status}; content exists once it is completed."
        )
    if (job.expires_at and time.time() >= job.expires_at) or not services.blobs.exists(job.output["sha256"]):
        raise APIError(
            410,
            "video_expired",
            f"Video {video_id}'s file was deleted when it expired (I2V_RETENTION_S); its facts stay in the "
            "video object. Download content before expires_at.",
        )
    path = services.blobs.path(job.output["sha256"])
    size = path.stat().st_size
    headers = {
        "accept-ranges": "bytes",
        "etag": f'"{job.output["sha256"]}"',
        "content-disposition": f'inline; filename="{video_id}.mp4"',
    }
    rng = _parse_range(request.headers.get("range"), size)
    start, end = rng if rng is not None else (0, size - 1)
    headers["content-length"] = str(end - start + 1)
    if rng is not None:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    status = 206 if rng else 200
    if end - start + 1 <= CHUNK:
        data = await anyio.to_thread.run_sync(_read, path, start, end - start + 1)
        return Response(data, status_code=status, media_type="video/mp4", headers=headers)
    return Stream(_chunks(path, start, end), status_code=status, media_type="video/mp4", headers=headers)


async def create_video(
    services: Svc,
    req: CreateVideoRequest,
    upload: bytes | None,
    owner: Caller,
    key: str | None,
    t0: float | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> tuple[JobRow, bool, list[AttemptRow]]:
    """The create path every front door shares (`/v1/videos` and the provider façades): image,
    route, durable job. Returns the job, whether it is new (else an Idempotency-Key replay) and
    its attempts so far."""
    t0 = time.perf_counter() if t0 is None else t0
    rules = services.rules()
    check_model(req, rules)  # refuse an unknown model before paying for an image download
    image, notes = await image_of(req, upload, services)
    decision = await services.decide(req, image, rules, owner)
    check_parameters(req, decision.plan.candidates, rules, services.adapters)
    job = new_job(
        req,
        image,
        decision,
        rules,
        owner,
        idempotency_key=key,
        request_hash=request_hash(req, image.sha256),
        notes=notes,
        extra=extra,
    )
    services.blobs.put(image.data, image.sha256)
    job.metrics = {"create_ms": round((time.perf_counter() - t0) * 1000, 2)}
    try:
        job, created = await services.store.create(job, services.limits.guard(owner.key, 1, job.estimate_usd or 0.0))
    except LimitReached as exc:
        raise refusal(services, owner.name, exc) from exc
    except IdempotencyConflict as exc:
        raise key_reused(exc) from exc
    if not created:
        _, attempts = await services.store.get_with_attempts(job.id)
        return job, False, attempts
    services.metrics.jobs_created.labels(req.model).inc()
    await _start_shadow(services, req, image, decision, rules, owner, job.id)
    services.runner.wake()
    return job, True, []


async def _start_shadow(
    services: Svc,
    req: CreateVideoRequest,
    image: InputImage,
    decision: Decision,
    rules: RulesFile,
    owner: str,
    job_id: str,
) -> None:
    """Run the experiment's shadow model too when this request is in its share and today's caps
    allow (never visible to the client; measured in GET /v1/experiments/{name})."""
    made = shadow_job(req, image, decision, rules, owner, job_id)
    if made is None:
        return
    shadow, cost = made
    exp = rules.experiment(shadow.experiment or "")
    if exp is None or exp.shadow is None or rules.models[shadow.model].adapter not in services.available:
        return
    caps = (exp.shadow.max_jobs_per_day, exp.shadow.max_usd_per_day)
    if await services.experiments.take_shadow_slot(exp.name, cost, *caps):
        await services.store.create(shadow)
        services.metrics.shadow_jobs.labels(exp.name, "started").inc()
    else:
        services.metrics.shadow_jobs.labels(exp.name, "capped").inc()


async def cancel_job(services: Svc, video_id: str) -> tuple[JobRow | None, bool]:
    """Ask for a job's end: at once when it never reached a provider (webhook in the outbox),
    else through its runner. Returns the job as it is now, and whether this call ended it."""
    row, ended = await services.store.request_cancel(video_id, time.time())
    if ended and row is not None:
        services.metrics.jobs_finished.labels(row.model, "", JobStatus.CANCELLED, "cancelled").inc()
        services.runner.wake_outbox()
    if row is not None and (row.status not in TERMINAL_JOB or ended):
        services.runner.request_cancel(video_id)
    return row, ended


def _owned(job: JobRow | None, owner: Caller, video_id: str) -> JobRow:
    # Another key's job answers 404, not 403: ids of other tenants are not confirmed to exist.
    if job is None or not owner.sees(job.owner):
        raise not_found("video", video_id, "video_id")
    return job


CHUNK = 1 << 20


def _read(path: Path, start: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(size)


async def _chunks(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        left = end - start + 1
        while left > 0:
            data = await f.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


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
