"""The adapter contract: the one narrow cut between the job runner and any backend.

The runner speaks `submit, poll, fetch, cancel` with the plain models below and never sees a
provider's field names; every quirk of a provider lives in its own adapter file.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

#: Unified error codes. Each provider error maps to one, and keeps its own code beside it.
ErrorCode = Literal[
    "rate_limited",
    "quota_exceeded",
    "content_policy",
    "invalid_request",
    "auth_failed",
    "provider_unavailable",
    "timeout",
    "provider_error",
    "cancelled",
    "interrupted",
]

#: Codes after which another attempt (same or other provider) may succeed.
RETRYABLE_CODES: frozenset[str] = frozenset(
    {"rate_limited", "provider_unavailable", "timeout", "provider_error", "interrupted", "quota_exceeded"}
)

TaskState = Literal["queued", "in_progress", "completed", "failed", "cancelled"]


class CameraMove(BaseModel):
    """A structured camera move, the provider-neutral shape of Kling's `camera_control`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal[
        "static",
        "push_in",
        "pull_back",
        "zoom_in",
        "zoom_out",
        "pan",
        "tilt",
        "orbit",
        "dolly",
        "truck",
        "pedestal",
        "crane",
        "roll",
        "tracking",
        "rack_focus",
    ]
    direction: Literal["left", "right", "up", "down", "in", "out", "cw", "ccw"] | None = None
    intensity: float = Field(default=0.5, ge=0.0, le=1.0, description="0 barely moves, 1 strongest.")


class InputImage(BaseModel):
    """The decoded, validated input image. `data` holds the original encoded bytes."""

    data: bytes = Field(repr=False)
    sha256: str
    mime: str
    width: int
    height: int

    @property
    def size_bytes(self) -> int:
        return len(self.data)


class ProviderRequest(BaseModel):
    """What one attempt asks of a backend, in the gateway's own words."""

    job_id: str
    attempt_id: str = Field(description="Unique per attempt; sent as a client token where supported.")
    provider_model: str
    prompt: str
    negative_prompt: str | None = None
    image: InputImage
    seconds: int
    resolution: str
    width: int
    height: int
    aspect_ratio: str | None = None
    seed: int | None = None
    camera: CameraMove | None = None
    loop: bool = False
    params: dict[str, Any] = Field(default_factory=dict, description="Catalog params + request pass-through.")
    callback_url: str | None = Field(
        default=None,
        description="Where the provider may report status changes (Kling, MiniMax). Only a nudge: "
        "the gateway then re-queries the task and never trusts the callback's body.",
    )


class ProviderTask(BaseModel):
    """A task the backend accepted. `data` is adapter-private state that must survive a restart."""

    task_id: str
    provider_model: str
    data: dict[str, Any] = Field(default_factory=dict)


class ProviderErrorInfo(BaseModel):
    code: str
    message: str
    provider_code: str | None = None
    retryable: bool = False


class VideoSource(BaseModel):
    """Where the finished MP4 is: a URL to download, or the bytes themselves."""

    url: str | None = None
    content: bytes | None = Field(default=None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict)


class ProviderStatus(BaseModel):
    """One poll's answer, normalized."""

    state: TaskState
    progress: int | None = None
    error: ProviderErrorInfo | None = None
    poll_after_s: float | None = Field(default=None, description="The provider's hint for the next poll.")
    usage: dict[str, Any] = Field(default_factory=dict, description="Raw usage as the provider reports it.")
    cost_usd: float | None = Field(default=None, description="Only when the provider reports a price.")
    result: VideoSource | None = Field(
        default=None,
        description="Where the video is, when the answer that says `completed` names it (DashScope, Kling): "
        "the first download then needs no second query of the task.",
    )


class ProviderError(Exception):
    """Raised by adapters for any failed provider call, already mapped to a unified code."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        provider_code: str | int | None = None,
        http_status: int | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        maybe_submitted: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.provider_code = None if provider_code is None else str(provider_code)
        self.http_status = http_status
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable
        self.retry_after_s = retry_after_s
        #: On a submit: the provider may have created the task before the call failed (a timeout,
        #: a 5xx, a malformed answer). Such a submit is never simply repeated.
        self.maybe_submitted = maybe_submitted

    def info(self) -> ProviderErrorInfo:
        return ProviderErrorInfo(
            code=self.code, message=self.message, provider_code=self.provider_code, retryable=self.retryable
        )


@runtime_checkable
class Adapter(Protocol):
    """One backend. Instances are built once per app from `AdapterSettings` and shared by jobs.

    An adapter may also name the request `parameters` it passes through to its provider
    (`parameters: frozenset[str]`, read with `passthrough`); without it, it takes none."""

    name: str
    family: str
    max_concurrency: int

    async def submit(self, request: ProviderRequest) -> ProviderTask: ...

    async def poll(self, task: ProviderTask) -> ProviderStatus: ...

    async def fetch(self, task: ProviderTask) -> VideoSource: ...

    async def cancel(self, task: ProviderTask) -> bool:
        """Ask the provider to stop the task. True when it will (the task ends `cancelled`);
        False when it cannot (no cancel in the protocol, or the task is past cancelling):
        the task then runs to its end and is billed."""
        ...

    async def aclose(self) -> None: ...


def passthrough(adapter: object) -> frozenset[str]:
    """The request `parameters` an adapter (instance or class) passes to its provider."""
    return frozenset(getattr(adapter, "parameters", frozenset()))


@runtime_checkable
class TaskLookup(Protocol):
    """An adapter whose protocol finds a task by the attempt id the gateway sent with it (Kling's
    `external_task_id`). With `idempotent_submit`, the provider also refuses a second task with
    the same id, so a submit whose outcome is unknown may be sent again."""

    idempotent_submit: bool

    async def lookup(self, request: ProviderRequest) -> ProviderTask | None: ...


class FoundTask(BaseModel):
    """A provider task listed by `TaskSearch.search`, and whether it is the request's."""

    task: ProviderTask
    state: TaskState
    created_at: float | None = Field(default=None, description="When it was made, in our clock, where known.")
    matches: bool | None = Field(
        default=None,
        description="True when the provider shows this request's fingerprint on it (DashScope: the "
        "prompt), False when it shows another, None while it shows none (not read yet, or still running).",
    )


@runtime_checkable
class TaskSearch(Protocol):
    """An adapter whose provider keeps no id of ours but lists its tasks by time and model
    (DashScope): a submit whose answer was lost, or that a restart cut short, is looked for among
    the tasks the model made since `since` (epoch seconds). `search` is the cheap list; `inspect`
    reads one task for the request's fingerprint. The gateway decides what a result means: it
    leaves out tasks its other attempts hold and adopts only a single match."""

    async def search(self, request: ProviderRequest, since: float) -> list[FoundTask]: ...

    async def inspect(self, request: ProviderRequest, found: FoundTask) -> FoundTask: ...
