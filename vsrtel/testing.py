"""Helpers for testing instrumented code: capture the events it emits."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from vsrtel._handler_table import Measurements, Metadata
from vsrtel._names import EventName, Name, event_name, starts_with
from vsrtel._registry import Registry

__all__ = ["CapturedEvent", "capture"]

_capture_ids = itertools.count()


class CapturedEvent(NamedTuple):
    """One event seen by :func:`capture` (measurements and metadata are shallow copies)."""

    name: EventName
    measurements: dict[str, Any]
    metadata: dict[str, Any]


@contextmanager
def capture(*prefixes: Name, registry: Registry | None = None) -> Iterator[list[CapturedEvent]]:
    """Collect every event under any of ``prefixes`` (all events when none) into a list.

    A full event name is a prefix of itself. The handlers are detached on exit.

    >>> with capture("app.request") as events:
    ...     ...
    """
    registry = Registry.or_default(registry)
    wanted = sorted({event_name(p, what="prefix", allow_empty=True) for p in prefixes or [()]})
    # Drop prefixes that a shorter one already covers, so no event is recorded twice.
    kept: list[EventName] = []
    for prefix in wanted:
        if not any(starts_with(prefix, k) for k in kept):
            kept.append(prefix)
    events: list[CapturedEvent] = []

    def record(name: EventName, measurements: Measurements, metadata: Metadata, _: Any) -> None:
        events.append(CapturedEvent(name, dict(measurements), dict(metadata)))

    handler_ids = [("vsrtel.testing.capture", next(_capture_ids), p) for p in kept]
    for handler_id, prefix in zip(handler_ids, kept, strict=True):
        registry.attach_prefix(handler_id, prefix, record)
    try:
        yield events
    finally:
        for handler_id in handler_ids:
            registry.detach(handler_id)
