"""OTLP export end to end, through a real collector: rotel (``rotel-agent``, the ``rotel`` wheel).

The other OTLP tests talk to a receiver written in their own file. Here an independent
collector receives what ``vsrtel demo``, the metrics reporter and a small logging app export
over OTLP/HTTP, and the tests check what it received. rotel is started on free loopback ports
with the ``blackhole`` exporter and its Python processor hook (``--otlp-with-trace-processor``,
``--otlp-with-metrics-processor``, ``--otlp-with-logs-processor``): the processor below runs
inside rotel's own embedded interpreter on every batch rotel has decoded, and writes it as JSON
for the test to read.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import vsrtel
from vsrtel.export import otel
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.handlers.spans import attach_tracer
from vsrtel.vsr import demo, simulate
from vsrtel.vsr.recommended import METRICS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CLIENT = "vsr.client.request"
CLIENT_REQUEST = "vsr.protocol.client_request"
OPERATION = "vsr.state_machine.operation"
STATUS_ERROR = 2  # OTLP Status.code
START_TIMEOUT = 20.0
RECEIVE_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
DEMO_TIMEOUT = 120.0

# Runs inside rotel (its embedded CPython, stdlib only), once per batch it received. It never
# raises: a failure is written down as an "error" record, which the tests assert is absent.
PROCESSOR = '''
import json
import os
import time
import uuid

OUT = {out!r}


def _value(any_value):
    value = getattr(any_value, "value", None)
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def _attributes(key_values):
    return {{kv.key: _value(kv.value) for kv in key_values}}


def _resource(resource):
    return _attributes(resource.attributes) if resource is not None else {{}}


def _write(signal, record):
    # One file per batch, renamed into place once complete: batches processed concurrently
    # cannot interleave, and the test never reads half a batch. Names sort in arrival order.
    name = "%s-%020d-%s.json" % (signal, time.time_ns(), uuid.uuid4().hex)
    with open(os.path.join(OUT, "." + name), "w") as f:
        json.dump(record, f)
    os.replace(os.path.join(OUT, "." + name), os.path.join(OUT, name))


def process_spans(resource_spans):
    try:
        spans = []
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                status = span.status
                spans.append({{
                    "trace_id": bytes(span.trace_id).hex(),
                    "span_id": bytes(span.span_id).hex(),
                    "parent_span_id": bytes(span.parent_span_id).hex(),
                    "name": span.name,
                    "status_code": status.code if status is not None else 0,
                    "status_message": status.message if status is not None else "",
                    "attributes": _attributes(span.attributes),
                }})
        record = {{"resource": _resource(resource_spans.resource), "spans": spans}}
    except Exception as exc:
        record = {{"error": repr(exc)}}
    _write("traces", record)


def process_logs(resource_logs):
    try:
        records = []
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            for log_record in scope_logs.log_records:
                records.append({{
                    "scope": scope.name if scope is not None else "",
                    "trace_id": bytes(log_record.trace_id).hex(),
                    "span_id": bytes(log_record.span_id).hex(),
                    "severity_number": int(log_record.severity_number),
                    "severity_text": log_record.severity_text,
                    "body": _value(log_record.body),
                    "attributes": _attributes(log_record.attributes),
                }})
        record = {{"resource": _resource(resource_logs.resource), "logs": records}}
    except Exception as exc:
        record = {{"error": repr(exc)}}
    _write("logs", record)


def process_metrics(resource_metrics):
    try:
        metrics = []
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = type(metric.data).__name__.rpartition("_")[2]  # MetricData_Sum -> Sum
                points = metric.data[0].data_points
                metrics.append({{
                    "name": metric.name,
                    "unit": metric.unit,
                    "kind": kind,
                    "points": [{{
                        "attributes": _attributes(point.attributes),
                        "count": getattr(point, "count", None) if kind == "Histogram" else None,
                    }} for point in points],
                }})
        record = {{"resource": _resource(resource_metrics.resource), "metrics": metrics}}
    except Exception as exc:
        record = {{"error": repr(exc)}}
    _write("metrics", record)
'''


def _agent_binary() -> Path:
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        if sys.platform not in ("linux", "darwin"):
            pytest.skip(f"the rotel collector ships no wheel for {sys.platform}")
        pytest.fail("the rotel collector is not installed: pip install -e '.[dev]'")
    binary = Path(spec.origin).parent / "rotel-agent"
    assert binary.is_file(), f"the rotel wheel has no {binary}"
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _clean_env() -> dict[str, str]:
    """This process's environment without OTEL_*, ROTEL_* and PYTHON* variables.

    rotel's embedded interpreter is the system's libpython: our PYTHONHOME/PYTHONPATH are not
    for it.
    """
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "ROTEL_", "PYTHON"))}


class Rotel:
    """One ``rotel-agent`` on loopback whose processor hook records what it received."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.log = workdir / "rotel.out"
        (workdir / "processor.py").write_text(PROCESSOR.format(out=str(workdir)))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # A free port can be taken between our check and rotel's bind: try a few.
        for _ in range(3):
            self.port, grpc_port = _free_port(), _free_port()
            processor = str(self.workdir / "processor.py")
            command = [
                str(self.binary), "start",
                "--exporter", "blackhole",
                "--otlp-http-endpoint", f"127.0.0.1:{self.port}",
                "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
                "--otlp-with-trace-processor", processor,
                "--otlp-with-metrics-processor", processor,
                "--otlp-with-logs-processor", processor,
                "--pid-file", str(self.workdir / "rotel.pid"),
                "--log-file", str(self.workdir / "rotel.log"),
            ]
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=_clean_env(), cwd=self.workdir,
                )
            if self._wait_listening():
                return
            self.stop()
        pytest.fail(f"rotel-agent did not start; its output:\n{self.output()}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def records(self, signal_name: str) -> list[dict[str, Any]]:
        """The batches of ``signal_name`` ("traces", "metrics", "logs") processed so far, in
        order."""
        return [json.loads(path.read_text())
                for path in sorted(self.workdir.glob(f"{signal_name}-*.json"))]

    def wait_for(self, condition: Callable[[], bool]) -> None:
        """Poll until ``condition()`` (rotel batches and processes after answering the sender)."""
        deadline = time.monotonic() + RECEIVE_TIMEOUT
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def rotel(tmp_path: Path) -> Iterator[Rotel]:
    collector = Rotel(_agent_binary(), tmp_path)
    try:
        collector.start()
        yield collector
    finally:
        collector.stop()


def _reference_spans(seed: int, requests: int, clients: int) -> list[Any]:
    """The spans the simulation makes for these arguments, exported in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = vsrtel.Registry()
    attach_tracer(demo.TRACED_SPANS, tracer_provider=provider, registry=registry,
                  span_events=False)
    simulate(seed=seed, requests=requests, clients=clients, faults="none", registry=registry,
             propagation=demo.trace_propagation())
    return list(exporter.get_finished_spans())


def _key(name: str, attributes: Any, status_code: int, status_message: str) -> tuple[Any, ...]:
    return (name, attributes.get("node_id"), attributes["client_id"],
            attributes["request_number"], attributes.get("is_primary"), status_code,
            status_message or "")


def test_demo_traces_arrive_at_rotel_one_trace_per_request(rotel: Rotel) -> None:
    requests, clients = 12, 3
    # The first seed whose run has an operation the state machine rejects (chosen here, not
    # hard-coded, so that a change in the simulation cannot quietly drop that case).
    for seed in range(1, 200):
        reference = _reference_spans(seed, requests, clients)
        if any(s.status.status_code.value == STATUS_ERROR for s in reference):
            break
    else:
        pytest.fail("no seed in 1..199 rejects an operation")

    env = _clean_env()
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep),
        OTEL_EXPORTER_OTLP_ENDPOINT=rotel.endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="5",
    )
    run = subprocess.run(
        [sys.executable, "-m", "vsrtel", "demo", "--seed", str(seed),
         "--requests", str(requests), "--clients", str(clients), "--faults", "none",
         "--no-pace", "--no-metrics", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=DEMO_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["requests_committed"] == requests and report["invariants"] == "ok"

    def received() -> list[dict[str, Any]]:
        return [span for record in rotel.records("traces") for span in record.get("spans", ())]

    def metrics_received() -> dict[str, Any]:
        return {metric["name"]: (record["resource"], metric)
                for record in rotel.records("metrics") for metric in record.get("metrics", ())}

    def logs_received() -> list[dict[str, Any]]:
        return [log for record in rotel.records("logs") for log in record.get("logs", ())]

    rejected_reference = sum(
        s.name == OPERATION and s.status.status_code.value == STATUS_ERROR for s in reference
    )
    rotel.wait_for(lambda: len(received()) >= len(reference))
    rotel.wait_for(lambda: "vsr.protocol.client_request.stop.duration" in metrics_received())
    rotel.wait_for(lambda: sum(
        log["body"] == f"{OPERATION}.exception" for log in logs_received()
    ) >= rejected_reference)
    rotel.stop()  # everything it had is processed: the records are final

    # The demo's metrics went over OTLP too, as the same service.
    resource, duration = metrics_received()["vsr.protocol.client_request.stop.duration"]
    assert resource.get("service.name") == demo.SERVICE_NAME
    assert sum(point["count"] for point in duration["points"]) == requests

    records = rotel.records("traces")
    assert records, f"rotel received no spans; its output:\n{rotel.output()}"
    assert [r["error"] for r in records if "error" in r] == []
    assert {r["resource"].get("service.name") for r in records} == {demo.SERVICE_NAME}
    spans = received()

    # Exactly the spans the simulation made: same requests, replicas, roles and statuses.
    assert Counter(
        _key(s["name"], s["attributes"], s["status_code"], s["status_message"]) for s in spans
    ) == Counter(
        _key(s.name, s.attributes, s.status.status_code.value, s.status.description)
        for s in reference
    )

    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    assert len(traces) == requests  # one trace per client request
    requests_seen = set()
    rejected = 0
    for trace in traces.values():
        clients_ = [s for s in trace if s["name"] == CLIENT]
        roots = [s for s in trace if s["name"] == CLIENT_REQUEST]
        operations = [s for s in trace if s["name"] == OPERATION]
        assert len(clients_) == len(roots) == 1 and len(operations) == 3 and len(trace) == 5
        # The client starts the trace; the primary's request span is its child.
        assert clients_[0]["parent_span_id"] == ""
        root = roots[0]
        assert root["parent_span_id"] == clients_[0]["span_id"]
        assert root["attributes"]["is_primary"] is True
        # Each replica executed the operation, as a child of the primary's request span.
        assert all(op["parent_span_id"] == root["span_id"] for op in operations)
        assert sorted(op["attributes"]["node_id"] for op in operations) == [0, 1, 2]
        primaries = [op for op in operations if op["attributes"]["is_primary"]]
        assert [op["attributes"]["node_id"] for op in primaries] == [root["attributes"]["node_id"]]
        request = (root["attributes"]["client_id"], root["attributes"]["request_number"])
        assert all(
            (op["attributes"]["client_id"], op["attributes"]["request_number"]) == request
            for op in operations
        )
        requests_seen.add(request)
        # A rejected operation is rejected by every replica, with an error status saying why.
        failed = [op for op in operations if op["status_code"] == STATUS_ERROR]
        assert len(failed) in (0, 3)
        if failed:
            rejected += 1
            assert all(op["attributes"]["operation"] == "div" for op in failed)
            assert all("division by zero" in op["status_message"] for op in failed)
    assert len(requests_seen) == requests
    assert rejected >= 1

    # The demo's log records: each rejected operation logged at error by each replica, with the
    # trace and span of that replica's operation span, as the same service.
    log_batches = rotel.records("logs")
    assert [r["error"] for r in log_batches if "error" in r] == []
    assert {r["resource"].get("service.name") for r in log_batches} == {demo.SERVICE_NAME}
    failed_operations = {
        (s["trace_id"], s["span_id"])
        for s in spans if s["name"] == OPERATION and s["status_code"] == STATUS_ERROR
    }
    errors = [log for log in logs_received() if log["body"] == f"{OPERATION}.exception"]
    assert len(errors) == len(failed_operations) == 3 * rejected
    assert {(log["trace_id"], log["span_id"]) for log in errors} == failed_operations
    assert {(log["severity_number"], log["severity_text"]) for log in errors} == {(17, "ERROR")}
    assert all(
        "division by zero" in log["attributes"]["exception.stacktrace"] for log in errors
    )


def test_metrics_arrive_at_rotel_over_otlp(
    rotel: Rotel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The library path a program would wire: otel.configure's meter provider, with the VSR
    # metrics reporter attached.
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    requests = 20
    sent = InMemoryMetricReader()
    setup = otel.configure("vsrtel-collector-test", metric_readers=[sent])
    registry = vsrtel.Registry()
    reporter = MetricsReporter(METRICS, meter_provider=setup.meter_provider, registry=registry)
    reporter.attach()
    try:
        simulate(seed=1, requests=requests, faults="none", registry=registry)
        data = sent.get_metrics_data()
        expected = {
            metric.name
            for resource_metrics in (data.resource_metrics if data else ())
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
    finally:
        reporter.detach()
        assert setup.shutdown(), "the OTLP metrics were not all exported to rotel"

    def received() -> dict[str, dict[str, Any]]:
        return {metric["name"]: metric for record in rotel.records("metrics")
                for metric in record.get("metrics", ())}

    rotel.wait_for(lambda: expected <= received().keys())
    rotel.stop()
    records = rotel.records("metrics")
    assert records, f"rotel received no metrics; its output:\n{rotel.output()}"
    assert [r["error"] for r in records if "error" in r] == []
    assert {r["resource"].get("service.name") for r in records} == {"vsrtel-collector-test"}
    metrics = received()
    assert expected and metrics.keys() == expected

    duration = metrics["vsr.protocol.client_request.stop.duration"]
    assert (duration["kind"], duration["unit"]) == ("Histogram", "s")
    # Cumulative: the last batch holds every request (one attempt each, without faults).
    assert sum(point["count"] for point in duration["points"]) == requests
    commit_number = metrics["vsr.replica.commit_number"]
    assert commit_number["kind"] == "Gauge"
    assert sorted(p["attributes"]["node_id"] for p in commit_number["points"]) == ["0", "1", "2"]
    assert metrics["vsr.protocol.prepare.sent.count"]["kind"] == "Sum"


# A small application: stdlib logging and structlog, both exporting to the logger provider that
# otel.configure builds from the OTEL_* variables, inside vsrtel spans traced over OTLP.
APP = """
import logging

import structlog

import vsrtel
from vsrtel import logs
from vsrtel.export import otel
from vsrtel.handlers import spans

telemetry = otel.configure("logs-example-app")
spans.attach_tracer(["shop"], tracer_provider=telemetry.tracer_provider)

root = logging.getLogger()
root.setLevel(logging.INFO)
root.addHandler(logs.OTelHandler(telemetry.logger_provider))
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        logs.add_trace_context,
        logs.OTelProcessor(telemetry.logger_provider, name="shop.structlog"),
        structlog.processors.JSONRenderer(),
    ],
)
log = structlog.get_logger()

for order in (1, 2):
    with vsrtel.span("shop.order", {"order": order}):
        logging.getLogger("shop.stdlib").warning(
            "order %d: charging with password=%s", order, "SECRET-VALUE"
        )
        log.error("order charged", order=order, api_key="SECRET-VALUE")
logging.getLogger("shop.stdlib").info("outside every span")
assert telemetry.shutdown()
"""


def test_an_app_using_stdlib_logging_and_structlog_exports_logs_with_their_traces(
    rotel: Rotel, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = _clean_env()
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep),
        OTEL_EXPORTER_OTLP_ENDPOINT=rotel.endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="5",
        OTEL_METRICS_EXPORTER="none",
    )
    run = subprocess.run(
        [sys.executable, str(app)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=DEMO_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr

    def logs_received() -> list[dict[str, Any]]:
        return [log for record in rotel.records("logs") for log in record.get("logs", ())]

    def spans_received() -> list[dict[str, Any]]:
        return [span for record in rotel.records("traces") for span in record.get("spans", ())]

    rotel.wait_for(lambda: len(logs_received()) >= 5 and len(spans_received()) >= 2)
    rotel.stop()
    batches = rotel.records("logs")
    assert [r["error"] for r in batches if "error" in r] == []
    assert {r["resource"].get("service.name") for r in batches} == {"logs-example-app"}
    orders = {
        span["attributes"]["order"]: (span["trace_id"], span["span_id"])
        for span in spans_received()
    }
    assert len(orders) == 2 and len({trace_id for trace_id, _ in orders.values()}) == 2
    received = logs_received()
    assert "SECRET-VALUE" not in json.dumps(received)
    by_scope: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for log in received:
        by_scope[log["scope"]].append(log)
    stdlib, structlogged = by_scope["shop.stdlib"], by_scope["shop.structlog"]
    assert [
        (log["body"], log["severity_text"], log["severity_number"], log["trace_id"],
         log["span_id"])
        for log in stdlib
    ] == [
        ("order 1: charging with password=[REDACTED]", "WARN", 13, *orders[1]),
        ("order 2: charging with password=[REDACTED]", "WARN", 13, *orders[2]),
        ("outside every span", "INFO", 9, "", ""),
    ]
    assert [
        (log["body"], log["severity_text"], log["attributes"]["order"],
         log["attributes"]["api_key"], log["trace_id"], log["span_id"])
        for log in structlogged
    ] == [
        ("order charged", "ERROR", 1, "[REDACTED]", *orders[1]),
        ("order charged", "ERROR", 2, "[REDACTED]", *orders[2]),
    ]
