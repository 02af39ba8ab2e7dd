"""vsrtel.vsr.demo: the logs, metrics and tracing wiring of ``vsrtel demo``."""

from __future__ import annotations

import io
import logging
import urllib.request
from collections import defaultdict

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import vsrtel
from vsrtel.export import otel
from vsrtel.handlers.spans import attach_tracer
from vsrtel.vsr import demo, simulate


def test_one_client_request_is_one_trace_across_the_replicas() -> None:
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
        roots = [s for s in spans if s.name == "vsr.protocol.client_request"]
        operations = [s for s in spans if s.name == "vsr.state_machine.operation"]
        assert len(roots) == 1 and len(operations) == 3
        root = roots[0]
        [client] = [s for s in spans if s.name == "vsr.client.request"]
        assert client.parent is None
        assert root.parent is not None and root.parent.span_id == client.context.span_id
        assert all(op.parent is not None and op.parent.span_id == root.context.span_id
                   for op in operations)
        assert sorted(op.attributes["node_id"] for op in operations) == [0, 1, 2]  # type: ignore[index,misc]
        assert root.attributes is not None
        assert (root.attributes["client_id"], root.attributes["request_number"]) == (
            operations[0].attributes["client_id"],  # type: ignore[index]
            operations[0].attributes["request_number"],  # type: ignore[index]
        )
        # Simulated time: the request span ends when the operation runs on its primary.
        assert root.end_time is not None and root.start_time is not None
        assert 0 < root.end_time - root.start_time < 20_000_000


def test_metrics_are_served_for_prometheus_while_the_cluster_runs() -> None:
    registry = vsrtel.Registry()
    server, reporter = demo.serve_metrics(registry, 0)
    try:
        simulate(seed=1, requests=30, faults="heavy", registry=registry)
        with urllib.request.urlopen(server.url) as response:
            text = response.read().decode()
    finally:
        reporter.detach()
        server.close()
    assert 'vsr_replica_commit_number{node_id="0"' in text
    assert "vsr_protocol_client_request_stop_duration_seconds_bucket" in text
    assert "vsr_protocol_prepare_sent_count_total" in text
    assert reporter.skipped == 0
    assert registry.list_handlers() == []


def test_the_metrics_resource_names_the_demo_as_its_traces_do() -> None:
    registry = vsrtel.Registry()
    server, reporter = demo.serve_metrics(registry, 0)
    try:
        simulate(seed=1, requests=3, faults="none", registry=registry)
        with urllib.request.urlopen(server.url) as response:
            text = response.read().decode()
    finally:
        reporter.detach()
        server.close()
    [target_info] = [line for line in text.splitlines() if line.startswith("target_info{")]
    assert f'service_name="{demo.SERVICE_NAME}"' in target_info


def test_logs_show_view_changes_and_state_transfers_only() -> None:
    registry = vsrtel.Registry()
    stream = io.StringIO()
    handler_ids = demo.attach_logs(registry, stream)
    report = simulate(seed=3, requests=60, faults="heavy", registry=registry)
    for handler_id in handler_ids:
        registry.detach(handler_id)
    lines = stream.getvalue().splitlines()
    assert report["view_changes"] > 0 and report["state_transfers"] > 0
    assert any("vsr.view_change.complete" in line for line in lines)
    assert any("vsr.state_transfer.snapshot_received" in line for line in lines)
    assert all("[info" in line for line in lines)
    logged = {line.split()[2] for line in lines}
    assert logged <= set(demo.LOGGED_EVENTS)


def test_otlp_export_follows_the_environment() -> None:
    assert not otel.exports_otlp("traces", {})
    assert otel.exports_otlp("traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}
    assert otel.exports_otlp("traces", endpoint)
    assert not otel.exports_otlp("metrics", endpoint)
    assert otel.exports_otlp("traces", {"OTEL_TRACES_EXPORTER": "otlp"})
    assert not otel.exports_otlp(
        "traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}
    )


def test_export_to_otlp_attaches_the_spans_handler_and_a_reporter() -> None:
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    registry = vsrtel.Registry()
    processor = SimpleSpanProcessor(exporter)
    setup, detach = demo.export_to_otlp(
        registry, span_processors=[processor], metric_readers=[reader]
    )
    try:
        simulate(seed=2, requests=3, faults="none", registry=registry,
                 propagation=demo.trace_propagation())
        data = reader.get_metrics_data()
    finally:
        detach()
        setup.shutdown()
    assert not registry.list_handlers()
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count("vsr.protocol.client_request") == 3
    assert names.count("vsr.state_machine.operation") == 9
    assert data is not None
    metric_names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics
                    for m in sm.metrics}
    assert "vsr.protocol.client_request.stop.duration" in metric_names


def test_logs_take_a_minimum_level() -> None:
    def logged(level: str | int) -> list[str]:
        registry = vsrtel.Registry()
        stream = io.StringIO()
        handler_ids = demo.attach_logs(registry, stream, level)
        simulate(seed=3, requests=60, faults="heavy", registry=registry)
        for handler_id in handler_ids:
            registry.detach(handler_id)
        return stream.getvalue().splitlines()

    info = logged("info")
    assert info and all(line.startswith("[info") for line in info)
    debug = logged("DEBUG")
    assert {line.split()[2] for line in debug} <= set(demo.LOGGED_EVENTS + demo.DEBUG_EVENTS)
    assert [line for line in debug if line.startswith("[info")] == info
    assert any(line.startswith("[debug") for line in debug)
    assert logged("warning") == [] and logged(logging.ERROR) == []


@pytest.mark.parametrize("level", ["loud", "", 1.5, None, True])
def test_an_unknown_log_level_is_refused_by_name(level: object) -> None:
    with pytest.raises(ValueError, match=f"unknown log level {level!r}"):
        demo.attach_logs(vsrtel.Registry(), io.StringIO(), level)  # type: ignore[arg-type]


def test_export_to_otlp_exports_log_records_with_the_trace_of_their_span() -> None:
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    spans_out = InMemorySpanExporter()
    logs_out = InMemoryLogRecordExporter()
    registry = vsrtel.Registry()
    setup, detach = demo.export_to_otlp(
        registry, metrics=False, span_processors=[SimpleSpanProcessor(spans_out)],
        log_processors=[SimpleLogRecordProcessor(logs_out)],
    )
    try:
        # Runs until one has an operation the state machine rejects (each run is exported).
        for seed in range(1, 50):
            simulate(seed=seed, requests=12, clients=3, faults="light", registry=registry,
                     propagation=demo.trace_propagation())
            if any(span.status.status_code.value == 2 for span in spans_out.get_finished_spans()
                   if span.name == "vsr.state_machine.operation"):
                break
    finally:
        detach()
        setup.shutdown()
    assert not registry.list_handlers()
    rejected = {
        (span.context.trace_id, span.context.span_id)
        for span in spans_out.get_finished_spans()
        if span.name == "vsr.state_machine.operation" and span.status.status_code.value == 2
    }
    records = [readable.log_record for readable in logs_out.get_finished_logs()]
    errors = [r for r in records if r.body == "vsr.state_machine.operation.exception"]
    assert rejected and {(r.trace_id, r.span_id) for r in errors} == rejected
    assert len(errors) == len(rejected)
    assert all(r.severity_text == "ERROR" for r in errors)
    assert all(
        "OperationRejected: division by zero" in r.attributes["exception.stacktrace"]
        for r in errors
    )
    levels = {r.body: r.severity_text for r in records}
    assert levels.get("vsr.view_change.start", "WARN") == "WARN"
    assert {body for body in levels} <= {name for name, _ in demo.EXPORTED_LOG_EVENTS}
