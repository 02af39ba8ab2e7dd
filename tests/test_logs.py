"""Tests for vsrtel.logs: trace ids on structlog and stdlib lines, the stdlib bridge, and log
records exported over OpenTelemetry."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import vsrtel
import vsrtel.testing
from vsrtel import logs
from vsrtel.handlers import logs as event_logs
from vsrtel.handlers import spans

SECRET = "hunter2-s3cr3t"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exported: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider


@pytest.fixture
def traced(provider: TracerProvider) -> Iterator[vsrtel.Handle]:
    handle = spans.attach_tracer(["app"], tracer_provider=provider)
    yield handle
    handle.detach()


def _structlog_lines() -> tuple[Any, list[dict[str, Any]]]:
    """A structlog logger with the processor, and the event dicts it received."""
    lines: list[dict[str, Any]] = []

    def keep(logger: Any, method_name: str, event_dict: Any) -> Any:
        lines.append(dict(event_dict))
        raise structlog.DropEvent

    logger = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[logs.add_trace_context, keep], context_class=dict
    )
    return logger, lines


@pytest.fixture
def stdlib_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A stdlib logger whose handler has the filter and prints ``message trace_id span_id``."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.TraceContextFilter())
    handler.setFormatter(logging.Formatter("%(message)s %(trace_id)s %(span_id)s"))
    logger = logging.getLogger("test_logs.app")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def _ids_of(exported: InMemorySpanExporter) -> dict[str, tuple[str, str]]:
    """Each finished span's name (its ``request`` attribute when set) -> its hex ids."""
    ids = {}
    for span in exported.get_finished_spans():
        name = str((span.attributes or {}).get("request", span.name))
        ids[name] = (format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"))
    return ids


def _lines_by_message(out: io.StringIO) -> dict[str, tuple[str, ...]]:
    return {
        line.split(" ", 1)[0]: tuple(line.split(" ")[1:])
        for line in out.getvalue().splitlines()
    }


# -- trace context ------------------------------------------------------------------------------


@pytest.mark.usefixtures("traced")
def test_structlog_and_stdlib_lines_inside_a_span_carry_its_ids(
    exported: InMemorySpanExporter, stdlib_lines: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, lines = _structlog_lines()
    stdlib, out = stdlib_lines
    with vsrtel.span("app.request", {"request": "outer"}):
        logger.info("outer")
        stdlib.info("outer")
        with vsrtel.span("app.db", {"request": "inner"}):
            logger.info("inner")
            stdlib.info("inner")
        logger.info("outer-again")
        stdlib.info("outer-again")
    ids = _ids_of(exported)
    by_event = {line["event"]: (line["trace_id"], line["span_id"]) for line in lines}
    assert by_event == {"outer": ids["outer"], "inner": ids["inner"], "outer-again": ids["outer"]}
    assert ids["inner"][0] == ids["outer"][0] and ids["inner"][1] != ids["outer"][1]
    assert _lines_by_message(out) == {
        "outer": ids["outer"], "inner": ids["inner"], "outer-again": ids["outer"]
    }


def test_outside_every_span_nothing_is_added(
    stdlib_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, lines = _structlog_lines()
    stdlib, out = stdlib_lines
    logger.info("alone")
    stdlib.info("alone")
    assert lines == [{"event": "alone"}]
    assert out.getvalue() == "alone  \n"  # the format still works: both ids are ""


@pytest.mark.usefixtures("traced")
def test_each_thread_logs_with_its_own_span(
    exported: InMemorySpanExporter, stdlib_lines: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, lines = _structlog_lines()
    stdlib, out = stdlib_lines
    barrier = threading.Barrier(4, timeout=10)

    def work(name: str) -> None:
        with vsrtel.span("app.request", {"request": name}):
            barrier.wait()  # every thread is inside its span before any logs
            for _ in range(20):
                logger.info(name)
                stdlib.info(name)
            barrier.wait()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    ids = _ids_of(exported)
    assert len(ids) == 4 and len({trace_id for trace_id, _ in ids.values()}) == 4
    assert len(lines) == 80
    assert all((line["trace_id"], line["span_id"]) == ids[line["event"]] for line in lines)
    stdlib_seen = [line.split(" ") for line in out.getvalue().splitlines()]
    assert len(stdlib_seen) == 80
    assert all(tuple(ids_) == ids[name] for name, *ids_ in stdlib_seen)


@pytest.mark.usefixtures("traced")
def test_each_asyncio_task_logs_with_its_own_span(
    exported: InMemorySpanExporter, stdlib_lines: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, lines = _structlog_lines()
    stdlib, out = stdlib_lines

    async def work(name: str) -> None:
        async with vsrtel.span("app.request", {"request": name}):
            for _ in range(5):
                await asyncio.sleep(0)  # the tasks interleave
                logger.info(name)
                stdlib.info(name)

    async def main() -> None:
        await asyncio.gather(*(work(f"task{i}") for i in range(4)))

    asyncio.run(main())
    ids = _ids_of(exported)
    assert len(ids) == 4 and len(lines) == 20
    assert all((line["trace_id"], line["span_id"]) == ids[line["event"]] for line in lines)
    stdlib_seen = [line.split(" ") for line in out.getvalue().splitlines()]
    assert len(stdlib_seen) == 20
    assert all(tuple(ids_) == ids[name] for name, *ids_ in stdlib_seen)


def test_an_opentelemetry_span_of_your_own_counts(provider: TracerProvider) -> None:
    logger, lines = _structlog_lines()
    with provider.get_tracer("t").start_as_current_span("raw") as span:
        logger.info("raw")
    context = span.get_span_context()
    assert lines == [{
        "event": "raw",
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }]


@pytest.mark.usefixtures("traced")
def test_a_task_outliving_its_span_logs_with_the_span_still_running(
    exported: InMemorySpanExporter,
) -> None:
    # The task copies the context of the inner span, which ends before the task logs: the
    # OpenTelemetry context the task holds is stale, vsrtel's current span is the outer one.
    logger, lines = _structlog_lines()

    async def main() -> None:
        async with vsrtel.span("app.request", {"request": "outer"}):
            async with vsrtel.span("app.db", {"request": "inner"}):
                release = asyncio.Event()

                async def late() -> None:
                    await release.wait()
                    logger.info("late")

                task = asyncio.create_task(late())
            release.set()
            await task

    asyncio.run(main())
    ids = _ids_of(exported)
    assert [(line["trace_id"], line["span_id"]) for line in lines] == [ids["outer"]]


def test_a_vsrtel_span_nobody_traces_gives_its_span_context() -> None:
    logger, lines = _structlog_lines()
    with vsrtel.testing.capture("app") as events, vsrtel.span("app.request"):
        logger.info("untraced")
    context = events[0].metadata["telemetry_span_context"]
    assert lines == [{"event": "untraced", "telemetry_span_context": context}]


@pytest.mark.usefixtures("traced")
def test_keys_the_line_already_has_are_kept(
    stdlib_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, lines = _structlog_lines()
    stdlib, out = stdlib_lines
    with vsrtel.span("app.request"):
        logger.info("mine", trace_id="t", span_id="s")
        stdlib.info("mine", extra={"trace_id": "t", "span_id": "s"})
    assert lines == [{"event": "mine", "trace_id": "t", "span_id": "s"}]
    assert out.getvalue() == "mine t s\n"


def test_the_filter_can_leave_the_ids_unset_outside_spans() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    assert logs.TraceContextFilter(missing=None).filter(record)
    assert not hasattr(record, "trace_id")
    with pytest.raises(TypeError, match="missing"):
        logs.TraceContextFilter(missing=0)  # type: ignore[arg-type]


def test_the_logs_handlers_own_lines_agree_with_the_processor(
    traced: vsrtel.Handle, provider: TracerProvider
) -> None:
    logger, lines = _structlog_lines()
    handle = event_logs.attach_logger("app.cache", logger=logger)
    try:
        with vsrtel.span("app.request"):
            vsrtel.execute("app.cache.miss", {"count": 1})
            logger.info("own")
    finally:
        handle.detach()
    event_line, own = lines
    assert (event_line["trace_id"], event_line["span_id"]) == (own["trace_id"], own["span_id"])
    assert trace.get_current_span() is trace.INVALID_SPAN
