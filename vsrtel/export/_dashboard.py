"""The live dashboard of the metrics endpoint: a static page and the JSON snapshot it polls.

The page (``dashboard.html`` and ``dashboard.js``, package data) draws its charts itself with
inline SVG: no CDN, no library, nothing fetched but this server's ``/api/metrics``. The
snapshot is read from the prometheus_client registry through its public ``collect()``; the
rates and quantiles are computed in the browser.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry

_log = logging.getLogger("vsrtel")

PAGE_PATHS = ("/", "/dashboard")
SCRIPT_PATH = "/dashboard.js"
API_PATH = "/api/metrics"
PATHS = frozenset((*PAGE_PATHS, SCRIPT_PATH, API_PATH))

_COMMON = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]
# The page may run its own script and talk to this server only.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def _asset(name: str) -> bytes:
    return resources.files("vsrtel.export").joinpath(name).read_bytes()


def _number(value: float) -> float | str:
    """JSON has no infinities or NaN: those travel as Prometheus spells them."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def snapshot(registry: CollectorRegistry) -> dict[str, Any]:
    """Return the registry's current metric families as JSON-ready data.

    ``{"families": [{"name", "type", "help", "unit", "samples": [{"name", "labels",
    "value"}]}]}``, in collection order. Non-finite values are the strings ``"+Inf"``,
    ``"-Inf"`` and ``"NaN"``.
    """
    return {
        "families": [
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "unit": family.unit,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": _number(s.value)}
                    for s in family.samples
                ],
            }
            for family in registry.collect()
        ]
    }


_App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def app(registry: CollectorRegistry) -> _App:
    """The WSGI app of `PATHS`: GET and HEAD only, nothing taken from the request but its path."""

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD"), *_COMMON,
            ])
            return [b"method not allowed\n"]
        if path == API_PATH:
            try:
                body = json.dumps(snapshot(registry), allow_nan=False).encode()
            except Exception:  # a failing collector: logged, answered with a 500
                _log.exception("dashboard: collecting the metrics failed")
                start_response("500 Internal Server Error",
                               [("Content-Type", "text/plain; charset=utf-8"), *_COMMON],
                               sys.exc_info())
                return [b"collecting the metrics failed; see the application's log\n"]
            ctype = "application/json"
        elif path == SCRIPT_PATH:
            body, ctype = _asset("dashboard.js"), "text/javascript; charset=utf-8"
        else:
            body, ctype = _asset("dashboard.html"), "text/html; charset=utf-8"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *_COMMON]
        if ctype.startswith("text/html"):
            headers.append(("Content-Security-Policy", _CSP))
        start_response("200 OK", headers)
        return [] if method == "HEAD" else [body]

    return answer
