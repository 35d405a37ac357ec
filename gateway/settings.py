"""Gateway settings: environment (`I2V_*`), an optional config file, and defaults.

Precedence, highest first: keyword arguments (tests), environment variables, the
config file named by `I2V_CONFIG_FILE` (YAML or TOML), then the defaults below.
Nested values use `__` in the environment: `I2V_ADAPTERS__KLING__BASE_URL=...`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


class BreakerSettings(BaseModel):
    """When a backend's circuit opens (gateway/routing/breaker.py)."""

    failures: int = 5
    error_rate: float = 0.5
    min_calls: int = 10
    window_s: float = 60.0
    cooldown_s: float = 30.0


class AdapterSettings(BaseModel):
    """How to reach one backend. Every field is optional; each adapter says what it needs."""

    class_path: str | None = Field(
        default=None, description="`module:Class` of a custom adapter; built-in families need none."
    )
    base_url: str | None = None
    api_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    max_concurrency: int = Field(default=16, ge=1, description="Provider tasks in flight at once.")
    max_submitting: int = Field(
        default=32,
        ge=1,
        description="Submit calls on the wire at once (under `max_concurrency`): a job waiting for one "
        "has not read its image yet, so a burst of claims holds no request bodies in memory.",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Per HTTP request to the provider.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter-specific extras.")


class Settings(BaseSettings):
    """Everything the gateway reads at start. `docs/configuration.md` lists each field."""

    model_config = SettingsConfigDict(
        env_prefix="I2V_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default=Path("data"), description="SQLite file and stored blobs live here.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL. Default: sqlite+aiosqlite:///<data_dir>/gateway.db. "
        "PostgreSQL: postgresql+asyncpg://user@host/db.",
    )
    blob_dir: Path | None = Field(default=None, description="Default: <data_dir>/blobs.")
    rules_file: Path | None = Field(
        default=None,
        description="Model catalog and rules. Default: ./router_rules.yaml, else the one in the source tree.",
    )

    sandbox: bool = Field(
        default=False, description="Start every provider emulator in-process and route to them (no keys)."
    )
    sandbox_task_s: float = Field(default=5.0, gt=0, description="How long a sandbox task takes, queue included.")
    sandbox_max_side: int = Field(
        default=1920,
        ge=64,
        le=4096,
        description="Sandbox clips are rendered at the size the provider reports, capped to this long side "
        "(lower it for lighter clips).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for per-minute key limits (INCR per key and minute); default: the database.",
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, description="How long a key lookup is remembered: a revoked key stops working within it."
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Bearer keys accepted. Empty: no auth (local use)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC key for signing webhooks (`whsec_`-style, raw string)."
    )

    # Input limits: checked before anything is decoded in full.
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 64
    max_prompt_chars: int = 2500
    image_fetch_timeout_s: float = 15.0
    image_fetch_allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed despite being private/loopback (e.g. an internal image host). "
        "Empty: only public addresses.",
    )

    # Runner.
    runner_enabled: bool = True
    runner_concurrency: int = Field(default=256, ge=1, description="Jobs driven at once per process.")
    runner_scan_interval_s: float = Field(default=0.5, gt=0, description="Idle wait between DB scans.")
    runner_claim_batch: int = Field(
        default=100,
        ge=1,
        description="Jobs claimed per scan; a full batch is followed by the next at once. A process that "
        "claims thousands at one go starves its own lease renewals and loses the leases before it submits.",
    )
    lease_s: float = Field(default=30.0, gt=1, description="A runner that dies frees its jobs after this.")
    poll_interval_s: float = Field(default=2.0, gt=0, description="First wait between provider polls.")
    poll_interval_max_s: float = Field(default=15.0, gt=0)
    job_timeout_s: float = Field(default=3600.0, gt=0, description="A job still running after this fails.")
    cancel_check_s: float = Field(
        default=5.0,
        gt=0,
        description="How often a runner looks for cancels that reached another gateway process (one "
        "statement for all the jobs it holds); a cancel sent to this process stops the job at once.",
    )
    max_video_bytes: int = 512 * 1024 * 1024
    progress_write_s: float = Field(
        default=5.0, ge=0, description="A running job's progress is written at most this often (a statement each)."
    )
    fetch_attempts: int = Field(
        default=6, ge=1, description="Tries to download a finished result (an expired URL is asked for afresh)."
    )
    keep_results_after_cancel: bool = Field(
        default=False,
        description="When the provider cannot stop a cancelled task (Kling, MiniMax), it runs to its end and is "
        "billed: deliver its result anyway (true) or drop it (false). Its cost is counted either way.",
    )
    retention_s: float = Field(
        default=7 * 86400,
        ge=0,
        description="A finished job's input image and video are deleted this long after it ends (0: kept); "
        "the video object's expires_at says when; its content then answers 410.",
    )
    url_signing_key: SecretStr | None = Field(
        default=None,
        description="Signs download links (HMAC-SHA256). Unset: a random key kept in <data_dir>/url_signing_key; "
        "set it when replicas share a database so each accepts the others' links.",
    )
    signed_url_ttl_s: float = Field(
        default=3600, ge=60, description="A download link works for between one and two of these, without a key."
    )
    retention_sweep_s: float = Field(default=600.0, gt=0, description="How often expired files are looked for.")
    quality_metrics: bool = Field(
        default=True,
        description="Measure every finished video (metrics.quality: first-frame SSIM/PSNR, flicker, motion, "
        "camera move, frozen/black/duplicate frames) beside the request path, ~0.14 s of CPU per 5 s 720p clip.",
    )
    quality_concurrency: int = Field(default=2, ge=1, description="Clips measured at once per process.")
    quality_processes: int = Field(
        default=1,
        ge=0,
        description="Measure clips in this many worker processes beside the gateway (0: in its own threads, "
        "where the analysis competes with request handling for the GIL).",
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="On shutdown, how long submits in flight get to record their outcome."
    )
    reconcile_settle_s: float = Field(
        default=2.0,
        ge=0,
        description="A submit whose outcome is unknown is looked for in the provider's task list (DashScope) "
        "no sooner than this, so that the list shows it.",
    )
    reconcile_every_s: float = Field(default=5.0, gt=0, description="How often that search is repeated.")
    reconcile_timeout_s: float = Field(
        default=900.0,
        ge=0,
        description="How long the search may wait for a task that may be the lost one to finish (and show its "
        "prompt) before the attempt ends `unconfirmed`.",
    )
    callback_wait_s: float = Field(
        default=3.0,
        ge=0,
        description="A submit whose outcome is unknown on a provider that neither finds tasks by our id nor lists "
        "them (MiniMax) waits this long for the provider's callback naming the task, and adopts it; else the "
        "attempt ends `unconfirmed` (needs public_url).",
    )
    outbox_enabled: bool = Field(
        default=True, description="Deliver the outbox (webhooks, provider cancels) from this process."
    )
    outbox_backoff_s: float = Field(default=5.0, gt=0, description="First wait before an outbox row is tried again.")
    outbox_max_age_s: float = Field(
        default=86400.0, gt=0, description="Webhooks and provider cancels are retried with backoff for this long."
    )
    remote_adapters: list[str] = Field(
        default_factory=list,
        description="Adapters other processes run (e.g. `local` on GPU workers): routed to, never claimed here.",
    )
    runner_adapters: list[str] | None = Field(
        default=None, description="Adapters this process's runner claims jobs for. Default: every configured one."
    )

    public_url: str | None = Field(
        default=None,
        description="This gateway's public address (e.g. https://gw.example.com): the root of the download links "
        "in video objects and webhooks, and, for Kling and MiniMax tasks, of their callback_url (a finished task "
        "is seen at once instead of at the next poll). Unset: links use the address each request came to "
        "(X-Forwarded-Proto/-Host/-Prefix or Forwarded honoured) and webhooks carry a path.",
    )

    facade_routing: Literal["keep", "rules"] = Field(
        default="keep",
        description="A provider façade's request names a provider model: keep it (its catalog alias, with its "
        "fallbacks) or route it by the rules like model=auto.",
    )

    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = Field(default=False, description="uvicorn's per-request lines (metrics count requests).")
    keep_alive_s: int = Field(
        default=75,
        gt=0,
        description="How long an idle client connection is kept open. Longer than the clients' own "
        "idle limits (httpx 5 s, load balancers 60 s): a server that closes first races the client's "
        "next request on that connection, which then fails with a reset.",
    )

    adapters: dict[str, AdapterSettings] = Field(default_factory=dict)

    local_wan_path: Path | None = Field(
        default=None,
        description="A diffusers Wan I2V folder; turns on the `local` adapter (local_engine) with default options.",
    )
    rules_reload_s: float = Field(
        default=2.0, ge=0, description="How often the rules file is checked for changes (0: only on SIGHUP)."
    )
    portrait_face_area: float = Field(
        default=0.02, gt=0, le=1, description="`portrait` when the largest face covers this share of the frame."
    )
    min_face_share: float = Field(
        default=0.12, gt=0, le=1, description="Smallest face searched for, as a share of the image's short side."
    )
    high_volume_queued: int = Field(
        default=50, ge=1, description="`volume: high` when at least this many jobs wait to start."
    )
    breaker: BreakerSettings = Field(default_factory=BreakerSettings, description="Per-adapter circuit breakers.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    @property
    def resolved_rules_file(self) -> Path:
        if self.rules_file is not None:
            return self.rules_file
        here = Path("router_rules.yaml")
        return here if here.is_file() else Path(__file__).resolve().parent.parent / "router_rules.yaml"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("I2V_CONFIG_FILE")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"I2V_CONFIG_FILE={config_file} does not exist")
            if path.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)
