"""Prometheus metrics, one registry per app (no module-level globals, so tests stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

# No `<name>_created` series: `i2v_jobs_created` would otherwise also emit `i2v_jobs_created_created`,
# a name that clashes with the counter's own family for scrapers that strip suffixes.
disable_created_metrics()

_JOB_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
_FRAMES = (0, 1, 2, 5, 10, 25, 50, 100)
_QUALITY = (
    ("first_frame_ssim", "First frame vs the input image, SSIM.", (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)),
    ("first_frame_psnr", "First frame vs the input image, PSNR in dB.", (10, 15, 20, 25, 30, 35, 40, 50)),
    ("flicker", "Grey-level change per frame after motion compensation.", (0.5, 1, 2, 3, 5, 8, 12, 20, 40)),
    ("motion_magnitude", "Optical flow, px per frame at 256 px.", (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)),
    ("frozen_frames", "Frames in freezes of 0.5 s or more.", _FRAMES),
    ("black_frames", "Black frames.", _FRAMES),
    ("duplicate_frames", "Frames repeating their predecessor outside freezes.", _FRAMES),
)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "i2v_http_requests", "HTTP requests served.", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "i2v_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.jobs_created = Counter("i2v_jobs_created", "Jobs accepted.", ["requested_model"], registry=r)
        self.jobs_finished = Counter(
            "i2v_jobs_finished",
            "Jobs that reached a terminal status.",
            ["model", "adapter", "status", "error_code"],
            registry=r,
        )
        self.attempts = Counter(
            "i2v_attempts",
            "Provider attempts by outcome.",
            ["model", "adapter", "status", "error_code"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "i2v_job_queue_seconds",
            "From accepted to first provider submit.",
            ["model"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.run_seconds = Histogram(
            "i2v_job_run_seconds",
            "From first submit to terminal status.",
            ["model", "adapter"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.total_seconds = Histogram(
            "i2v_job_total_seconds",
            "From accepted to terminal status.",
            ["model", "status"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("i2v_jobs_in_flight", "Jobs a runner is driving now.", ["adapter"], registry=r)
        self.video_seconds = Counter(
            "i2v_video_seconds_generated", "Seconds of video delivered.", ["model"], registry=r
        )
        self.cost_usd = Counter("i2v_cost_usd", "Cost of provider attempts in USD.", ["model"], registry=r)
        #: metrics.quality of finished videos, per model (docs/api.md defines each).
        self.quality = {
            name: Histogram(f"i2v_quality_{name}", help_, ["model"], buckets=buckets, registry=r)
            for name, help_, buckets in _QUALITY
        }
        self.breaker_state = Gauge(
            "i2v_breaker_state", "Circuit per adapter: 0 closed, 1 half-open, 2 open.", ["adapter"], registry=r
        )
        self.engine_state = Gauge(
            "i2v_engine_state",
            "A local engine's pipeline per device: 0 loading (or not loaded), 1 ready, 2 failed.",
            ["adapter", "device"],
            registry=r,
        )
        self.engine_queued = Gauge(
            "i2v_engine_queued", "Jobs waiting for a device of a local engine.", ["adapter", "device"], registry=r
        )
        self.jobs_queued = Gauge("i2v_jobs_queued", "Jobs accepted and not yet started (all replicas).", registry=r)
        self.rules_ok = Gauge("i2v_rules_ok", "1 while the rules file on disk is the one in force.", registry=r)
        self.rules_ok.set(1)
        self.rules_rejected = Counter("i2v_rules_rejected", "Rules file reloads refused.", registry=r)
        self.key_requests = Counter(
            "i2v_key_requests", "Authenticated requests per key name (never the key).", ["key"], registry=r
        )
        self.key_refusals = Counter(
            "i2v_key_refusals", "Requests refused by a key's limits or budget.", ["key", "reason"], registry=r
        )
        self.shadow_jobs = Counter(
            "i2v_shadow_jobs",
            "Experiment shadow jobs, started or refused by a cap.",
            ["experiment", "outcome"],
            registry=r,
        )
        self.db_statements = Counter(
            "i2v_db_statements", "SQL statements sent to the database, by verb.", ["verb"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
