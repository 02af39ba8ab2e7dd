"""What ``vsrtel demo`` attaches to a simulated cluster: logs, metrics, traces.

Each piece is one function taking the registry to attach to; ``vsrtel.cli`` composes them. The
handler modules are imported inside the functions: ``vsrtel.vsr`` itself only needs the core.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from vsrtel import Registry, Span
from vsrtel.vsr.catalog import (
    CLIENT_REQUEST,
    PROTOCOL_CLIENT_REQUEST,
    STATE_MACHINE_OPERATION,
    dotted,
)
from vsrtel.vsr.replica import Propagation

if TYPE_CHECKING:
    from vsrtel.export.otel import OTel
    from vsrtel.export.prometheus import MetricsServer
    from vsrtel.handlers.metrics import MetricsReporter

__all__ = [
    "DEBUG_EVENTS",
    "EXPORTED_LOG_EVENTS",
    "LEVEL_NAMES",
    "LOGGED_EVENTS",
    "SERVICE_NAME",
    "TRACED_SPANS",
    "attach_logs",
    "export_to_otlp",
    "log_level",
    "otlp_exporter_installed",
    "serve_metrics",
    "trace_propagation",
]

#: The events the demo logs at info: view changes and state transfers, begun and done.
LOGGED_EVENTS = (
    "vsr.view_change.start",
    "vsr.view_change.complete",
    "vsr.state_transfer.request_sent",
    "vsr.state_transfer.snapshot_received",
)
#: The events the demo logs at debug: the steps of view changes and state transfers, and each
#: replica's changes of status, view and role.
DEBUG_EVENTS = (
    "vsr.view_change.vote_received",
    "vsr.view_change.do_view_change.sent",
    "vsr.view_change.do_view_change.received",
    "vsr.state_transfer.request_received",
    "vsr.state_transfer.snapshot_sent",
    "vsr.state.status_change",
    "vsr.state.view_change",
    "vsr.state.role_change",
)
#: The service name of the demo's traces and metrics (``target_info`` on Prometheus).
SERVICE_NAME = "vsrtel-demo"
#: The span prefixes a trace of the demo is made of.
TRACED_SPANS = tuple(
    dotted(span) for span in (CLIENT_REQUEST, PROTOCOL_CLIENT_REQUEST, STATE_MACHINE_OPERATION)
)


def trace_propagation() -> Propagation:
    """W3C trace context in messages, through the spans handler's ``inject``/``extract``."""
    from vsrtel.handlers import spans

    def inject(carrier: dict[str, str], span: Span) -> None:
        spans.inject(carrier, span=span)

    def extract(carrier: Mapping[str, str]) -> object:
        return spans.extract(carrier)

    return Propagation(inject, extract)


def attach_logs(registry: Registry, stream: TextIO, level: int | str = "info") -> list[Hashable]:
    """Log :data:`LOGGED_EVENTS` at info and :data:`DEBUG_EVENTS` at debug to ``stream``, the
    lines at ``level`` or above only; return the handler ids.

    ``level`` is a `logging` level number or name (``"debug"``, ``"info"``, ``"warning"``...;
    any case): ``"warning"`` and above log none of these events. Raises ``ValueError`` naming
    an unknown level.
    """
    import structlog

    from vsrtel.handlers.logs import attach_logger

    threshold = log_level(level)
    logger = structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        context_class=dict,
    )
    events = [(name, "info") for name in LOGGED_EVENTS]
    if threshold <= logging.DEBUG:
        events += [(name, "debug") for name in DEBUG_EVENTS]
    elif threshold > logging.INFO:
        events = []  # nothing would pass the filter: attach nothing
    return [
        attach_logger(name, level=event_level, logger=logger, registry=registry)
        for name, event_level in events
    ]


#: The events the demo exports as OpenTelemetry log records (:func:`export_to_otlp`), with
#: their levels: a view change begun (a primary suspected dead) at warning, the other
#: :data:`LOGGED_EVENTS` at info, and an operation the state machine rejected at error (inside
#: its span: the record carries the span's trace).
EXPORTED_LOG_EVENTS: tuple[tuple[str, str], ...] = (
    ("vsr.view_change.start", "warning"),
    *((name, "info") for name in LOGGED_EVENTS if name != "vsr.view_change.start"),
    (f"{dotted(STATE_MACHINE_OPERATION)}.exception", "error"),
)

#: The standard level names :func:`log_level` accepts, lowest first.
LEVEL_NAMES = ("debug", "info", "warning", "error", "critical")


def log_level(level: int | str) -> int:
    """The `logging` level number of ``level``: a number, or a name of :data:`LEVEL_NAMES` in
    any case. Raises ``ValueError`` naming anything else."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.lower() in LEVEL_NAMES:
        return int(getattr(logging, level.upper()))
    raise ValueError(f"unknown log level {level!r} (choose from {', '.join(LEVEL_NAMES)})")


def serve_metrics(registry: Registry, port: int) -> tuple[MetricsServer, MetricsReporter]:
    """Serve :data:`vsrtel.vsr.METRICS` for Prometheus on 127.0.0.1:``port`` (0: any port),
    with the live dashboard.

    Returns the server (``.url``, ``.dashboard_url``, ``.close()``) and the attached reporter
    (``.detach()``).
    Raises ``OSError`` naming the port when it is taken.
    """
    from vsrtel.export import otel
    from vsrtel.export.prometheus import serve_metrics as serve
    from vsrtel.handlers.metrics import MetricsReporter
    from vsrtel.vsr.recommended import METRICS

    server = serve(port, resource=otel.resource(SERVICE_NAME), dashboard=True)
    reporter = MetricsReporter(METRICS, meter_provider=server.meter_provider, registry=registry)
    return server, reporter.attach()


def otlp_exporter_installed() -> bool:
    """Whether the OTLP/HTTP exporters (the ``vsrtel[otlp]`` extra) can be imported."""
    from vsrtel._otel_logs import OTLP_MODULE

    try:
        importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        importlib.import_module("opentelemetry.exporter.otlp.proto.http.metric_exporter")
        importlib.import_module(OTLP_MODULE)
    except ImportError:
        return False
    return True


def export_to_otlp(
    registry: Registry,
    *,
    traces: bool = True,
    metrics: bool = True,
    logs: bool = True,
    **configure: Any,
) -> tuple[OTel, Callable[[], None]]:
    """Export the demo's spans, metrics and log records with the exporters the ``OTEL_*``
    variables choose (OTLP, the console: see :func:`vsrtel.export.otel.configure`).

    ``traces`` attaches the spans handler for :data:`TRACED_SPANS` (use
    :func:`trace_propagation` in the simulation so that each request is one trace); ``metrics``
    a reporter of :data:`vsrtel.vsr.METRICS`; ``logs`` a logs handler exporting
    :data:`EXPORTED_LOG_EVENTS` as OpenTelemetry log records (attached before the spans handler,
    so that a span's exception is logged while its span is current). ``configure`` goes to
    :func:`vsrtel.export.otel.configure`.
    Returns the OTel setup (call ``.shutdown()`` to flush) and a function that detaches them.
    """
    from vsrtel.export import otel
    from vsrtel.handlers.metrics import MetricsReporter
    from vsrtel.handlers.spans import attach_tracer
    from vsrtel.vsr.recommended import METRICS

    setup = otel.configure(configure.pop("service_name", SERVICE_NAME), **configure)
    handler_ids: list[Hashable] = []
    reporters: list[MetricsReporter] = []
    if logs:
        from vsrtel.handlers.logs import attach_logger
        from vsrtel.logs import otel_logger

        logger = otel_logger(setup.logger_provider, name="vsrtel.vsr")
        handler_ids.extend(
            attach_logger(name, level=level, logger=logger, registry=registry)
            for name, level in EXPORTED_LOG_EVENTS
        )
    if traces:
        handler_ids.append(attach_tracer(TRACED_SPANS, tracer_provider=setup.tracer_provider,
                                         registry=registry, span_events=False))
    if metrics:
        reporter = MetricsReporter(METRICS, meter_provider=setup.meter_provider, registry=registry)
        reporters.append(reporter.attach())

    def detach() -> None:
        for handler_id in handler_ids:
            registry.detach(handler_id)
        for reporter in reporters:
            reporter.detach()

    return setup, detach
