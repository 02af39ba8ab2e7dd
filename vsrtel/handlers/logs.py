"""Log vsrtel events with structlog.

>>> from vsrtel.handlers import logs
>>> handler_id = logs.attach_logger("app", level="info", levels={"app.heartbeat": "debug"})
>>> handler_id = logs.attach_logger("vsr", min_level="info")  # nothing below info is logged

Each event under the prefix becomes one structlog call whose event is the dotted event name and
whose key/value pairs are the measurements and metadata: durations (``duration``, ``*_duration``
and ``*_time`` deltas, integer nanoseconds) become ``<key>_ms`` in milliseconds, the absolute
``monotonic_time``/``system_time`` clocks are left out (the log line has its own timestamp),
secrets are redacted (the rule is in README.md, "Secrets"), ``trace_id``/``span_id`` are added
when an OpenTelemetry span is recording, and a remote parent in ``trace_parent`` (an
OpenTelemetry ``Context``, ``SpanContext`` or W3C ``traceparent``) is shown as its 32-hex trace
id. ``exception`` and ``failure`` events (a span's exception, the core's handler failures, the
poller's) log at error with the exception's traceback, scrubbed of secrets, as the
``exception`` text (as structlog's ``format_exc_info`` would put it; with ``redact=()`` the
exception itself is passed as ``exc_info``).

``level``/``levels`` choose the level each event is logged *at*; ``min_level`` is a threshold:
events below it are not logged, whatever the logger's configuration. When ``min_level`` or the
logger's own level filters an event out, the handler returns before building anything.
Any payload becomes a line: odd keys are turned into str, keys that clash with structlog's own
(``event``, ``level``, ``timestamp``, ``self``...) get a trailing ``_``, and values the logger
cannot render are logged as their repr, or as ``<int of 5001 digits>`` and
``<unrepresentable Foo>`` when even ``repr`` fails.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import reprlib
import string
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from opentelemetry.context import Context

import vsrtel
from vsrtel import EventName
from vsrtel._names import remember
from vsrtel._redact import DEFAULT_SECRET_KEYS, REDACTED, Secrets

__all__ = ["DEFAULT_SECRET_KEYS", "LEVELS", "REDACTED", "attach_logger", "debug"]


LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_METHODS = {number: name for name, number in LEVELS.items()}
_CLOCKS = frozenset({"monotonic_time", "system_time"})
# Keys a structlog call interprets itself, that clash with the parameters of its methods, or
# that structlog's default processors (add_log_level, TimeStamper) overwrite; event data under
# these names is renamed with "_".
_RESERVED = frozenset(
    {"event", "exc_info", "stack_info", "self", "method_name", "level", "timestamp"}
)
_HUGE = 1e300
_HEX = frozenset(string.hexdigits)
_handler_ids = itertools.count(1)


def attach_logger(
    prefix: str | Sequence[str] = (),
    *,
    level: str | int = "debug",
    min_level: str | int | None = None,
    logger: Any = None,
    handler_id: Hashable | None = None,
    redact: Iterable[str] = DEFAULT_SECRET_KEYS,
    levels: Mapping[str | tuple[str, ...], str | int] | None = None,
    registry: vsrtel.Registry | None = None,
) -> vsrtel.Handle:
    """Attach a handler that logs every event under ``prefix`` (``()`` = all) with structlog.

    ``level`` is the level events are logged *at* (``"debug"``, ``"info"``, ``"warning"``,
    ``"error"``, ``"critical"`` or a `logging` number): the logger method called, not a filter;
    ``levels`` maps event-name prefixes to levels, the longest matching prefix winning
    (``{"vsr.heartbeat": "debug", "vsr.view": "info"}``). ``exception`` and ``failure`` events
    always log at error. ``min_level`` is the minimum level: an event whose level is below it is
    not logged at all, even when the logger filters nothing (as under structlog's default
    configuration); the logger's own filter still applies, and ``None`` leaves filtering to it
    alone. ``logger`` is a structlog bound logger
    (default ``structlog.get_logger("vsrtel")``); a lazy proxy is resolved now, so configure
    structlog before attaching. ``redact`` names the secret keys (see README.md, "Secrets";
    ``DEFAULT_SECRET_KEYS | {"ssn"}`` extends the default, ``()`` turns redaction off).

    Attaching again for the same prefix and the same ``logger`` object (or the default logger
    twice) without a ``handler_id`` replaces the earlier handler, keeping its id: re-running
    the setup (a notebook cell) does not log every line twice.

    Returns a :class:`vsrtel.Handle` (its ``id`` is ``handler_id``, generated when not given):
    ``.detach()`` it, or ``vsrtel.detach(handle)``. Its ``skipped`` stays 0: every event is
    logged, as best it can be (a logger that still fails is a failing handler, detached).
    Raises ``ValueError``/``TypeError`` naming a bad prefix, level, min_level or key.
    """
    event_prefix = vsrtel.event_name(prefix, what="prefix", allow_empty=True)
    default = _level(level)
    threshold = logging.NOTSET if min_level is None else _level(min_level, what="min_level")
    rules = sorted(
        (
            (vsrtel.event_name(key, what="levels key"), _level(value))
            for key, value in (levels or {}).items()
        ),
        key=lambda rule: -len(rule[0]),
    )
    source = logger
    if logger is None:
        logger = structlog.get_logger("vsrtel")
    bind = getattr(logger, "bind", None)
    if callable(bind):
        # Resolves a lazy proxy once: otherwise every call, even a filtered-out one, would
        # assemble a new bound logger.
        logger = bind()
    if not callable(getattr(logger, "info", None)):
        raise TypeError(f"logger must be a structlog logger, got {logger!r}")
    handler = _LogHandler(
        logger, default, threshold, rules, Secrets(redact), (event_prefix, source)
    )
    registry = vsrtel.Registry.or_default(registry)
    if handler_id is None:
        handler_id = _detach_same(registry, handler)
    if handler_id is None:
        handler_id = ("vsrtel.handlers.logs", next(_handler_ids))
    registry.attach_prefix(handler_id, event_prefix, handler.handle)
    return vsrtel.Handle(handler_id, registry)


def _detach_same(registry: vsrtel.Registry, new: _LogHandler) -> Hashable | None:
    """Detach the logs handler for the same prefix and logger as ``new``; return its id."""
    prefix, source = new.origin
    for record in registry.list_handlers():
        old = getattr(record.function, "__self__", None)
        if isinstance(old, _LogHandler) and old.origin[0] == prefix and old.origin[1] is source:
            registry.detach(record.id)
            return record.id
    return None


def debug(
    prefix: str | Sequence[str] = (),
    *,
    file: TextIO | None = None,
    registry: vsrtel.Registry | None = None,
) -> vsrtel.Handle:
    """Print every event under ``prefix`` (``()`` = all) readably to ``file`` (stderr).

    A debugging aid independent of the structlog configuration. Returns a :class:`vsrtel.Handle`:
    call ``.detach()`` or use ``with vsrtel.debug("app"):`` to stop.
    """
    out = file if file is not None else sys.stderr
    colors = "NO_COLOR" not in os.environ and hasattr(out, "isatty") and out.isatty()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        context_class=dict,
    )
    return attach_logger(
        prefix,
        logger=logger,
        handler_id=("vsrtel.debug", next(_handler_ids)),
        registry=registry,
    )


class _LogHandler:
    """The state of one attached logs handler."""

    def __init__(
        self,
        logger: Any,
        default: int,
        min_level: int,
        rules: list[tuple[EventName, int]],
        secrets: Secrets,
        origin: tuple[EventName, Any],
    ) -> None:
        self.logger = logger
        self.default = default
        self.rules = rules
        self.secrets = secrets
        # (prefix, the logger argument as given): what makes a second attach a repeat.
        self.origin = origin
        logger_enabled: Callable[[int], bool] | None = getattr(
            logger, "is_enabled_for", None
        ) or getattr(logger, "isEnabledFor", None)
        self.is_enabled_for = logger_enabled
        if min_level > logging.NOTSET:
            # Folded into the one check the hot path already makes, so that a handler without
            # a minimum level pays nothing for it.
            if logger_enabled is None:
                self.is_enabled_for = min_level.__le__
            else:
                self.is_enabled_for = lambda level: level >= min_level and logger_enabled(level)
        self.names: dict[EventName, tuple[int, str, str]] = {}

    def resolve(self, name: EventName) -> tuple[int, str, str]:
        if name[-1] in ("exception", "failure"):
            level = logging.ERROR
        else:
            level = next(
                (lvl for prefix, lvl in self.rules if vsrtel.starts_with(name, prefix)),
                self.default,
            )
        return remember(self.names, name, (level, _METHODS[level], ".".join(name)))

    def handle(
        self, name: EventName, measurements: Mapping[Any, Any], metadata: Mapping[Any, Any], _: Any
    ) -> None:
        resolved = self.names.get(name)
        if resolved is None:
            resolved = self.resolve(name)
        level, method, dotted = resolved
        is_enabled_for = self.is_enabled_for
        if is_enabled_for is not None and not is_enabled_for(level):
            return
        try:
            fields = self.fields(level, measurements, metadata)
        except Exception as error:
            # A payload even these rules cannot read: its values are left out, as they may hold
            # secrets that were not redacted.
            fields = {"log_error": f"unreadable event data: {_repr(error)}"}
        log = getattr(self.logger, method)
        try:
            log(dotted, **fields)
        except Exception:
            # The logger could not render a value (a key JSON cannot hold, a cycle inside an
            # object, an int too long for repr, a broken __repr__...): the same line with every
            # value as text that cannot fail. The exception itself is left to the logger, whose
            # traceback formatting survives a broken __str__.
            try:
                log(dotted, **{k: v if k == "exc_info" else _plain(v) for k, v in fields.items()})
            except Exception as error:
                log(dotted, log_error=f"the logger could not render this event: {_name(error)}")

    def fields(
        self, level: int, measurements: Mapping[Any, Any], metadata: Mapping[Any, Any]
    ) -> dict[str, Any]:
        """The structlog key/value pairs for one event."""
        redact = self.secrets.redact
        fields = {_field(key): value for key, value in redact(metadata).items()}
        parent = fields.get("trace_parent")
        if parent is not None:
            fields["trace_parent"] = _trace_id(parent)
        if level >= logging.ERROR and isinstance(fields.get("reason"), BaseException):
            reason = fields.pop("reason")
            if self.secrets.names:
                # The text, not the exception: a renderer would format its message unscrubbed.
                fields["exception"] = self.secrets.format_exception(reason)
            else:
                fields["exc_info"] = reason
            fields.pop("stacktrace", None)
            kind = fields.get("kind")
            if isinstance(kind, type):
                fields["kind"] = kind.__qualname__
        for key, value in redact(measurements).items():
            if key in _CLOCKS:
                continue
            key = _field(key)
            if _is_duration(key, value):
                fields[f"{key}_ms"] = round(value / 1_000_000, 3)
            else:
                fields[key] = value
        span = trace.get_current_span()
        if span.is_recording():
            span_context = span.get_span_context()
            fields["trace_id"] = trace.format_trace_id(span_context.trace_id)
            fields["span_id"] = trace.format_span_id(span_context.span_id)
        return fields


def _field(key: Any) -> str:
    try:
        key = str(key)
    except Exception:
        key = _unrepresentable(key)
    return f"{key}_" if key in _RESERVED else key


def _trace_id(parent: Any) -> Any:
    """The trace id (32 hex digits) of a remote parent, None if it holds no valid one.

    A ``Context`` (what ``spans.extract`` returns), a ``SpanContext``, a ``Span`` or a W3C
    ``traceparent`` string; any other value is returned unchanged.
    """
    if isinstance(parent, Context):
        span_context = trace.get_current_span(parent).get_span_context()
    elif isinstance(parent, trace.SpanContext):
        span_context = parent
    elif isinstance(parent, trace.Span):
        span_context = parent.get_span_context()
    elif isinstance(parent, str):
        # version-trace_id-parent_id-flags; anything else is shown as it is.
        parts = parent.strip().split("-")
        if len(parts) >= 4 and len(parts[1]) == 32 and set(parts[1]) <= _HEX:
            return parts[1].lower()
        return parent
    else:
        return parent
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def _is_duration(key: str, value: Any) -> bool:
    return (
        (key == "duration" or key.endswith(("_duration", "_time")))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and abs(value) < _HUGE  # NaN, infinities and ints past float range stay as they are
    )


def _plain(value: Any) -> Any:
    """``value`` if every logger can render it, else text standing for it."""
    cls = value.__class__
    if cls is str or cls is float or cls is bool:
        return value
    if cls is int:
        text = _int_text(value)
        return value if text is None else text
    return _repr(value)


def _repr(value: Any) -> str:
    """``repr(value)``, or text standing for it when that fails; never raises."""
    try:
        return repr(value)
    except Exception:  # a broken __repr__, an int too long, nesting too deep for the stack
        pass
    try:
        return _SAFE_REPR.repr(value)
    except Exception:  # an object reprlib misreads by its class name ("list", "int"...)
        return _unrepresentable(value)


def _int_text(value: int) -> str | None:
    """``<int of N digits>`` for an int too long for ``repr`` (see `sys.set_int_max_str_digits`),
    else None."""
    try:
        int.__repr__(value)
    except ValueError:
        pass
    else:
        return None
    number = int.__int__(value)
    magnitude = abs(number)
    # 10**(digits - 1) <= magnitude, and 2**(bits - 1) <= magnitude < 2**bits: the estimate is
    # exact or one short, checked by one power of ten while that is cheap (< 0.1 s).
    digits = int((magnitude.bit_length() - 1) * math.log10(2)) + 1
    about = "about "
    if digits < 100_000:
        about = ""
        if magnitude >= 10**digits:
            digits += 1
    sign = "negative " if number < 0 else ""
    return f"<{sign}int of {about}{digits} digits>"


def _unrepresentable(value: Any) -> str:
    """Text for a value whose ``repr``/``str`` raised."""
    if isinstance(value, int):
        text = _int_text(value)
        if text is not None:
            return text
    return f"<unrepresentable {_name(value)}>"


def _name(value: Any) -> str:
    try:
        return type(value).__qualname__
    except Exception:
        return "object"


class _SafeRepr(reprlib.Repr):
    """A ``repr`` for the fallback: bounded in depth and size, and never raising."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 8
        self.maxdict = self.maxlist = self.maxtuple = 32
        self.maxset = self.maxfrozenset = self.maxdeque = 32
        self.maxstring = self.maxother = 400

    def repr_int(self, x: Any, level: int) -> str:
        # Called for any class named "int", an int or not.
        text = _int_text(x) if isinstance(x, int) else None
        return self.repr_instance(x, level) if text is None else text

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:
            return _unrepresentable(x)
        if len(text) > self.maxother:
            keep = self.maxother // 2
            text = f"{text[:keep]}...{text[-keep:]}"
        return text


_SAFE_REPR = _SafeRepr()


def _level(level: str | int, what: str = "log level") -> int:
    if isinstance(level, str) and level.lower() in LEVELS:
        return LEVELS[level.lower()]
    if isinstance(level, int) and not isinstance(level, bool) and level in _METHODS:
        return level
    raise ValueError(f"unknown {what} {level!r}; use one of {', '.join(LEVELS)}")
