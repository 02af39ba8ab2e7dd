"""Every shipped handler at once survives any payload, and keeps working afterwards."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import vsrtel
from vsrtel import logs as log_export
from vsrtel import metrics as m
from vsrtel.export import otel
from vsrtel.handlers import logs, spans
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.testing import capture


class Unprintable:
    """A value whose repr and str both raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class UnprintableInt(int):
    __repr__ = __str__ = Unprintable.__repr__


class UnprintableError(Exception):
    __repr__ = __str__ = Unprintable.__repr__


def huge_int(digits: int, negative: bool = False) -> int:
    """An int of ``digits + 1`` digits: past 4,300, ``repr`` raises (built here, not in a
    strategy's description, which hypothesis prints with repr)."""
    return -(10**digits) if negative else 10**digits


def huge_int_error() -> ValueError:
    return ValueError(huge_int(5000))


# Values whose repr or str raises: ints past Python's str-conversion limit (4,300 digits by
# default) and objects with a broken __repr__/__str__; plus an IntEnum, an int subclass.
unprintable = st.one_of(
    st.builds(huge_int, st.sampled_from([4300, 5000]), st.booleans()),
    st.builds(Unprintable),
    st.builds(UnprintableInt, st.integers(-(2**70), 2**70)),
    st.builds(UnprintableError),
    st.builds(huge_int_error),
    st.sampled_from(HTTPStatus),
)
keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["self", "event", "exc_info", "password", "telemetry_span_context"]),
    st.integers(),
    st.binary(max_size=4),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.floats(allow_nan=False),
    st.builds(huge_int, st.just(5000)),
    st.builds(Unprintable),
)
scalars = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # NaN and infinities included
    st.text(max_size=20),
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
    st.just("x" * 100_000),
    unprintable,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=10,
)
payloads = st.dictionaries(keys, values, max_size=6)


class World:
    """An isolated registry with every shipped handler attached, and where each one writes."""

    def __init__(self) -> None:
        self.registry = vsrtel.Registry()
        self.log = io.StringIO()
        self.debug = io.StringIO()
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        logger = structlog.wrap_logger(
            structlog.PrintLogger(self.log),
            processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        )
        logs.attach_logger("app", logger=logger, registry=self.registry)
        logs.debug("app", file=self.debug, registry=self.registry)
        # Events exported as OpenTelemetry log records, through the logs handler.
        self.log_records = InMemoryLogRecordExporter()
        self.otel = otel.configure(log_processors=[SimpleLogRecordProcessor(self.log_records)])
        logs.attach_logger(
            "app", logger=log_export.otel_logger(self.otel.logger_provider),
            registry=self.registry,
        )
        spans.attach_tracer(["app"], tracer_provider=self.tracer_provider, registry=self.registry)
        self.reporter = MetricsReporter(
            [
                m.counter("app.event.count", tags=["route"]),
                m.distribution("app.event.size", tags=["route"]),
                m.sum("app.op.stop.rows"),
                m.last_value("app.event.level"),
            ],
            meter_provider=self.meter_provider,
            registry=self.registry,
        ).attach()
        self.handlers = {r.id for r in self.registry.list_handlers()}
        self.exported = 0  # log records exported so far

    def close(self) -> None:
        self.otel.shutdown()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    def counted(self) -> float:
        data = self.reader.get_metrics_data()
        if data is None:  # nothing recorded yet
            return 0
        return sum(
            point.value
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "app.event.count"
            for point in metric.data.data_points
            if dict(point.attributes or {}) == {"route": "/ok"}
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World()
    yield world
    world.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(measurements=payloads, metadata=payloads, cyclic=st.booleans(), in_span=st.booleans())
def test_any_payload_leaves_every_handler_attached_and_working(
    world: World,
    measurements: dict[Any, Any],
    metadata: dict[Any, Any],
    cyclic: bool,
    in_span: bool,
) -> None:
    registry = world.registry
    if cyclic:
        metadata["me"] = metadata
        metadata["list"] = [metadata]
    with capture("app", registry=registry) as seen:
        if in_span:
            with registry.span("app.op", metadata) as span:
                span.measurements.update({k: v for k, v in measurements.items() if k != "me"})
                registry.execute("app.event", measurements, metadata)
        else:
            registry.execute("app.event", measurements, metadata)
    assert seen  # the payload reached the handlers
    exported = len(world.log_records.get_finished_logs())
    assert exported >= world.exported + len(seen)  # each event became a log record
    world.exported = exported

    assert {r.id for r in registry.list_handlers()} == world.handlers

    before = world.counted()
    log_end, debug_end = world.log.tell(), world.debug.tell()
    spans_before = len(world.exporter.get_finished_spans())
    with registry.span("app.check", {"route": "/ok"}):
        registry.execute("app.event", {"count": 1, "size": 3}, {"route": "/ok"})
    assert world.counted() == before + 1
    assert "app.event" in world.log.getvalue()[log_end:]
    assert "app.event" in world.debug.getvalue()[debug_end:]
    assert len(world.exporter.get_finished_spans()) == spans_before + 1
    world.exported = len(world.log_records.get_finished_logs())
    assert world.log_records.get_finished_logs()[-2].log_record.body == "app.event"


def test_the_strategies_reach_the_odd_cases() -> None:
    # A guard that the payloads above keep covering what broke handlers before.
    odd = {
        0: 1,
        "self": 2,
        b"k": 3,
        "nan": math.nan,
        "big": 2**100,
        "huge": 10**5000,
        10**5000: 4,
        "unprintable": Unprintable(),
        "int_subclass": UnprintableInt(5),
        "status": HTTPStatus.OK,
    }
    world = World()
    try:
        world.registry.execute("app.event", odd, {**odd, "password": "hunter2"})
        with world.registry.span("app.op", odd):  # every value becomes a span attribute
            pass
        assert {r.id for r in world.registry.list_handlers()} == world.handlers
        assert [s.name for s in world.exporter.get_finished_spans()] == ["app.op"]
        for out in (world.log.getvalue(), world.debug.getvalue()):
            assert "<int of 5001 digits>" in out and "<unrepresentable Unprintable>" in out
        assert "hunter2" not in world.log.getvalue() + world.debug.getvalue()
    finally:
        world.close()
