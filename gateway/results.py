"""Results: bring the finished MP4 home, read its facts back, merge metrics, and render jobs
as the unified video object."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from adapters.base import ProviderError, VideoSource
from gateway.blobs import BlobStore
from gateway.db import AttemptRow, JobRow
from gateway.media import NotAVideo, VideoFacts, probe
from gateway.schemas import Attempt, Route, Video, VideoError, VideoOutput


async def store_video(source: VideoSource, blobs: BlobStore, client: httpx.AsyncClient, max_bytes: int) -> VideoFacts:
    """Download (or take) the MP4, store it content-addressed, and probe what was stored.

    A result that is not a readable video is a provider error, so the runner can fall back.
    """
    tmp = blobs.temp_path()
    try:
        if source.content is not None:
            tmp.write_bytes(source.content)
        elif source.url:
            await _download(source, tmp, client, max_bytes)
        else:
            raise ProviderError("provider_error", "the provider reported success but gave no video")
        try:
            facts = await asyncio.to_thread(probe, tmp)
        except NotAVideo as exc:
            raise ProviderError("provider_error", f"the provider's result is not a video: {exc}") from exc
        await asyncio.to_thread(blobs.put_file, tmp)
        return facts
    finally:
        tmp.unlink(missing_ok=True)


async def _download(source: VideoSource, dest: Any, client: httpx.AsyncClient, max_bytes: int) -> None:
    assert source.url is not None
    try:
        async with client.stream("GET", source.url, headers=source.headers) as resp:
            if resp.status_code in (403, 404, 410):
                raise ProviderError(
                    "provider_error",
                    f"the result URL answered HTTP {resp.status_code} (expired or missing)",
                    http_status=resp.status_code,
                    retryable=True,
                )
            if resp.status_code >= 400:
                raise ProviderError(
                    "provider_unavailable",
                    f"downloading the result gave HTTP {resp.status_code}",
                    http_status=resp.status_code,
                )
            size = 0
            with dest.open("wb") as f:
                async for chunk in resp.aiter_bytes(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ProviderError("provider_error", "the result is larger than max_video_bytes")
                    f.write(chunk)
    except httpx.TimeoutException as exc:
        raise ProviderError("timeout", "downloading the result timed out") from exc
    except httpx.TransportError as exc:
        raise ProviderError("provider_unavailable", f"downloading the result failed: {exc}") from exc


def _error(raw: dict[str, Any] | None) -> VideoError | None:
    return VideoError.model_validate(raw) if raw else None


def video_object(job: JobRow, attempts: list[AttemptRow]) -> Video:
    req = job.request
    out = job.output
    return Video(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=100 if job.status == "completed" else job.progress,
        created_at=int(job.created_at),
        completed_at=int(job.completed_at) if job.completed_at else None,
        model=job.model,
        requested_model=job.requested_model,
        prompt=job.prompt,
        seconds=str(req["shape"]["seconds"]),
        size=f"{req['shape']['width']}x{req['shape']['height']}",
        route=Route(
            rule=job.route.get("rule"),
            arm=job.route.get("arm"),
            traits=job.route.get("traits", {}),
            candidates=job.route.get("candidates", []),
            attempts=[
                Attempt(
                    model=a.model,
                    adapter=a.adapter,
                    provider_task_id=a.provider_task_id,
                    status=a.status,
                    submitted_at=a.submitted_at,
                    finished_at=a.finished_at,
                    error=_error(a.error),
                )
                for a in attempts
            ],
        ),
        output=VideoOutput(url=f"/v1/videos/{job.id}/content", **out) if out else None,
        metrics=job.metrics or {},
        warnings=job.warnings or [],
        metadata=job.metadata_,
        error=_error(job.error),
    )


def merged_metrics(
    job: JobRow, attempts: list[AttemptRow], now: float, facts: VideoFacts | None, fetch_ms: float = 0.0
) -> dict[str, Any]:
    first_submit = min((a.submitted_at for a in attempts if a.submitted_at), default=None)
    cost = sum(a.cost_usd or 0.0 for a in attempts)
    m: dict[str, Any] = dict(job.metrics or {})
    m.update(
        queue_s=round(first_submit - job.created_at, 3) if first_submit else None,
        run_s=round(now - first_submit, 3) if first_submit else None,
        total_s=round(now - job.created_at, 3),
        gateway_overhead_ms=m.get("create_ms", 0.0),  # the gateway's own time on the request path
        fetch_s=round(fetch_ms / 1000, 3),  # result download, probe and store
        cost_usd=round(cost, 6),
        cost_estimated=any(a.usage.get("cost_source") == "catalog" for a in attempts),
        video_seconds=facts.duration_s if facts else 0.0,
        attempts=len(attempts),
        provider=attempts[-1].usage if attempts else {},
    )
    return m
