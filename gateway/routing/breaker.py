"""Per-adapter circuit breakers: stop sending work to a backend that keeps failing.

closed -> open after `failures` consecutive failures, or when the error rate over the last
`window_s` reaches `error_rate` (with at least `min_calls` outcomes); open -> half-open after
`cooldown_s`, when exactly one probe is let through; the probe's outcome closes or reopens it.
A probe that reports nothing within another `cooldown_s` (its job was cancelled or moved to
another runner) frees the slot for the next probe. Only backend faults count (unavailable,
timeouts, rate limits, provider errors): a content policy refusal says nothing about the
backend's health, though as a probe's outcome it shows the backend answers. State is per
gateway process, like LiteLLM's cooldowns.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from gateway.settings import BreakerSettings

HEALTH_CODES = frozenset({"provider_unavailable", "timeout", "provider_error", "rate_limited", "interrupted"})


@dataclass
class _State:
    consecutive: int = 0
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False
    probe_since: float = 0.0
    opened: bool = False


class Breakers:
    def __init__(self, settings: BreakerSettings, clock: object = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._states: dict[str, _State] = {}

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator]

    def _probing(self, st: _State) -> bool:
        """A probe is out and may still report (it gets one cooldown to do so)."""
        return st.probing and self._now() < st.probe_since + self.settings.cooldown_s

    def state(self, adapter: str) -> str:
        st = self._states.get(adapter)
        if st is None or not st.opened:
            return "closed"
        return "open" if self._now() < st.open_until or self._probing(st) else "half_open"

    def allow(self, adapter: str) -> bool:
        """May a new job start on this adapter? In half-open, only the first asker gets through."""
        st = self._states.get(adapter)
        if st is None or not st.opened:
            return True
        if self._now() < st.open_until or self._probing(st):
            return False
        st.probing, st.probe_since = True, self._now()
        return True

    def record(self, adapter: str, ok: bool, code: str | None = None) -> None:
        if not ok and code not in HEALTH_CODES:
            # Not a backend fault (e.g. content policy): the backend answered, which is all a
            # probe asks. Outside a probe it says nothing of the backend's health.
            st = self._states.get(adapter)
            if st is None or not st.probing:
                return
            ok = True
        st = self._states.setdefault(adapter, _State())
        now = self._now()
        s = self.settings
        st.outcomes.append((now, ok))
        while st.outcomes and st.outcomes[0][0] < now - s.window_s:
            st.outcomes.popleft()
        if ok:
            st.consecutive = 0
            if st.opened:
                st.opened, st.probing = False, False
                st.outcomes.clear()
            return
        st.consecutive += 1
        failed = sum(1 for _, good in st.outcomes if not good)
        rate_trips = len(st.outcomes) >= s.min_calls and failed / len(st.outcomes) >= s.error_rate
        if st.probing or st.consecutive >= s.failures or rate_trips:
            st.opened, st.probing = True, False
            st.open_until = now + s.cooldown_s

    def snapshot(self) -> dict[str, str]:
        return {name: self.state(name) for name in self._states}
