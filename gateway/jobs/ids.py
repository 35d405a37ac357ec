"""Identifiers that sort by creation time, so an id doubles as a pagination cursor."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """`<prefix>_` + 12 hex digits of milliseconds + 12 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
