"""A Prometheus scrape endpoint for vsrtel metrics, built on OpenTelemetry's Prometheus exporter.

    from vsrtel.export.prometheus import serve_metrics
    from vsrtel.handlers.metrics import MetricsReporter

    server = serve_metrics(port=9464)
    MetricsReporter(defs, meter_provider=server.meter_provider).attach()
    # Prometheus scrapes server.url; server.close() when done.

The exposition format is Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it
(prometheus_client's negotiation), gzipped at a fast level when the scraper accepts it. The
metrics vsrtel aggregates are written straight from their cells (`vsrtel.export._text`); what
OpenTelemetry's reader still produces (`target_info`, the SDK's own instruments, summaries) and
any collector registered on `server.registry` are formatted by prometheus_client.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import inspect
import io
import ipaddress
import logging
import selectors
import socket
import sys
import threading
import time
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_exposition
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.openmetrics import exposition as om_exposition

from vsrtel.export import _dashboard, _text
from vsrtel.handlers import _prometheus_names
from vsrtel.handlers._aggregation import Hook, install
from vsrtel.handlers.metrics import METER_NAME
from vsrtel.metrics import Metric

__all__ = [
    "Exposition",
    "MetricsServer",
    "check_port",
    "exposition",
    "prometheus_reader",
    "serve_metrics",
    "serve_registry",
]

_StartResponse = Callable[..., Any]
_Environ = dict[str, Any]

_log = logging.getLogger("vsrtel")

LISTEN_BACKLOG = 256
"""Connections the kernel queues for the endpoint before it accepts them."""
MAX_CONNECTIONS = 32
"""Default cap on requests answered at once (one thread each); later complete ones wait."""
READ_TIMEOUT = 5.0
"""Default seconds a connection gets to send its whole request, and again to take the answer."""
MAX_WAITING = 256
"""Connections held while their request arrives (the oldest is dropped for a new one past it),
and complete requests held while every thread answers (accepting pauses past it)."""
MAX_HEAD = 65536
"""Bytes a request line and headers may take; a longer head is dropped."""
GZIP_LEVEL = 1
"""The gzip level of a scrape whose scraper accepts gzip: the fastest (level 9, prometheus_client's,
takes about 20 times as long, more than the rendering, for an answer about a tenth smaller)."""


def _scope_labels_supported() -> bool:
    return "scope_info_enabled" in inspect.signature(PrometheusMetricReader).parameters


def prometheus_reader(
    *, scope_labels: bool = False
) -> tuple[PrometheusMetricReader, CollectorRegistry]:
    """Build OpenTelemetry's Prometheus reader on a new private prometheus_client registry.

    Give the reader to a `MeterProvider(metric_readers=[reader, ...])` (readers cannot be added
    to an existing provider) and serve the registry with `serve_registry`. A private registry
    keeps prometheus_client's process-wide default registry (and its process/GC collectors) out
    of the scrape, and lets several providers coexist in one process.

    Series carry only their own tags unless ``scope_labels=True``, which keeps the exporter's
    ``otel_scope_name``, ``otel_scope_version`` and ``otel_scope_schema_url`` labels (the
    OpenTelemetry default; they tell apart instruments of one name from different meters).
    Older exporter versions, which add no scope labels, ignore ``scope_labels``.
    """
    registry = CollectorRegistry()
    if _scope_labels_supported():
        reader = PrometheusMetricReader(registry=registry, scope_info_enabled=scope_labels)
    else:  # an exporter that predates scope labels never adds them
        reader = PrometheusMetricReader(registry=registry)
    return reader, registry


class _Encodable:
    """A collector that serves another's families with every label value and help text UTF-8
    can encode: one bad tag value must not fail the whole scrape (the exposition is encoded in
    one piece, and the exporter keeps the series, so every later scrape would fail too)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[PromMetric]:
        for family in self._registry.collect():
            yield self._clean(family)

    @staticmethod
    def _clean(family: PromMetric) -> PromMetric:
        encodable = _text.encodable
        documentation = encodable(family.documentation)
        samples = [
            sample if all(encodable(v) is v for v in sample.labels.values())
            else sample._replace(labels={k: encodable(v) for k, v in sample.labels.items()})
            for sample in family.samples
        ]
        if documentation is family.documentation and all(
            new is old for new, old in zip(samples, family.samples, strict=True)
        ):
            return family
        clean = copy.copy(family)  # the collector's own family may be served again
        clean.documentation, clean.samples = documentation, samples
        return clean


def _served(registry: CollectorRegistry) -> CollectorRegistry:
    served = CollectorRegistry()
    served.register(_Encodable(registry))
    return served


# While an endpoint formats a scrape in this context: whether it asks for OpenMetrics (else the
# text format 0.0.4). `_Cells` then yields its metrics as text already written.
_RENDERING: ContextVar[bool | None] = ContextVar("vsrtel_prometheus_rendering", default=None)


class _Rendered:
    """Families already written in the scrape's format, to go into it as they are."""

    __slots__ = ("texts",)

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts


def _is_target_info(family: PromMetric) -> bool:
    return family.name == "target" and family.type == "info"


def _rendering_provider(
    resource: Resource, scope_labels: bool, *before: Any
) -> tuple[MeterProvider, CollectorRegistry]:
    """A MeterProvider with a Prometheus reader, and the registry to serve: the reader's
    families, then the reporters' metrics rendered from their cells (`_Cells`). Collectors in
    `before` are registered first (a directory's refresh)."""
    reader, otel_registry = prometheus_reader(scope_labels=scope_labels)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    hook = install(provider, InstrumentationScope(METER_NAME))
    if hook is None:  # an SDK whose internals moved: the reader reports everything
        for collector in before:
            otel_registry.register(collector)
        return provider, otel_registry
    hook.read_directly(reader)  # the reporters' metrics are read from their cells
    scope = hook.scope if scope_labels and _scope_labels_supported() else None
    registry = CollectorRegistry()
    for collector in before:
        registry.register(collector)
    collector = _Cells(otel_registry, hook, _text.Renderer(scope=scope))
    registry.register(cast(Any, collector))  # it yields `_Rendered` too, for `_exposition`
    return provider, registry


class _Cells:
    """The collector of `serve_metrics`' registry: the families of OpenTelemetry's reader
    (`target_info`, the SDK's own instruments), then those vsrtel aggregates, read from their
    cells (the reader's collections leave them out: `Hook.read_directly`).

    A vsrtel metric whose family name the reader produces too (an SDK instrument of that name)
    is left out, with a warning, as the reader's own collection does; `target_info` is served
    only beside some metric, as the exporter serves it.
    """

    def __init__(
        self, otel_registry: CollectorRegistry, hook: Hook, renderer: _text.Renderer
    ) -> None:
        self._otel = otel_registry
        self._hook = hook
        self._renderer = renderer
        self._clashed: set[str] = set()

    def collect(self) -> Iterator[PromMetric | _Rendered]:
        openmetrics = _RENDERING.get()
        otel = list(self._otel.collect())
        read = self._hook.totals()
        self._renderer.forget_others(export for export, _ in read)
        skip = self._skipped(otel, read)
        texts: list[str] = []
        if openmetrics is None:
            families = self._renderer.families(read, skip=skip)
        else:
            texts, left = self._renderer.render(read, openmetrics=openmetrics, skip=skip)
            families = self._renderer.families(
                [(export, totals) for export, totals in read if export in left]
            )
        if not (texts or families) and all(_is_target_info(f) for f in otel):
            return
        yield from otel
        if texts:
            yield _Rendered(texts)
        yield from families

    def _skipped(self, otel: list[PromMetric], read: _text.Read) -> set[str]:
        taken = {family.name for family in otel}
        skip = {
            name for export, totals in read
            if totals and (name := self._renderer.name(export)) in taken
        }
        if not skip <= self._clashed:
            _log.warning(
                "metrics %s are reported both by OpenTelemetry instruments and by vsrtel's "
                "aggregation on one MeterProvider; exporting the instruments' only",
                ", ".join(sorted(skip - self._clashed)),
            )
            self._clashed |= skip
        return skip


class _Families:
    """Some families, as a collector."""

    def __init__(self, families: list[PromMetric]) -> None:
        self._families = families

    def collect(self) -> list[PromMetric]:
        return self._families


def _text_format(encoder: Callable[..., bytes]) -> bool | None:
    """Whether prometheus_client's chosen `encoder` writes OpenMetrics (True) or the text
    format 0.0.4 (False), in an escaping that leaves plain names as they are; None for any
    other (prometheus_client then formats all of the scrape)."""
    function = getattr(encoder, "func", encoder)
    escaping = getattr(encoder, "keywords", {}).get("escaping", "underscores")
    if escaping not in ("underscores", "allow-utf-8"):
        return None
    if function is text_exposition.generate_latest:
        return False
    if function is om_exposition.generate_latest:
        return True
    return None


def _exposition(registry: CollectorRegistry, environ: _Environ) -> tuple[str, list[bytes]]:
    """The content type and body (in pieces) of a scrape of `registry`, as the request asks."""
    encoder, content_type = text_exposition.choose_encoder(environ.get("HTTP_ACCEPT", ""))
    names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
    openmetrics = None if names else _text_format(encoder)
    if openmetrics is None:  # prometheus_client formats it all, vsrtel's metrics as families
        source = registry.restricted_registry(names) if names else registry
        return content_type, [encoder(_served(cast(CollectorRegistry, source)))]
    token = _RENDERING.set(openmetrics)
    try:
        found = list(registry.collect())
    finally:
        _RENDERING.reset(token)
    parts: list[bytes] = []
    batch: list[PromMetric] = []

    def flush() -> None:
        if batch:
            out = encoder(_Families(batch))
            parts.append(out[: -len(b"# EOF\n")] if openmetrics else out)
            batch.clear()

    for family in found:
        if isinstance(family, _Rendered):
            flush()
            parts.extend(text.encode("utf-8") for text in family.texts)
        else:
            batch.append(_Encodable._clean(family))
    flush()
    if openmetrics:
        parts.append(b"# EOF\n")
    return content_type, parts


def _gzipped(parts: list[bytes]) -> list[bytes]:
    """`parts` as one gzip stream, in pieces, at `GZIP_LEVEL`."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return [piece for piece in out if piece]


def _gzip_accepted(header: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (``gzip;q=0`` refuses it)."""
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() != "gzip":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class _LogStream:
    """Where wsgiref reports an answer it could not finish (a client that went away or ran out
    of time): the debug log, not stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            _log.debug("metrics endpoint: %s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


class _Pending:
    """An accepted connection and the bytes of its request head read so far."""

    __slots__ = ("address", "deadline", "head", "sock")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.head = bytearray()
        self.deadline = deadline


class _DeadlineWriter(io.BufferedIOBase):
    """Writes the answer to the socket, all of it before ``deadline`` (a client that reads
    slowly cannot hold a thread longer)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client did not take the answer in time")
        self._sock.settimeout(left)
        self._sock.sendall(data)  # its timeout bounds the whole call
        with memoryview(data) as view:
            return view.nbytes


class _Handler(WSGIRequestHandler):
    """Answers one complete request whose head the server has already read."""

    server: _Server

    def setup(self) -> None:
        pending = cast(_Pending, self.request)
        self.connection = pending.sock
        self.rfile = io.BytesIO(bytes(pending.head))
        self.wfile = _DeadlineWriter(pending.sock, time.monotonic() + self.server.read_timeout)

    def get_stderr(self) -> Any:
        return _LogStream()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(
    registry: CollectorRegistry, dashboard: bool = False
) -> Callable[[_Environ, _StartResponse], Iterable[bytes]]:
    def scrape(environ: _Environ, start_response: _StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return []
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405 Method Not Allowed: {method}; use OPTIONS or GET\n".encode()]
        content_type, body = _exposition(registry, environ)
        headers = [("Content-Type", content_type)]
        if _gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = _gzipped(body)
            headers.append(("Content-Encoding", "gzip"))
        length = sum(map(len, body))
        start_response("200 OK", [*headers, ("Content-Length", str(length))])
        return [] if method == "HEAD" else body

    def app(environ: _Environ, start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            try:
                return scrape(environ, start_response)
            except Exception:  # a failing collector: report it to the app's log, answer 500
                _log.exception("metrics endpoint: collecting the metrics failed")
                start_response(
                    "500 Internal Server Error",
                    [("Content-Type", "text/plain; charset=utf-8")],
                    sys.exc_info(),
                )
                return [b"collecting the metrics failed; see the application's log\n"]
        if path == "/health" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"OK"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /health" + (b" or /" if dashboard else b"") + b"\n"]

    return _dashboard.Dashboard(_served(registry), app) if dashboard else app


def _head_complete(head: bytearray, start: int) -> bool:
    return head.find(b"\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0


class _Server(WSGIServer):
    """One thread reads every request head; a complete request gets an answering thread.

    Reading the heads off the answering threads means idle or slow clients hold no thread:
    each has `read_timeout` seconds in all to send its request, and a complete request never
    waits behind unfinished ones. At most `max_connections` answers run at once; further
    complete requests wait (in arrival order) for a free thread. Faults are logged, not shown.
    """

    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self, address: tuple[str, int], *, max_connections: int, read_timeout: float
    ) -> None:
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._ready: deque[_Pending] = deque()  # complete requests waiting for a thread
        self._answering = 0
        super().__init__(address, _Handler)

    def serve(self) -> None:
        """Accept connections and read their request heads until `stop` is called."""
        waiting: dict[socket.socket, _Pending] = {}  # in accept order: oldest deadline first
        self.socket.setblocking(False)
        with selectors.DefaultSelector() as selector:
            accepting = False
            try:
                while not self._stopping.is_set():
                    with self._lock:
                        want = len(self._ready) < MAX_WAITING
                    if want != accepting:
                        if want:
                            selector.register(self.socket, selectors.EVENT_READ)
                        else:
                            selector.unregister(self.socket)
                        accepting = want
                    timeout = 0.2
                    if waiting:
                        oldest = next(iter(waiting.values()))
                        timeout = min(timeout, max(0.0, oldest.deadline - time.monotonic()))
                    for key, _ in selector.select(timeout):
                        if key.fileobj is self.socket:
                            self._accept(selector, waiting)
                        else:
                            self._read(selector, waiting, key.data)
                    now = time.monotonic()
                    while waiting and next(iter(waiting.values())).deadline <= now:
                        self._drop(selector, waiting, next(iter(waiting.values())))
            except Exception:
                _log.exception("metrics endpoint: stopped serving after an error")
            finally:
                for pending in list(waiting.values()):
                    self._drop(selector, waiting, pending)
                with self._lock:
                    ready, self._ready = list(self._ready), deque()
                for pending in ready:
                    self._close(pending.sock)

    def stop(self) -> None:
        """Make `serve` return within a fraction of a second; answers under way finish."""
        self._stopping.set()

    def _accept(
        self, selector: selectors.BaseSelector, waiting: dict[socket.socket, _Pending]
    ) -> None:
        try:
            sock, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # out of file descriptors, say: the connection stays in the backlog
            _log.warning("metrics endpoint: accepting a connection failed", exc_info=True)
            time.sleep(0.05)
            return
        if len(waiting) >= MAX_WAITING:  # make room: the oldest has had the longest
            self._drop(selector, waiting, next(iter(waiting.values())))
        sock.setblocking(False)
        pending = _Pending(sock, address, time.monotonic() + self.read_timeout)
        waiting[sock] = pending
        selector.register(sock, selectors.EVENT_READ, pending)

    def _read(
        self,
        selector: selectors.BaseSelector,
        waiting: dict[socket.socket, _Pending],
        pending: _Pending,
    ) -> None:
        try:
            data = pending.sock.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or len(pending.head) + len(data) > MAX_HEAD:
            self._drop(selector, waiting, pending)
            return
        start = max(0, len(pending.head) - 2)
        pending.head += data
        if _head_complete(pending.head, start):
            selector.unregister(pending.sock)
            del waiting[pending.sock]
            self._dispatch(pending)

    def _drop(
        self,
        selector: selectors.BaseSelector,
        waiting: dict[socket.socket, _Pending],
        pending: _Pending,
    ) -> None:
        selector.unregister(pending.sock)
        del waiting[pending.sock]
        self._close(pending.sock)

    def _dispatch(self, pending: _Pending) -> None:
        with self._lock:
            if self._answering >= self.max_connections:
                self._ready.append(pending)
                return
            self._answering += 1
        try:
            threading.Thread(
                target=self._answer_all,
                args=(pending,),
                name=f"vsrtel-metrics-{self.server_address[1]}-connection",
                daemon=True,
            ).start()
        except RuntimeError:  # no thread to be had: this request is lost, not the server
            _log.warning("metrics endpoint: cannot start a thread", exc_info=True)
            with self._lock:
                self._answering -= 1
            self._close(pending.sock)

    def _answer_all(self, first: _Pending) -> None:
        pending: _Pending | None = first
        while pending is not None:
            self._answer(pending)
            with self._lock:
                if self._ready and not self._stopping.is_set():
                    pending = self._ready.popleft()
                else:
                    self._answering -= 1
                    pending = None

    def _answer(self, pending: _Pending) -> None:
        try:
            pending.sock.setblocking(True)
            self.finish_request(cast(Any, pending), pending.address)
        except Exception:
            self.handle_error(pending.sock, pending.address)
        finally:
            self._close(pending.sock)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that ran out of time or went away is routine, not a traceback on stderr.
        _log.debug("metrics endpoint: connection from %s failed", client_address, exc_info=True)


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running scrape endpoint: `url` (of /metrics), `host`, `port`, `registry`,
    `meter_provider` (None if the server was given a registry only), `dashboard_url` (of the
    live dashboard page, None unless served) and `close()`. Also a context manager."""

    def __init__(
        self,
        httpd: _Server,
        registry: CollectorRegistry,
        meter_provider: MeterProvider | None,
        owns_provider: bool,
        dashboard: bool = False,
    ) -> None:
        self._httpd = httpd
        self.registry = registry
        self.meter_provider = meter_provider
        self._owns_provider = owns_provider
        self.host: str = httpd.server_address[0]  # type: ignore[assignment]
        self.port: int = httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"
        self.url = f"{self.base_url}/metrics"
        self.dashboard_url: str | None = f"{self.base_url}/" if dashboard else None
        self._closed = False
        self._thread = threading.Thread(
            target=httpd.serve, name=f"vsrtel-metrics-{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving, release the port, and shut down the meter provider if it owns it."""
        if self._closed:
            return
        self._closed = True
        self._httpd.stop()
        self._thread.join()
        self._httpd.server_close()
        if isinstance(app := self._httpd.get_app(), _dashboard.Dashboard):
            app.close()  # its history's sampling thread
        if self._owns_provider and self.meter_provider is not None:
            self.meter_provider.shutdown()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<MetricsServer {state} {self.url}>"


def check_port(port: object) -> int:
    """Return ``port`` if it is a TCP port number (0 for any free one), else raise ValueError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535, got {port!r}")
    return port


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not host:
        raise ValueError(
            f"host must be an address or host name, got {host!r}: to serve on every interface "
            "say so with '0.0.0.0' (or '::'); the default is '127.0.0.1'"
        )
    return host


def _is_loopback(host: str) -> bool:
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        addresses = {str(info[4][0]) for info in found}
    except (OSError, UnicodeError):
        return False  # binding will fail and say why
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_loopback:
            return False
    return bool(addresses)


def _check_limits(max_connections: object, read_timeout: object) -> tuple[int, float]:
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or (
        max_connections < 1
    ):
        raise ValueError(f"max_connections must be a positive integer, got {max_connections!r}")
    if isinstance(read_timeout, bool) or not isinstance(read_timeout, (int, float)) or not (
        0 < read_timeout < float("inf")
    ):
        raise ValueError(f"read_timeout must be a positive number of seconds, got {read_timeout!r}")
    return max_connections, float(read_timeout)


def serve_registry(
    registry: CollectorRegistry,
    port: int = 9464,
    host: str = "127.0.0.1",
    *,
    meter_provider: MeterProvider | None = None,
    max_connections: int = MAX_CONNECTIONS,
    read_timeout: float = READ_TIMEOUT,
    dashboard: bool = False,
) -> MetricsServer:
    """Serve `registry` on `GET /metrics` and `GET /health` from a daemon thread.

    For wiring the reader of `prometheus_reader()` into a provider built elsewhere; the server
    does not shut down `meter_provider` (it only exposes it as `server.meter_provider`).
    `port=0` picks a free port; a port in use raises OSError naming host and port.
    `host`, `max_connections`, `read_timeout` and `dashboard` as for `serve_metrics`.
    """
    port = check_port(port)
    host = _check_host(host)
    limits = _check_limits(max_connections, read_timeout)
    return _serve(registry, port, host, meter_provider, False, *limits, dashboard)


def _serve(
    registry: CollectorRegistry,
    port: int,
    host: str,
    meter_provider: MeterProvider | None,
    owns_provider: bool,
    max_connections: int,
    read_timeout: float,
    dashboard: bool = False,
) -> MetricsServer:
    if not _is_loopback(host):
        warnings.warn(
            f"serving metrics{' and the dashboard' if dashboard else ''} on {host!r}, port "
            f"{port}: reachable from other machines, not only this one (pass "
            "host='127.0.0.1' unless that is intended)",
            RuntimeWarning,
            stacklevel=3,
        )
    server_class = _ServerV6 if ":" in host else _Server
    try:
        httpd = server_class(
            (host, port), max_connections=max_connections, read_timeout=read_timeout
        )
        httpd.set_app(_app(registry, dashboard))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                exc.errno, f"cannot serve metrics on {host}:{port}: port {port} is already in use"
            ) from exc
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return MetricsServer(httpd, registry, meter_provider, owns_provider, dashboard)


def serve_metrics(
    port: int = 9464,
    host: str = "127.0.0.1",
    *,
    resource: Resource | None = None,
    scope_labels: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    read_timeout: float = READ_TIMEOUT,
    dashboard: bool = False,
) -> MetricsServer:
    """Start a Prometheus scrape endpoint with its own OpenTelemetry MeterProvider.

    Serves `GET /metrics` (Prometheus text 0.0.4, or OpenMetrics when the Accept header asks for
    it) and `GET /health` (200 `OK`), and `HEAD` of both. Pass `server.meter_provider` to
    `MetricsReporter(..., meter_provider=...)`. `port=0` picks a free port (see `server.port`);
    a port already in use raises OSError naming it.

    Binds loopback by default: exposing metrics to the network is an explicit choice
    (`host="0.0.0.0"` or `"::"`), and any bind beyond loopback warns (`RuntimeWarning`, naming
    the address); `host=""` is refused (ValueError). Each connection has `read_timeout` seconds
    in all to send its request, and again to take the answer; connections whose request is
    still arriving hold no thread (at most `MAX_WAITING` of them are kept, the oldest dropped
    first). At most `max_connections` requests are answered at once, and further complete
    requests wait for a free thread.

    The metrics vsrtel aggregates are written from their cells, byte for byte as OpenTelemetry's
    exporter and prometheus_client would write them; the answer is gzipped (at `GZIP_LEVEL`)
    when the request's Accept-Encoding takes gzip. `server.registry` holds every family for
    `collect()` (vsrtel's as prometheus_client families); collectors registered on it are
    served too.

    `resource` sets the OTel resource shown in `target_info`; by default it is the one of the
    latest `vsrtel.export.otel.configure()` in this process, else `otel.resource()`
    (``OTEL_SERVICE_NAME``, else ``"vsrtel"``). Series carry only their own tags;
    `scope_labels=True` keeps OpenTelemetry's ``otel_scope_*`` labels. A tag value UTF-8
    cannot encode (a lone surrogate) is served with that character as a backslash escape.
    `dashboard=True` also serves a live dashboard on `GET /` (a self-contained HTML page, at
    `server.dashboard_url`) and the JSON snapshot it polls on `GET /api/metrics`. Call
    `server.close()` (or use `with`) to stop it.
    """
    port = check_port(port)
    host = _check_host(host)
    limits = _check_limits(max_connections, read_timeout)
    if resource is None:
        from vsrtel.export import otel

        resource = otel.default_resource()
    provider, registry = _rendering_provider(resource, scope_labels)
    try:
        return _serve(registry, port, host, provider, True, *limits, dashboard)
    except BaseException:
        provider.shutdown()
        raise


@dataclass(frozen=True)
class Exposition:
    """How one metric definition appears in a Prometheus scrape."""

    metric: Metric
    name: str  # the metric family name
    type: str  # counter, gauge or histogram
    unit: str
    labels: tuple[str, ...]
    samples: tuple[str, ...]  # the series names a query uses (``_total``, ``_bucket``...)


class _Anything(Mapping[str, int]):
    """Metadata that holds every key, each with the value 1."""

    def __getitem__(self, key: str) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def exposition(metrics: Iterable[Metric]) -> list[Exposition]:
    """Return the Prometheus name, type, unit, labels and series of each metric definition.

    The names are those the metrics reporter checks (`vsrtel.handlers._prometheus_names`, by
    the OpenTelemetry exporter's own rules), for reference docs and alert rules. A ``tags``
    callable is given stand-in metadata (every key present, each value 1) for its label names;
    ValueError when it rejects it.
    """
    found = []
    for metric in metrics:
        family = _prometheus_names.family(metric)
        try:
            labels = _prometheus_names.labels(metric, _Anything())
        except Exception as exc:
            raise ValueError(
                f"metric {metric.name!r}: its tags callable rejects stand-in metadata: {exc!r}"
            ) from exc
        problem = _prometheus_names.tag_check(metric.kind)(labels)
        if problem is not None:
            raise ValueError(f"metric {metric.name!r}: its tags callable returns {problem}")
        found.append(
            Exposition(
                metric=metric,
                name=family.name,
                type=family.type,
                unit=family.unit,
                labels=labels,
                samples=family.samples,
            )
        )
    return found
