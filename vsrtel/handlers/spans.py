"""Turn vsrtel spans into OpenTelemetry spans.

>>> from vsrtel.handlers import spans
>>> handler_id = spans.attach_tracer(["app.request"], tracer_provider=otel.tracer_provider)

For each traced prefix, the ``start`` event opens an OpenTelemetry span (a child of the current
OpenTelemetry span, or of the remote parent in the ``"trace_parent"`` metadata key) starting at
the event's ``system_time``; a span entered with ``with``/``async with``/the decorator is made
the current OpenTelemetry span for its body, so nesting follows threads and asyncio tasks. The
``stop`` event ends it with the stop metadata and extra measurements as attributes; the
``exception`` event records the exception, sets status ERROR and ends it. Events are matched by
``telemetry_span_context``: a stop or exception nobody started is ignored.

Attribute values OpenTelemetry cannot hold are converted (nested mappings flattened to dotted
keys, objects to ``str``) or dropped (``None``); keys named as secrets (the ``redact`` setting
shared with `vsrtel.handlers.logs`) never reach a span.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import (
    Callable,
    Collection,
    Hashable,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

import vsrtel
from vsrtel import current_span
from vsrtel.handlers._attributes import INT64, scalar, text
from vsrtel.handlers._redact import DEFAULT_SECRET_KEYS, Secrets

__all__ = ["DEFAULT_SECRET_KEYS", "attach_tracer", "extract", "inject"]

EventName = tuple[str, ...]
SpanName = str | Callable[[EventName, Mapping[str, Any]], str] | None

_START, _STOP, _EXCEPTION = 0, 1, 2
# Metadata the span itself represents (identity, parent, exception): not copied as attributes.
_SPAN_KEYS = frozenset({"telemetry_span_context", "trace_parent"})
_EXCEPTION_KEYS = _SPAN_KEYS | {"kind", "reason", "stacktrace"}
_CLOCK_KEYS = frozenset({"duration", "monotonic_time", "system_time"})
_MAX_DEPTH = 4
_handler_ids = itertools.count(1)
_tracers: weakref.WeakSet[_Tracer] = weakref.WeakSet()


# An open span: (OTel span, the token to detach at stop or None for a span never made current,
# the start metadata to set only what changed at stop, the start time). A plain tuple: it is
# built once per span on the hot path.
_Open = tuple[trace.Span, "Token[Context] | None", Mapping[str, Any], "int | None"]


def attach_tracer(
    prefixes: Iterable[str | Sequence[str]],
    *,
    tracer_provider: TracerProvider | None = None,
    handler_id: Hashable | None = None,
    span_name: SpanName = None,
    attributes: Collection[str] | None = None,
    span_events: bool = True,
    redact: Iterable[str] = DEFAULT_SECRET_KEYS,
    registry: vsrtel.Registry | None = None,
) -> Hashable:
    """Attach a handler that turns the spans under ``prefixes`` into OpenTelemetry spans.

    ``prefixes`` are span prefixes (``"app.request"`` or ``("app", "request")``); each gets its
    ``start``/``stop``/``exception`` events traced. ``tracer_provider`` defaults to the global
    one. ``span_name`` is the OTel span name: the dotted prefix by default, else a fixed str, or
    a function ``(prefix, start_metadata) -> str``. ``attributes``, when given, lists the only
    metadata keys copied onto spans (default: all). With ``span_events=True`` any other event
    emitted while a traced span is the current one becomes an OTel span event on it (name = the
    dotted event name). ``redact`` names secret metadata keys, dropped from attributes.

    Returns the handler id (generated when not given); ``vsrtel.detach(handler_id)`` removes it.
    Raises ``ValueError``/``TypeError`` for a bad prefix, option, or a handler id in use.
    """
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    names = [vsrtel.event_name(prefix, what="span prefix") for prefix in prefixes]
    if not names:
        raise ValueError("attach_tracer needs at least one span prefix")
    if span_name is not None and not (isinstance(span_name, str) or callable(span_name)):
        raise TypeError(f"span_name must be a str, a callable or None, got {span_name!r}")
    if isinstance(attributes, str):
        raise TypeError(f"attributes must be a collection of key names, not {attributes!r}")
    if handler_id is None:
        handler_id = ("vsrtel.handlers.spans", next(_handler_ids))
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = _Tracer(
        provider.get_tracer("vsrtel.handlers.spans", vsrtel.__version__),
        names,
        span_name,
        None if attributes is None else frozenset(attributes),
        Secrets(redact),
    )
    registry = registry if registry is not None else vsrtel.default_registry
    if span_events:
        registry.attach_prefix(handler_id, (), tracer.handle)
    else:
        registry.attach_many(handler_id, list(tracer.events), tracer.handle)
    _tracers.add(tracer)
    return handler_id


def inject(
    carrier: MutableMapping[str, str],
    *,
    span: vsrtel.Span | None = None,
    context: Context | None = None,
) -> MutableMapping[str, str]:
    """Write the trace context into ``carrier`` (e.g. message headers) and return it.

    Uses the configured propagators (``OTEL_PROPAGATORS``; W3C ``traceparent`` by default).
    By default the current OpenTelemetry context is injected; pass ``span`` (a traced vsrtel
    span, e.g. one started with ``.start()``, which is never current) or an explicit
    ``context`` to inject that one instead.
    """
    if span is not None:
        context = _context_of(span)
    propagate.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """Read a trace context from ``carrier`` with the configured propagators.

    Put the result in a span's start metadata as ``"trace_parent"`` to continue the remote
    trace: ``vsrtel.span("app.handle", {"trace_parent": extract(headers)})``.
    """
    return propagate.extract(carrier)


def _context_of(span: vsrtel.Span) -> Context | None:
    key = span.context
    for tracer in list(_tracers):
        entry = tracer.open.get(key)
        if entry is not None:
            return trace.set_span_in_context(entry[0])
    return None


class _Tracer:
    """The state of one attached spans handler."""

    def __init__(
        self,
        tracer: trace.Tracer,
        prefixes: list[EventName],
        span_name: SpanName,
        allowed: frozenset[str] | None,
        secrets: Secrets,
    ) -> None:
        self.tracer = tracer
        # Event name -> (kind, span prefix, span name unless computed per span).
        self.events: dict[EventName, tuple[int, EventName, str]] = {}
        for prefix in prefixes:
            fixed = span_name if isinstance(span_name, str) else ".".join(prefix)
            for suffix, kind in (("start", _START), ("stop", _STOP), ("exception", _EXCEPTION)):
                name = (*prefix, suffix)
                self.events[name] = (kind, prefix, fixed)
        self.name_function = None if span_name is None or isinstance(span_name, str) else span_name
        self.allowed = allowed
        self.secrets = secrets
        self.open: dict[Any, _Open] = {}
        # Marks the OTel contexts this handler made current, so that plain events find the
        # innermost traced span even when other OTel spans are nested inside it.
        self.current_key = otel_context.create_key("vsrtel_traced_span")

    def handle(
        self, name: EventName, measurements: Mapping[str, Any], metadata: Mapping[str, Any], _: Any
    ) -> None:
        event = self.events.get(name)
        if event is None:
            self.add_event(name, measurements, metadata)
        elif event[0] == _START:
            self.start(event[1], event[2], measurements, metadata)
        else:
            self.finish(event[0], measurements, metadata)

    def start(
        self,
        prefix: EventName,
        name: str,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> None:
        key = metadata.get("telemetry_span_context")
        if key is None:
            return
        if self.name_function is not None:
            name = self.name_function(prefix, metadata)
        start_time = measurements.get("system_time")
        if start_time.__class__ is not int:
            start_time = None
        parent = metadata.get("trace_parent")
        span = self.tracer.start_span(
            name,
            context=None if parent is None else _parent(parent),
            attributes=self.attributes(metadata, _SPAN_KEYS),
            start_time=start_time,
        )
        token = None
        current = current_span()
        # Only a span entered with `with` is current in vsrtel; a `.start()` span never is, and
        # must not leave an OTel context attached to its caller.
        if current is not None and current.context == key:
            ctx = trace.set_span_in_context(span)
            token = otel_context.attach(otel_context.set_value(self.current_key, span, ctx))
        self.open[key] = (span, token, metadata, start_time)

    def finish(
        self, kind: int, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        try:
            entry = self.open.pop(metadata.get("telemetry_span_context"))
        except (KeyError, TypeError):
            return
        span, token, start_metadata, start_time = entry
        try:
            changed = {
                k: v for k, v in metadata.items() if start_metadata.get(k, _MISSING) is not v
            }
            if changed:
                exclude = _EXCEPTION_KEYS if kind == _EXCEPTION else _SPAN_KEYS
                span.set_attributes(self.attributes(changed, exclude))
            if not _CLOCK_KEYS.issuperset(measurements):
                extra = {k: v for k, v in measurements.items() if k not in _CLOCK_KEYS}
                span.set_attributes(self.attributes(extra))
            duration = measurements.get("duration")
            end_time = None
            if start_time is not None and isinstance(duration, int):
                end_time = start_time + duration
            if kind == _EXCEPTION:
                _record_exception(span, metadata, end_time)
            span.end(end_time=end_time)
        finally:
            if token is not None:
                otel_context.detach(token)

    def add_event(
        self, name: EventName, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        if current_span() is None:
            return  # no vsrtel span is entered, so no traced span is current: skip OTel's lookup
        span = otel_context.get_value(self.current_key)
        if isinstance(span, trace.Span):
            attributes = self.attributes(metadata, _SPAN_KEYS)
            attributes.update(self.attributes(measurements))
            span.add_event(".".join(name), attributes)

    def attributes(
        self, values: Mapping[str, Any], exclude: frozenset[str] | None = None
    ) -> dict[str, AttributeValue]:
        """Attributes for metadata (``exclude`` given) or measurements (no allow-list)."""
        out: dict[str, AttributeValue] = {}
        _flatten(out, "", values, self, exclude, 0)
        return out


_MISSING = object()


def _flatten(
    out: dict[str, AttributeValue],
    prefix: str,
    values: Mapping[Any, Any],
    tracer: _Tracer,
    exclude: frozenset[str] | None,
    depth: int,
) -> None:
    allowed = tracer.allowed if exclude is not None and depth == 0 else None
    is_secret = tracer.secrets.is_secret
    for key, value in values.items():
        if not isinstance(key, str) or is_secret(key):
            continue
        if (
            depth == 0
            and exclude is not None
            and (key in exclude or (allowed is not None and key not in allowed))
        ):
            continue
        cls = value.__class__
        if cls is str or cls is float or cls is bool or (cls is int and value in INT64):
            out[prefix + key] = value
        elif isinstance(value, Mapping):
            if depth < _MAX_DEPTH:
                _flatten(out, f"{prefix}{key}.", value, tracer, exclude, depth + 1)
        else:
            converted = _attribute_value(value)
            if converted is not None:
                out[prefix + key] = converted


def _attribute_value(value: Any) -> AttributeValue | None:
    """An OTel attribute value for ``value``, or None to drop it."""
    if isinstance(value, list | tuple | set | frozenset):
        items = [item for item in map(scalar, value) if item is not None]
        if items and any(type(item) is not type(items[0]) for item in items):
            return tuple(str(item) for item in items)
        return tuple(items)
    return scalar(value)


def _parent(trace_parent: Any) -> Context | None:
    if trace_parent is None:
        return None
    if isinstance(trace_parent, Context):
        return trace_parent
    if isinstance(trace_parent, str):
        return propagate.extract({"traceparent": trace_parent})
    if isinstance(trace_parent, Mapping):
        return propagate.extract(trace_parent)
    return None


def _record_exception(span: trace.Span, metadata: Mapping[str, Any], end_time: int | None) -> None:
    reason = metadata.get("reason")
    if isinstance(reason, BaseException):
        span.record_exception(reason, timestamp=end_time)
        description = str(reason) or type(reason).__name__
    else:
        kind = metadata.get("kind")
        kind_name = kind.__qualname__ if isinstance(kind, type) else str(kind)
        description = text(reason) or kind_name
        span.add_event(
            "exception",
            {"exception.type": kind_name, "exception.message": description},
            timestamp=end_time,
        )
    span.set_status(Status(StatusCode.ERROR, description))
