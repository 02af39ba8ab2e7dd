"""Serving the metrics of several worker processes: one merged scrape of a directory.

In multi-process mode (`MetricsReporter(..., directory=...)`, or ``VSRTEL_MULTIPROC_DIR``;
see docs/multiprocess.md) every worker writes its series into its own file of a directory.
This module serves the merged view of such a directory::

    from vsrtel.export.multiprocess import wsgi_app   # or asgi_app
    metrics = wsgi_app()   # the directory of VSRTEL_MULTIPROC_DIR

    def app(environ, start_response):                 # the service's own WSGI app
        if environ["PATH_INFO"] == "/metrics":
            return metrics(environ, start_response)
        ...

Each app answers ``GET /metrics`` (Prometheus text, or OpenMetrics when asked), ``GET
/health`` and, with ``dashboard=True``, the live dashboard, as `serve_metrics` does; whichever
worker answers, the scrape is the same. `serve_directory` (and the ``vsrtel serve-dir``
command) serves a directory on its own port, for a sidecar or the server's master process.
The files describe their metrics, so none of these needs the metric definitions.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from prometheus_client.metrics_core import Metric as PromMetric

from vsrtel.export import prometheus
from vsrtel.handlers import _shared
from vsrtel.handlers._aggregation import Export, Hook, install
from vsrtel.handlers.metrics import _SCOPE

__all__ = ["MergedMetrics", "asgi_app", "serve_directory", "wsgi_app"]

_Environ = dict[str, Any]
_StartResponse = Callable[..., Any]
_WSGIApp = Callable[[_Environ, _StartResponse], Iterable[bytes]]
_ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def _directory(directory: str | os.PathLike[str] | None) -> _shared.Directory:
    if directory is None:
        directory = os.environ.get(_shared.ENV) or None
        if directory is None:
            raise ValueError(
                f"no metrics directory: pass directory=..., or set {_shared.ENV}"
            )
    return _shared.directory(directory)


class MergedMetrics:
    """The merged metrics of a directory on a MeterProvider of their own, with a Prometheus
    reader: `registry` (a prometheus_client registry to serve), `meter_provider`, `directory`
    (its absolute path) and `skipped_files` (files found unreadable and skipped, each counted
    once and reported once on the "vsrtel" logger).

    ValueError naming the directory when it is missing, unwritable, cannot hold memory-mapped
    files or holds another version's files; None reads ``VSRTEL_MULTIPROC_DIR``.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, resource: Resource | None = None
    ) -> None:
        self._directory = _directory(directory)
        self.directory = self._directory.path
        if resource is None:
            from vsrtel.export import otel

            resource = otel.default_resource()
        # The refresh is registered first: the metrics new in the directory are added to the
        # provider before its metrics are read (rendered from the merged cells, as
        # `serve_metrics` renders a process's own).
        self.meter_provider, self.registry = prometheus._rendering_provider(
            resource, False, _Refresh(self)
        )
        hook = install(self.meter_provider, _SCOPE)
        assert hook is not None, "the SDK's MeterProvider has the internals vsrtel wraps"
        self._hook: Hook = hook
        self._known: set[str] = set()
        self._lock = threading.Lock()

    @property
    def skipped_files(self) -> int:
        return self._directory.skipped_files

    def refresh(self) -> None:
        """Export the metrics that appeared in the directory since the last call."""
        with self._lock:
            found = _shared.metrics(self._directory)
            new = [info for name, info in found.items() if name not in self._known]
            if not new:
                return
            self._hook.add(
                Export(info.name, info.description, info.unit,
                       _shared.reader(self._directory, info), info.monotonic)
                for info in new
            )
            self._known.update(info.name for info in new)

    def close(self) -> None:
        """Shut the meter provider down."""
        self.meter_provider.shutdown()


class _Refresh:
    """A prometheus_client collector yielding nothing: it refreshes a `MergedMetrics`."""

    def __init__(self, merged: MergedMetrics) -> None:
        self._merged = merged

    def collect(self) -> Iterator[PromMetric]:
        self._merged.refresh()
        return iter(())


def wsgi_app(
    directory: str | os.PathLike[str] | None = None, *, dashboard: bool = False
) -> _WSGIApp:
    """A WSGI app answering ``/metrics`` (and ``/health``; the dashboard on ``/`` when
    `dashboard`) with the merged metrics of `directory` (by default ``VSRTEL_MULTIPROC_DIR``).
    Mount it inside the service: any worker answers with every worker's series."""
    merged = MergedMetrics(directory)
    return prometheus._app(merged.registry, dashboard)


def asgi_app(
    directory: str | os.PathLike[str] | None = None, *, dashboard: bool = False
) -> _ASGIApp:
    """An ASGI app serving what `wsgi_app` serves; the scrape runs in a worker thread, so the
    event loop is not blocked while the files are read."""
    wsgi = wsgi_app(directory, dashboard=dashboard)

    def answer(environ: _Environ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        started: list[Any] = []
        body = b"".join(wsgi(environ, lambda status, headers, *exc: started.extend(
            (status, headers)
        )))
        status, headers = started
        return (
            int(status.split()[0]),
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            body,
        )

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        environ: _Environ = {
            "REQUEST_METHOD": scope.get("method", "GET"),
            "PATH_INFO": scope.get("path", "/"),
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        }
        for name, value in scope.get("headers", ()):
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            environ[key] = value.decode("latin-1")
        status, headers, body = await asyncio.to_thread(answer, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_directory(
    directory: str | os.PathLike[str] | None = None,
    port: int = 9464,
    host: str = "127.0.0.1",
    *,
    dashboard: bool = False,
    max_connections: int = prometheus.MAX_CONNECTIONS,
    read_timeout: float = prometheus.READ_TIMEOUT,
) -> prometheus.MetricsServer:
    """Serve the merged metrics of `directory` from a daemon thread, as `serve_metrics` serves
    a provider's (same endpoints, limits and loopback default); `server.close()` stops it."""
    merged = MergedMetrics(directory)
    try:
        server = prometheus.serve_registry(
            merged.registry, port, host, meter_provider=merged.meter_provider,
            max_connections=max_connections, read_timeout=read_timeout, dashboard=dashboard,
        )
    except BaseException:
        merged.close()
        raise
    server._owns_provider = True  # closing the server shuts the provider down
    return server
