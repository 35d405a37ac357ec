"""`/v1/comparisons`: one input on 2 to 6 models side by side, human votes, and the leaderboard.

Each arm is an ordinary job (same runner, durability and webhooks), linked to its comparison;
with `fallbacks` off (the default) an arm runs only the model it names, so a comparison compares
models and not fallback chains. Reads render the arms' videos as they are now, with a summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from gateway.api.auth import Caller, Owner, Svc, owner_dependency, refusal
from gateway.api.body import idempotency_key, image_of, key_reused, parse_create, request_hash
from gateway.api.create import check_parameters, new_job
from gateway.api.links import render as video_in
from gateway.api.openapi import errors
from gateway.api.responses import (
    Comparison,
    ComparisonArm,
    ComparisonList,
    ComparisonSummary,
    ComparisonVotes,
    Leaderboard,
    Vote,
    VoteCreate,
)
from gateway.api.videos import cancel_job
from gateway.errors import APIError, not_found
from gateway.jobs.ids import new_id
from gateway.jobs.limits import LimitReached
from gateway.jobs.store import IdempotencyConflict
from gateway.jobs.tables import AttemptRow, ComparisonRow, JobRow, VoteRow
from gateway.routing.planner import check_model
from gateway.schemas import CreateComparisonRequest, CreateVideoRequest, Video
from gateway.stats import Outcome, bradley_terry
from gateway.status import TERMINAL_JOB, JobStatus

LABELS = "ABCDEF"
TIE, BOTH_BAD = "tie", "both_bad"


class ComparisonsController(Controller):
    path = "/v1/comparisons"
    dependencies = owner_dependency()

    @post(
        "/",
        status_code=202,
        summary="Run one input on several models side by side",
        responses={**errors(400, 413, 415, 422, 503), 200: ResponseSpec(Comparison, description="Replayed.")},
    )
    async def create(self, request: Request[Any, Any, Any], services: Svc, owner: Owner) -> Response[Comparison]:
        """Like `POST /v1/videos` (JSON or multipart), with `models` (2 to 6) instead of `model`."""
        key = idempotency_key(request)
        req, upload = await parse_create(request, services, CreateComparisonRequest)
        rules = services.rules()
        arm_requests = [
            CreateVideoRequest.model_validate({**req.model_dump(exclude={"models", "fallbacks"}), "model": m})
            for m in req.models
        ]
        for i, arm in enumerate(arm_requests):
            try:
                check_model(arm, rules)
            except APIError as exc:
                raise APIError(422, exc.code, f"models[{i}]: {exc.message}", f"models.{i}") from exc
        image, notes = await image_of(req, upload, services)
        comparison_id = new_id("cmp")
        jobs: list[JobRow] = []
        for i, arm in enumerate(arm_requests):
            decision = await services.decide(arm, image, rules, owner, refuse=False)
            plan = decision.plan
            named = arm.model != "auto" and not req.fallbacks
            if not plan.candidates or (named and plan.candidates[0] != arm.model):
                why = "; ".join(f"{m}: {r}" for m, r in plan.dropped.items()) or "no model fits"
                advice = ", or set fallbacks: true." if named else "."
                raise APIError(
                    422,
                    "arm_cannot_run",
                    f"models[{i}]: {arm.model} cannot serve this request ({why}). "
                    f"Change the request or pick another model{advice}",
                    f"models.{i}",
                )
            check_parameters(arm, plan.candidates, rules, services.adapters)
            jobs.append(
                new_job(
                    arm,
                    image,
                    decision,
                    rules,
                    owner,
                    comparison_id=comparison_id,
                    fallbacks=req.fallbacks,
                    notes=notes,
                )
            )
        services.blobs.put(image.data, image.sha256)
        row = ComparisonRow(
            id=comparison_id,
            owner=str(owner),
            prompt=req.prompt,
            arms=[{"model": m, "job_id": j.id} for m, j in zip(req.models, jobs, strict=True)],
            request={"fallbacks": req.fallbacks, "image": jobs[0].request["image"]},
            metadata_=req.metadata,
            idempotency_key=key,
            request_hash=request_hash(req, image.sha256),
            created_at=time.time(),
        )
        guard = services.limits.guard(owner.key, len(jobs), sum(j.estimate_usd or 0.0 for j in jobs))
        try:
            row, created = await services.comparisons.create(row, jobs, guard)
        except LimitReached as exc:
            raise refusal(services, owner.name, exc) from exc
        except IdempotencyConflict as exc:
            raise key_reused(exc) from exc
        if not created:
            return Response(
                await _load(services, request, row), status_code=200, headers={"Idempotent-Replayed": "true"}
            )
        for arm in arm_requests:
            services.metrics.jobs_created.labels(arm.model).inc()
        services.runner.wake()
        present = partial(video_in, services, request)
        return Response(render(row, [(j, []) for j in jobs], [], present), status_code=202)

    @get("/", summary="List comparisons", responses=errors(422))
    async def list_comparisons(
        self,
        request: Request[Any, Any, Any],
        services: Svc,
        owner: Owner,
        after: str | None = None,
        limit: int = Parameter(default=20, ge=1, le=100),
    ) -> ComparisonList:
        rows, has_more = await services.comparisons.list(None if owner.admin else owner, after=after, limit=limit)
        data = [await _load(services, request, row) for row in rows]
        return ComparisonList(
            data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None, has_more=has_more
        )

    @get(
        "/{comparison_id:str}",
        summary="Retrieve a comparison: every arm's video side by side, and a summary",
        responses=errors(404),
    )
    async def retrieve(
        self, request: Request[Any, Any, Any], comparison_id: str, services: Svc, owner: Owner
    ) -> Comparison:
        return await _load(services, request, await _owned(services, owner, comparison_id))

    @post(
        "/{comparison_id:str}/cancel", status_code=200, summary="Cancel every arm still running", responses=errors(404)
    )
    async def cancel(
        self, request: Request[Any, Any, Any], comparison_id: str, services: Svc, owner: Owner
    ) -> Comparison:
        row = await _owned(services, owner, comparison_id)
        for job, _ in await services.comparisons.arms(row):
            if job.status not in TERMINAL_JOB:
                await cancel_job(services, job.id)
        return await _load(services, request, row)

    @post(
        "/{comparison_id:str}/votes",
        status_code=201,
        summary="Vote for the best arm (blind), a tie, or all bad",
        responses=errors(400, 404, 409, 422),
    )
    async def vote(self, comparison_id: str, data: VoteCreate, services: Svc, owner: Owner) -> Vote:
        row = await _owned(services, owner, comparison_id)
        arms = await services.comparisons.arms(row)
        labels = LABELS[: len(row.arms)]
        if any(job.status not in TERMINAL_JOB for job, _ in arms):
            raise APIError(
                409,
                "comparison_in_progress",
                f"Comparison {comparison_id} is still running; vote once every arm has finished.",
            )
        choice = data.choice.strip()
        choice = choice.upper() if len(choice) == 1 else choice.lower()
        if choice not in (*labels, TIE, BOTH_BAD):
            allowed = ", ".join([*labels, TIE, BOTH_BAD])
            raise APIError(422, "invalid_field", f"choice: '{data.choice}' is not one of {allowed}.", "choice")
        if choice in labels and arms[labels.index(choice)][0].status != JobStatus.COMPLETED:
            raise APIError(
                422, "invalid_field", f"choice: arm {choice} has no video to prefer (it did not complete).", "choice"
            )
        models = [job.model for job, _ in arms]
        vote = VoteRow(
            id=new_id("vote"),
            comparison_id=row.id,
            owner=str(owner),
            voter=data.voter,
            choice=choice,
            models=models,
            created_at=time.time(),
        )
        saved = await services.comparisons.vote(vote)
        return Vote(
            comparison_id=row.id,
            choice=saved.choice,
            voter=saved.voter,
            created_at=saved.created_at,
            revealed=dict(zip(labels, models, strict=True)),
        )


@get(
    "/v1/leaderboard",
    summary="Models ranked by human votes (Bradley-Terry, 95% intervals)",
    dependencies=owner_dependency(),
    responses=errors(),
)
async def leaderboard(services: Svc, owner: Owner) -> Leaderboard:
    votes = await services.comparisons.votes(None if owner.admin else owner)
    ratings = bradley_terry(games(votes))
    return Leaderboard(
        votes=len(votes),
        comparisons=len({v.comparison_id for v in votes}),
        data=[r.model_dump() for r in ratings],
    )


def games(votes: list[VoteRow]) -> list[tuple[str, str, Outcome]]:
    """Votes as pairwise games: the best arm beats every other arm; a tie or `both_bad` ties
    every pair. Two arms of the same model play no game."""
    out: list[tuple[str, str, Outcome]] = []
    for v in votes:
        labels = LABELS[: len(v.models)]
        for i in range(len(v.models)):
            for j in range(i + 1, len(v.models)):
                a, b = v.models[i], v.models[j]
                if a == b:
                    continue
                if v.choice in (TIE, BOTH_BAD):
                    out.append((a, b, "tie"))
                elif v.choice == labels[i]:
                    out.append((a, b, "a"))
                elif v.choice == labels[j]:
                    out.append((a, b, "b"))
    return out


async def _owned(services: Svc, owner: Caller, comparison_id: str) -> ComparisonRow:
    row = await services.comparisons.get(comparison_id)
    if row is None or not owner.sees(row.owner):  # another key's comparison is not confirmed to exist
        raise not_found("comparison", comparison_id, "comparison_id")
    return row


async def _load(services: Svc, request: Request[Any, Any, Any], row: ComparisonRow) -> Comparison:
    arms, votes = await services.comparisons.arms(row), await services.comparisons.votes_on(row.id)
    return render(row, arms, votes, partial(video_in, services, request))


def render(
    row: ComparisonRow,
    arms: list[tuple[JobRow, list[AttemptRow]]],
    votes: list[VoteRow],
    present: Callable[[JobRow, list[AttemptRow]], Video],
) -> Comparison:
    videos = [present(job, attempts) for job, attempts in arms]
    labels = LABELS[: len(videos)]
    summary = ComparisonSummary()
    finished = [
        (v.completed_at or 0, label) for label, v in zip(labels, videos, strict=True) if v.status == "completed"
    ]
    summary.first_finished = min(finished)[1] if finished else None
    for label, video in zip(labels, videos, strict=True):
        summary.cost_usd[label] = float(video.metrics.get("cost_usd") or 0.0)
        summary.seconds[label] = video.metrics.get("total_s")
        summary.quality[label] = video.metrics.get("quality")
        if video.status == JobStatus.COMPLETED:
            summary.completed += 1
        elif video.status == JobStatus.FAILED and video.error:
            summary.failed += 1
            summary.failures[label] = video.error.model_dump()
    summary.total_cost_usd = round(sum(summary.cost_usd.values()), 6)
    tally = ComparisonVotes(total=len(votes), best={label: 0 for label in labels})
    for v in votes:
        if v.choice == TIE:
            tally.tie += 1
        elif v.choice == BOTH_BAD:
            tally.both_bad += 1
        elif v.choice in tally.best:
            tally.best[v.choice] += 1
    summary.votes = tally
    return Comparison(
        id=row.id,
        status=_status([v.status for v in videos]),
        created_at=int(row.created_at),
        prompt=row.prompt,
        models=[arm["model"] for arm in row.arms],
        arms=[
            ComparisonArm(label=label, model=arm["model"], video=video)
            for label, arm, video in zip(labels, row.arms, videos, strict=True)
        ],
        summary=summary,
        metadata=row.metadata_,
    )


def _status(statuses: list[str]) -> Any:
    if any(s not in TERMINAL_JOB for s in statuses):
        return "queued" if all(s == JobStatus.QUEUED for s in statuses) else "in_progress"
    if all(s == JobStatus.CANCELLED for s in statuses):
        return "cancelled"
    return "completed" if JobStatus.COMPLETED in statuses else "failed"
