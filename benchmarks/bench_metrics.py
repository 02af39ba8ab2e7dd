"""MetricsReporter against its peers: the same tagged counter/histogram update, several ways.

raw OTel: `counter.add(1, attrs)` / `histogram.record(v, attrs)` on an SDK instrument with a
prebuilt dict of the same two attributes. prometheus_client: `counter.labels(a, b).inc()` (the
label lookup per event, as an event-driven caller does it) and a bound child's `inc()`.
reporter: `registry.execute(name, measurements, metadata)` with a `MetricsReporter` turning the
event into that update (measurement lookup, two tags, series cap, unit conversion), once with
its default aggregation in vsrtel and once with `aggregation="otel"` (OpenTelemetry
instruments). Every MeterProvider has an in-memory reader, so no export work is timed, except
in the scrape rows: one Prometheus scrape of 10 metrics (5 counters, 5 distributions) x 1,000
series as `serve_metrics` answers it (vsrtel text: the endpoint's body, without HTTP; and that
body gzipped as the endpoint gzips it), through OpenTelemetry's exporter and `generate_latest`
(the way before, still `serve_registry`'s), and with `aggregation="otel"`; beside them
prometheus_client's own `generate_latest` of its own counters and histograms of the same shape,
and the vsrtel text of 100 x 1,000 series (linear: 10 times the time). The VSR row with
`aggregation="otel"` sits next to `bench_vsr`'s two rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

import vsrtel
from benchmarks._harness import Case, Target, now
from benchmarks.bench_core import FLOOR
from vsrtel import metrics as m
from vsrtel.export import prometheus
from vsrtel.export.prometheus import prometheus_reader, serve_metrics
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.vsr import simulate
from vsrtel.vsr.recommended import METRICS as VSR_METRICS

Aggregation = Literal["vsrtel", "otel"]

EVENT = ("vsr", "protocol", "client_request", "stop")
METADATA = {"operation": "write", "replica": 1}
ATTRS = {"operation": "write", "replica": "1"}  # as the reporter exports them: label text
DURATION_NS = 1_234_567
COUNTER = m.counter("vsr.protocol.client_request.stop.count", tags=["operation", "replica"])
DISTRIBUTION = m.distribution(
    "vsr.protocol.client_request.stop.duration", unit=("native", "second"),
    tags=["operation", "replica"],
)


def _provider() -> MeterProvider:
    return MeterProvider(metric_readers=[InMemoryMetricReader()])


def raw_counter(loops: int) -> int:
    counter = _provider().get_meter("bench").create_counter("vsr.requests")
    add, attrs = counter.add, ATTRS
    start = now()
    for _ in range(loops):
        add(1, attrs)
    return now() - start


def raw_histogram(loops: int) -> int:
    histogram = _provider().get_meter("bench").create_histogram(
        "vsr.duration", unit="s", explicit_bucket_boundaries_advisory=m.buckets_for(DISTRIBUTION)
    )
    record, attrs = histogram.record, ATTRS
    start = now()
    for _ in range(loops):
        # The raw side converts too: the reporter's work includes ns -> s.
        record(DURATION_NS * 1e-9, attrs)
    return now() - start


def prometheus_labels_inc(loops: int) -> int:
    counter = PromCounter(
        "vsr_requests", "requests", ["operation", "replica"], registry=CollectorRegistry()
    )
    labels, md = counter.labels, METADATA
    start = now()
    for _ in range(loops):
        labels(md["operation"], md["replica"]).inc()
    return now() - start


def prometheus_bound_inc(loops: int) -> int:
    counter = PromCounter(
        "vsr_requests", "requests", ["operation", "replica"], registry=CollectorRegistry()
    )
    inc = counter.labels("write", "1").inc
    start = now()
    for _ in range(loops):
        inc()
    return now() - start


def reporter_case(metric: m.Metric, aggregation: Aggregation) -> Callable[[int], int]:
    def run(loops: int) -> int:
        registry = vsrtel.Registry()
        MetricsReporter(
            [metric], meter_provider=_provider(), registry=registry, aggregation=aggregation
        ).attach()
        execute = registry.execute
        name, measurements, metadata = EVENT, {"duration": DURATION_NS}, METADATA
        start = now()
        for _ in range(loops):
            execute(name, measurements, metadata)
        return now() - start

    return run


Scrape = Literal[
    "vsrtel text", "gzip", "OTel exporter", "otel aggregation", "collect", "collect otel"
]


def _scrape_defs(metrics: int) -> list[m.Metric]:
    half = metrics // 2
    return [
        m.counter(f"app.scrape.m{i}.count", event_name=f"app.scrape.m{i}", tags=["id"])
        for i in range(half)
    ] + [
        m.distribution(f"app.scrape.m{i}.duration", event_name=f"app.scrape.m{i}",
                       unit=("native", "second"), tags=["id"])
        for i in range(half, metrics)
    ]


def scrape_case(how: Scrape, metrics: int = 10) -> Callable[[int], int]:
    """One Prometheus scrape of `metrics` metrics (half counters, half distributions) x 1,000
    series: "vsrtel text" as `serve_metrics` answers it (its body, no HTTP), "gzip" that body
    gzipped as the endpoint does, "OTel exporter" through OpenTelemetry's exporter and
    `generate_latest` (the way before; `serve_registry`'s), "otel aggregation" the same with
    `aggregation="otel"`; "collect" the collection of the series by an in-memory reader alone
    (what the scrape's time owes to the aggregation, the formatting left out), "collect otel"
    the same with `aggregation="otel"`."""
    state: dict[str, Any] = {}

    def run(loops: int) -> int:
        if not state:  # built once: filling the series takes a while
            otel = how in ("otel aggregation", "collect otel")
            aggregation: Aggregation = "otel" if otel else "vsrtel"
            if how in ("vsrtel text", "gzip"):
                server = serve_metrics(port=0)
                provider = server.meter_provider
                assert provider is not None
                environ = {"REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_ACCEPT": ""}
                body = lambda: prometheus._exposition(server.registry, environ)[1]  # noqa: E731
                state["server"] = server  # serving until the process ends
            else:
                reader, prom = prometheus_reader()
                memory = InMemoryMetricReader()
                provider = MeterProvider(metric_readers=[reader, memory])
            registry = vsrtel.Registry()
            MetricsReporter(
                _scrape_defs(metrics), meter_provider=provider, registry=registry,
                aggregation=aggregation,
            ).attach()
            for i in range(metrics):
                event = f"app.scrape.m{i}"
                for series in range(1000):
                    registry.execute(event, {"duration": series * 1000}, {"id": series})
            if how == "vsrtel text":
                state["scrape"] = body
            elif how == "gzip":
                text = body()
                state["scrape"] = lambda: prometheus._gzipped(text)
            elif how.startswith("collect"):
                state["scrape"] = memory.get_metrics_data
            else:
                state["scrape"] = lambda: generate_latest(prom)
        scrape = state["scrape"]
        start = now()
        for _ in range(loops):
            scrape()
        return now() - start

    return run


def prometheus_client_scrape(loops: int, state: dict[str, Any] = {}) -> int:  # noqa: B006
    """prometheus_client's `generate_latest` of its own 5 counters and 5 histograms x 1,000
    series, shaped as the scrape rows' (one label, the same buckets, one observation each)."""
    if not state:
        prom = CollectorRegistry()
        buckets = m.buckets_for(_scrape_defs(10)[-1])
        for i in range(5):
            counter = PromCounter(f"app_scrape_m{i}_count", "Number of events", ["id"],
                                  registry=prom)
            for series in range(1000):
                counter.labels(str(series)).inc()
        for i in range(5, 10):
            histogram = PromHistogram(f"app_scrape_m{i}_duration_seconds", "Distribution",
                                      ["id"], registry=prom, buckets=buckets)
            for series in range(1000):
                histogram.labels(str(series)).observe(series * 1e-6)
        state["registry"] = prom
    prom = state["registry"]
    start = now()
    for _ in range(loops):
        generate_latest(prom)
    return now() - start


def vsr_request_otel(loops: int) -> int:
    """`bench_vsr`'s request + metrics row, with the reporter on OpenTelemetry instruments."""
    total = done = 0
    while done < loops:
        registry = vsrtel.Registry()
        reporter = MetricsReporter(
            VSR_METRICS, meter_provider=_provider(), registry=registry, aggregation="otel"
        ).attach()
        start = now()
        simulate(seed=done, requests=200, faults="none", registry=registry)
        total += now() - start
        reporter.detach()
        done += 200
    return total * loops // done


CASES = [
    Case("otel counter.add (raw, 2 attributes)", raw_counter),
    Case("prometheus_client labels(2).inc()", prometheus_labels_inc),
    Case("prometheus_client bound child inc()", prometheus_bound_inc),
    Case("execute -> reporter counter, 2 tags (otel aggregation)",
         reporter_case(COUNTER, "otel")),
    Case("execute -> reporter counter, 2 tags", reporter_case(COUNTER, "vsrtel")),
    Case("otel histogram.record (raw, 2 attributes)", raw_histogram),
    Case("execute -> reporter distribution, 2 tags (otel aggregation)",
         reporter_case(DISTRIBUTION, "otel")),
    Case("execute -> reporter distribution, 2 tags", reporter_case(DISTRIBUTION, "vsrtel")),
    Case("prometheus_client generate_latest, 10 metrics x 1,000 series",
         prometheus_client_scrape),
    Case("scrape 10 metrics x 1,000 series (otel aggregation)",
         scrape_case("otel aggregation")),
    Case("scrape 10 metrics x 1,000 series (OTel exporter)", scrape_case("OTel exporter")),
    Case("scrape 10 metrics x 1,000 series (vsrtel text)", scrape_case("vsrtel text")),
    Case("gzip that scrape (level 1)", scrape_case("gzip")),
    Case("scrape 100 metrics x 1,000 series (vsrtel text)", scrape_case("vsrtel text", 100)),
    Case("collect 10 metrics x 1,000 series (otel aggregation)", scrape_case("collect otel")),
    Case("collect 10 metrics x 1,000 series", scrape_case("collect")),
    Case("vsr simulated request + metrics reporter (otel aggregation)", vsr_request_otel),
]

TARGETS = [
    # 0.6 us where the floor took 72 ns (see bench_core).
    Target("reporter counter (2 tags) vs floor (0.6 us at a 72 ns floor)",
           "execute -> reporter counter, 2 tags", FLOOR, 8.3),
    Target("reporter counter vs raw OTel counter.add", "execute -> reporter counter, 2 tags",
           "otel counter.add (raw, 2 attributes)", 0.125),
    Target("reporter distribution vs raw OTel histogram.record",
           "execute -> reporter distribution, 2 tags",
           "otel histogram.record (raw, 2 attributes)", round(1 / 6, 3)),
    Target("reporter counter vs prometheus_client labels().inc()",
           "execute -> reporter counter, 2 tags", "prometheus_client labels(2).inc()", 1.0),
    Target("vsr request + metrics vs without", "vsr simulated request + metrics reporter",
           "vsr simulated request (3 replicas, ~23 events)", 1.15),
    Target("scrape 10x1,000 series vs prometheus_client generate_latest (≥ 8x faster)",
           "scrape 10 metrics x 1,000 series (vsrtel text)",
           "prometheus_client generate_latest, 10 metrics x 1,000 series", 0.125),
    Target("scrape 100x1,000 series vs 10x1,000 (linear: 10x, with slack)",
           "scrape 100 metrics x 1,000 series (vsrtel text)",
           "scrape 10 metrics x 1,000 series (vsrtel text)", 12.0),
    Target("scrape 10x1,000 series vs otel aggregation",
           "scrape 10 metrics x 1,000 series (vsrtel text)",
           "scrape 10 metrics x 1,000 series (otel aggregation)", 1.0),
    Target("collect 10x1,000 series vs otel aggregation", "collect 10 metrics x 1,000 series",
           "collect 10 metrics x 1,000 series (otel aggregation)", 1.0),
    Target("scrape 10x1,000 series vs the way through OTel's exporter",
           "scrape 10 metrics x 1,000 series (vsrtel text)",
           "scrape 10 metrics x 1,000 series (OTel exporter)", 0.125),
]
