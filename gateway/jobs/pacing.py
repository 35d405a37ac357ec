"""When to poll a provider next: not before a task can be done, densely around when it usually
finishes, then backing off. "Usually" is learned per model from the tasks this process followed:
an exponential average of submit-to-finish seconds and of their spread (the mean absolute
deviation), so a provider that finishes like clockwork is polled once or twice, a variable one
over a wider window, more sparsely the farther from its usual end. Until a model has finished
once here it is polled at once and then with the plain geometric backoff (the catalog's
`typical_latency_s` is a list figure, and a sandbox emulator finishes in seconds). A provider's
own hint (`poll_after_s`) always wins.

A finish is learned as the middle of the last interval between polls (it happened after the
poll that saw the task running, by the one that saw it done), so the estimate does not creep
later by half a poll step per task, and a provider that gets faster is followed down.
"""

from __future__ import annotations

import threading


class PollPacer:
    def __init__(self, *, first_s: float, max_s: float, dense_s: float = 0.1, weight: float = 0.2) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.dense_s = dense_s
        self.weight = weight
        self._learned: dict[str, tuple[float, float]] = {}  # model -> (mean, spread) seconds
        self._lock = threading.Lock()

    def expected(self, model: str) -> float | None:
        learned = self._learned.get(model)
        return None if learned is None else learned[0]

    def spread(self, model: str) -> float | None:
        learned = self._learned.get(model)
        return None if learned is None else learned[1]

    def observe(self, model: str, seconds: float, interval_s: float = 0.0) -> None:
        """A task of `model` was seen finished `seconds` after it was submitted, `interval_s`
        after the previous look at it (0: the finish time is exact)."""
        if seconds <= 0:
            return
        with self._lock:
            learned = self._learned.get(model)
            if learned is None:
                self._learned[model] = (seconds, 0.1 * seconds)
                return
            mean, spread = learned
            # the finish lies in the last interval; a first poll's interval (from the submit) is
            # capped at the dense step, not taken whole
            seconds -= min(interval_s, self._step(mean, spread)) / 2
            w = self.weight
            self._learned[model] = (mean + w * (seconds - mean), spread + w * (abs(seconds - mean) - spread))

    def _step(self, mean: float, spread: float) -> float:
        """The poll step around the usual end: the spread, within [dense_s, 3 % of the latency]."""
        return max(self.dense_s, min(spread, 0.03 * mean))

    def _start(self, mean: float, spread: float) -> float:
        """When the first look is due: two spreads (at least two dense steps) before the usual end."""
        return mean - 2 * max(spread, self.dense_s)

    def first(self, model: str, elapsed_s: float) -> float:
        """Seconds before the first poll of a task submitted `elapsed_s` ago (0: poll at once)."""
        learned = self._learned.get(model)
        if learned is None:
            return 0.0
        return max(0.0, min(self._start(*learned) - elapsed_s, self.max_s))

    def wait(self, model: str, elapsed_s: float, polls: int) -> float:
        """Seconds until the next poll of a task submitted `elapsed_s` ago, polled `polls` times."""
        learned = self._learned.get(model)
        if learned is None:  # nothing known: the plain geometric backoff
            return min(self.first_s * 1.5**polls, self.max_s)
        mean, spread = learned
        start = self._start(mean, spread)
        if elapsed_s < start:  # it cannot be done yet: sleep until just before it usually is
            return min(start - elapsed_s, self.max_s)
        # Densest at the usual end, a quarter of the distance from it elsewhere: a provider whose
        # latency varies widely (a spread of a third of it) is looked at a few dozen times over
        # its whole window, not every 3 % of its latency from its earliest to its latest finish.
        return min(max(self._step(mean, spread), 0.25 * abs(elapsed_s - mean)), self.max_s)
