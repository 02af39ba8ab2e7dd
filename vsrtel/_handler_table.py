"""The handler table: what is attached where, and the routes ``execute`` reads.

The registry owns the storage and the lock; this module owns what the storage means. Storage is
one ``EventSignal`` (a blinker ``NamedSignal``, defined in `vsrtel._signal`) per event name, to
which the registry's :class:`Registration` objects and anyone's plain blinker receivers are
connected, plus an ordered list of prefix registrations. The functions here are pure over that
storage, the way Erlang's ``telemetry_pt`` is pure over its map: they read it and return new
routes, and never change it. The registry publishes what they return.

A ``Route`` is what one event name dispatches to: every handler that receives it, in attach
order, with the flag that lets trusted handlers get the caller's dicts.

Plain blinker receivers get blinker's own semantics: one connected with ``sender=X`` receives
the event only when ``X`` is its dotted name (the name ``execute`` sends it as); one held
weakly that has been garbage-collected receives nothing, and the registry is told so that it
rebuilds its routes; a muted signal (``with signal.muted():``) calls none of its receivers.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MethodType
from typing import TYPE_CHECKING, Any, NamedTuple

from vsrtel._names import EventName, starts_with

if TYPE_CHECKING:  # the storage's class, imported with blinker when the registry first needs it
    from vsrtel._signal import EventSignal

Measurements = Mapping[str, Any]
Metadata = Mapping[str, Any]
HandlerFunction = Callable[[EventName, Measurements, Metadata, Any], object]
#: The attach order of the plain blinker receivers, by (event name, blinker's receiver key).
ForeignOrder = Mapping[tuple[EventName, Hashable], int]
#: Told when a weakly held blinker receiver in some route has been garbage-collected.
OnDeath = Callable[[Any], object]

_LAST = 1 << 62  # the order of a blinker receiver never seen by order_foreign (none, in practice)


class HandlerRecord(NamedTuple):
    """One attached handler for one event name (or prefix), as ``list_handlers`` returns it."""

    id: Hashable
    event_name: EventName
    function: HandlerFunction
    config: Any


class Registration:
    """One handler attached to one event (or prefix); also a blinker receiver of its signal."""

    __slots__ = (
        "config", "event_name", "function", "id", "is_prefix", "receiver", "seq", "trusted"
    )

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
        trusted: bool = False,
    ) -> None:
        self.id = handler_id
        self.event_name = name
        self.function = function
        self.config = config
        self.seq = seq  # attach order, across exact, prefix and blinker registrations
        self.is_prefix = is_prefix
        self.receiver = receiver  # set for plain blinker receivers, which we did not attach
        self.trusted = trusted

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        """Receive a direct ``signal.send(name, measurements=..., metadata=...)``."""
        measurements, metadata = kwargs.get("measurements", {}), kwargs.get("metadata", {})
        self.function(sender, measurements, metadata, self.config)

    def record(self) -> HandlerRecord:
        return HandlerRecord(self.id, self.event_name, self.function, self.config)


#: One handler in a route: its function, its config, and its registration (for failures).
Entry = tuple[HandlerFunction, Any, Registration]
#: What one event name dispatches to: ``(name, handlers, trusted, one)``. ``handlers`` are the
#: entries of every handler in attach order; ``trusted`` says that all of them were attached
#: trusted, and get the caller's dicts as they are; ``one`` is the entry when it is the only one
#: (most events have one handler, which the registry then calls without a loop), else None.
#: A plain tuple, not a NamedTuple: ``execute`` unpacks one on every event, and CPython unpacks
#: an exact tuple in one step but a subclass of tuple through an iterator (0.4 of the floor).
Route = tuple[EventName, tuple[Entry, ...], bool, Entry | None]


#: The routes of a span's start, stop and exception events.
SpanRoutes = tuple[Route | None, Route | None, Route | None]


def order_foreign(
    signals: Mapping[EventName, EventSignal], known: ForeignOrder, next_seq: Callable[[], int]
) -> dict[tuple[EventName, Hashable], int]:
    """The attach order of every plain blinker receiver now connected: kept for those seen
    before, the next number of the registry's sequence for new ones; disconnected ones forgotten.
    """
    order: dict[tuple[EventName, Hashable], int] = {}
    for name, signal in signals.items():
        for key, receiver in list(signal.receivers.items()):
            if not isinstance(receiver, Registration):
                seq = known.get((name, key))
                order[name, key] = next_seq() if seq is None else seq
    return order


def build_route(
    name: EventName,
    prefix_handlers: Iterable[Registration],
    signal: EventSignal | None,
    foreign_order: ForeignOrder,
    on_death: OnDeath,
) -> Route | None:
    """The route of ``name``, or None when nobody would receive it."""
    handlers = [h for h in prefix_handlers if starts_with(name, h.event_name)]
    if signal is not None and signal.receivers and not signal.is_muted:
        wanted: list[Any] | None = None
        for key, receiver in list(signal.receivers.items()):
            if isinstance(receiver, Registration):
                handlers.append(receiver)
                continue
            if wanted is None:
                # Connected for any sender, or for this event's own: blinker's rule, asked of
                # blinker's public API (which also drops the weak receivers it finds dead).
                wanted = list(signal.receivers_for(signal.name))
            target = receiver() if isinstance(receiver, weakref.ref) else receiver
            if target is None or not any(_same(target, w) for w in wanted):
                continue
            seq = foreign_order.get((name, key), _LAST)
            handler_id = f"blinker:{signal.name}:{key}"
            held = _watch(target, on_death) if isinstance(receiver, weakref.ref) else target
            handlers.append(
                Registration(handler_id, name, _adapter(held), None, seq, receiver=receiver)
            )
    if not handlers:
        return None
    handlers.sort(key=lambda h: h.seq)
    trusted = all(h.trusted for h in handlers)
    entries = tuple((h.function, h.config, h) for h in handlers)
    return name, entries, trusted, entries[0] if len(entries) == 1 else None


def build_routes(
    signals: Mapping[EventName, EventSignal],
    prefix_handlers: Iterable[Registration],
    foreign_order: ForeignOrder,
    on_death: OnDeath,
) -> dict[Any, Route | None]:
    """The routes of every event whose signal has receivers.

    The names only prefix handlers (or nobody) receive are left out: the registry resolves them
    with :func:`build_route` on first use.
    """
    prefix_handlers = list(prefix_handlers)
    return {
        name: build_route(name, prefix_handlers, signal, foreign_order, on_death)
        for name, signal in signals.items()
        if signal.receivers
    }


def attached_ids(signal: EventSignal | None) -> list[Hashable]:
    """The ids of the registrations (not plain blinker receivers) connected to ``signal``."""
    if signal is None:
        return []
    return [r.id for r in list(signal.receivers.values()) if isinstance(r, Registration)]


def _same(a: Any, b: Any) -> bool:
    # A bound method is made anew by each weakref call: equal, not identical.
    return a is b or (isinstance(a, MethodType) and a == b)


def _watch(target: Any, on_death: OnDeath) -> weakref.ref[Any]:
    """A weak reference to a blinker receiver that tells ``on_death`` when it is collected
    (blinker drops it silently then, without ``receiver_disconnected``)."""
    if isinstance(target, MethodType):
        return weakref.WeakMethod(target, on_death)
    return weakref.ref(target, on_death)


def _adapter(receiver: Any) -> HandlerFunction:
    """Call a plain blinker receiver (held strongly or by weakref) the way ``send`` would."""

    def call(name: EventName, measurements: Measurements, metadata: Metadata, _: Any) -> None:
        target = receiver() if isinstance(receiver, weakref.ref) else receiver
        if target is not None:
            target(name, measurements=measurements, metadata=metadata)

    return call
