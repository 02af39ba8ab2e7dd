"""One ASGI request through vsrtel's middleware, against the bare app and against
opentelemetry-instrumentation-asgi's middleware on the same app (no server, no network).

Each request is one coroutine driven by hand (``send(None)`` to its end): the app never
suspends, so what is timed is the app and the middleware, without an event loop's turn. The
overhead rows time the bare app and the wrapped one in the same run and give the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import vsrtel
from benchmarks._harness import Case, Target, now
from vsrtel.handlers import spans
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.web import METRICS
from vsrtel.web.asgi import TelemetryMiddleware

FLOOR = "floor: dict lookup + 1 call"  # the core's first row
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/users/42",
    "raw_path": b"/users/42",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]}
BODY = {"type": "http.response.body", "body": b"ok"}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}

App = Callable[[Any, Any, Any], Coroutine[Any, Any, None]]


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


async def receive() -> Any:
    return REQUEST


async def send(message: Any) -> None:
    pass


def _requests(asgi: App, loops: int) -> int:
    scope = SCOPE
    start = now()
    for _ in range(loops):
        request = asgi(dict(scope), receive, send)  # a server gives each request its own scope
        try:  # noqa: SIM105 (contextlib.suppress would cost as much as the bare app)
            request.send(None)
        except StopIteration:
            pass
    return now() - start


def _vsrtel_quiet() -> App:
    return TelemetryMiddleware(app, registry=vsrtel.Registry())


def _vsrtel_traced() -> App:
    registry = vsrtel.Registry()
    # Providers without processors or readers: what instrumenting costs with nothing exported,
    # the same for both middlewares.
    spans.attach_tracer(["http"], tracer_provider=TracerProvider(shutdown_on_exit=False),
                        registry=registry)
    MetricsReporter(METRICS, meter_provider=MeterProvider(shutdown_on_exit=False),
                    registry=registry).attach()
    return TelemetryMiddleware(app, registry=registry)


def _otel() -> App:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    middleware: App = OpenTelemetryMiddleware(
        app, tracer_provider=TracerProvider(shutdown_on_exit=False),
        meter_provider=MeterProvider(shutdown_on_exit=False),
    )
    return middleware


def bare(loops: int) -> int:
    return _requests(app, loops)


def wrapped(make: Callable[[], App]) -> Callable[[int], int]:
    def run(loops: int) -> int:
        return _requests(make(), loops)

    return run


def overhead(make: Callable[[], App]) -> Callable[[int], int]:
    def run(loops: int) -> int:
        wrapped_app = make()
        return max(_requests(wrapped_app, loops) - _requests(app, loops), 0)

    return run


BARE = "asgi request, bare app called directly"
QUIET = "asgi request, vsrtel middleware, 0 handlers"
TRACED = "asgi request, vsrtel middleware + spans handler + web METRICS"
OTEL = "asgi request, OTel OpenTelemetryMiddleware"
QUIET_OVERHEAD = "asgi middleware overhead, 0 handlers"
TRACED_OVERHEAD = "asgi middleware overhead, spans handler + web METRICS"
OTEL_OVERHEAD = "asgi middleware overhead, OTel OpenTelemetryMiddleware"

CASES = [
    Case(BARE, bare),
    Case(QUIET, wrapped(_vsrtel_quiet)),
    Case(TRACED, wrapped(_vsrtel_traced)),
    Case(OTEL, wrapped(_otel)),
    Case(QUIET_OVERHEAD, overhead(_vsrtel_quiet)),
    Case(TRACED_OVERHEAD, overhead(_vsrtel_traced)),
    Case(OTEL_OVERHEAD, overhead(_otel)),
]

TARGETS = [
    # Issue 21: about 2 us at an 80 ns floor, when nobody listens.
    Target("asgi middleware overhead (0 handlers) vs floor", QUIET_OVERHEAD, FLOOR, 40.0),
    Target("asgi middleware overhead, traced + metrics vs OTel's middleware", TRACED_OVERHEAD,
           OTEL_OVERHEAD, 0.5),
]
