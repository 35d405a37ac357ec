"""Turns an adapter name from the catalog into a live adapter instance.

A name is either a built-in family (listed in `BUILTIN`) or any name whose settings carry a
`class_path` (`module:Class`), so a custom backend plugs in without touching this package.
"""

from __future__ import annotations

import importlib
from typing import Any

from adapters.base import Adapter

#: Built-in families: name -> "module:Class". Filled as provider families land.
BUILTIN: dict[str, str] = {
    "wan": "adapters.wan:WanAdapter",
    "kling": "adapters.kling:KlingAdapter",
    "hailuo": "adapters.minimax:MiniMaxAdapter",
    "live": "adapters.minimax:MiniMaxAdapter",
    "local": "adapters.local:LocalAdapter",
}


class AdapterConfigError(ValueError):
    """The settings name an adapter that cannot be built."""


def load_class(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise AdapterConfigError(f"class_path '{path}' must look like 'package.module:ClassName'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AdapterConfigError(f"cannot import adapter class '{path}': {exc}") from exc


def build_adapter(name: str, settings: Any) -> Adapter:
    """Build adapter `name` from its `AdapterSettings` (class_path wins over the built-in)."""
    path = settings.class_path or BUILTIN.get(name)
    if path is None:
        raise AdapterConfigError(
            f"adapter '{name}' is not a built-in family ({', '.join(sorted(BUILTIN)) or 'none yet'}) "
            f"and its settings have no class_path"
        )
    adapter = load_class(path)(name=name, settings=settings)
    if not isinstance(adapter, Adapter):
        raise AdapterConfigError(f"'{path}' does not implement the Adapter protocol")
    return adapter
