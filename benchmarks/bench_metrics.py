"""MetricsReporter against raw OpenTelemetry: the same counter/histogram update, two ways.

raw: `counter.add(1, attrs)` / `histogram.record(v, attrs)` on an SDK instrument with a prebuilt
attribute dict. reporter: `registry.execute(name, measurements, metadata)` with a
`MetricsReporter` turning the event into that update (measurement lookup, tag extraction,
series cap, unit conversion). Both use a MeterProvider with an in-memory reader, so no export
work is timed.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import vsrtel
from benchmarks._harness import Case, Target, now
from vsrtel.handlers import metrics as m

EVENT = ("vsr", "protocol", "client_request", "stop")
METADATA = {"operation": "write", "replica": 1}
ATTRS = {"operation": "write"}
DURATION_NS = 1_234_567


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
        "vsr.duration", unit="s", explicit_bucket_boundaries_advisory=m.buckets_for(
            m.distribution("x.y", unit=("native", "second"))
        )
    )
    record, attrs = histogram.record, ATTRS
    start = now()
    for _ in range(loops):
        # The raw side converts too: the reporter's work includes ns -> s.
        record(DURATION_NS * 1e-9, attrs)
    return now() - start


def reporter_case(metric: m.Metric) -> Any:
    def run(loops: int) -> int:
        registry = vsrtel.Registry()
        m.MetricsReporter([metric], meter_provider=_provider(), registry=registry).attach()
        execute = registry.execute
        name, measurements, metadata = EVENT, {"duration": DURATION_NS}, METADATA
        start = now()
        for _ in range(loops):
            execute(name, measurements, metadata)
        return now() - start

    return run


CASES = [
    Case("otel counter.add (raw)", raw_counter),
    Case("execute -> reporter counter", reporter_case(
        m.counter("vsr.protocol.client_request.stop.count", tags=["operation"]))),
    Case("otel histogram.record (raw)", raw_histogram),
    Case("execute -> reporter distribution", reporter_case(
        m.distribution("vsr.protocol.client_request.stop.duration",
                       unit=("native", "second"), tags=["operation"]))),
]

TARGETS = [
    Target("reporter counter vs raw OTel", "execute -> reporter counter",
           "otel counter.add (raw)", 1.3),
    Target("reporter distribution vs raw OTel", "execute -> reporter distribution",
           "otel histogram.record (raw)", 1.3),
]
