"""The handler registry: attaching, emitting, and failure isolation.

What is attached where, and the routes built from it, are the handler table's
(`vsrtel._handler_table`): this module keeps the storage and its lock, and publishes the table's
routes. ``execute`` never touches the storage: it reads ``_routes``, an immutable-by-convention
dict from event name to ``Route`` (or ``None`` when nobody listens), rebuilt under the lock on
every change (attach, detach, a blinker receiver connected, disconnected or collected, a signal
muted) and published with one assignment. Names that only prefix handlers (or nobody) receive
are resolved on first use and cached in the same dict, so the fast path is one dict lookup.

Spans (`vsrtel._span`) reach the registry through the ``Dispatcher`` protocol declared there;
``execute`` inlines ``_dispatch`` for speed, and a test drives failures through both so that
the two copies cannot drift.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from vsrtel._handler_table import (
    HandlerFunction,
    HandlerRecord,
    Measurements,
    Metadata,
    Registration,
    Route,
    SpanRoutes,
    attached_ids,
    build_route,
    build_routes,
    order_foreign,
)
from vsrtel._names import EventName, Name, event_name, remember, starts_with
from vsrtel._span import Clock, SpanNames, new_span
from vsrtel._views import view as _view  # MappingProxyType, or the same in C (vsrtel._speedups)

# Imported when first needed, so that `import vsrtel` stays light: blinker (vsrtel._signal) and
# inspect at the first attach, and with them what reporting a failure needs (see
# _load_for_failures); warnings at the first misplaced handler.
if TYPE_CHECKING:
    from vsrtel._signal import EventSignal

__all__ = [
    "FAILURE_EVENT",
    "AlreadyAttachedError",
    "Clock",
    "Handle",
    "HandlerFunction",
    "HandlerRecord",
    "Measurements",
    "Metadata",
    "OnError",
    "Registry",
    "default_registry",
]

OnError = Literal["detach", "keep", "raise"]
T = TypeVar("T")

FAILURE_EVENT: EventName = ("vsrtel", "handler", "failure")
_STACK_RESERVE = 50  # frames; detach needs about 10, blinker's signals included
_FAILURE_RESERVE = 100  # frames; detaching, logging and reporting a failure need about 30


class AlreadyAttachedError(ValueError):
    """Raised when a handler id is already in use in the registry."""


class Handle:
    """What the attach helpers (``attach_logger``, ``attach_tracer``, ``debug``) return.

    ``.detach()`` it, or use it as a context manager (detached on exit); ``.attached`` tells
    whether it still is, and ``.skipped`` counts the events its handler could not handle and
    skipped. It compares equal to, and hashes like, its handler ``id``, so it works wherever an
    id does: ``vsrtel.detach(handle)``, ``record.id == handle``.
    """

    __slots__ = ("_skipped", "id", "registry")

    def __init__(
        self,
        handler_id: Hashable,
        registry: Registry,
        *,
        skipped: Callable[[], int] | None = None,
    ) -> None:
        self.id = handler_id
        self.registry = registry
        self._skipped = skipped  # reads the handler's count; None: it never skips

    @property
    def attached(self) -> bool:
        """Whether a handler with this ``id`` is attached to the registry."""
        return any(record.id == self.id for record in self.registry.list_handlers())

    @property
    def skipped(self) -> int:
        """How many events the handler skipped (logged and counted instead of failing and
        being detached); still readable after ``detach()``. 0 for a handler that never skips."""
        return 0 if self._skipped is None else self._skipped()

    def detach(self) -> bool:
        """Detach the handler; False if it was already detached."""
        return self.registry.detach(self.id)

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def __eq__(self, other: object) -> bool:
        return self.id == (other.id if isinstance(other, Handle) else other)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<vsrtel.Handle {self.id!r}>"


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
    import inspect

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


def _load_for_failures() -> None:
    """Import what containing a handler's failure needs, when a handler is attached: not at its
    first failure, which may strike close to the recursion limit, where an import (dozens of
    frames deep) could run out of stack and leave the failing handler attached."""
    import logging  # noqa: F401
    import traceback  # noqa: F401

    import vsrtel._redact  # noqa: F401


def _reserve_stack(frames: int = _STACK_RESERVE) -> None:
    """Raise ``RecursionError`` now unless ``frames`` more nested calls fit on the stack.

    Called before detach changes anything: a ``RecursionError`` striking halfway through would
    leave a handler unlisted, yet still connected and routed.
    """
    if frames:
        _reserve_stack(frames - 1)


def _warn_span_prefix(handler_id: Hashable, prefix: EventName) -> None:
    import warnings

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

    @staticmethod
    def or_default(registry: Registry | None) -> Registry:
        """Return ``registry``, or the process-wide default registry when it is None."""
        return default_registry if registry is None else registry

    def _reset(self) -> None:
        self._signals: dict[EventName, EventSignal] = {}
        self._handlers: dict[Hashable, list[Registration]] = {}
        self._prefix_handlers: list[Registration] = []
        self._foreign_seq: dict[tuple[EventName, Hashable], int] = {}
        self._routes: dict[Any, Route | None] = {}
        self._spans: dict[str, SpanRoutes | None] = {}
        self._span_prefixes: dict[EventName, None] = {}
        self._deaths = 0  # blinker receivers collected so far (see _settled)

    # -- attaching -------------------------------------------------------------------------

    def attach(
        self,
        handler_id: Hashable,
        event_name: Name,
        function: HandlerFunction,
        config: Any = None,
        *,
        trusted: bool = False,
    ) -> None:
        """Attach ``function(event_name, measurements, metadata, config)`` to one event.

        ``trusted=True`` promises that the handler only reads the measurements and metadata,
        while it runs, and keeps no reference to them. When every handler of an event is
        trusted, they receive the caller's dicts instead of read-only views of them: about half
        the cost of an event to one handler in pure Python, a third with the compiled views
        (the metrics reporter uses it).

        Raises :class:`AlreadyAttachedError` if ``handler_id`` is in use, ``TypeError`` if
        ``function`` is not callable, ``ValueError``/``TypeError`` for a bad event name.
        """
        self.attach_many(handler_id, [event_name], function, config, trusted=trusted)

    def attach_many(
        self,
        handler_id: Hashable,
        event_names: Iterable[Name],
        function: HandlerFunction,
        config: Any = None,
        *,
        trusted: bool = False,
    ) -> None:
        """Attach one handler to several events; it is detached from all of them at once.

        ``trusted`` as in :meth:`attach`.
        """
        if isinstance(event_names, str):
            raise TypeError(f"event_names must be a list of names, got the str {event_names!r}")
        names = list(dict.fromkeys(event_name(n) for n in event_names))
        if not names:
            raise ValueError(f"handler {handler_id!r}: attach_many needs at least one event name")
        self._attach(handler_id, names, function, config, is_prefix=False, trusted=trusted)

    def attach_prefix(
        self,
        handler_id: Hashable,
        prefix: Name,
        function: HandlerFunction,
        config: Any = None,
        *,
        trusted: bool = False,
    ) -> None:
        """Attach a handler to every event whose name starts with ``prefix`` (``()``: all).

        ``trusted`` as in :meth:`attach`.
        """
        name = event_name(prefix, what="prefix", allow_empty=True)
        self._attach(handler_id, [name], function, config, is_prefix=True, trusted=trusted)

    def _attach(
        self,
        handler_id: Hashable,
        names: list[EventName],
        function: HandlerFunction,
        config: Any,
        *,
        is_prefix: bool,
        trusted: bool,
    ) -> None:
        if not callable(function):
            raise TypeError(f"handler {handler_id!r}: function must be callable, got {function!r}")
        _check_arity(handler_id, function)
        _load_for_failures()
        with self._lock:
            if handler_id in self._handlers:
                raise AlreadyAttachedError(f"handler id {handler_id!r} is already attached")
            span_prefixes = [] if is_prefix else [n for n in names if n in self._span_prefixes]
            seq = next(self._seq)
            handlers = [
                Registration(
                    handler_id, n, function, config, seq, is_prefix=is_prefix, trusted=trusted
                )
                for n in names
            ]
            self._handlers[handler_id] = handlers
            for handler in handlers:
                if is_prefix:
                    self._prefix_handlers.append(handler)
                else:
                    self.signal(handler.event_name).connect(handler, weak=False)
            self._rebuild()
        # Outside the lock, as all calls out of this module: a warning may take the locks of
        # logging handlers, and a collected blinker receiver's callback waits for this lock.
        for name in span_prefixes:
            _warn_span_prefix(handler_id, name)

    def detach(self, handler_id: Hashable) -> bool:
        """Detach a handler (by id or :class:`Handle`) from every event; False if none was.

        All or nothing, even deep in the stack: too deep to finish, it raises ``RecursionError``
        before changing anything.
        """
        _reserve_stack()
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
                if starts_with(h.event_name, wanted)
            ]

    def signal(self, event_name_: Name) -> EventSignal:
        """Return the blinker signal (a ``blinker.NamedSignal``) of an event.

        A receiver connected to it is called as ``receiver(event_name, measurements=...,
        metadata=...)`` on every ``execute`` of that event, after the handlers attached before it,
        with blinker's semantics: connected with ``sender=``, it is called only when that sender
        is the event's dotted name (``"app.request.stop"``), as which ``execute`` sends it; held
        weakly (blinker's default), it stops receiving, and counting for :meth:`enabled`, when
        it is garbage-collected. While the signal is muted (``with signal.muted():``) none of its
        receivers is called: neither blinker receivers nor the handlers attached to this event
        (handlers attached with a prefix are not its receivers, and still are).
        """
        from vsrtel._signal import EventSignal

        _load_for_failures()  # its plain blinker receivers can fail too
        name = event_name(event_name_)
        with self._lock:
            signal = self._signals.get(name)
            if signal is None:
                signal = EventSignal(".".join(name))
                signal.receiver_connected.connect(self._on_receivers_changed)
                signal.receiver_disconnected.connect(self._on_receivers_changed)
                signal.notify(self._rebuild_locked)
                self._signals[name] = signal
            return signal

    def _on_receivers_changed(self, _signal: Any, **_: Any) -> None:
        self._rebuild_locked()

    def _rebuild_locked(self) -> None:
        with self._lock:
            self._rebuild()

    def _receiver_died(self, _ref: object) -> None:
        """A weakly held blinker receiver of some route was collected: route around it."""
        if sys.is_finalizing():
            return  # the interpreter is going away: nothing will be emitted any more
        with self._lock:
            self._deaths += 1
            self._rebuild()

    # -- the dispatch snapshot -------------------------------------------------------------

    def _rebuild(self) -> None:
        """Recompute routes for every event with receivers and publish them (lock held)."""
        self._foreign_seq = order_foreign(self._signals, self._foreign_seq, self._seq.__next__)
        self._routes = self._settled(
            lambda: build_routes(
                self._signals, self._prefix_handlers, self._foreign_seq, self._receiver_died
            )
        )
        self._spans = {}

    def _settled(self, build: Callable[[], T]) -> T:
        """``build()``, again if a blinker receiver was collected meanwhile (lock held).

        Its callback runs wherever the collector does, in this very build too: the rebuild it
        publishes then would be overwritten by routes still holding the collected receiver.
        """
        while True:
            deaths = self._deaths
            built = build()
            if deaths == self._deaths:
                return built

    def _lookup(self, name: Any) -> Route | None:
        """A name missing from ``_routes``: validate it, resolve its route and cache it."""
        canonical = event_name(name)
        with self._lock:
            route = self._routes.get(canonical)
            if route is None and canonical not in self._routes:
                route = self._settled(
                    lambda: build_route(
                        canonical,
                        self._prefix_handlers,
                        self._signals.get(canonical),
                        self._foreign_seq,
                        self._receiver_died,
                    )
                )
            remember(self._routes, canonical, route)
            if isinstance(name, str):
                remember(self._routes, name, route)
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
            route = self._lookup(event_name)
        if route is None:
            if measurements.__class__ is not dict or metadata.__class__ is not dict:
                _check_payload(measurements, metadata)
            return
        # _dispatch, inlined: one Python call less on the path every handler pays. Keep the two
        # bodies the same (tests/test_registry.py drives failures through execute and span, to
        # one handler and to two). A lone handler is called without the loop: most events have
        # one, and the loop's setup is a measurable share of an event to one handler.
        name, handlers, trusted, one = route
        if measurements.__class__ is dict and metadata.__class__ is dict:
            if not trusted:
                measurements = _view(measurements)
                metadata = _EMPTY if metadata is _NO_METADATA else _view(metadata)
        else:
            _check_payload(measurements, metadata)
            try:
                measurements, metadata = _read_only(measurements, metadata)
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                self._report_failure(None, name, exc)
                return
        if one is not None:
            function, config, handler = one
            try:
                function(name, measurements, metadata, config)
            except BaseException as exc:
                if self.on_error == "raise" or self._handler_failed(handler, name, exc):
                    raise
            return
        for function, config, handler in handlers:
            try:
                function(name, measurements, metadata, config)
            except BaseException as exc:
                if self.on_error == "raise" or self._handler_failed(handler, name, exc):
                    raise

    def enabled(self, event_name: Name) -> bool:
        """Return whether any handler or blinker receiver would receive this event."""
        try:
            return self._routes[event_name] is not None
        except (KeyError, TypeError):
            return self._lookup(event_name) is not None

    def _dispatch(self, route: Route, measurements: Any, metadata: Any) -> None:
        name, handlers, trusted, one = route
        if measurements.__class__ is dict and metadata.__class__ is dict:
            if not trusted:
                measurements = _view(measurements)
                metadata = _EMPTY if metadata is _NO_METADATA else _view(metadata)
        else:
            _check_payload(measurements, metadata)
            try:
                measurements, metadata = _read_only(measurements, metadata)
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                self._report_failure(None, name, exc)
                return
        if one is not None:
            function, config, handler = one
            try:
                function(name, measurements, metadata, config)
            except BaseException as exc:
                if self.on_error == "raise" or self._handler_failed(handler, name, exc):
                    raise
            return
        for function, config, handler in handlers:
            try:
                function(name, measurements, metadata, config)
            except BaseException as exc:
                if self.on_error == "raise" or self._handler_failed(handler, name, exc):
                    raise

    def _handler_failed(self, handler: Registration, name: EventName, exc: BaseException) -> bool:
        """Contain a handler's failure (detach per ``on_error``, report); True to propagate it.

        ``KeyboardInterrupt`` is the user's, not the handler's: it propagates. So does a
        ``RecursionError`` caught where this thread's dispatches, from here up, run some handler
        twice: events looped back into a running handler. The dispatch whose handler closed the
        loop (its event reached a handler still running) handles it, once, with stack to spare.
        Too close to the recursion limit to contain a failure, it is left alone, never raised.
        """
        if isinstance(exc, KeyboardInterrupt):
            return True
        if isinstance(exc, RecursionError) and name != FAILURE_EVENT and self._in_loop(exc):
            return True
        try:
            _reserve_stack(_FAILURE_RESERVE)
            if self.on_error == "detach":
                if handler.receiver is None:
                    self.detach(handler.id)
                else:
                    self._disconnect_receiver(handler)
            self._report_failure(handler, name, exc)
        except RecursionError:
            pass  # too close to the recursion limit to contain it: left as it was, not raised
        return False

    def _in_loop(self, exc: BaseException) -> bool:
        """Whether this registry's dispatches on the stack, from the one that caught ``exc``
        up, are running some handler twice.

        Reads the ``self`` and ``handler`` locals of ``execute`` and ``_dispatch`` frames. Each
        level of a loop stops at the first repeat, a level or two up; only the level that
        handles the failure walks to the top of the stack.
        """
        frame = exc.__traceback__.tb_frame if exc.__traceback__ is not None else None
        running: set[Hashable] = set()
        while frame is not None:
            if frame.f_code in _DISPATCH_CODE:
                local = frame.f_locals
                handler = local.get("handler")
                if local.get("self") is self and handler is not None:
                    if handler.id in running:
                        return True
                    running.add(handler.id)
            frame = frame.f_back
        return False

    def _report_failure(
        self, handler: Registration | None, name: EventName, exc: BaseException
    ) -> None:
        """Log a failure and emit the failure event; ``handler`` is None for a lazy payload."""
        import logging
        import traceback

        from vsrtel._redact import DEFAULT as DEFAULT_SECRETS

        log = logging.getLogger("vsrtel")
        # The traceback goes into the message as text scrubbed of secrets (the default rule of
        # vsrtel._redact): passed as exc_info, it would be formatted with its message as is.
        if handler is None:
            log.error(
                "lazy measurements or metadata of event %s raised; the event was dropped\n%s",
                ".".join(name),
                DEFAULT_SECRETS.format_exception(exc),
            )
        else:
            action = "detached" if self.on_error == "detach" else "kept attached"
            log.error(
                "vsrtel handler %r failed on event %s and was %s\n%s",
                handler.id,
                ".".join(name),
                action,
                DEFAULT_SECRETS.format_exception(exc),
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

    def _disconnect_receiver(self, handler: Registration) -> None:
        receiver = handler.receiver
        target = receiver() if isinstance(receiver, weakref.ref) else receiver
        if target is not None:
            self._signals[handler.event_name].disconnect(target)

    def _timestamps(self) -> dict[str, int]:
        return {"monotonic_time": self.clock.monotonic_ns(), "system_time": self.clock.time_ns()}

    # -- spans -----------------------------------------------------------------------------

    span = new_span

    def _lookup_span(self, names: SpanNames) -> SpanRoutes | None:
        """The routes of a span's start, stop and exception events, None when all three are
        None; cached in ``_spans`` by start name until the next attach or detach.

        Also remembers the span's prefix, and warns a handler attached to the prefix itself (no
        event has that name).
        """
        start, stop, exception, prefix = names
        misplaced: list[Hashable] = []
        with self._lock:  # so that no attach can slip between the lookups and the caching
            if prefix not in self._span_prefixes:
                remember(self._span_prefixes, prefix, None)
                misplaced = attached_ids(self._signals.get(prefix))
            routes = self._settled(
                lambda: (self._lookup(start), self._lookup(stop), self._lookup(exception))
            )
            found = None if routes == (None, None, None) else routes
            remember(self._spans, start, found)
        for handler_id in misplaced:  # outside the lock (see _attach)
            _warn_span_prefix(handler_id, prefix)
        return found

    # -- isolation for tests ---------------------------------------------------------------

    @contextmanager
    def isolated(self) -> Iterator[Registry]:
        """Detach everything for the ``with`` block, then put the previous handlers back.

        For tests of code that emits on the default registry (the pytest fixture
        ``vsrtel_registry`` uses it): ``with vsrtel.default_registry.isolated(): ...``.
        """
        with self._lock:
            saved = dict(vars(self))
            self._reset()
        try:
            yield self
        finally:
            with self._lock:
                vars(self).update(saved)
                self._rebuild()  # a blinker receiver collected meanwhile is routed around


# The frames whose locals _in_loop reads: the two copies of the dispatch loop.
_DISPATCH_CODE = frozenset((Registry.execute.__code__, Registry._dispatch.__code__))

default_registry = Registry()
