"""The MetricsReporter: metric definitions recorded from events onto OpenTelemetry."""

from __future__ import annotations

import enum
import gc
import logging
import math
import re
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    Sum,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vsrtel
from vsrtel import metrics as m
from vsrtel.export.prometheus import prometheus_reader
from vsrtel.handlers import _aggregation
from vsrtel.handlers.metrics import METER_NAME, OVERFLOW_ATTRIBUTE, MetricsReporter, metric_views
from vsrtel.testing import capture

# ----------------------------------------------------------------------------- helpers

segment = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
names = st.lists(segment, min_size=2, max_size=6)


class Sink:
    """A MeterProvider with an in-memory reader, read back as {metric name: Metric}."""

    def __init__(self, views: list[Any] | None = None, readers: tuple[Any, ...] = ()) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader, *readers], views=views or ())

    def collect(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        out: dict[str, Metric] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == METER_NAME
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        metric = self.collect()[name]
        return {frozenset((p.attributes or {}).items()): p for p in metric.data.data_points}

    def value(self, name: str, **attrs: Any) -> Any:
        return self.points(name)[frozenset(attrs.items())].value


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.provider.shutdown()


@pytest.fixture
def registry() -> vsrtel.Registry:
    return vsrtel.Registry(on_error="detach")


def report(
    sink: Sink, registry: vsrtel.Registry, *defs: m.Metric
) -> MetricsReporter:
    return MetricsReporter(defs, meter_provider=sink.provider, registry=registry).attach()


# ----------------------------------------------------------------------------- reporter


class Color(enum.Enum):
    RED = 1



def test_one_metric_of_each_type_maps_to_the_right_instrument(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    report(
        sink,
        registry,
        m.counter("db.query.stop.count"),
        m.sum("db.query.stop.rows"),
        m.sum("db.pool.change.delta", reporter_options={"monotonic": False}),
        m.last_value("db.pool.change.size"),
        m.distribution("db.query.stop.duration", unit=("native", "millisecond")),
        m.summary("db.query.stop.bytes", unit="byte"),
    )
    registry.execute("db.query.stop", {"rows": 3, "duration": 2_000_000, "bytes": 100})
    registry.execute("db.query.stop", {"rows": 4, "duration": 4_000_000, "bytes": 300})
    registry.execute("db.pool.change", {"delta": 5, "size": 10})
    registry.execute("db.pool.change", {"delta": -2, "size": 8})
    got = sink.collect()

    assert isinstance(got["db.query.stop.count"].data, Sum)
    assert got["db.query.stop.count"].data.is_monotonic
    assert sink.value("db.query.stop.count") == 2
    assert sink.value("db.query.stop.rows") == 7
    assert got["db.pool.change.delta"].data.is_monotonic is False
    assert sink.value("db.pool.change.delta") == 3
    assert isinstance(got["db.pool.change.size"].data, Gauge)
    assert sink.value("db.pool.change.size") == 8

    hist = got["db.query.stop.duration"]
    assert isinstance(hist.data, Histogram)
    assert hist.unit == "ms"
    (point,) = hist.data.data_points
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 2 and point.sum == pytest.approx(6.0)
    assert tuple(point.explicit_bounds) == m.buckets_for(
        m.distribution("x.y", unit=("native", "millisecond"))
    )
    assert got["db.query.stop.bytes"].unit == "By"
    assert got["db.query.stop.count"].unit == "{event}"


def test_summary_is_exponential_with_metric_views(registry: vsrtel.Registry) -> None:
    defs = [
        m.summary("rpc.call.stop.duration", unit=("native", "second"),
                  reporter_options={"max_size": 40}),
        m.distribution("rpc.call.stop.other", measurement="duration"),
    ]
    views = metric_views(defs)
    assert len(views) == 1
    sink = Sink(views=views)
    report(sink, registry, *defs)
    for ns in (1_000_000, 2_000_000, 400_000_000):
        registry.execute("rpc.call.stop", {"duration": ns})
    got = sink.collect()
    (point,) = got["rpc.call.stop.duration"].data.data_points
    assert isinstance(point, ExponentialHistogramDataPoint)
    assert point.count == 3 and point.sum == pytest.approx(0.403)
    assert point.min == pytest.approx(0.001) and point.max == pytest.approx(0.4)
    (other,) = got["rpc.call.stop.other"].data.data_points
    assert isinstance(other, HistogramDataPoint)  # views touch summaries only
    sink.provider.shutdown()


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        (("native", "second"), 1.5),
        (("native", "millisecond"), 1500.0),
        (("native", "microsecond"), 1_500_000.0),
        ("native", 1.5),
        (None, 1_500_000_000),
    ],
)
def test_unit_conversion_values(
    sink: Sink, registry: vsrtel.Registry, unit: Any, expected: float
) -> None:
    report(sink, registry, m.last_value("job.run.stop.duration", unit=unit))
    registry.execute("job.run.stop", {"duration": 1_500_000_000})
    assert sink.value("job.run.stop.duration") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("unit", "expected"), [(("byte", "kilobyte"), 2.5), (("byte", "megabyte"), 0.0025)]
)
def test_byte_conversion_values(
    sink: Sink, registry: vsrtel.Registry, unit: Any, expected: float
) -> None:
    report(sink, registry, m.sum("io.write.done.size", unit=unit))
    registry.execute("io.write.done", {"size": 2500})
    assert sink.value("io.write.done.size") == pytest.approx(expected)


def test_explicit_buckets_reach_the_histogram(sink: Sink, registry: vsrtel.Registry) -> None:
    report(sink, registry, m.distribution("b.e.size", reporter_options={"buckets": [10, 100]}))
    for size in (5, 50, 500, 600):
        registry.execute("b.e", {"size": size})
    (point,) = sink.collect()["b.e.size"].data.data_points
    assert tuple(point.explicit_bounds) == (10.0, 100.0)
    assert tuple(point.bucket_counts) == (1, 1, 2)


def test_measurement_key_and_callables(sink: Sink, registry: vsrtel.Registry) -> None:
    report(
        sink,
        registry,
        m.sum("q.pop.done.items", measurement="n"),
        m.sum("q.pop.done.double", measurement=lambda ms: ms["n"] * 2),
        m.sum("q.pop.done.weighted", measurement=lambda ms, md: ms["n"] * md["weight"]),
    )
    registry.execute("q.pop.done", {"n": 3}, {"weight": 10})
    assert sink.value("q.pop.done.items") == 3
    assert sink.value("q.pop.done.double") == 6
    assert sink.value("q.pop.done.weighted") == 30


def test_keep_and_drop_of_both_arities(sink: Sink, registry: vsrtel.Registry) -> None:
    report(
        sink,
        registry,
        m.counter("k.e.keep1", event_name="k.e", keep=lambda md: md["ok"]),
        m.counter("k.e.keep2", event_name="k.e", keep=lambda md, ms: ms["n"] > 1),
        m.counter("k.e.drop1", event_name="k.e", drop=lambda md: md["ok"]),
        m.counter("k.e.drop2", event_name="k.e", drop=lambda md, ms: ms["n"] > 1),
    )
    registry.execute("k.e", {"n": 1}, {"ok": True})
    registry.execute("k.e", {"n": 2}, {"ok": False})
    registry.execute("k.e", {"n": 3}, {"ok": False})
    assert sink.value("k.e.keep1") == 1
    assert sink.value("k.e.keep2") == 2
    assert sink.value("k.e.drop1") == 2
    assert sink.value("k.e.drop2") == 1


def test_tags_from_keys_callable_and_tag_values(sink: Sink, registry: vsrtel.Registry) -> None:
    report(
        sink,
        registry,
        m.counter("h.req.stop.by_keys", event_name="h.req.stop", tags=["method", "status"]),
        m.counter(
            "h.req.stop.by_fn",
            event_name="h.req.stop",
            tags=lambda md: {"class": m.status_class(md["status"])},
        ),
        m.counter(
            "h.req.stop.by_values",
            event_name="h.req.stop",
            tags=["status", "reason"],
            tag_values=lambda md: {
                **md,
                "status": m.status_class(md["status"]),
                "reason": m.normalize_reason(md.get("reason")),
            },
        ),
    )
    registry.execute("h.req.stop", {}, {"method": "GET", "status": 200})
    registry.execute("h.req.stop", {}, {"method": "GET", "status": 204})
    registry.execute("h.req.stop", {}, {"method": "PUT", "status": 503,
                                         "reason": TimeoutError("x")})
    assert sink.points("h.req.stop.by_keys").keys() == {
        frozenset({("method", "GET"), ("status", "200")}),
        frozenset({("method", "GET"), ("status", "204")}),
        frozenset({("method", "PUT"), ("status", "503")}),
    }
    assert sink.value("h.req.stop.by_fn", **{"class": "2xx"}) == 2
    assert sink.value("h.req.stop.by_fn", **{"class": "5xx"}) == 1
    assert sink.value("h.req.stop.by_values", status="2xx", reason="other") == 2
    assert sink.value("h.req.stop.by_values", status="5xx", reason="TimeoutError") == 1


def test_tag_values_are_made_otel_compatible(sink: Sink, registry: vsrtel.Registry) -> None:
    report(sink, registry, m.counter("t.v.c", tags=["a", "b", "c"]))
    registry.execute("t.v", {}, {"a": Color.RED, "b": None, "c": ["x"]})
    assert sink.points("t.v.c").keys() == {
        frozenset({("a", "RED"), ("b", ""), ("c", "['x']")})
    }


def test_missing_measurement_or_tag_is_skipped_and_counted(
    sink: Sink, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = report(
        sink,
        registry,
        m.sum("s.e.n", tags=["who"]),
        m.counter("s.e.count", tags=["who"]),
    )
    caplog.set_level(logging.DEBUG, logger="vsrtel")
    registry.execute("s.e", {"other": 1}, {"who": "a"})  # no "n"
    registry.execute("s.e", {"n": 2}, {})  # no tag
    registry.execute("s.e", {"n": "many"}, {"who": "a"})  # not a number
    registry.execute("s.e", {"n": 5}, {"who": "a"})
    assert reporter.attached
    assert reporter.skipped_by_metric == {"s.e.n": 3, "s.e.count": 1}
    assert sink.value("s.e.n", who="a") == 5
    assert sink.value("s.e.count", who="a") == 3  # counters need no measurement
    assert any("'n' missing" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert registry.list_handlers(("s", "e"))  # still attached


def test_failing_user_callable_is_contained(
    sink: Sink, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(ms: Mapping[str, Any]) -> float:
        url = "https://bob:" + "hunter2" + "@db/x"
        raise RuntimeError(f"bad measurement fn for {url}")

    reporter = report(
        sink, registry, m.sum("f.e.bad", measurement=boom), m.sum("f.e.good", measurement="n")
    )
    with capture(("vsrtel", "handler", "failure"), registry=registry) as failures:
        registry.execute("f.e", {"n": 1})
        registry.execute("f.e", {"n": 1})
    assert failures == []
    assert reporter.skipped_by_metric["f.e.bad"] == 2
    assert sink.value("f.e.good") == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per metric; later failures log at DEBUG
    assert "f.e.bad" in errors[0].getMessage()
    assert "bad measurement fn" in caplog.text
    assert "hunter2" not in caplog.text  # the report is scrubbed of secrets


def test_metrics_read_the_callers_dicts_unless_user_code_sees_them(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    # Without user callables a metric is attached trusted: a trusted probe on the same event
    # then gets the caller's dicts, as the metric does. A `keep` callable gets read-only views.
    seen: list[Any] = []

    def probe(name: Any, measurements: Any, metadata: Any, config: Any) -> None:
        seen.append(metadata)

    def keep(metadata: Any) -> bool:
        metadata["who"] = "mallory"  # raises: a read-only view
        return True

    report(sink, registry, m.counter("t.e.count", tags=["who"]))
    registry.attach("probe", "t.e", probe, trusted=True)
    metadata = {"who": "a"}
    registry.execute("t.e", {}, metadata)
    assert seen[-1] is metadata
    reporter = report(sink, registry, m.counter("k.e.count", keep=keep))
    registry.attach("probe-k", "k.e", probe, trusted=True)
    registry.execute("k.e", {}, metadata)
    assert seen[-1] is not metadata and seen[-1] == {"who": "a"}
    assert metadata == {"who": "a"} and reporter.skipped_by_metric == {"k.e.count": 1}
    assert sink.value("t.e.count", who="a") == 1


def test_monotonic_sum_skips_negative_values(sink: Sink, registry: vsrtel.Registry) -> None:
    reporter = report(sink, registry, m.sum("n.e.v"))
    registry.execute("n.e", {"v": -1})
    registry.execute("n.e", {"v": 4})
    assert sink.value("n.e.v") == 4
    assert reporter.skipped_by_metric == {"n.e.v": 1}


def test_overflow_series_past_max_series(
    sink: Sink, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = report(
        sink,
        registry,
        m.counter("o.e.n", tags=["id"], reporter_options={"max_series": 3}),
        m.counter("o.e.fn", tags=lambda md: {"id": md["id"]},
                  reporter_options={"max_series": 2}),
    )
    for i in range(10):
        registry.execute("o.e", {}, {"id": i})
    registry.execute("o.e", {}, {"id": 0})  # a known series still counts in its own series
    points = {k: p.value for k, p in sink.points("o.e.n").items()}
    assert points == {
        frozenset({("id", "0")}): 2,
        frozenset({("id", "1")}): 1,
        frozenset({("id", "2")}): 1,
        frozenset({(OVERFLOW_ATTRIBUTE, "true")}): 7,
    }
    assert sink.value("o.e.fn", **{OVERFLOW_ATTRIBUTE: "true"}) == 8
    assert reporter.series_count("o.e.n") == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per metric, not once per event
    assert "o.e.n" in warnings[0].getMessage() or "o.e.n" in warnings[1].getMessage()


def test_default_cap_is_1000(sink: Sink, registry: vsrtel.Registry) -> None:
    reporter = report(sink, registry, m.counter("c.e.n", tags=["id"]))
    for i in range(1005):
        registry.execute("c.e", {}, {"id": i})
    assert reporter.series_count("c.e.n") == 1000
    assert sink.value("c.e.n", **{OVERFLOW_ATTRIBUTE: "true"}) == 5


def test_max_series_up_to_the_sdk_limit_is_exact(sink: Sink, registry: vsrtel.Registry) -> None:
    limit = 1999  # the SDK keeps 2000 series per metric; the overflow series is one of them
    reporter = report(
        sink, registry, m.counter("l.e.n", tags=["id"], reporter_options={"max_series": limit})
    )
    for i in range(limit + 3):
        registry.execute("l.e", {}, {"id": f"s{i}"})
    points = sink.points("l.e.n")
    overflow = frozenset({(OVERFLOW_ATTRIBUTE, "true")})
    assert len(points) == limit + 1  # every series the reporter kept, plus its overflow series
    assert points[overflow].value == 3
    assert reporter.series_count("l.e.n") == limit


def test_max_series_above_the_sdk_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"max_series 2000 .*at most 2000 series.*at most 1999"):
        m.counter("l.e.n", tags=["id"], reporter_options={"max_series": 2000})


def test_unhashable_tag_values_are_keyed_by_text(sink: Sink, registry: vsrtel.Registry) -> None:
    reporter = report(sink, registry, m.counter("u.e.n", tags=["l"]),
                      m.counter("u.e.two", tags=["l", "k"]))
    registry.execute("u.e", {}, {"l": [1], "k": "x"})
    registry.execute("u.e", {}, {"l": [1], "k": "x"})
    assert sink.value("u.e.n", l="[1]") == 2
    assert sink.value("u.e.two", l="[1]", k="x") == 2
    assert reporter.series_count("u.e.n") == 1


def test_one_handler_per_event_name(sink: Sink, registry: vsrtel.Registry) -> None:
    reporter = MetricsReporter(
        [m.counter("a.b.one"), m.sum("a.b.two"), m.counter("a.c.one")],
        meter_provider=sink.provider,
        registry=registry,
    )
    assert registry.list_handlers() == []
    with reporter:
        handlers = registry.list_handlers()
        assert sorted(h.event_name for h in handlers) == [("a", "b"), ("a", "c")]
        with pytest.raises(RuntimeError, match="already attached"):
            reporter.attach()
    assert registry.list_handlers() == []
    reporter.detach()  # idempotent


def test_reporter_rejects_duplicates_and_non_metrics(sink: Sink) -> None:
    with pytest.raises(ValueError, match=r"'a\.b'"):
        MetricsReporter([m.counter("a.b"), m.sum("a.b")], meter_provider=sink.provider)
    with pytest.raises(TypeError, match="metric definition"):
        MetricsReporter(["a.b"], meter_provider=sink.provider)  # type: ignore[list-item]


def test_default_registry_and_concurrent_events(sink: Sink, vsrtel_registry: Any) -> None:
    reporter = MetricsReporter(
        [m.counter("p.e.n", tags=["t"])], meter_provider=sink.provider
    ).attach()

    def work(t: int) -> None:
        for _ in range(500):
            vsrtel.execute("p.e", {}, {"t": t % 3})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    reporter.detach()
    vsrtel.execute("p.e", {}, {"t": 0})  # detached: not counted
    assert {k: p.value for k, p in sink.points("p.e.n").items()} == {
        frozenset({("t", "0")}): 1000,
        frozenset({("t", "1")}): 1000,
        frozenset({("t", "2")}): 1000,
    }


class SteppingClock:
    """A simulated clock: each monotonic reading is 1.5 s after the previous one."""

    def __init__(self) -> None:
        self.now = 0

    def monotonic_ns(self) -> int:
        self.now += 1_500_000_000
        return self.now

    def time_ns(self) -> int:
        return 1_700_000_000_000_000_000


def test_span_durations_become_seconds(sink: Sink) -> None:
    registry = vsrtel.Registry(clock=SteppingClock())
    report(sink, registry, m.distribution("w.job.stop.duration", unit=("native", "second")))
    with registry.span(("w", "job")):
        pass
    (point,) = sink.collect()["w.job.stop.duration"].data.data_points
    assert point.count == 1
    assert point.sum == pytest.approx(1.5)


# ----------------------------------------------------------------------------- scrape safety


@pytest.mark.parametrize(
    ("defs", "message"),
    [
        ([m.counter("app.req.count"), m.counter("app_req.count")],
         "metrics 'app.req.count' and 'app_req.count' would both use the Prometheus name "
         "'app_req_count'"),
        ([m.sum("app.req.bytes", unit="byte"), m.last_value("app.req_bytes", unit="byte")],
         "metrics 'app.req.bytes' and 'app.req_bytes'"),
        # a histogram's _count sample and a gauge of that name
        ([m.distribution("app.req.size"), m.last_value("app.req.size_count")],
         "'app.req.size' and 'app.req.size_count' would both use the Prometheus name "
         "'app_req_size_count'"),
        # a counter's _total is its family's name
        ([m.counter("app.req.n"), m.counter("app.req.n_total")], "'app_req_n'"),
        # OpenMetrics reserves a counter's and a histogram's _created series, exported or not
        ([m.counter("jobs.run.count"), m.last_value("jobs.run.count_created")],
         "metrics 'jobs.run.count' and 'jobs.run.count_created' would both use the Prometheus "
         "name 'jobs_run_count_created'"),
        ([m.last_value("app.req.size_created"), m.distribution("app.req.size")],
         "'app.req.size_created' and 'app.req.size'"),
        ([m.sum("app.req.n", reporter_options={"monotonic": False}),
          m.last_value("app.req.n_created")], None),  # two gauges: no suffixes reserved
        ([m.last_value("target.info")], "target_info"),
    ],
)
def test_definitions_sharing_a_prometheus_name_are_rejected(
    sink: Sink, defs: list[m.Metric], message: str | None
) -> None:
    if message is None:
        MetricsReporter(defs, meter_provider=sink.provider)
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        MetricsReporter(defs, meter_provider=sink.provider)


def test_a_scrape_passes_a_strict_openmetrics_parser(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )

    reader, prometheus = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    # Gauges whose names would be a counter's or histogram's series if those existed.
    reporter = MetricsReporter(
        [m.counter("jobs.run.count"), m.distribution("jobs.run.size"),
         m.last_value("jobs.run.other_created", measurement="size")],
        meter_provider=provider, registry=registry,
    ).attach()
    registry.execute("jobs.run", {"size": 3})
    names = {f.name for f in parse_openmetrics(openmetrics(prometheus).decode())}
    assert {"jobs_run_count", "jobs_run_size", "jobs_run_other_created"} <= names
    reporter.detach()
    provider.shutdown()


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (m.counter("app.req.count"), m.counter("app.req.count"),
         "'app.req.count' and metric 'app.req.count' of another MetricsReporter attached to "
         "this MeterProvider would both use the Prometheus name 'app_req_count'"),
        (m.counter("app.req.count"), m.last_value("app_req.count"), "'app_req_count'"),
        (m.counter("jobs.run.count"), m.last_value("jobs.run.count_created"),
         "'jobs_run_count_created'"),
        (m.distribution("app.req.size"), m.counter("app.req.size_sum"), "'app_req_size_sum'"),
        (m.counter("App.req.n"), m.counter("app.req.n"),
         "one OpenTelemetry instrument name (names ignore case)"),
    ],
)
@pytest.mark.parametrize("aggregation", ["vsrtel", "otel"])
def test_a_second_reporter_of_a_prometheus_name_on_one_provider_is_rejected(
    sink: Sink, registry: vsrtel.Registry, first: m.Metric, second: m.Metric, message: str,
    aggregation: Any,
) -> None:
    one = MetricsReporter(
        [first], meter_provider=sink.provider, registry=registry, aggregation=aggregation
    ).attach()
    with pytest.raises(ValueError, match=re.escape(message)):
        MetricsReporter([second], meter_provider=sink.provider, registry=registry)
    with pytest.raises(ValueError, match=re.escape(message)):  # whichever way it aggregates
        MetricsReporter([second], meter_provider=sink.provider, registry=registry,
                          aggregation="otel" if aggregation == "vsrtel" else "vsrtel")
    # Another provider is another scrape.
    other = Sink()
    MetricsReporter([second], meter_provider=other.provider, registry=registry).attach()
    other.provider.shutdown()
    # A detached reporter's names can be taken.
    one.detach()
    MetricsReporter([second], meter_provider=sink.provider, registry=registry).attach()
    with pytest.raises(ValueError, match=re.escape(message.split(" of another")[0])):
        one.attach()  # now the other way round
    assert not one.attached


def test_of_two_reporters_built_first_the_second_to_attach_is_rejected(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    one = MetricsReporter([m.counter("j.e.count")], meter_provider=sink.provider,
                            registry=registry)
    two = MetricsReporter([m.last_value("j.e.count_total")], meter_provider=sink.provider,
                            registry=registry)
    one.attach()
    with pytest.raises(ValueError, match=r"'j\.e\.count_total' and metric 'j\.e\.count'"):
        two.attach()
    assert not two.attached and [h.event_name for h in registry.list_handlers()] == [("j", "e")]
    registry.execute("j.e", {"count_total": 5})
    assert sink.value("j.e.count") == 1  # the first one's series, exported as before
    assert "j.e.count_total" not in sink.collect()


def test_a_reporter_replaces_the_leftover_series_its_names_clash_with(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    reader, prometheus = prometheus_reader()
    sink.provider.add_metric_reader(reader)
    old = report(sink, registry, m.counter("k.e.count"))
    registry.execute("k.e", {"count_created": 1})
    old.detach()
    assert sink.value("k.e.count") == 1  # a detached reporter's series stay exported ...
    report(sink, registry, m.last_value("k.e.count_created"))
    registry.execute("k.e", {"count_created": 2})
    assert set(sink.collect()) == {"k.e.count_created"}  # ... until a clashing one replaces them
    assert [f.name for f in text_string_to_metric_families(generate_latest(prometheus).decode())
            if f.name.startswith("k_")] == ["k_e_count_created"]


def test_instrument_names_differing_in_case_are_rejected(sink: Sink) -> None:
    with pytest.raises(ValueError, match=r"'App\.req\.n' and 'app\.req\.n'.*ignore case"):
        MetricsReporter([m.counter("App.req.n"), m.counter("app.req.n")],
                          meter_provider=sink.provider)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (m.distribution("d.e.v", tags=["le"]), "'d.e.v' has tag 'le', but a Prometheus "
                                               "distribution uses the label 'le' itself"),
        (m.summary("d.e.v", tags=["quantile"]), "tag 'quantile'"),
        (m.summary("d.e.v", tags=["le"]), "tag 'le'"),
        (m.counter("d.e.v", tags=["a.b", "a_b"]),
         "tags 'a.b' and 'a_b', which both become the Prometheus label 'a_b'"),
        (m.counter("d.e.v", tags=["x-y", "x y"]), "tags 'x-y' and 'x y'"),
        (m.counter("d.e.v", tags=["a__b", "a_b"]), "tags 'a__b' and 'a_b'"),
        (m.counter("d.e.v", tags=["otel.scope.name"]), "the exporter adds the label"),
        (m.counter("d.e.v", tags=[OVERFLOW_ATTRIBUTE]), "the exporter adds the label"),
    ],
)
def test_tags_that_break_a_prometheus_family_are_rejected(
    sink: Sink, metric: m.Metric, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MetricsReporter([metric], meter_provider=sink.provider)


def test_le_is_an_ordinary_tag_on_a_counter(sink: Sink, registry: vsrtel.Registry) -> None:
    report(sink, registry, m.counter("d.e.n", tags=["le", "quantile"]))
    registry.execute("d.e", {}, {"le": "x", "quantile": "y"})
    assert sink.value("d.e.n", le="x", quantile="y") == 1


def test_a_tags_callable_returning_bad_names_is_skipped_and_counted(
    sink: Sink, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = report(
        sink, registry, m.distribution("d.e.v", tags=lambda md: md),
    )
    registry.execute("d.e", {"v": 1}, {"le": "1"})
    registry.execute("d.e", {"v": 1}, {"a.b": 1, "a_b": 2})
    registry.execute("d.e", {"v": 1}, {1: "x"})
    registry.execute("d.e", {"v": 1}, {"ok": "x"})
    assert reporter.skipped_by_metric == {"d.e.v": 3}
    assert set(sink.points("d.e.v")) == {frozenset({("ok", "x")})}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'le'" in warnings[0]  # once per metric


def test_a_tags_callable_gets_one_series_per_prometheus_label_set(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    # The exporter fills a missing label with "" and sanitises names: these are one series.
    reporter = report(sink, registry, m.counter("d.e.n", tags=lambda md: md))
    for metadata in ({"route": 0}, {"route": 0, "why": None}, {"route": "0", "why": ""}):
        registry.execute("d.e", {}, metadata)
    registry.execute("d.e", {}, {"a.b": 1})
    registry.execute("d.e", {}, {"a_b": 1})
    assert {k: p.value for k, p in sink.points("d.e.n").items()} == {
        frozenset({("route", "0")}): 3,
        frozenset({("a.b", "1")}): 2,
    }
    assert reporter.series_count("d.e.n") == 2


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, 2**63, -(2**63) - 1, 10**5000, "1", None,
     1e300],  # 1e300 ns in seconds is finite, but a factor of 1e9 makes it inf below
    ids=lambda v: type(v).__name__ if isinstance(v, int) else None,
)
def test_values_the_sdk_would_drop_are_skipped_and_counted(
    sink: Sink, registry: vsrtel.Registry, value: Any
) -> None:
    reporter = report(
        sink, registry,
        m.sum("v.e.n", reporter_options={"monotonic": False}),
        m.last_value("v.e.n_last", measurement="n"),
        m.distribution("v.e.n_hist", measurement="n", unit=("second", "nanosecond")),
    )
    registry.execute("v.e", {"n": value})
    registry.execute("v.e", {"n": 3})
    skipped = reporter.skipped_by_metric
    if value == 1e300:  # finite unscaled: only the distribution's conversion overflows
        assert skipped == {"v.e.n": 0, "v.e.n_last": 0, "v.e.n_hist": 1}
    else:
        assert skipped == {"v.e.n": 1, "v.e.n_last": 1, "v.e.n_hist": 1}
        assert sink.value("v.e.n") == 3
        assert sink.value("v.e.n_last") == 3
    assert sink.collect()["v.e.n_hist"].data.data_points[0].count == 1


def test_negative_values_of_a_histogram_are_skipped_and_counted(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    reporter = report(sink, registry, m.distribution("h.e.v"), m.summary("h.e.w", measurement="v"))
    registry.execute("h.e", {"v": -1})
    registry.execute("h.e", {"v": 0.5})
    assert reporter.skipped_by_metric == {"h.e.v": 1, "h.e.w": 1}
    assert sink.collect()["h.e.v"].data.data_points[0].count == 1


def test_int_and_float_subclasses_are_numbers(sink: Sink, registry: vsrtel.Registry) -> None:
    class Level(enum.IntEnum):
        HIGH = 7

    class Ratio(float):
        pass

    reporter = report(sink, registry, m.sum("i.e.n"))
    registry.execute("i.e", {"n": Level.HIGH})
    registry.execute("i.e", {"n": Ratio(0.5)})
    assert reporter.skipped_by_metric == {"i.e.n": 0}
    assert sink.value("i.e.n") == 7.5


class Count:
    """An integer of the user's own: it converts by `__index__`."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n


class Ratio:
    """A real number of the user's own: it converts by `__float__`."""

    def __init__(self, x: float) -> None:
        self.x = x

    def __float__(self) -> float:
        return self.x


class Unconvertible:
    def __float__(self) -> float:
        raise ArithmeticError("not today")


@pytest.mark.parametrize("aggregation", ["vsrtel", "otel"])
def test_any_real_number_is_recorded(
    sink: Sink, registry: vsrtel.Registry, aggregation: Any
) -> None:
    from decimal import Decimal
    from fractions import Fraction

    reporter = MetricsReporter(
        [m.sum("r.e.n"), m.distribution("r.e.n_ms", measurement="n", unit=("second", "millisecond"),
                                        reporter_options={"buckets": [100, 1000]}),
         m.last_value("r.e.n_last", measurement="n")],
        meter_provider=sink.provider, registry=registry, aggregation=aggregation,
    ).attach()
    values = [Decimal("0.25"), Fraction(1, 4), Count(2), Ratio(0.5), True, False]
    for value in values:
        registry.execute("r.e", {"n": value})
    assert reporter.skipped_by_metric == {"r.e.n": 0, "r.e.n_ms": 0, "r.e.n_last": 0}
    assert sink.value("r.e.n") == pytest.approx(4.0)  # True counts 1, as OpenTelemetry has it
    (point,) = sink.points("r.e.n_ms").values()
    assert (point.count, list(point.bucket_counts)) == (6, [1, 4, 1])  # ms: 0, 250 .. 1000, 2000
    assert (point.min, point.max, point.sum) == pytest.approx((0, 2000, 4000))
    assert sink.value("r.e.n_last") == 0
    for value in (Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), Count(2**63),
                  Unconvertible(), 1j, "1"):
        registry.execute("r.e", {"n": value})
    assert reporter.skipped_by_metric == {"r.e.n": 7, "r.e.n_ms": 7, "r.e.n_last": 7}
    assert sink.value("r.e.n") == pytest.approx(4.0)


@pytest.mark.parametrize("aggregation", ["vsrtel", "otel"])
def test_numpy_numbers_are_recorded(
    sink: Sink, registry: vsrtel.Registry, aggregation: Any
) -> None:
    np = pytest.importorskip("numpy")
    reporter = MetricsReporter(
        [m.sum("np.e.n"), m.distribution("np.e.n_hist", measurement="n")],
        meter_provider=sink.provider, registry=registry, aggregation=aggregation,
    ).attach()
    for value in (np.int64(3), np.float32(0.5), np.uint8(1), np.bool_(True), np.float64(0.5)):
        registry.execute("np.e", {"n": value})
    registry.execute("np.e", {"n": np.uint64(2**64 - 1)})  # beyond 64 bits signed
    registry.execute("np.e", {"n": np.float32("nan")})
    assert reporter.skipped_by_metric == {"np.e.n": 2, "np.e.n_hist": 2}
    assert sink.value("np.e.n") == 6
    (point,) = sink.points("np.e.n_hist").values()
    assert (point.count, point.sum, point.min, point.max) == (5, 6, 0.5, 3)


@pytest.mark.parametrize("tags", [["v"], ["v", "w"], lambda md: {"v": md["v"], "w": md["w"]}])
def test_true_1_and_1_0_are_three_series(
    sink: Sink, registry: vsrtel.Registry, tags: Any
) -> None:
    reporter = report(sink, registry, m.counter("b.e.n", tags=tags))
    for value in (1, True, 1.0, 1, "1", True, 1.0, 1.5):
        registry.execute("b.e", {}, {"v": value, "w": "x"})
    counts = {dict(k)["v"]: p.value for k, p in sink.points("b.e.n").items()}
    # int 1 and str "1" are one Prometheus label value, so one series
    assert counts == {"1": 3, "true": 2, "1.0": 2, "1.5": 1}
    assert reporter.series_count("b.e.n") == 4


def test_no_meter_provider_and_no_global_one_warns_loudly() -> None:
    # A fresh interpreter: the global MeterProvider is not set there.
    code = (
        "from vsrtel import metrics as m\n"
        "from vsrtel.handlers.metrics import MetricsReporter\n"
        "from vsrtel.export.prometheus import serve_metrics\n"
        "MetricsReporter([m.counter('app.req.count')]).attach()\n"
        "serve_metrics(port=0).close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "RuntimeWarning: MetricsReporter has no working MeterProvider" in result.stderr
    assert "meter_provider=server.meter_provider" in result.stderr


def test_a_no_op_meter_provider_warns_and_an_sdk_one_does_not(sink: Sink) -> None:
    with pytest.warns(RuntimeWarning, match="no working MeterProvider"):
        MetricsReporter([m.counter("a.b.n")], meter_provider=NoOpMeterProvider())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetricsReporter([m.counter("a.b.n")], meter_provider=sink.provider)


# ----------------------------------------------------------------------------- any event


class NoText:
    """A value whose text cannot be produced."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class BadEquality:
    """A hashable value that cannot be compared."""

    def __hash__(self) -> int:
        return 1  # the hash of 1 and True: it meets those in a dict

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison")


def cyclic_list() -> list[Any]:
    items: list[Any] = ["x"]
    items.append(items)
    return items


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(2**62, 2**200).map(lambda n: -n),
    st.integers(2**62, 2**200), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.binary(max_size=4), st.just(Color.RED),
    st.builds(NoText), st.builds(BadEquality), st.builds(lambda: 10**5000),
    st.builds(cyclic_list), st.builds(cyclic_dict),
)
# Values that compare equal, or share a Prometheus label text, and values the SDK drops.
confusable = st.sampled_from(
    [0, 1, True, False, 1.0, "1", "true", "", None, -1, math.inf, math.nan]
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
any_keys = st.one_of(
    st.text(max_size=6), st.integers(), st.booleans(), st.none(),
    st.floats(allow_nan=True), st.binary(max_size=3), st.tuples(st.integers(), st.text()),
    st.sampled_from(["le", "a.b", "a_b", "otel.scope.name"]),
)


def mappings(*known: str) -> st.SearchStrategy[dict[Any, Any]]:
    """Arbitrary dicts that often hold the `known` keys too."""
    usual = st.fixed_dictionaries({}, optional=dict.fromkeys(known, confusable | values))
    extra = st.dictionaries(any_keys, values, max_size=5)
    return st.tuples(extra, usual).map(lambda pair: {**pair[0], **pair[1]})


def every_kind() -> list[m.Metric]:
    return [
        m.counter("any.e.count", tags=["route", "status"]),
        m.sum("any.e.n", tags=["route"]),
        m.sum("any.e.delta", measurement="n", reporter_options={"monotonic": False},
              tags=["status"]),
        m.last_value("any.e.last", measurement="n"),
        m.distribution("any.e.duration", measurement="n", unit=("native", "second"),
                       tags=["route"], reporter_options={"max_series": 5}),
        m.summary("any.e.tagged", measurement=lambda ms: ms.get("n"), tags=lambda md: md),
        m.counter("any.e.kept", keep=lambda md, ms: md.get("route") == ms.get("n")),
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(mappings("n"), mappings("route", "status")), min_size=1, max_size=8))
def test_any_event_is_recorded_or_skipped_and_counted(
    events: list[tuple[dict[Any, Any], dict[Any, Any]]],
) -> None:
    reader, prometheus = prometheus_reader()
    sink = Sink(readers=(reader,))
    registry = vsrtel.Registry(on_error="raise")  # anything escaping a handler fails the test
    reporter = report(sink, registry, *every_kind())
    for measurements, metadata in events:
        registry.execute("any.e", measurements, metadata)
    assert reporter.attached and len(registry.list_handlers(("any", "e"))) == 1
    skipped = reporter.skipped_by_metric
    data = sink.collect()
    counted = sum(p.value for p in data["any.e.count"].data.data_points) if (
        "any.e.count" in data) else 0
    assert counted + skipped["any.e.count"] == len(events)
    histogram = data["any.e.duration"].data.data_points if "any.e.duration" in data else []
    assert sum(p.count for p in histogram) + skipped["any.e.duration"] == len(events)
    # ... and whatever was recorded makes a valid scrape: parseable, no sample twice.
    text = generate_latest(prometheus).decode()
    seen = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, key
            seen.add(key)
    sink.provider.shutdown()


# ----------------------------------------------------------------------------- aggregation


def comparable(sink: Sink) -> dict[str, Any]:
    """What a collection holds, without timestamps: per metric, per attribute set, its value."""
    out: dict[str, Any] = {}
    for name, metric in sink.collect().items():
        points: dict[frozenset[tuple[str, Any]], Any] = {}
        for p in metric.data.data_points:
            attrs = frozenset((p.attributes or {}).items())
            if isinstance(p, HistogramDataPoint):
                points[attrs] = (p.count, pytest.approx(p.sum), tuple(p.bucket_counts),
                                 tuple(p.explicit_bounds), p.min, p.max)
            else:
                points[attrs] = pytest.approx(p.value)
        out[name] = (type(metric.data).__name__, metric.unit, metric.description, points,
                     getattr(metric.data, "is_monotonic", None))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(mappings("n"), mappings("route", "status")), min_size=1, max_size=8))
def test_both_aggregations_export_the_same_data(
    events: list[tuple[dict[Any, Any], dict[Any, Any]]],
) -> None:
    got = []
    for aggregation in ("vsrtel", "otel"):
        sink = Sink()
        registry = vsrtel.Registry(on_error="raise")
        reporter = MetricsReporter(
            every_kind(), meter_provider=sink.provider, registry=registry,
            aggregation=aggregation,  # type: ignore[arg-type]
        ).attach()
        assert reporter.aggregation == aggregation
        for measurements, metadata in events:
            registry.execute("any.e", measurements, metadata)
        got.append((comparable(sink), reporter.skipped_by_metric))
        sink.provider.shutdown()
    assert got[0] == got[1]


def test_aggregation_must_be_known(sink: Sink) -> None:
    with pytest.raises(ValueError, match="aggregation"):
        MetricsReporter([], meter_provider=sink.provider, aggregation="fast")  # type: ignore[arg-type]


def test_a_provider_that_is_not_the_sdks_falls_back_to_instruments() -> None:
    with pytest.warns(RuntimeWarning):
        reporter = MetricsReporter([m.counter("a.b.c")], meter_provider=NoOpMeterProvider())
    assert reporter.aggregation == "otel"


@pytest.mark.parametrize(
    "metric",
    [
        m.counter("h.e.count"),
        m.counter("h.e.count", tags=["who"]),  # the counter's fast path, one tag and two
        m.counter("h.e.count", tags=["who", "node"]),
        m.sum("h.e.n", tags=["who"]),
        m.distribution("h.e.n", reporter_options={"buckets": [1, 10]}),
    ],
    ids=lambda metric: f"{metric.kind.name}-{len(metric.tags)}-tags",
)
@pytest.mark.parametrize("per_thread", [False, True], ids=["shared cells", "per-thread cells"])
def test_four_threads_on_one_series_lose_nothing(
    metric: m.Metric, per_thread: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_aggregation, "PER_THREAD", per_thread)
    # Ask for a thread switch as often as the interpreter allows: a racy update would lose counts.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        check_four_threads(metric)
    finally:
        sys.setswitchinterval(interval)


def check_four_threads(metric: m.Metric) -> None:
    sink = Sink()
    registry = vsrtel.Registry(on_error="raise")
    report(sink, registry, metric)
    per_thread = 20_000
    start = threading.Barrier(5)
    collected: list[Any] = []

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            registry.execute("h.e", {"n": 2}, {"who": "a", "node": 1})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    start.wait()
    while any(th.is_alive() for th in threads):  # collections while the threads count
        collected.append(sink.collect())
    for th in threads:
        th.join()
    (point,) = sink.collect()[metric.name].data.data_points
    if metric.kind.name == "distribution":
        assert point.count == 4 * per_thread and point.sum == 2 * 4 * per_thread
        assert tuple(point.bucket_counts) == (0, 4 * per_thread, 0)
    else:
        assert point.value == 4 * per_thread * (1 if metric.kind.name == "counter" else 2)
    sink.provider.shutdown()


def test_last_value_is_the_latest_write_of_any_thread(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    report(sink, registry, m.last_value("g.e.n"))
    registry.execute("g.e", {"n": 1})
    other = threading.Thread(target=registry.execute, args=("g.e", {"n": 2}))
    other.start()
    other.join()
    assert sink.value("g.e.n") == 2  # that thread has ended: its write still counts
    registry.execute("g.e", {"n": 3})
    assert sink.value("g.e.n") == 3


def test_cumulative_points_keep_their_start_time(sink: Sink, registry: vsrtel.Registry) -> None:
    before = time.time_ns()
    report(sink, registry, m.counter("c.e.count"), m.distribution("c.e.n"))
    registry.execute("c.e", {"n": 1})
    first = {name: metric.data.data_points[0] for name, metric in sink.collect().items()}
    registry.execute("c.e", {"n": 2})
    second = {name: metric.data.data_points[0] for name, metric in sink.collect().items()}
    for name in ("c.e.count", "c.e.n"):
        assert before <= first[name].start_time_unix_nano <= first[name].time_unix_nano
        assert second[name].start_time_unix_nano == first[name].start_time_unix_nano
        assert second[name].time_unix_nano >= first[name].time_unix_nano
    assert second["c.e.count"].value == 2 and second["c.e.n"].count == 2


def test_delta_readers_get_what_was_added_since_their_last_collection(
    registry: vsrtel.Registry,
) -> None:
    from opentelemetry.sdk.metrics import Counter, Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    delta = InMemoryMetricReader(preferred_temporality={
        Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA,
    })
    sink = Sink(readers=(delta,))  # its own reader stays cumulative
    report(sink, registry, m.counter("d.e.count"), m.distribution("d.e.n"))

    def points() -> dict[str, Any]:
        data = delta.get_metrics_data()
        if data is None:  # nothing to report
            return {}
        return {
            metric.name: (metric.data.aggregation_temporality, metric.data.data_points)
            for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
        }

    for _ in range(3):
        registry.execute("d.e", {"n": 1})
    first = points()
    assert first["d.e.count"][0] is AggregationTemporality.DELTA
    assert first["d.e.count"][1][0].value == 3 and first["d.e.n"][1][0].count == 3
    registry.execute("d.e", {"n": 1})
    second = points()
    (counted,), (histogram,) = second["d.e.count"][1], second["d.e.n"][1]
    assert counted.value == 1 and histogram.count == 1 and histogram.sum == 1
    assert counted.start_time_unix_nano == first["d.e.count"][1][0].time_unix_nano
    assert points() == {}  # nothing new: no points, as the SDK does
    assert sink.value("d.e.count") == 4  # the cumulative reader is unaffected
    sink.provider.shutdown()


def histogram_points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    return [
        point for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics
        for metric in sm.metrics if metric.name == name for point in metric.data.data_points
    ]


@pytest.mark.parametrize("per_thread", [False, True], ids=["shared cells", "per-thread cells"])
@pytest.mark.parametrize("aggregation", ["vsrtel", "otel"])
def test_a_delta_histograms_min_and_max_are_its_intervals(
    registry: vsrtel.Registry, per_thread: bool, aggregation: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    monkeypatch.setattr(_aggregation, "PER_THREAD", per_thread)
    delta, rare = (
        InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
        for _ in range(2)
    )
    sink = Sink(readers=(delta, rare))  # its own reader is cumulative
    MetricsReporter([m.distribution("d.e.n", tags=["t"])], meter_provider=sink.provider,
                      registry=registry, aggregation=aggregation).attach()

    def extremes(reader: InMemoryMetricReader) -> list[tuple[float, float, float]]:
        return [(p.min, p.max, p.sum) for p in histogram_points(reader, "d.e.n")]

    def record(*values: float) -> None:
        for value in values:
            registry.execute("d.e", {"n": value}, {"t": "x"})

    record(5, 1000)
    assert extremes(delta) == extremes(rare) == [(5, 1000, 1005)]
    record(7, 8)
    thread = threading.Thread(target=record, args=(9,))  # a thread that ends: its cells retire
    thread.start()
    thread.join()
    assert extremes(delta) == [(7, 9, 24)]
    assert extremes(sink.reader) == [(5, 1000, 1029)]  # cumulative: all time
    record(20)
    assert extremes(delta) == [(20, 20, 20)]
    assert extremes(rare) == [(7, 20, 44)]  # since its own last collection
    assert extremes(sink.reader) == [(5, 1000, 1049)]
    assert extremes(delta) == []  # nothing new
    record(6)
    assert extremes(delta) == [(6, 6, 6)]
    sink.provider.shutdown()


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "its registry dropped"])
def test_a_provider_is_freed_once_its_reporters_are_gone(detach: bool) -> None:
    registry = vsrtel.Registry()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    reporter = MetricsReporter([m.distribution("f.e.n")], meter_provider=provider,
                                 registry=registry).attach()
    registry.execute("f.e", {"n": 1})
    if detach:
        reporter.detach()
    provider.shutdown()  # which also drops the SDK's own atexit reference to it
    freed = weakref.ref(provider)
    del provider, reporter, registry
    gc.collect()
    assert freed() is None


def test_an_attached_reporter_keeps_its_names_when_dropped(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    MetricsReporter([m.counter("g.e.count")], meter_provider=sink.provider,
                      registry=registry).attach()  # no reference kept: its handlers keep it
    gc.collect()
    with pytest.raises(ValueError, match="another MetricsReporter attached"):
        MetricsReporter([m.counter("g.e.count")], meter_provider=sink.provider,
                          registry=registry)
    registry.execute("g.e", {})
    assert sink.value("g.e.count") == 1


def test_readers_added_later_see_the_series(sink: Sink, registry: vsrtel.Registry) -> None:
    report(sink, registry, m.counter("r.e.count"))
    registry.execute("r.e", {})
    later = InMemoryMetricReader()
    sink.provider.add_metric_reader(later)
    data = later.get_metrics_data()
    assert data is not None
    [metric] = [x for rm in data.resource_metrics for sm in rm.scope_metrics for x in sm.metrics]
    assert metric.name == "r.e.count" and metric.data.data_points[0].value == 1


def test_a_newer_reporter_of_a_metric_restarts_its_series(
    sink: Sink, registry: vsrtel.Registry
) -> None:
    old = report(sink, registry, m.counter("n.e.count"))
    registry.execute("n.e", {})
    registry.execute("n.e", {})
    old.detach()
    assert sink.value("n.e.count") == 2  # a detached reporter's series are still exported
    report(sink, registry, m.counter("n.e.count"))
    registry.execute("n.e", {})
    (point,) = sink.collect()["n.e.count"].data.data_points  # one metric, not two
    assert point.value == 1


def test_one_metric_by_both_aggregations_on_one_provider_exports_once(
    sink: Sink, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    # Two attached reporters of one name are refused, but a detached one's series stay exported
    # and the SDK's instruments of the other report the same name.
    first = MetricsReporter(
        [m.counter("x.e.count")], meter_provider=sink.provider, registry=registry
    ).attach()
    registry.execute("x.e", {})
    first.detach()
    MetricsReporter(
        [m.counter("x.e.count")], meter_provider=sink.provider, registry=registry,
        aggregation="otel",
    ).attach()
    registry.execute("x.e", {})
    with caplog.at_level(logging.WARNING, logger="vsrtel"):
        data = sink.reader.get_metrics_data()
        sink.collect()
    assert data is not None
    names = [x.name for rm in data.resource_metrics for sm in rm.scope_metrics for x in sm.metrics]
    assert names == ["x.e.count"]
    assert sum("x.e.count" in r.getMessage() for r in caplog.records) == 1  # warned once


# ----------------------------------------------------------------------------- as the peers do


def test_a_tag_value_without_text_drops_its_event_counted_and_reported_once(
    sink: Sink, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    # telemetry_metrics_prometheus_core drops such a series and logs it; exporting it under ""
    # would merge it with genuinely empty values.
    caplog.set_level(logging.DEBUG, logger="vsrtel")
    reporter = report(
        sink, registry,
        m.counter("t.e.count", tags=["a"]),
        m.counter("t.e.called", tags=lambda md: {"a": md["a"]}),
    )
    for value in (NoText(), NoText(), 10**5000, ""):
        registry.execute("t.e", {}, {"a": value})
    assert {key: p.value for key, p in sink.points("t.e.count").items()} == {
        frozenset({("a", "")}): 1
    }
    assert {key: p.value for key, p in sink.points("t.e.called").items()} == {frozenset(): 1}
    assert reporter.skipped_by_metric == {"t.e.count": 3, "t.e.called": 3}
    warned = [r for r in caplog.records if "cannot be turned into text" in r.getMessage()]
    assert [r.levelno for r in warned].count(logging.WARNING) == 2  # once per metric
    assert reporter.attached


def test_a_unit_vsrtel_does_not_convert_is_exported_and_named_as_given(
    registry: vsrtel.Registry,
) -> None:
    reader, prometheus = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    defs = [
        m.sum("jobs.done.n", unit="each"),
        m.last_value("queue.size.depth", unit="{job}"),
        m.sum("disk.written.size", unit="bytes"),
    ]
    with MetricsReporter(defs, meter_provider=provider, registry=registry):
        registry.execute("jobs.done", {"n": 2})
        registry.execute("queue.size", {"depth": 5})
        registry.execute("disk.written", {"size": 100})
        text = generate_latest(prometheus).decode()
    provider.shutdown()
    samples = {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples["jobs_done_n_each_total"] == 2
    assert samples["queue_size_depth"] == 5  # an annotation names no suffix, as in OTel
    assert samples["disk_written_size_bytes_total"] == 100


def test_a_new_kind_is_a_row_of_facts_and_maybe_a_cell_shape(
    registry: vsrtel.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test-only kind, "maximum" (the largest value seen), added as the design notes say: a
    `MetricKind` row (and its constructor, here `_define` with the row), and a new cell shape
    row since no shape keeps a maximum. Nothing else changes: names, checks, the recorder (which
    calls the shape's `record`, not inlined) and the collection follow from the rows."""

    def record_max(cell: list[Any], value: Any, bounds: Any, stamp: Any) -> None:
        if value > cell[0]:
            cell[0] = value

    def merge_max(total: list[Any], cell: list[Any], bounds: Any) -> None:
        total[0] = max(total[0], cell[0])

    last = _aggregation.SHAPES["last"]
    shape = _aggregation.Shape("max", lambda bounds: [-math.inf], record_max, merge_max, last.read)
    monkeypatch.setitem(_aggregation.SHAPES, "max", shape)
    maximum = m.MetricKind(
        "maximum", measured=True, monotonic=False, non_negative=False, prometheus_type="gauge",
        instrument="create_gauge", labels=frozenset(), cell="max", options=frozenset(),
        description="Largest value of",
    )
    definition = m._define(maximum, "t.e.latency", tags=["route"])
    assert definition.description == "Largest value of measurement 'latency' of events t.e"
    reader, prometheus = prometheus_reader()
    sink = Sink(readers=(reader,))
    reporter = report(sink, registry, definition)
    for value, route in ((3, "/a"), (9, "/a"), (4, "/a"), (-2, "/b")):
        registry.execute("t.e", {"latency": value}, {"route": route})
    assert sink.value("t.e.latency", route="/a") == 9
    assert sink.value("t.e.latency", route="/b") == -2
    [family] = [
        f for f in text_string_to_metric_families(generate_latest(prometheus).decode())
        if f.name == "t_e_latency"
    ]
    assert family.type == "gauge"
    with pytest.raises(ValueError, match="would both use"):  # its names are checked too
        MetricsReporter(
            [definition, m.last_value("t_e.latency", event_name="t.e")],
            meter_provider=sink.provider,
        )
    reporter.detach()
    sink.provider.shutdown()


def test_the_reporter_reads_like_a_handle() -> None:
    registry = vsrtel.Registry()
    reporter = MetricsReporter(
        [m.counter("r.e.count"), m.sum("r.e.n")],
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        registry=registry,
    )
    assert not reporter.attached and reporter.skipped == 0
    with reporter.attach() as same:
        assert same is reporter and reporter.attached
        assert all(str(r.id).startswith(reporter.id) for r in registry.list_handlers())
        registry.execute("r.e", {})  # no "n": the sum skips it
    assert not reporter.attached and reporter.detach() is False
    assert reporter.skipped == 1 and reporter.skipped_by_metric == {"r.e.count": 0, "r.e.n": 1}
