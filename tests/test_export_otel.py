"""Tests for vsrtel.export.otel: providers, resources and exporters chosen from OTEL_* variables."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vsrtel.export import otel

_OTEL_VARS = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_SCHEDULE_DELAY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


class _Collector:
    """A minimal OTLP/HTTP receiver on loopback that records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def span_names(self) -> list[str]:
        names = []
        for path, body in self.requests:
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        names.extend(span.name for span in scope_spans.spans)
        return names

    def metric_names(self) -> list[str]:
        names = []
        for path, body in self.requests:
            if path == "/v1/metrics":
                request = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in request.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        names.extend(metric.name for metric in scope_metrics.metrics)
        return names

    def log_records(self) -> list[tuple[dict[str, Any], Any]]:
        """Each log record received, with its resource's attributes."""
        records = []
        for path, body in self.requests:
            if path == "/v1/logs":
                request = ExportLogsServiceRequest.FromString(body)
                for resource_logs in request.resource_logs:
                    resource = {
                        kv.key: kv.value.string_value for kv in resource_logs.resource.attributes
                    }
                    for scope_logs in resource_logs.scope_logs:
                        records.extend((resource, record) for record in scope_logs.log_records)
        return records

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    yield c
    c.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _emit(setup: otel.OTel, name: str = "work") -> None:
    with setup.tracer_provider.get_tracer("test").start_as_current_span(name):
        pass
    setup.meter_provider.get_meter("test").create_counter("jobs").add(1)


def test_no_environment_means_no_exporter_no_thread_no_error() -> None:
    before = threading.active_count()
    memory = InMemorySpanExporter()
    setup = otel.configure(span_processors=[SimpleSpanProcessor(memory)])
    assert threading.active_count() == before
    _emit(setup)
    assert [span.name for span in memory.get_finished_spans()] == ["work"]
    assert setup.shutdown() is True
    assert setup.tracer_provider.resource.attributes["service.name"] == "vsrtel"


def test_service_name_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    def name(**kwargs: Any) -> object:
        setup = otel.configure(**kwargs)
        setup.shutdown()
        return setup.tracer_provider.resource.attributes["service.name"]

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,region=eu")
    assert name() == "from-attrs"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert name() == "from-env"
    assert name(service_name="from-arg") == "from-arg"
    setup = otel.configure("svc", resource_attributes={"service.instance.id": "node-1"})
    setup.shutdown()
    attributes = setup.meter_provider._sdk_config.resource.attributes
    assert attributes["service.instance.id"] == "node-1"
    assert attributes["region"] == "eu"
    assert attributes["service.name"] == "svc"


@pytest.mark.parametrize("bad", [3, b"svc"])
def test_bad_service_name_type(bad: Any) -> None:
    with pytest.raises(TypeError, match="service_name"):
        otel.configure(bad)


def test_empty_service_name() -> None:
    with pytest.raises(ValueError, match="service_name"):
        otel.configure("")


def test_bad_console() -> None:
    with pytest.raises(TypeError, match="console"):
        otel.configure(console=42)  # type: ignore[arg-type]


def test_otlp_endpoint_exports_both_signals(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    setup = otel.configure("exported")
    _emit(setup, "exported.work")
    assert setup.shutdown() is True
    assert collector.span_names() == ["exported.work"]
    assert "jobs" in collector.metric_names()


def test_force_flush_exports_without_shutting_down(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    setup = otel.configure()
    _emit(setup, "first")
    assert setup.force_flush() is True
    assert collector.span_names() == ["first"]
    _emit(setup, "second")
    assert setup.shutdown() is True
    assert collector.span_names() == ["first", "second"]


def test_signal_specific_endpoint_only_exports_that_signal(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{collector.url}/v1/traces")
    setup = otel.configure()
    _emit(setup)
    assert setup.shutdown() is True
    assert {path for path, _ in collector.requests} == {"/v1/traces"}


def test_exporter_none_turns_a_signal_off(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    setup = otel.configure()
    _emit(setup)
    assert setup.shutdown() is True
    assert {path for path, _ in collector.requests} == {"/v1/metrics"}


def test_console_stream_prints_spans_and_metrics() -> None:
    out = io.StringIO()
    setup = otel.configure("printed", console=out)
    _emit(setup, "printed.work")
    assert setup.shutdown() is True
    text = out.getvalue()
    first = json.JSONDecoder().raw_decode(text)[0]
    assert first["name"] == "printed.work"
    assert first["resource"]["attributes"]["service.name"] == "printed"
    assert '"jobs"' in text


def test_extra_metric_reader_is_wired() -> None:
    reader = InMemoryMetricReader()
    setup = otel.configure(metric_readers=[reader])
    _emit(setup)
    data = reader.get_metrics_data()
    assert data is not None
    names = [
        metric.name
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    ]
    assert names == ["jobs"]
    setup.shutdown()


def test_unreachable_endpoint_does_not_fail_and_exports_off_the_caller_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    export_threads: list[threading.Thread] = []
    original = OTLPSpanExporter.export

    def recording_export(self: OTLPSpanExporter, spans: Any) -> Any:
        export_threads.append(threading.current_thread())
        return original(self, spans)

    monkeypatch.setattr(OTLPSpanExporter, "export", recording_export)
    setup = otel.configure()
    for i in range(100):
        _emit(setup, f"span-{i}")
    assert export_threads == []  # nothing was exported by the emitting (main) thread
    with caplog.at_level(logging.WARNING):
        setup.shutdown(timeout_millis=5000)
    assert export_threads
    assert threading.main_thread() not in export_threads
    assert any("export" in record.getMessage().lower() for record in caplog.records)


def test_shutdown_is_bounded_when_the_exporter_keeps_retrying(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    # A retry budget far longer than the shutdown deadline below.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "120")
    export_returned = threading.Event()
    original = OTLPSpanExporter.export

    def watched_export(self: OTLPSpanExporter, spans: Any) -> Any:
        try:
            return original(self, spans)
        finally:
            export_returned.set()

    monkeypatch.setattr(OTLPSpanExporter, "export", watched_export)
    setup = otel.configure()
    _emit(setup)
    with caplog.at_level(logging.WARNING, logger="vsrtel"):
        assert setup.shutdown(timeout_millis=300) is False
    assert any("did not finish" in r.getMessage() for r in caplog.records if r.name == "vsrtel")
    # The retrying export was aborted rather than left running for its 120 s budget.
    assert export_returned.wait(30)
    assert setup.shutdown() is True  # idempotent


def test_missing_otlp_extra_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    monkeypatch.setitem(
        sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter", None
    )
    with caplog.at_level(logging.ERROR, logger="vsrtel"):
        setup = otel.configure()
    messages = [r.getMessage() for r in caplog.records if r.name == "vsrtel"]
    assert any("vsrtel[otlp]" in m and "traces" in m for m in messages)
    assert any("vsrtel[otlp]" in m and "metrics" in m for m in messages)
    _emit(setup)
    assert setup.shutdown() is True


def test_globals_untouched_by_default_and_set_on_request() -> None:
    # Global providers can be set once per process, so this runs in a fresh interpreter.
    code = (
        "from opentelemetry import metrics, trace\n"
        "from vsrtel.export import otel\n"
        "a = otel.configure()\n"
        "assert trace.get_tracer_provider() is not a.tracer_provider\n"
        "assert metrics.get_meter_provider() is not a.meter_provider\n"
        "b = otel.configure(set_global=True)\n"
        "assert trace.get_tracer_provider() is b.tracer_provider\n"
        "assert metrics.get_meter_provider() is b.meter_provider\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_prometheus_port_serves_the_meter_providers_metrics() -> None:
    setup = otel.configure("prom-test", prometheus_port=0)
    try:
        assert setup.metrics_server is not None
        assert setup.metrics_server.host == "127.0.0.1"
        _emit(setup)
        with urllib.request.urlopen(setup.metrics_server.url, timeout=5) as response:
            text = response.read().decode()
        assert "jobs_total" in text
        assert 'service_name="prom-test"' in text
    finally:
        setup.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(setup.metrics_server.url, timeout=2)


def test_prometheus_port_in_use_fails_clearly_and_leaks_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} is already in use"):
            otel.configure(prometheus_port=port)


def test_console_exporters_asked_for_by_the_environment_print_to_console_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    out = io.StringIO()
    setup = otel.configure("printed", console_out=out)
    _emit(setup, "printed.work")
    assert setup.shutdown() is True
    assert json.JSONDecoder().raw_decode(out.getvalue())[0]["name"] == "printed.work"
    assert '"jobs"' in out.getvalue()
    assert capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="console_out must be a text stream or None, got 42"):
        otel.configure(console_out=42)  # type: ignore[arg-type]


def test_console_out_without_a_console_asked_for_prints_nothing() -> None:
    out = io.StringIO()
    setup = otel.configure("quiet", console_out=out)
    _emit(setup)
    assert setup.shutdown() is True
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("environ", "traces", "metrics"),
    [
        ({}, set(), set()),
        ({"OTEL_TRACES_EXPORTER": "console"}, {"console"}, set()),
        ({"OTEL_TRACES_EXPORTER": " OTLP , Console", "OTEL_METRICS_EXPORTER": "console"},
         {"otlp", "console"}, {"console"}),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_METRICS_EXPORTER": "console"},
         {"otlp"}, {"otlp", "console"}),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "console,none"},
         set(), {"otlp"}),
    ],
)
def test_env_exporters_reads_the_exporter_and_endpoint_variables(
    environ: dict[str, str], traces: set[str], metrics: set[str]
) -> None:
    assert otel.env_exporters("traces", environ) == traces
    assert otel.env_exporters("metrics", environ) == metrics
    assert otel.exports_otlp("traces", environ) == ("otlp" in traces)


def test_an_unsupported_exporter_name_is_reported_once_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console,zipkin-for-this-test"}
    with caplog.at_level(logging.WARNING, logger="vsrtel"):
        assert otel.env_exporters("traces", environ) == {"console"}
        assert otel.env_exporters("traces", environ) == {"console"}
    [record] = [r for r in caplog.records if "zipkin-for-this-test" in r.getMessage()]
    assert "OTEL_TRACES_EXPORTER" in record.getMessage()
    assert "supported: otlp, console, none" in record.getMessage()
    with pytest.raises(
        ValueError, match="signal must be 'traces', 'metrics' or 'logs', got 'profiles'"
    ):
        otel.env_exporters("profiles")  # type: ignore[arg-type]


# -- the logs signal ----------------------------------------------------------------------------


def _log(setup: otel.OTel, message: str = "job done") -> None:
    from vsrtel import logs

    logger = logging.getLogger("test_export_otel.logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logs.OTelHandler(setup.logger_provider)
    logger.addHandler(handler)
    try:
        logger.warning(message)
    finally:
        logger.removeHandler(handler)


def test_an_otlp_endpoint_exports_log_records_too(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    setup = otel.configure("logged")
    _log(setup)
    assert setup.shutdown() is True
    [(resource, record)] = collector.log_records()
    assert resource["service.name"] == "logged"
    assert (record.body.string_value, record.severity_text) == ("job done", "WARN")


def test_the_logs_endpoint_and_exporter_variables_choose_the_log_exporters(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"{collector.url}/v1/logs")
    setup = otel.configure()
    _emit(setup)
    _log(setup)
    assert setup.shutdown() is True
    assert {path for path, _ in collector.requests} == {"/v1/logs"}

    collector.requests.clear()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    setup = otel.configure()
    _log(setup)
    assert setup.shutdown() is True
    assert collector.log_records() == []


def test_console_log_exporter_on_request() -> None:
    out = io.StringIO()
    setup = otel.configure("printed", console=out)
    _log(setup, "printed line")
    assert setup.shutdown() is True
    assert '"body": "printed line"' in out.getvalue()


def test_console_log_exporter_asked_for_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console")
    out = io.StringIO()
    setup = otel.configure("printed", console_out=out)
    _emit(setup)
    _log(setup, "only logs")
    assert setup.shutdown() is True
    assert '"body": "only logs"' in out.getvalue() and '"jobs"' not in out.getvalue()


def test_no_environment_builds_a_silent_logger_provider() -> None:
    before = threading.active_count()
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    memory = InMemoryLogRecordExporter()
    setup = otel.configure(log_processors=[SimpleLogRecordProcessor(memory)])
    assert threading.active_count() == before
    _log(setup)
    [record] = memory.get_finished_logs()
    assert record.log_record.body == "job done"
    assert setup.shutdown() is True


@pytest.mark.parametrize(
    ("environ", "logs"),
    [
        ({}, set()),
        ({"OTEL_LOGS_EXPORTER": "console"}, {"console"}),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, {"otlp"}),
        ({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://x:4318/v1/logs"}, {"otlp"}),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_LOGS_EXPORTER": "none"}, set()),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, set()),
    ],
)
def test_env_exporters_of_the_logs_signal(environ: dict[str, str], logs: set[str]) -> None:
    assert otel.env_exporters("logs", environ) == logs
    assert otel.exports_otlp("logs", environ) == ("otlp" in logs)


def test_set_global_installs_the_logger_provider_too() -> None:
    code = (
        "from opentelemetry import _logs\n"
        "from vsrtel.export import otel\n"
        "a = otel.configure()\n"
        "assert _logs.get_logger_provider() is not a.logger_provider\n"
        "b = otel.configure(set_global=True)\n"
        "assert _logs.get_logger_provider() is b.logger_provider\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _in_a_forked_child(work: Any) -> Any:
    """`work()`'s JSON result, run in a forked child (as a pre-fork server runs a worker)."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read)
            with os.fdopen(write, "w") as out:
                json.dump(work(), out)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as found:
        text = found.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child failed"
    return json.loads(text)


def test_each_process_has_a_service_instance_id_of_its_own() -> None:
    import uuid

    setup = otel.configure("svc")
    try:
        mine = setup.tracer_provider.resource.attributes["service.instance.id"]
        assert isinstance(mine, str) and uuid.UUID(mine).version == 4
        assert setup.meter_provider._sdk_config.resource.attributes["service.instance.id"] == mine
        # The same for every resource of the process: one process, one instance.
        assert otel.resource("other").attributes["service.instance.id"] == mine
        assert otel.default_resource().attributes["service.instance.id"] == mine

        def child() -> list[Any]:
            configured = otel.configure("svc")
            try:
                return [
                    otel.default_resource().attributes["service.instance.id"],
                    configured.tracer_provider.resource.attributes["service.instance.id"],
                    otel.resource().attributes["service.instance.id"],
                ]
            finally:
                configured.shutdown()

        def child_before_configure() -> Any:  # the parent's configure, inherited (--preload)
            return otel.default_resource().attributes["service.instance.id"]

        first, second = _in_a_forked_child(child), _in_a_forked_child(child)
        inherited = _in_a_forked_child(child_before_configure)
        assert len(set(first)) == len(set(second)) == 1
        assert len({mine, first[0], second[0], inherited}) == 4
    finally:
        setup.shutdown()


def test_a_service_instance_id_the_user_sets_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = otel.configure("svc", resource_attributes={"service.instance.id": "node-1"})
    try:
        assert setup.tracer_provider.resource.attributes["service.instance.id"] == "node-1"
        assert _in_a_forked_child(
            lambda: otel.default_resource().attributes["service.instance.id"]
        ) == "node-1"
    finally:
        setup.shutdown()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=worker-3")
    assert otel.resource().attributes["service.instance.id"] == "worker-3"
