"""vsrtel.web.METRICS scraped from /metrics after a known number of real requests."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import httpx
import pytest
from _web_servers import uvicorn_server, wait_for
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from vsrtel import metrics as m
from vsrtel.export.prometheus import MetricsServer, serve_metrics
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.web import METRICS
from vsrtel.web.asgi import TelemetryMiddleware
from vsrtel.web.httpx import TelemetryTransport
from vsrtel.web.recommended import DURATION_BUCKETS

pytestmark = pytest.mark.integration


async def user(request: Request) -> Response:
    return PlainTextResponse("user")


async def unavailable(request: Request) -> Response:
    return PlainTextResponse("down", status_code=503)


async def boom(request: Request) -> Response:
    raise RuntimeError("broken")


APP = Starlette(routes=[Route("/users/{user_id}", user), Route("/unavailable", unavailable),
                        Route("/boom", boom, methods=["POST"])])


@pytest.fixture
def metrics_server() -> Iterator[MetricsServer]:
    server = serve_metrics(port=0)
    try:
        with MetricsReporter(METRICS, meter_provider=server.meter_provider):
            yield server
    finally:
        server.close()


def scrape(server: MetricsServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(server.url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_the_scrape_counts_requests_by_route_and_status_class(
    metrics_server: MetricsServer,
) -> None:
    with uvicorn_server(TelemetryMiddleware(APP)) as base_url, httpx.Client(
        transport=TelemetryTransport(), base_url=base_url
    ) as client:
        for i in range(5):
            assert client.get(f"/users/{i}").status_code == 200
        for _ in range(3):
            assert client.get("/unavailable").status_code == 503
        for _ in range(2):
            assert client.post("/boom").status_code == 500
        server_count = "http_server_request_duration_seconds_count"

        def settled() -> bool:  # the server spans end after the client has its responses
            samples = scrape(metrics_server)
            exceptions = value(samples, "http_server_request_exception_count_total",
                               error_type="RuntimeError", http_request_method="POST",
                               http_route="/boom")
            return exceptions == 2 and sum(
                v for (name, _), v in samples.items() if name == server_count) == 8
        wait_for(settled, "the server did not count every request")
        samples = scrape(metrics_server)
    get = {"http_request_method": "GET"}
    assert value(samples, server_count, http_route="/users/{user_id}",
                 http_response_status_class="2xx", **get) == 5
    assert value(samples, server_count, http_route="/unavailable",
                 http_response_status_class="5xx", **get) == 3
    buckets = sorted(
        float(dict(labels)["le"]) for (name, labels), _ in samples.items()
        if name == "http_server_request_duration_seconds_bucket"
        and dict(labels)["http_route"] == "/unavailable"
    )
    assert buckets == [*DURATION_BUCKETS, float("inf")]
    assert value(samples, "http_server_active_requests", url_scheme="http", **get) == 0
    assert value(samples, "http_server_active_requests", url_scheme="http",
                 http_request_method="POST") == 0
    client_count = "http_client_request_duration_seconds_count"
    address = {"server_address": "127.0.0.1"}
    assert value(samples, client_count, http_response_status_class="2xx", **get, **address) == 5
    assert value(samples, client_count, http_response_status_class="5xx", **get, **address) == 3
    assert value(samples, client_count, http_response_status_class="5xx",
                 http_request_method="POST", **address) == 2


def test_the_client_counts_requests_that_got_no_response(metrics_server: MetricsServer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with httpx.Client(transport=TelemetryTransport()) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                client.get(f"http://127.0.0.1:{port}/")
    samples = scrape(metrics_server)
    assert value(samples, "http_client_request_exception_count_total",
                 error_type="ConnectError", http_request_method="GET",
                 server_address="127.0.0.1") == 2


def test_every_tag_is_bounded_by_its_normaliser() -> None:
    [duration] = [metric for metric in METRICS if metric.name == "http.server.request.duration"]
    assert m.buckets_for(duration) == DURATION_BUCKETS
