from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import vsrtel
from vsrtel.testing import CapturedEvent, capture


class FakeClock:
    """A clock that advances 10 ns per monotonic reading."""

    def __init__(self) -> None:
        self.now = 1_000

    def monotonic_ns(self) -> int:
        self.now += 10
        return self.now

    def time_ns(self) -> int:
        return 5_000_000


def names(events: list[CapturedEvent]) -> list[str]:
    return [".".join(e.name) for e in events]


def test_with_span_emits_start_and_stop() -> None:
    with capture("op") as events, vsrtel.span("op", {"k": 1}) as s:
        assert vsrtel.current_span() is s
        s.metadata["added"] = True
        s.measurements["rows"] = 3
        s.measurements["duration"] = -1  # cannot override
    start, stop = events
    assert names(events) == ["op.start", "op.stop"]
    assert set(start.measurements) == {"monotonic_time", "system_time"}
    assert all(isinstance(v, int) for v in start.measurements.values())
    assert start.metadata == {"k": 1, "telemetry_span_context": s.context}
    assert stop.metadata == {"k": 1, "telemetry_span_context": s.context, "added": True}
    assert stop.measurements["rows"] == 3
    elapsed = stop.measurements["monotonic_time"] - start.measurements["monotonic_time"]
    assert stop.measurements["duration"] == elapsed
    assert stop.measurements["duration"] >= 0
    assert vsrtel.current_span() is None


def test_span_contexts_are_unique_and_a_given_one_is_kept() -> None:
    with capture("op") as events:
        with vsrtel.span("op"):
            pass
        with vsrtel.span("op"):
            pass
        with vsrtel.span("op", {"telemetry_span_context": "mine"}):
            pass
    contexts = [e.metadata["telemetry_span_context"] for e in events]
    assert contexts[0] == contexts[1] != contexts[2] == contexts[3]
    assert contexts[4:] == ["mine", "mine"]


def test_the_caller_metadata_is_not_mutated() -> None:
    metadata = {"k": 1}
    with vsrtel.span("op", metadata) as s:
        s.metadata["x"] = 2
    assert metadata == {"k": 1}


def test_exception_event_and_the_same_exception_re_raised() -> None:
    error = ValueError("bad op")
    with capture("op") as events, pytest.raises(ValueError) as info, vsrtel.span("op", {"k": 1}):
        raise error
    assert info.value is error
    start, exception = events
    assert names(events) == ["op.start", "op.exception"]
    assert set(exception.measurements) == {"duration", "monotonic_time"}
    meta = exception.metadata
    assert meta["k"] == 1
    assert meta["telemetry_span_context"] == start.metadata["telemetry_span_context"]
    assert meta["kind"] is ValueError and meta["reason"] is error
    assert len(meta["stacktrace"]) > 0
    assert "raise error" in meta["stacktrace"][-1].line


def test_base_exceptions_are_reported_too() -> None:
    with capture("op") as events, pytest.raises(KeyboardInterrupt), vsrtel.span("op"):
        raise KeyboardInterrupt
    assert events[-1].metadata["kind"] is KeyboardInterrupt


def test_decorated_functions_get_one_span_per_call() -> None:
    @vsrtel.span("work", {"job": "x"})
    def work(n: int) -> int:
        span = vsrtel.current_span()
        assert span is not None
        span.metadata["n"] = n
        return n * 2

    with capture("work") as events:
        assert work(2) == 4
        assert work(3) == 6
    assert names(events) == ["work.start", "work.stop"] * 2
    assert [e.metadata.get("n") for e in events] == [None, 2, None, 3]
    first, second = events[0].metadata, events[2].metadata
    assert first["telemetry_span_context"] != second["telemetry_span_context"]
    assert work.__name__ == "work"


def test_async_with_and_async_decorator() -> None:
    @vsrtel.span("job")
    async def job() -> str:
        await asyncio.sleep(0)
        return "done"

    async def main() -> str:
        async with vsrtel.span("outer") as outer:
            assert vsrtel.current_span() is outer
            return await job()

    with capture() as events:
        assert asyncio.run(main()) == "done"
    assert names(events) == ["outer.start", "job.start", "job.stop", "outer.stop"]


def test_cancellation_is_an_exception_event() -> None:
    async def main() -> None:
        async def slow() -> None:
            async with vsrtel.span("slow"):
                await asyncio.sleep(10)

        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture("slow") as events:
        asyncio.run(main())
    assert names(events) == ["slow.start", "slow.exception"]
    assert events[1].metadata["kind"] is asyncio.CancelledError


def test_current_span_nests_and_concurrent_tasks_do_not_see_each_other() -> None:
    seen: dict[int, list[Any]] = {}

    async def task(i: int) -> None:
        async with vsrtel.span("outer", {"i": i}) as outer:
            await asyncio.sleep(0)
            async with vsrtel.span("inner") as inner:
                await asyncio.sleep(0)
                seen[i] = [vsrtel.current_span() is inner, outer]
            assert vsrtel.current_span() is outer

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(200)))

    asyncio.run(main())
    assert all(ok and outer.metadata["i"] == i for i, (ok, outer) in seen.items())
    assert len(seen) == 200


def test_current_span_is_per_thread() -> None:
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        with vsrtel.span("t") as s:
            barrier.wait()
            results.append(vsrtel.current_span() is s)
            barrier.wait()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True, True]


def test_started_span_is_never_current_and_stops_from_another_thread() -> None:
    with capture("req") as events:
        s = vsrtel.span("req", {"id": 7}).start()
        assert vsrtel.current_span() is None
        s.metadata["status"] = "ok"
        thread = threading.Thread(target=s.stop)
        thread.start()
        thread.join()
        failed = vsrtel.span("req").start()
        failed.stop(error=TimeoutError("late"))
    assert names(events) == ["req.start", "req.stop", "req.start", "req.exception"]
    assert events[1].metadata["status"] == "ok"
    assert events[3].metadata["kind"] is TimeoutError
    assert events[3].metadata["stacktrace"]  # never raised: the stop call site stands in


def test_start_twice_or_stop_twice_is_an_error() -> None:
    s = vsrtel.span("x").start()
    with pytest.raises(RuntimeError, match="already started"):
        s.start()
    s.stop()
    with pytest.raises(RuntimeError, match="x was not started or already stopped"):
        s.stop()


def test_the_registry_clock_times_spans() -> None:
    registry = vsrtel.Registry(clock=FakeClock())
    with capture(registry=registry) as events, registry.span("op"):
        pass
    start, stop = events
    assert start.measurements == {"monotonic_time": 1_010, "system_time": 5_000_000}
    assert stop.measurements == {"duration": 10, "monotonic_time": 1_020}


def test_a_failing_handler_does_not_break_the_span_body() -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    vsrtel.attach_many("bad", ["op.start", "op.stop"], boom)
    with vsrtel.span("op"):
        ran = True
    assert ran
    assert vsrtel.list_handlers() == []
