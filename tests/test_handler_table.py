"""The handler table: pure functions from what is attached to the routes ``execute`` reads."""

from __future__ import annotations

import itertools
from typing import Any

from vsrtel._handler_table import Registration, build_route, build_routes, order_foreign
from vsrtel._signal import EventSignal


def handler(*_: Any) -> None: ...


def plain_receiver(sender: Any, **kwargs: Any) -> None: ...


def not_told(_: Any) -> None:
    raise AssertionError("no receiver died")


def storage() -> tuple[dict[tuple[str, ...], EventSignal], list[Registration]]:
    """Exact "a.b" (seq 0), a plain blinker receiver of "a.b" (ordered 1), prefix "a" (2)."""
    signal = EventSignal("a.b")
    signal.connect(Registration("exact", ("a", "b"), handler, "cfg", 0, trusted=True), weak=False)
    signal.connect(plain_receiver, weak=False)
    prefix = Registration("prefix", ("a",), handler, None, 2, is_prefix=True, trusted=True)
    return {("a", "b"): signal}, [prefix]


def test_routes_follow_attach_order_across_exact_blinker_and_prefix() -> None:
    signals, prefixes = storage()
    order = order_foreign(signals, {}, itertools.count(1).__next__)
    assert list(order.values()) == [1]
    route = build_routes(signals, prefixes, order, not_told)[("a", "b")]
    assert route is not None
    name, handlers, trusted, one = route
    assert name == ("a", "b")
    ids = [registration.id for _, _, registration in handlers]
    assert ids[0] == "exact" and str(ids[1]).startswith("blinker:a.b:") and ids[2] == "prefix"
    assert handlers[0][1] == "cfg"
    assert not trusted  # a plain receiver is never trusted
    assert one is None  # three handlers: called in a loop


def test_building_changes_nothing_and_is_repeatable() -> None:
    signals, prefixes = storage()
    order = order_foreign(signals, {}, itertools.count(1).__next__)
    receivers = dict(signals[("a", "b")].receivers)
    first = build_routes(signals, prefixes, order, not_told)
    second = build_routes(signals, prefixes, order, not_told)
    assert [r.id for _, _, r in first[("a", "b")][1]] == [  # type: ignore[index]
        r.id for _, _, r in second[("a", "b")][1]  # type: ignore[index]
    ]
    assert signals[("a", "b")].receivers == receivers
    assert order_foreign(signals, order, itertools.count(99).__next__) == order  # kept


def test_a_name_only_prefixes_receive_is_built_on_demand() -> None:
    signals, prefixes = storage()
    assert ("a", "c") not in build_routes(signals, prefixes, {}, not_told)
    route = build_route(("a", "c"), prefixes, None, {}, not_told)
    assert route is not None
    _, handlers, trusted, one = route
    assert [r.id for _, _, r in handlers] == ["prefix"] and trusted
    assert one == handlers[0]  # the only handler: called without a loop
    assert type(route) is tuple  # exact: unpacked in one step on every event
    assert build_route(("b",), prefixes, None, {}, not_told) is None


def test_a_muted_signal_routes_to_prefix_handlers_only() -> None:
    signals, prefixes = storage()
    told: list[int] = []
    signal = signals[("a", "b")]
    counter = Counter(told)
    signal.notify(counter.tick)  # held weakly: the registry's lifetime is its own
    with signal.muted():
        assert told == [1]
        route = build_route(("a", "b"), prefixes, signal, {}, not_told)
        assert route is not None and [r.id for _, _, r in route[1]] == ["prefix"]
    assert told == [1, 2]


class Counter:
    def __init__(self, told: list[int]) -> None:
        self.told = told

    def tick(self) -> None:
        self.told.append(len(self.told) + 1)
