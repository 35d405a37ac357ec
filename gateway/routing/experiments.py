"""Which arm of an experiment a request is in: a stable hash of its sticky id, so one caller
stays in one arm across requests, restarts and replicas.

The hash of `experiment:id` is a point in [0, 1): below `holdout` the request keeps the rule's
own route (the holdout arm); the rest of the interval is cut by the arms' weights. A second,
independent hash decides the shadow share, so the shadow sample is not tied to one arm.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from gateway.routing.catalog import Experiment

HOLDOUT = "holdout"
SHADOW = "shadow"


class Assignment(NamedTuple):
    arm: str
    route: list[str] | None  # None: the rule's own route (holdout)
    shadow: str | None  # the shadow model to run too, if this request is in the shadow share


def unit(text: str) -> float:
    """A stable point in [0, 1) for `text`: the first 52 bits of its SHA-256."""
    return (int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 12) / float(1 << 52)


def sticky_id(exp: Experiment, *, user: str | None, owner: str, metadata: dict[str, str] | None) -> str:
    """The id that keeps a caller in one arm: the request's user (else the key), the key, or a
    metadata field (else the user, else the key)."""
    if exp.sticky == "key":
        return f"key:{owner}"
    if exp.sticky.startswith("metadata."):
        value = (metadata or {}).get(exp.sticky.removeprefix("metadata."))
        if value:
            return f"meta:{value}"
    return f"user:{user}" if user else f"key:{owner}"


def assign(exp: Experiment, ident: str) -> Assignment:
    point = unit(f"{exp.name}:{ident}")
    shadow = exp.shadow.model if exp.shadow and unit(f"{exp.name}:shadow:{ident}") < exp.shadow.share else None
    if point < exp.holdout:
        return Assignment(HOLDOUT, None, shadow)
    point = (point - exp.holdout) / (1 - exp.holdout) * sum(a.weight for a in exp.arms)
    for arm in exp.arms:
        point -= arm.weight
        if point < 0:
            return Assignment(arm.name, arm.route, shadow)
    return Assignment(exp.arms[-1].name, exp.arms[-1].route, shadow)
