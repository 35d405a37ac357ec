"""The model catalog and routing rules, loaded and validated from `router_rules.yaml`."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from gateway.routing.conditions import ConditionError
from gateway.routing.conditions import validate as validate_condition
from gateway.schemas import RESOLUTION_HEIGHT


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


_SEP = "\x1f"  # joins a condition's path for pydantic's error context; field names hold dots


class Arm(BaseModel):
    """One arm of a weighted split (an A/B experiment). Assignment is sticky per user."""

    model_config = ConfigDict(extra="forbid")

    name: str
    weight: float = Field(gt=0)
    route: list[str] = Field(min_length=1)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    when: dict[str, Any] = Field(default_factory=dict, description="Conditions; {} matches everything.")
    route: list[str] = Field(default_factory=list, description="The ordered fallback chain.")
    split: list[Arm] | None = Field(default=None, description="Weighted arms instead of one route.")
    max_attempts: int | None = Field(default=None, ge=1, description="Attempts across the chain; default all.")
    fallback_on: list[str] = Field(
        default_factory=list,
        description="Also fall back on these codes (e.g. content_policy), not only retryable ones.",
    )

    @model_validator(mode="after")
    def _route_or_split(self) -> Rule:
        if bool(self.route) == (self.split is not None):
            raise ValueError("give either 'route' (a list of models) or 'split' (weighted arms), not both or neither")
        try:
            validate_condition(self.when, ("when",))
        except ConditionError as exc:
            raise PydanticCustomError(
                "condition", "{msg}", {"path": _SEP.join(map(str, exc.path)), "msg": str(exc)}
            ) from exc
        return self

    def routes(self) -> list[list[str]]:
        return [self.route] if self.route else [arm.route for arm in self.split or []]


class ExperimentArm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    route: list[str] = Field(min_length=1, description="The arm's fallback chain; its first model is the arm's.")
    weight: float = Field(default=1.0, gt=0)


class Shadow(BaseModel):
    """A model that also runs on a share of the experiment's traffic: measured, never returned."""

    model_config = ConfigDict(extra="forbid")

    model: str
    share: float = Field(gt=0, le=1, description="Share of the experiment's requests that also run the shadow.")
    max_jobs_per_day: int = Field(default=100, ge=0)
    max_usd_per_day: float = Field(default=10.0, ge=0, description="Catalog-estimated spend cap, per UTC day.")


class Experiment(BaseModel):
    """A rule's traffic split between arms, sticky per user, key or metadata field."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    rule: str = Field(description="The rule whose matching requests the experiment splits.")
    arms: list[ExperimentArm] = Field(min_length=2)
    control: str | None = Field(default=None, description="The arm the others are measured against; default the first.")
    sticky: str = Field(
        default="user",
        pattern=r"^(user|key|metadata\.[A-Za-z0-9_.-]+)$",
        description="What keeps a caller in one arm: `user` (the request's user, else the key), `key`, "
        "or `metadata.<field>`.",
    )
    holdout: float = Field(default=0.0, ge=0, lt=1, description="Share that keeps the rule's own route, counted apart.")
    shadow: Shadow | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _names(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        if {"holdout", "shadow"} & set(names):
            raise ValueError("'holdout' and 'shadow' are reserved arm names")
        if self.control is None:
            self.control = names[0]
        elif self.control not in names:
            raise ValueError(f"control '{self.control}' is not one of the arms ({', '.join(names)})")
        return self


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec]
    rules: list[Rule] = Field(default_factory=list)
    experiments: list[Experiment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes_name_models(self) -> RulesFile:
        for rule in self.rules:
            for alias in (a for route in rule.routes() for a in route):
                if alias not in self.models:
                    raise ValueError(f"rule '{rule.name}' routes to unknown model '{alias}'")
        for alias, spec in self.models.items():
            for fb in spec.fallbacks:
                if fb not in self.models:
                    raise ValueError(f"model '{alias}' falls back to unknown model '{fb}'")
        rule_names = {r.name for r in self.rules}
        seen: dict[str, str] = {}
        for exp in self.experiments:
            if exp.rule not in rule_names:
                raise ValueError(f"experiment '{exp.name}' splits unknown rule '{exp.rule}'")
            if exp.rule in seen:
                raise ValueError(f"experiments '{seen[exp.rule]}' and '{exp.name}' both split rule '{exp.rule}'")
            seen[exp.rule] = exp.name
            models = [m for arm in exp.arms for m in arm.route] + ([exp.shadow.model] if exp.shadow else [])
            for alias in models:
                if alias not in self.models:
                    raise ValueError(f"experiment '{exp.name}' routes to unknown model '{alias}'")
        if len({e.name for e in self.experiments}) != len(self.experiments):
            raise ValueError("experiment names must be unique")
        return self

    def experiment_for(self, rule: str) -> Experiment | None:
        """The enabled experiment that splits `rule`, if any."""
        return next((e for e in self.experiments if e.rule == rule and e.enabled), None)

    def experiment(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    @property
    def default_route(self) -> list[str]:
        """The route of the first rule with no condition; else every model in file order."""
        for rule in self.rules:
            if not rule.when:
                return rule.routes()[0]
        return list(self.models)


class CatalogError(ValueError):
    """The rules file is invalid; the message names the file and what is wrong."""


_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def _expand_env(text: str) -> str:
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


Where = tuple[int, int]  # 1-based line and column


def _line_map(text: str) -> dict[tuple[str | int, ...], Where]:
    """Path inside the YAML document -> 1-based (line, column), so errors can point at it."""
    lines: dict[tuple[str | int, ...], Where] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, key.value)
                walk(value, here)
                lines[here] = (key.start_mark.line + 1, key.start_mark.column + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _line_of(lines: dict[tuple[str | int, ...], Where], loc: tuple[str | int, ...]) -> Where | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _error_path(err: Any) -> tuple[str | int, ...]:
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if err["type"] == "condition" and "path" in ctx:  # the path inside `when` that is wrong
        loc = loc + tuple(int(p) if p.isdigit() else p for p in ctx["path"].split(_SEP))
    return loc


def _references(raw: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every name that points at a model or rule that is not there, with where it stands; read
    from the raw document so they are found alongside field errors, at their own lines."""
    if not isinstance(raw, dict):
        return []
    models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
    known = set(models)
    found: list[tuple[tuple[str | int, ...], str]] = []

    def check(path: tuple[str | int, ...], names: Any, whose: str) -> None:
        for i, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in known:
                found.append(
                    (
                        (*path, i),
                        f"{whose} unknown model '{name}'{_did_you_mean(name, known)}; "
                        f"the catalog has {', '.join(sorted(known))}",
                    )
                )

    for alias, spec in models.items():
        if isinstance(spec, dict):
            check(("models", alias, "fallbacks"), spec.get("fallbacks"), f"model '{alias}' falls back to")
    rules = raw.get("rules") if isinstance(raw.get("rules"), list) else []
    for r, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        check(("rules", r, "route"), rule.get("route"), f"rule '{rule.get('name')}' routes to")
        for a, arm in enumerate(rule.get("split") if isinstance(rule.get("split"), list) else []):
            if isinstance(arm, dict):
                check(("rules", r, "split", a, "route"), arm.get("route"), f"rule '{rule.get('name')}' routes to")
    rule_names = {rule.get("name") for rule in rules if isinstance(rule, dict)}
    for e, exp in enumerate(raw.get("experiments") if isinstance(raw.get("experiments"), list) else []):
        if not isinstance(exp, dict):
            continue
        if "rule" in exp and exp["rule"] not in rule_names:
            found.append(
                (("experiments", e, "rule"), f"experiment '{exp.get('name')}' splits unknown rule '{exp['rule']}'")
            )
        for a, arm in enumerate(exp.get("arms") if isinstance(exp.get("arms"), list) else []):
            if isinstance(arm, dict):
                check(
                    ("experiments", e, "arms", a, "route"),
                    arm.get("route"),
                    f"experiment '{exp.get('name')}' routes to",
                )
        shadow = exp.get("shadow")
        if isinstance(shadow, dict) and isinstance(shadow.get("model"), str):
            check(("experiments", e, "shadow"), [shadow["model"]], f"experiment '{exp.get('name')}' shadows")
    return found


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: Every field name a rules file may use, for "did you mean" on a misspelt one.
_FIELDS = {
    name
    for model in (RulesFile, ModelSpec, Rule, Arm, Experiment, ExperimentArm, Shadow)
    for name in model.model_fields
}


def parse_rules(text: str, source: str) -> RulesFile:
    """Validate a rules document; every error (all of them, not the first) names the file, the
    line and the field."""
    try:
        expanded = _expand_env(text)
        raw = yaml.safe_load(expanded)
        lines = _line_map(expanded)
    except yaml.YAMLError as exc:
        raise CatalogError(_yaml_error(exc, source)) from exc
    problems: list[tuple[tuple[str | int, ...], str]] = _references(raw)
    try:
        rules = RulesFile.model_validate(raw)
    except ValidationError as exc:
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden" and e["loc"]:
                msg = f"unknown field{_did_you_mean(str(e['loc'][-1]), _FIELDS)}"
            if not (e["loc"] == () and "unknown" in msg and problems):  # reported above, at its line
                problems.append((_error_path(e), msg))
        rules = None
    if problems:
        out = []
        for loc, msg in sorted(problems, key=lambda p: _line_of(lines, p[0]) or (0, 0)):
            where = _line_of(lines, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            out.append(f"{source}:{where[0]}:{where[1]}: {field}: {msg}" if where else f"{source}: {field}: {msg}")
        raise CatalogError("\n".join(out))
    assert rules is not None
    return rules


def _yaml_error(exc: yaml.YAMLError, source: str) -> str:
    """The parser's complaint as a sentence: where, what, and what to look at."""
    mark = getattr(exc, "problem_mark", None)
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    opened = getattr(exc, "context_mark", None)
    since = f" (the {context.split()[-1] if context else 'block'} opened on line {opened.line + 1})" if opened else ""
    hint = "check the indentation, and that every [ { ' \" is closed"
    return f"{source}{where}: not valid YAML: {problem}{since}; {hint}"


def load_rules(path: Path) -> RulesFile:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: file not found (set I2V_RULES_FILE)") from exc
    return parse_rules(text, str(path))
