"""The live dashboard of the metrics endpoint: a static page and the recent history it draws.

The page (``dashboard.html`` and ``dashboard.js``, package data) draws its charts itself with
inline SVG: no CDN, no library, nothing fetched but this server's ``/api/metrics``.

`Dashboard` keeps the history: a daemon thread reads the registry through its public
``collect()`` once a second and turns each series into the values a chart plots (a counter's
rate per second, a gauge's value, a histogram's p50, p90 and p99 of the observations of that
second), kept in a ring of `POINTS` points per series. At most `MAX_SERIES` series per metric
are kept (plus the reporter's overflow series), so the memory and the time to answer
``/api/metrics`` are bounded however many series the registry holds: 8 bytes per value, that
is 7.2 kB per counter or gauge series and 21.6 kB per histogram series.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

_log = logging.getLogger("vsrtel")

PAGE_PATHS = ("/", "/dashboard")
SCRIPT_PATH = "/dashboard.js"
API_PATH = "/api/metrics"
PATHS = frozenset((*PAGE_PATHS, SCRIPT_PATH, API_PATH))

PERIOD = 1.0  # seconds between two points
POINTS = 900  # points kept per series: 15 minutes
MAX_SERIES = 10  # series kept per metric, besides the overflow series
QUANTILES = (0.5, 0.9, 0.99)  # what a histogram's chart offers
KINDS = ("counter", "gauge", "histogram")

_COMMON = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]
# The page may run its own script and talk to this server only.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_NAN = math.nan
_KEYS_KEPT = 10_000


@cache
def _asset(name: str) -> bytes:
    return resources.files("vsrtel.export").joinpath(name).read_bytes()


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Estimate quantile `q` from cumulative ``(upper bound, count)`` buckets, sorted by bound,
    as Prometheus' ``histogram_quantile`` does (NaN when there is no observation)."""
    total = buckets[-1][1] if buckets else 0.0
    if not total > 0:
        return _NAN
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound: nothing better is known
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class _Series:
    """One tag set of a metric: its plotted values, a ring of `POINTS` per statistic."""

    __slots__ = ("key", "label", "last", "overflow", "rings", "seen")

    def __init__(self, key: str, label: str, overflow: bool, stats: int, points: int) -> None:
        self.key = key
        self.label = label
        self.overflow = overflow
        self.rings = [array("d", [_NAN]) * points for _ in range(stats)]
        self.last: Any = None  # the raw reading the next rate or quantile starts from
        self.seen = 0  # the latest tick the registry had this series


class _Chart:
    __slots__ = ("help", "hidden", "keys", "name", "series", "type", "unit")

    def __init__(self, name: str, kind: str, help: str, unit: str) -> None:
        self.name, self.type, self.help, self.unit = name, kind, help, unit
        self.series: dict[str, _Series] = {}
        # The key of each label set lately read (a bucket's bound left out), not worked out
        # again every second; at most _KEYS_KEPT.
        self.keys: dict[tuple[tuple[str, str], ...], tuple[str, str, bool]] = {}
        self.hidden = 0  # tag sets past MAX_SERIES at the latest tick


def _series_key(labels: dict[str, str]) -> tuple[str, str, bool]:
    """The labels that tell a tag set apart (not the scope's, not a bucket's bound)."""
    overflow = labels.get("otel_metric_overflow") == "true"
    pairs = sorted(
        (k, v) for k, v in labels.items()
        if k != "le" and k != "otel_metric_overflow" and not k.startswith("otel_scope_")
    )
    if overflow:
        return "!overflow", "overflow: tag sets past the reporter's cap", True
    return json.dumps(pairs), ", ".join(f"{k}={v}" for k, v in pairs), False


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class History:
    """A bounded history of what the dashboard plots, read from `registry` by `sample`."""

    def __init__(
        self, registry: CollectorRegistry, points: int = POINTS, max_series: int = MAX_SERIES
    ) -> None:
        self.registry = registry
        self.points = points
        self.max_series = max_series
        self.ticks = 0  # samples taken
        self.times = array("d", [0.0]) * points  # wall clock of each tick, for the time axis
        self.charts: dict[str, _Chart] = {}
        self.error: str | None = None
        self._clock = array("d", [0.0]) * points  # monotonic time of each tick, for rates
        self._lock = threading.Lock()

    def sample(self, wall: float | None = None, mono: float | None = None) -> None:
        """Collect the registry once and add a point to every series (NaN where it has none)."""
        wall = time.time() if wall is None else wall
        mono = time.monotonic() if mono is None else mono
        try:
            families = [f for f in self.registry.collect() if f.type in KINDS]
        except Exception:
            if self.error is None:  # once per outage, not once a second
                _log.exception("dashboard: collecting the metrics failed")
            self.error = "collecting the metrics failed; see the application's log"
            families = []
        else:
            self.error = None
        with self._lock:
            tick, slot = self.ticks, self.ticks % self.points
            previous = self._clock[(tick - 1) % self.points] if tick else None
            self.times[slot], self._clock[slot] = wall, mono
            for family in families:
                chart = self.charts.get(family.name)
                if chart is None or chart.type != family.type:
                    chart = _Chart(family.name, family.type, family.documentation, family.unit)
                    self.charts[family.name] = chart
                self._read(chart, family.samples, tick, mono, previous)
            for chart in self.charts.values():
                for key, series in list(chart.series.items()):
                    if series.seen != tick:
                        for ring in series.rings:
                            ring[slot] = _NAN
                        if tick - series.seen >= self.points:  # gone for the whole window
                            del chart.series[key]
            self.ticks = tick + 1

    def _read(
        self, chart: _Chart, samples: Iterable[Any], tick: int, now: float, previous: float | None
    ) -> None:
        kind, name = chart.type, chart.name
        readings: dict[str, tuple[str, bool, Any]] = {}
        for s in samples:
            if kind == "histogram":
                if s.name != name + "_bucket":
                    continue
            elif s.name != (name + "_total" if kind == "counter" else name):
                continue
            names = tuple(item for item in s.labels.items() if item[0] != "le")
            found_key = chart.keys.get(names)
            if found_key is None:
                if len(chart.keys) >= _KEYS_KEPT:
                    chart.keys.clear()
                found_key = chart.keys[names] = _series_key(s.labels)
            key, label, overflow = found_key
            if kind == "histogram":
                found = readings.setdefault(key, (label, overflow, []))
                found[2].append((float(s.labels["le"]), s.value))
            else:
                readings[key] = (label, overflow, s.value)
        kept = sum(not s.overflow for s in chart.series.values())
        chart.hidden = 0
        slot = tick % self.points
        for key, (label, overflow, raw) in readings.items():
            series = chart.series.get(key)
            if series is None:
                if not overflow and kept >= self.max_series:
                    chart.hidden += 1
                    continue
                kept += not overflow
                stats = len(QUANTILES) if kind == "histogram" else 1
                series = chart.series[key] = _Series(key, label, overflow, stats, self.points)
                # A series born after the first tick counted from zero since the tick before.
                if previous is not None:
                    series.last = (previous, [(b, 0.0) for b, _ in raw] if kind == "histogram"
                                   else 0.0)
            series.seen = tick
            values = self._values(kind, raw, series.last, now)
            for ring, value in zip(series.rings, values, strict=True):
                # 6 significant digits: more than a chart shows, and a shorter JSON.
                ring[slot] = float(format(value, ".6g"))
            series.last = (now, sorted(raw) if kind == "histogram" else raw)

    @staticmethod
    def _values(kind: str, raw: Any, last: Any, now: float) -> Sequence[float]:
        if kind == "gauge":
            return (raw,)
        if last is None:
            return (_NAN,) * (len(QUANTILES) if kind == "histogram" else 1)
        then, before = last
        if kind == "counter":
            # A counter that went down restarted from zero, as Prometheus' rate() assumes.
            increase = raw - before if raw >= before else raw
            return (increase / (now - then),) if now > then else (_NAN,)
        buckets = sorted(raw)
        if [b for b, _ in before] == [b for b, _ in buckets] and all(
            c >= p for (_, c), (_, p) in zip(buckets, before, strict=True)
        ):
            buckets = [(b, c - p) for (b, c), (_, p) in zip(buckets, before, strict=True)]
        return [quantile(q, buckets) for q in QUANTILES]

    def since(self, tick: int) -> dict[str, Any]:
        """The points of the ticks from `tick` on (as many as the ring still holds), as JSON-ready
        data; see docs/metrics.md#live-dashboard."""
        with self._lock:
            end = self.ticks
            start = min(max(tick, end - self.points, 0), end)
            slots = [t % self.points for t in range(start, end)]
            return {
                "period": PERIOD,
                "points": self.points,
                "max_series": self.max_series,
                "start": start,
                "end": end,
                "times": [round(self.times[i] * 1000) for i in slots],
                "error": self.error,
                "quantiles": list(QUANTILES),
                "families": [
                    {
                        "name": chart.name,
                        "type": chart.type,
                        "help": chart.help,
                        "unit": chart.unit,
                        "hidden": chart.hidden,
                        "series": [
                            {
                                "key": s.key,
                                "label": s.label,
                                "overflow": s.overflow,
                                "values": [[_finite(r[i]) for i in slots] for r in s.rings],
                            }
                            for s in chart.series.values()
                        ],
                    }
                    for chart in self.charts.values()
                ],
            }


_App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Dashboard:
    """The WSGI app of `PATHS` in front of `fallback` (which answers every other path), with
    the thread that samples `registry` into its `history` every `PERIOD` seconds until
    `close()`. GET and HEAD only; nothing is taken from the request but its path and
    ``since``."""

    def __init__(self, registry: CollectorRegistry, fallback: _App) -> None:
        self.history = History(registry)
        self._fallback = fallback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._ensure_sampling()

    def _ensure_sampling(self) -> None:
        # Also after a fork (a pre-forking server's worker), where the thread did not follow.
        thread = self._thread
        if (thread is None or not thread.is_alive()) and not self._stop.is_set():
            with self._start_lock:
                if self._thread is thread:
                    self._thread = threading.Thread(
                        target=self._sample, name="vsrtel-dashboard-history", daemon=True
                    )
                    self._thread.start()

    def _sample(self) -> None:
        while True:
            started = time.monotonic()
            self.history.sample()
            if self._stop.wait(max(0.0, PERIOD - (time.monotonic() - started))):
                return

    def close(self) -> None:
        """Stop sampling (within a sample's time)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in PATHS:
            return self._fallback(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD"), *_COMMON,
            ])
            return [b"method not allowed\n"]
        if path == API_PATH:
            self._ensure_sampling()
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            since = query.get("since", ["0"])[-1]
            if not (since.isascii() and since.isdigit() and len(since) <= 18):
                start_response("400 Bad Request",
                               [("Content-Type", "text/plain; charset=utf-8"), *_COMMON])
                return [f"since must be a tick number (0, 1, ...), got {since!r}\n".encode()]
            body = json.dumps(self.history.since(int(since)), allow_nan=False).encode()
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
