"""vsrtel.web.CATALOG declares what the middleware and the transports emit, every key of it."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import httpx
import pytest

from vsrtel.web import CATALOG
from vsrtel.web.asgi import TelemetryMiddleware as AsgiMiddleware
from vsrtel.web.httpx import AsyncTelemetryTransport, TelemetryTransport
from vsrtel.web.wsgi import TelemetryMiddleware as WsgiMiddleware


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/boom":
        raise KeyError("boom")
    await receive()
    status = 500 if scope["path"] == "/fail" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise KeyError("boom")
    start_response("500 Oops" if environ["PATH_INFO"] == "/fail" else "200 OK", [])
    return [b"ok"]


def test_every_event_of_the_middleware_and_transports_is_declared() -> None:
    asgi = AsgiMiddleware(asgi_app, user_agent=True)
    wsgi = WsgiMiddleware(wsgi_app, user_agent=True)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503 if request.url.path == "/fail" else 200, content=b"ok")

    async def asgi_requests() -> None:
        for path, method in [("/a", "GET"), ("/fail", "POST"), ("/boom", "BREW")]:
            scope = {"type": "http", "method": method, "scheme": "http", "path": path,
                     "root_path": "", "http_version": "1.1", "server": ("127.0.0.1", 80),
                     "headers": [(b"host", b"example.com:8080"), (b"user-agent", b"t"),
                                 (b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]}
            messages = [{"type": "http.request", "body": b"xy", "more_body": False}]

            async def receive(messages: list[Any] = messages) -> Any:
                return messages.pop() if messages else {"type": "http.disconnect"}

            async def send(message: Any) -> None:
                pass

            with pytest.raises(KeyError) if path == "/boom" else contextlib.nullcontext():
                await asgi(scope, receive, send)
        async with httpx.AsyncClient(transport=AsyncTelemetryTransport(
                httpx.MockTransport(handler))) as client:
            await client.get("http://example.com/x")

    with CATALOG.check() as seen:
        asyncio.run(asgi_requests())
        for path in ("/a", "/fail", "/boom"):
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "",
                       "wsgi.url_scheme": "https", "SERVER_NAME": "h", "SERVER_PORT": "443",
                       "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "0",
                       "HTTP_USER_AGENT": "t", "wsgi.input": io.BytesIO()}
            try:
                body = wsgi(environ, lambda status, headers, exc_info=None: None)
            except KeyError:
                continue
            b"".join(body)
            body.close()  # type: ignore[attr-defined]
        with httpx.Client(transport=TelemetryTransport(httpx.MockTransport(handler))) as client:
            client.get("https://user:pw@example.com/fail")
            with pytest.raises(httpx.ConnectError):
                client.get("http://example.com:81/down")
    assert seen.missing(CATALOG) == []


def test_the_catalogue_renders_as_the_docs_show_it() -> None:
    text = CATALOG.render_markdown()
    for name in ("http.server.request", "http.server.active_requests", "http.client.request"):
        assert f"`{name}`" in text


def test_the_default_prefixes_are_the_catalogue_names() -> None:
    assert AsgiMiddleware(asgi_app).prefix == ("http", "server", "request")
    assert WsgiMiddleware(wsgi_app).prefix == ("http", "server", "request")
    with pytest.raises(ValueError, match="span prefix"):
        AsgiMiddleware(asgi_app, prefix="")
    with pytest.raises(TypeError, match="ASGI application"):
        AsgiMiddleware(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header names"):
        WsgiMiddleware(wsgi_app, headers="x-request-id")
    with pytest.raises(TypeError, match="route"):
        WsgiMiddleware(wsgi_app, route="/x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BaseTransport"):
        TelemetryTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
