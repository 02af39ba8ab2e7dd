"""The core bus against the CPython floor and the peers (blinker, pyee, psygnal)."""

from __future__ import annotations

from typing import Any

import blinker
import psygnal
import pyee

import vsrtel
from benchmarks._harness import Case, Target, now

NAME = ("vsr", "protocol", "prepare", "sent")
MEASUREMENTS = {"count": 2}
METADATA = {"node_id": 1}


# Each dispatcher gets the cheapest no-op its calling convention allows.
def noop(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
    pass


def noop_receiver(sender: Any, **kwargs: Any) -> None:
    pass


def noop3(name: Any, measurements: Any, metadata: Any) -> None:
    pass


def floor(loops: int) -> int:
    # What no dispatcher can beat: find the handler in a dict, call it once.
    handlers = {NAME: noop}
    name, measurements, metadata = NAME, MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        handlers[name](name, measurements, metadata, None)
    return now() - start


def _registry(
    handlers: int, prefix: tuple[str, ...] | None = None, *, trusted: bool = False
) -> vsrtel.Registry:
    registry = vsrtel.Registry()
    for i in range(handlers):
        registry.attach(i, NAME, noop, trusted=trusted)
    if prefix is not None:
        registry.attach_prefix("prefix", prefix, noop)
    return registry


def execute_case(
    handlers: int, prefix: tuple[str, ...] | None = None, *, trusted: bool = False
) -> Any:
    def run(loops: int) -> int:
        execute = _registry(handlers, prefix, trusted=trusted).execute
        name, measurements, metadata = NAME, MEASUREMENTS, METADATA
        start = now()
        for _ in range(loops):
            execute(name, measurements, metadata)
        return now() - start

    return run


def enabled_case(loops: int) -> int:
    enabled, name = vsrtel.Registry().enabled, NAME
    start = now()
    for _ in range(loops):
        enabled(name)
    return now() - start


def span_case(handlers: bool) -> Any:
    def run(loops: int) -> int:
        registry = vsrtel.Registry()
        if handlers:
            registry.attach_many("noop", [NAME + ("start",), NAME + ("stop",)], noop)
        span, metadata = registry.span, METADATA
        start = now()
        for _ in range(loops):
            with span(NAME, metadata):
                pass
        return now() - start

    return run


def span_unbound(loops: int) -> int:
    # As most code writes it: the method looked up on every call.
    registry, metadata = vsrtel.Registry(), METADATA
    start = now()
    for _ in range(loops):
        with registry.span(NAME, metadata):
            pass
    return now() - start


def empty_with(loops: int) -> int:
    # What no span can beat: a `with` block of an object whose __enter__/__exit__ do nothing.
    manager = _Empty()
    start = now()
    for _ in range(loops):
        with manager:
            pass
    return now() - start


class _Empty:
    def __enter__(self) -> _Empty:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def blinker_case(receivers: int) -> Any:
    def run(loops: int) -> int:
        signal = blinker.Signal()
        for _ in range(receivers):
            signal.connect(noop_receiver)
        send, name, measurements, metadata = signal.send, NAME, MEASUREMENTS, METADATA
        start = now()
        for _ in range(loops):
            send(name, measurements=measurements, metadata=metadata)
        return now() - start

    return run


def pyee_emit(loops: int) -> int:
    emitter = pyee.EventEmitter()
    emitter.on("prepare_sent", noop3)
    emit, name, measurements, metadata = emitter.emit, NAME, MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        emit("prepare_sent", name, measurements, metadata)
    return now() - start


class _Emitter:
    prepare_sent = psygnal.Signal(object, object, object)


def psygnal_emit(loops: int) -> int:
    emitter = _Emitter()
    emitter.prepare_sent.connect(noop3)
    emit, name, measurements, metadata = emitter.prepare_sent.emit, NAME, MEASUREMENTS, METADATA
    start = now()
    for _ in range(loops):
        emit(name, measurements, metadata)
    return now() - start


FLOOR = "floor: dict lookup + 1 call"
CASES = [
    Case(FLOOR, floor),
    Case("execute, 0 handlers", execute_case(0)),
    Case("execute, 1 no-op handler", execute_case(1)),
    Case("execute, 1 trusted no-op handler", execute_case(1, trusted=True)),
    Case("execute, 10 no-op handlers", execute_case(10)),
    Case("execute, only a non-matching prefix handler", execute_case(0, ("other",))),
    Case("execute, 1 matching prefix handler", execute_case(0, ("vsr",))),
    Case("enabled, 0 handlers", enabled_case),
    Case("with: an empty context manager", empty_with),
    Case("span, 0 handlers", span_case(False)),
    Case("span, 0 handlers, registry.span looked up per call", span_unbound),
    Case("span, no-op start/stop handlers", span_case(True)),
    Case("blinker send, 0 receivers", blinker_case(0)),
    Case("blinker send, 1 receiver", blinker_case(1)),
    Case("pyee emit, 1 listener", pyee_emit),
    Case("psygnal emit, 1 slot", psygnal_emit),
]

TARGETS = [
    # 1.3x until every payload's types were checked, listened to or not: two class tests, about
    # 0.25 of the floor (1.49 to 1.58x measured).
    Target("execute (0 handlers, payload checked) vs floor", "execute, 0 handlers", FLOOR, 1.6),
    # One handler, the common case: a route of one is called without a loop, and routes are
    # exact tuples (unpacked in one step). 5.4 and 3.2 floors before (issue 19); the views are
    # most of the rest: two MappingProxyType calls in pure Python.
    Target("execute (1 handler, read-only views) vs floor", "execute, 1 no-op handler", FLOOR, 4.1),
    Target(
        "execute (1 trusted handler, the caller's dicts) vs floor",
        "execute, 1 trusted no-op handler",
        FLOOR,
        2.1,
    ),
    Target(
        "execute (1 handler) vs blinker send (1 receiver)",
        "execute, 1 no-op handler",
        "blinker send, 1 receiver",
        0.25,
    ),
    Target(
        "non-matching prefix vs 0 handlers",
        "execute, only a non-matching prefix handler",
        "execute, 0 handlers",
        1.3,
    ),
    # Absolute targets are set as multiples of the floor, so that they mean the same on any
    # machine: 0.7 us was set where the floor took 72 ns.
    Target("span (0 handlers) vs floor (0.7 us at a 72 ns floor)", "span, 0 handlers", FLOOR, 9.7),
    Target(
        "span (0 handlers, registry.span per call) vs floor",
        "span, 0 handlers, registry.span looked up per call",
        FLOOR,
        9.7,
    ),
]
