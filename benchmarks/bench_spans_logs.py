"""The spans and logs handlers against raw OpenTelemetry and raw structlog."""

from __future__ import annotations

import io
import logging
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import vsrtel
from benchmarks._harness import Case, Target, now
from vsrtel.handlers import logs, spans

NAME = ("vsr", "protocol", "prepare", "sent")
SPAN = ("vsr", "replica", "commit")
MEASUREMENTS = {"count": 2}
METADATA = {"node_id": 1}
# The core's row that the filtered-out logs handler is held against.
CORE_ONE_HANDLER = "execute, 1 no-op handler"


def _provider() -> TracerProvider:
    # No processor: what tracing costs with nothing configured, the same for both rows.
    return TracerProvider(shutdown_on_exit=False)


def raw_otel_span(loops: int) -> int:
    tracer = _provider().get_tracer("bench")
    start_span, name, attributes = tracer.start_as_current_span, ".".join(SPAN), METADATA
    start = now()
    for _ in range(loops):
        with start_span(name, attributes=attributes):
            pass
    return now() - start


def vsrtel_traced_span(loops: int) -> int:
    registry = vsrtel.Registry()
    spans.attach_tracer([SPAN], tracer_provider=_provider(), registry=registry)
    return _time_spans(registry, loops)


def vsrtel_bare_traced_span(loops: int) -> int:
    # The least a tracer on vsrtel's events can do: open, make current, end. What the spans
    # handler costs beyond it is its own work (attributes, redaction, context restoring).
    tracer = _provider().get_tracer("bench")
    registry, opened = vsrtel.Registry(), {}

    def bare(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        key = metadata["telemetry_span_context"]
        if event[-1] == "start":
            span = tracer.start_span(
                ".".join(SPAN), attributes={"node_id": metadata["node_id"]},
                start_time=measurements["system_time"],
            )
            opened[key] = span, otel_context.attach(trace.set_span_in_context(span))
        else:
            span, token = opened.pop(key)
            otel_context.detach(token)
            span.end()

    registry.attach_many("bare", [SPAN + ("start",), SPAN + ("stop",)], bare)
    return _time_spans(registry, loops)


def _time_spans(registry: vsrtel.Registry, loops: int) -> int:
    span, prefix, metadata = registry.span, SPAN, METADATA
    start = now()
    for _ in range(loops):
        with span(prefix, metadata):
            pass
    return now() - start


def execute_outside_spans_traced(loops: int) -> int:
    # span_events=True listens to every event; outside any span it must stay near a no-op.
    registry = vsrtel.Registry()
    spans.attach_tracer([SPAN], tracer_provider=_provider(), registry=registry)
    execute, name, measurements, metadata = registry.execute, NAME, MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        execute(name, measurements, metadata)
    return now() - start


def _filtered_logger() -> Any:
    # Level info, so the debug calls below are filtered out.
    return structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()),  # never written: every call is filtered out
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    ).bind()


def raw_structlog_filtered(loops: int) -> int:
    debug = _filtered_logger().debug
    event, measurements, metadata = ".".join(NAME), MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        debug(event, **measurements, **metadata)
    return now() - start


def execute_logs_filtered(loops: int) -> int:
    registry = vsrtel.Registry()
    logs.attach_logger(NAME, logger=_filtered_logger(), level="debug", registry=registry)
    execute, name, measurements, metadata = registry.execute, NAME, MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        execute(name, measurements, metadata)
    return now() - start


def execute_logs_written(loops: int) -> int:
    # The work a logged event costs the handler itself (fields, redaction), not a renderer's.
    logger = structlog.wrap_logger(structlog.ReturnLogger(), processors=[]).bind()
    registry = vsrtel.Registry()
    logs.attach_logger(NAME, logger=logger, level="debug", registry=registry)
    execute, name, measurements, metadata = registry.execute, NAME, MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        execute(name, measurements, metadata)
    return now() - start


RAW_OTEL = "raw OTel start_as_current_span + end"
TRACED = "span, spans handler attached"
BARE = "span, a bare handler opening OTel spans"
RAW_STRUCTLOG = "structlog call, filtered out"
LOGS_FILTERED = "execute, logs handler attached but filtered"
LOGS_WRITTEN = "execute, logs handler logging to a no-op logger"

OUTSIDE_SPANS = "execute outside spans, spans handler attached"
CASES = [
    Case(RAW_OTEL, raw_otel_span),
    Case(TRACED, vsrtel_traced_span),
    Case(BARE, vsrtel_bare_traced_span),
    Case(OUTSIDE_SPANS, execute_outside_spans_traced),
    Case(RAW_STRUCTLOG, raw_structlog_filtered),
    Case(LOGS_FILTERED, execute_logs_filtered),
    Case(LOGS_WRITTEN, execute_logs_written),
]

TARGETS = [
    # Pure Python (issue 19): the lean handler keeps every guarantee at this cost.
    Target("span + spans handler vs raw OTel span", TRACED, RAW_OTEL, 1.5),
    Target(
        "execute + filtered logs handler vs execute + 1 no-op handler",
        LOGS_FILTERED,
        CORE_ONE_HANDLER,
        2.0,
    ),
    Target(
        "execute outside spans + spans handler vs execute + 1 no-op handler",
        OUTSIDE_SPANS,
        CORE_ONE_HANDLER,
        2.0,
    ),
]
