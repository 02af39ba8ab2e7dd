"""Real servers for the web tests, in this process (so that one in-memory exporter sees the
client's spans and the server's), on loopback, each bounded in time and stopped in finally; and
the tracing those tests read."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from vsrtel.handlers import spans

START_TIMEOUT = 10.0


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away: expected in some tests


@contextmanager
def wsgiref_server(app: Any) -> Iterator[str]:
    """Serve the WSGI ``app`` with wsgiref in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "wsgiref did not stop"


def _wait(condition: Callable[[], bool], message: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.01)


def wait_for(condition: Callable[[], bool], message: str) -> None:
    """Wait (bounded) until ``condition()``: a server span ends after the client has its
    response, in the server's thread."""
    _wait(condition, message)


@contextmanager
def traced(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A tracer provider recording into ``exporter``, the spans handler tracing the ``http``
    and ``app`` spans with it; shut down at the end."""
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans.attach_tracer(["http", "app"], tracer_provider=tracer_provider)
    yield tracer_provider
    tracer_provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called ``name``."""
    return [s for s in exporter.get_finished_spans() if s.name == name]


def of_kind(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    """The finished spans of ``kind`` (SERVER, CLIENT)."""
    return [s for s in exporter.get_finished_spans() if s.kind is kind]
