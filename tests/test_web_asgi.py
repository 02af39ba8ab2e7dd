"""vsrtel.web.asgi under uvicorn serving a Starlette app, called by httpx with the client
transport: one trace per request (client span -> server span -> the handler's span)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from _web_servers import named, of_kind, traced, uvicorn_server, wait_for
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

import vsrtel
from vsrtel.handlers import spans
from vsrtel.testing import capture
from vsrtel.web.asgi import TelemetryMiddleware
from vsrtel.web.httpx import AsyncTelemetryTransport, TelemetryTransport

pytestmark = pytest.mark.integration

CHUNKS = 3


async def user(request: Request) -> Response:
    with vsrtel.span("app.lookup", {"user_id": request.path_params["user_id"]}):
        await asyncio.sleep(0)
    return JSONResponse({"id": request.path_params["user_id"]})


async def unavailable(request: Request) -> Response:
    return PlainTextResponse("down", status_code=503)


async def boom(request: Request) -> Response:
    raise RuntimeError("the handler broke")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(CHUNKS):
            with vsrtel.span("app.chunk", {"index": i}):
                await asyncio.sleep(0.01)
            yield b"chunk %d\n" % i

    return StreamingResponse(chunks(), media_type="text/plain")


async def endless(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


async def fanout(request: Request) -> Response:
    async def part(i: int) -> None:
        with vsrtel.span("app.part", {"index": i}):
            await asyncio.sleep(0.01)

    await asyncio.gather(*(asyncio.create_task(part(i)) for i in range(2)))
    return PlainTextResponse("done")


async def slow(request: Request) -> Response:
    await asyncio.sleep(1)
    return PlainTextResponse("late")


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


API = Starlette(routes=[Route("/items/{item_id:int}", item)])
APP = Starlette(
    routes=[
        Route("/users/{user_id}", user),
        Route("/unavailable", unavailable),
        Route("/boom", boom),
        Route("/stream", stream),
        Route("/endless", endless),
        Route("/slow", slow),
        Route("/fanout", fanout),
        Mount("/api", API),
    ]
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    with traced(exporter) as tracer_provider:
        yield tracer_provider


@pytest.fixture
def base_url() -> Iterator[str]:
    with uvicorn_server(TelemetryMiddleware(APP, headers=["x-request-id", "authorization"])) as url:
        yield url


def server_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    wait_for(lambda: len(of_kind(exporter, SpanKind.SERVER)) >= count,
             "the server span did not end")
    return of_kind(exporter, SpanKind.SERVER)


def one_trace(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ReadableSpan]:
    """The client and server spans of the one request sent, checked to be one trace."""
    [server] = server_spans(exporter, 1)
    [client] = of_kind(exporter, SpanKind.CLIENT)
    assert client.context is not None and server.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.parent.is_remote
    return client, server


def test_one_trace_per_request_client_server_handler(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with httpx.Client(transport=TelemetryTransport(), base_url=base_url) as client:
        response = client.get("/users/42", headers={"x-request-id": "r-1",
                                                    "authorization": "Bearer s3cr3t"})
    assert response.json() == {"id": "42"}
    client_span, server = one_trace(exporter)
    [handler] = named(exporter, "app.lookup")
    assert handler.parent is not None and server.context is not None
    assert handler.parent.span_id == server.context.span_id
    attributes = dict(server.attributes or {})
    port = int(base_url.rsplit(":", 1)[1])
    assert attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/users/42",
        "server.address": "127.0.0.1",
        "server.port": port,
        "network.protocol.version": "1.1",
        "http.request.header.x-request-id": ("r-1",),
        "http.request.header.authorization": "[REDACTED]",
        "http.route": "/users/{user_id}",
        "http.response.status_code": 200,
        "http.response.body.size": len(response.content),
    }
    assert server.status.status_code is StatusCode.UNSET
    # Named and kinded as OpenTelemetry's HTTP conventions say: what tracing backends group by.
    assert (server.name, server.kind) == ("GET /users/{user_id}", SpanKind.SERVER)
    assert (client_span.name, client_span.kind) == ("GET", SpanKind.CLIENT)
    assert dict(client_span.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.full": f"{base_url}/users/42",
        "http.response.status_code": 200,
        "http.response.body.size": len(response.content),
    }


def test_the_secret_header_never_reaches_any_handler(base_url: str) -> None:
    with capture("http.server.request") as events, httpx.Client(base_url=base_url) as client:
        client.get("/users/1", headers={"authorization": "Bearer s3cr3t", "x-request-id": "r"})
        wait_for(lambda: len(events) == 2, "the server span did not end")
    for event in events:
        assert event.metadata["http.request.header.authorization"] == ("[REDACTED]",)
        assert "s3cr3t" not in repr(dict(event.metadata))
        assert "http.request.header.cookie" not in event.metadata  # never copied unless listed


def test_route_templates_of_routes_and_mounts(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with httpx.Client(base_url=base_url) as client:
        assert client.get("/api/items/7").status_code == 200
        assert client.get("/nowhere").status_code == 404
    routes = {s.attributes["url.path"]: s.attributes["http.route"]  # type: ignore[index]
              for s in server_spans(exporter, 2)}
    assert routes == {"/api/items/7": "/api/items/{item_id:int}", "/nowhere": "/nowhere"}


def test_a_5xx_response_is_a_stop_with_error_type(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with capture("http.server.request") as events, httpx.Client(
        transport=TelemetryTransport(), base_url=base_url
    ) as client:
        assert client.get("/unavailable").status_code == 503
        wait_for(lambda: len(events) == 2, "the server span did not end")
    assert [e.name[-1] for e in events] == ["start", "stop"]  # no exception event
    assert events[1].metadata["error.type"] == "503"
    client_span, server = one_trace(exporter)
    assert server.attributes is not None and server.attributes["error.type"] == "503"
    assert not server.events  # no exception recorded
    assert client_span.attributes is not None and client_span.attributes["error.type"] == "503"


def test_a_5xx_response_sets_the_span_status_to_error(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with httpx.Client(base_url=base_url) as client:
        client.get("/unavailable")
    [server] = server_spans(exporter, 1)
    assert server.status.status_code is StatusCode.ERROR


def test_an_exception_in_the_app_is_the_exception_event_and_is_reraised(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[BaseException] = []

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        try:
            await TelemetryMiddleware(APP)(scope, receive, send)
        except BaseException as error:
            seen.append(error)
            raise

    with uvicorn_server(outer) as base_url, capture("http.server.request") as events:
        with httpx.Client(base_url=base_url) as client:
            assert client.get("/boom").status_code == 500
        wait_for(lambda: len(events) == 2, "the server span did not end")
    _, exception = events
    assert exception.name == ("http", "server", "request", "exception")
    assert exception.metadata["kind"] is RuntimeError
    assert [type(e) for e in seen] == [RuntimeError] and exception.metadata["reason"] is seen[0]
    assert exception.metadata["error.type"] == "RuntimeError"
    assert exception.metadata["http.route"] == "/boom"
    assert exception.metadata["http.response.status_code"] == 500  # Starlette's error page
    [server] = of_kind(exporter, SpanKind.SERVER)
    assert server.status.status_code is StatusCode.ERROR
    assert server.events[0].attributes["exception.type"] == "RuntimeError"  # type: ignore[index]


def test_a_streaming_response_ends_its_span_after_the_last_chunk(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with capture("http.server.request.stop") as stops, capture("app.chunk.stop") as chunks:
        order: list[str] = []
        with httpx.Client(base_url=base_url) as client, client.stream("GET", "/stream") as r:
            body = b"".join(r.iter_bytes())
        wait_for(lambda: len(stops) == 1, "the server span did not end")
        order = [".".join(e.name) for e in sorted([*stops, *chunks],
                                                  key=lambda e: e.measurements["monotonic_time"])]
    assert body == b"".join(b"chunk %d\n" % i for i in range(CHUNKS))
    assert order == ["app.chunk.stop"] * CHUNKS + ["http.server.request.stop"]
    assert stops[0].metadata["http.response.body.size"] == len(body)
    [server] = server_spans(exporter, 1)
    chunk_spans = named(exporter, "app.chunk")
    assert len(chunk_spans) == CHUNKS
    assert server.context is not None and server.end_time is not None
    for chunk in chunk_spans:
        assert chunk.parent is not None and chunk.parent.span_id == server.context.span_id
        assert chunk.end_time is not None and chunk.end_time <= server.end_time


def test_a_client_leaving_a_stream_is_recorded(base_url: str) -> None:
    with capture("http.server.request.stop") as stops:
        with httpx.Client(base_url=base_url) as client, client.stream("GET", "/endless") as r:
            next(r.iter_bytes())
        wait_for(lambda: len(stops) == 1, "the server span did not end")
    assert stops[0].metadata["error.type"] == "client_disconnected"
    assert stops[0].metadata["http.response.status_code"] == 200


def test_a_client_timeout_ends_the_client_span_with_the_error_class(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with capture("http.client.request.exception") as failures, httpx.Client(
        transport=TelemetryTransport(), base_url=base_url, timeout=0.2
    ) as client, pytest.raises(httpx.ReadTimeout):
        client.get("/slow")
    [failure] = failures
    assert failure.metadata["kind"] is httpx.ReadTimeout
    assert failure.metadata["error.type"] == "ReadTimeout"
    [span] = of_kind(exporter, SpanKind.CLIENT)
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes["exception.type"] == "httpx.ReadTimeout"  # type: ignore[index]


def test_connection_refused_ends_the_client_span_with_the_error_class() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with capture("http.client.request") as events, httpx.Client(
        transport=TelemetryTransport()
    ) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")
    assert [e.name[-1] for e in events] == ["start", "exception"]
    assert events[1].metadata["error.type"] == "ConnectError"


def test_the_async_client_transport_joins_the_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    async def main() -> int:
        transport = AsyncTelemetryTransport()
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client, \
                vsrtel.span("app.batch"):
            responses = await asyncio.gather(client.get("/users/1"), client.get("/users/2"))
        return sum(r.status_code for r in responses)

    assert asyncio.run(main()) == 400
    servers = server_spans(exporter, 2)
    clients = of_kind(exporter, SpanKind.CLIENT)
    [batch] = named(exporter, "app.batch")
    assert batch.context is not None
    by_id = {c.context.span_id: c for c in clients if c.context is not None}
    for server in servers:
        assert server.parent is not None
        client_span = by_id[server.parent.span_id]
        assert client_span.parent is not None
        assert client_span.parent.span_id == batch.context.span_id


def test_nothing_is_emitted_or_injected_when_nobody_listens(base_url: str) -> None:
    seen: list[dict[str, Any]] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with uvicorn_server(TelemetryMiddleware(echo)) as url, httpx.Client(
        transport=TelemetryTransport()
    ) as client:
        assert client.get(url).status_code == 204
    headers = dict(seen[0]["headers"])
    assert b"traceparent" not in headers


def test_spans_opened_in_tasks_of_the_handler_nest_under_the_request_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, base_url: str
) -> None:
    with httpx.Client(base_url=base_url) as client:
        assert client.get("/fanout").text == "done"
    [server] = server_spans(exporter, 1)
    parts = named(exporter, "app.part")
    assert len(parts) == 2 and server.context is not None
    assert all(p.parent is not None and p.parent.span_id == server.context.span_id
               for p in parts)


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
def test_lifespan_and_websocket_scopes_pass_through_untouched(kind: str) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": kind, "path": "/ws", "headers": []}
    with capture() as events:
        asyncio.run(TelemetryMiddleware(inner)(scope, receive, send))
    assert seen == [(scope, receive, send)]
    assert seen[0][1] is receive and seen[0][2] is send and scope == {
        "type": kind, "path": "/ws", "headers": []}
    assert events == []


def test_one_trace_per_request_reaches_the_rotel_collector(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_otlp_collector import Rotel, _agent_binary

    from vsrtel.export import otel

    collector = Rotel(_agent_binary(), tmp_path)
    try:
        collector.start()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
        setup = otel.configure("web-collector-test")
        try:
            spans.attach_tracer(["http", "app"], tracer_provider=setup.tracer_provider)
            with uvicorn_server(TelemetryMiddleware(APP)) as url, httpx.Client(
                transport=TelemetryTransport(), base_url=url
            ) as client, capture("http.server.request.stop") as stops:
                for user_id in (1, 2):
                    assert client.get(f"/users/{user_id}").status_code == 200
                assert client.get("/unavailable").status_code == 503
                wait_for(lambda: len(stops) == 3, "the server spans did not end")
        finally:
            setup.shutdown()  # flushes the batch of spans to the collector

        def received() -> list[dict[str, Any]]:
            return [span for batch in collector.records("traces") for span in batch["spans"]]

        collector.wait_for(lambda: len(received()) >= 8)
    finally:
        collector.stop()
    by_trace: dict[str, dict[str, dict[str, Any]]] = {}
    for span in received():
        attributes = span["attributes"]
        role = "server" if "url.path" in attributes else "client" if "url.full" in attributes else (
            span["name"])
        by_trace.setdefault(span["trace_id"], {})[role] = span
    assert len(by_trace) == 3  # one trace per request
    routes = []
    for trace_spans in by_trace.values():
        client_span, server = trace_spans["client"], trace_spans["server"]
        assert server["parent_span_id"] == client_span["span_id"]
        assert server["name"] == "GET " + server["attributes"]["http.route"]
        routes.append(server["attributes"]["http.route"])
        if "app.lookup" in trace_spans:
            assert trace_spans["app.lookup"]["parent_span_id"] == server["span_id"]
    assert sorted(routes) == ["/unavailable", "/users/{user_id}", "/users/{user_id}"]
    assert sum("app.lookup" in t for t in by_trace.values()) == 2



def test_added_with_starlettes_add_middleware_it_still_sees_the_route() -> None:
    app = Starlette(routes=[Route("/users/{user_id}", user), Route("/boom", boom)])
    app.add_middleware(TelemetryMiddleware)
    with capture("http.server.request") as events, uvicorn_server(app) as url, httpx.Client(
        base_url=url
    ) as client:
        assert client.get("/users/5").status_code == 200
        assert client.get("/boom").status_code == 500
        wait_for(lambda: len(events) == 4, "the server spans did not end")
    stop, exception = (e for e in events if e.name[-1] != "start")
    assert stop.metadata["http.route"] == "/users/{user_id}"
    assert exception.metadata["http.route"] == "/boom"
    assert exception.metadata["kind"] is RuntimeError
    assert "http.response.status_code" not in exception.metadata  # answered outside it
