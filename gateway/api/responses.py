"""Response shapes only the HTTP API returns: lists, deletions, the catalog, route explanations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.schemas import Video


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoEvent(BaseModel):
    """One entry of a job's history: its own state changes, its attempts, and every delivery
    (webhook, provider cancel, trail) with each try."""

    object: Literal["video.event"] = "video.event"
    type: str
    created_at: float
    data: dict[str, Any] = Field(default_factory=dict)


class VideoEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoEvent]


class DeletedVideo(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str
    adapter: str
    provider_model: str
    available: bool
    description: str = ""
    resolutions: list[str]
    durations: list[int]
    aspect_ratios: list[str] | None
    camera_control: bool
    loop: bool
    usd_per_second: dict[str, float]
    typical_latency_s: float | None
    fallbacks: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class ExplainedCandidate(BaseModel):
    model: str
    adapter: str
    kept: bool
    reason: str
    resolution: str
    seconds: int
    estimated_cost_usd: float | None = None
    typical_latency_s: float | None = None
    circuit: str = Field(description="closed, open or half_open.")


class RouteExplanation(BaseModel):
    """`POST /v1/route/explain`: how a request would be routed, without creating a job."""

    object: Literal["route.explanation"] = "route.explanation"
    model: str
    rule: str | None
    arm: str | None = None
    rules_tried: list[dict[str, Any]]
    traits: dict[str, Any]
    candidates: list[ExplainedCandidate]
    max_attempts: int | None = None
    warnings: list[str]


class ComparisonArm(BaseModel):
    label: str = Field(description="A, B, C ... in the order the models were given.")
    model: str = Field(description="What the arm asked for (an alias or `auto`).")
    video: Video


class ComparisonVotes(BaseModel):
    total: int = 0
    best: dict[str, int] = Field(default_factory=dict, description="Votes for each arm's label as the best.")
    tie: int = 0
    both_bad: int = 0


class ComparisonSummary(BaseModel):
    first_finished: str | None = Field(default=None, description="The label of the arm that completed first.")
    completed: int = 0
    failed: int = 0
    seconds: dict[str, float | None] = Field(default_factory=dict, description="From accepted to finished, per arm.")
    cost_usd: dict[str, float] = Field(default_factory=dict)
    total_cost_usd: float = 0.0
    quality: dict[str, dict[str, Any] | None] = Field(default_factory=dict, description="metrics.quality per arm.")
    failures: dict[str, dict[str, Any]] = Field(default_factory=dict, description="The error of each failed arm.")
    votes: ComparisonVotes = Field(default_factory=ComparisonVotes)


class Comparison(BaseModel):
    """One input run on several models side by side (`POST /v1/comparisons`)."""

    id: str
    object: Literal["comparison"] = "comparison"
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"]
    created_at: int
    prompt: str
    models: list[str]
    arms: list[ComparisonArm]
    summary: ComparisonSummary
    metadata: dict[str, str] | None = None


class ComparisonList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Comparison]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VoteCreate(BaseModel):
    model_config = {"extra": "forbid"}

    choice: str = Field(description="The best arm's label (A, B, ...), `tie`, or `both_bad`.")
    voter: str = Field(default="", max_length=128, description="Who votes, within your key (one vote each).")


class Vote(BaseModel):
    object: Literal["comparison.vote"] = "comparison.vote"
    comparison_id: str
    choice: str
    voter: str
    created_at: float
    revealed: dict[str, str] = Field(description="Each arm's label and the model that made it, shown after the vote.")


class Leaderboard(BaseModel):
    object: Literal["leaderboard"] = "leaderboard"
    method: str = "bradley_terry"
    votes: int
    comparisons: int
    data: list[dict[str, Any]]
