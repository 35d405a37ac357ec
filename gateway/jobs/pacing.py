"""When to poll a provider next: sparsely while a task cannot be done yet, densely around when it
usually finishes, then backing off. "Usually" is learned per model from the tasks this process
followed (an exponential average of submit-to-finish seconds); until a model has finished once
here it is polled with the plain geometric backoff (the catalog's `typical_latency_s` is a list
figure, and a sandbox emulator finishes in seconds). A provider's own hint (`poll_after_s`)
always wins.

Polling every 2 s to 15 s, as before, showed a finished task up to a poll interval late; polling
densely all the time costs provider calls and CPU for every second of every task.
"""

from __future__ import annotations

import threading


class PollPacer:
    def __init__(self, *, first_s: float, max_s: float, dense_s: float = 0.1, weight: float = 0.2) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.dense_s = dense_s
        self.weight = weight
        self._expected: dict[str, float] = {}
        self._lock = threading.Lock()

    def expected(self, model: str) -> float | None:
        return self._expected.get(model)

    def observe(self, model: str, seconds: float) -> None:
        """A task of `model` was seen finished `seconds` after it was submitted."""
        if seconds <= 0:
            return
        with self._lock:
            old = self._expected.get(model)
            self._expected[model] = seconds if old is None else old + self.weight * (seconds - old)

    def wait(self, model: str, elapsed_s: float, polls: int) -> float:
        """Seconds until the next poll of a task submitted `elapsed_s` ago, polled `polls` times."""
        expected = self.expected(model)
        if expected is None:  # nothing known: the plain geometric backoff
            return min(self.first_s * 1.5**polls, self.max_s)
        early = 0.8 * expected
        if elapsed_s < early:  # it cannot be done yet: sleep until just before it usually is
            return min(early - elapsed_s, self.max_s)
        if elapsed_s < 1.5 * expected:  # around the usual end: look often (a few % of the latency)
            return max(self.dense_s, min(0.03 * expected, self.max_s))
        late = elapsed_s - 1.5 * expected  # later than usual: back off again
        return min(max(self.dense_s, 0.03 * expected) * 1.5 ** (late / max(expected, 1e-3) * 4), self.max_s)
