"""What the web integrations share: semantic-convention keys, method and header handling.

Metadata keys are OpenTelemetry's HTTP semantic-convention attribute names, dots included: the
spans handler copies them as attribute names unchanged, the metrics reporter turns a tag
``http.route`` into the Prometheus label ``http_route`` (the OpenTelemetry exporter's own rule),
and the logs handler prints them as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import vsrtel
from vsrtel._redact import DEFAULT, REDACTED

# The methods of RFC 9110 and RFC 5789 (PATCH). Any other becomes "_OTHER", as the semantic
# conventions ask, so that a client cannot mint label values.
METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
OTHER_METHOD = "_OTHER"
#: The error.type of a response the client went away from before its last body chunk.
CLIENT_DISCONNECTED = "client_disconnected"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_log = logging.getLogger("vsrtel")


def span_names(prefix: str | tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, str, str]]:
    """The span prefix, validated, and its start, stop and exception event names, dotted."""
    name = vsrtel.event_name(prefix, what="span prefix")
    dotted = ".".join(name)
    return name, (f"{dotted}.start", f"{dotted}.stop", f"{dotted}.exception")


def header_names(names: Iterable[str], what: str) -> dict[str, str]:
    """Lower-cased header names -> the metadata key of their values (``<what>.<name>``).

    Raises ``TypeError``/``ValueError`` naming a bad header name.
    """
    if isinstance(names, str | bytes):
        raise TypeError(f"headers must be a collection of header names, not {names!r}")
    keys = {}
    for name in names:
        if not isinstance(name, str) or not name.strip() or not name.isascii():
            raise ValueError(f"header name {name!r} is not a non-empty ASCII str")
        keys[name.strip().lower()] = f"{what}.{name.strip().lower()}"
    return keys


def header_value(key: str, values: list[str]) -> tuple[str, ...]:
    """The metadata value of a listed header (``key``: its metadata key), through the redaction
    rule, as every handler would judge that key: a secret header (``authorization``,
    ``cookie``, ``x-api-key``...) is never shown, and credentials in the others' text are
    scrubbed."""
    if DEFAULT.is_secret(key):
        return (REDACTED,)
    return tuple(DEFAULT.scrub(value) for value in values)


def method(value: str, metadata: dict[str, Any]) -> None:
    """Set ``http.request.method``: a known method, or ``_OTHER`` and the original beside it;
    and ``span_name``, the name the spans handler gives the span, as OpenTelemetry's HTTP
    conventions name it before a route is known: the method (``HTTP`` for ``_OTHER``)."""
    if value in METHODS:
        metadata["http.request.method"] = metadata["span_name"] = value
    else:
        metadata["http.request.method"] = OTHER_METHOD
        metadata["http.request.method_original"] = value
        metadata["span_name"] = "HTTP"


def set_route(metadata: dict[str, Any], route: str | None) -> None:
    """Set ``http.route``: the route template, or the path when it is not known; with a
    template, the span is renamed ``{method} {route}``, as the conventions name a server span."""
    if route is None:
        metadata["http.route"] = metadata["url.path"]
    else:
        metadata["http.route"] = route
        metadata["span_name"] = f"{metadata['span_name']} {route}"


def active_event(prefix: tuple[str, ...]) -> str:
    """The event counting requests in progress, beside the span: ``http.server.active_requests``
    for ``http.server.request`` (under a one-segment prefix: ``web.active_requests``)."""
    return ".".join((prefix[:-1] if len(prefix) > 1 else prefix) + ("active_requests",))


def active_metadata(request: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the ``active`` event, from a server request's start metadata."""
    active = {"http.request.method": request["http.request.method"],
              "url.scheme": request["url.scheme"]}
    if "http.request.method_original" in request:
        active["http.request.method_original"] = request["http.request.method_original"]
    return active


def host_and_port(host: str, scheme: str) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` from a ``Host`` header (``[::1]:8000`` too)."""
    if host.startswith("["):
        end = host.find("]")
        address, rest = host[1:end], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = host.partition(":")
    if port.isdigit():
        return address, int(port)
    return address, _DEFAULT_PORTS.get(scheme)


def error_type(status: int | None) -> str | None:
    """The ``error.type`` of a server response: its status code for a 5xx, else None."""
    if status is not None and status >= 500:
        return str(status)
    return None


class RouteFunction:
    """A user's route function, called safely: its route, or None when there is no function,
    or it raised (logged once on the ``vsrtel`` logger) or returned no str: then the path is
    used."""

    __slots__ = ("function", "reported")

    def __init__(self, function: Callable[[Any], str | None] | None) -> None:
        if function is not None and not callable(function):
            raise TypeError(f"route must be a callable or None, got {function!r}")
        self.function = function
        self.reported = False

    def __call__(self, request: Any) -> str | None:
        if self.function is None:
            return None
        try:
            route = self.function(request)
        except Exception as error:
            if not self.reported:
                self.reported = True
                # Scrubbed as the handlers' reports are: the message may quote a request.
                _log.warning("route function %r failed: the path is used (reported once)\n%s",
                             self.function, DEFAULT.format_exception(error))
            return None
        return route if isinstance(route, str) else None
