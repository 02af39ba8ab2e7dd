"""vsrtel.web.wsgi under wsgiref's server, called by httpx with the client transport: one trace
per request (client span -> server span -> the handler's span), in the server's thread."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from _web_servers import named, of_kind, traced, wait_for, wsgiref_server
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import vsrtel
from vsrtel.testing import capture
from vsrtel.web.httpx import TelemetryTransport
from vsrtel.web.wsgi import TelemetryMiddleware

pytestmark = pytest.mark.integration

CHUNKS = 3


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/orders/"):
        with vsrtel.span("app.load", {"order": path.rsplit("/", 1)[1]}):
            body = b"order"
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Shard", "7"),
                                  ("Set-Cookie", "session=abc")])
        return [body]
    if path == "/unavailable":
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]
    if path == "/boom":
        raise ValueError("the handler broke")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return chunks()
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no"]


def chunks() -> Iterator[bytes]:
    for i in range(CHUNKS):
        with vsrtel.span("app.chunk", {"index": i}):
            data = b"chunk %d\n" % i
        yield data


def route(environ: dict[str, Any]) -> str | None:
    return re.sub(r"/\d+$", "/{id}", environ["PATH_INFO"])


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    with traced(exporter) as tracer_provider:
        yield tracer_provider


@pytest.fixture
def base_url() -> Iterator[str]:
    middleware = TelemetryMiddleware(app, route=route, response_headers=["x-shard", "set-cookie"],
                                     user_agent=True)
    with wsgiref_server(middleware) as url:
        yield url


def server_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    wait_for(lambda: len(of_kind(exporter, SpanKind.SERVER)) == 1,
             "the server span did not end")
    [server] = of_kind(exporter, SpanKind.SERVER)
    return server


def test_one_trace_per_request_client_server_handler(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with httpx.Client(transport=TelemetryTransport(), base_url=base_url,
                      headers={"user-agent": "tests/1"}) as client:
        response = client.get("/orders/17")
    assert response.text == "order"
    assert response.headers["content-length"] == "5"  # wsgiref still counts the app's list
    server = server_span(exporter)
    [client_span] = of_kind(exporter, SpanKind.CLIENT)
    [handler] = named(exporter, "app.load")
    assert client_span.context is not None and server.context is not None
    assert server.context.trace_id == client_span.context.trace_id
    assert server.parent is not None and server.parent.span_id == client_span.context.span_id
    assert handler.parent is not None and handler.parent.span_id == server.context.span_id
    attributes = dict(server.attributes or {})
    assert attributes["http.route"] == "/orders/{id}"
    assert (server.name, server.kind) == ("GET /orders/{id}", SpanKind.SERVER)
    assert attributes["url.path"] == "/orders/17"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.response.body.size"] == 5
    assert attributes["user_agent.original"] == "tests/1"
    assert attributes["http.response.header.x-shard"] == ("7",)
    assert attributes["http.response.header.set-cookie"] == "[REDACTED]"


def test_a_5xx_response_is_a_stop_with_error_type(base_url: str) -> None:
    with capture("http.server.request") as events, httpx.Client(base_url=base_url) as client:
        assert client.get("/unavailable").status_code == 503
        wait_for(lambda: len(events) == 2, "the server span did not end")
    assert [e.name[-1] for e in events] == ["start", "stop"]
    assert events[1].metadata["error.type"] == "503"


def test_an_exception_in_the_app_is_the_exception_event_and_is_reraised(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[BaseException] = []
    middleware = TelemetryMiddleware(app)

    def outer(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            return middleware(environ, start_response)
        except BaseException as error:
            seen.append(error)
            raise

    with wsgiref_server(outer) as url, capture("http.server.request") as events:
        with httpx.Client(base_url=url) as client:
            assert client.get("/boom").status_code == 500  # wsgiref's error page
        wait_for(lambda: len(events) == 2, "the server span did not end")
    exception = events[1]
    assert exception.name[-1] == "exception"
    assert [type(e) for e in seen] == [ValueError] and exception.metadata["reason"] is seen[0]
    assert exception.metadata["error.type"] == "ValueError"
    assert exception.metadata["http.route"] == "/boom"
    server = server_span(exporter)
    assert server.status.status_code is StatusCode.ERROR


def test_a_streamed_body_ends_its_span_after_the_last_chunk(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with capture("http.server.request.stop", "app.chunk.stop") as events:
        with httpx.Client(base_url=base_url) as client:
            body = client.get("/stream").content
        wait_for(lambda: any(e.name[0] == "http" for e in events), "the server span did not end")
    assert body == b"".join(b"chunk %d\n" % i for i in range(CHUNKS))
    assert [".".join(e.name) for e in events] == ["app.chunk.stop"] * CHUNKS + [
        "http.server.request.stop"
    ]
    assert events[-1].metadata["http.response.body.size"] == len(body)
    server = server_span(exporter)
    assert server.context is not None
    for chunk in named(exporter, "app.chunk"):
        assert chunk.parent is not None and chunk.parent.span_id == server.context.span_id


def test_no_span_is_left_current_in_the_server_thread(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with httpx.Client(base_url=base_url) as client:
        for _ in range(3):
            client.get("/orders/1")
    wait_for(lambda: len(of_kind(exporter, SpanKind.SERVER)) == 3, "a span did not end")
    servers = of_kind(exporter, SpanKind.SERVER)
    assert all(s.parent is None for s in servers)  # each a root: none nested in the last
    assert len({s.context.trace_id for s in servers if s.context is not None}) == 3


def test_a_response_closed_before_its_last_chunk_records_the_client_leaving() -> None:
    middleware = TelemetryMiddleware(app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/stream", "wsgi.url_scheme": "http",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}
    with capture("http.server.request.stop") as stops:
        body = middleware(environ, lambda status, headers, exc_info=None: None)
        next(iter(body))  # the server wrote one chunk, then the client went away
        body.close()  # type: ignore[attr-defined]
    [stop] = stops
    assert stop.metadata["error.type"] == "client_disconnected"
    assert stop.metadata["http.response.body.size"] == len(b"chunk 0\n")
    assert vsrtel.current_span() is None  # the server's thread is left clean


def test_a_failing_route_function_falls_back_to_the_path_and_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def route(environ: dict[str, Any]) -> str:
        raise LookupError(f"no route for {environ['PATH_INFO']}?token=abc")

    middleware = TelemetryMiddleware(app, route=route)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders/9", "wsgi.url_scheme": "http",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80"}
    with capture("http.server.request.stop") as stops, caplog.at_level("WARNING", "vsrtel"):
        for _ in range(2):
            body = middleware(dict(environ), lambda status, headers, exc_info=None: None)
            b"".join(body)
            body.close()  # type: ignore[attr-defined]
    assert [stop.metadata["http.route"] for stop in stops] == ["/orders/9", "/orders/9"]
    [record] = [r for r in caplog.records if "route function" in r.getMessage()]
    # The message is scrubbed (the traceback's source lines are shown as they are).
    assert record.getMessage().endswith("LookupError: no route for /orders/9?token=[REDACTED]")
