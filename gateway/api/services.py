"""The live parts one app runs on, built in `create_app` and handed to handlers by injection."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from adapters.base import Adapter, InputImage
from gateway.api.ingest import ImageLimits
from gateway.jobs.comparisons import ComparisonStore
from gateway.jobs.experiments import ExperimentStore
from gateway.jobs.keys import CachedKeys
from gateway.jobs.limits import Limits
from gateway.jobs.links import Links
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore
from gateway.metrics import GatewayMetrics
from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile
from gateway.routing.decide import Decision, decide
from gateway.routing.watch import RulesHolder
from gateway.schemas import CreateVideoRequest
from gateway.settings import Settings
from gateway.storage.blobs import BlobStore
from gateway.traits import Load, TraitSettings


@dataclass
class Services:
    settings: Settings
    rules: Callable[[], RulesFile]
    rules_holder: RulesHolder
    breakers: Breakers
    adapters: dict[str, Adapter]
    store: JobStore
    comparisons: ComparisonStore
    experiments: ExperimentStore
    keys: CachedKeys
    limits: Limits
    blobs: BlobStore
    metrics: GatewayMetrics
    fetcher: httpx.AsyncClient
    runner: JobRunner
    image_limits: ImageLimits

    _load: tuple[float, Load] = (0.0, Load())

    @property
    def links(self) -> Links:
        return self.runner.ctx.links

    @property
    def trait_settings(self) -> TraitSettings:
        s = self.settings
        return TraitSettings(s.portrait_face_area, s.min_face_share, s.high_volume_queued)

    async def load(self) -> Load:
        """Queued jobs (counted at most once a second) and jobs in flight per adapter."""
        at, load = self._load
        now = time.monotonic()
        if now - at > 1.0:
            load = Load(queued=await self.store.count_queued(), in_flight=self.runner.in_flight())
            self._load = (now, load)
        return load

    async def decide(
        self, req: CreateVideoRequest, image: InputImage, rules: RulesFile, owner: str, refuse: bool = True
    ) -> Decision:
        """The routing decision for one request, with this app's live load, adapters and breakers."""
        return await decide(
            req,
            image,
            rules,
            load=await self.load(),
            trait_settings=self.trait_settings,
            available=self.available,
            breakers=self.breakers,
            sticky=req.user or owner,
            sandbox=self.settings.sandbox,
            refuse=refuse,
            owner=owner,
        )

    @property
    def available(self) -> set[str]:
        """Adapters the deployment runs: this process's and the remote workers'."""
        return set(self.adapters) | set(self.settings.remote_adapters)

    def runner_alive(self) -> bool:
        return not (self.settings.runner_enabled or self.settings.outbox_enabled) or self.runner.alive
