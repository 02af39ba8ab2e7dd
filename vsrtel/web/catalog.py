"""The HTTP event catalogue: what the web middleware and the httpx transports emit.

The names are those of the default prefixes; a middleware given another ``prefix`` emits the
same events under it. Metadata keys are OpenTelemetry's HTTP semantic-convention attribute
names (see `vsrtel.web._http` for how they fare in spans, metrics and logs).
"""

from __future__ import annotations

from vsrtel.catalog import Catalog, EventSpec

PREFIX = ("http",)
#: ``http.server.request``: a request served through a ``TelemetryMiddleware``.
SERVER_REQUEST = ("http", "server", "request")
#: ``http.server.active_requests``: a request entering (+1) or leaving (-1) the middleware.
SERVER_ACTIVE = ("http", "server", "active_requests")
#: ``http.client.request``: a request sent through a ``TelemetryTransport``.
CLIENT_REQUEST = ("http", "client", "request")

_METHOD = {
    "http.request.method": "the request method, or _OTHER for one outside RFC 9110 and PATCH "
                           "(str)",
}
_OTHER = {"http.request.method_original": "the method as sent, when it is _OTHER (str)"}
_STATUS = {
    "http.response.status_code": "the response's status code (int); absent when the app raised "
                                 "before starting a response",
}
_HEADERS = (
    "`{}.<name>` for each header listed in the `headers` option: its values (tuple of "
    "str, `[REDACTED]` for a secret header such as authorization or cookie)"
)

SERVER_METADATA = {
    **_METHOD,
    "span_name": "the spans handler's name for the span, as the semantic conventions name it: "
                 "the method (HTTP for _OTHER); at stop/exception `{method} {route}` when a "
                 "route template or the `route` function's answer is known (str)",
    "span_kind": "server: the OpenTelemetry span kind (str)",
    "url.scheme": "http or https (str)",
    "url.path": "the request path, without the query (str)",
}
SERVER_OPTIONAL = {
    **_OTHER,
    "server.address": "the host the client asked for (Host header), else the server's (str)",
    "server.port": "the port the client asked for, else the server's (int)",
    "network.protocol.version": "HTTP version: 1.0, 1.1, 2 (str)",
    "user_agent.original": "the User-Agent header, with `user_agent=True` (str)",
    "http.request.body.size": "request body size in bytes, when known: Content-Length, or "
                              "the body the app read to its end (int)",
    "trace_parent": "the caller's traceparent and tracestate headers (dict), when sent",
    "http.route": "stop/exception: the matched route template (Starlette), else the `route` "
                  "function's answer, else the path (str)",
    **_STATUS,
    "http.response.body.size": "stop/exception: response body bytes sent (int)",
    "error.type": "stop/exception: the status code of a 5xx response (str), the exception's "
                  "class name, or client_disconnected when the client left before the last "
                  "body chunk",
}
CLIENT_METADATA = {
    **_METHOD,
    "span_name": "the spans handler's name for the span: the method (HTTP for _OTHER) (str)",
    "span_kind": "client: the OpenTelemetry span kind (str)",
    "server.address": "the host of the URL (str)",
    "server.port": "the port of the URL, or the scheme's default (int)",
    "url.full": "the URL without credentials (str)",
}
CLIENT_OPTIONAL = {
    **_OTHER,
    "http.response.status_code": "stop: the response's status code (int)",
    "http.response.body.size": "stop: the response's Content-Length, when it has one (int)",
    "error.type": "stop/exception: the status code of a response of 400 or more (str), or the "
                  "error's class name (ConnectError, ReadTimeout...)",
}

CATALOG = Catalog(
    PREFIX,
    [
        EventSpec(
            SERVER_REQUEST,
            "span",
            "a request through the ASGI or WSGI TelemetryMiddleware, from its arrival to the "
            "last body chunk sent; stop for every response (a 5xx too, with error.type); "
            "exception when the app raises. Plus " + _HEADERS.format("http.request.header")
            + "; `http.response.header.<name>` likewise on stop",
            metadata=SERVER_METADATA,
            optional_metadata=SERVER_OPTIONAL,
        ),
        EventSpec(
            SERVER_ACTIVE,
            "event",
            "a request enters the middleware (change 1, before its span starts) or leaves it "
            "(change -1, after its span ended): the sum is the requests in progress",
            {"change": "1 or -1"},
            {**_METHOD, "url.scheme": "http or https (str)"},
            optional_metadata=_OTHER,
        ),
        EventSpec(
            CLIENT_REQUEST,
            "span",
            "a request through the httpx TelemetryTransport, from sending it to its response's "
            "headers; exception when the transport fails (connection refused, timeout). Plus "
            + _HEADERS.format("http.request.header"),
            metadata=CLIENT_METADATA,
            optional_metadata=CLIENT_OPTIONAL,
        ),
    ],
    title="HTTP",
)
