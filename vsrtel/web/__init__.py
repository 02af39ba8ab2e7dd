"""Web services: HTTP server and client requests as vsrtel spans, in the style of Plug.Telemetry.

- `vsrtel.web.asgi` and `vsrtel.web.wsgi`: ``TelemetryMiddleware``, one line around an app;
  each request is an ``http.server.request`` span whose metadata follows OpenTelemetry's HTTP
  semantic conventions, continuing the caller's trace from its ``traceparent`` header.
- `vsrtel.web.httpx`: httpx transports making each outgoing request an ``http.client.request``
  span, with ``traceparent`` injected.
- :data:`CATALOG` (`vsrtel.web.catalog`): those events, declared; :data:`METRICS`
  (`vsrtel.web.recommended`): the recommended metrics built on them; ``alerts.yml`` beside them.

Nothing here is imported by ``import vsrtel``, and ``import vsrtel.web`` loads no web framework.
"""

from __future__ import annotations

from vsrtel.web.catalog import CATALOG, CLIENT_REQUEST, SERVER_ACTIVE, SERVER_REQUEST

__all__ = ["CATALOG", "CLIENT_REQUEST", "METRICS", "SERVER_ACTIVE", "SERVER_REQUEST"]


def __getattr__(name: str) -> object:
    # METRICS is loaded only when asked for: it imports the metric definitions.
    if name == "METRICS":
        from vsrtel.web.recommended import METRICS

        return METRICS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
