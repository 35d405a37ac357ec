"""The fallback policy: after an attempt ends, which model of the job's chain is tried next."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from gateway.routing.breaker import Breakers
from gateway.routing.catalog import RulesFile

#: Codes that end a job instead of moving on, unless the rule lists them in `fallback_on`.
NO_FALLBACK = frozenset({"content_policy", "invalid_request", "cancelled"})


def next_candidate(
    route: dict[str, Any],
    tried: list[tuple[str, str | None]],
    rules: RulesFile,
    available: Container[str],
    breakers: Breakers,
) -> str | None:
    """The next model of `route["candidates"]` after the last one tried, skipping adapters that
    are not configured here or whose circuit is open; None when the chain or `max_attempts` is
    spent, or the last error may not fall back. `tried` is (model, error code) per attempt."""
    last_code = tried[-1][1] if tried else None
    if last_code in NO_FALLBACK and last_code not in route.get("fallback_on", []):
        return None
    candidates: list[str] = route.get("candidates", [])
    if len(tried) >= (route.get("max_attempts") or len(candidates)):
        return None
    start = candidates.index(tried[-1][0]) + 1 if tried and tried[-1][0] in candidates else 0
    for alias in candidates[start:]:
        spec = rules.models.get(alias)
        if spec is not None and spec.adapter in available and breakers.allow(spec.adapter):
            return alias
    return None
