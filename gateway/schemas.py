"""The two shapes every layer speaks: the create request and the unified video object.

The API validates the request into `CreateVideoRequest`; traits and routing read it; the job
runner renders jobs as `Video` for webhooks, as the API does for clients. The shapes follow the
OpenAI `/v1/videos` convention so existing clients work by changing `base_url`; everything the
gateway adds lives in extra fields, never renamed common ones.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from adapters.base import CameraMove
from gateway.status import AttemptStatus, JobStatus

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_ASPECT = re.compile(r"^(\d{1,2}):(\d{1,2})$")
#: The resolution tiers the catalog and the router know, by the short side in pixels.
RESOLUTION_HEIGHT = {"480p": 480, "512p": 512, "540p": 540, "720p": 720, "768p": 768, "1080p": 1080}
SIDE_LIMITS = (128, 4096)  #: smallest and largest side a `size` may ask for


def _clean(value: Any, path: str = "") -> None:
    """Refuse what no database stores alike: NUL characters and non-finite numbers, anywhere
    in the body (SQLite would keep them, PostgreSQL refuses them with a 500). The error's
    context names the field (`storable` errors: `ctx.path`)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError("storable", "contains a NUL character (\\u0000); remove it", {"path": path})
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PydanticCustomError("storable", "must be a finite number", {"path": path})
    elif isinstance(value, dict):
        for k, v in value.items():
            _clean(k, path)
            _clean(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _clean(v, f"{path}.{i}" if path else str(i))


class ImageReference(BaseModel):
    """OpenAI's object form of `input_reference`."""

    model_config = ConfigDict(extra="forbid")
    image_url: str


class CreateVideoRequest(BaseModel):
    """`POST /v1/videos`. The image comes as `image` (URL or data URI), `input_reference`
    (object form, or a multipart file handled by the API layer)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="What should move, and how.")
    model: str = Field(default="auto", description="A catalog alias, or `auto` to let the router choose.")
    image: str | None = Field(default=None, description="An http(s) URL or a data URI.")
    input_reference: ImageReference | None = None
    seconds: int | None = Field(
        default=None,
        ge=1,
        le=60,
        description="Clip length; the chosen model's nearest length is made (a warning says so) unless "
        "`strict_duration` is set.",
    )
    strict_duration: bool = Field(
        default=False, description="Use only models that make exactly `seconds`; refuse when none can."
    )
    size: str | None = Field(
        default=None,
        description="WIDTHxHEIGHT, e.g. 1280x720: the image is centre-cropped to its aspect ratio and the "
        "chosen model makes its nearest resolution (the response's `size` is what was made).",
    )
    resolution: str | None = Field(default=None, description="480p, 720p, 768p or 1080p.")
    aspect_ratio: str | None = Field(default=None, description="e.g. 16:9; default follows the image.")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    negative_prompt: str | None = None
    camera: CameraMove | None = None
    loop: bool = False
    tier: Literal["realtime", "standard", "bulk"] = "standard"
    max_cost_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    deadline_s: float | None = Field(default=None, gt=0, le=7 * 86400, allow_inf_nan=False)
    webhook_url: str | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    parameters: dict[str, Any] | None = Field(default=None, description="Passed through to the provider.")
    user: str | None = Field(default=None, max_length=256)
    batch_id: str | None = Field(
        default=None, max_length=128, description="Marks the request as part of a batch: routed as bulk volume."
    )

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        _clean(data)
        return data

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_may_be_string(cls, v: Any) -> Any:
        # OpenAI sends seconds as a string ("4"); accept "5", "5s", 5.
        if isinstance(v, str):
            v = v.strip().removesuffix("s")
            if not v.isdigit():
                raise ValueError('must be a whole number of seconds, e.g. "5"')
            return int(v)
        return v

    @field_validator("size")
    @classmethod
    def _size_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _SIZE.match(v)
        if not m:
            raise ValueError("must look like WIDTHxHEIGHT, e.g. 1280x720")
        low, high = SIDE_LIMITS
        w, h = (int(side) for side in m.groups())
        if not (low <= w <= high and low <= h <= high):
            raise ValueError(f"each side must be between {low} and {high} pixels, e.g. 1280x720")
        if not 0.25 <= w / h <= 4:
            raise ValueError("the aspect ratio must be between 1:4 and 4:1, e.g. 1280x720")
        return v

    @model_validator(mode="after")
    def _size_or_tier(self) -> CreateVideoRequest:
        if self.size and (self.resolution or self.aspect_ratio):
            raise PydanticCustomError(
                "size_conflict",
                "send size, or resolution and aspect_ratio, not both: size already fixes both",
                {"path": "size"},
            )
        return self

    @field_validator("resolution")
    @classmethod
    def _resolution_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if v not in RESOLUTION_HEIGHT:
            raise ValueError(f"must be one of {', '.join(RESOLUTION_HEIGHT)}")
        return v

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _ASPECT.match(v)
        if not m:
            raise ValueError("must look like 16:9")
        a, b = (int(x) for x in m.groups())
        if a < 1 or b < 1 or not 0.25 <= a / b <= 4:
            raise ValueError("both sides must be at least 1 and the ratio between 1:4 and 4:1, e.g. 16:9")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _webhook_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v


class CreateComparisonRequest(CreateVideoRequest):
    """`POST /v1/comparisons`: one input (image, prompt, options) run on 2 to 6 models side by
    side; each arm is an ordinary job. `model` is not used: name the arms in `models`."""

    models: list[str] = Field(min_length=2, max_length=6, description="One catalog alias (or `auto`) per arm.")
    fallbacks: bool = Field(
        default=False, description="Let an arm fall back to other models; off, an arm is the model it names."
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models_may_be_a_list_in_a_string(cls, v: Any) -> Any:
        # multipart sends one string: "a,b" or a JSON list
        if isinstance(v, str):
            v = v.strip()
            return json.loads(v) if v.startswith("[") else [m.strip() for m in v.split(",") if m.strip()]
        return v

    @field_validator("model")
    @classmethod
    def _no_single_model(cls, v: str) -> str:
        if v != "auto":
            raise ValueError("a comparison names its arms in 'models' (a list), not 'model'")
        return v


class VideoError(BaseModel):
    code: str
    message: str
    provider: str | None = None
    provider_code: str | None = None


class Attempt(BaseModel):
    model: str
    adapter: str
    provider_task_id: str | None = None
    status: AttemptStatus
    submitted_at: float | None = None
    finished_at: float | None = None
    cancel_requested_at: float | None = Field(
        default=None, description="The client asked to cancel while the provider ran this task."
    )
    cost_usd: float | None = None
    error: VideoError | None = None


class Route(BaseModel):
    rule: str | None = None
    arm: str | None = Field(default=None, description="The A/B arm, when the rule splits traffic.")
    traits: dict[str, Any] = Field(default_factory=dict)
    candidates: list[str] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)


class VideoOutput(BaseModel):
    url: str
    duration_s: float
    fps: float
    width: int
    height: int
    frames: int
    bytes: int
    sha256: str
    codec: str
    post_processing: list[str] = Field(
        default_factory=list, description="What the gateway did to the provider's clip, e.g. `loop_crossfade`."
    )


class Video(BaseModel):
    """The unified video object: every backend's answer comes back in this one shape."""

    id: str
    object: Literal["video"] = "video"
    status: JobStatus
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    requested_model: str
    prompt: str
    seconds: str
    size: str
    route: Route
    output: VideoOutput | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Any] = Field(
        default_factory=dict,
        description="A summary of route, cost and timings in the one extension field LiteLLM's video client "
        "passes on (it drops the others): duration_seconds, cost_usd, model, adapter, rule, arm, attempts, "
        "total_s, warnings.",
    )
    warnings: list[str] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    error: VideoError | None = None
