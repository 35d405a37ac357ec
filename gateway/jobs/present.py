"""Jobs as the outside sees them: rows rendered as the unified video object, metrics merged."""

from __future__ import annotations

import math
import time
from typing import Any

from gateway.jobs.links import Links
from gateway.jobs.tables import AttemptRow, JobRow, OutboxRow
from gateway.schemas import Attempt, Route, Video, VideoError, VideoOutput
from gateway.status import AttemptStatus, JobStatus
from media import VideoFacts


def _error(raw: dict[str, Any] | None) -> VideoError | None:
    return VideoError.model_validate(raw) if raw else None


def estimated_progress(elapsed_s: float, expected_s: float) -> int:
    """Progress from time alone, for providers that report none (Kling, MiniMax): 90% at the
    model's usual latency, then creeping towards 99 (never 100 before the clip exists)."""
    if expected_s <= 0 or elapsed_s <= 0:
        return 0
    if elapsed_s <= expected_s:
        return int(90 * elapsed_s / expected_s)
    return int(90 + 9 * (1 - math.exp(-(elapsed_s - expected_s) / expected_s)))


def shown_progress(job: JobRow, attempts: list[AttemptRow], now: float) -> int:
    """What the job's progress reads: 100 once done, else the larger of what the provider last
    said (kept as a running maximum) and the estimate for the running attempt. Monotone: a
    fallback's new attempt starts from the progress stored when it was submitted."""
    if job.status == JobStatus.COMPLETED:
        return 100
    live = attempts[-1] if attempts and job.status == JobStatus.IN_PROGRESS else None
    expected = job.request.get("expected_s")
    if live is None or live.submitted_at is None or not expected:
        return job.progress
    return max(job.progress, estimated_progress(now - live.submitted_at, expected))


def video_object(job: JobRow, attempts: list[AttemptRow], links: Links, base: str | None = None) -> Video:
    """`base`: the address the caller reached the gateway at (for absolute links; the configured
    public URL wins); none for webhooks."""
    req = job.request
    out = job.output
    now = time.time()
    return Video(
        id=job.id,
        status=JobStatus(job.status),
        progress=shown_progress(job, attempts, now),
        created_at=int(job.created_at),
        completed_at=int(job.completed_at) if job.completed_at else None,
        expires_at=int(job.expires_at) if job.expires_at else None,
        model=job.model,
        requested_model=job.requested_model,
        prompt=job.prompt,
        seconds=str(req["shape"]["seconds"]),
        # what was made once there is a clip (a provider may round), what is planned until then
        size=f"{out['width']}x{out['height']}" if out else f"{req['shape']['width']}x{req['shape']['height']}",
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
                    status=AttemptStatus(a.status),
                    submitted_at=a.submitted_at,
                    finished_at=a.finished_at,
                    cancel_requested_at=a.cancel_requested_at,
                    cost_usd=a.cost_usd,
                    error=_error(a.error),
                )
                for a in attempts
            ],
        ),
        output=VideoOutput(url=links.content_url(job.id, now, base=base, until=job.expires_at), **out) if out else None,
        metrics=(metrics := _metrics(job, attempts)),
        usage=_usage(job, attempts, metrics),
        warnings=job.warnings or [],
        metadata=job.metadata_,
        error=_error(job.error),
    )


def _metrics(job: JobRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    """The stored metrics, with the cost summed from the attempts now: a task followed to its end
    after the job finished (a trail) adds its cost later."""
    m = dict(job.metrics or {})
    if "cost_usd" in m:
        m["cost_usd"] = round(sum(a.cost_usd or 0.0 for a in attempts), 6)
    return m


def _usage(job: JobRow, attempts: list[AttemptRow], metrics: dict[str, Any]) -> dict[str, Any]:
    out = job.output or {}
    return {
        "duration_seconds": out.get("duration_s", float(job.request["shape"]["seconds"])),
        "cost_usd": metrics.get("cost_usd", job.estimate_usd),
        "cost_estimated": metrics.get("cost_estimated", True),
        "model": job.model,
        "adapter": job.adapter,
        "rule": job.route.get("rule"),
        "arm": job.route.get("arm"),
        "attempts": len(attempts),
        "total_s": metrics.get("total_s"),
        "warnings": list(job.warnings or []),
    }


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


def history(job: JobRow, attempts: list[AttemptRow], outbox: list[OutboxRow]) -> list[dict[str, Any]]:
    """`GET /v1/videos/{id}/events`: the job's life read back from its rows, oldest first."""
    events: list[dict[str, Any]] = [{"type": "video.created", "created_at": job.created_at, "data": {}}]
    for a in attempts:
        base = {"attempt": a.seq, "model": a.model, "adapter": a.adapter, "provider_task_id": a.provider_task_id}
        if a.submitted_at:
            events.append({"type": "attempt.submitted", "created_at": a.submitted_at, "data": base})
        if a.cancel_requested_at:
            events.append({"type": "attempt.cancel_requested", "created_at": a.cancel_requested_at, "data": base})
        if a.finished_at:
            end = {**base, "status": a.status, "error": a.error, "cost_usd": a.cost_usd}
            events.append({"type": f"attempt.{a.status}", "created_at": a.finished_at, "data": end})
    if job.completed_at:
        events.append({"type": f"video.{job.status}", "created_at": job.completed_at, "data": {"error": job.error}})
    for row in outbox:
        data = {"id": row.id, "status": row.status, "tries": row.tries, "log": row.log, **_public(row)}
        events.append({"type": row.kind, "created_at": row.created_at, "data": data})
    return sorted(events, key=lambda e: e["created_at"])


def _public(row: OutboxRow) -> dict[str, Any]:
    p = row.payload
    if row.kind == "webhook":
        return {"url": p.get("url"), "event": p.get("event")}
    return {"attempt_id": p.get("attempt_id"), "provider_task_id": p.get("task_id"), "reason": p.get("reason")}
