"""Spans: an operation reported as ``start`` and then ``stop`` or ``exception`` events."""

from __future__ import annotations

import functools
import inspect
import itertools
import traceback
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from vsrtel._registry import Clock, EventName, Metadata, Name, Registry, _Route

F = TypeVar("F", bound=Callable[..., Any])

_current: ContextVar[Span | None] = ContextVar("vsrtel_current_span", default=None)
_span_ids = itertools.count(1)


def current_span() -> Span | None:
    """Return the innermost span entered with ``with`` in this thread or asyncio task, or None."""
    return _current.get()


class Span:
    """One timed operation; see :meth:`vsrtel.Registry.span`.

    ``context`` is the ``telemetry_span_context`` shared by its events. While the span runs,
    ``metadata`` (starting as the start metadata) and ``measurements`` (initially empty) may be
    changed: both are merged into the stop event, where ``duration`` and ``monotonic_time``
    always win.
    """

    __slots__ = (
        "_clock",
        "_extra",
        "_metadata",
        "_names",
        "_registry",
        "_started_at",
        "_template",
        "_token",
    )

    def __init__(
        self,
        registry: Registry,
        prefix: Name,
        metadata: Metadata | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._registry = registry
        self._clock = clock or registry.clock
        try:
            self._names = registry._span_names[prefix]
        except (KeyError, TypeError):
            self._names = registry._span_event_names(prefix)
        self._template = metadata
        self._started_at: int | None = None
        # Copied on first use: a span nobody listens to never pays for its metadata.
        self._metadata: dict[str, Any] | None = None
        self._extra: dict[str, Any] | None = None

    @property
    def prefix(self) -> EventName:
        """The event name prefix of the span's events."""
        return self._names[0][:-1]

    @property
    def metadata(self) -> dict[str, Any]:
        """The span's metadata: the start metadata, plus what the body adds for the stop event."""
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = {**self._template} if self._template else {}
            if "telemetry_span_context" not in metadata:
                metadata["telemetry_span_context"] = next(_span_ids)
        return metadata

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
            raise RuntimeError(f"span {'.'.join(self.prefix)} was already started")
        self._started_at = now = self._clock.monotonic_ns()
        try:
            route = self._registry._routes[self._names[0]]
        except KeyError:
            route = self._registry._resolve(self._names[0])
        if route is not None:
            self._emit_start(route, now)
        return self

    def _emit_start(self, route: _Route, now: int) -> None:
        measurements = {"monotonic_time": now, "system_time": self._clock.time_ns()}
        self._registry._dispatch(route, measurements, {**self.metadata})

    def stop(self, error: BaseException | None = None) -> None:
        """Emit the stop event, or the exception event when ``error`` is given.

        May be called from another thread or task than :meth:`start`.
        """
        started_at = self._started_at
        if started_at is None:
            raise RuntimeError(f"span {'.'.join(self.prefix)} was not started or already stopped")
        self._started_at = None
        now = self._clock.monotonic_ns()
        name = self._names[1] if error is None else self._names[2]
        try:
            route = self._registry._routes[name]
        except KeyError:
            route = self._registry._resolve(name)
        if route is not None:
            self._emit_stop(route, error, now - started_at, now)

    def _emit_stop(
        self, route: _Route, error: BaseException | None, duration: int, now: int
    ) -> None:
        if error is None:
            measurements = {"duration": duration, "monotonic_time": now}
            if self._extra:
                measurements = {**self._extra, **measurements}
            self._registry._dispatch(route, measurements, {**self.metadata})
            return
        frames = traceback.extract_tb(error.__traceback__) or traceback.extract_stack()[:-1]
        metadata = {**self.metadata, "kind": type(error), "reason": error, "stacktrace": frames}
        measurements = {"duration": duration, "monotonic_time": now}
        self._registry._dispatch(route, measurements, metadata)

    # -- with / async with -----------------------------------------------------------------

    # __enter__ and __exit__ repeat start() and stop() inline rather than call them: two Python
    # calls are over 10% of a span nobody listens to (see "span, 0 handlers" in benchmarks).

    def __enter__(self) -> Span:
        if self._started_at is not None:
            raise RuntimeError(f"span {'.'.join(self.prefix)} was already started")
        self._token: Token[Span | None] = _current.set(self)
        self._started_at = now = self._clock.monotonic_ns()
        try:
            route = self._registry._routes[self._names[0]]
        except KeyError:
            route = self._registry._resolve(self._names[0])
        if route is not None:
            self._emit_start(route, now)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            started_at, self._started_at = self._started_at, None
            now = self._clock.monotonic_ns()
            name = self._names[1] if exc is None else self._names[2]
            try:
                route = self._registry._routes[name]
            except KeyError:
                route = self._registry._resolve(name)
            if route is not None:
                self._emit_stop(route, exc, now - started_at, now)  # type: ignore[operator]
        finally:
            _current.reset(self._token)

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
        """Wrap ``function`` (sync or async) so that each call runs in a fresh span."""
        registry, prefix = self._registry, self._names[0][:-1]
        metadata, clock = self._template, self._clock

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with Span(registry, prefix, metadata, clock):
                    return await function(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Span(registry, prefix, metadata, clock):
                return function(*args, **kwargs)

        return cast(F, wrapper)
