"""The recommended metrics of a web service, ready for ``MetricsReporter(METRICS)``.

Named as OpenTelemetry's HTTP semantic conventions name them (``http.server.request.duration``,
in seconds, with its recommended bucket boundaries), so dashboards written for those work on
the Prometheus series they become (``http_server_request_duration_seconds_bucket`` with labels
``http_request_method``, ``http_route``, ``http_response_status_class``). Every tag is bounded:
a method outside the known ones is ``_OTHER``, a status is its class (``2xx``..``5xx``), an
exception its class name; ``http.route`` is as bounded as the routes (a route template, or the
``route`` function's answer: without either, every distinct path is a series). They feed the
shipped alert rules (``vsrtel/web/alerts.yml``): error ratio and p99 latency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vsrtel import metrics as m

#: OpenTelemetry's recommended bucket boundaries for HTTP request durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0)


def _server_tags(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "http.request.method": metadata["http.request.method"],
        "http.route": metadata["http.route"],
        "http.response.status_class": m.status_class(metadata["http.response.status_code"]),
    }


def _server_exception_tags(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "http.request.method": metadata["http.request.method"],
        "http.route": metadata["http.route"],
        "error.type": m.normalize_reason(metadata["kind"]),
    }


def _client_tags(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "http.request.method": metadata["http.request.method"],
        "server.address": metadata["server.address"],
        "http.response.status_class": m.status_class(metadata["http.response.status_code"]),
    }


def _client_exception_tags(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "http.request.method": metadata["http.request.method"],
        "server.address": metadata["server.address"],
        "error.type": m.normalize_reason(metadata["kind"]),
    }


METRICS: list[m.Metric] = [
    m.distribution(
        "http.server.request.duration",
        event_name="http.server.request.stop",
        measurement="duration",
        unit=("native", "second"),
        tags=_server_tags,
        reporter_options={"buckets": DURATION_BUCKETS},
        description="Duration of HTTP server requests, by method, route and status class",
    ),
    m.counter(
        "http.server.request.exception.count",
        tags=_server_exception_tags,
        description="HTTP server requests whose app raised, by method, route and exception class",
    ),
    m.sum(
        "http.server.active_requests",
        event_name="http.server.active_requests",
        measurement="change",
        tags=["http.request.method", "url.scheme"],
        # In progress now: a worker killed mid-request takes its +1 with it.
        reporter_options={"monotonic": False, "multiprocess_mode": "live_sum"},
        description="HTTP server requests in progress",
    ),
    m.distribution(
        "http.client.request.duration",
        event_name="http.client.request.stop",
        measurement="duration",
        unit=("native", "second"),
        tags=_client_tags,
        reporter_options={"buckets": DURATION_BUCKETS},
        description="Duration of HTTP client requests (to the response's headers), by method, "
                    "server and status class",
    ),
    m.counter(
        "http.client.request.exception.count",
        tags=_client_exception_tags,
        description="HTTP client requests that failed without a response (connection refused, "
                    "timeout), by method, server and error class",
    ),
]
