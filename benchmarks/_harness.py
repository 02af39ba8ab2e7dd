"""Timing harness: each case runs its operation ``loops`` times inline and returns nanoseconds."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One row of the table: ``run(loops)`` performs the operation ``loops`` times, returns ns."""

    name: str
    run: Callable[[int], int]


@dataclass(frozen=True)
class Target:
    """A goal: ``case`` divided by ``baseline`` (or, without baseline, in ns) at most ``limit``."""

    label: str
    case: str
    baseline: str | None
    limit: float


def measure(cases: list[Case], *, repeats: int, budget_ns: int) -> dict[str, float]:
    """Return the median ns per operation of each case over ``repeats`` timed runs.

    Repeats are interleaved (every case once per round), so a burst of load on a shared machine
    spreads over all rows instead of skewing the ratios between them.
    """
    loops = {case.name: _calibrate(case, budget_ns) for case in cases}
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(repeats):
        for case in cases:
            samples[case.name].append(_timed(case, loops[case.name]) / loops[case.name])
    return {name: statistics.median(values) for name, values in samples.items()}


def _calibrate(case: Case, budget_ns: int) -> int:
    """Return the loop count that makes one run of ``case`` last about ``budget_ns``."""
    loops = 1
    while True:
        elapsed = _timed(case, loops)
        if elapsed >= budget_ns // 10 or loops >= 10_000_000:
            return max(1, loops * budget_ns // max(elapsed, 1))
        loops *= 10


def _timed(case: Case, loops: int) -> int:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return case.run(loops)
    finally:
        if enabled:
            gc.enable()


def now() -> int:
    """The timer every case uses."""
    return time.perf_counter_ns()
