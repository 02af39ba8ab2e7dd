"""The one door to OpenTelemetry's logs signal, whose Python modules are still experimental.

``opentelemetry._logs`` (the API) and ``opentelemetry.sdk._logs`` (the SDK) are underscored:
their names and signatures change between releases. Every use vsrtel makes of them is here, so
that such a change touches this file alone: building a ``LoggerProvider`` with its exporters
(for `vsrtel.export.otel.configure`), getting a logger from it and emitting one log record
(for `vsrtel.logs`). The versions this is written against are pinned in pyproject.toml.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from opentelemetry._logs import Logger, SeverityNumber, set_logger_provider
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import AnyValue, AttributeValue

__all__ = [
    "LogRecordProcessor",
    "Logger",
    "LoggerProvider",
    "console_exporter",
    "emit",
    "get_logger",
    "otlp_exporter",
    "provider",
    "set_global",
    "severity",
]

OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http._log_exporter"

# The severity text OpenTelemetry shows for each of the five standard levels' ranges.
_TEXTS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def provider(
    resource: Resource,
    exporters: Iterable[Any] = (),
    processors: Iterable[LogRecordProcessor] = (),
) -> LoggerProvider:
    """A provider for ``resource``: ``processors`` as given, then one batching processor (its
    own thread) per exporter. Not shut down at exit by itself: its owner does that."""
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for processor in processors:
        logger_provider.add_log_record_processor(processor)
    for exporter in exporters:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return logger_provider


def set_global(logger_provider: LoggerProvider) -> None:
    """Install ``logger_provider`` as the global one (OpenTelemetry allows that once)."""
    set_logger_provider(logger_provider)


def console_exporter(out: TextIO) -> Any:
    """An exporter printing each log record as JSON to ``out``."""
    return ConsoleLogRecordExporter(out=out)


def otlp_exporter() -> Any:
    """The OTLP/HTTP log exporter (configured by the ``OTEL_EXPORTER_OTLP_*`` variables); raises
    ``ImportError`` when the ``vsrtel[otlp]`` extra is not installed."""
    return importlib.import_module(OTLP_MODULE).OTLPLogExporter()


def get_logger(logger_provider: Any, name: str) -> Logger:
    """The OpenTelemetry logger named ``name`` (the instrumentation scope) of the provider."""
    logger: Logger = logger_provider.get_logger(name)
    return logger


def severity(level: int) -> tuple[SeverityNumber, str]:
    """The OpenTelemetry severity number and text of a `logging` level number.

    Each standard level opens a range of four numbers (DEBUG 5-8, INFO 9-12, WARN 13-16,
    ERROR 17-20, FATAL 21-24), as the logs data model maps syslog-like levels: ``logging.INFO``
    is INFO (9), a custom level 25 is INFO4 (12), 60 is FATAL4; below DEBUG is TRACE.
    """
    rank = min(max(level, 0) // 10, 5)
    step = min(level - rank * 10, 3) if level < 60 else 3
    return SeverityNumber(1 + rank * 4 + max(step, 0)), _TEXTS[rank]


def emit(
    logger: Logger,
    *,
    level: int,
    body: AnyValue,
    attributes: Mapping[str, AttributeValue],
    timestamp: int | None = None,
    context: Context | None = None,
) -> None:
    """Emit one log record: ``level`` is a `logging` level number, ``timestamp`` in ns since the
    epoch (default: now), ``context`` the OpenTelemetry context whose span the record belongs to
    (default: the current one). No exception object is passed: the SDK would record its message
    and traceback as they are, unredacted; callers put them in ``attributes`` scrubbed."""
    number, text = severity(level)
    logger.emit(
        timestamp=timestamp,
        context=context,
        severity_number=number,
        severity_text=text,
        body=body,
        attributes=attributes,
    )
