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
