"""A whole request, the client included, is one OpenTelemetry trace when clients trace."""

from __future__ import annotations

from collections import defaultdict

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import vsrtel
from vsrtel.handlers.spans import attach_tracer
from vsrtel.vsr import demo, simulate


def test_the_client_span_is_the_root_of_its_request_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = vsrtel.Registry()
    attach_tracer(demo.TRACED_SPANS, tracer_provider=provider, registry=registry,
                  span_events=False)
    report = simulate(seed=4, requests=12, faults="none", registry=registry,
                      propagation=demo.trace_propagation())
    assert report["invariants"] == "ok"
    traces: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in exporter.get_finished_spans():
        traces[span.context.trace_id].append(span)
    assert len(traces) == 12
    for spans in traces.values():
        by_name = defaultdict(list)
        for span in spans:
            by_name[span.name].append(span)
        [client] = by_name["vsr.client.request"]
        [request] = by_name["vsr.protocol.client_request"]
        assert client.parent is None
        assert request.parent is not None and request.parent.span_id == client.context.span_id
        assert len(by_name["vsr.state_machine.operation"]) == 3
