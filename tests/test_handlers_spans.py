"""Tests for vsrtel.handlers.spans: vsrtel spans as OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import vsrtel
from vsrtel.export import otel
from vsrtel.handlers import spans
from vsrtel.testing import capture


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


def finished(exporter: InMemorySpanExporter, name: str | None = None) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if name is None or s.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = finished(exporter, name)
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_span_becomes_an_otel_span_with_times_and_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app.request"], tracer_provider=provider)
    with capture("app.request") as events, vsrtel.span("app.request", {"path": "/x"}) as s:
        s.metadata["status"] = 200
        s.measurements["bytes"] = 512
    start, stop = events
    span = only(exporter, "app.request")
    assert span.start_time == start.measurements["system_time"]
    assert span.end_time is not None
    assert span.end_time - span.start_time == stop.measurements["duration"]
    assert dict(span.attributes or {}) == {"path": "/x", "status": 200, "bytes": 512}
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


def test_span_is_current_for_its_body_and_nests(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app.outer", "app.inner"], tracer_provider=provider)
    tracer = provider.get_tracer("user-code")
    with vsrtel.span("app.outer"):
        assert trace.get_current_span().is_recording()
        with vsrtel.span("app.inner"), tracer.start_as_current_span("raw-otel"):
            pass
    assert trace.get_current_span() is trace.INVALID_SPAN
    outer, inner, raw = (only(exporter, n) for n in ("app.outer", "app.inner", "raw-otel"))
    assert parent_id(inner) == span_id(outer)
    assert parent_id(raw) == span_id(inner)
    assert outer.context is not None and inner.context is not None
    assert inner.context.trace_id == outer.context.trace_id


def test_nesting_follows_threads(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    spans.attach_tracer(["job", "job.step"], tracer_provider=provider)
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        with vsrtel.span("job", {"worker": i}):
            barrier.wait()  # every outer span is open at once
            for _ in range(3):
                with vsrtel.span("job.step", {"worker": i}):
                    pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outers = {s.attributes["worker"]: span_id(s) for s in finished(exporter, "job") if s.attributes}
    steps = finished(exporter, "job.step")
    assert len(outers) == 8 and len(steps) == 24
    for step in steps:
        assert step.attributes is not None
        assert parent_id(step) == outers[step.attributes["worker"]]


def test_nesting_follows_1000_concurrent_asyncio_tasks(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["task", "task.child"], tracer_provider=provider)

    async def task(i: int) -> None:
        async with vsrtel.span("task", {"task": i}):
            await asyncio.sleep(0)
            async with vsrtel.span("task.child", {"task": i}):
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            async with vsrtel.span("task.child", {"task": i}):
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(1000)))

    asyncio.run(main())
    tasks = {s.attributes["task"]: s for s in finished(exporter, "task") if s.attributes}
    children = finished(exporter, "task.child")
    assert len(tasks) == 1000 and len(children) == 2000
    for c in children:
        assert c.attributes is not None
        parent = tasks[c.attributes["task"]]
        assert parent_id(c) == span_id(parent)
        assert c.context is not None and parent.context is not None
        assert c.context.trace_id == parent.context.trace_id
    assert len({s.context.trace_id for s in tasks.values() if s.context}) == 1000


def test_exception_sets_error_status_and_records_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app.request"], tracer_provider=provider)
    with pytest.raises(ValueError, match="boom"), vsrtel.span("app.request", {"kind": "read"}):
        raise ValueError("boom")
    span = only(exporter, "app.request")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "boom"
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom"
    assert "Traceback" in str(event.attributes["exception.stacktrace"])
    # The start metadata's own "kind" stays; the exception's kind/reason/stacktrace are events.
    assert dict(span.attributes or {}) == {"kind": "read"}
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_manual_span_is_never_current_and_can_stop_elsewhere(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["rpc", "local"], tracer_provider=provider)
    with vsrtel.span("local"):
        manual = vsrtel.span("rpc", {"id": 1}).start()
        # Still the with-span: the manual span did not become current.
        assert getattr(trace.get_current_span(), "name", None) == "local"
        with vsrtel.span("local"):
            pass
    assert otel_context.get_current() == {}
    stopper = threading.Thread(target=manual.stop, kwargs={"error": TimeoutError("late")})
    stopper.start()
    stopper.join()
    outer, inner = sorted(finished(exporter, "local"), key=lambda s: s.start_time or 0)
    rpc = only(exporter, "rpc")
    assert parent_id(rpc) == span_id(outer)
    assert parent_id(inner) == span_id(outer)
    assert rpc.status.status_code is StatusCode.ERROR
    assert rpc.status.description == "late"


def test_manual_span_started_outside_leaves_no_context_behind(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["rpc", "local"], tracer_provider=provider)
    manual = vsrtel.span("rpc").start()
    assert otel_context.get_current() == {}
    with vsrtel.span("local"):
        pass
    manual.stop()
    assert parent_id(only(exporter, "local")) is None
    assert parent_id(only(exporter, "rpc")) is None


def test_stop_or_exception_for_unknown_context_is_ignored(
    provider: TracerProvider, exporter: InMemorySpanExporter, registry: vsrtel.Registry
) -> None:
    spans.attach_tracer(["app.request"], tracer_provider=provider, registry=registry)
    # The registry re-raises handler errors: any crash here fails the test.
    registry.execute("app.request.stop", {"duration": 5}, {"telemetry_span_context": 12345})
    registry.execute("app.request.exception", {"duration": 5}, {"telemetry_span_context": [1]})
    registry.execute("app.request.stop", {"duration": 5})  # none was started without one
    assert finished(exporter) == []
    assert no_current_otel_span()


def test_plain_events_become_span_events_on_the_current_traced_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app.request"], tracer_provider=provider)
    vsrtel.execute("app.cache.miss", {"count": 1})  # no traced span: nothing, no error
    with vsrtel.span("app.request"):
        with provider.get_tracer("user").start_as_current_span("raw"):
            vsrtel.execute("app.cache.hit", {"count": 1}, {"key": "user:1", "token": "t0p"})
        with vsrtel.span("untraced.op"):
            pass
    span = only(exporter, "app.request")
    names = [event.name for event in span.events]
    assert names == ["app.cache.hit", "untraced.op.start", "untraced.op.stop"]
    assert dict(span.events[0].attributes or {}) == {
        "count": 1,
        "key": "user:1",
        "token": "[REDACTED]",
    }
    assert only(exporter, "raw").events == ()


def test_span_events_can_be_turned_off(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handler_id = spans.attach_tracer(["app.request"], tracer_provider=provider, span_events=False)
    assert [r.event_name for r in vsrtel.list_handlers() if r.id == handler_id] == [
        ("app", "request")
    ]
    with vsrtel.span("app.request"):
        vsrtel.execute("app.cache.hit", {"count": 1})
    assert only(exporter, "app.request").events == ()


class Color(enum.Enum):
    RED = 1


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_attribute_values_are_converted_or_dropped(
    provider: TracerProvider, exporter: InMemorySpanExporter, registry: vsrtel.Registry
) -> None:
    spans.attach_tracer(["app.request"], tracer_provider=provider, registry=registry)
    metadata: dict[str, Any] = {
        "none": None,
        "obj": Color,
        "enum": Color.RED,
        "big": 2**70,
        "nested": {"a": 1, "b": {"c": "d"}, "none": None},
        "mixed": [1, "two", None],
        "ints": (1, 2, 3),
        "bad": Unprintable(),
        "peer": ("10.0.0.1", 4000),
        3: "non-str key",
    }
    with registry.span("app.request", metadata):
        pass
    attributes = dict(only(exporter, "app.request").attributes or {})
    assert attributes == {
        "obj": "Color",
        "enum": "RED",
        "big": str(2**70),
        "nested.a": 1,
        "nested.b.c": "d",
        "mixed": ("1", "two"),
        "ints": (1, 2, 3),
        "peer": ("10.0.0.1", "4000"),
    }


def test_secret_keys_never_reach_a_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app.login"], tracer_provider=provider)
    with vsrtel.span(
        "app.login",
        {"user": "ann", "Password": "hunter2", "login": {"api_key": "k", "scheme": "basic"}},
    ) as s:
        s.metadata["session_token"] = "abc"
        vsrtel.execute("app.login.check", {"n": 1}, {"cookie": "c", "ok": True})
    span = only(exporter, "app.login")
    assert dict(span.attributes or {}) == {
        "user": "ann",
        "Password": "[REDACTED]",
        "login.api_key": "[REDACTED]",
        "login.scheme": "basic",
        "session_token": "[REDACTED]",
    }
    assert dict(span.events[0].attributes or {}) == {"n": 1, "cookie": "[REDACTED]", "ok": True}


def test_attributes_are_redacted_and_converted_in_one_pass_at_start_stop_and_events(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # Each kind of value, at the top and nested, through the three sets of keys the handler
    # converts: start metadata, what changed at stop (an exception's too), measurements.
    spans.attach_tracer(
        ["app.job"], tracer_provider=provider, attributes={"url", "nested", "pairs", "reason"}
    )
    metadata: dict[str, Any] = {
        "url": "https://ann:pw@example.com/?q=1",
        "nested": {"token": 1, "dsn": {"x": 1}, "note": "password=p", "n": 2**70},
        "pairs": [("authorization", "Bearer abc"), ("accept", "*/*")],
        "dropped": "not in the allow-list",
    }
    with vsrtel.span("app.job", metadata) as s:
        s.metadata["url"] = "https://example.com/?access_token=t"
        s.measurements.update({"password": 1, "rows": {"read": 3, "api_key": "k"}})
        vsrtel.execute("app.job.step", {"n": 0.5}, {"url": "/?token=t", "other": 1, 3: "no"})
    with pytest.raises(ValueError), vsrtel.span("app.job", {"url": "u"}) as s:
        s.metadata.update({"url": "https://example.com/?password=p", "dropped": 1})
        raise ValueError("token=abc")
    ok, failed = finished(exporter, "app.job")
    assert dict(ok.attributes or {}) == {
        "url": "https://example.com/?access_token=[REDACTED]",
        "nested.token": "[REDACTED]",
        "nested.dsn": "[REDACTED]",
        "nested.note": "password=[REDACTED]",
        "nested.n": str(2**70),
        "pairs": ("('authorization', '[REDACTED]')", "('accept', '*/*')"),
        "password": "[REDACTED]",  # measurements have no allow-list
        "rows.read": 3,
        "rows.api_key": "[REDACTED]",
    }
    [step] = ok.events
    assert dict(step.attributes or {}) == {"n": 0.5, "url": "/?token=[REDACTED]"}
    # The exception's own keys ("reason" too, though allowed) are not attributes.
    assert dict(failed.attributes or {}) == {"url": "https://example.com/?password=[REDACTED]"}
    [exception] = failed.events
    assert exception.attributes is not None
    assert exception.attributes["exception.message"] == "token=[REDACTED]"


def test_importing_the_spans_handler_leaves_the_propagators_unloaded() -> None:
    # opentelemetry.propagate (and the baggage and W3C modules under it) are most of the
    # handler's import time; only inject, extract and a "trace_parent" need them.
    code = (
        "import sys, vsrtel, vsrtel.handlers.spans as spans\n"
        "assert 'opentelemetry.propagate' not in sys.modules, 'loaded at import'\n"
        "carrier = spans.inject({})\n"
        "assert 'opentelemetry.propagate' in sys.modules\n"
        "with vsrtel.span('app.x', {'trace_parent': spans.extract(carrier)}):\n"
        "    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_custom_redact_set(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    spans.attach_tracer(["app.x"], tracer_provider=provider, redact={"ssn"})
    with vsrtel.span("app.x", {"ssn": "1", "password": "p"}):
        pass
    assert dict(only(exporter, "app.x").attributes or {}) == {"ssn": "[REDACTED]", "password": "p"}


def test_span_name_and_attribute_allow_list(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(
        ["db.query"],
        tracer_provider=provider,
        span_name=lambda prefix, metadata: f"{metadata['table']} {prefix[-1]}",
        attributes={"table"},
    )
    spans.attach_tracer(["db.fixed"], tracer_provider=provider, span_name="fixed")
    with vsrtel.span("db.query", {"table": "users", "sql": "select 1"}):
        pass
    with vsrtel.span("db.fixed"):
        pass
    assert dict(only(exporter, "users query").attributes or {}) == {"table": "users"}
    assert only(exporter, "fixed")


def test_remote_parent_via_inject_and_extract(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["net.send", "net.receive"], tracer_provider=provider)
    with vsrtel.span("net.send"):
        headers = spans.inject({})
    assert set(headers) >= {"traceparent"}
    # ... the message crosses to another node, which continues the trace:
    with vsrtel.span("net.receive", {"trace_parent": spans.extract(headers)}):
        pass
    with vsrtel.span("net.receive", {"trace_parent": headers["traceparent"]}):
        pass
    send = only(exporter, "net.send")
    receives = finished(exporter, "net.receive")
    assert len(receives) == 2
    for receive in receives:
        assert receive.parent is not None and receive.parent.is_remote
        assert parent_id(receive) == span_id(send)
        assert receive.context is not None and send.context is not None
        assert receive.context.trace_id == send.context.trace_id
        assert "trace_parent" not in (receive.attributes or {})


def test_inject_for_a_manual_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["net.request"], tracer_provider=provider)
    request = vsrtel.span("net.request").start()
    assert spans.inject({}) == {}  # nothing is current
    headers = spans.inject({}, span=request)
    request.stop()
    context = trace.get_current_span(spans.extract(headers)).get_span_context()
    assert context.span_id == span_id(only(exporter, "net.request"))


def test_deterministic_clock_sets_span_times(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    class Clock:
        now = 1_000

        def monotonic_ns(self) -> int:
            self.now += 250
            return self.now

        def time_ns(self) -> int:
            return 1_700_000_000_000_000_000

    registry = vsrtel.Registry(clock=Clock())
    spans.attach_tracer(["sim.step"], tracer_provider=provider, registry=registry)
    with registry.span("sim.step"):
        pass
    span = only(exporter, "sim.step")
    assert span.start_time == 1_700_000_000_000_000_000
    assert span.end_time == span.start_time + 250


def test_detach_stops_tracing(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    handler_id = spans.attach_tracer(["a"], tracer_provider=provider, handler_id="tracer")
    assert handler_id == "tracer"
    with pytest.raises(vsrtel.AlreadyAttachedError):
        spans.attach_tracer(["b"], tracer_provider=provider, handler_id="tracer")
    assert vsrtel.detach(handler_id)
    with vsrtel.span("a"):
        pass
    assert finished(exporter) == []


def test_falls_back_to_the_global_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    spans.attach_tracer("app.global")
    with vsrtel.span("app.global"):
        pass
    assert only(exporter, "app.global")


@pytest.mark.parametrize(
    ("prefixes", "error"),
    [([], ValueError), (["a..b"], ValueError), ([("a", 1)], TypeError), ([""], ValueError)],
)
def test_bad_prefixes(prefixes: Any, error: type[Exception], provider: TracerProvider) -> None:
    with pytest.raises(error):
        spans.attach_tracer(prefixes, tracer_provider=provider)


def test_bad_options(provider: TracerProvider) -> None:
    with pytest.raises(TypeError, match="span_name"):
        spans.attach_tracer(["a"], tracer_provider=provider, span_name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attributes"):
        spans.attach_tracer(["a"], tracer_provider=provider, attributes="table")
    with pytest.raises(TypeError, match="redact"):
        spans.attach_tracer(["a"], tracer_provider=provider, redact="password")
    assert vsrtel.list_handlers() == []


def test_unreachable_otlp_endpoint_does_not_reach_the_instrumented_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    export_threads: list[threading.Thread] = []
    original = OTLPSpanExporter.export

    def recording_export(self: OTLPSpanExporter, batch: Any) -> Any:
        export_threads.append(threading.current_thread())
        return original(self, batch)

    monkeypatch.setattr(OTLPSpanExporter, "export", recording_export)
    setup = otel.configure("unreachable")
    spans.attach_tracer(["app.request"], tracer_provider=setup.tracer_provider)
    for i in range(600):  # more than one export batch (512)
        with vsrtel.span("app.request", {"i": i}):
            vsrtel.execute("app.work", {"n": i})
    setup.shutdown(timeout_millis=5000)
    assert export_threads
    assert threading.main_thread() not in export_threads


# -- the tracer survives, and never leaves a stale OpenTelemetry context ----------------------


def no_current_otel_span() -> bool:
    return not trace.get_current_span().get_span_context().is_valid


def test_a_span_name_function_that_raises_skips_that_span_only(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def name(prefix: tuple[str, ...], metadata: Any) -> str:
        return str(metadata["route"])  # KeyError when the route is missing

    handle = spans.attach_tracer(["app"], tracer_provider=provider, span_name=name)
    with vsrtel.span("app.request"):
        pass
    with vsrtel.span("app.request", {"route": "/users"}):
        pass
    assert [s.name for s in finished(exporter)] == ["/users"]
    assert handle.skipped == 1
    assert [r.id for r in vsrtel.list_handlers()] == [handle]
    assert "skipped event app.request.start" in caplog.text
    assert no_current_otel_span()


def test_an_unhashable_span_context_is_skipped(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handle = spans.attach_tracer(["app"], tracer_provider=provider)
    span = vsrtel.span("app.job", {"telemetry_span_context": ["not", "hashable"]}).start()
    span.stop()
    with vsrtel.span("app.job"):
        pass
    assert len(finished(exporter, "app.job")) == 1
    assert handle.skipped == 1  # the start; the stop finds nothing open


def test_prefixes_match_every_span_under_them(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["shop"], tracer_provider=provider, span_events=False)
    with vsrtel.span("shop.job"), vsrtel.span("shop.db.query"):
        pass
    with vsrtel.span("shopping.cart"):
        pass
    assert sorted(s.name for s in finished(exporter)) == ["shop.db.query", "shop.job"]


def test_detaching_the_tracer_while_a_span_is_open_restores_the_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handler_id = spans.attach_tracer(["app"], tracer_provider=provider)
    with vsrtel.span("app.request"):
        vsrtel.detach(handler_id)
    assert no_current_otel_span()
    [span] = finished(exporter, "app.request")  # ended, not left open forever
    assert (span.attributes or {})["vsrtel.stop_missed"] is True
    spans.attach_tracer(["app"], tracer_provider=provider)
    with vsrtel.span("app.next"):
        pass
    assert parent_id(only(exporter, "app.next")) is None


def test_a_child_from_its_parents_metadata_is_its_own_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    with vsrtel.span("app.a", {"k": 1}) as a, vsrtel.span("app.b", dict(a.metadata)):
        pass
    assert no_current_otel_span()
    assert parent_id(only(exporter, "app.b")) == span_id(only(exporter, "app.a"))
    # A context reused deliberately by a sibling `.start()` span still pairs up, innermost first.
    first = vsrtel.span("app.c", {"telemetry_span_context": "shared"}).start()
    second = vsrtel.span("app.d", {"telemetry_span_context": "shared"}).start()
    second.stop()
    first.stop()
    assert len(finished(exporter, "app.c")) == len(finished(exporter, "app.d")) == 1


def test_a_start_handler_that_raises_leaves_no_otel_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = vsrtel.Registry(on_error="raise")
    spans.attach_tracer(["app"], tracer_provider=provider, registry=registry)

    def interrupt(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        raise KeyboardInterrupt

    registry.attach("interrupt", "app.request.start", interrupt)
    with pytest.raises(KeyboardInterrupt), registry.span("app.request"):
        pass
    assert no_current_otel_span()
    assert len(finished(exporter, "app.request")) == 1


def test_spans_exited_out_of_order_leave_no_stale_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["gen"], tracer_provider=provider)

    @vsrtel.span("gen.one")
    def one() -> Any:
        yield 1
        yield 2

    @vsrtel.span("gen.two")
    def two() -> Any:
        yield 3
        yield 4

    g1, g2 = one(), two()
    next(g1), next(g2), next(g1), next(g2)
    list(g1), list(g2)
    assert no_current_otel_span()
    with vsrtel.span("gen.after"):
        pass
    assert parent_id(only(exporter, "gen.after")) is None
    assert len(finished(exporter)) == 3


def test_an_escaping_exception_is_recorded_as_escaped(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    with pytest.raises(ValueError), vsrtel.span("app.request"):
        raise ValueError("boom")
    [event] = only(exporter, "app.request").events
    assert (event.attributes or {})["exception.escaped"] == "True"


def test_an_async_generator_left_with_break_leaves_no_stale_context(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    loop_errors: list[dict[str, Any]] = []

    @vsrtel.span("app.items")
    async def items() -> Any:
        for i in range(3):
            yield i

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, error: loop_errors.append(error))
        async with vsrtel.span("app.request"):
            async for _ in items():
                break
            # The event loop closes the generator later, in a task of its own: wait (bounded).
            for _ in range(100):
                if finished(exporter, "app.items"):
                    break
                await asyncio.sleep(0)
            async with vsrtel.span("app.next"):
                pass
        async with vsrtel.span("app.later"):
            pass

    asyncio.run(main())
    gc.collect()  # reports an exception nobody retrieved from the closing task, if any
    request = only(exporter, "app.request")
    assert parent_id(only(exporter, "app.items")) == span_id(request)
    assert only(exporter, "app.items").status.status_code is StatusCode.UNSET  # a normal end
    assert parent_id(only(exporter, "app.next")) == span_id(request)
    assert parent_id(only(exporter, "app.later")) is None
    assert loop_errors == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


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


def test_a_span_exited_in_another_thread_leaves_no_stale_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    with vsrtel.span("app.outer"):
        job = vsrtel.span("app.job")
        job.__enter__()
        error = exit_in_another_thread(job)
        vsrtel.execute("app.note", {"count": 1})  # a span event, on the span still running
        with vsrtel.span("app.next"):
            pass
    assert "exited in another thread" in str(error)
    outer = only(exporter, "app.outer")
    assert [e.name for e in outer.events] == ["app.note"]
    assert only(exporter, "app.job").events == ()
    assert parent_id(only(exporter, "app.job")) == span_id(outer)
    assert parent_id(only(exporter, "app.next")) == span_id(outer)  # not the ended app.job
    with vsrtel.span("app.later"):
        pass
    assert parent_id(only(exporter, "app.later")) is None


def test_exiting_again_in_its_own_thread_restores_the_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    with capture("app.job") as events, vsrtel.span("app.outer") as outer:
        job = vsrtel.span("app.job")
        job.__enter__()
        exit_in_another_thread(job)
        job.__exit__(None, None, None)  # in its own thread: cleans up, reports nothing more
        assert vsrtel.current_span() is outer
        current = trace.get_current_span().get_span_context().span_id
        with vsrtel.span("app.next"):
            pass
    assert no_current_otel_span()
    assert current == span_id(only(exporter, "app.outer"))
    assert parent_id(only(exporter, "app.next")) == span_id(only(exporter, "app.outer"))
    assert [".".join(e.name) for e in events] == ["app.job.start", "app.job.stop"]
    [job_span] = finished(exporter, "app.job")  # ended once, by its stop event
    assert "vsrtel.stop_missed" not in (job_span.attributes or {})


def test_a_task_that_outlives_its_span_joins_what_still_runs(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)

    async def background(released: asyncio.Event) -> None:
        await released.wait()
        assert vsrtel.current_span() is outer  # the request has ended
        for _ in range(2):
            async with vsrtel.span("app.email"):
                pass

    async def main() -> None:
        nonlocal outer
        async with vsrtel.span("app.outer") as outer:
            released = asyncio.Event()
            async with vsrtel.span("app.request"):
                task = asyncio.create_task(background(released))
            released.set()
            await task

    outer: vsrtel.Span | None = None
    asyncio.run(main())
    # As vsrtel.current_span() in the task: both spans join the innermost span still running.
    assert [parent_id(s) for s in finished(exporter, "app.email")] == 2 * [
        span_id(only(exporter, "app.outer"))
    ]


# Spans emitted by hand: events without a telemetry_span_context, matched per thread or task.


def current_otel_name() -> str | None:
    span = trace.get_current_span()
    return getattr(span, "name", None) if span.get_span_context().is_valid else None


def test_a_span_emitted_by_hand_is_traced_under_the_current_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    with vsrtel.span("app.request"):
        vsrtel.execute("app.db.start", {"system_time": 1_000, "monotonic_time": 5}, {"table": "t"})
        assert current_otel_name() == "app.db"
        vsrtel.execute("app.db.row", {"count": 1})  # a span event on the span made by hand
        vsrtel.execute("app.db.fetch.start", {}, {})
        vsrtel.execute("app.db.fetch.stop", {}, {})
        with vsrtel.span("app.cache"):
            pass
        vsrtel.execute("app.db.stop", {"duration": 250, "rows": 3}, {"table": "t", "ok": True})
        assert current_otel_name() == "app.request"
    assert no_current_otel_span()
    request, db, fetch, cache = (
        only(exporter, n) for n in ("app.request", "app.db", "app.db.fetch", "app.cache")
    )
    assert parent_id(db) == span_id(request)
    assert parent_id(fetch) == span_id(db) and parent_id(cache) == span_id(db)
    assert (db.start_time, db.end_time) == (1_000, 1_250)
    assert dict(db.attributes or {}) == {"table": "t", "ok": True, "rows": 3}
    assert [e.name for e in db.events] == ["app.db.row"]


def test_an_exception_emitted_by_hand_ends_its_span_with_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    vsrtel.execute("app.job.start", {}, {})
    vsrtel.execute("app.job.exception", {}, {"kind": "error", "reason": ValueError("bad row")})
    job = only(exporter, "app.job")
    assert job.status.status_code is StatusCode.ERROR
    assert [e.name for e in job.events] == ["exception"]
    assert no_current_otel_span()


def test_spans_emitted_by_hand_are_matched_per_thread(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    started, second_done = threading.Barrier(2), threading.Event()
    leftovers: list[str | None] = []

    def work(who: int) -> None:
        vsrtel.execute("app.job.start", {}, {"who": who})
        started.wait()  # both open at once
        if who == 1:
            second_done.wait()  # thread 2 stops its span first: it must not take this one
        vsrtel.execute("app.job.stop", {}, {"who": who, "done_by": who})
        if who == 2:
            second_done.set()
        leftovers.append(current_otel_name())

    threads = [threading.Thread(target=work, args=(who,)) for who in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    vsrtel.execute("app.job.stop", {}, {})  # none open in this thread: ignored
    jobs = finished(exporter, "app.job")
    assert [dict(j.attributes or {}) for j in jobs] == [
        {"who": 2, "done_by": 2}, {"who": 1, "done_by": 1}
    ]
    assert all(j.parent is None for j in jobs)
    assert leftovers == [None, None] and no_current_otel_span()


def test_spans_emitted_by_hand_are_matched_per_asyncio_task(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)

    async def job(i: int) -> str | None:
        vsrtel.execute("app.job.start", {}, {"task": i})
        await asyncio.sleep(0)  # every job is open at once
        vsrtel.execute("app.job.step", {"task": i})
        child = asyncio.create_task(step(i))  # inherits the open span as its parent
        await child
        vsrtel.execute("app.job.stop", {}, {"task": i})
        return current_otel_name()

    async def step(i: int) -> None:
        vsrtel.execute("app.job.part.start", {}, {"task": i})
        await asyncio.sleep(0)
        vsrtel.execute("app.job.part.stop", {}, {})

    async def main() -> list[str | None]:
        async with vsrtel.span("app.batch"):
            return await asyncio.gather(*(job(i) for i in range(50)))

    assert asyncio.run(main()) == ["app.batch"] * 50
    batch = only(exporter, "app.batch")
    jobs = {j.attributes["task"]: j for j in finished(exporter, "app.job") if j.attributes}
    parts = finished(exporter, "app.job.part")
    assert len(jobs) == 50 and len(parts) == 50
    for i, j in jobs.items():
        assert parent_id(j) == span_id(batch)
        assert [(e.name, dict(e.attributes or {})) for e in j.events] == [
            ("app.job.step", {"task": i})
        ]
    for part in parts:
        assert part.attributes is not None
        assert parent_id(part) == span_id(jobs[part.attributes["task"]])
    assert no_current_otel_span()


def test_a_stop_emitted_by_hand_ends_the_innermost_span_of_its_name(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider, span_events=False)
    vsrtel.execute("app.a.start", {}, {"n": 1})
    vsrtel.execute("app.a.start", {}, {"n": 2})  # the same name, nested
    vsrtel.execute("app.b.start", {}, {})
    vsrtel.execute("app.a.stop", {}, {})  # out of order: app.b keeps running
    assert [dict(s.attributes or {}) for s in finished(exporter)] == [{"n": 2}]
    assert current_otel_name() == "app.b"
    vsrtel.execute("app.b.stop", {}, {})
    assert current_otel_name() == "app.a"  # the outer app.a: the ended inner one is skipped
    vsrtel.execute("app.a.stop", {}, {})
    assert no_current_otel_span()
    a1, a2 = (s for s in finished(exporter, "app.a"))
    assert dict(a1.attributes or {}) == {"n": 2} and dict(a2.attributes or {}) == {"n": 1}
    assert parent_id(only(exporter, "app.b")) == span_id(a1)
    vsrtel.execute("app.a.stop", {}, {})  # nothing open any more: ignored
    with vsrtel.span("app.next"):
        pass
    assert only(exporter, "app.next").parent is None  # never a child of an ended span


def test_a_span_emitted_by_hand_and_a_with_span_may_end_out_of_order(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    with vsrtel.span("app.outer"):
        vsrtel.execute("app.manual.start", {}, {})
        with vsrtel.span("app.inner"):
            vsrtel.execute("app.manual.stop", {}, {})  # ends before the span inside it
            assert current_otel_name() == "app.inner"
        assert current_otel_name() == "app.outer"
        vsrtel.execute("app.later.start", {}, {})
        with vsrtel.span("app.scoped"):
            pass
        assert current_otel_name() == "app.later"  # still open: outlives the with span
        vsrtel.execute("app.later.stop", {}, {})
        assert current_otel_name() == "app.outer"
    assert no_current_otel_span()
    outer, manual, inner, later, scoped = (
        only(exporter, n)
        for n in ("app.outer", "app.manual", "app.inner", "app.later", "app.scoped")
    )
    assert parent_id(manual) == span_id(outer) and parent_id(inner) == span_id(manual)
    assert parent_id(later) == span_id(outer) and parent_id(scoped) == span_id(later)
    with vsrtel.span("app.w"):
        vsrtel.execute("app.h.start", {}, {})
    assert current_otel_name() == "app.h"  # still running: it outlives the with span
    vsrtel.execute("app.h.stop", {}, {})
    assert no_current_otel_span()  # not app.w, which ended first
    assert parent_id(only(exporter, "app.h")) == span_id(only(exporter, "app.w"))


def test_spans_emitted_by_hand_whose_stop_never_comes_are_bounded(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)

    def leak() -> None:
        for i in range(250):
            vsrtel.execute("app.leak.start", {}, {"i": i})

    thread = threading.Thread(target=leak)
    thread.start()
    thread.join()
    ended = finished(exporter, "app.leak")
    # The oldest ones are ended and exported, marked; at most 100 stay open in that thread.
    assert [s.attributes["i"] for s in ended if s.attributes] == list(range(150))
    assert all(s.attributes and s.attributes["vsrtel.stop_missed"] is True for s in ended)
    assert no_current_otel_span()  # another thread's stack: this one is untouched


def test_a_task_that_never_stops_its_span_leaves_its_caller_untouched(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)

    async def forgetful() -> None:
        vsrtel.execute("app.lost.start", {}, {})

    async def main() -> str | None:
        async with vsrtel.span("app.main"):
            await asyncio.create_task(forgetful())
            vsrtel.execute("app.lost.stop", {}, {})  # not open in this task: ignored
            return current_otel_name()

    assert asyncio.run(main()) == "app.main"
    assert [s.name for s in finished(exporter)] == ["app.main"]
    assert no_current_otel_span()


def test_a_tracer_handle_counts_what_it_skipped_after_detaching_too(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def name(prefix: tuple[str, ...], metadata: Any) -> str:
        return str(metadata["route"])

    handle = spans.attach_tracer(["app"], tracer_provider=provider, span_name=name)
    other = spans.attach_tracer(["app"], tracer_provider=provider, handler_id="other")
    assert handle.attached and other.attached and handle.skipped == 0
    with vsrtel.span("app.request"):  # no route: skipped by the tracer naming spans by it
        pass
    with handle:
        pass
    assert not handle.attached and other.attached
    assert handle.skipped == 1 and other.skipped == 0
    assert not hasattr(spans, "skipped")  # one way to read it: the handle


# Spans emitted by hand with their telemetry_span_context (callback-style integrations: the stop
# comes from a callback, a response iterable's close()...): current where they start until then.


def test_a_span_emitted_by_hand_with_its_context_is_current_until_its_stop(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    ref = object()
    with vsrtel.span("app.request"):
        vsrtel.execute("app.call.start", {}, {"telemetry_span_context": ref, "route": "/x"})
        assert current_otel_name() == "app.call"
        vsrtel.execute("app.call.progress", {"bytes": 10})  # a span event on it
        with provider.get_tracer("user").start_as_current_span("raw"), vsrtel.span("app.inner"):
            pass
        assert current_otel_name() == "app.call"
        vsrtel.execute("app.call.stop", {"duration": 5}, {"telemetry_span_context": ref, "ok": 1})
        assert current_otel_name() == "app.request"
    assert no_current_otel_span()
    request, call, raw, inner = (
        only(exporter, n) for n in ("app.request", "app.call", "raw", "app.inner")
    )
    assert parent_id(call) == span_id(request)
    assert parent_id(raw) == span_id(call) and parent_id(inner) == span_id(raw)
    assert dict(call.attributes or {}) == {"route": "/x", "ok": 1}
    assert [e.name for e in call.events] == ["app.call.progress"]


def test_spans_emitted_by_hand_with_a_context_nest_per_thread(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    raw = provider.get_tracer("user")
    barrier = threading.Barrier(4)
    leftovers: list[str | None] = []

    def work(who: int) -> None:
        ref = ("request", who)
        vsrtel.execute("app.call.start", {}, {"telemetry_span_context": ref, "who": who})
        barrier.wait()  # all open at once
        with (
            raw.start_as_current_span("raw", attributes={"who": who}),
            vsrtel.span("app.inner", {"who": who}),
        ):
            barrier.wait()
        vsrtel.execute("app.call.stop", {}, {"telemetry_span_context": ref})
        leftovers.append(current_otel_name())

    threads = [threading.Thread(target=work, args=(who,)) for who in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert leftovers == [None] * 4
    calls = {s.attributes["who"]: s for s in finished(exporter, "app.call") if s.attributes}
    assert len(calls) == 4 and all(call.parent is None for call in calls.values())
    raws = {s.attributes["who"]: s for s in finished(exporter, "raw") if s.attributes}
    inners = finished(exporter, "app.inner")
    assert len(raws) == len(inners) == 4
    for who, span in raws.items():
        assert parent_id(span) == span_id(calls[who])
    for inner in inners:
        assert inner.attributes is not None
        assert parent_id(inner) == span_id(raws[inner.attributes["who"]])


def test_spans_emitted_by_hand_with_a_context_nest_per_asyncio_task(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    raw = provider.get_tracer("user")

    async def request(i: int) -> str | None:
        ref = object()
        vsrtel.execute("app.call.start", {}, {"telemetry_span_context": ref, "task": i})
        await asyncio.sleep(0)  # every call is open at once
        with raw.start_as_current_span("raw", attributes={"task": i}):
            await asyncio.sleep(0)
        async with vsrtel.span("app.inner", {"task": i}):
            await asyncio.sleep(0)
        vsrtel.execute("app.call.stop", {}, {"telemetry_span_context": ref})
        return current_otel_name()

    async def main() -> list[str | None]:
        async with vsrtel.span("app.batch"):
            return await asyncio.gather(*(request(i) for i in range(50)))

    assert asyncio.run(main()) == ["app.batch"] * 50
    batch = only(exporter, "app.batch")
    calls = {s.attributes["task"]: s for s in finished(exporter, "app.call") if s.attributes}
    children = finished(exporter, "raw") + finished(exporter, "app.inner")
    assert len(calls) == 50 and len(children) == 100
    assert all(parent_id(call) == span_id(batch) for call in calls.values())
    for child in children:
        assert child.attributes is not None
        assert parent_id(child) == span_id(calls[child.attributes["task"]])


def test_a_span_emitted_by_hand_may_stop_in_another_thread(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    ref = object()
    seen_there: list[str | None] = []

    def stop_there() -> None:
        vsrtel.execute("app.call.stop", {}, {"telemetry_span_context": ref})
        seen_there.append(current_otel_name())

    with vsrtel.span("app.request"):
        vsrtel.execute("app.call.start", {}, {"telemetry_span_context": ref})
        assert current_otel_name() == "app.call"
        stopper = threading.Thread(target=stop_there)
        stopper.start()
        stopper.join()
        # Ended there; here the tracer leaves it at its next span, which joins app.request.
        with vsrtel.span("app.after"):
            pass
        assert current_otel_name() == "app.request"
    assert seen_there == [None] and no_current_otel_span()
    request, call, after = (only(exporter, n) for n in ("app.request", "app.call", "app.after"))
    assert parent_id(call) == span_id(request) and parent_id(after) == span_id(request)


def test_a_span_emitted_by_hand_may_stop_in_a_task_started_inside_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    ref = object()

    async def respond() -> str | None:  # e.g. a callback run in a task the app started
        async with vsrtel.span("app.send"):
            await asyncio.sleep(0)
        vsrtel.execute("app.call.stop", {}, {"telemetry_span_context": ref})
        return current_otel_name()

    async def main() -> str | None:
        vsrtel.execute("app.call.start", {}, {"telemetry_span_context": ref})
        assert await asyncio.create_task(respond()) is None  # its copy of the context gave way
        with vsrtel.span("app.after"):
            pass
        return current_otel_name()

    assert asyncio.run(main()) is None
    call, send, after = (only(exporter, n) for n in ("app.call", "app.send", "app.after"))
    assert parent_id(send) == span_id(call)
    assert after.parent is None  # never a child of the ended span


def test_spans_emitted_by_hand_with_a_context_are_matched_by_it_alone(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider, span_events=False)
    ref = object()
    vsrtel.execute("app.job.start", {}, {"telemetry_span_context": ref, "n": 1})
    vsrtel.execute("app.job.stop", {}, {})  # no context: not a stop of this span
    assert current_otel_name() == "app.job" and finished(exporter) == []
    manual = vsrtel.span("app.manual").start()  # `.start()` spans stay never current
    assert current_otel_name() == "app.job"
    vsrtel.execute("app.job.start", {}, {"telemetry_span_context": ref, "n": 2})  # reused
    vsrtel.execute("app.job.stop", {}, {"telemetry_span_context": ref})  # ends the inner one
    assert current_otel_name() == "app.job"
    error = {"telemetry_span_context": ref, "kind": "error", "reason": ValueError("bad")}
    vsrtel.execute("app.job.exception", {}, error)
    assert no_current_otel_span()
    vsrtel.execute("app.job.stop", {}, {"telemetry_span_context": ref})  # none open: ignored
    manual.stop()
    inner, outer = finished(exporter, "app.job")
    assert dict(inner.attributes or {}) == {"n": 2} and dict(outer.attributes or {}) == {"n": 1}
    assert parent_id(inner) == span_id(outer)
    assert outer.status.status_code is StatusCode.ERROR
    assert parent_id(only(exporter, "app.manual")) == span_id(outer)


def test_spans_emitted_by_hand_with_a_context_whose_stop_never_comes_are_bounded(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)

    def leak() -> None:
        for i in range(250):
            vsrtel.execute("app.leak.start", {}, {"telemetry_span_context": ("leak", i), "i": i})

    thread = threading.Thread(target=leak)
    thread.start()
    thread.join()
    ended = finished(exporter, "app.leak")
    # At most 100 stay open in that thread: the oldest ones are ended and exported, marked.
    assert [s.attributes["i"] for s in ended if s.attributes] == list(range(150))
    assert all(s.attributes and s.attributes["vsrtel.stop_missed"] is True for s in ended)
    vsrtel.execute("app.leak.stop", {}, {"telemetry_span_context": ("leak", 0)})  # too late
    vsrtel.execute("app.leak.stop", {}, {"telemetry_span_context": ("leak", 200)})  # still open
    assert [s.attributes["i"] for s in finished(exporter, "app.leak") if s.attributes][150:] == [
        200
    ]
    assert no_current_otel_span()


def test_spans_emitted_by_hand_with_a_context_in_tasks_that_end_without_stop_are_bounded(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spans, "_MAX_KEYED_BY_HAND", 10)  # the bound over every thread and task
    spans.attach_tracer(["app"], tracer_provider=provider)

    async def forgetful(i: int) -> None:
        vsrtel.execute("app.lost.start", {}, {"telemetry_span_context": ("lost", i), "i": i})

    async def main() -> None:
        for i in range(25):
            await asyncio.create_task(forgetful(i))

    asyncio.run(main())
    ended = finished(exporter, "app.lost")
    assert [s.attributes["i"] for s in ended if s.attributes] == list(range(15))
    assert all(s.attributes and s.attributes["vsrtel.stop_missed"] is True for s in ended)


def test_a_span_emitted_by_hand_with_a_context_may_outlive_a_with_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    spans.attach_tracer(["app"], tracer_provider=provider)
    ref = object()
    with vsrtel.span("app.w"):
        vsrtel.execute("app.h.start", {}, {"telemetry_span_context": ref})
    assert current_otel_name() == "app.h"  # still running: it outlives the with span
    with vsrtel.span("app.inside"):
        pass
    vsrtel.execute("app.h.stop", {}, {"telemetry_span_context": ref})
    assert no_current_otel_span()  # not app.w, which ended first
    w, h, inside = (only(exporter, n) for n in ("app.w", "app.h", "app.inside"))
    assert parent_id(h) == span_id(w) and parent_id(inside) == span_id(h)


def test_a_stop_setting_error_type_sets_status_error_without_an_exception(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handle = spans.attach_tracer([("app", "call")], tracer_provider=provider)
    try:
        with vsrtel.span(("app", "call"), {}) as span:
            span.metadata["error.type"] = "503"
        with vsrtel.span(("app", "call"), {}):
            pass
    finally:
        handle.detach()
    failed, fine = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert not failed.events  # no exception recorded
    assert fine.status.status_code is StatusCode.UNSET


def test_span_name_and_span_kind_metadata_name_the_span_and_a_stop_renames_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handle = spans.attach_tracer(["app"], tracer_provider=provider)
    try:
        with vsrtel.span("app.call", {"span_name": "GET", "span_kind": "server"}) as span:
            span.metadata["span_name"] = "GET /users/{id}"  # known only once routed
        with vsrtel.span("app.call", {"span_name": "GET", "span_kind": "sideways"}):
            pass
        with vsrtel.span("app.call", {"span_name": 7, "span_kind": ["client"]}):
            pass
    finally:
        handle.detach()
    renamed, unknown_kind, bad = exporter.get_finished_spans()
    assert (renamed.name, renamed.kind) == ("GET /users/{id}", trace.SpanKind.SERVER)
    assert (unknown_kind.name, unknown_kind.kind) == ("GET", trace.SpanKind.INTERNAL)
    assert (bad.name, bad.kind) == ("app.call", trace.SpanKind.INTERNAL)
    assert not {"span_name", "span_kind"} & set(renamed.attributes or {})


def test_the_span_name_option_wins_over_span_name_metadata(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handle = spans.attach_tracer(["app"], tracer_provider=provider, span_name="fixed")
    try:
        with vsrtel.span("app.call", {"span_name": "GET"}) as span:
            span.metadata["span_name"] = "GET /users/{id}"
    finally:
        handle.detach()
    [only] = exporter.get_finished_spans()
    assert only.name == "fixed"
