"""Spans: an operation reported as ``start`` and then ``stop`` or ``exception`` events.

A span reaches its registry only through the :class:`Dispatcher` protocol declared here, and
this module imports nothing of the registry's: the registry builds spans, not the other way.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from vsrtel._handler_table import Metadata, Route, SpanRoutes
from vsrtel._names import EventName, Name, event_name, remember

F = TypeVar("F", bound=Callable[..., Any])
#: A span prefix's start, stop and exception event names, dotted, then the prefix itself.
SpanNames = tuple[str, str, str, EventName]
#: A span's start metadata: a mapping, or a zero-argument callable returning one.
SpanMetadata = Metadata | Callable[[], Metadata] | None


class Clock(Protocol):
    """A source of time: the ``time`` module, or a simulated clock."""

    def monotonic_ns(self) -> int: ...

    def time_ns(self) -> int: ...


class Dispatcher(Protocol):
    """What a span reads of its registry (`vsrtel.Registry` is one), and nothing more.

    When a span starts, ``_spans`` (its three routes by start name, None when nobody listens
    to any), calling ``_lookup_span`` on a miss; when it ends, ``_routes``, calling ``_lookup``
    on a miss, so that a handler detached meanwhile is not called; ``_dispatch`` a route.
    """

    @property
    def clock(self) -> Clock: ...

    @property
    def _routes(self) -> Mapping[Any, Route | None]: ...

    @property
    def _spans(self) -> Mapping[str, SpanRoutes | None]: ...

    def _lookup(self, name: Any) -> Route | None: ...

    def _lookup_span(self, names: SpanNames) -> SpanRoutes | None: ...

    def _dispatch(self, route: Route, measurements: Any, metadata: Any) -> None: ...


_current: ContextVar[Span | None] = ContextVar("vsrtel_current_span", default=None)
# Bound once for __enter__ and __exit__: a method lookup per call is measurable there.
_get_current, _set_current, _reset_current = _current.get, _current.set, _current.reset
_span_ids = itertools.count(1)
# The span whose start event `Span.start()` is emitting in this thread or task: a handler that
# makes a span started by hand current (the spans handler) leaves an explicit start alone.
_explicit: ContextVar[Span | None] = ContextVar("vsrtel_explicit_start", default=None)

#: Each span prefix seen, as given (str or tuple) -> its start, stop and exception event names,
#: dotted (a str caches its hash: the cheapest key into the registry's routes), then the prefix.
_event_names: dict[Any, SpanNames] = {}


def _names_of(prefix: Any) -> SpanNames:
    """The event names of a span prefix: validated and computed on first sight, then cached."""
    base = event_name(prefix, what="span prefix")
    dotted = ".".join(base)
    names = (f"{dotted}.start", f"{dotted}.stop", f"{dotted}.exception", base)
    if isinstance(prefix, (str, tuple)):
        remember(_event_names, prefix, names)
    return names


def new_span(
    registry: Dispatcher,
    prefix: Name,
    metadata: SpanMetadata = None,
    clock: Clock | None = None,
) -> Span:
    """Return a span emitting ``prefix + ("start" | "stop" | "exception")``.

    Use it as ``with``/``async with`` (the target is the span), as a decorator of sync or async
    functions (each call is one span), or call ``.start()`` and later ``.stop()``. ``clock``
    times this span instead of the registry's clock. ``metadata`` may be a zero-argument
    callable returning the mapping: it is called once, when the span first needs it (it starts
    and somebody listens, or you read its ``metadata`` or ``context``), and what it raises
    propagates there.
    """
    # Span has no __init__ (its call would be over 10% of a span nobody listens to): the fields
    # are set here, but for those its start sets (_token, _timed).
    span = Span()
    span._registry = registry
    span._clock = clock  # None: the registry's, looked up when the span is timed
    try:
        span._names = _event_names[prefix]
    except (KeyError, TypeError):
        span._names = _names_of(prefix)
    span._template = metadata
    # Set when the span starts; the metadata is copied on first use, so a span nobody listens
    # to never pays for it.
    span._started_at = span._metadata = span._extra = span._callbacks = None
    return span


def explicit_start() -> Span | None:
    """The span whose ``.start()`` is emitting its start event here, else None: for a handler
    telling that start from one emitted by hand with ``execute``, which looks the same."""
    return _explicit.get()


def current_span() -> Span | None:
    """Return the innermost span entered with ``with`` in this thread or asyncio task, or None.

    A span that has ended is never returned, even one ended in another thread by mistake.
    """
    span = _current.get()
    if span is not None and span._started_at is None:
        span = _live_ancestor(span)
    return span


class Span:
    """One timed operation; see :meth:`vsrtel.Registry.span`.

    ``context`` is the ``telemetry_span_context`` shared by its events (taken from the start
    metadata when given there, unless it is the current span's: a child built from a copy of its
    parent's metadata gets its own). While the span runs, ``metadata`` (starting as the start
    metadata) and ``measurements`` (initially empty) may be changed: both are merged into the
    stop event, where ``duration`` and ``monotonic_time`` always win.

    However a span ends (normally, by an exception, out of order with other spans, or because a
    start handler raised), the current span is put back to the innermost span still running.
    A span nobody listened to when it started is not timed and emits nothing when it ends.
    """

    __slots__ = (
        "_callbacks",
        "_clock",
        "_extra",
        "_metadata",
        "_names",
        "_registry",
        "_started_at",
        "_template",
        "_timed",
        "_token",
    )

    _registry: Dispatcher
    _clock: Clock | None  # None until timed: then the registry's clock
    _names: SpanNames
    _template: SpanMetadata
    _started_at: int | None  # None: not running; 0: running, not timed
    _timed: bool  # whether anybody listened when it started: only then are its events emitted
    _metadata: dict[str, Any] | None
    _extra: dict[str, Any] | None
    _token: Token[Span | None] | None  # set when it starts: None unless entered with `with`
    _callbacks: list[Callable[[], object]] | None

    @property
    def prefix(self) -> EventName:
        """The event name prefix of the span's events."""
        return self._names[3]

    @property
    def metadata(self) -> dict[str, Any]:
        """The span's metadata: the start metadata, plus what the body adds for the stop event."""
        metadata = self._metadata
        if metadata is None:
            template = self._template
            if callable(template) and not isinstance(template, Mapping):
                template = _lazy_metadata(template, self._dotted)
            metadata = self._metadata = {**template} if template else {}
            context = metadata.get("telemetry_span_context")
            if context is None or self._is_ancestor_context(context):
                metadata["telemetry_span_context"] = next(_span_ids)
        return metadata

    def _is_ancestor_context(self, context: Any) -> bool:
        span = _current.get()
        while span is not None:
            metadata = span._metadata
            if span is not self and metadata and metadata["telemetry_span_context"] is context:
                return True
            span = _parent_of(span)
        return False

    @property
    def measurements(self) -> dict[str, Any]:
        """Extra measurements for the stop event (``duration`` and ``monotonic_time`` win)."""
        if self._extra is None:
            self._extra = {}
        return self._extra

    @property
    def context(self) -> Any:
        """The ``telemetry_span_context`` shared by the span's events."""
        return self.metadata["telemetry_span_context"]

    def __repr__(self) -> str:
        return f"<Span {'.'.join(self.prefix)} context={self.context!r}>"

    # -- explicit start/stop ---------------------------------------------------------------

    def start(self) -> Span:
        """Emit the start event without making the span current; return the span."""
        if self._started_at is not None:
            raise RuntimeError(f"span {self._dotted} was already started")
        self._token = None
        try:
            routes = self._registry._spans[self._names[0]]
        except KeyError:
            routes = self._registry._lookup_span(self._names)
        if routes is None:
            self._started_at, self._timed = 0, False
        else:
            token = _explicit.set(self)
            try:
                self._start_timed(routes)
            finally:
                _explicit.reset(token)
        return self

    def _start_timed(self, routes: SpanRoutes) -> None:
        self._timed = True
        clock = self._clock = self._clock or self._registry.clock
        self._started_at = now = clock.monotonic_ns()
        route = routes[0]
        if route is not None:
            measurements = {"monotonic_time": now, "system_time": clock.time_ns()}
            self._registry._dispatch(route, measurements, {**self.metadata})

    def stop(self, error: BaseException | None = None) -> None:
        """Emit the stop event, or the exception event when ``error`` (an exception) is given.

        May be called from another thread or task than :meth:`start`. Raises ``RuntimeError``
        for a span that is not started, already stopped, or entered with ``with`` (which stops
        when its block exits), and ``TypeError`` when ``error`` is not an exception.
        """
        if error is not None and not isinstance(error, BaseException):
            raise TypeError(f"span {self._dotted}: error must be an exception, got {error!r}")
        started_at = self._started_at
        if started_at is None:
            raise RuntimeError(f"span {self._dotted} was not started or already stopped")
        if self._token is not None:
            raise RuntimeError(
                f"span {self._dotted} was entered with `with`: it stops when the block exits"
            )
        self._started_at = None
        try:
            if self._timed:
                self._stop_timed(started_at, error)
        finally:
            if self._callbacks is not None:
                self._run_callbacks()

    def _stop_timed(self, started_at: int, error: BaseException | None) -> None:
        clock = self._clock
        assert clock is not None  # set by _start_timed
        now = clock.monotonic_ns()
        name = self._names[1] if error is None else self._names[2]
        try:
            route = self._registry._routes[name]
        except KeyError:
            route = self._registry._lookup(name)
        if route is None:
            return
        measurements = {"duration": now - started_at, "monotonic_time": now}
        if error is None:
            if self._extra:
                measurements = {**self._extra, **measurements}
            self._registry._dispatch(route, measurements, {**self.metadata})
            return
        import traceback  # here, not at the top: `import vsrtel` stays light

        # The exception's own frames; one never raised has none, so say where it was reported.
        frames = traceback.extract_tb(error.__traceback__) or traceback.extract_stack()[:-2]
        metadata = {**self.metadata, "kind": type(error), "reason": error, "stacktrace": frames}
        self._registry._dispatch(route, measurements, metadata)

    def on_exit(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when the span ends, after its stop or exception event.

        It runs however the span ends, even when no handler receives the stop, in the thread or
        task that ends it: for a handler that sets context-local state at ``start`` (an
        OpenTelemetry context, bound log variables) and must restore it. Callbacks run last
        registered first; one that raises is logged and the others still run. A ``with`` span
        exited by mistake in another thread or task ends there, and its callbacks run there; if
        its own thread or task exits it later, they run once more, there, where the state they
        restore was set.
        """
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def _run_callbacks(self, here: bool = True) -> None:
        """Run the exit callbacks. ``here`` is False in another context than the span's own:
        they are then kept, to run once more when its own context exits it."""
        callbacks, self._callbacks = self._callbacks or [], None
        if not here:
            if isinstance(callbacks, _Kept):  # they ran where the span ended
                self._callbacks = callbacks
                return
            self._callbacks = _Kept(callbacks)
        for callback in reversed(callbacks):
            try:
                callback()
            except Exception:
                import logging  # here, not at the top: `import vsrtel` stays light

                logging.getLogger("vsrtel").exception(
                    "span %s: exit callback %r failed", self._dotted, callback
                )

    @property
    def _dotted(self) -> str:
        return ".".join(self._names[3])

    # -- with / async with -----------------------------------------------------------------

    # __enter__ and __exit__ repeat the first steps of start() and stop() inline, and a span
    # nobody listens to is not timed: each Python call or clock read is several percent of the
    # cost of such a span (see "span, 0 handlers" in benchmarks).

    def __enter__(self) -> Span:
        if self._started_at is not None:
            raise RuntimeError(f"span {self._dotted} was already started")
        self._token = _set_current(self)
        try:
            routes = self._registry._spans[self._names[0]]
        except KeyError:
            routes = self._registry._lookup_span(self._names)
        if routes is None:
            self._started_at, self._timed = 0, False
            return self
        try:
            self._start_timed(routes)
        except BaseException:
            # A start handler raised into us (on_error="raise", KeyboardInterrupt): the body
            # will not run and __exit__ will not be called, so undo the enter here.
            self._started_at = None
            self._leave()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._timed:
                started_at, self._started_at = self._started_at, None
                if started_at is not None:  # else exited before (see _leave): nothing to report
                    self._stop_timed(started_at, exc)
            else:
                self._started_at = None
        finally:
            # _leave, inlined for the common case: this span is current, its parent still runs.
            if _get_current() is self and self._callbacks is None:
                try:
                    _reset_current(self._token)  # type: ignore[arg-type]
                except ValueError:
                    raise _ExitedElsewhere(self._wrong_context) from None
                # The reset made current again the span that was when this one was entered (or
                # None): if it ended meanwhile, its innermost ancestor still running is.
                parent = _get_current()
                if parent is not None and parent._started_at is None:
                    _current.set(_live_ancestor(parent))
            else:
                self._leave()

    def _leave(self) -> None:
        """Make the innermost span still running current again, then run the exit callbacks.

        Resetting the span's token tells its own context from another: that fails in another
        thread or task, and once its own context has left it. A span that ended in another
        context (by mistake, or a generator closed elsewhere) stays in its own context's chain
        of spans, skipped by ``current_span()``, until that context exits it again: that exit
        reports nothing, puts the current span back and runs the callbacks once more.
        """
        here = True
        try:
            current = _current.get()
            if current is not self and current is not None and _is_below(current, self):
                # A span entered after this one is still running (spans exited out of order,
                # e.g. two instrumented generators consumed alternately): it stays current, and
                # skips this one when it ends.
                return
            token = self._token
            assert token is not None
            try:
                _current.reset(token)
            except ValueError:
                here = False
                raise _ExitedElsewhere(self._wrong_context) from None
            except RuntimeError:  # the token was used: this context has left the span already
                raise RuntimeError(f"span {self._dotted} was already exited") from None
            if current is not self and current is not None and current._started_at is not None:
                _current.set(current)  # exited again while an unrelated span runs: it stays
            else:
                parent = _parent_of(self)
                if parent is not None and parent._started_at is None:
                    _current.set(_live_ancestor(parent))
        finally:
            if self._callbacks is not None:
                self._run_callbacks(here)

    @property
    def _wrong_context(self) -> str:
        return (
            f"span {self._dotted} was exited in another thread or asyncio task than the one it "
            "was entered in"
        )

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------------------------

    def __call__(self, function: F) -> F:
        """Wrap ``function`` so that each call runs in a fresh span.

        For a coroutine function the span covers the await; for a generator or async generator
        function it covers the iteration, from the first ``next`` to exhaustion, an exception,
        or ``close()`` (a consumer that stops early ends the span normally). The iteration may
        end in another thread or task than the one it started in (an async generator left with
        ``break`` is closed later by the event loop, in a task of its own): that ends the span
        normally too, and the thread or task that started it goes on with the span around it.
        """
        import inspect  # here, not at the top: `import vsrtel` stays light

        registry, prefix = self._registry, self._names[3]
        metadata, clock = self._template, self._clock

        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                span = new_span(registry, prefix, metadata, clock)
                with _iteration(span):
                    iterator = function(*args, **kwargs)
                    try:
                        async for item in iterator:
                            yield item
                    finally:
                        await iterator.aclose()

            return cast(F, async_gen_wrapper)

        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                with _iteration(new_span(registry, prefix, metadata, clock)):
                    return (yield from function(*args, **kwargs))

            return cast(F, gen_wrapper)

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with new_span(registry, prefix, metadata, clock):
                    return await function(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with new_span(registry, prefix, metadata, clock):
                return function(*args, **kwargs)

        return cast(F, wrapper)


def _lazy_metadata(make: Callable[[], Metadata], dotted: str) -> Metadata:
    metadata = make()
    if not isinstance(metadata, Mapping):
        raise TypeError(f"span {dotted}: lazy metadata returned {metadata!r}, not a mapping")
    return metadata


@contextmanager
def _iteration(span: Span) -> Iterator[Span]:
    """A span over a generator's life, where ``close()`` (GeneratorExit) is a normal end."""
    span.__enter__()
    try:
        yield span
    except GeneratorExit:
        _end_iteration(span, None)
        raise
    except BaseException as exc:
        _end_iteration(span, exc)
        raise
    else:
        _end_iteration(span, None)


def _end_iteration(span: Span, error: BaseException | None) -> None:
    """Exit a generator's span. A generator is not tied to a thread or task, so ending in
    another than the one it started in is no mistake: the span ends all the same, and the
    context it started in skips it from then on."""
    try:
        if error is None:
            span.__exit__(None, None, None)
        else:
            span.__exit__(type(error), error, error.__traceback__)
    except _ExitedElsewhere:
        pass


class _ExitedElsewhere(RuntimeError):
    """A ``with`` span exited in another thread or asyncio task than the one it entered."""


class _Kept(list[Callable[[], object]]):
    """Exit callbacks that ran where a span ended, in another context than its own: they run
    once more when its own context exits it."""


def _parent_of(span: Span) -> Span | None:
    """The span that was current when ``span`` was entered (None at the top)."""
    parent = None if span._token is None else span._token.old_value
    return parent if isinstance(parent, Span) else None


def _live_ancestor(span: Span | None) -> Span | None:
    """``span`` or its innermost ancestor still running: skips spans exited out of order."""
    while span is not None and span._started_at is None:
        span = _parent_of(span)
    return span


def _is_below(span: Span | None, ancestor: Span) -> bool:
    while span is not None:
        if span is ancestor:
            return True
        span = _parent_of(span)
    return False
