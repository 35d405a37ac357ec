"""Keeps the live rules: reloads `router_rules.yaml` on SIGHUP or when the file changes.

Requests read `holder.get()` once per decision, so a reload never drops or half-applies a
request. A new file that fails validation, cannot be read (permissions) or is still being
written (its size or mtime moved since the last look: a truncated YAML can be valid) is not
taken: the old rules stay, and the log, `i2v_rules_ok` and `/healthz` say why.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from gateway.routing.catalog import CatalogError, RulesFile, load_rules

log = logging.getLogger("i2v.rules")


class RulesHolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._rules = load_rules(path)
        self._stamp = self._file_stamp()
        self._pending: tuple[int, int] | None = None
        self.reloads = 0
        self.last_error: str | None = None
        #: Told the outcome of every reload (True: new rules live); the app feeds metrics with it.
        self.on_result: Callable[[bool], None] = lambda ok: None

    def get(self) -> RulesFile:
        return self._rules

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Load the file again. True when the new rules are live."""
        self._stamp = self._file_stamp()
        try:
            rules = load_rules(self.path)
        except (CatalogError, OSError, UnicodeDecodeError) as exc:
            self.last_error = str(exc) if isinstance(exc, CatalogError) else f"{self.path}: cannot read: {exc}"
            log.error("rules file rejected; keeping the previous rules", extra={"error": self.last_error})
            self.on_result(False)
            return False
        self._rules = rules
        self.reloads += 1
        self.last_error = None
        self.on_result(True)
        log.info(
            "rules reloaded", extra={"file": str(self.path), "models": len(rules.models), "rules": len(rules.rules)}
        )
        return True

    def changed(self) -> bool:
        return self._file_stamp() != self._stamp

    async def watch(self, interval_s: float) -> None:
        """Poll the file's mtime and size (cheap, and works on every filesystem and in containers);
        reload once a change has held still for one interval (an editor or a copy has finished)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.tick()
            except Exception:  # the watcher must outlive anything the file system does
                log.exception("rules watcher: unexpected error; still watching")

    def tick(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            self._pending = None
        elif stamp != self._pending:
            self._pending = stamp  # moved since the last look: wait for it to settle
        else:
            self._pending = None
            self.reload()

    def install_sighup(self) -> bool:
        """SIGHUP reloads. Only possible from the main thread (as under `i2v-gateway serve`)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, ValueError, NotImplementedError, AttributeError):
            return False
        return True
