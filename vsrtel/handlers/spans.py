"""Turn vsrtel spans into OpenTelemetry spans.

>>> from vsrtel.handlers import spans
>>> handle = spans.attach_tracer(["app.request"], tracer_provider=otel.tracer_provider)

For each span under a traced prefix, the ``start`` event opens an OpenTelemetry span (a child of
the current OpenTelemetry span, or of the remote parent in the ``"trace_parent"`` metadata key)
starting at the event's ``system_time``; a span entered with ``with``/``async with``/the decorator
is made the current OpenTelemetry span for its body, so nesting follows threads and asyncio tasks,
and the previous context is restored when the vsrtel span ends, however it ends (even with the
handler detached meanwhile). The ``stop`` event ends it with the stop metadata and extra
measurements as attributes (a stop whose metadata sets ``error.type``, as OpenTelemetry's semantic
conventions mark a failure without an exception such as an HTTP 5xx, sets status ERROR); the
``exception`` event records the exception, sets status ERROR and ends it. Events are matched by
``telemetry_span_context``: a stop or exception nobody started is ignored. The span's name is the
``span_name`` option, else a ``"span_name"`` metadata str (an integration's name for it; a stop
that changes it renames the span, as `vsrtel.web` does once the route is known), else the dotted
prefix; its kind is the ``"span_kind"`` metadata (``"server"``, ``"client"``, ``"producer"``,
``"consumer"``), else INTERNAL. Neither key becomes an attribute. A span the handler cannot open (a
``span_name`` function that raises, an unhashable span context) is skipped, logged once and counted
in the handle's ``skipped``; tracing goes on.

A span emitted by hand with ``execute`` (a callback-style integration: the stop comes from a
callback, a response's ``close()``) is made current where its ``start`` ran until its stop, as
Erlang's ``opentelemetry_telemetry`` does, so that spans opened in between (vsrtel's or raw
OpenTelemetry's) are its children; a span started with ``.start()`` never is. With a
``telemetry_span_context``, its ``stop`` or ``exception`` is matched by that context, from any
thread or task: there, a context on the span (the one it started in, or a copy a task created
inside it took) gives way to the context current before the span; the thread or task that
started it elsewhere keeps the ended span current until the tracer next works there (as for a
``with`` span ended elsewhere, see `_Frame`). A stop without that context does not end it.

Events without a ``telemetry_span_context`` (older code) are matched per thread or asyncio task
instead, as ``opentelemetry_telemetry`` matches them per process: the next ``stop`` or
``exception`` of that span name in that thread or task ends the innermost one open and
restores the context that was current before it. Such a stop elsewhere, or with none open, is
ignored. A task started inside the span inherits it, and may end it (the first stop ends it).

Past ``_MAX_BY_HAND`` spans emitted by hand left open in one thread or task, or
``_MAX_KEYED_BY_HAND`` with a context left open in all of them (their thread or task may be
gone), the oldest is ended, marked ``vsrtel.stop_missed``; its stop, if it comes, is ignored.
A tracer detached while such a span is open never sees its stop: the span stays open, and
current where it started.

Attribute values OpenTelemetry cannot hold are converted (nested mappings flattened to dotted
keys, objects to ``str``) or dropped (``None``). Secrets (the ``redact`` setting, the rule shared
with `vsrtel.handlers.logs`) are replaced by ``"[REDACTED]"``: in attributes, and in the
exception's message, stack trace and the span's status description.
"""

from __future__ import annotations

import itertools
import logging
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
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

import vsrtel
from vsrtel import EventName, current_span
from vsrtel._names import remember
from vsrtel._redact import DEFAULT_SECRET_KEYS, REDACTED, Secrets
from vsrtel._span import explicit_start
from vsrtel.handlers._attributes import INT64, scalar, text

__all__ = ["DEFAULT_SECRET_KEYS", "attach_tracer", "extract", "inject"]

SpanName = str | Callable[[EventName, Mapping[str, Any]], str] | None

_START, _STOP, _EXCEPTION = 0, 1, 2
# Metadata the span itself represents (identity, parent, exception): not copied as attributes.
_SPAN_KEYS = frozenset({"telemetry_span_context", "trace_parent", "span_name", "span_kind"})
# The ``span_kind`` metadata values: what a tracing backend's service map reads.
_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}
_EXCEPTION_KEYS = _SPAN_KEYS | {"kind", "reason", "stacktrace"}
_CLOCK_KEYS = frozenset({"duration", "monotonic_time", "system_time"})
_MAX_DEPTH = 4
# What becomes of an attribute key (see `_Tracer.verdict`).
_COPY, _SECRET, _SKIP = "copy", "secret", "skip"
_SPAN_SUFFIXES = {"start": _START, "stop": _STOP, "exception": _EXCEPTION}
# Bound on the spans emitted by hand left open in one thread or task: their stops may never
# come, and each open one nests the next.
_MAX_BY_HAND = 100
# Bound on those with a telemetry_span_context open at once in all threads and tasks: the
# tracer holds them until their stop, which a thread or task that is gone will never emit.
_MAX_KEYED_BY_HAND = 10_000
_handler_ids = itertools.count(1)
_tracers: weakref.WeakSet[_Tracer] = weakref.WeakSet()
_log = logging.getLogger("vsrtel")
_get_current, _attach = otel_context.get_current, otel_context.attach


class _Frame:
    """The OpenTelemetry context a traced span makes current (when the frame is built), until
    the span ends.

    A context whose innermost frame has ended is stale: the span ended without restoring it
    (out of order, in another thread or task, or the context is a copy that a task created
    inside the span took). Whenever the tracer meets such a context it makes the context below
    the ended frames current instead (``_Tracer.live``), as ``vsrtel.current_span()`` skips
    ended spans. So restoring sets a context and never resets a token, which fails (and
    OpenTelemetry logs an error) outside the context that made it.
    """

    __slots__ = ("context", "ended", "key", "previous", "span", "tracer")

    def __init__(self, tracer: _Tracer, key: Any, span: trace.Span, previous: Context) -> None:
        self.tracer = tracer
        self.key = key  # the span's telemetry_span_context (None for a span emitted without)
        self.span = span
        self.previous = previous
        self.ended = False
        # The context made current: the span's, with this frame under the tracer's marker key.
        # set_span_in_context returns a new Context that nobody else holds yet: the frame is
        # added to it in place (Context forbids item assignment to guard shared contexts)
        # rather than in one more copy.
        context = self.context = trace.set_span_in_context(span, previous)
        dict.__setitem__(context, tracer.current_key, self)
        _attach(context)

    def leave(self) -> None:
        """The exit callback of a ``with`` span: restore the OTel context this frame replaced."""
        tracer = self.tracer
        entry = tracer.open.get(self.key)
        if entry is not None and entry[1] is self:
            # No stop reached us (the handler was detached, or a start handler raised): end the
            # span anyway, so that it is exported and never left open.
            tracer.open.pop(self.key)
            if entry[4] is not None:
                tracer.open[self.key] = entry[4]
            self.span.set_attribute("vsrtel.stop_missed", True)
            self.span.end()
        self.ended = True
        # Usually this frame is the innermost of the current context, and the context below it
        # is restored. After spans ended out of order, one still running is innermost and stays.
        # In another thread or task, the span's own context is restored when the tracer next
        # meets it there.
        context = _get_current()
        if context.get(tracer.current_key) is self:
            previous = self.previous
            below: _Frame | None = previous.get(tracer.current_key)  # type: ignore[assignment]
            if below is None or not below.ended:  # the common case, without calling live
                _attach(previous)
                return
        tracer.live(context)


# An open span: (OTel span, its frame when made current, the start metadata to set only what
# changed at stop, the start time, the entry it shadows when a span reused an open span context).
# A plain tuple: it is built once per span on the hot path.
_Open = tuple[trace.Span, "_Frame | None", Mapping[str, Any], "int | None", Any]
# The spans emitted by hand open in one thread or task, innermost last: (span prefix, frame,
# open span).
_ByHand = tuple[tuple[EventName, _Frame, _Open], ...]


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
) -> vsrtel.Handle:
    """Attach a handler that turns the spans under ``prefixes`` into OpenTelemetry spans.

    ``prefixes`` select spans by prefix, as :func:`vsrtel.attach_prefix` selects events:
    ``"app"`` traces ``app.request``, ``app.db.query`` and every other span under ``app``;
    ``"app.request"`` traces that span (and any under it). ``tracer_provider`` defaults to the
    global one. ``span_name`` is the OTel span name: the dotted prefix by default, else a fixed
    str, or a function ``(prefix, start_metadata) -> str``. ``attributes``, when given, lists the
    only metadata keys copied onto spans (default: all). With ``span_events=True`` any other
    event emitted while a traced span is the current one becomes an OTel span event on it (name =
    the dotted event name). ``redact`` names secret keys (see "Secrets" in the README).

    Returns a :class:`vsrtel.Handle` (its ``id`` is ``handler_id``, generated when not given):
    ``.detach()`` it, or ``vsrtel.detach(handle)``; its ``skipped`` counts the events it failed
    on (a span it could not trace).
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
        span_events,
        None if attributes is None else frozenset(attributes),
        Secrets(redact),
        handler_id,
    )
    registry = vsrtel.Registry.or_default(registry)
    # Traced spans are matched by prefix, and span events may come from any event: listen under
    # the longest prefix that covers what is wanted, and classify each event name once.
    registry.attach_prefix(handler_id, () if span_events else _common_prefix(names), tracer.handle)
    _tracers.add(tracer)
    return vsrtel.Handle(handler_id, registry, skipped=lambda: tracer.skipped)


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
    from opentelemetry import propagate  # here: its import is most of this module's

    if span is not None:
        context = _context_of(span)
    propagate.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """Read a trace context from ``carrier`` with the configured propagators.

    Put the result in a span's start metadata as ``"trace_parent"`` to continue the remote
    trace: ``vsrtel.span("app.handle", {"trace_parent": extract(headers)})``.
    """
    from opentelemetry import propagate

    return propagate.extract(carrier)


def _common_prefix(names: list[EventName]) -> EventName:
    common = names[0]
    for name in names[1:]:
        while not vsrtel.starts_with(name, common):
            common = common[:-1]
    return common


def _context_of(span: vsrtel.Span) -> Context | None:
    otel_span = traced_span(span.context)
    return None if otel_span is None else trace.set_span_in_context(otel_span)


def traced_span(span_context: Any) -> trace.Span | None:
    """The OpenTelemetry span an attached tracer opened for the vsrtel span whose
    ``telemetry_span_context`` is ``span_context`` and has not ended yet, else None."""
    for tracer in list(_tracers):
        try:
            entry = tracer.open.get(span_context)
        except TypeError:  # an unhashable context, which no tracer opened
            return None
        if entry is not None:
            return entry[0]
    return None


class _Tracer:
    """The state of one attached spans handler."""

    def __init__(
        self,
        tracer: trace.Tracer,
        prefixes: list[EventName],
        span_name: SpanName,
        span_events: bool,
        allowed: frozenset[str] | None,
        secrets: Secrets,
        handler_id: Hashable,
    ) -> None:
        self.tracer = tracer
        self.prefixes = prefixes
        self.fixed_name = span_name if isinstance(span_name, str) else None
        self.name_function = None if span_name is None or isinstance(span_name, str) else span_name
        self.span_events = span_events
        self.allowed = allowed
        self.secrets = secrets
        self.handler_id = handler_id
        # For each set of excluded keys (metadata, exception metadata, measurements): key ->
        # its verdict (see `verdict`).
        self.verdicts: dict[frozenset[str] | None, dict[Any, str]] = {
            _SPAN_KEYS: {},
            _EXCEPTION_KEYS: {},
            None: {},
        }
        # Event name -> (kind, span prefix, span name), or None for a plain event.
        self.events: dict[EventName, tuple[int, EventName, str] | None] = {}
        # The spans of `with` and `.start()` open, by telemetry_span_context.
        self.open: dict[Any, _Open] = {}
        # The spans emitted by hand with a telemetry_span_context open, by that context (apart
        # from `open`, so that the stop of a `with` span looks in one dict, as it did).
        self.keyed: dict[Any, _Open] = {}
        self.by_hand: ContextVar[_ByHand] = ContextVar("vsrtel_spans_by_hand", default=())
        # Set once a span was emitted by hand: only then may a plain event outside every vsrtel
        # span belong to a traced span.
        self.any_by_hand = False
        self.skipped = 0
        # Marks the OTel contexts this handler made current, so that plain events find the
        # innermost traced span even when other OTel spans are nested inside it.
        self.current_key = otel_context.create_key("vsrtel_traced_span")

    def classify(self, name: EventName) -> tuple[int, EventName, str] | None:
        kind = _SPAN_SUFFIXES.get(name[-1])
        event = None
        if kind is not None and len(name) > 1:
            prefix = name[:-1]
            if any(vsrtel.starts_with(prefix, p) for p in self.prefixes):
                event = (kind, prefix, self.fixed_name or ".".join(prefix))
        return remember(self.events, name, event)

    def handle(
        self, name: EventName, measurements: Mapping[str, Any], metadata: Mapping[str, Any], _: Any
    ) -> None:
        try:
            event = self.events[name]
        except KeyError:
            event = self.classify(name)
        try:
            if event is None:
                if self.span_events:
                    self.add_event(name, measurements, metadata)
            elif event[0] == _START:
                self.start(event[1], event[2], measurements, metadata)
            else:
                self.finish(event, measurements, metadata)
        except Exception as error:
            # Never detach the tracer for one span: skip it and keep tracing the others.
            self.skipped += 1
            level = logging.DEBUG if self.skipped > 1 else logging.WARNING
            _log.log(
                level,
                "spans handler %r: skipped event %s (further failures log at DEBUG)\n%s",
                self.handler_id,
                ".".join(name),
                self.secrets.format_exception(error),
            )

    def start(
        self,
        prefix: EventName,
        name: str,
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> None:
        key = metadata.get("telemetry_span_context")
        shadowed = self.open.get(key)  # raises TypeError for an unhashable context: skipped
        if self.name_function is not None:
            name = self.name_function(prefix, metadata)
        elif self.fixed_name is None and metadata.get("span_name").__class__ is str:
            name = metadata["span_name"]  # an integration's name for it (`vsrtel.web`'s: GET)
        given = metadata.get("span_kind")
        kind = _KINDS.get(given, SpanKind.INTERNAL) if given.__class__ is str else SpanKind.INTERNAL
        start_time = measurements.get("system_time")
        if start_time.__class__ is not int:
            start_time = None
        context = _get_current()
        top: _Frame | None = context.get(self.current_key)  # type: ignore[assignment]
        if top is not None and top.ended:  # checked here: the common case calls nothing
            context = self.live(context)
        parent = metadata.get("trace_parent")
        span = self.tracer.start_span(
            name,
            context if parent is None else _parent(parent),
            kind=kind,
            attributes=self.attributes(metadata, _SPAN_KEYS),
            start_time=start_time,
        )
        current = current_span()
        # A span entered with `with` is current for its body. A `.start()` span never is, and
        # must not leave an OTel context attached to its caller. Any other start was emitted by
        # hand (`execute`), by a callback-style integration whose stop comes later: current
        # here until then.
        if current is not None and current.context == key:
            frame = _Frame(self, key, span, context)
            current.on_exit(frame.leave)
            self.open[key] = (span, frame, metadata, start_time, shadowed)
        elif key is None or explicit_start() is None:
            self.push_by_hand(prefix, span, context, metadata, start_time, key)
        else:
            self.open[key] = (span, None, metadata, start_time, shadowed)

    def finish(
        self,
        event: tuple[int, EventName, str],
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> None:
        key = metadata.get("telemetry_span_context")
        try:
            entry = self.open.pop(key)
        except (KeyError, TypeError):
            found = self.pop_by_hand(event[1]) if key is None else self.pop_keyed(key)
            if found is None:
                return
            entry = found
        if entry[4] is not None:
            self.open[key] = entry[4]  # the span this one shadowed is open again
        kind = event[0]
        span, _, start_metadata, start_time, _ = entry
        changed: dict[str, Any] | None = None  # a loop, not a comprehension: no function call
        for k, v in metadata.items():
            if k not in start_metadata or start_metadata[k] is not v:
                if changed is None:
                    changed = {}
                changed[k] = v
        if changed:
            exclude = _EXCEPTION_KEYS if kind == _EXCEPTION else _SPAN_KEYS
            span.set_attributes(self.attributes(changed, exclude))
            renamed = changed.get("span_name")
            if renamed.__class__ is str and self.fixed_name is None and self.name_function is None:
                span.update_name(renamed)  # known only now: an HTTP route, matched by the app
            if kind != _EXCEPTION and changed.get("error.type") is not None:
                # Failed without an exception (an HTTP 5xx): OpenTelemetry's semantic
                # conventions mark that with error.type, and the span's status is then ERROR.
                span.set_status(Status(StatusCode.ERROR))
        if not _CLOCK_KEYS.issuperset(measurements):
            extra = {k: v for k, v in measurements.items() if k not in _CLOCK_KEYS}
            span.set_attributes(self.attributes(extra))
        duration = measurements.get("duration")
        end_time = None
        if start_time is not None and isinstance(duration, int):
            end_time = start_time + duration
        if kind == _EXCEPTION:
            _record_exception(span, metadata, end_time, self.secrets)
        span.end(end_time=end_time)

    def push_by_hand(
        self,
        prefix: EventName,
        span: trace.Span,
        context: Context,
        metadata: Mapping[str, Any],
        start_time: int | None,
        key: Any,
    ) -> None:
        """Make ``span``, started by hand (with span context ``key``, or None), current in this
        thread or task."""
        self.any_by_hand = True
        stack = tuple(item for item in self.by_hand.get() if not item[1].ended)
        if len(stack) >= _MAX_BY_HAND:
            lost = stack[0][1]
            stack = stack[1:]
            self.abandon(lost)
        frame = _Frame(self, key, span, context)
        entry: _Open = (span, frame, metadata, start_time, None)
        if key is not None:
            # A context reused while open (shadowed): its first stop ends this span.
            entry = (span, frame, metadata, start_time, self.keyed.get(key))
            self.keyed[key] = entry
        self.by_hand.set((*stack, (prefix, frame, entry)))
        if key is not None and len(self.keyed) > _MAX_KEYED_BY_HAND:
            self.abandon_oldest()

    def abandon(self, frame: _Frame) -> None:
        """End the span of ``frame``, emitted by hand, whose stop never came or will come too
        late to matter, so that it is exported; its stop, if it comes, is ignored."""
        if frame.ended:
            return
        frame.ended = True
        frame.span.set_attribute("vsrtel.stop_missed", True)
        frame.span.end()
        key = frame.key
        if key is not None:
            entry = self.keyed.get(key)
            if entry is not None and entry[1] is frame:
                del self.keyed[key]
                if entry[4] is not None:
                    self.keyed[key] = entry[4]

    def abandon_oldest(self) -> None:
        """Abandon the span emitted by hand with a context that has been open longest."""
        try:
            evicted: _Open | None = self.keyed.pop(next(iter(self.keyed)))
        except (RuntimeError, StopIteration, KeyError):  # another thread changed them first
            return
        while evicted is not None:
            if evicted[1] is not None:
                self.abandon(evicted[1])
            evicted = evicted[4]

    def pop_keyed(self, key: Any) -> _Open | None:
        """The open span emitted by hand with span context ``key``, ended for the tracer and
        taken off the open ones; None when there is none.

        The stop may come from any thread or task. Where it comes from, a context on that span
        (the one it started in, or a copy that a task created inside it took) gives way to the
        context below it. The thread or task that started it elsewhere is left as it is until
        the tracer next works there (see `_Frame`).
        """
        try:
            entry: _Open | None = self.keyed.pop(key)
        except (KeyError, TypeError):
            return None
        while entry is not None and (entry[1] is None or entry[1].ended):  # past a bound
            entry = entry[4]
        if entry is None:
            return None
        span, frame, metadata, start_time, shadowed = entry
        assert frame is not None  # for mypy: every span emitted by hand has its frame
        if shadowed is not None:
            self.keyed[key] = shadowed
        frame.ended = True
        stack = self.by_hand.get()
        if stack:
            self.by_hand.set(tuple(item for item in stack if not item[1].ended))
        self.live(_get_current())
        return (span, frame, metadata, start_time, None)

    def pop_by_hand(self, prefix: EventName) -> _Open | None:
        """The innermost open span of ``prefix`` started without a span context in this thread
        or task, taken off its stack with its context restored; None when there is none."""
        stack = self.by_hand.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] == prefix and stack[index][1].key is None:
                break
        else:
            return None
        _, frame, entry = stack[index]
        # Spans ended meanwhile (by a task that inherited them) are dropped too.
        rest = stack[:index] + stack[index + 1 :]
        self.by_hand.set(tuple(item for item in rest if not item[1].ended))
        if frame.ended:
            return None  # a task that inherited it stopped it first
        frame.ended = True
        self.live(_get_current())
        return entry

    def live(self, context: Context) -> Context:
        """``context``, or when its innermost traced span has ended, the context below the
        ended ones, made current."""
        top: _Frame | None = context.get(self.current_key)  # type: ignore[assignment]
        if top is None or not top.ended:
            return context
        while top is not None and top.ended:
            context = top.previous
            top = context.get(self.current_key)  # type: ignore[assignment]
        _attach(context)
        return context

    def add_event(
        self, name: EventName, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        if current_span() is None and not self.any_by_hand:
            return  # no vsrtel span is entered, so no traced span is current: skip OTel's lookup
        context = _get_current()
        frame = context.get(self.current_key)
        if isinstance(frame, _Frame) and frame.ended:
            frame = self.live(context).get(self.current_key)
        if isinstance(frame, _Frame):
            attributes = self.attributes(metadata, _SPAN_KEYS)
            attributes.update(self.attributes(measurements))
            frame.span.add_event(".".join(name), attributes)

    def attributes(
        self, values: Mapping[str, Any], exclude: frozenset[str] | None = None
    ) -> dict[str, AttributeValue]:
        """Attributes for metadata (``exclude`` given) or measurements (no allow-list).

        One pass redacts and converts: numbers and text, the common values, are handled inline;
        anything else is redacted whole (its nested keys, its text) and then converted.
        """
        out: dict[str, AttributeValue] = {}
        verdicts = self.verdicts[exclude]
        secrets = self.secrets
        for key, value in values.items():
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = remember(verdicts, key, self.verdict(key, exclude))
            if verdict is not _COPY:
                if verdict is _SECRET:
                    out[key] = REDACTED
                continue
            cls = value.__class__
            if cls is str:
                out[key] = secrets.scrub(value)
            elif (cls is int and value in INT64) or cls is float or cls is bool:
                out[key] = value
            else:
                _convert(out, key, secrets.redact({key: value})[key], 0)
        return out

    def verdict(self, key: Any, exclude: frozenset[str] | None) -> str:
        """What becomes of the attribute ``key``: copied, redacted, or skipped (a key that is not
        a str, one the span itself represents, or one outside the ``attributes`` allow-list)."""
        if not isinstance(key, str):
            return _SKIP
        if exclude is not None and (
            key in exclude or (self.allowed is not None and key not in self.allowed)
        ):
            return _SKIP
        return _SECRET if self.secrets.is_secret(key) else _COPY


def _convert(out: dict[str, AttributeValue], key: str, value: Any, depth: int) -> None:
    """Put ``value`` (redacted) in ``out`` under ``key``: flattened to dotted keys when it is a
    mapping (down to ``_MAX_DEPTH`` levels), else as the attribute value it has, if any."""
    cls = value.__class__
    if cls is str or cls is float or cls is bool or (cls is int and value in INT64):
        out[key] = value
    elif isinstance(value, Mapping):
        if depth < _MAX_DEPTH:
            for k, v in value.items():
                if isinstance(k, str):
                    _convert(out, f"{key}.{k}", v, depth + 1)
    else:
        converted = _attribute_value(value)
        if converted is not None:
            out[key] = converted


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
        return extract({"traceparent": trace_parent})
    if isinstance(trace_parent, Mapping):
        return extract(trace_parent)
    return None


def _record_exception(
    span: trace.Span, metadata: Mapping[str, Any], end_time: int | None, secrets: Secrets
) -> None:
    reason = metadata.get("reason")
    if isinstance(reason, BaseException):
        message = secrets.scrub(str(reason))
        scrubbed = {
            "exception.message": message,
            "exception.stacktrace": secrets.format_exception(reason),
        }
        # The exception event of a span is the exception that ended it: it escaped the span.
        span.record_exception(reason, scrubbed, timestamp=end_time, escaped=True)
        description = message or type(reason).__name__
    else:
        kind = metadata.get("kind")
        kind_name = kind.__qualname__ if isinstance(kind, type) else str(kind)
        description = secrets.scrub(text(reason) or "") or kind_name
        span.add_event(
            "exception",
            {"exception.type": kind_name, "exception.message": description},
            timestamp=end_time,
        )
    span.set_status(Status(StatusCode.ERROR, description))
