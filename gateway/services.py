"""The live parts one app runs on, built in `create_app` and handed to handlers by injection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from adapters.base import Adapter
from gateway.blobs import BlobStore
from gateway.catalog import RulesFile
from gateway.db import JobStore
from gateway.ingest import ImageLimits
from gateway.metrics import GatewayMetrics
from gateway.runner import JobRunner
from gateway.settings import Settings


@dataclass
class Services:
    settings: Settings
    rules: Callable[[], RulesFile]
    adapters: dict[str, Adapter]
    store: JobStore
    blobs: BlobStore
    metrics: GatewayMetrics
    fetcher: httpx.AsyncClient
    runner: JobRunner
    image_limits: ImageLimits

    def runner_alive(self) -> bool:
        return not self.settings.runner_enabled or self.runner.alive
