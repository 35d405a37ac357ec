"""`GET /v1/models`: the catalog, with which models this gateway can serve right now."""

from __future__ import annotations

from litestar import get

from gateway.api.auth import Owner, Svc, owner_dependency
from gateway.api.openapi import errors
from gateway.api.responses import ModelInfo, ModelList


@get("/v1/models", dependencies=owner_dependency(), summary="The model catalog", responses=errors())
async def list_models(services: Svc, owner: Owner) -> ModelList:
    rules = services.rules()
    available = set(services.adapters) | set(services.settings.remote_adapters)
    return ModelList(
        data=[
            ModelInfo(
                id=alias,
                owned_by=spec.adapter,
                adapter=spec.adapter,
                provider_model=spec.provider_model,
                available=spec.adapter in available,
                description=spec.description,
                resolutions=spec.resolutions,
                durations=spec.durations,
                aspect_ratios=spec.aspect_ratios,
                camera_control=spec.camera_control,
                loop=spec.loop,
                usd_per_second=spec.usd_per_second,
                typical_latency_s=spec.typical_latency_s,
                fallbacks=spec.fallbacks,
            )
            for alias, spec in rules.models.items()
        ]
    )
