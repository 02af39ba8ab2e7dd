"""The handler registry: storage, the dispatch snapshot, and failure isolation.

Storage is one blinker ``NamedSignal`` per event name (our handlers are connected to it, and so
may anyone's plain blinker receivers), plus an ordered list of prefix handlers. ``execute`` never
touches that storage: it reads ``_routes``, an immutable-by-convention dict from event name to
``_Route`` (or ``None`` when nobody listens), rebuilt under a lock on every attach/detach and
published with one assignment. Names that only prefix handlers (or nobody) receive are resolved
on first use and cached in the same dict, so the fast path is one dict lookup.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol

import blinker

from vsrtel._span import Span

EventName = tuple[str, ...]
#: What callers may pass as a name: a tuple (or list) of segments, or a dotted string.
Name = str | Sequence[str]
Measurements = Mapping[str, Any]
Metadata = Mapping[str, Any]
HandlerFunction = Callable[[EventName, Measurements, Metadata, Any], object]
OnError = Literal["detach", "keep", "raise"]

FAILURE_EVENT: EventName = ("vsrtel", "handler", "failure")
_MAX_ROUTES = 10_000  # bound on cached name resolutions; past it the cache starts over

log = logging.getLogger("vsrtel")


class AlreadyAttachedError(ValueError):
    """Raised when a handler id is already in use in the registry."""


class Clock(Protocol):
    """A source of time: the ``time`` module, or a simulated clock."""

    def monotonic_ns(self) -> int: ...

    def time_ns(self) -> int: ...


class HandlerRecord(NamedTuple):
    """One attached handler for one event name (or prefix), as ``list_handlers`` returns it."""

    id: Hashable
    event_name: EventName
    function: HandlerFunction
    config: Any


def event_name(name: Name, *, what: str = "event name", allow_empty: bool = False) -> EventName:
    """Return ``name`` as a tuple of segments, or raise naming the bad part.

    ``"a.b.c"`` and ``["a", "b", "c"]`` both become ``("a", "b", "c")``. Segments must be
    non-empty strings without dots, so the dotted and tuple spellings always agree.
    """
    if isinstance(name, str):
        parts: tuple[Any, ...] = tuple(name.split(".")) if name else ()
    elif isinstance(name, (tuple, list)):
        parts = tuple(name)
    else:
        raise TypeError(f"{what} must be a tuple of str or a dotted str, got {name!r}")
    if not parts and not allow_empty:
        raise ValueError(f"{what} is empty: {name!r}")
    for i, segment in enumerate(parts):
        if not isinstance(segment, str):
            raise TypeError(
                f"{what} {name!r}: segment {i} is {type(segment).__name__} {segment!r}, not str"
            )
        if not segment:
            raise ValueError(f"{what} {name!r}: segment {i} is empty")
        if "." in segment and not isinstance(name, str):
            raise ValueError(f"{what} {name!r}: segment {i} {segment!r} contains a dot")
    return parts


class _Handler:
    """An attached handler on one event (or prefix); also a blinker receiver."""

    __slots__ = ("config", "event_name", "function", "id", "is_prefix", "receiver", "seq")

    def __init__(
        self,
        handler_id: Hashable,
        name: EventName,
        function: HandlerFunction,
        config: Any,
        seq: int,
        *,
        is_prefix: bool = False,
        receiver: Any = None,
    ) -> None:
        self.id = handler_id
        self.event_name = name
        self.function = function
        self.config = config
        self.seq = seq
        self.is_prefix = is_prefix
        self.receiver = receiver  # set for plain blinker receivers, which we did not attach

    def __call__(self, sender: EventName, **kwargs: Any) -> None:
        """Receive a direct ``signal.send(name, measurements=..., metadata=...)``."""
        measurements, metadata = kwargs.get("measurements", {}), kwargs.get("metadata", {})
        self.function(sender, measurements, metadata, self.config)

    def record(self) -> HandlerRecord:
        return HandlerRecord(self.id, self.event_name, self.function, self.config)


class _Route(NamedTuple):
    name: EventName
    handlers: tuple[tuple[HandlerFunction, Any, _Handler], ...]


def _blinker_adapter(receiver: Any) -> HandlerFunction:
    """Call a plain blinker receiver (held strongly or by weakref) the way ``send`` would."""

    def call(name: EventName, measurements: Measurements, metadata: Metadata, _: Any) -> None:
        target = receiver() if isinstance(receiver, weakref.ref) else receiver
        if target is not None:
            target(name, measurements=measurements, metadata=metadata)

    return call


# The default metadata: a dict, so that the common call passes the payload checks at one class
# test each; handlers only ever see it as the read-only _EMPTY.
_NO_METADATA: dict[str, Any] = {}
_EMPTY: Metadata = MappingProxyType(_NO_METADATA)


def _check_payload(measurements: Any, metadata: Any) -> None:
    """Raise ``TypeError`` for a payload no handler could receive, whether or not one listens."""
    if not (isinstance(measurements, (Mapping, int, float)) or callable(measurements)):
        raise TypeError(
            f"measurements must be a mapping, a number or a callable, got {measurements!r}"
        )
    if not (metadata is None or isinstance(metadata, Mapping) or callable(metadata)):
        raise TypeError(f"metadata must be a mapping, None or a callable, got {metadata!r}")


def _read_only(measurements: Any, metadata: Any) -> tuple[Measurements, Metadata]:
    """The payload as handlers receive it: read-only mappings, lazy callables called.

    The caller's bad types were rejected by :func:`_check_payload`; what a lazy callable returns
    is checked here, and raising is then a failure of the payload, not of the caller.
    """
    if callable(measurements) and not isinstance(measurements, Mapping):
        measurements = measurements()
        if not isinstance(measurements, (Mapping, int, float)):
            raise TypeError(f"lazy measurements returned {measurements!r}, not a mapping")
    if not isinstance(measurements, Mapping):
        measurements = {"value": measurements}
    if metadata is None or metadata is _NO_METADATA:
        return MappingProxyType(measurements), _EMPTY
    if callable(metadata) and not isinstance(metadata, Mapping):
        metadata = metadata()
        if not isinstance(metadata, Mapping):
            raise TypeError(f"lazy metadata returned {metadata!r}, not a mapping")
    return MappingProxyType(measurements), MappingProxyType(metadata)


def _check_arity(handler_id: Hashable, function: Callable[..., object]) -> None:
    """Reject at attach time a handler that cannot take the four handler arguments."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # some builtins have no signature: they fail, contained, on the first event
    try:
        signature.bind(None, None, None, None)
    except TypeError as exc:
        raise TypeError(
            f"handler {handler_id!r}: {function!r} must accept "
            f"(event_name, measurements, metadata, config): {exc}"
        ) from None


def _matches(name: EventName, prefix: EventName) -> bool:
    return name[: len(prefix)] == prefix


def _warn_span_prefix(handler_id: Hashable, prefix: EventName) -> None:
    dotted = ".".join(prefix)
    warnings.warn(
        f"handler {handler_id!r} is attached to {dotted!r}, which is a span prefix, not an "
        f"event: it never fires. Attach to {dotted}.start / .stop / .exception, or use "
        f"attach_prefix({dotted!r}, ...)",
        stacklevel=4,
    )


class Registry:
    """A set of attached handlers and the events dispatched to them.

    The module-level functions of :mod:`vsrtel` act on a process-wide default registry; build
    your own for isolation. ``clock`` provides ``monotonic_ns()`` and ``time_ns()`` for spans
    (default: the :mod:`time` module). ``on_error`` decides what happens to a handler that
    raises: ``"detach"`` it (default), ``"keep"`` it attached, or ``"raise"`` the exception into
    the caller (for tests). In every case but ``"raise"`` the failure is logged to the ``vsrtel``
    logger and reported as the event ``("vsrtel", "handler", "failure")``.
    """

    def __init__(self, *, clock: Clock | None = None, on_error: OnError = "detach") -> None:
        if on_error not in ("detach", "keep", "raise"):
            raise ValueError(f"on_error must be 'detach', 'keep' or 'raise', got {on_error!r}")
        self.clock: Clock = clock if clock is not None else time
        self.on_error: OnError = on_error
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._reset()

    def _reset(self) -> None:
        self._signals: dict[EventName, blinker.NamedSignal] = {}
        self._handlers: dict[Hashable, list[_Handler]] = {}
        self._prefix_handlers: list[_Handler] = []
        self._foreign_seq: dict[tuple[EventName, Hashable], int] = {}
        self._span_names: dict[Any, tuple[EventName, EventName, EventName]] = {}
        self._routes: dict[Any, _Route | None] = {}

    # -- attaching -------------------------------------------------------------------------

    def attach(
        self, handler_id: Hashable, event_name: Name, function: HandlerFunction, config: Any = None
    ) -> None:
        """Attach ``function(event_name, measurements, metadata, config)`` to one event.

        Raises :class:`AlreadyAttachedError` if ``handler_id`` is in use, ``TypeError`` if
        ``function`` is not callable, ``ValueError``/``TypeError`` for a bad event name.
        """
        self.attach_many(handler_id, [event_name], function, config)

    def attach_many(
        self,
        handler_id: Hashable,
        event_names: Iterable[Name],
        function: HandlerFunction,
        config: Any = None,
    ) -> None:
        """Attach one handler to several events; it is detached from all of them at once."""
        if isinstance(event_names, str):
            raise TypeError(f"event_names must be a list of names, got the str {event_names!r}")
        names = list(dict.fromkeys(event_name(n) for n in event_names))
        if not names:
            raise ValueError(f"handler {handler_id!r}: attach_many needs at least one event name")
        self._attach(handler_id, names, function, config, is_prefix=False)

    def attach_prefix(
        self, handler_id: Hashable, prefix: Name, function: HandlerFunction, config: Any = None
    ) -> None:
        """Attach a handler to every event whose name starts with ``prefix`` (``()``: all)."""
        name = event_name(prefix, what="prefix", allow_empty=True)
        self._attach(handler_id, [name], function, config, is_prefix=True)

    def _attach(
        self,
        handler_id: Hashable,
        names: list[EventName],
        function: HandlerFunction,
        config: Any,
        *,
        is_prefix: bool,
    ) -> None:
        if not callable(function):
            raise TypeError(f"handler {handler_id!r}: function must be callable, got {function!r}")
        _check_arity(handler_id, function)
        with self._lock:
            if handler_id in self._handlers:
                raise AlreadyAttachedError(f"handler id {handler_id!r} is already attached")
            if not is_prefix:
                span_prefixes = {names[0][:-1] for names in self._span_names.values()}
                for name in names:
                    if name in span_prefixes:
                        _warn_span_prefix(handler_id, name)
            seq = next(self._seq)
            handlers = [
                _Handler(handler_id, n, function, config, seq, is_prefix=is_prefix) for n in names
            ]
            self._handlers[handler_id] = handlers
            for handler in handlers:
                if is_prefix:
                    self._prefix_handlers.append(handler)
                else:
                    self.signal(handler.event_name).connect(handler, weak=False)
            self._rebuild()

    def detach(self, handler_id: Hashable) -> bool:
        """Detach a handler from every event; return False if no such handler was attached."""
        with self._lock:
            handlers = self._handlers.pop(handler_id, None)
            if handlers is None:
                return False
            for handler in handlers:
                if handler.is_prefix:
                    self._prefix_handlers.remove(handler)
                else:
                    self._signals[handler.event_name].disconnect(handler)
            self._rebuild()
            return True

    def list_handlers(self, prefix: Name = ()) -> list[HandlerRecord]:
        """Return one record per (handler, event name or prefix) under ``prefix``, in order."""
        wanted = event_name(prefix, what="prefix", allow_empty=True)
        with self._lock:
            return [
                h.record()
                for handlers in self._handlers.values()
                for h in handlers
                if _matches(h.event_name, wanted)
            ]

    def signal(self, event_name_: Name) -> blinker.NamedSignal:
        """Return the blinker signal of an event.

        A receiver connected to it is called as ``receiver(event_name, measurements=...,
        metadata=...)`` on every ``execute`` of that event, after the handlers attached before it.
        """
        name = event_name(event_name_)
        with self._lock:
            signal = self._signals.get(name)
            if signal is None:
                signal = blinker.NamedSignal(".".join(name))
                signal.receiver_connected.connect(self._on_receivers_changed)
                signal.receiver_disconnected.connect(self._on_receivers_changed)
                self._signals[name] = signal
            return signal

    def _on_receivers_changed(self, _signal: Any, **_: Any) -> None:
        with self._lock:
            self._rebuild()

    # -- the dispatch snapshot -------------------------------------------------------------

    def _rebuild(self) -> None:
        """Recompute routes for every event with receivers and publish them (lock held)."""
        routes: dict[Any, _Route | None] = {}
        seen: set[tuple[EventName, Hashable]] = set()
        for name, signal in self._signals.items():
            if signal.receivers:
                routes[name] = self._build_route(name, seen)
        self._foreign_seq = {k: v for k, v in self._foreign_seq.items() if k in seen}
        self._routes = routes

    def _build_route(self, name: EventName, seen: set[tuple[EventName, Hashable]]) -> _Route | None:
        handlers = [h for h in self._prefix_handlers if _matches(name, h.event_name)]
        signal = self._signals.get(name)
        if signal is not None:
            for key, receiver in list(signal.receivers.items()):
                if isinstance(receiver, _Handler):
                    handlers.append(receiver)
                    continue
                seen.add((name, key))
                seq = self._foreign_seq.setdefault((name, key), next(self._seq))
                handler_id = f"blinker:{signal.name}:{key}"
                adapter = _blinker_adapter(receiver)
                handlers.append(_Handler(handler_id, name, adapter, None, seq, receiver=receiver))
        if not handlers:
            return None
        handlers.sort(key=lambda h: h.seq)
        return _Route(name, tuple((h.function, h.config, h) for h in handlers))

    def _resolve(self, name: Any) -> _Route | None:
        """Slow path of a lookup: validate the name, resolve its route and cache it."""
        canonical = event_name(name)
        with self._lock:
            if canonical in self._routes:
                route = self._routes[canonical]
            else:
                route = self._build_route(canonical, set())
            if len(self._routes) >= _MAX_ROUTES:
                self._rebuild()
            self._routes[canonical] = route
            if isinstance(name, str):
                self._routes[name] = route
            return route

    # -- emitting --------------------------------------------------------------------------

    def execute(self, event_name: Name, measurements: Any, metadata: Any = _NO_METADATA) -> None:
        """Emit an event to every handler attached to it, synchronously, in attach order.

        ``measurements`` is a mapping or a number (delivered as ``{"value": n}``); ``metadata`` a
        mapping (default ``{}``); any other type raises ``TypeError`` here, whether or not a
        handler listens. Either may be a zero-argument callable, called only when some handler
        will receive the event; if it raises, the event is dropped and reported like a handler
        failure. Handlers receive read-only views (``types.MappingProxyType``) of the mappings,
        shared by all of them, so no handler can change what the caller or the next handler
        sees. A handler that raises never breaks the caller (see :class:`Registry`).
        """
        try:
            route = self._routes[event_name]
        except (KeyError, TypeError):
            route = self._resolve(event_name)
        if route is None:
            if measurements.__class__ is not dict or metadata.__class__ is not dict:
                _check_payload(measurements, metadata)
            return
        # _dispatch, inlined: one Python call less on the path every handler pays. Keep the two
        # bodies the same (tests/test_registry.py drives failures through execute and span).
        if measurements.__class__ is dict and metadata.__class__ is dict:
            measurements = MappingProxyType(measurements)
            metadata = _EMPTY if metadata is _NO_METADATA else MappingProxyType(metadata)
        else:
            _check_payload(measurements, metadata)
            try:
                measurements, metadata = _read_only(measurements, metadata)
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                self._report_failure(None, route.name, exc)
                return
        name, handlers = route
        for function, config, handler in handlers:
            try:
                function(name, measurements, metadata, config)
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                self._handler_failed(handler, name, exc)

    def enabled(self, event_name: Name) -> bool:
        """Return whether any handler or blinker receiver would receive this event."""
        try:
            return self._routes[event_name] is not None
        except (KeyError, TypeError):
            return self._resolve(event_name) is not None

    def _dispatch(self, route: _Route, measurements: Any, metadata: Any) -> None:
        if measurements.__class__ is dict and metadata.__class__ is dict:
            measurements = MappingProxyType(measurements)
            metadata = _EMPTY if metadata is _NO_METADATA else MappingProxyType(metadata)
        else:
            _check_payload(measurements, metadata)
            try:
                measurements, metadata = _read_only(measurements, metadata)
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                self._report_failure(None, route.name, exc)
                return
        name, handlers = route
        for function, config, handler in handlers:
            try:
                function(name, measurements, metadata, config)
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                self._handler_failed(handler, name, exc)

    def _handler_failed(self, handler: _Handler, name: EventName, exc: Exception) -> None:
        if self.on_error == "detach":
            if handler.receiver is None:
                self.detach(handler.id)
            else:
                self._disconnect_receiver(handler)
        self._report_failure(handler, name, exc)

    def _report_failure(self, handler: _Handler | None, name: EventName, exc: Exception) -> None:
        """Log a failure and emit the failure event; ``handler`` is None for a lazy payload."""
        if handler is None:
            log.error(
                "lazy measurements or metadata of event %s raised; the event was dropped",
                ".".join(name),
                exc_info=exc,
            )
        else:
            action = "detached" if self.on_error == "detach" else "kept attached"
            log.error(
                "vsrtel handler %r failed on event %s and was %s",
                handler.id,
                ".".join(name),
                action,
                exc_info=exc,
            )
        if name == FAILURE_EVENT:
            return  # a handler of failures that fails must not report itself forever
        metadata = {
            "event_name": name,
            "handler_id": None if handler is None else handler.id,
            "handler_config": None if handler is None else handler.config,
            "kind": type(exc),
            "reason": exc,
            "stacktrace": traceback.extract_tb(exc.__traceback__),
        }
        self.execute(FAILURE_EVENT, self._timestamps, metadata)

    def _disconnect_receiver(self, handler: _Handler) -> None:
        receiver = handler.receiver
        target = receiver() if isinstance(receiver, weakref.ref) else receiver
        if target is not None:
            self._signals[handler.event_name].disconnect(target)

    def _timestamps(self) -> dict[str, int]:
        return {"monotonic_time": self.clock.monotonic_ns(), "system_time": self.clock.time_ns()}

    # -- spans -----------------------------------------------------------------------------

    def span(self, event_prefix: Name, metadata: Metadata | None = None) -> Span:
        """Return a span emitting ``prefix + ("start" | "stop" | "exception")``.

        Use it as ``with``/``async with`` (the target is the span), as a decorator of sync or
        async functions (each call is one span), or call ``.start()`` and later ``.stop()``.
        """
        return Span(self, event_prefix, metadata)

    def _span_event_names(self, prefix: Any) -> tuple[EventName, EventName, EventName]:
        try:
            return self._span_names[prefix]
        except (KeyError, TypeError):
            base = event_name(prefix, what="span prefix")
            names = (base + ("start",), base + ("stop",), base + ("exception",))
            signal = self._signals.get(base)
            if signal is not None:
                for receiver in list(signal.receivers.values()):
                    if isinstance(receiver, _Handler):
                        _warn_span_prefix(receiver.id, base)
            if len(self._span_names) < _MAX_ROUTES and isinstance(prefix, (str, tuple)):
                self._span_names[prefix] = names
            return names

    # -- isolation for tests ---------------------------------------------------------------

    @contextmanager
    def _isolated(self) -> Iterator[Registry]:
        """Run with empty state, then put the previous handlers back (for the pytest fixture)."""
        with self._lock:
            saved = dict(vars(self))
            self._reset()
        try:
            yield self
        finally:
            with self._lock:
                vars(self).update(saved)


default_registry = Registry()
