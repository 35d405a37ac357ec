"""Rule conditions: a small, validated language over traits, request fields and metadata.

    when:
      traits.camera_move: {ne: null}      # operator form
      request.tier: bulk                  # a bare value means eq
      any: [{traits.volume: high}, {request.tier: bulk}]
      not: {traits.portrait: true}

Fields are dotted paths rooted at `traits`, `request` or `metadata`. Operators follow Portkey's
conditional router (eq ne in nin gt gte lt lte regex; all any not). Conditions are checked when
the file loads, so a typo fails `rules check` with the field named instead of never matching.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

ROOTS = ("traits", "request", "metadata")
COMBINATORS = ("all", "any", "not")


def _num(op: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    def test(value: Any, arg: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return op(value, arg)

    return test


def _regex(value: Any, arg: Any) -> bool:
    return isinstance(value, str) and re.search(arg, value) is not None


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda v, a: v == a,
    "ne": lambda v, a: v != a,
    "in": lambda v, a: v in a,
    "nin": lambda v, a: v not in a,
    "gt": _num(lambda v, a: v > a),
    "gte": _num(lambda v, a: v >= a),
    "lt": _num(lambda v, a: v < a),
    "lte": _num(lambda v, a: v <= a),
    "regex": _regex,
}


class ConditionError(ValueError):
    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def validate(cond: Any, path: tuple[str | int, ...] = ()) -> None:
    """Raise ConditionError (with the path inside `when`) for anything that cannot be evaluated."""
    if not isinstance(cond, Mapping):
        raise ConditionError(path, "a condition must be a mapping of field: value or operator")
    for key, arg in cond.items():
        here = (*path, key)
        if key in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise ConditionError(here, f"'{key}' takes a non-empty list of conditions")
            for i, sub in enumerate(arg):
                validate(sub, (*here, i))
        elif key == "not":
            validate(arg, here)
        else:
            root = str(key).split(".", 1)[0]
            if root not in ROOTS or "." not in str(key):
                raise ConditionError(
                    here,
                    f"unknown field '{key}': fields start with {', '.join(r + '.' for r in ROOTS)} "
                    f"or use {', '.join(COMBINATORS)}",
                )
            if isinstance(arg, Mapping):
                for op, val in arg.items():
                    if op not in OPERATORS:
                        raise ConditionError((*here, op), f"unknown operator '{op}'; use one of {', '.join(OPERATORS)}")
                    if op in ("in", "nin") and not isinstance(val, list):
                        raise ConditionError((*here, op), f"'{op}' takes a list")
                    if op in ("gt", "gte", "lt", "lte") and (isinstance(val, bool) or not isinstance(val, int | float)):
                        raise ConditionError((*here, op), f"'{op}' takes a number")
                    if op == "regex":
                        try:
                            re.compile(val)
                        except (re.error, TypeError) as exc:
                            raise ConditionError((*here, op), f"invalid regex: {exc}") from exc


def lookup(ctx: Mapping[str, Any], field: str) -> Any:
    """Resolve a dotted path; a missing key is None. `ctx` may compute values lazily on access."""
    root, _, rest = field.partition(".")
    value: Any = ctx[root]
    for part in rest.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
        if value is None:
            return None
    return value


def matches(cond: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
    """True when every entry holds (entries are AND-ed). Short-circuits, so lazy traits that a
    rule does not reach are never computed."""
    for key, arg in cond.items():
        if key == "all":
            ok = all(matches(c, ctx) for c in arg)
        elif key == "any":
            ok = any(matches(c, ctx) for c in arg)
        elif key == "not":
            ok = not matches(arg, ctx)
        else:
            value = lookup(ctx, key)
            if isinstance(arg, Mapping):
                ok = all(OPERATORS[op](value, val) for op, val in arg.items())
            else:
                ok = value == arg
        if not ok:
            return False
    return True
