"""vsrtel.web.httpx on httpx's MockTransport: metadata, trace injection, errors, headers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import vsrtel
from vsrtel.handlers import spans
from vsrtel.testing import capture
from vsrtel.web.httpx import AsyncTelemetryTransport, TelemetryTransport

SENT: list[httpx.Request] = []


def answer(request: httpx.Request) -> httpx.Response:
    SENT.append(request)
    if request.url.path == "/slow":
        raise httpx.ReadTimeout("timed out", request=request)
    return httpx.Response(404 if request.url.path == "/missing" else 200, content=b"hello")


@pytest.fixture(autouse=True)
def _sent() -> Iterator[None]:
    SENT.clear()
    yield
    SENT.clear()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans.attach_tracer(["http", "app"], tracer_provider=provider)
    yield exporter
    provider.shutdown()


def client(**options: object) -> httpx.Client:
    return httpx.Client(transport=TelemetryTransport(httpx.MockTransport(answer), **options))


def test_a_request_is_a_span_with_semantic_convention_metadata() -> None:
    with capture("http.client.request") as events, client() as c:
        c.get("https://user:pw@example.com/missing?q=1")
    start, stop = events
    assert {k: v for k, v in start.metadata.items() if k != "telemetry_span_context"} == {
        "http.request.method": "GET",
        "span_name": "GET",
        "span_kind": "client",
        "server.address": "example.com",
        "server.port": 443,
        "url.full": "https://example.com/missing?q=1",  # no credentials
    }
    assert stop.metadata["http.response.status_code"] == 404
    assert stop.metadata["http.response.body.size"] == 5
    assert stop.metadata["error.type"] == "404"  # a client span fails from 400 on
    assert SENT[0].url.userinfo == b"user:pw"  # what is sent is untouched


def test_the_client_span_context_is_injected_and_is_the_parent_of_the_callee(
    exporter: InMemorySpanExporter,
) -> None:
    with client() as c, vsrtel.span("app.checkout"):
        c.get("http://example.com/")
    [client_span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    [checkout] = [s for s in exporter.get_finished_spans() if s.name == "app.checkout"]
    assert client_span.context is not None and checkout.context is not None
    assert client_span.parent is not None
    assert client_span.parent.span_id == checkout.context.span_id
    traceparent = SENT[0].headers["traceparent"]
    assert traceparent.startswith(f"00-{client_span.context.trace_id:032x}-"
                                  f"{client_span.context.span_id:016x}-")


def test_nothing_is_emitted_or_injected_when_nobody_listens() -> None:
    with capture("app") as events, client() as c:
        c.get("http://example.com/")
    assert events == [] and "traceparent" not in SENT[0].headers


def test_an_error_without_response_is_the_exception_event_and_reaches_the_caller() -> None:
    with capture("http.client.request") as events, client() as c, pytest.raises(
        httpx.ReadTimeout
    ) as raised:
        c.get("http://example.com/slow")
    _, exception = events
    assert exception.name[-1] == "exception"
    assert exception.metadata["reason"] is raised.value
    assert exception.metadata["error.type"] == "ReadTimeout"


def test_listed_headers_are_copied_through_the_redaction_rule() -> None:
    with capture("http.client.request.start") as events, client(
        headers=["authorization", "x-note", "x-absent"]
    ) as c:
        c.get("http://example.com/", headers={"Authorization": "Bearer abc",
                                               "X-Note": "see token=abc&page=2"})
    metadata = events[0].metadata
    assert metadata["http.request.header.authorization"] == ("[REDACTED]",)
    assert metadata["http.request.header.x-note"] == ("see token=[REDACTED]&page=2",)
    assert "http.request.header.x-absent" not in metadata
    assert SENT[0].headers["authorization"] == "Bearer abc"  # the request itself is untouched


def test_the_async_transport_reports_the_same() -> None:
    async def main() -> None:
        transport = AsyncTelemetryTransport(httpx.MockTransport(answer))
        async with httpx.AsyncClient(transport=transport) as c:
            await c.post("http://example.com:8080/x")
            with pytest.raises(httpx.ReadTimeout):
                await c.get("http://example.com/slow")

    with capture("http.client.request") as events:
        asyncio.run(main())
    assert [e.name[-1] for e in events] == ["start", "stop", "start", "exception"]
    assert events[0].metadata["server.port"] == 8080
    assert events[0].metadata["http.request.method"] == "POST"


def test_bad_options_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="'é'"):
        TelemetryTransport(headers=["é"])
    with pytest.raises(TypeError, match="AsyncBaseTransport"):
        AsyncTelemetryTransport(httpx.HTTPTransport())  # type: ignore[arg-type]
