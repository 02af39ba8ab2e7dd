"""vsrtel.logs: the trace-context processor per log line, and a stdlib record through the bridge
with nobody listening."""

from __future__ import annotations

import logging
from typing import Any

import structlog
from opentelemetry.sdk.trace import TracerProvider

import vsrtel
from benchmarks._harness import Case, Target, now
from benchmarks.bench_core import FLOOR
from vsrtel import logs
from vsrtel.handlers import spans

CHEAPEST = "structlog add_log_level (its cheapest processor)"
OUTSIDE = "logs.add_trace_context, outside spans"
INSIDE = "logs.add_trace_context, inside a traced span"
PLAIN_INFO = "stdlib logger.info, no bridge"
BRIDGED_INFO = "stdlib logger.info, bridged, nobody listening"


def _processor_loop(processor: Any, loops: int) -> int:
    # A fresh event dict per line, as structlog builds one per call; the same in every row.
    start = now()
    for _ in range(loops):
        processor(None, "info", {"event": "paid"})
    return now() - start


def cheapest_processor(loops: int) -> int:
    return _processor_loop(structlog.processors.add_log_level, loops)


def trace_context_outside_spans(loops: int) -> int:
    return _processor_loop(logs.add_trace_context, loops)


def trace_context_inside_a_span(loops: int) -> int:
    registry = vsrtel.Registry()
    provider = TracerProvider(shutdown_on_exit=False)  # no processor: tracing itself is not timed
    handle = spans.attach_tracer(["bench"], tracer_provider=provider, registry=registry)
    try:
        with registry.span("bench.request"):
            return _processor_loop(logs.add_trace_context, loops)
    finally:
        handle.detach()


def _stdlib_loop(bridged: bool, loops: int) -> int:
    logger = logging.Logger("bench.logs")  # not in the manager: no other handler, no parent
    logger.addHandler(logging.NullHandler())
    if bridged:
        logger.addHandler(logs.EventHandler(registry=vsrtel.Registry()))
    info = logger.info
    start = now()
    for _ in range(loops):
        info("order %d paid", 7)
    return now() - start


def stdlib_plain(loops: int) -> int:
    return _stdlib_loop(False, loops)


def stdlib_bridged(loops: int) -> int:
    return _stdlib_loop(True, loops)


CASES = [
    Case(CHEAPEST, cheapest_processor),
    Case(OUTSIDE, trace_context_outside_spans),
    Case(INSIDE, trace_context_inside_a_span),
    Case(PLAIN_INFO, stdlib_plain),
    Case(BRIDGED_INFO, stdlib_bridged),
]

TARGETS = [
    # Issue 22: at most 1 us per line inside a span, set where the floor took 72 ns.
    Target("trace-context processor inside a span vs floor (1 us at a 72 ns floor)",
           INSIDE, FLOOR, 13.9),
    Target("stdlib record bridged, nobody listening vs the same call unbridged",
           BRIDGED_INFO, PLAIN_INFO, 1.5),
]
