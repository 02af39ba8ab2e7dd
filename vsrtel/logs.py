"""Logs that join traces: trace ids on your own log lines, stdlib records as vsrtel events, and
log records exported over OpenTelemetry.

>>> import logging, structlog
>>> from vsrtel import logs
>>> structlog.configure(processors=[logs.add_trace_context, structlog.dev.ConsoleRenderer()])
>>> handler = logging.StreamHandler()
>>> handler.addFilter(logs.TraceContextFilter())        # %(trace_id)s, %(span_id)s
>>> logging.getLogger().addHandler(logs.EventHandler())  # records become log.record events

**Trace context.** ``add_trace_context`` (structlog) and ``TraceContextFilter`` (stdlib) add the
``trace_id`` (32 hex digits) and ``span_id`` (16) of the span a line is written in: the current
OpenTelemetry span when it is recording; else the OpenTelemetry span the spans handler opened
for the current vsrtel span (`vsrtel.current_span`), which a stale OpenTelemetry context (a task
outliving its span) does not hide; else a valid span that is not recording (sampled out, or a
remote parent made current). Inside a vsrtel span that no tracer follows, the span's
``telemetry_span_context`` is added instead, the key the logs handler writes for the span's own
events. Outside every span, nothing. Both follow threads and asyncio tasks, as the current span
does; a key the line already has is left as it is.

**The bridge.** `EventHandler` turns each stdlib record into the event ``log.record`` (or the
name given), whose metadata holds the ``log_level`` (lower-case name), the ``logger`` name, the
``message`` and, when the record carries an exception, its traceback as ``exception`` text:
both scrubbed by the secrets rule (README.md, "Secrets"). With nobody listening it returns
before building anything. A record logged while the bridge is handling one (a handler of
``log.record`` that logs, the ``"vsrtel"`` logger reporting such a handler's failure) is not
bridged again: no loop is possible.

**OpenTelemetry's logs signal.** `OTelHandler` (stdlib records), `OTelProcessor` (structlog
events, in the processor chain) and `otel_logger` (a structlog logger that only exports: pass it
to `vsrtel.handlers.logs.attach_logger` to export vsrtel events) emit OpenTelemetry log records
to a ``LoggerProvider`` (``otel.configure(...).logger_provider``): severity from the level, the
message as body, the other fields as attributes, secrets redacted, and the trace context found
as above. Records of the ``opentelemetry`` loggers (the SDK's own reports) are not exported, nor
what is logged while a record is being exported.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context

import vsrtel
from vsrtel import _otel_logs
from vsrtel._names import remember
from vsrtel._redact import DEFAULT_SECRET_KEYS, Secrets
from vsrtel.handlers._attributes import scalar
from vsrtel.handlers.spans import traced_span

__all__ = [
    "DEFAULT_EVENT",
    "EventHandler",
    "OTelHandler",
    "OTelProcessor",
    "TraceContextFilter",
    "add_trace_context",
    "otel_logger",
]

#: The event a stdlib record becomes through `EventHandler`, unless told otherwise.
DEFAULT_EVENT = ("log", "record")

_get_current_span = trace.get_current_span
# Set while the bridge emits an event, or an exporter emits a record, in this thread or task:
# what is logged meanwhile is not bridged or exported again.
_bridging: ContextVar[bool] = ContextVar("vsrtel_logs_bridging", default=False)
_exporting: ContextVar[bool] = ContextVar("vsrtel_logs_exporting", default=False)
# The attributes every LogRecord has (and those formatters and filters add): not user fields.
_RECORD_KEYS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "trace_id", "span_id", "telemetry_span_context"}
)
# structlog keys the log record itself carries (level, body, time, trace context, exception).
_EVENT_KEYS = frozenset(
    {"event", "level", "timestamp", "trace_id", "span_id", "exc_info", "exception", "logger"}
)
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


# -- trace context ---------------------------------------------------------------------------


def _locate(span: trace.Span) -> tuple[trace.Span | None, dict[str, Any] | None]:
    """The OpenTelemetry span a log line written now belongs to (see the module docstring), or
    None; and the metadata of the current vsrtel span, when it has any. ``span`` is the current
    OpenTelemetry span."""
    if span.is_recording():
        return span, None
    current = vsrtel.current_span()
    # A span has metadata once it was started with a listener: only then may a tracer have
    # opened it (reading `.context` otherwise would build it for nothing).
    metadata = None if current is None else current._metadata
    if metadata is not None:
        traced = traced_span(metadata.get("telemetry_span_context"))
        if traced is not None:
            return traced, metadata
    return (span if span.get_span_context().is_valid else None), metadata


def _trace_span() -> trace.Span | None:
    """The OpenTelemetry span a log line written now belongs to, or None."""
    return _locate(_get_current_span())[0]


def _ids(span: trace.Span) -> tuple[str, str]:
    """The trace and span ids of ``span`` in hex; remembered for the span last asked about, as a
    span usually writes several lines."""
    global _last
    last = _last
    if last[0] is span:
        return last[1]
    span_context = span.get_span_context()
    ids = f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    # One tuple, replaced whole: a thread reading it meanwhile sees the old pair or the new one.
    _last = (span, ids)
    return ids


# The span last formatted, and its ids: see `_ids`.
_last: tuple[Any, tuple[str, str]] = (None, ("", ""))


def _context_fields(span: trace.Span | None = None) -> dict[str, Any] | None:
    """The keys a log line written now gets, or None outside every span; ``span`` is the
    current OpenTelemetry span, when the caller has it already."""
    found, metadata = _locate(_get_current_span() if span is None else span)
    if found is not None:
        trace_id, span_id = _ids(found)
        return {"trace_id": trace_id, "span_id": span_id}
    if metadata is not None:
        return {"telemetry_span_context": metadata.get("telemetry_span_context")}
    return None


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: add ``trace_id`` and ``span_id`` of the span the line is written in.

    Put it in the processor chain before the renderer:
    ``structlog.configure(processors=[logs.add_trace_context, ..., JSONRenderer()])``. Outside
    every span it adds nothing; a key the event already has is kept (see the module docstring
    for which span, and the ``telemetry_span_context`` fallback).
    """
    span = _get_current_span()
    if span.is_recording():  # the common case, inline: two calls less per line
        if "trace_id" not in event_dict:
            last = _last
            if last[0] is span:
                event_dict["trace_id"], event_dict["span_id"] = last[1]
            else:
                event_dict["trace_id"], event_dict["span_id"] = _ids(span)
        return event_dict
    fields = _context_fields(span)
    if fields is not None:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


class TraceContextFilter(logging.Filter):
    """A stdlib `logging.Filter` that sets ``record.trace_id`` and ``record.span_id``.

    Add it to a handler (``handler.addFilter(logs.TraceContextFilter())``: a filter on a logger
    does not see the records of its children) and use ``%(trace_id)s`` / ``%(span_id)s`` in the
    format. Outside every span both are ``missing`` (default ``""``, so that the format works on
    every record; ``None`` sets nothing). It filters nothing out. An attribute the record already
    has (``extra={"trace_id": ...}``) is kept.
    """

    def __init__(self, missing: str | None = "") -> None:
        super().__init__()
        if missing is not None and not isinstance(missing, str):
            raise TypeError(f"missing must be a str or None, got {missing!r}")
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _context_fields()
        if fields is None:
            if self.missing is None:
                return True
            fields = {"trace_id": self.missing, "span_id": self.missing}
        elif "trace_id" not in fields and self.missing is not None:
            fields = {**fields, "trace_id": self.missing, "span_id": self.missing}
        for key, value in fields.items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


# -- the bridge: stdlib records as vsrtel events ----------------------------------------------


class EventHandler(logging.Handler):
    """A stdlib `logging.Handler` that emits each record as a vsrtel event.

    ``logging.getLogger().addHandler(logs.EventHandler())`` bridges every record; handlers of
    ``log.record`` (``event`` names another event) then see them: a metric of errors by logger
    (``counter("log.record.count", tags=["logger", "log_level"])``), ``vsrtel.debug("log")``.
    The metadata holds ``log_level`` (``"warning"``: the level name, lower-case; not ``level``,
    which structlog and the logs handler write themselves), ``logger`` (the logger's name),
    ``message`` (the formatted message) and, for a record with an exception, ``exception`` (its
    traceback as text); measurements are empty. The message and the
    traceback are scrubbed by the secrets rule (``redact`` names the secret keys, as for the
    handlers; ``()`` turns it off). ``level`` is the handler's threshold, as for any handler.
    Raises ``ValueError``/``TypeError`` naming a bad event name, level or key.
    """

    def __init__(
        self,
        event: str | Sequence[str] = DEFAULT_EVENT,
        *,
        level: int | str = logging.NOTSET,
        redact: Iterable[str] = DEFAULT_SECRET_KEYS,
        registry: vsrtel.Registry | None = None,
    ) -> None:
        super().__init__(level)
        self.event = vsrtel.event_name(event, what="event")
        self.secrets = Secrets(redact)
        self.registry = vsrtel.Registry.or_default(registry)

    def handle(self, record: logging.LogRecord) -> bool:
        # Nobody listening costs one lookup: before the filters, and without the handler's lock
        # (emitting an event needs none).
        if not self.registry.enabled(self.event) or _bridging.get():
            return False
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        token = _bridging.set(True)
        try:
            self.registry.execute(self.event, {}, lambda: self.metadata(record))
        except Exception:
            self.handleError(record)
        finally:
            _bridging.reset(token)

    def metadata(self, record: logging.LogRecord) -> dict[str, Any]:
        """The event's metadata for ``record``, scrubbed."""
        metadata: dict[str, Any] = {
            "log_level": record.levelname.lower(),
            "logger": record.name,
            "message": self.secrets.scrub(_message(record)),
        }
        error = _exception(record)
        if error is not None:
            metadata["exception"] = self.secrets.format_exception(error)
        return metadata


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the format: the template, as logging shows it
        return str(record.msg)


def _exception(record: logging.LogRecord) -> BaseException | None:
    exc_info = record.exc_info
    if exc_info and isinstance(exc_info, tuple) and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    return None


# -- OpenTelemetry's logs signal ----------------------------------------------------------------


class _Exporter:
    """What the OpenTelemetry handlers share: loggers per scope name, redaction, emitting."""

    def __init__(self, logger_provider: Any, redact: Iterable[str]) -> None:
        if not callable(getattr(logger_provider, "get_logger", None)):
            raise TypeError(
                f"logger_provider must be an OpenTelemetry LoggerProvider, got {logger_provider!r}"
            )
        self.logger_provider = logger_provider
        self.secrets = Secrets(redact)
        self.loggers: dict[str, Any] = {}

    def export(
        self,
        scope: str,
        level: int,
        body: Any,
        fields: Mapping[Any, Any],
        error: BaseException | None = None,
        exception_text: Any = None,
        timestamp: int | None = None,
    ) -> None:
        """Emit one record (unless one is being emitted here already); never raises."""
        if _exporting.get():
            return
        token = _exporting.set(True)
        try:
            logger = self.loggers.get(scope)
            if logger is None:
                logger = _otel_logs.get_logger(self.logger_provider, scope)
                remember(self.loggers, scope, logger)
            secrets = self.secrets
            attributes: dict[str, Any] = {}
            for key, value in secrets.redact(fields).items():
                converted = _attribute(value, secrets)
                if converted is not None:  # None has no attribute value
                    attributes[str(key)] = converted
            if error is not None:
                attributes["exception.type"] = type(error).__qualname__
                attributes["exception.message"] = secrets.scrub(_text(error))
                attributes["exception.stacktrace"] = secrets.format_exception(error)
            elif isinstance(exception_text, str):
                attributes["exception.stacktrace"] = secrets.scrub(exception_text)
            span = _trace_span()
            context: Context | None = None
            if span is not None and span is not _get_current_span():
                context = trace.set_span_in_context(span)
            if isinstance(body, str):
                body = secrets.scrub(body)
            else:
                body = _attribute(secrets.redact({"body": body})["body"], secrets)
            _otel_logs.emit(
                logger,
                level=level,
                body=body,
                attributes=attributes,
                timestamp=timestamp,
                context=context,
            )
        except Exception:
            logging.getLogger("vsrtel").exception(
                "vsrtel.logs: a log record could not be exported; it was dropped"
            )
        finally:
            _exporting.reset(token)


def _attribute(value: Any, secrets: Secrets) -> Any:
    """``value`` (redacted already) as an OpenTelemetry attribute value; the text of an object
    is scrubbed, as its ``str`` may show what its fields hid."""
    converted = scalar(value)
    if converted.__class__ is str and value.__class__ is not str:
        return secrets.scrub(converted)
    return converted


def _text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<unprintable {type(error).__qualname__}>"


def _is_sdk_logger(name: str) -> bool:
    return name == "opentelemetry" or name.startswith("opentelemetry.")


class OTelHandler(logging.Handler):
    """A stdlib `logging.Handler` that exports each record as an OpenTelemetry log record.

    ``logging.getLogger().addHandler(logs.OTelHandler(telemetry.logger_provider))``, with
    ``telemetry = otel.configure(...)``. The record's logger name is the instrumentation scope;
    its level the severity; its formatted message (or the handler's formatter's output, when
    one is set) the body; its ``extra=`` fields attributes, with the source location
    (``code.file.path``, ``code.function.name``, ``code.line.number``) and, for a record with an
    exception, ``exception.type``, ``exception.message`` and ``exception.stacktrace``. Secrets
    are redacted by the one rule (``redact``, as for the handlers), in the body, the attributes
    and the exception. Raises ``TypeError`` for something that is not a logger provider.
    """

    def __init__(
        self,
        logger_provider: Any,
        *,
        level: int | str = logging.NOTSET,
        redact: Iterable[str] = DEFAULT_SECRET_KEYS,
    ) -> None:
        super().__init__(level)
        self.exporter = _Exporter(logger_provider, redact)

    def emit(self, record: logging.LogRecord) -> None:
        if _is_sdk_logger(record.name) or _exporting.get():
            return
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_KEYS}
        fields["code.file.path"] = record.pathname
        fields["code.function.name"] = record.funcName
        fields["code.line.number"] = record.lineno
        if self.formatter is not None:
            try:
                body = self.format(record)
            except Exception:
                body = _message(record)
        else:
            body = _message(record)
        self.exporter.export(
            record.name,
            record.levelno,
            body,
            fields,
            error=_exception(record),
            timestamp=int(record.created * 1e9),
        )


class OTelProcessor:
    """A structlog processor that exports each event as an OpenTelemetry log record.

    Put it in the chain after the processors that add fields, before the renderer; it returns
    the event unchanged: ``structlog.configure(processors=[structlog.processors.add_log_level,
    logs.OTelProcessor(telemetry.logger_provider), structlog.dev.ConsoleRenderer()])``.
    The severity is the level of the method called (``log.warning`` is WARN), the body the
    event, the other keys attributes (secrets redacted by the one rule, ``redact`` as for the
    handlers); an ``exc_info`` exception, or the ``exception`` text (``format_exc_info``'s,
    the logs handler's) goes to ``exception.*`` attributes, scrubbed. The instrumentation scope
    is the event's ``logger`` key (``add_logger_name``) when it has one, else ``name``.
    Raises ``TypeError`` for something that is not a logger provider.
    """

    def __init__(
        self,
        logger_provider: Any,
        *,
        name: str = "structlog",
        redact: Iterable[str] = DEFAULT_SECRET_KEYS,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.exporter = _Exporter(logger_provider, redact)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        level = _LEVELS.get(method_name)
        if level is None:
            level = _LEVELS.get(str(event_dict.get("level", "")).lower(), logging.INFO)
        scope = event_dict.get("logger")
        error = None
        exc_info = event_dict.get("exc_info")
        if isinstance(exc_info, BaseException):
            error = exc_info
        elif isinstance(exc_info, tuple) and len(exc_info) == 3:
            error = exc_info[1] if isinstance(exc_info[1], BaseException) else None
        elif exc_info is True:
            error = sys.exc_info()[1]
        self.exporter.export(
            scope if isinstance(scope, str) and scope else self.name,
            level,
            event_dict.get("event"),
            {k: v for k, v in event_dict.items() if k not in _EVENT_KEYS},
            error=error,
            exception_text=event_dict.get("exception"),
        )
        return event_dict


def _drop(logger: Any, method_name: str, event_dict: Any) -> Any:
    raise structlog.DropEvent


def otel_logger(
    logger_provider: Any,
    *,
    name: str = "vsrtel",
    redact: Iterable[str] = DEFAULT_SECRET_KEYS,
) -> Any:
    """A structlog logger that exports every call as an OpenTelemetry log record, and prints
    nothing: ``handlers.logs.attach_logger("vsr", logger=logs.otel_logger(provider))`` exports
    vsrtel events. ``name`` is the instrumentation scope (see `OTelProcessor`)."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[OTelProcessor(logger_provider, name=name, redact=redact), _drop],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        context_class=dict,
    )
