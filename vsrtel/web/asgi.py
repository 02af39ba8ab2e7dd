"""ASGI middleware: every HTTP request a vsrtel span, ``http.server.request`` by default.

>>> from vsrtel.web.asgi import TelemetryMiddleware
>>> app = TelemetryMiddleware(app)          # or Starlette: app.add_middleware(TelemetryMiddleware)

Each request of an ``http`` scope runs inside ``vsrtel.span(prefix, metadata)``, entered in
the request's task, so spans the app opens (in that task, or in tasks it creates) nest under it,
and with the spans handler attached the request's OpenTelemetry span is the current one there.
The start metadata carries ``http.request.method``, ``url.scheme``, ``url.path``,
``server.address``, ``server.port`` and ``network.protocol.version``; the stop (or exception)
metadata adds ``http.route``, ``http.response.status_code``, the body sizes when known, and
``error.type`` for a 5xx response, an exception, or a client that went away before the last
body chunk (``client_disconnected``). See docs/web.md for the whole catalogue.

The span ends when the app returns: after the last body chunk of a streaming response (and
after any background task the framework runs then). A 5xx response ends it with a ``stop``
event carrying ``error.type``; an exception escaping the app ends it with the ``exception``
event and is re-raised unchanged. ``lifespan`` and ``websocket`` scopes pass through untouched.
With nobody listening to the span's events, a request goes straight to the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import vsrtel
from vsrtel.web._http import (
    CLIENT_DISCONNECTED,
    RouteFunction,
    active_event,
    active_metadata,
    error_type,
    header_names,
    header_value,
    host_and_port,
    method,
    set_route,
    span_names,
)

__all__ = ["TelemetryMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TelemetryMiddleware:
    """Wrap an ASGI application so that each HTTP request is a vsrtel span.

    - ``prefix``: the span's event prefix (default ``"http.server.request"``).
    - ``route``: a function of the ASGI scope (called after the app ran) returning the route
      template, for apps whose framework does not say it; used when the scope holds no
      Starlette route (``scope["route"]``). It keeps ids in paths out of ``http.route``; without
      it the path is used. One that raises or returns no str is logged once, and the path used.
    - ``headers`` / ``response_headers``: header names whose values are copied into metadata
      as ``http.request.header.<name>`` / ``http.response.header.<name>`` (tuples of str),
      through the redaction rule: ``authorization``, ``cookie`` and every other secret header
      name give ``("[REDACTED]",)``. No header is copied unless listed.
    - ``user_agent``: copy ``User-Agent`` as ``user_agent.original``.
    - ``registry``: the registry to emit on (default: vsrtel's default registry).

    Raises ``TypeError``/``ValueError`` naming a bad option.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str | tuple[str, ...] = "http.server.request",
        route: Callable[[Scope], str | None] | None = None,
        headers: Iterable[str] = (),
        response_headers: Iterable[str] = (),
        user_agent: bool = False,
        registry: vsrtel.Registry | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        self.app = app
        self.prefix, self._events = span_names(prefix)
        self._active = active_event(self.prefix)
        self._route = RouteFunction(route)
        self._headers = {k.encode("latin-1"): v for k, v in header_names(
            headers, "http.request.header").items()}
        self._response_headers = {k.encode("latin-1"): v for k, v in header_names(
            response_headers, "http.response.header").items()}
        self._user_agent = bool(user_agent)
        self._registry = vsrtel.Registry.or_default(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        enabled = self._registry.enabled
        start, stop, exception = self._events
        if scope["type"] != "http" or not (
            enabled(start) or enabled(stop) or enabled(exception) or enabled(self._active)
        ):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, receive, send)
        metadata = exchange.request_metadata()
        active = active_metadata(metadata) if enabled(self._active) else None
        if active is not None:
            self._registry.execute(self._active, {"change": 1}, active)
        try:
            with self._registry.span(self.prefix, metadata) as span:
                try:
                    await self.app(scope, exchange.receive, exchange.send)
                except BaseException as error:
                    exchange.finish(span.metadata, type(error).__qualname__)
                    raise
                exchange.finish(span.metadata, None)
        finally:
            if active is not None:
                self._registry.execute(self._active, {"change": -1}, active)


class _Exchange:
    """One request's state: what the wrapped ``receive`` and ``send`` saw."""

    __slots__ = (
        "_receive",
        "_send",
        "complete",
        "disconnected",
        "middleware",
        "received",
        "request_size",
        "response_headers",
        "root_path",
        "scope",
        "sent",
        "status",
    )

    def __init__(self, middleware: TelemetryMiddleware, scope: Scope, receive: Receive,
                 send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self._receive = receive
        self._send = send
        self.root_path = scope.get("root_path", "")
        self.status: int | None = None
        self.sent = 0
        self.received = 0
        self.request_size: int | None = None
        self.complete = False
        self.disconnected = False
        self.response_headers: dict[str, Any] | None = None

    def request_metadata(self) -> dict[str, Any]:
        scope = self.scope
        scheme = scope.get("scheme", "http")
        metadata: dict[str, Any] = {}
        method(scope["method"], metadata)
        metadata["span_kind"] = "server"
        metadata["url.scheme"] = scheme
        metadata["url.path"] = scope["path"]
        server = scope.get("server")
        if server and server[1] is not None:
            metadata["server.address"], metadata["server.port"] = server[0], server[1]
        version = scope.get("http_version")
        if version:
            metadata["network.protocol.version"] = version
        carrier: dict[str, str] | None = None
        listed = self.middleware._headers
        found: dict[str, list[str]] | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                address, port = host_and_port(value.decode("latin-1"), scheme)
                metadata["server.address"] = address
                if port is not None:
                    metadata["server.port"] = port
            elif name == b"traceparent" or name == b"tracestate":
                if carrier is None:
                    carrier = {}
                carrier[name.decode()] = value.decode("latin-1")
            elif name == b"content-length":
                if value.isdigit():
                    self.request_size = int(value)
            elif name == b"user-agent" and self.middleware._user_agent:
                metadata["user_agent.original"] = value.decode("latin-1")
            if name in listed:
                if found is None:
                    found = {}
                found.setdefault(listed[name], []).append(value.decode("latin-1"))
        if found:
            for key, values in found.items():
                metadata[key] = header_value(key, values)
        if carrier is not None and "traceparent" in carrier:
            # Read by the spans handler (vsrtel.handlers.spans.extract): the caller's span is
            # the parent. Left as text here, so that nothing is parsed when nobody traces.
            metadata["trace_parent"] = carrier
        return metadata

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False) and self.request_size is None:
                self.request_size = self.received
        elif kind == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            self.sent += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.response.start":
            self.status = message["status"]
            listed = self.middleware._response_headers
            if listed:
                found: dict[str, list[str]] = {}
                for name, value in message.get("headers", ()):
                    name = bytes(name).lower()
                    if name in listed:
                        found.setdefault(listed[name], []).append(bytes(value).decode("latin-1"))
                self.response_headers = {
                    key: header_value(key, values)
                    for key, values in found.items()
                }
        await self._send(message)

    def finish(self, metadata: dict[str, Any], error: str | None) -> None:
        """Add what the response told to the stop (or exception) metadata."""
        scope = self.scope
        set_route(metadata, self.route(scope))
        if self.request_size is not None:
            metadata["http.request.body.size"] = self.request_size
        status = self.status
        if status is not None:
            metadata["http.response.status_code"] = status
            metadata["http.response.body.size"] = self.sent
            if self.response_headers:
                metadata.update(self.response_headers)
        if error is None:
            error = error_type(status)
            if error is None and self.disconnected and not self.complete:
                error = CLIENT_DISCONNECTED
        if error is not None:
            metadata["error.type"] = error

    def route(self, scope: Scope) -> str | None:
        # Starlette's router leaves the matched route in the scope, and the mounts' matched
        # prefix in root_path.
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            root = scope.get("root_path", "")
            mounted = root[len(self.root_path):] if root.startswith(self.root_path) else ""
            return mounted + path
        return self.middleware._route(scope)
