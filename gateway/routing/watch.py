"""Keeps the live rules: reloads `router_rules.yaml` on SIGHUP or when the file changes.

Requests read `holder.get()` once per decision, so a reload never drops or half-applies a
request. A new file that fails validation is refused: the old rules stay and the log says why.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from gateway.routing.catalog import CatalogError, RulesFile, load_rules

log = logging.getLogger("i2v.rules")


class RulesHolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._rules = load_rules(path)
        self._stamp = self._file_stamp()
        self.reloads = 0
        self.last_error: str | None = None

    def get(self) -> RulesFile:
        return self._rules

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Load the file again. True when the new rules are live."""
        self._stamp = self._file_stamp()
        try:
            rules = load_rules(self.path)
        except CatalogError as exc:
            self.last_error = str(exc)
            log.error("rules file rejected; keeping the previous rules", extra={"error": str(exc)})
            return False
        self._rules = rules
        self.reloads += 1
        self.last_error = None
        log.info(
            "rules reloaded", extra={"file": str(self.path), "models": len(rules.models), "rules": len(rules.rules)}
        )
        return True

    def changed(self) -> bool:
        return self._file_stamp() != self._stamp

    async def watch(self, interval_s: float) -> None:
        """Poll the file's mtime and size (cheap, and works on every filesystem and in containers)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.changed():
                self.reload()

    def install_sighup(self) -> bool:
        """SIGHUP reloads. Only possible from the main thread (as under `i2v-gateway serve`)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, ValueError, NotImplementedError, AttributeError):
            return False
        return True
