"""Viewstamped Replication (VSR): the event catalogue and an instrumented simulated cluster.

- :data:`CATALOG`: every ``("vsr", ...)`` event, declared and documented
  (:class:`vsrtel.catalog.Catalog`).
- :data:`telemetry` and :func:`common_metadata`: the ``Vsr.Telemetry`` pattern, a
  :class:`vsrtel.Scope` stamping each event with a replica's state.
- :func:`simulate` / :class:`Simulation`: a VSR cluster (Liskov and Cowling, 2012) in
  deterministic simulation, emitting the whole catalogue with simulated timings; its
  :class:`RunRecord` (the run as data) and :func:`render_text` (its report for a terminal).
"""

from __future__ import annotations

from vsrtel.vsr.catalog import CATALOG, PREFIX, common_metadata, telemetry
from vsrtel.vsr.invariants import Checker, InvariantViolation
from vsrtel.vsr.record import RunRecord
from vsrtel.vsr.replica import NO_PROPAGATION, TICK, Output, Propagation, Replica, Timeouts
from vsrtel.vsr.report import render_text
from vsrtel.vsr.sim import FAULTS, FaultProfile, SimClock, Simulation, simulate

__all__ = [
    "CATALOG",
    "FAULTS",
    "METRICS",
    "NO_PROPAGATION",
    "PREFIX",
    "TICK",
    "Checker",
    "FaultProfile",
    "InvariantViolation",
    "Output",
    "Propagation",
    "Replica",
    "RunRecord",
    "SimClock",
    "Simulation",
    "Timeouts",
    "common_metadata",
    "render_text",
    "simulate",
    "telemetry",
]


def __getattr__(name: str) -> object:
    # METRICS is loaded only when asked for: most uses of the simulation need no metrics.
    if name == "METRICS":
        from vsrtel.vsr.recommended import METRICS

        return METRICS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
