"""WSGI middleware: every HTTP request a vsrtel span, ``http.server.request`` by default.

>>> from vsrtel.web.wsgi import TelemetryMiddleware
>>> app = TelemetryMiddleware(app)    # Flask: app.wsgi_app = TelemetryMiddleware(app.wsgi_app)

The span is entered in the server's thread when the app is called and ends when the server
closes the response (PEP 3333's ``close()``), after its last chunk was written: spans the app
opens, in the call or while a streamed body is produced, nest under it. Metadata, 5xx and
exceptions are as for the ASGI middleware (`vsrtel.web.asgi`); the route is the ``route``
function's answer (a function of the WSGI environ) or the path. A response closed before its
last chunk was taken (the client went away) ends with ``error.type`` ``client_disconnected``.
With nobody listening to the span's events, a request goes straight to the app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
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

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]


class TelemetryMiddleware:
    """Wrap a WSGI application so that each request is a vsrtel span.

    The options are those of :class:`vsrtel.web.asgi.TelemetryMiddleware`; ``route`` is a
    function of the WSGI environ. Raises ``TypeError``/``ValueError`` naming a bad option.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        prefix: str | tuple[str, ...] = "http.server.request",
        route: Callable[[Environ], str | None] | None = None,
        headers: Iterable[str] = (),
        response_headers: Iterable[str] = (),
        user_agent: bool = False,
        registry: vsrtel.Registry | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application, got {app!r}")
        self.app = app
        self.prefix, self._events = span_names(prefix)
        self._active = active_event(self.prefix)
        self._route = RouteFunction(route)
        # Request headers as the environ names them: HTTP_X_REQUEST_ID.
        self._headers = {
            "HTTP_" + name.upper().replace("-", "_"): key
            for name, key in header_names(headers, "http.request.header").items()
        }
        self._response_headers = header_names(response_headers, "http.response.header")
        self._user_agent = bool(user_agent)
        self._registry = vsrtel.Registry.or_default(registry)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        enabled = self._registry.enabled
        start, stop, exception = self._events
        if not (enabled(start) or enabled(stop) or enabled(exception) or enabled(self._active)):
            return self.app(environ, start_response)
        metadata = self._request_metadata(environ)
        response = _Response(self, environ, start_response)
        if enabled(self._active):
            response.active = active_metadata(metadata)
            self._registry.execute(self._active, {"change": 1}, response.active)
        span = self._registry.span(self.prefix, metadata)
        span.__enter__()
        try:
            result = self.app(environ, response.start_response)
        except BaseException as error:
            response.end(span, error)
            raise
        if hasattr(result, "__len__"):  # a list: servers may count it for Content-Length
            return _SizedBody(result, span, response)
        return _Body(result, span, response)

    def _request_metadata(self, environ: Environ) -> dict[str, Any]:
        scheme = environ.get("wsgi.url_scheme", "http")
        metadata: dict[str, Any] = {}
        method(environ.get("REQUEST_METHOD", "GET"), metadata)
        metadata["span_kind"] = "server"
        metadata["url.scheme"] = scheme
        metadata["url.path"] = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        host = environ.get("HTTP_HOST")
        if host:
            metadata["server.address"], port = host_and_port(host, scheme)
        else:
            metadata["server.address"] = environ.get("SERVER_NAME", "")
            port = environ.get("SERVER_PORT")
            port = int(port) if isinstance(port, str) and port.isdigit() else None
        if port is not None:
            metadata["server.port"] = port
        protocol = environ.get("SERVER_PROTOCOL", "")
        if protocol.startswith("HTTP/"):
            metadata["network.protocol.version"] = protocol[5:]
        size = environ.get("CONTENT_LENGTH")
        if size and size.isdigit():
            metadata["http.request.body.size"] = int(size)
        if self._user_agent and "HTTP_USER_AGENT" in environ:
            metadata["user_agent.original"] = environ["HTTP_USER_AGENT"]
        for name, key in self._headers.items():
            value = environ.get(name)
            if value is not None:
                metadata[key] = header_value(key, [value])
        traceparent = environ.get("HTTP_TRACEPARENT")
        if traceparent:
            # Read by the spans handler (vsrtel.handlers.spans.extract): the caller's span is
            # the parent. Left as text here, so that nothing is parsed when nobody traces.
            carrier = {"traceparent": traceparent}
            if "HTTP_TRACESTATE" in environ:
                carrier["tracestate"] = environ["HTTP_TRACESTATE"]
            metadata["trace_parent"] = carrier
        return metadata


class _Response:
    """One request's state: the status and headers the app started its response with."""

    __slots__ = (
        "_start_response", "active", "environ", "headers", "middleware", "sent", "status"
    )

    def __init__(
        self, middleware: TelemetryMiddleware, environ: Environ, start_response: StartResponse
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self._start_response = start_response
        self.status: int | None = None
        self.headers: dict[str, Any] | None = None
        self.sent = 0
        self.active: dict[str, Any] | None = None  # the metadata of the active event, if sent

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        code = status[:3]
        self.status = int(code) if code.isdigit() else None
        listed = self.middleware._response_headers
        if listed:
            found: dict[str, list[str]] = {}
            for name, value in headers:
                key = listed.get(name.lower())
                if key is not None:
                    found.setdefault(key, []).append(value)
            self.headers = {
                key: header_value(key, values) for key, values in found.items()
            }
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def end(self, span: vsrtel.Span, error: BaseException | None, complete: bool = True) -> None:
        """Add what the response told to the span's metadata, and end the span."""
        metadata = span.metadata
        middleware = self.middleware
        set_route(metadata, middleware._route(self.environ))
        status = self.status
        if status is not None:
            metadata["http.response.status_code"] = status
            metadata["http.response.body.size"] = self.sent
            if self.headers:
                metadata.update(self.headers)
        try:
            if error is not None:
                metadata["error.type"] = type(error).__qualname__
                span.__exit__(type(error), error, error.__traceback__)
                return
            kind = error_type(status)
            if kind is None and not complete:
                kind = CLIENT_DISCONNECTED
            if kind is not None:
                metadata["error.type"] = kind
            span.__exit__(None, None, None)
        finally:
            if self.active is not None:
                middleware._registry.execute(middleware._active, {"change": -1}, self.active)


class _Body:
    """The app's response body, counted as the server takes it; ``close()`` ends the span."""

    __slots__ = ("complete", "response", "result", "span")

    def __init__(self, result: Iterable[bytes], span: vsrtel.Span, response: _Response) -> None:
        self.result = result
        self.span: vsrtel.Span | None = span
        self.response = response
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        response = self.response
        try:
            for chunk in self.result:
                response.sent += len(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as error:
            self._end(error)
            raise
        self.complete = True

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        except BaseException as error:
            self._end(error)
            raise
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        span, self.span = self.span, None
        if span is not None:
            self.response.end(span, error, self.complete)


class _SizedBody(_Body):
    """A body whose chunks the server may count (``len``), as it could the app's own list:
    wsgiref then sets Content-Length for a one-chunk body."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.result)  # type: ignore[arg-type]
