"""CPU per call of a few ways of doing one thing, in alternating rounds (this VM's speed drifts
within minutes: a variant measured only after another would carry the drift as a difference)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


async def alternate(
    variants: dict[str, Callable[..., Awaitable[Any]]], calls: Sequence[tuple[Any, ...]], rounds: int, warm: int
) -> dict[str, list[float]]:
    """µs of process CPU per call of each variant over `calls` (argument tuples), each round;
    every variant is first called on the first `warm` of them, untimed."""
    spent: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for args in calls[:warm]:
                await fn(*args)
            t0 = time.process_time()
            for args in calls:
                await fn(*args)
            spent[name].append((time.process_time() - t0) / len(calls) * 1e6)
    return spent


def cpu_times(fn: Callable[[], object], runs: int) -> list[float]:
    """ms of process CPU (every thread) of each of `runs` calls, after one untimed call (imports,
    codec tables, caches)."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return times


def print_table(title: str, columns: tuple[str, str], rows: Iterable[tuple[str, str]]) -> None:
    """The benches' two-column table (what, figure)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)
