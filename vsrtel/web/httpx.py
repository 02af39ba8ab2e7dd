"""httpx transports: every outgoing request a vsrtel span, ``http.client.request`` by default.

>>> import httpx
>>> from vsrtel.web.httpx import AsyncTelemetryTransport, TelemetryTransport
>>> client = httpx.Client(transport=TelemetryTransport())
>>> async_client = httpx.AsyncClient(transport=AsyncTelemetryTransport())

Each request runs inside ``vsrtel.span(prefix, metadata)``, from sending it to receiving the
response's headers (reading the body is the caller's), with ``http.request.method``,
``server.address``, ``server.port`` and ``url.full`` (without credentials) at start, and
``http.response.status_code``, ``http.response.body.size`` (when the response says it) and
``error.type`` for a status of 400 or more at stop. The current trace context is injected
into the request (W3C ``traceparent`` by default, `vsrtel.handlers.spans.inject`), so with the
spans handler attached the called service's server span is the client span's child. An error
of the transport (connection refused, a timeout) ends the span with the ``exception`` event,
and ``error.type`` its class name; it is re-raised unchanged. With nobody listening to the
span's events, a request goes through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

import vsrtel
from vsrtel.handlers.spans import inject
from vsrtel.web._http import header_names, header_value, method, span_names

__all__ = ["AsyncTelemetryTransport", "TelemetryTransport"]


class _Options:
    """What both transports share: the span's names and the request's metadata."""

    def __init__(
        self,
        prefix: str | tuple[str, ...],
        headers: Iterable[str],
        registry: vsrtel.Registry | None,
    ) -> None:
        self.prefix, self.events = span_names(prefix)
        self.headers = header_names(headers, "http.request.header")
        self.registry = vsrtel.Registry.or_default(registry)

    def listened(self) -> bool:
        enabled = self.registry.enabled
        start, stop, exception = self.events
        return enabled(start) or enabled(stop) or enabled(exception)

    def request_metadata(self, request: httpx.Request) -> dict[str, Any]:
        url = request.url
        metadata: dict[str, Any] = {}
        method(request.method, metadata)
        metadata["span_kind"] = "client"
        metadata["server.address"] = url.host
        port = url.port
        metadata["server.port"] = port if port is not None else (443 if url.scheme == "https"
                                                                   else 80)
        metadata["url.full"] = str(url.copy_with(username=None, password=None)
                                   if url.userinfo else url)
        for name, key in self.headers.items():
            values = request.headers.get_list(name)
            if values:
                metadata[key] = header_value(key, values)
        return metadata


def _response_metadata(metadata: dict[str, Any], response: httpx.Response) -> None:
    status = response.status_code
    metadata["http.response.status_code"] = status
    size = response.headers.get("content-length")
    if size is not None and size.isdigit():
        metadata["http.response.body.size"] = int(size)
    if status >= 400:
        metadata["error.type"] = str(status)


class TelemetryTransport(httpx.BaseTransport):
    """A transport for ``httpx.Client`` that wraps each request in a vsrtel span.

    ``transport``: the transport that sends (default ``httpx.HTTPTransport()``); ``prefix``:
    the span's event prefix (default ``"http.client.request"``); ``headers``: request header
    names copied as ``http.request.header.<name>``, through the redaction rule; ``registry``:
    the registry to emit on (default: vsrtel's default registry).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        prefix: str | tuple[str, ...] = "http.client.request",
        headers: Iterable[str] = (),
        registry: vsrtel.Registry | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self._options = _Options(prefix, headers, registry)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        options = self._options
        if not options.listened():
            return self.transport.handle_request(request)
        with options.registry.span(options.prefix, options.request_metadata(request)) as span:
            inject(request.headers)
            try:
                response = self.transport.handle_request(request)
            except BaseException as error:
                span.metadata["error.type"] = type(error).__qualname__
                raise
            _response_metadata(span.metadata, response)
        return response

    def close(self) -> None:
        self.transport.close()


class AsyncTelemetryTransport(httpx.AsyncBaseTransport):
    """A transport for ``httpx.AsyncClient`` that wraps each request in a vsrtel span.

    As :class:`TelemetryTransport`; ``transport`` defaults to ``httpx.AsyncHTTPTransport()``.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        prefix: str | tuple[str, ...] = "http.client.request",
        headers: Iterable[str] = (),
        registry: vsrtel.Registry | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._options = _Options(prefix, headers, registry)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        options = self._options
        if not options.listened():
            return await self.transport.handle_async_request(request)
        metadata = options.request_metadata(request)
        async with options.registry.span(options.prefix, metadata) as span:
            inject(request.headers)
            try:
                response = await self.transport.handle_async_request(request)
            except BaseException as error:
                span.metadata["error.type"] = type(error).__qualname__
                raise
            _response_metadata(span.metadata, response)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
