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


# -- the bridge ---------------------------------------------------------------------------------


@pytest.fixture
def bridged() -> Iterator[logging.Logger]:
    """A stdlib logger bridged to the default registry, and nothing else."""
    logger = logging.getLogger("test_logs.bridged")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logs.EventHandler()
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


def test_stdlib_records_become_log_record_events(bridged: logging.Logger) -> None:
    with vsrtel.testing.capture("log") as events:
        bridged.warning("disk %s is %d%% full", "/var", 93)
        bridged.debug("detail")
    assert [(e.name, dict(e.measurements), dict(e.metadata)) for e in events] == [
        (("log", "record"), {}, {
            "log_level": "warning",
            "logger": "test_logs.bridged",
            "message": "disk /var is 93% full",
        }),
        (("log", "record"), {}, {
            "log_level": "debug", "logger": "test_logs.bridged", "message": "detail"
        }),
    ]


def test_the_bridge_feeds_metrics_of_errors_by_logger(bridged: logging.Logger) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from vsrtel import metrics
    from vsrtel.handlers.metrics import MetricsReporter

    reader = InMemoryMetricReader()
    reporter = MetricsReporter(
        [metrics.counter("log.record.count", tags=["logger", "log_level"])],
        meter_provider=MeterProvider(metric_readers=[reader], shutdown_on_exit=False),
    ).attach()
    try:
        bridged.error("one")
        bridged.error("two")
        bridged.info("three")
    finally:
        reporter.detach()
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        (point.attributes["logger"], point.attributes["log_level"]): point.value
        for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        for point in m.data.data_points
    }
    assert points == {("test_logs.bridged", "error"): 2, ("test_logs.bridged", "info"): 1}


def test_the_bridge_can_emit_another_event_and_respects_its_level() -> None:
    registry = vsrtel.Registry()
    logger = logging.getLogger("test_logs.named")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logs.EventHandler("app.log", level="WARNING", registry=registry)
    logger.addHandler(handler)
    try:
        with vsrtel.testing.capture("app.log", registry=registry) as events:
            logger.info("below the handler's level")
            logger.error("kept")
    finally:
        logger.removeHandler(handler)
    assert [(e.name, e.metadata["message"]) for e in events] == [(("app", "log"), "kept")]
    with pytest.raises(ValueError, match="event"):
        logs.EventHandler("")
    with pytest.raises(TypeError, match="redact"):
        logs.EventHandler(redact="password")


def test_bridged_messages_and_tracebacks_are_scrubbed(bridged: logging.Logger) -> None:
    with vsrtel.testing.capture("log") as events:
        bridged.info("login with password=%s for %s", SECRET, "ann")
        try:
            raise ValueError(f"bad token={SECRET}")
        except ValueError:
            bridged.exception("failed at https://ann:%s@db.example/x", SECRET)
    info, error = (dict(e.metadata) for e in events)
    assert info["message"] == "login with password=[REDACTED] for ann"
    assert error["message"] == "failed at https://[REDACTED]@db.example/x"
    assert error["exception"].startswith("Traceback (most recent call last)")
    assert error["exception"].endswith("ValueError: bad token=[REDACTED]")
    assert SECRET not in repr(events)


def test_a_handler_that_logs_while_handling_a_log_event_cannot_loop(
    bridged: logging.Logger,
) -> None:
    calls: list[str] = []
    printed = io.StringIO()
    printer = logging.StreamHandler(printed)
    bridged.addHandler(printer)

    def logs_again(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        calls.append(metadata["message"])
        bridged.warning("handled %s", metadata["message"])

    vsrtel.attach("logs-again", "log.record", logs_again)
    try:
        bridged.warning("first")
    finally:
        bridged.removeHandler(printer)
    assert calls == ["first"]  # the record logged by the handler was not bridged again
    # Other handlers still had both (the bridge, added first, ran first).
    assert printed.getvalue() == "handled first\nfirst\n"
    assert vsrtel.list_handlers("log.record")  # nothing failed: still attached


def test_a_failing_log_event_handler_is_reported_once_through_the_vsrtel_logger(
    bridged: logging.Logger,
) -> None:
    # The registry reports the failure on the "vsrtel" logger, which is bridged too.
    vsrtel_logger = logging.getLogger("vsrtel")
    bridge = logs.EventHandler()
    vsrtel_logger.addHandler(bridge)
    seen: list[tuple[str, str]] = []

    def failing(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        seen.append((metadata["logger"], metadata["message"].splitlines()[0]))
        raise RuntimeError("broken handler")

    vsrtel.attach("failing", "log.record", failing)
    try:
        with vsrtel.testing.capture("log") as events:
            bridged.error("boom")
            bridged.error("again")  # the failing handler was detached
            vsrtel_logger.error("a vsrtel report")  # bridged: no event is being handled
    finally:
        vsrtel_logger.removeHandler(bridge)
    assert seen == [("test_logs.bridged", "boom")]
    assert not vsrtel.list_handlers("log.record")  # detached (and the capture ended)
    # The failure report, logged while "boom" was being bridged, was not bridged itself.
    assert [(e.metadata["logger"], e.metadata["message"]) for e in events] == [
        ("test_logs.bridged", "boom"),
        ("test_logs.bridged", "again"),
        ("vsrtel", "a vsrtel report"),
    ]


def test_the_bridge_with_nobody_listening_builds_nothing(bridged: logging.Logger) -> None:
    class Loud:
        def __str__(self) -> str:
            raise AssertionError("the message was formatted with nobody listening")

    bridged.info("%s", Loud())  # nobody listens to log.record: the record is not read


# -- OpenTelemetry's logs signal ----------------------------------------------------------------


@pytest.fixture
def telemetry() -> Iterator[tuple[Any, Any]]:
    """An `otel.configure` setup whose log records are kept in memory, and that memory."""
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    from vsrtel.export import otel

    memory = InMemoryLogRecordExporter()
    setup = otel.configure("logs-test", log_processors=[SimpleLogRecordProcessor(memory)])
    try:
        yield setup, memory
    finally:
        setup.shutdown()


def _records(memory: Any) -> list[Any]:
    return [readable.log_record for readable in memory.get_finished_logs()]


@pytest.fixture
def exported_stdlib(telemetry: tuple[Any, Any]) -> Iterator[logging.Logger]:
    logger = logging.getLogger("test_logs.exported")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logs.OTelHandler(telemetry[0].logger_provider)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


def test_stdlib_records_are_exported_with_severity_body_attributes_and_trace(
    telemetry: tuple[Any, Any],
    exported_stdlib: logging.Logger,
    traced: vsrtel.Handle,
    exported: InMemorySpanExporter,
) -> None:
    memory = telemetry[1]
    with vsrtel.span("app.request", {"request": "r1"}):
        exported_stdlib.warning("disk %s full", "/var", extra={"disk": "/var", "used": 0.93})
    exported_stdlib.critical("outside")
    inside, outside = _records(memory)
    trace_id, span_id = _ids_of(exported)["r1"]
    assert (format(inside.trace_id, "032x"), format(inside.span_id, "016x")) == (trace_id, span_id)
    assert (inside.severity_number.value, inside.severity_text) == (13, "WARN")
    assert inside.body == "disk /var full"
    assert inside.attributes["disk"] == "/var" and inside.attributes["used"] == 0.93
    assert inside.attributes["code.function.name"] == (
        "test_stdlib_records_are_exported_with_severity_body_attributes_and_trace"
    )
    assert "trace_id" not in inside.attributes and "msg" not in inside.attributes
    assert (outside.severity_number.value, outside.severity_text) == (21, "FATAL")
    assert outside.trace_id == 0
    assert memory.get_finished_logs()[0].resource.attributes["service.name"] == "logs-test"
    assert memory.get_finished_logs()[0].instrumentation_scope.name == "test_logs.exported"


def test_secrets_are_redacted_on_every_exported_path(
    telemetry: tuple[Any, Any], exported_stdlib: logging.Logger
) -> None:
    setup, memory = telemetry
    try:
        raise PermissionError(f"login failed: password={SECRET}")
    except PermissionError:
        exported_stdlib.exception(
            "connecting to postgres://ann:%s@db/x", SECRET, extra={"api_key": SECRET}
        )
    processor = logs.OTelProcessor(setup.logger_provider)
    structlogger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[processor, lambda *_: ""],
        context_class=dict,
    )
    structlogger.error(f"Authorization: Bearer {SECRET}", token=SECRET, nested={"pwd": SECRET})
    try:
        raise ValueError(f"token={SECRET}")
    except ValueError as error:
        structlogger.error("failed", exc_info=error)
    records = _records(memory)
    assert len(records) == 3
    stdlib_record, structlog_record, with_exception = records
    assert stdlib_record.body == "connecting to postgres://[REDACTED]@db/x"
    assert stdlib_record.attributes["api_key"] == "[REDACTED]"
    assert stdlib_record.attributes["exception.type"] == "PermissionError"
    assert stdlib_record.attributes["exception.message"] == "login failed: password=[REDACTED]"
    assert stdlib_record.attributes["exception.stacktrace"].endswith(
        "PermissionError: login failed: password=[REDACTED]"
    )
    assert structlog_record.body == "Authorization: [REDACTED]"
    assert structlog_record.attributes["token"] == "[REDACTED]"
    assert (structlog_record.severity_text, with_exception.severity_text) == ("ERROR", "ERROR")
    assert with_exception.attributes["exception.message"] == "token=[REDACTED]"
    assert SECRET not in repr([(r.body, dict(r.attributes)) for r in records])


def test_structlog_events_are_exported_inside_their_span(
    telemetry: tuple[Any, Any], traced: vsrtel.Handle, exported: InMemorySpanExporter
) -> None:
    setup, memory = telemetry
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            structlog.processors.add_log_level,
            logs.OTelProcessor(setup.logger_provider, name="shop"),
            lambda *_: "",
        ],
        context_class=dict,
    )
    with vsrtel.span("app.request", {"request": "r2"}):
        log.info("paid", amount=1999, items=["a", "b"])
    [record] = _records(memory)
    trace_id, span_id = _ids_of(exported)["r2"]
    assert format(record.trace_id, "032x") == trace_id
    assert format(record.span_id, "016x") == span_id
    assert (record.severity_text, record.body) == ("INFO", "paid")
    assert dict(record.attributes) == {"amount": 1999, "items": "['a', 'b']"}
    assert memory.get_finished_logs()[0].instrumentation_scope.name == "shop"


def test_vsrtel_events_are_exported_through_the_logs_handler(
    telemetry: tuple[Any, Any], provider: TracerProvider, exported: InMemorySpanExporter
) -> None:
    setup, memory = telemetry
    # The logs handler first, so that it sees the exception while its span is still current.
    logged = event_logs.attach_logger(
        "app", level="info", logger=logs.otel_logger(setup.logger_provider)
    )
    traced = spans.attach_tracer(["app"], tracer_provider=provider)
    try:
        with pytest.raises(ZeroDivisionError), vsrtel.span("app.divide", {"api_key": SECRET}):
            1 / 0  # noqa: B018
    finally:
        traced.detach()
        logged.detach()
    start, failed = _records(memory)
    trace_id, span_id = _ids_of(exported)["app.divide"]
    assert (start.body, start.severity_text, start.trace_id) == ("app.divide.start", "INFO", 0)
    assert (failed.body, failed.severity_text) == ("app.divide.exception", "ERROR")
    assert (format(failed.trace_id, "032x"), format(failed.span_id, "016x")) == (trace_id, span_id)
    assert failed.attributes["api_key"] == "[REDACTED]"
    assert "ZeroDivisionError: division by zero" in failed.attributes["exception.stacktrace"]
    assert memory.get_finished_logs()[0].instrumentation_scope.name == "vsrtel"


def test_the_sdks_own_reports_and_what_is_logged_while_exporting_are_not_exported(
    telemetry: tuple[Any, Any],
) -> None:
    setup, memory = telemetry
    root = logging.getLogger()
    handler = logs.OTelHandler(setup.logger_provider)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)

    class LogsWhenRead:
        def __str__(self) -> str:
            logging.getLogger("test_logs.inner").warning("logged while exporting")
            return "value"

    try:
        logging.getLogger("opentelemetry.sdk._logs").warning("the SDK's own report")
        logging.getLogger("test_logs.outer").info("outer", extra={"odd": LogsWhenRead()})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    [record] = _records(memory)
    assert (record.body, record.attributes["odd"]) == ("outer", "value")


def test_an_exporter_that_fails_is_reported_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def get_logger(self, name: str) -> Any:
            raise RuntimeError("no logger")

    logger = logging.getLogger("test_logs.broken")
    logger.propagate = False
    handler = logs.OTelHandler(Broken())
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.ERROR, logger="vsrtel"):
            logger.error("lost")
    finally:
        logger.removeHandler(handler)
    assert any("could not be exported" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="logger_provider"):
        logs.OTelHandler(object())
    with pytest.raises(TypeError, match="logger_provider"):
        logs.OTelProcessor(None)


def test_objects_and_bodies_that_are_not_text_are_redacted_too(
    telemetry: tuple[Any, Any],
) -> None:
    setup, memory = telemetry

    class Connection:
        def __str__(self) -> str:
            return f"Connection(dsn=postgres://ann:{SECRET}@db/x)"

    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[logs.OTelProcessor(setup.logger_provider), lambda *_: ""],
        context_class=dict,
    )
    log.info({"password": SECRET, "user": "ann"}, connection=Connection())
    [record] = _records(memory)
    assert record.body == "{'password': '[REDACTED]', 'user': 'ann'}"
    assert record.attributes["connection"] == "Connection(dsn=[REDACTED])"
