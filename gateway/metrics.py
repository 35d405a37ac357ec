"""Prometheus metrics, one registry per app (no module-level globals, so tests stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_JOB_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
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
        self.db_statements = Counter(
            "i2v_db_statements", "SQL statements sent to the database, by verb.", ["verb"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
