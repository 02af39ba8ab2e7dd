"""Scopes: events stamped with common metadata taken from a state object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from vsrtel._handler_table import Metadata
from vsrtel._names import EventName, Name, event_name, remember
from vsrtel._registry import Registry
from vsrtel._span import Clock, Span

__all__ = ["Scope"]

State = TypeVar("State")


class Scope(Generic[State]):
    """Emit events under ``prefix`` with ``metadata_fn(state)`` merged into their metadata.

    This is the pattern of Elixir's ``Vsr.Telemetry``: one scope per component, and every event
    carries the same context (node id, view, role...) without repeating it at each call site.
    Extra metadata given at the call wins over ``metadata_fn``'s on a clash. ``metadata_fn`` is
    only called when some handler receives the event (for a span: when it starts and somebody
    listens, or its metadata is read). ``clock`` times the scope's spans (default: the
    registry's clock).
    """

    def __init__(
        self,
        prefix: Name,
        metadata_fn: Callable[[State], Metadata],
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.prefix = event_name(prefix, what="scope prefix")
        self.registry = Registry.or_default(registry)
        self.clock = clock
        self._metadata_fn = metadata_fn
        self._names: dict[Any, EventName] = {}

    def name(self, event: Name) -> EventName:
        """Return the full event name of ``event`` under this scope's prefix."""
        try:
            return self._names[event]
        except (KeyError, TypeError):
            full = self.prefix + event_name(event)
            if isinstance(event, (str, tuple)):
                remember(self._names, event, full)
            return full

    def execute(
        self, event: Name, state: State, measurements: Any, metadata: Metadata | None = None
    ) -> None:
        """Emit ``prefix + event`` with ``{**metadata_fn(state), **metadata}``."""
        name = self.name(event)
        if self.registry.enabled(name):
            self.registry.execute(name, measurements, self.metadata(state, metadata))

    def span(self, event: Name, state: State, metadata: Metadata | None = None) -> Span:
        """Return a span for ``prefix + event`` whose metadata starts from the state's.

        ``metadata_fn(state)`` is called when the span first needs its metadata: never for a
        span nobody listens to.
        """
        return self.registry.span(
            self.name(event), lambda: self.metadata(state, metadata), self.clock
        )

    def metadata(self, state: State, extra: Metadata | None = None) -> dict[str, Any]:
        """Return the common metadata of ``state`` with ``extra`` merged over it."""
        common = dict(self._metadata_fn(state))
        if extra:
            common.update(extra)
        return common
