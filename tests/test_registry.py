from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import blinker
import pytest

import vsrtel
from vsrtel._names import CACHE_LIMIT
from vsrtel.testing import capture

Call = tuple[Any, ...]


def recorder(calls: list[Call], tag: str = "") -> Any:
    def handler(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append((tag, name, measurements, metadata, config))

    return handler


# -- attach / detach / list -------------------------------------------------------------------


def test_handlers_get_name_measurements_metadata_and_config(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    registry.attach("h", ("a", "b"), recorder(calls), config={"c": 1})
    registry.execute(("a", "b"), {"x": 1}, {"m": 2})
    assert calls == [("", ("a", "b"), {"x": 1}, {"m": 2}, {"c": 1})]


def test_measurements_number_and_metadata_default(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    registry.attach("h", "a", recorder(calls))
    registry.execute("a", 2.5)
    assert calls[0][2:4] == ({"value": 2.5}, {})


def test_bad_measurements_and_metadata_name_the_value(registry: vsrtel.Registry) -> None:
    registry.attach("h", "a", print)
    with pytest.raises(TypeError, match="'nope'"):
        registry.execute("a", "nope")
    with pytest.raises(TypeError, match=r"metadata must be a mapping.*\[1\]"):
        registry.execute("a", 1, [1])


def test_lazy_payloads_are_called_only_when_someone_listens(registry: vsrtel.Registry) -> None:
    made: list[str] = []

    def measurements() -> dict[str, int]:
        made.append("m")
        return {"n": 1}

    def metadata() -> dict[str, int]:
        made.append("md")
        return {"k": 2}

    registry.execute("a", measurements, metadata)
    assert made == []
    calls: list[Call] = []
    registry.attach("h", "a", recorder(calls))
    registry.execute("a", measurements, metadata)
    assert made == ["m", "md"]
    assert calls[0][2:4] == ({"n": 1}, {"k": 2})


def test_handlers_run_in_attach_order_across_exact_and_prefix(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    registry.attach("1", "a.b", recorder(calls, "exact-1"))
    registry.attach_prefix("2", "a", recorder(calls, "prefix-2"))
    registry.attach_many("3", ["x", "a.b"], recorder(calls, "many-3"))
    registry.attach_prefix("4", (), recorder(calls, "all-4"))
    registry.execute("a.b", 1)
    assert [c[0] for c in calls] == ["exact-1", "prefix-2", "many-3", "all-4"]


def test_duplicate_id_and_non_callable_are_rejected(registry: vsrtel.Registry) -> None:
    registry.attach("h", "a", print)
    with pytest.raises(vsrtel.AlreadyAttachedError, match="'h'") as info:
        registry.attach_prefix("h", "b", print)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TypeError, match="must be callable, got 3"):
        registry.attach("other", "a", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one event name"):
        registry.attach_many("other", [], print)
    with pytest.raises(TypeError, match=r"the str 'a.b'"):
        registry.attach_many("other", "a.b", print)
    assert [r.id for r in registry.list_handlers()] == ["h"]


def test_detach_removes_the_handler_from_every_event(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    registry.attach_many("h", ["a", "b.c"], recorder(calls))
    registry.attach_prefix("p", "b", recorder(calls, "p"))
    assert registry.detach("h") is True
    assert registry.detach("h") is False
    assert registry.detach("p") is True
    registry.execute("a", 1)
    registry.execute("b.c", 1)
    assert calls == []
    assert not registry.enabled("a")


def test_list_handlers_matches_prefixes_segment_by_segment(registry: vsrtel.Registry) -> None:
    registry.attach_many("h", ["a.b.c", "a.bc", "x"], print, config=7)
    registry.attach_prefix("p", "a.b", print)
    records = registry.list_handlers()
    assert [(r.id, r.event_name) for r in records] == [
        ("h", ("a", "b", "c")),
        ("h", ("a", "bc")),
        ("h", ("x",)),
        ("p", ("a", "b")),
    ]
    assert records[0].function is print and records[0].config == 7
    under_a_b = [r.event_name for r in registry.list_handlers(("a", "b"))]
    assert under_a_b == [("a", "b", "c"), ("a", "b")]
    assert [r.event_name for r in registry.list_handlers("a")] == [
        ("a", "b", "c"),
        ("a", "bc"),
        ("a", "b"),
    ]
    assert registry.list_handlers("a.b.c.d") == []


def test_prefix_handlers_receive_only_matching_events(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    registry.attach_prefix("p", ("vsr", "protocol"), recorder(calls))
    registry.execute("vsr.protocol.prepare.sent", 1)
    registry.execute("vsr.protocolx", 1)
    registry.execute("vsr", 1)
    registry.execute("other.protocol", 1)
    assert [c[1] for c in calls] == [("vsr", "protocol", "prepare", "sent")]
    assert registry.enabled("vsr.protocol.commit.sent")
    assert not registry.enabled("vsr.state")


def test_a_prefix_attached_after_a_name_was_cached_still_receives_it(
    registry: vsrtel.Registry,
) -> None:
    registry.execute("a.b", 1)  # cached as "nobody listens"
    calls: list[Call] = []
    registry.attach_prefix("p", "a", recorder(calls))
    registry.execute("a.b", 1)
    assert len(calls) == 1


def test_many_distinct_names_keep_the_cache_bounded() -> None:
    registry = vsrtel.Registry()
    calls: list[Call] = []
    registry.attach_prefix("p", "a", recorder(calls))
    for i in range(25_000):
        registry.execute(("a", str(i)), 1)
    assert len(calls) == 25_000
    assert len(registry._routes) <= CACHE_LIMIT


# -- failure isolation ------------------------------------------------------------------------


def boom(*_: Any) -> None:
    raise RuntimeError("boom")


def test_a_failing_handler_is_detached_reported_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Call] = []
    vsrtel.attach("first", "a", recorder(calls, "first"))
    vsrtel.attach_many("bad", ["a", "b"], boom, config="cfg")
    vsrtel.attach("last", "a", recorder(calls, "last"))
    with capture("vsrtel.handler.failure") as failures, caplog.at_level(logging.ERROR, "vsrtel"):
        vsrtel.execute("a", 1)  # returns normally
    assert [c[0] for c in calls] == ["first", "last"]
    assert [r.id for r in vsrtel.list_handlers()] == ["first", "last"]
    [failure] = failures
    assert set(failure.measurements) == {"monotonic_time", "system_time"}
    meta = failure.metadata
    assert meta["event_name"] == ("a",)
    assert meta["handler_id"] == "bad" and meta["handler_config"] == "cfg"
    assert meta["kind"] is RuntimeError and str(meta["reason"]) == "boom"
    assert meta["stacktrace"] and meta["stacktrace"][-1].name == "boom"
    [record] = caplog.records
    assert record.levelno == logging.ERROR and "'bad'" in record.getMessage()
    assert record.getMessage().endswith("RuntimeError: boom")  # the traceback, as text


def test_on_error_keep_reports_but_stays_attached() -> None:
    registry = vsrtel.Registry(on_error="keep")
    registry.attach("bad", "a", boom)
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
        registry.execute("a", 1)
    assert len(failures) == 2
    assert [r.id for r in registry.list_handlers()] == ["bad"]


def test_on_error_raise_re_raises(registry: vsrtel.Registry) -> None:
    registry.attach("bad", "a", boom)
    with pytest.raises(RuntimeError, match="boom"):
        registry.execute("a", 1)
    with pytest.raises(ValueError, match="'sometimes'"):
        vsrtel.Registry(on_error="sometimes")  # type: ignore[arg-type]


def test_a_failing_failure_handler_does_not_loop() -> None:
    registry = vsrtel.Registry(on_error="keep")
    registry.attach("bad", "a", boom)
    registry.attach("bad-reporter", vsrtel.FAILURE_EVENT, boom)
    registry.execute("a", 1)
    assert {r.id for r in registry.list_handlers()} == {"bad", "bad-reporter"}


# -- handlers that loop; detaching at the recursion limit -------------------------------------


def attach_looping(registry: vsrtel.Registry, how: str, calls: list[int]) -> Any:
    """Attach, ``how`` a user may, a handler of event a that emits a; return its blinker key."""

    def loop(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append(1)
        registry.execute("a", 1)

    def receiver(sender: Any, **kwargs: Any) -> None:
        loop(sender, None, None, None)

    if how == "attach":
        registry.attach("loop", "a", loop)
    elif how == "prefix":
        registry.attach_prefix("loop", "a", loop)
    else:
        registry.signal("a").connect(receiver, weak=False)
    return receiver


@pytest.mark.parametrize("how", ["attach", "prefix", "blinker"])
def test_a_handler_emitting_its_own_event_is_detached_once_and_never_called_again(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = vsrtel.Registry()
    good: list[Call] = []
    registry.attach("before", "a", recorder(good, "before"))
    calls: list[int] = []
    attach_looping(registry, how, calls)
    registry.attach("after", "a", recorder(good, "after"))
    with capture("vsrtel.handler.failure", registry=registry) as failures, caplog.at_level(
        logging.ERROR, "vsrtel"
    ):
        registry.execute("a", 1)  # returns normally
        assert calls  # it looped until the recursion limit, then was cut off
        calls.clear()
        good.clear()
        registry.execute("a", 2)
        registry.execute("a", 3)
    assert calls == []
    assert [(c[0], c[2]["value"]) for c in good] == [
        ("before", 2), ("after", 2), ("before", 3), ("after", 3)
    ]
    assert [r.id for r in registry.list_handlers()] == ["before", "after"]
    assert len(registry.signal("a").receivers) == 2  # before and after, nothing of the loop
    [failure] = failures
    assert failure.metadata["kind"] is RecursionError
    handler_id = str(failure.metadata["handler_id"])
    assert handler_id.startswith("blinker:a:") if how == "blinker" else handler_id == "loop"
    assert len(caplog.records) == 1
    assert registry.detach("loop") is False


def test_a_lone_handler_emitting_its_own_event_is_detached_once() -> None:
    # The same loop with nobody else on the event: a route of one handler takes a shorter path.
    registry = vsrtel.Registry()
    calls: list[int] = []
    attach_looping(registry, "attach", calls)
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
        assert calls
        calls.clear()
        registry.execute("a", 2)
    assert calls == []
    assert registry.list_handlers() == [] and not registry.enabled("a")
    assert [(f.metadata["handler_id"], f.metadata["kind"]) for f in failures] == [
        ("loop", RecursionError)
    ]


def test_a_span_handler_that_opens_its_own_span_is_detached_once() -> None:
    registry = vsrtel.Registry()
    calls: list[int] = []

    def loop(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append(1)
        with registry.span("a"):
            pass

    registry.attach("loop", "a.start", loop)
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        with registry.span("a"):
            pass
        calls.clear()
        with registry.span("a"):
            pass
    assert calls == []
    assert registry.list_handlers() == []
    assert not registry.signal("a.start").receivers
    assert [f.metadata["handler_id"] for f in failures] == ["loop"]
    assert vsrtel.current_span() is None


def test_two_handlers_emitting_each_others_events_end_with_the_loop_cut_once() -> None:
    # a -> ping emits b -> pong emits a -> ping ...: pong, whose event re-entered the running
    # ping, is detached and reported once; ping alone no longer loops and stays.
    registry = vsrtel.Registry()
    calls: list[str] = []

    def emitter(tag: str, emits: str) -> Any:
        def handler(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
            calls.append(tag)
            registry.execute(emits, 1)

        return handler

    registry.attach("ping", "a", emitter("ping", "b"))
    registry.attach("pong", "b", emitter("pong", "a"))
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
        calls.clear()
        registry.execute("a", 1)
        registry.execute("b", 1)
    assert calls == ["ping"]
    assert [f.metadata["handler_id"] for f in failures] == ["pong"]
    assert [r.id for r in registry.list_handlers()] == ["ping"]
    assert not registry.signal("b").receivers


def test_a_loop_is_blamed_on_the_handler_that_loops_not_on_those_that_run_at_the_bottom() -> None:
    # "innocent" runs before the loop at every level and needs more stack than the loop does:
    # the recursion limit strikes inside it. Only the loop is cut.
    registry = vsrtel.Registry()

    def nest(frames: int) -> None:
        if frames:
            nest(frames - 1)

    registry.attach("innocent", "a", lambda n, m, d, c: nest(20))
    registry.attach("loop", "a", lambda n, m, d, c: registry.execute("a", {**m}, {**d}))
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
    assert [f.metadata["handler_id"] for f in failures] == ["loop"]
    assert [r.id for r in registry.list_handlers()] == ["innocent"]


def test_a_nested_handler_failing_by_its_own_recursion_is_blamed_not_the_emitter() -> None:
    registry = vsrtel.Registry()

    def recurse(n: int) -> int:
        return recurse(n + 1)

    registry.attach("emitter", "a", lambda n, m, d, c: registry.execute("b", 1))
    registry.attach("deep", "b", lambda n, m, d, c: recurse(0))
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
    assert [f.metadata["handler_id"] for f in failures] == ["deep"]
    assert [r.id for r in registry.list_handlers()] == ["emitter"]


def test_with_on_error_keep_a_loop_is_cut_and_reported_on_each_event() -> None:
    registry = vsrtel.Registry(on_error="keep")
    calls: list[int] = []
    attach_looping(registry, "attach", calls)
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
        registry.execute("a", 1)
    assert [f.metadata["handler_id"] for f in failures] == ["loop", "loop"]
    assert [r.id for r in registry.list_handlers()] == ["loop"]


def frames_on_stack() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def with_headroom(frames: int, call: Callable[[], Any]) -> Any:
    """Call ``call`` with about ``frames`` frames left before the recursion limit."""

    def descend(levels: int) -> Any:
        return descend(levels - 1) if levels > 0 else call()

    return descend(sys.getrecursionlimit() - frames_on_stack() - frames)


def test_detach_is_all_or_nothing_however_deep_in_the_stack() -> None:
    outcomes = set()
    for headroom in range(1, 80):
        registry = vsrtel.Registry()
        calls: list[Call] = []
        registry.attach_many("h", ["a", "b"], recorder(calls))
        try:
            detached = with_headroom(headroom, functools.partial(registry.detach, "h"))
        except RecursionError:
            detached = False
        outcomes.add(detached)
        registry.execute("a", 1)
        registry.execute("b", 1)
        left = 0 if detached else 1  # on both events, or on neither
        assert len(registry.list_handlers()) == len(calls) == 2 * left, headroom
        assert len(registry.signal("a").receivers) == len(registry.signal("b").receivers) == left
        assert registry.detach("h") is not detached  # a refused detach can be done later
    assert outcomes == {True, False}



def called_then_raise(calls: list[int], *_: Any, **__: Any) -> None:
    calls.append(1)
    raise ValueError("bad")


@pytest.mark.parametrize("how", ["attach", "blinker"])
def test_a_handler_failing_at_the_recursion_limit_never_raises_into_the_caller(how: str) -> None:
    outcomes = set()
    for headroom in range(1, 200):
        registry = vsrtel.Registry()
        calls: list[int] = []
        bad = functools.partial(called_then_raise, calls)
        if how == "attach":
            registry.attach("bad", "a", bad)
        else:
            registry.signal("a").connect(bad, weak=False)
        with capture("vsrtel.handler.failure", registry=registry) as failures:
            try:
                with_headroom(headroom, functools.partial(registry.execute, "a", 1))
            except RecursionError:
                assert not calls, headroom  # only when there was no room to call the handler
                continue
            # Contained: detached and reported, or, without the stack to do that, left as it was.
            detached = not registry.enabled("a")
            assert len(failures) == (1 if detached else 0), headroom
            outcomes.add(detached)
    assert outcomes == {True, False}


def test_concurrent_attach_detach_never_loses_events_for_stable_handlers() -> None:
    registry = vsrtel.Registry()
    seen = [0]
    lock = threading.Lock()

    def stable(*_: Any) -> None:
        with lock:
            seen[0] += 1

    registry.attach("stable", "a.b", stable)
    registry.attach_prefix("stable-prefix", "a", stable)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                registry.attach((n, i), "a.b", lambda *_: None)
                registry.attach_prefix((n, i, "p"), "a", lambda *_: None)
                registry.detach((n, i))
                registry.detach((n, i, "p"))
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def emit() -> None:
        try:
            for _ in range(20_000):
                registry.execute(("a", "b"), 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    churners = [threading.Thread(target=churn, args=(n,)) for n in range(2)]
    emitters = [threading.Thread(target=emit) for _ in range(2)]
    for t in churners + emitters:
        t.start()
    for t in emitters:
        t.join()
    stop.set()
    for t in churners:
        t.join()
    assert errors == []
    assert seen[0] == 2 * 20_000 * 2
    assert [r.id for r in registry.list_handlers()] == ["stable", "stable-prefix"]


# -- blinker interop --------------------------------------------------------------------------


def test_signal_is_a_named_blinker_signal_and_plain_receivers_are_called(
    registry: vsrtel.Registry,
) -> None:
    signal = registry.signal("a.b")
    assert isinstance(signal, blinker.NamedSignal) and signal.name == "a.b"
    assert registry.signal(("a", "b")) is signal
    received: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append((sender, kwargs))

    assert not registry.enabled("a.b")
    signal.connect(receiver)
    assert registry.enabled("a.b")
    registry.execute("a.b", {"x": 1}, {"y": 2})
    assert received == [(("a", "b"), {"measurements": {"x": 1}, "metadata": {"y": 2}})]
    signal.disconnect(receiver)
    assert not registry.enabled("a.b")


def test_blinker_receivers_keep_their_place_in_attach_order(registry: vsrtel.Registry) -> None:
    order: list[str] = []
    registry.attach("first", "a", lambda *_: order.append("first"))

    def plain(sender: Any, **kwargs: Any) -> None:
        order.append("blinker")

    registry.signal("a").connect(plain)
    registry.attach_prefix("last", "a", lambda *_: order.append("last"))
    registry.execute("a", 1)
    assert order == ["first", "blinker", "last"]


def test_a_sent_signal_reaches_vsrtel_handlers(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    registry.attach("h", "a", recorder(calls), config=1)
    registry.signal("a").send(("a",), measurements={"x": 1}, metadata={})
    assert calls == [("", ("a",), {"x": 1}, {}, 1)]


def test_a_garbage_collected_weak_receiver_is_skipped(registry: vsrtel.Registry) -> None:
    class Receiver:
        def __call__(self, sender: Any, **kwargs: Any) -> None:
            raise AssertionError("a dead receiver was called")

    receiver = Receiver()
    registry.signal("a").connect(receiver)
    del receiver
    registry.execute("a", 1)


def test_a_failing_blinker_receiver_is_disconnected() -> None:
    registry = vsrtel.Registry()

    def bad(sender: Any, **kwargs: Any) -> None:
        raise KeyError("k")

    registry.signal("a").connect(bad)
    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a", 1)
        registry.execute("a", 1)
    assert len(failures) == 1
    assert str(failures[0].metadata["handler_id"]).startswith("blinker:a:")
    assert not registry.enabled("a")


def test_a_collected_weak_receiver_no_longer_counts_and_costs_no_lazy_payload(
    registry: vsrtel.Registry,
) -> None:
    made: list[str] = []

    def payload() -> dict[str, int]:
        made.append("payload")
        return {"n": 1}

    class Receiver:
        def on_event(self, sender: Any, **kwargs: Any) -> None:
            raise AssertionError("a dead receiver was called")

        def __call__(self, sender: Any, **kwargs: Any) -> None:
            raise AssertionError("a dead receiver was called")

    for connect in ("object", "bound method"):
        receiver = Receiver()
        registry.signal("a").connect(receiver if connect == "object" else receiver.on_event)
        assert registry.enabled("a"), connect
        del receiver  # collected at once on CPython; blinker drops it without telling anyone
        gc.collect()
        assert not registry.enabled("a"), connect
        registry.execute("a", payload)
        assert made == [], connect
    assert not registry.signal("a").receivers


def test_a_receiver_connected_for_a_sender_hears_only_that_sender(
    registry: vsrtel.Registry,
) -> None:
    heard: list[tuple[str, Any]] = []

    def receiver_for(tag: str) -> Any:
        def receiver(sender: Any, **kwargs: Any) -> None:
            heard.append((tag, sender))

        return receiver

    other, own, anyone = receiver_for("other"), receiver_for("own"), receiver_for("any")
    signal = registry.signal("a.b")
    signal.connect(other, sender="someone.else")
    assert not registry.enabled("a.b")  # nobody who would hear execute
    registry.execute("a.b", lambda: pytest.fail("lazy payload computed for nobody"))
    assert heard == []
    signal.connect(own, sender="a.b")  # execute sends as the event's dotted name
    signal.connect(anyone)
    registry.execute("a.b", 1)
    assert sorted(heard) == [("any", ("a", "b")), ("own", ("a", "b"))]
    heard.clear()
    signal.send("someone.else")  # blinker's own send keeps blinker's rule
    assert sorted(heard) == [("any", "someone.else"), ("other", "someone.else")]
    heard.clear()
    signal.disconnect(anyone)
    signal.disconnect(own)
    registry.execute("a.b", 1)
    assert heard == [] and not registry.enabled("a.b")


def test_a_muted_signal_calls_none_of_its_receivers(registry: vsrtel.Registry) -> None:
    calls: list[Call] = []
    heard: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        heard.append(sender)

    signal = registry.signal("a.b")
    signal.connect(receiver)
    registry.attach("exact", "a.b", recorder(calls, "exact"))
    with signal.muted():
        assert not registry.enabled("a.b")
        registry.execute("a.b", lambda: pytest.fail("lazy payload computed for nobody"))
        registry.attach_prefix("prefix", "a", recorder(calls, "prefix"))
        registry.execute("a.b", 1)  # a prefix handler is no receiver of the signal
        assert signal.send(("a", "b")) == []  # as blinker's own send
    assert [c[0] for c in calls] == ["prefix"] and heard == []
    registry.execute("a.b", 2)
    assert [c[0] for c in calls[1:]] == ["exact", "prefix"] and heard == [("a", "b")]


# -- module-level API -------------------------------------------------------------------------


def test_module_functions_act_on_the_default_registry() -> None:
    calls: list[Call] = []
    vsrtel.attach("h", "a", recorder(calls))
    assert vsrtel.default_registry.list_handlers()[0].id == "h"
    assert vsrtel.enabled("a")
    vsrtel.execute("a", 1)
    assert len(calls) == 1
    assert vsrtel.detach("h")


# -- nothing flows back -----------------------------------------------------------------------


def test_a_handler_cannot_change_the_callers_payload_or_what_later_handlers_see() -> None:
    registry = vsrtel.Registry()  # on_error="detach": the mutating handler is contained
    seen: list[Call] = []

    def mutate(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        metadata["user"] = "mallory"

    def mutate_measurements(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        measurements.clear()

    registry.attach("mutate", "a.b", mutate)
    registry.attach("mutate-m", "a.b", mutate_measurements)
    registry.attach("later", "a.b", recorder(seen))
    measurements, metadata = {"count": 1}, {"user": "alice"}
    registry.execute("a.b", measurements, metadata)
    assert measurements == {"count": 1} and metadata == {"user": "alice"}
    assert seen[0][2] == {"count": 1} and seen[0][3] == {"user": "alice"}


def test_trusted_handlers_alone_get_the_callers_dicts() -> None:
    registry = vsrtel.Registry()
    seen: list[Call] = []
    registry.attach("t1", "a.b", recorder(seen), trusted=True)
    registry.attach_many("t2", ["a.b"], recorder(seen), trusted=True)
    measurements, metadata = {"count": 1}, {"user": "alice"}
    registry.execute("a.b", measurements, metadata)
    assert all(call[2] is measurements and call[3] is metadata for call in seen)
    seen.clear()
    registry.attach_prefix("untrusted", "a", recorder(seen))  # one untrusted: views for all
    registry.execute("a.b", measurements, metadata)
    assert len(seen) == 3
    assert all(call[2] is not measurements and call[2] == measurements for call in seen)
    assert all(call[3] is not metadata and call[3] == metadata for call in seen)
    registry.detach("untrusted")
    seen.clear()
    registry.execute("a.b", lambda: measurements, lambda: metadata)  # lazy: views still
    assert len(seen) == 2 and all(call[2] is not measurements for call in seen)


def test_span_handlers_cannot_change_the_span_metadata_either() -> None:
    registry = vsrtel.Registry()
    registry.attach("mutate", "a.start", lambda n, m, d, c: d.update(user="mallory"))
    with registry.span("a", {"user": "alice"}) as span:
        pass
    assert span.metadata["user"] == "alice"


@pytest.mark.parametrize(
    ("measurements", "metadata"),
    [(None, None), ("str", None), ({"count": 1}, "str"), ({"count": 1}, 3), ([1], None)],
)
def test_bad_payload_types_fail_the_same_with_or_without_a_handler(
    measurements: Any, metadata: Any
) -> None:
    quiet, busy = vsrtel.Registry(), vsrtel.Registry()
    busy.attach("h", "x", recorder([]))
    errors = []
    for registry in (quiet, busy):
        with pytest.raises(TypeError) as info:
            registry.execute("x", measurements, metadata)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert repr(measurements) in errors[0] or repr(metadata) in errors[0]


def test_a_lazy_payload_that_raises_is_reported_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = vsrtel.Registry()
    calls: list[Call] = []
    registry.attach("h", "a.b", recorder(calls))

    def broken() -> dict[str, int]:
        raise RuntimeError("lazy boom")

    with capture("vsrtel.handler.failure", registry=registry) as failures:
        registry.execute("a.b", broken)
        registry.execute("a.b", {"count": 1}, lambda: "not a mapping")
        registry.execute("a.b", {"count": 2})
    assert [c[2]["count"] for c in calls] == [2]  # the bad events were dropped, nothing else
    assert [f.metadata["handler_id"] for f in failures] == [None, None]
    assert isinstance(failures[0].metadata["reason"], RuntimeError)
    assert isinstance(failures[1].metadata["reason"], TypeError)
    assert registry.list_handlers("a.b")  # the handler did nothing wrong: still attached
    assert "lazy measurements or metadata of event a.b raised" in caplog.text


def enter_a_span(registry: vsrtel.Registry) -> None:
    with registry.span("a", {"k": "v"}):
        pass


def emit_a_start(registry: vsrtel.Registry) -> None:
    registry.execute("a.start", {"n": 1}, {"k": "v"})


def raising(error: BaseException) -> Any:
    def handler(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        raise error

    return handler


@pytest.mark.parametrize("alone", [True, False], ids=["one handler", "two handlers"])
@pytest.mark.parametrize(
    "error",
    [ZeroDivisionError("x"), SystemExit(3), asyncio.CancelledError(), GeneratorExit()],
    ids=lambda e: type(e).__name__,
)
def test_failures_are_handled_the_same_through_execute_and_span(
    error: BaseException, alone: bool
) -> None:
    # execute and span dispatch through two copies of the same code (execute's is inlined for
    # speed), each with a path of its own for a lone handler: drive all four the same way so
    # that they cannot drift apart. A handler runs inside the caller: its SystemExit or
    # CancelledError is its own bug, contained like any other.
    outcomes = []
    for emit in (emit_a_start, enter_a_span):
        registry = vsrtel.Registry()
        calls: list[Call] = []
        registry.attach("bad", "a.start", raising(error), config={"c": 1})
        if not alone:
            registry.attach("good", "a.start", recorder(calls))
        with capture("vsrtel.handler.failure", registry=registry) as failures:
            emit(registry)
        [failure] = failures
        outcomes.append(
            (
                [r.id for r in registry.list_handlers()],
                [(type(c[2]).__name__, type(c[3]).__name__) for c in calls],
                failure.metadata["handler_id"],
                failure.metadata["handler_config"],
                failure.metadata["kind"],
            )
        )
    others = ([], []) if alone else (["good"], [("mappingproxy", "mappingproxy")])
    assert outcomes[0] == outcomes[1] == (*others, "bad", {"c": 1}, type(error))


@pytest.mark.parametrize("on_error", ["detach", "keep"])
def test_keyboard_interrupt_in_a_handler_is_the_users_and_propagates(on_error: Any) -> None:
    for emit in (emit_a_start, enter_a_span):
        registry = vsrtel.Registry(on_error=on_error)
        registry.attach("interrupted", "a.start", raising(KeyboardInterrupt()))
        with (
            capture("vsrtel.handler.failure", registry=registry) as failures,
            pytest.raises(KeyboardInterrupt),
        ):
            emit(registry)
        assert failures == []
        assert [r.id for r in registry.list_handlers()] == ["interrupted"]
        assert vsrtel.current_span() is None


# -- attaching mistakes -----------------------------------------------------------------------


def test_handler_arity_is_checked_at_attach_time() -> None:
    registry = vsrtel.Registry()

    def three(name: Any, measurements: Any, metadata: Any) -> None: ...

    with pytest.raises(TypeError, match=r"handler 'h3'.*event_name, measurements, metadata"):
        registry.attach("h3", "a.b", three)
    with pytest.raises(TypeError, match="handler 'p'"):
        registry.attach_prefix("p", "a", lambda n, m, d, c, extra: None)
    # Anything that can take the four arguments is fine, and so is what cannot be inspected.
    registry.attach("varargs", "a.b", lambda *args: None)
    registry.attach("defaults", "a.b", lambda n, m, d, c=None, extra=1: None)
    registry.attach("builtin", "a.c", print)
    assert not registry.list_handlers("a.b.c")


def test_attaching_to_a_span_prefix_warns_both_ways() -> None:
    registry = vsrtel.Registry()
    registry.attach("early", "app.request", recorder([]))
    with pytest.warns(UserWarning, match=r"'early'.*'app.request'.*span prefix"):
        registry.span("app.request").start().stop()
    with pytest.warns(UserWarning, match=r"'late'.*'app.job'.*span prefix"):
        with registry.span("app.job"):
            pass
        registry.attach("late", "app.job", recorder([]))


def test_isolated_detaches_everything_for_the_block_and_restores_it() -> None:
    registry = vsrtel.Registry()
    calls: list[Call] = []
    registry.attach("kept", "a.b", recorder(calls))
    with registry.isolated():
        assert registry.list_handlers() == []
        registry.attach("temporary", "a.b", recorder(calls, "temp"))
        registry.execute("a.b", {"n": 1})
    registry.execute("a.b", {"n": 2})
    assert [(c[0], c[2]["n"]) for c in calls] == [("temp", 1), ("", 2)]
    assert [r.id for r in registry.list_handlers()] == ["kept"]


def test_a_handle_detaches_and_stands_for_its_id() -> None:
    registry = vsrtel.Registry()
    registry.attach("h", "a.b", recorder([]))
    handle = vsrtel.Handle("h", registry)
    assert handle == "h" and hash(handle) == hash("h")
    [record] = registry.list_handlers()
    assert record.id == handle  # str.__eq__ defers to the handle
    assert [r.id for r in registry.list_handlers()] == [handle]
    with handle:
        pass
    assert registry.list_handlers() == [] and handle.detach() is False
    registry.attach("h", "a.b", recorder([]))
    assert registry.detach(handle) is True
