"""The model catalog and routing rules, loaded and validated from `router_rules.yaml`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RESOLUTION_HEIGHT = {"480p": 480, "512p": 512, "540p": 540, "720p": 720, "768p": 768, "1080p": 1080}


class ModelSpec(BaseModel):
    """One alias in the catalog: which adapter serves it and what it can do."""

    model_config = ConfigDict(extra="forbid")

    adapter: str
    provider_model: str
    description: str = ""
    resolutions: list[str] = Field(default_factory=lambda: ["720p"])
    durations: list[int] = Field(default_factory=lambda: [5])
    aspect_ratios: list[str] | None = Field(default=None, description="None: follows the input image.")
    camera_control: bool = False
    loop: bool = False
    fps: int | None = None
    usd_per_second: dict[str, float] = Field(default_factory=dict, description="Price by resolution.")
    typical_latency_s: float | None = None
    fallbacks: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_resolutions(self) -> ModelSpec:
        for res in self.resolutions:
            if res not in RESOLUTION_HEIGHT:
                raise ValueError(f"resolution '{res}' is not one of {sorted(RESOLUTION_HEIGHT)}")
        return self

    def price_per_second(self, resolution: str) -> float | None:
        return self.usd_per_second.get(resolution)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    when: dict[str, Any] = Field(default_factory=dict)
    route: list[str] = Field(min_length=1)


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec]
    rules: list[Rule] = Field(default_factory=list)
    experiments: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes_name_models(self) -> RulesFile:
        for rule in self.rules:
            for alias in rule.route:
                if alias not in self.models:
                    raise ValueError(f"rule '{rule.name}' routes to unknown model '{alias}'")
        for alias, spec in self.models.items():
            for fb in spec.fallbacks:
                if fb not in self.models:
                    raise ValueError(f"model '{alias}' falls back to unknown model '{fb}'")
        return self

    @property
    def default_route(self) -> list[str]:
        """The route of the first rule with no condition; else every model in file order."""
        for rule in self.rules:
            if not rule.when:
                return rule.route
        return list(self.models)


class CatalogError(ValueError):
    """The rules file is invalid; the message names the file and what is wrong."""


_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def _expand_env(text: str) -> str:
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


def load_rules(path: Path) -> RulesFile:
    try:
        raw = yaml.safe_load(_expand_env(path.read_text()))
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: file not found (set I2V_RULES_FILE)") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return RulesFile.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise CatalogError(f"{path}: " + "; ".join(lines)) from exc
