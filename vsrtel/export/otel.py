"""OpenTelemetry setup that follows the ``OTEL_*`` environment conventions.

`configure` builds a `TracerProvider`, a `MeterProvider` and a `LoggerProvider` for vsrtel's
handlers. Exporters are chosen from the standard environment variables, so the same program runs
silently on a laptop and ships telemetry in production:

- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``: the resource (service name defaults to
  ``"vsrtel"``; ``service.instance.id`` to a random UUID of the process, see `resource`).
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (every signal), ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``: add the
  OTLP/HTTP exporters (extra ``vsrtel[otlp]``); headers, timeout, compression and certificates
  come from the matching ``OTEL_EXPORTER_OTLP_*`` variables, read by the exporter itself.
- ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER``: a
  comma-separated list of the names the SDK defines; ``none`` turns a signal's exporters off,
  ``otlp`` turns OTLP on without an endpoint variable (default ``http://localhost:4318``),
  ``console`` prints to stdout (or to ``configure(console_out=...)``). Any other name is
  ignored, with a warning (once per process).
- ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_TRACES_SAMPLER``, ``OTEL_SDK_DISABLED``
  and ``OTEL_PROPAGATORS`` are honoured by the SDK components themselves.

Spans are exported by a `BatchSpanProcessor`, metrics by a `PeriodicExportingMetricReader` and
log records by a `BatchLogRecordProcessor` (the logs signal's SDK is experimental: vsrtel
reaches it through ``vsrtel._otel_logs`` alone): all run on their own threads, so an exporter
that is slow or unreachable never delays `vsrtel.execute`; its failures are logged by the
exporter and bounded by its timeout.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

from opentelemetry import metrics, trace
from opentelemetry.sdk import resources as sdk_resources
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from vsrtel import _otel_logs

if TYPE_CHECKING:
    from vsrtel.export.prometheus import MetricsServer

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "EXPORTER_NAMES",
    "OTel",
    "configure",
    "default_resource",
    "env_exporters",
    "exports_otlp",
    "resource",
]

DEFAULT_SERVICE_NAME = "vsrtel"
#: The values of ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER``
#: that vsrtel honours.
EXPORTER_NAMES = ("otlp", "console", "none")
_reported: set[tuple[str, str]] = set()  # (variable, unsupported name) already warned about

_log = logging.getLogger("vsrtel")

# After the shutdown deadline, exporters are told to stop retrying; this is how long the
# providers then get to notice before `shutdown` gives up on them.
_ABORT_GRACE_SECONDS = 1.0


class _Exporter(Protocol):
    def shutdown(self) -> Any: ...


class OTel:
    """The providers built by `configure`, and how to flush and stop them.

    ``tracer_provider``, ``meter_provider`` and ``logger_provider`` are the SDK providers; pass
    them to the handlers (``attach_tracer(..., tracer_provider=otel.tracer_provider)``,
    ``vsrtel.logs.OTelHandler(otel.logger_provider)``). ``metrics_server`` is the
    Prometheus endpoint when ``configure(prometheus_port=...)`` started one, else None.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        exporters: Iterable[_Exporter] = (),
        metrics_server: MetricsServer | None = None,
        logger_provider: _otel_logs.LoggerProvider | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        if logger_provider is None:
            logger_provider = _otel_logs.provider(tracer_provider.resource)
        self.logger_provider = logger_provider
        self.metrics_server = metrics_server
        self._exporters = tuple(exporters)
        self._lock = threading.Lock()
        self._stopped = False
        atexit.register(self.shutdown)

    def __repr__(self) -> str:
        name = self.tracer_provider.resource.attributes.get(SERVICE_NAME)
        return f"<vsrtel.export.otel.OTel service_name={name!r} exporters={len(self._exporters)}>"

    def force_flush(self, timeout_millis: int = 5000) -> bool:
        """Export everything buffered so far; return False if it did not finish in time."""
        return _run_bounded(
            lambda: self.tracer_provider.force_flush(timeout_millis)
            and self.meter_provider.force_flush(timeout_millis)
            and self.logger_provider.force_flush(timeout_millis),
            timeout_millis,
        )

    def shutdown(self, timeout_millis: int = 5000) -> bool:
        """Flush and stop the providers within ``timeout_millis``; later calls do nothing.

        Returns True when everything was flushed. When an exporter is still busy at the deadline
        (an unreachable endpoint being retried), its retries are cut short, a warning is logged
        to the ``"vsrtel"`` logger, the unexported telemetry is dropped and False is returned.
        Never raises. Also called at interpreter exit.
        """
        with self._lock:
            if self._stopped:
                return True
            self._stopped = True
        atexit.unregister(self.shutdown)
        if self.metrics_server is not None:
            self.metrics_server.close()

        def stop() -> bool:
            ok = True
            for name, provider_shutdown in (
                ("tracer provider", self.tracer_provider.shutdown),
                ("meter provider", lambda: self.meter_provider.shutdown(timeout_millis)),
                ("logger provider", self.logger_provider.shutdown),
            ):
                try:
                    provider_shutdown()
                except Exception:
                    _log.exception("vsrtel.export.otel: %s shutdown failed", name)
                    ok = False
            return ok

        done = _run_bounded(stop, timeout_millis, wait_after_timeout=self._abort_exporters)
        if not done:
            _log.warning(
                "vsrtel.export.otel: shutdown did not finish within %d ms; unexported telemetry "
                "dropped",
                timeout_millis,
            )
        return done

    def _abort_exporters(self) -> None:
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception:
                _log.exception("vsrtel.export.otel: exporter %r failed to shut down", exporter)


def _run_bounded(
    function: Any,
    timeout_millis: int,
    wait_after_timeout: Any = None,
) -> bool:
    # SDK shutdown/flush may block for the exporter's whole retry budget: run it on a helper
    # thread so the caller waits at most timeout_millis (plus a grace period after aborting).
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(bool(function()))
        except Exception:
            _log.exception("vsrtel.export.otel: flush failed")
            result.append(False)

    worker = threading.Thread(target=run, name="vsrtel-otel-flush", daemon=True)
    worker.start()
    worker.join(max(timeout_millis, 0) / 1000)
    if not worker.is_alive():
        return all(result)
    if wait_after_timeout is not None:
        wait_after_timeout()
        worker.join(_ABORT_GRACE_SECONDS)
    return False


def configure(
    service_name: str | None = None,
    *,
    console: bool | TextIO = False,
    console_out: TextIO | None = None,
    set_global: bool = False,
    resource_attributes: Mapping[str, Any] | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    metric_readers: Iterable[MetricReader] = (),
    prometheus_port: int | None = None,
    prometheus_host: str = "127.0.0.1",
    log_processors: Iterable[_otel_logs.LogRecordProcessor] = (),
) -> OTel:
    """Build tracer, meter and logger providers with exporters chosen from the ``OTEL_*``
    variables.

    ``service_name`` wins over ``OTEL_SERVICE_NAME``, which wins over ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES``; the default is ``"vsrtel"``. ``resource_attributes`` are added
    to the resource (over the environment's). ``console=True`` (or a text stream) also prints
    spans, metrics and log records there. ``console_out`` is where a console exporter that
    ``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER``/``OTEL_LOGS_EXPORTER=console`` or
    ``console=True`` asks for prints (default stdout). ``span_processors``, ``metric_readers``
    and ``log_processors`` are added as given (tests pass an in-memory exporter or reader here).
    The logger provider receives what `vsrtel.logs` exports (``OTelHandler``, ``OTelProcessor``,
    ``otel_logger``). With nothing configured there is no exporter, no thread and no network
    traffic.

    ``prometheus_port`` also serves the meter provider's metrics
    at ``http://{prometheus_host}:{port}/metrics`` (``0`` picks a free port; loopback unless
    told otherwise); see ``.metrics_server``.

    Global providers are installed only with ``set_global=True`` (OpenTelemetry allows that
    once per process); otherwise pass the providers to the handlers. Call ``.shutdown()`` to
    flush (it also runs at exit). Raises `TypeError`/`ValueError` for a bad ``service_name``.
    """
    if service_name is not None and not isinstance(service_name, str):
        raise TypeError(f"service_name must be a str or None, got {service_name!r}")
    if service_name == "":
        raise ValueError("service_name must not be empty")
    stream = _console_stream(console)
    if console_out is not None and not callable(getattr(console_out, "write", None)):
        raise TypeError(f"console_out must be a text stream or None, got {console_out!r}")
    always = console is not False  # else a console exporter only if the environment asks
    out = stream if stream is not None else console_out or sys.stdout
    resource = _resource(service_name, resource_attributes)
    global _configured_resource
    _configured_resource = resource
    exporters: list[_Exporter] = []

    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    for span_exporter in _span_exporters(always, out):
        exporters.append(span_exporter)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))

    readers = _metric_readers(metric_readers, always, out, exporters)
    scrape = None  # (port, prometheus_client registry) when Prometheus is asked for
    if prometheus_port is not None:
        from vsrtel.export.prometheus import prometheus_reader

        reader, prometheus_registry = prometheus_reader()
        readers.append(reader)
        scrape = (prometheus_port, prometheus_registry)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )

    server = None
    if scrape is not None:
        from vsrtel.export.prometheus import serve_registry

        port, prometheus_registry = scrape
        try:
            server = serve_registry(
                prometheus_registry, port, prometheus_host, meter_provider=meter_provider
            )
        except BaseException:
            meter_provider.shutdown()
            tracer_provider.shutdown()
            raise

    log_exporters = _log_exporters(always, out)
    exporters.extend(log_exporters)
    logger_provider = _otel_logs.provider(resource, log_exporters, log_processors)

    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _otel_logs.set_global(logger_provider)
    return OTel(tracer_provider, meter_provider, exporters, server, logger_provider)


def _console_stream(console: bool | TextIO) -> TextIO | None:
    """The stream given as ``console``, None for a bool; raises `TypeError` for anything else."""
    if isinstance(console, bool):
        return None
    if callable(getattr(console, "write", None)):
        return console
    raise TypeError(f"console must be a bool or a text stream, got {console!r}")


def resource(
    service_name: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Resource:
    """The OpenTelemetry resource `configure` gives its providers, for a provider built
    elsewhere (``serve_metrics(resource=...)``): same service name rules, same attributes.

    Unless `attributes` or ``OTEL_RESOURCE_ATTRIBUTES`` set it, ``service.instance.id`` is
    this process's own random UUID (version 4, as OpenTelemetry's semantic conventions
    advise): the same for every resource of the process, and a new one in a forked child, so
    the worker processes of one service (gunicorn, uvicorn ``--workers``) are told apart."""
    return _resource(service_name, attributes)


# The resource of the latest `configure`: providers built elsewhere (`serve_metrics`) name the
# same service.
_configured_resource: Resource | None = None


def default_resource() -> Resource:
    """The resource of the latest `configure` in this process, else `resource()`: what
    ``serve_metrics()`` gives its provider when not passed one, so that ``configure("api")``
    then ``serve_metrics()`` scrapes as service ``api``."""
    found = _configured_resource
    if found is None:
        return _resource(None, None)
    instance = found.attributes.get(SERVICE_INSTANCE_ID)
    if instance in _AUTOMATIC_IDS and instance != _instance_id():
        # Configured before a fork (gunicorn --preload): this worker is an instance of its own.
        return found.merge(Resource({SERVICE_INSTANCE_ID: _instance_id()}))
    return found


def _resource(service_name: str | None, attributes: Mapping[str, Any] | None) -> Resource:
    extra: dict[str, Any] = dict(attributes or {})
    if service_name is not None:
        extra[SERVICE_NAME] = service_name
    resource = Resource.create(extra)
    detected = str(resource.attributes.get(SERVICE_NAME, ""))
    if detected.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    if SERVICE_INSTANCE_ID not in resource.attributes:  # older SDKs set none
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: _instance_id()}))
    found = resource.attributes[SERVICE_INSTANCE_ID]
    if found == _instance_id():
        _AUTOMATIC_IDS.add(found)
    return resource


_OWN_IDS: dict[int, str] = {}  # by process id
_AUTOMATIC_IDS: set[Any] = set()  # the ids `_resource` gave (not the user's)


def _instance_id() -> str:
    """This process's ``service.instance.id``: the one the SDK detects, where it does (a random
    UUID per process), else one of ours made the same way."""
    detector = getattr(sdk_resources, "ServiceInstanceIdResourceDetector", None)
    if detector is not None:
        return str(detector().detect().attributes[SERVICE_INSTANCE_ID])
    return _OWN_IDS.setdefault(os.getpid(), str(uuid.uuid4()))  # atomic: one per process


def exports_otlp(
    signal: Literal["traces", "metrics", "logs"], environ: Mapping[str, str] | None = None
) -> bool:
    """Return whether the ``OTEL_*`` variables ask for OTLP export of ``signal``.

    The same decision `configure` makes, for callers that wire things around it; ``environ``
    defaults to ``os.environ``.
    """
    return "otlp" in env_exporters(signal, environ)


def env_exporters(
    signal: Literal["traces", "metrics", "logs"], environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """Return the exporters the ``OTEL_*`` variables ask for, for ``signal``: a subset of
    ``{"otlp", "console"}``, as `configure` decides it; ``environ`` defaults to ``os.environ``.

    ``otlp`` when ``OTEL_{SIGNAL}_EXPORTER`` names it or an OTLP endpoint variable is set,
    ``console`` when the exporter variable names it; nothing when it names ``none``. A name
    outside :data:`EXPORTER_NAMES` is ignored and reported once per process (a warning to the
    ``"vsrtel"`` logger, naming the variable and the name).
    """
    if signal not in ("traces", "metrics", "logs"):
        raise ValueError(f"signal must be 'traces', 'metrics' or 'logs', got {signal!r}")
    environ = os.environ if environ is None else environ
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = {name.strip().lower() for name in environ.get(variable, "").split(",")}
    names.discard("")
    for name in sorted(names.difference(EXPORTER_NAMES)):
        if (variable, name) not in _reported:
            _reported.add((variable, name))
            _log.warning(
                "vsrtel.export.otel: %s=%s: exporter %r is not supported (supported: %s); "
                "ignored", variable, environ[variable], name, ", ".join(EXPORTER_NAMES),
            )
    if "none" in names:
        return frozenset()
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    wanted = names & {"otlp", "console"}
    return frozenset((wanted | {"otlp"}) if endpoint else wanted)


def _otlp_module(signal: str) -> Any:
    protocol = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        _log.warning(
            "vsrtel.export.otel: OTLP protocol %r is not supported, using http/protobuf", protocol
        )
    modules = {"TRACES": "trace_exporter", "METRICS": "metric_exporter"}
    try:
        if signal == "LOGS":
            return importlib.import_module(_otel_logs.OTLP_MODULE)
        return importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{modules[signal]}")
    except ImportError:
        _log.error(
            "vsrtel.export.otel: an OTLP endpoint is configured but the OTLP/HTTP exporter is not "
            "installed (pip install 'vsrtel[otlp]'); %s are not exported",
            signal.lower(),
        )
        return None


def _span_exporters(console: bool, out: TextIO) -> list[SpanExporter]:
    """The span exporters: those the environment asks for, and the console if ``console``."""
    wanted = env_exporters("traces")
    exporters: list[SpanExporter] = []
    if "otlp" in wanted and (module := _otlp_module("TRACES")) is not None:
        exporters.append(module.OTLPSpanExporter())
    if console or "console" in wanted:
        exporters.append(ConsoleSpanExporter(out=out))
    return exporters


def _metric_readers(
    given: Iterable[MetricReader], console: bool, out: TextIO, exporters: list[_Exporter]
) -> list[MetricReader]:
    """Every reader of the MeterProvider is chosen here; push exporters go into ``exporters``."""
    readers = list(given)
    pushed: list[MetricExporter] = []
    wanted = env_exporters("metrics")
    if "otlp" in wanted and (module := _otlp_module("METRICS")) is not None:
        pushed.append(module.OTLPMetricExporter())
    if console or "console" in wanted:
        pushed.append(ConsoleMetricExporter(out=out))
    exporters.extend(pushed)
    readers.extend(PeriodicExportingMetricReader(exporter) for exporter in pushed)
    return readers


def _log_exporters(console: bool, out: TextIO) -> list[Any]:
    """The log record exporters: those the environment asks for, and the console if
    ``console``."""
    wanted = env_exporters("logs")
    exporters: list[Any] = []
    if "otlp" in wanted and _otlp_module("LOGS") is not None:
        exporters.append(_otel_logs.otlp_exporter())
    if console or "console" in wanted:
        exporters.append(_otel_logs.console_exporter(out))
    return exporters
