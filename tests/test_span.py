from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

import vsrtel
from vsrtel import _span
from vsrtel._names import CACHE_LIMIT
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


def test_a_span_clock_overrides_the_registry_clock() -> None:
    registry = vsrtel.Registry()
    with capture(registry=registry) as events, registry.span("op", {}, FakeClock()):
        pass
    assert events[1].measurements == {"duration": 10, "monotonic_time": 1_020}


def test_a_span_nobody_heard_start_emits_nothing_when_it_ends() -> None:
    # A span nobody listened to at its start is not timed: a handler attached meanwhile gets
    # neither its stop nor its exception, while spans started after the attach are reported.
    registry = vsrtel.Registry()
    unheard = registry.span("op").start()
    with capture(registry=registry) as events:
        unheard.stop()
        with pytest.raises(ValueError), registry.span("op"):
            raise ValueError
    assert [e.name[-1] for e in events] == ["start", "exception"]
    late: list[Any] = []
    with pytest.raises(KeyError), registry.span("quiet") as span:
        assert vsrtel.current_span() is span
        registry.attach("late", "quiet.exception", lambda *event: late.append(event))
        raise KeyError
    assert late == [] and vsrtel.current_span() is None


def test_a_span_heard_only_at_its_end_is_still_timed() -> None:
    registry = vsrtel.Registry(clock=FakeClock())
    with capture("op.stop", registry=registry) as events, registry.span("op"):
        pass
    assert [e.name for e in events] == [("op", "stop")]
    assert events[0].measurements == {"duration": 10, "monotonic_time": 1_020}


def test_a_failing_handler_does_not_break_the_span_body() -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("handler bug")

    vsrtel.attach_many("bad", ["op.start", "op.stop"], boom)
    with vsrtel.span("op"):
        ran = True
    assert ran
    assert vsrtel.list_handlers() == []


# -- the current span is never left stale -----------------------------------------------------


def test_a_start_handler_that_raises_leaves_no_current_span() -> None:
    registry = vsrtel.Registry(on_error="raise")

    def interrupt(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        raise KeyboardInterrupt

    registry.attach("h", "a.start", interrupt)
    with pytest.raises(KeyboardInterrupt), registry.span("a"):
        pass
    assert vsrtel.current_span() is None
    registry.detach("h")
    registry.attach("boom", "b.start", lambda n, m, d, c: 1 / 0)
    outer = registry.span("outer")
    with outer:
        with pytest.raises(ZeroDivisionError), registry.span("b"):
            pass
        assert vsrtel.current_span() is outer


def test_spans_exited_out_of_order_restore_the_live_span() -> None:
    outer = vsrtel.span("outer")
    with outer:
        a, b = vsrtel.span("a"), vsrtel.span("b")
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)  # exited before b: b stays current
        assert vsrtel.current_span() is b
        b.__exit__(None, None, None)  # a is gone: back to the span still running
        assert vsrtel.current_span() is outer
    assert vsrtel.current_span() is None


def test_spans_exited_out_of_order_are_forgotten_once_the_outer_span_exits() -> None:
    outer, a, b = vsrtel.span("outer"), vsrtel.span("a"), vsrtel.span("b")
    with outer:
        a.__enter__()
        b.__enter__()
        context = a.context
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)  # skips a, which ended: outer is current again
    # Nothing runs any more, so a is nobody's ancestor: a span given its context keeps it.
    again = vsrtel.span("again", {"telemetry_span_context": context})
    with again:
        assert again.context is context


def test_generators_consumed_alternately_leave_no_stale_span() -> None:
    @vsrtel.span("gen.one")
    def one() -> Any:
        yield 1
        yield 2

    @vsrtel.span("gen.two")
    def two() -> Any:
        yield 3
        yield 4

    with capture("gen") as events:
        g1, g2 = one(), two()
        assert [next(g1), next(g2), next(g1), next(g2)] == [1, 3, 2, 4]
        assert list(g1) == [] and list(g2) == []
    assert vsrtel.current_span() is None
    assert sorted(names(events)) == sorted(
        ["gen.one.start", "gen.two.start", "gen.one.stop", "gen.two.stop"]
    )


def test_a_child_built_from_its_parents_metadata_gets_its_own_context() -> None:
    with (
        capture("a", "b") as events,
        vsrtel.span("a", {"k": 1}) as a,
        vsrtel.span("b", dict(a.metadata)) as b,
    ):
        assert b.context != a.context
        assert b.metadata["k"] == 1
    contexts = {".".join(e.name): e.metadata["telemetry_span_context"] for e in events}
    assert contexts["a.start"] == contexts["a.stop"] != contexts["b.start"] == contexts["b.stop"]


# -- misuse -----------------------------------------------------------------------------------


def test_stop_inside_with_is_an_error_and_the_span_still_ends_once() -> None:
    with (
        capture("a") as events,
        vsrtel.span("a") as span,
        pytest.raises(RuntimeError, match="entered with `with`"),
    ):
        span.stop()
    assert names(events) == ["a.start", "a.stop"]


def test_stop_error_must_be_an_exception() -> None:
    span = vsrtel.span("a").start()
    with pytest.raises(TypeError, match="error must be an exception, got 'timeout'"):
        span.stop(error="timeout")  # type: ignore[arg-type]
    span.stop(error=TimeoutError("timeout"))


def test_exiting_a_with_span_in_another_thread_is_an_error() -> None:
    span = vsrtel.span("a")
    span.__enter__()
    errors: list[BaseException] = []

    def exit_elsewhere() -> None:
        try:
            span.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=exit_elsewhere)
    thread.start()
    thread.join()
    assert "exited in another thread or asyncio task" in str(errors[0])
    assert vsrtel.current_span() is None  # the span has ended: never current here either


def exit_in_another_thread(span: vsrtel.Span) -> BaseException:
    errors: list[BaseException] = []

    def exit_span() -> None:
        try:
            span.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=exit_span)
    thread.start()
    thread.join()
    [error] = errors
    return error


def test_exiting_again_in_its_own_thread_cleans_up_and_reports_nothing_more() -> None:
    in_main_thread: list[bool] = []
    with capture("a") as events, vsrtel.span("outer") as outer:
        main = threading.current_thread()
        span = vsrtel.span("a")
        span.__enter__()
        span.on_exit(lambda: in_main_thread.append(threading.current_thread() is main))
        assert "another thread" in str(exit_in_another_thread(span))
        span.__exit__(None, None, None)  # in its own thread: no error
        assert vsrtel.current_span() is outer
        with vsrtel.span("next") as after:
            assert vsrtel.current_span() is after
        assert vsrtel.current_span() is outer
    assert names(events) == ["a.start", "a.stop"]
    # The callbacks ran where the span ended, then again where they can restore its context.
    assert in_main_thread == [False, True]
    with pytest.raises(RuntimeError, match="span a was already exited"):
        span.__exit__(None, None, None)


def test_exiting_a_span_twice_is_an_error_that_reports_nothing_more() -> None:
    with capture("a") as events:
        span = vsrtel.span("a")
        with span:
            pass
        with pytest.raises(RuntimeError, match="span a was already exited"):
            span.__exit__(None, None, None)
    assert names(events) == ["a.start", "a.stop"]
    assert vsrtel.current_span() is None


def test_exiting_a_with_span_in_another_task_is_an_error() -> None:
    async def main() -> None:
        span = vsrtel.span("a")
        await span.__aenter__()
        with pytest.raises(RuntimeError, match="another thread or asyncio task"):
            await asyncio.create_task(span.__aexit__(None, None, None))
        assert vsrtel.current_span() is None

    asyncio.run(main())


def test_stop_with_an_error_records_its_own_traceback() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with capture("a") as events:
        span = vsrtel.span("a").start()
        try:
            fail()
        except ValueError as exc:
            error = exc
        span.stop(error=error)
    frames = events[1].metadata["stacktrace"]
    assert frames[-1].name == "fail"
    with capture("b") as events:
        vsrtel.span("b").start().stop(error=KeyError("k"))
    frames = events[1].metadata["stacktrace"]
    assert frames[-1].name == "test_stop_with_an_error_records_its_own_traceback"


def test_on_exit_callbacks_run_however_the_span_ends() -> None:
    ran: list[str] = []
    with vsrtel.span("a") as span:
        span.on_exit(lambda: ran.append("first"))
        span.on_exit(lambda: ran.append("second"))
    started = vsrtel.span("b").start()
    started.on_exit(lambda: ran.append("stopped"))
    started.on_exit(lambda: 1 / 0)  # logged, and the others still run
    started.stop()
    assert ran == ["second", "first", "stopped"]


# -- generators -------------------------------------------------------------------------------


def test_a_decorated_generator_times_its_iteration() -> None:
    clock = FakeClock()
    registry = vsrtel.Registry(clock=clock)

    @registry.span("gen")
    def numbers(n: int) -> Any:
        for i in range(n):
            clock.now += 1_000
            yield i
        return "done"

    with capture("gen", registry=registry) as events:
        iterator = numbers(3)
        assert events == []  # creating the generator is not the operation
        assert list(iterator) == [0, 1, 2]
    assert names(events) == ["gen.start", "gen.stop"]
    assert events[1].measurements["duration"] >= 3_000

    with capture("gen", registry=registry) as events:
        early = numbers(5)
        next(early)
        early.close()  # a consumer that stops early ends the span normally
    assert names(events) == ["gen.start", "gen.stop"]

    def delegate() -> Any:
        return (yield from numbers(1))

    with capture("gen", registry=registry):
        steps = delegate()
        next(steps)
        with pytest.raises(StopIteration) as stop:
            next(steps)
    assert stop.value.value == "done"  # the return value passes through


def test_a_decorated_async_generator_times_its_iteration() -> None:
    @vsrtel.span("agen")
    async def numbers(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield i
        raise ValueError("after the last item")

    async def main() -> list[int]:
        out = []
        with pytest.raises(ValueError):
            async for i in numbers(2):
                assert vsrtel.current_span() is not None
                out.append(i)
        return out

    with capture("agen") as events:
        generator = numbers(2)
        assert events == []
        assert asyncio.run(main()) == [0, 1]
        del generator
    assert names(events) == ["agen.start", "agen.exception"]


def test_a_generator_finished_in_another_thread_ends_normally() -> None:
    @vsrtel.span("gen")
    def numbers() -> Any:
        yield 1
        yield 2

    rest: list[list[int]] = []
    with capture("gen") as events:
        iterator = numbers()
        assert next(iterator) == 1
        thread = threading.Thread(target=lambda: rest.append(list(iterator)))
        thread.start()
        thread.join()
    assert rest == [[2]]  # no error raised into the thread that finished it
    assert names(events) == ["gen.start", "gen.stop"]
    assert vsrtel.current_span() is None


def test_an_async_generator_left_with_break_ends_normally_and_leaves_no_stale_span() -> None:
    loop_errors: list[dict[str, Any]] = []

    @vsrtel.span("agen")
    async def numbers() -> Any:
        for i in range(3):
            yield i

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, error: loop_errors.append(error))
        async with vsrtel.span("outer") as outer:
            async for _ in numbers():
                break
            # The event loop closes the generator later, in a task of its own: wait (bounded).
            for _ in range(100):
                if len(events) == 2:
                    break
                await asyncio.sleep(0)
            assert vsrtel.current_span() is outer

    with capture("agen") as events:
        asyncio.run(main())
        gc.collect()  # reports an exception nobody retrieved from the closing task, if any
    assert names(events) == ["agen.start", "agen.stop"]
    assert loop_errors == []


def test_lazy_span_metadata_is_called_once_and_only_when_needed() -> None:
    registry = vsrtel.Registry()
    calls: list[int] = []

    def metadata() -> dict[str, Any]:
        calls.append(1)
        return {"user": "alice"}

    with registry.span("a", metadata):
        pass
    assert calls == []  # nobody listened: never called
    with capture("a", registry=registry) as events, registry.span("a", metadata) as span:
        pass
    assert calls == [1]
    assert [e.metadata["user"] for e in events] == ["alice", "alice"]
    assert span.metadata["user"] == "alice" and calls == [1]
    quiet = registry.span("b", metadata)
    assert quiet.context is not None and calls == [1, 1]  # read: called


def test_lazy_span_metadata_that_is_no_mapping_is_named() -> None:
    registry = vsrtel.Registry()
    registry.attach("h", "a.start", lambda *_: None)
    with (
        pytest.raises(TypeError, match=r"span a: lazy metadata returned \[1\], not a mapping"),
        registry.span("a", lambda: [1]),  # type: ignore[arg-type, return-value]
    ):
        pass
    assert vsrtel.current_span() is None


def test_many_distinct_span_prefixes_keep_every_cache_bounded() -> None:
    registry = vsrtel.Registry()
    registry.attach_prefix("p", "job", lambda *_: None)
    for i in range(CACHE_LIMIT + 100):
        with registry.span(("job", str(i))):
            pass
    assert len(registry._spans) <= CACHE_LIMIT
    assert len(registry._span_prefixes) <= CACHE_LIMIT
    assert len(_span._event_names) <= CACHE_LIMIT
