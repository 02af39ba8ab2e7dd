"""Metrics from events: definitions in the style of Elixir's Telemetry.Metrics, reported via OTel.

Libraries emit events once; the application chooses which metrics it wants from them::

    from vsrtel.handlers import metrics as m

    reporter = m.MetricsReporter([
        m.counter("vsr.protocol.client_request.stop.count"),
        m.distribution("vsr.protocol.client_request.stop.duration",
                       unit=("native", "second"), tags=["operation"]),
    ])
    reporter.attach()

A definition is pure data, validated when it is built. `MetricsReporter` turns definitions into
OpenTelemetry instruments on a MeterProvider and attaches one handler per event name.
"""

from __future__ import annotations

import difflib
import enum
import functools
import inspect
import itertools
import logging
import math
import re
import threading
import uuid
import warnings
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import vsrtel
from vsrtel.handlers._aggregation import (
    COUNTER,
    HISTOGRAM,
    LAST_VALUE,
    SUM,
    Cells,
    Export,
    Series,
    install,
)
from vsrtel.handlers._attributes import scalar

__all__ = [
    "METER_NAME",
    "OVERFLOW_ATTRIBUTE",
    "Metric",
    "MetricsReporter",
    "bounded",
    "buckets_for",
    "counter",
    "distribution",
    "last_value",
    "metric_views",
    "normalize_reason",
    "status_class",
    "sum",
    "summary",
]

_log = logging.getLogger("vsrtel")

METER_NAME: Final = "vsrtel.handlers.metrics"
"""Name of the OpenTelemetry meter (instrumentation scope) the reporter creates instruments on."""

_SCOPE: Final = InstrumentationScope(METER_NAME)

OVERFLOW_ATTRIBUTE: Final = "otel.metric.overflow"
"""Tag carried by the one series that collects observations past a metric's `max_series` cap."""

MetricType: TypeAlias = Literal["counter", "sum", "last_value", "summary", "distribution"]
Measurements: TypeAlias = Mapping[str, Any]
Metadata: TypeAlias = Mapping[str, Any]
UnitSpec: TypeAlias = "str | tuple[str, str] | None"
TagCheck: TypeAlias = Callable[[Sequence[object]], "str | None"]  # a problem with tag names

DEFAULT_MAX_SERIES: Final = 1000
# The OpenTelemetry SDK keeps at most 2000 attribute sets per metric (its default cardinality
# limit) and folds the rest into its own overflow series. The reporter's series plus its overflow
# series must fit, or series the reporter believes distinct would silently merge.
_SDK_CARDINALITY_LIMIT: Final = 2000
_MAX_SERIES_LIMIT: Final = _SDK_CARDINALITY_LIMIT - 1

# OpenTelemetry's instrument-name syntax; checked here so a bad name fails at definition time.
_OTEL_NAME = re.compile(r"[A-Za-z][-_./A-Za-z0-9]{0,254}\Z")


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _UnitInfo:
    dimension: str
    scale: float  # size of one unit in the dimension's smallest unit (ns, byte)
    otel: str  # UCUM code as OpenTelemetry (and its Prometheus exporter) expects


_UNITS: Final[Mapping[str, _UnitInfo]] = {
    "native": _UnitInfo("time", 1, "ns"),
    "nanosecond": _UnitInfo("time", 1, "ns"),
    "microsecond": _UnitInfo("time", 1e3, "us"),
    "millisecond": _UnitInfo("time", 1e6, "ms"),
    "second": _UnitInfo("time", 1e9, "s"),
    "byte": _UnitInfo("bytes", 1, "By"),
    "kilobyte": _UnitInfo("bytes", 1e3, "KBy"),
    "megabyte": _UnitInfo("bytes", 1e6, "MBy"),
    "1": _UnitInfo("dimensionless", 1, "1"),
}

# Default explicit bucket bounds per exported unit (OTel code); seconds mirror Prometheus' habits.
_SECOND_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BYTE_BUCKETS: Final = tuple(float(64 * 4**i) for i in range(12))  # 64 B .. 256 MiB
_OTEL_DEFAULT_BUCKETS: Final = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
)


def _scaled(bounds: Sequence[float], factor: float) -> tuple[float, ...]:
    return tuple(float(f"{b * factor:.6g}") for b in bounds)


_DEFAULT_BUCKETS: Final[Mapping[str, tuple[float, ...]]] = {
    "s": _SECOND_BUCKETS,
    "ms": _scaled(_SECOND_BUCKETS, 1e3),
    "us": _scaled(_SECOND_BUCKETS, 1e6),
    "ns": _scaled(_SECOND_BUCKETS, 1e9),
    "By": _BYTE_BUCKETS,
    "KBy": _scaled(_BYTE_BUCKETS, 1e-3),
    "MBy": _scaled(_BYTE_BUCKETS, 1e-6),
}


@dataclass(frozen=True)
class _Unit:
    factor: float  # multiply the measurement by this
    otel: str  # exported unit


def _unknown_unit(unit: object, what: str = "unit", where: str = "") -> ValueError:
    candidates = [u for u in _UNITS if u != unit]
    close = difflib.get_close_matches(unit, candidates, n=1) if isinstance(unit, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown {what} {unit!r}{where}{hint}; known units: {', '.join(_UNITS)}")


def _parse_unit(unit: object) -> _Unit:
    """Resolve a unit option into a conversion factor and the exported OTel unit."""
    if unit is None:
        return _Unit(1, "")
    if isinstance(unit, str):
        info = _UNITS.get(unit)
        if info is None:
            raise _unknown_unit(unit)
        if unit == "native":
            # Native time is nanoseconds; Prometheus and OTel want base units (seconds).
            return _Unit(1e-9, "s")
        return _Unit(1, info.otel)
    if isinstance(unit, tuple) and len(unit) == 2:
        src, dst = unit
        src_info = _UNITS.get(src) if isinstance(src, str) else None
        dst_info = _UNITS.get(dst) if isinstance(dst, str) and dst != "native" else None
        if src_info is None:
            raise _unknown_unit(src, where=f" in conversion {unit!r}")
        if dst_info is None:
            raise _unknown_unit(dst, "target unit", f" in conversion {unit!r}")
        if src_info.dimension != dst_info.dimension:
            raise ValueError(
                f"cannot convert {src!r} ({src_info.dimension}) to {dst!r} ({dst_info.dimension})"
            )
        return _Unit(src_info.scale / dst_info.scale, dst_info.otel)
    raise ValueError(
        f"unit must be a unit name or a (from, to) pair, got {unit!r}"
    )


# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------

_OPTIONS: Final[Mapping[str, frozenset[str]]] = {
    "counter": frozenset({"max_series"}),
    "sum": frozenset({"max_series", "monotonic"}),
    "last_value": frozenset({"max_series"}),
    "distribution": frozenset({"max_series", "buckets"}),
    "summary": frozenset({"max_series", "max_size", "max_scale"}),
}

_KIND_TEXT: Final[Mapping[str, str]] = {
    "counter": "Number of",
    "sum": "Sum of",
    "last_value": "Last value of",
    "distribution": "Distribution of",
    "summary": "Summary of",
}


@dataclass(frozen=True, eq=False)
class Metric:
    """One metric definition; build it with `counter`, `sum`, `last_value`, `summary`, ...

    Attributes are normalised: `name` is the dotted metric (and OTel instrument) name,
    `event_name` the event tuple it listens to, `measurement` the key or callable as given,
    `tags` a tuple of metadata keys or a callable, `unit` the unit option as given and
    `export_unit` the OTel unit the values are exported in.
    """

    type: MetricType
    name: str
    event_name: tuple[str, ...]
    measurement: str | Callable[..., Any]
    tags: tuple[str, ...] | Callable[[Metadata], Mapping[str, Any]]
    tag_values: Callable[[Metadata], Metadata] | None
    keep: Callable[..., bool] | None
    drop: Callable[..., bool] | None
    unit: UnitSpec
    export_unit: str
    factor: float
    description: str
    reporter_options: Mapping[str, Any]
    max_series: int
    # Normalised callables used by the reporter (two-argument forms).
    _measure: Callable[[Measurements, Metadata], Any] | None = field(repr=False)
    _filter: Callable[[Metadata, Measurements], bool] | None = field(repr=False)

    def __repr__(self) -> str:
        return f"<vsrtel metric {self.type} {self.name!r} on {'.'.join(self.event_name)}>"


def _arity(fn: Callable[..., Any], choices: tuple[int, ...], what: str) -> int:
    """How many positional arguments to pass to `fn`: the largest of `choices` it accepts."""
    if not callable(fn):
        raise TypeError(f"{what} must be callable, got {fn!r}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: assume the simple form
        return choices[0]
    positional = [
        p for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = len([p for p in positional if p.default is inspect.Parameter.empty])
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    for n in sorted(choices, reverse=True):
        if required <= n and (variadic or n <= len(positional)):
            return n
    raise ValueError(
        f"{what} {fn!r} must take {' or '.join(map(str, choices))} positional argument(s)"
    )


def _measure_fn(
    measurement: str | Callable[..., Any],
) -> Callable[[Measurements, Metadata], Any] | None:
    if isinstance(measurement, str):
        if not measurement:
            raise ValueError("measurement key must not be empty")
        return None
    if _arity(measurement, (1, 2), "measurement") == 1:
        fn1 = measurement
        return lambda measurements, metadata: fn1(measurements)
    return measurement


def _filter_fn(
    keep: Callable[..., bool] | None, drop: Callable[..., bool] | None
) -> Callable[[Metadata, Measurements], bool] | None:
    if keep is not None and drop is not None:
        raise ValueError("give either keep or drop, not both")
    pred = keep if keep is not None else drop
    if pred is None:
        return None
    what = "keep" if keep is not None else "drop"
    two = _arity(pred, (1, 2), what) == 2
    if keep is not None:
        if two:
            return lambda md, ms: bool(pred(md, ms))
        return lambda md, ms: bool(pred(md))
    if two:
        return lambda md, ms: not pred(md, ms)
    return lambda md, ms: not pred(md)


def _check_options(kind: MetricType, options: Mapping[str, Any] | None) -> dict[str, Any]:
    opts = dict(options or {})
    allowed = _OPTIONS[kind]
    for key in opts:
        if key not in allowed:
            raise ValueError(
                f"reporter option {key!r} does not apply to {kind}; allowed: {sorted(allowed)}"
            )
    if "max_series" in opts:
        n = opts["max_series"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_series must be a positive integer, got {n!r}")
        if n > _MAX_SERIES_LIMIT:
            raise ValueError(
                f"max_series {n!r} is too large: the OpenTelemetry SDK keeps at most "
                f"{_SDK_CARDINALITY_LIMIT} series per metric, the overflow series included, "
                f"so max_series can be at most {_MAX_SERIES_LIMIT}"
            )
    if "monotonic" in opts and not isinstance(opts["monotonic"], bool):
        raise ValueError(f"monotonic must be True or False, got {opts['monotonic']!r}")
    if "buckets" in opts:
        buckets = opts["buckets"]
        if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Iterable):
            raise ValueError(f"buckets must be a sequence of numbers, got {buckets!r}")
        bounds = tuple(buckets)
        if not bounds or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
            for b in bounds
        ):
            raise ValueError(f"buckets must be a non-empty sequence of finite numbers: {buckets!r}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"buckets must be strictly increasing: {buckets!r}")
        opts["buckets"] = tuple(float(b) for b in bounds)
    if "max_size" in opts:
        n = opts["max_size"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"max_size must be an integer >= 2, got {n!r}")
    if "max_scale" in opts:
        n = opts["max_scale"]
        if isinstance(n, bool) or not isinstance(n, int) or not -10 <= n <= 20:
            raise ValueError(f"max_scale must be an integer in [-10, 20], got {n!r}")
    return opts


def _define(
    kind: MetricType,
    name: str | Sequence[str],
    *,
    event_name: str | Sequence[str] | None,
    measurement: str | Callable[..., Any] | None,
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]],
    tag_values: Callable[[Metadata], Metadata] | None,
    keep: Callable[..., bool] | None,
    drop: Callable[..., bool] | None,
    unit: UnitSpec,
    description: str | None,
    reporter_options: Mapping[str, Any] | None,
) -> Metric:
    parts = vsrtel.event_name(name, what="metric name")
    if event_name is None:
        if len(parts) < 2:
            raise ValueError(
                f"metric name {name!r} has one segment: it needs event segments before the "
                "measurement, or an explicit event_name"
            )
        event = parts[:-1]
    else:
        event = vsrtel.event_name(event_name, what="event_name")
    dotted = ".".join(parts)
    if not _OTEL_NAME.match(dotted):
        raise ValueError(
            f"metric name {dotted!r} is not a valid OpenTelemetry instrument name "
            "(a letter, then up to 254 of letters, digits, '_', '.', '-', '/')"
        )
    if measurement is None:
        measurement = parts[-1]
    measure = _measure_fn(measurement)

    tag_spec: tuple[str, ...] | Callable[[Metadata], Mapping[str, Any]]
    if callable(tags):
        _arity(tags, (1,), "tags")
        tag_spec = tags
    elif isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise TypeError(f"tags must be a list of metadata keys or a callable, got {tags!r}")
    else:
        tag_spec = tuple(tags)
        for key in tag_spec:
            if not isinstance(key, str) or not key:
                raise ValueError(f"tag {key!r} must be a non-empty string")
        if len(set(tag_spec)) != len(tag_spec):
            raise ValueError(f"duplicate tag in {list(tag_spec)!r}")
    if tag_values is not None:
        _arity(tag_values, (1,), "tag_values")

    filt = _filter_fn(keep, drop)
    converted = _parse_unit(unit)
    opts = _check_options(kind, reporter_options)
    if description is None:
        what = "events" if kind == "counter" else f"measurement {parts[-1]!r} of events"
        if kind != "counter" and not isinstance(measurement, str):
            what = "a computed measurement of events"
        description = f"{_KIND_TEXT[kind]} {what} {'.'.join(event)}"
    elif not isinstance(description, str):
        raise TypeError(f"description must be a string, got {description!r}")

    return Metric(
        type=kind,
        name=dotted,
        event_name=event,
        measurement=measurement,
        tags=tag_spec,
        tag_values=tag_values,
        keep=keep,
        drop=drop,
        unit=unit,
        export_unit="{event}" if kind == "counter" else converted.otel,
        factor=1 if kind == "counter" else converted.factor,
        description=description,
        reporter_options=opts,
        max_series=opts.get("max_series", DEFAULT_MAX_SERIES),
        _measure=measure,
        _filter=filt,
    )


def counter(
    name: str | Sequence[str],
    *,
    event_name: str | Sequence[str] | None = None,
    measurement: str | Callable[..., Any] | None = None,
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]] = (),
    tag_values: Callable[[Metadata], Metadata] | None = None,
    keep: Callable[..., bool] | None = None,
    drop: Callable[..., bool] | None = None,
    unit: UnitSpec = None,
    description: str | None = None,
    reporter_options: Mapping[str, Any] | None = None,
) -> Metric:
    """Count events (the measurement's value is ignored; it need not even be present).

    `name` is a dotted string or tuple: its last segment names the measurement and the rest is
    the event name, unless `event_name` overrides it. Options:

    - `measurement`: a measurement key, or a callable of `(measurements)` or
      `(measurements, metadata)` returning the value.
    - `tags`: metadata keys to tag observations with, or a callable of metadata returning the
      tag mapping; `tag_values`: a callable applied to metadata before tags are taken.
    - `keep` / `drop`: a predicate of `(metadata)` or `(metadata, measurements)` choosing which
      events count (not both).
    - `unit`: a unit name (`"native"` = nanoseconds, exported in seconds; `"second"`,
      `"millisecond"`, `"microsecond"`, `"nanosecond"`, `"byte"`, `"kilobyte"`, `"megabyte"`,
      `"1"`) or a conversion pair such as `("native", "second")` or `("byte", "kilobyte")`.
    - `description`: help text (a default is derived from the definition).
    - `reporter_options`: `max_series` (distinct tag sets before overflow, default 1000, at most
      1999 so the OpenTelemetry SDK's own limit of 2000 never merges series silently), and per
      type `monotonic` (sum), `buckets` (distribution), `max_size` / `max_scale` (summary).

    Raises ValueError or TypeError naming the bad option at once.
    """
    return _define(
        "counter", name, event_name=event_name, measurement=measurement, tags=tags,
        tag_values=tag_values, keep=keep, drop=drop, unit=unit, description=description,
        reporter_options=reporter_options,
    )


def sum(  # Telemetry.Metrics' name; this module is meant to be used qualified (m.sum)
    name: str | Sequence[str],
    *,
    event_name: str | Sequence[str] | None = None,
    measurement: str | Callable[..., Any] | None = None,
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]] = (),
    tag_values: Callable[[Metadata], Metadata] | None = None,
    keep: Callable[..., bool] | None = None,
    drop: Callable[..., bool] | None = None,
    unit: UnitSpec = None,
    description: str | None = None,
    reporter_options: Mapping[str, Any] | None = None,
) -> Metric:
    """Add up a measurement (an OTel Counter; `reporter_options={"monotonic": False}` gives an
    UpDownCounter that accepts negative values). Options as for `counter`."""
    return _define(
        "sum", name, event_name=event_name, measurement=measurement, tags=tags,
        tag_values=tag_values, keep=keep, drop=drop, unit=unit, description=description,
        reporter_options=reporter_options,
    )


def last_value(
    name: str | Sequence[str],
    *,
    event_name: str | Sequence[str] | None = None,
    measurement: str | Callable[..., Any] | None = None,
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]] = (),
    tag_values: Callable[[Metadata], Metadata] | None = None,
    keep: Callable[..., bool] | None = None,
    drop: Callable[..., bool] | None = None,
    unit: UnitSpec = None,
    description: str | None = None,
    reporter_options: Mapping[str, Any] | None = None,
) -> Metric:
    """Keep the most recent value of a measurement (an OTel synchronous Gauge). Options as for
    `counter`."""
    return _define(
        "last_value", name, event_name=event_name, measurement=measurement, tags=tags,
        tag_values=tag_values, keep=keep, drop=drop, unit=unit, description=description,
        reporter_options=reporter_options,
    )


def summary(
    name: str | Sequence[str],
    *,
    event_name: str | Sequence[str] | None = None,
    measurement: str | Callable[..., Any] | None = None,
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]] = (),
    tag_values: Callable[[Metadata], Metadata] | None = None,
    keep: Callable[..., bool] | None = None,
    drop: Callable[..., bool] | None = None,
    unit: UnitSpec = None,
    description: str | None = None,
    reporter_options: Mapping[str, Any] | None = None,
) -> Metric:
    """Summarise a measurement's distribution without choosing buckets (an OTel Histogram).

    OpenTelemetry fixes aggregations when a MeterProvider is built: pass `metric_views(...)` to
    the provider to get exponential-bucket aggregation (`max_size` / `max_scale` options). Without
    those views, and on Prometheus (whose text format cannot carry exponential histograms), a
    summary is an explicit-bucket histogram with the unit's default buckets. Options as for
    `counter`.
    """
    return _define(
        "summary", name, event_name=event_name, measurement=measurement, tags=tags,
        tag_values=tag_values, keep=keep, drop=drop, unit=unit, description=description,
        reporter_options=reporter_options,
    )


def distribution(
    name: str | Sequence[str],
    *,
    event_name: str | Sequence[str] | None = None,
    measurement: str | Callable[..., Any] | None = None,
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]] = (),
    tag_values: Callable[[Metadata], Metadata] | None = None,
    keep: Callable[..., bool] | None = None,
    drop: Callable[..., bool] | None = None,
    unit: UnitSpec = None,
    description: str | None = None,
    reporter_options: Mapping[str, Any] | None = None,
) -> Metric:
    """Bucket a measurement (an OTel Histogram with explicit bounds).

    `reporter_options={"buckets": [...]}` sets the bounds (in the exported unit); the default
    depends on the unit (seconds: 0.5 ms .. 10 s; bytes: 64 B .. 256 MiB; none: OTel's
    default). Options as for `counter`.
    """
    return _define(
        "distribution", name, event_name=event_name, measurement=measurement, tags=tags,
        tag_values=tag_values, keep=keep, drop=drop, unit=unit, description=description,
        reporter_options=reporter_options,
    )


def buckets_for(metric: Metric) -> tuple[float, ...]:
    """The explicit bucket bounds a distribution (or non-exponential summary) is recorded with."""
    explicit = metric.reporter_options.get("buckets")
    if explicit is not None:
        return tuple(explicit)
    return _DEFAULT_BUCKETS.get(metric.export_unit, _OTEL_DEFAULT_BUCKETS)


def metric_views(metrics: Iterable[Metric]) -> list[View]:
    """OpenTelemetry Views giving each `summary` in `metrics` exponential-bucket aggregation.

    Pass them when building the MeterProvider that a `MetricsReporter` reports to, e.g.
    `MeterProvider(metric_readers=[...], views=metric_views(defs))`. Do not use them with the
    Prometheus reader: its text exposition cannot carry exponential histograms and drops them.
    """
    views = []
    for metric in metrics:
        if metric.type != "summary":
            continue
        opts = metric.reporter_options
        views.append(
            View(
                instrument_type=SdkHistogram,
                instrument_name=metric.name,
                meter_name=METER_NAME,
                aggregation=ExponentialBucketHistogramAggregation(
                    max_size=opts.get("max_size", 160), max_scale=opts.get("max_scale", 20)
                ),
            )
        )
    return views


# --------------------------------------------------------------------------------------------
# Tag normalisers
# --------------------------------------------------------------------------------------------

def normalize_reason(reason: object) -> str:
    """Turn a failure reason into a bounded tag value.

    A string stays as it is; an enum member becomes its name; an exception (instance or class)
    becomes its class name; a `(tag, detail)` tuple becomes `tag` (normalised the same way);
    anything else becomes `"other"`.
    """
    if isinstance(reason, str):
        return reason
    if isinstance(reason, enum.Enum):
        return reason.name
    if isinstance(reason, BaseException):
        return type(reason).__name__
    if isinstance(reason, type) and issubclass(reason, BaseException):
        return reason.__name__
    if isinstance(reason, tuple) and len(reason) == 2 and isinstance(reason[0], (str, enum.Enum)):
        return normalize_reason(reason[0])
    return "other"


def status_class(code: object) -> str:
    """Map an HTTP status code (int or digit string) to `"1xx"` .. `"5xx"`; else `"other"`."""
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return f"{code // 100}xx"
    return "other"


def bounded(values: Collection[Any], other: str = "other") -> Callable[[Any], Any]:
    """Return a normaliser keeping a value found in `values` and mapping anything else to `other`.

    `bounded({"read", "write"})("delete") == "other"`: it keeps a label's cardinality fixed.
    """
    allowed = frozenset(values)

    def normalise(value: Any) -> Any:
        try:
            return value if value in allowed else other
        except TypeError:  # unhashable
            return other

    return normalise


# --------------------------------------------------------------------------------------------
# Prometheus compatibility: what would make a scrape invalid is refused when a reporter is built
# --------------------------------------------------------------------------------------------

# Labels the Prometheus exporter adds itself (instrumentation scope, our overflow series).
_EXPORTER_LABEL_PREFIX: Final = "otel_scope_"
_OVERFLOW_LABEL: Final = "otel_metric_overflow"
# The family and sample name of the exporter's `target_info`.
_EXPORTER_NAMES: Final = frozenset({"target", "target_info"})


@functools.lru_cache(maxsize=4096)
def _label_name(name: str) -> str:
    """The Prometheus label a tag name becomes, by the OpenTelemetry exporter's own rule."""
    from opentelemetry.exporter.prometheus._mapping import sanitize_attribute

    return sanitize_attribute(name)


def _tag_check(kind: MetricType) -> TagCheck:
    """A check of one metric's tag names against the labels its Prometheus family may carry.

    Names are sanitised by the OpenTelemetry exporter's own rule. The check returns a sentence
    naming the bad tag(s), or None.
    """
    reserved = {"distribution": {"le"}, "summary": {"le", "quantile"}}.get(kind, set())

    def check(names: Sequence[object]) -> str | None:
        seen: dict[str, object] = {}
        for name in names:
            if not isinstance(name, str) or not name:
                return f"tag name {name!r}, which is not a non-empty string"
            label = _label_name(name)
            if label in reserved:
                return f"tag {name!r}, but a Prometheus {kind} uses the label {label!r} itself"
            if label.startswith(_EXPORTER_LABEL_PREFIX) or label == _OVERFLOW_LABEL:
                return f"tag {name!r}: the exporter adds the label {label!r} itself"
            if label in seen:
                return (
                    f"tags {seen[label]!r} and {name!r}, which both become the Prometheus "
                    f"label {label!r}"
                )
            seen[label] = name
        return None

    return check


def _exposed_names(metric: Metric) -> tuple[str, ...]:
    """The family name and sample names `metric` has in a Prometheus scrape.

    Named by the OpenTelemetry exporter's rules and prometheus_client's own metric families, so
    the names are a scrape's, never re-derived here.
    """
    from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    name, unit = sanitize_full_name(metric.name), map_unit(metric.export_unit)
    family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
    if metric.type in ("distribution", "summary"):
        family = HistogramMetricFamily(name, "", unit=unit)
        family.add_metric([], buckets=[("+Inf", 0)], sum_value=0)
    elif metric.type == "counter" or (
        metric.type == "sum" and metric.reporter_options.get("monotonic", True)
    ):
        family = CounterMetricFamily(name, "", unit=unit)
        family.add_metric([], 0)
    else:  # a gauge; so is a non-monotonic sum, as the exporter shows it
        family = GaugeMetricFamily(name, "", unit=unit)
        family.add_metric([], 0)
    return (family.name, *dict.fromkeys(sample.name for sample in family.samples))


def _check_prometheus(metrics: Sequence[Metric]) -> list[TagCheck]:
    """Raise ValueError for definitions that would break a scrape; return each one's tag check.

    Two definitions sharing a Prometheus name (family or sample), a static tag whose label a
    metric type reserves, and two tags sanitised to one label are refused, naming the culprits.
    """
    owners: dict[str, Metric] = {}
    checks = []
    for metric in metrics:
        check = _tag_check(metric.type)
        if isinstance(metric.tags, tuple) and (problem := check(metric.tags)) is not None:
            raise ValueError(f"metric {metric.name!r} has {problem}")
        for name in _exposed_names(metric):
            if name in _EXPORTER_NAMES:
                raise ValueError(
                    f"metric {metric.name!r} would export the Prometheus name {name!r}, "
                    "which the exporter uses for its target_info"
                )
            other = owners.setdefault(name, metric)
            if other is not metric:
                raise ValueError(
                    f"metrics {other.name!r} and {metric.name!r} would both export the "
                    f"Prometheus name {name!r}"
                )
        checks.append(check)
    return checks


# --------------------------------------------------------------------------------------------
# Reporter
# --------------------------------------------------------------------------------------------

_OVERFLOW_ATTRS: Final[Mapping[str, str]] = {OVERFLOW_ATTRIBUTE: "true"}
_INT64: Final = range(-(2**63), 2**63)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# No value of one of these types equals a value of the other, so a tag key made of them alone is
# its own series key. True == 1 == 1.0 (one hash), so a bool or float key must go by its text.
_PLAIN: Final = frozenset({str, int})
_NONFINITE: Final[Mapping[str, str]] = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _label(value: Any) -> str:
    """The text a tag value is exported as: its Prometheus label, and its series' identity.

    Converted as span attributes are (an enum member is its name), then to text as the Prometheus
    exporter would: `True` is "true", `1` is "1", `1.0` is "1.0". None, or a value without text
    (its `__str__` raises, an int too long to print), is "".
    """
    try:
        converted = scalar(value)
        if converted is None:
            return ""
        if isinstance(converted, str):
            return str.__str__(converted)
        if isinstance(converted, bool):
            return "true" if converted else "false"
        if isinstance(converted, float):
            text = float.__repr__(converted)
            return _NONFINITE.get(text, text)
        return int.__repr__(converted)
    except Exception:
        return ""


def _number(value: Any) -> int | float | None:
    """`value` as an int or float the SDK records, or None: a bool, a non-number, or an int
    beyond 64 bits (OTLP cannot carry it) is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        number = int(value)  # `in range` of an int subclass would scan the range
        return number if number in _INT64 else None
    return None


class _State:
    """Per-metric state: its series (shared by all threads), cells (per thread), skip counts."""

    __slots__ = (
        "bad_tags", "by_label", "cells", "check", "failed", "lock", "metric", "overflow",
        "skipped", "warned",
    )

    def __init__(self, metric: Metric, check: TagCheck, cells: Cells) -> None:
        self.metric = metric
        # Every series, keyed by its label values (a tuple, or a frozenset of (name, label) pairs
        # for a tags callable).
        self.by_label: dict[Any, Series] = {}
        self.overflow = Series(_OVERFLOW_ATTRS)
        self.cells = cells
        self.check = check
        self.skipped = 0
        self.warned = False
        self.failed = False
        self.bad_tags = False
        self.lock = threading.Lock()

    def skip(self, why: str, *args: Any) -> None:
        with self.lock:
            self.skipped += 1
        _log.debug("metric %s: event skipped: " + why, self.metric.name, *args)

    def cell(self, key: Any, names: tuple[str, ...]) -> list[Any]:
        """The calling thread's cell for tag key `key`: raw tag values (a tuple when there are
        several tags) or the `Series` a tags callable's result was found to be."""
        if isinstance(key, Series):
            return self.cells.cell(key)
        values = key if len(names) != 1 else (key,)
        labels = tuple(map(_label, values))
        series = self.by_label.get(labels)
        if series is None:
            series = self.new_series(labels, dict(zip(names, labels, strict=True)))
        cell = self.cells.cell(series)
        # No value of these types equals one of another, so such raw values are the series.
        if series is not self.overflow and _PLAIN.issuperset(map(type, values)):
            self.cells.mine()[key] = cell
        return cell

    def find_tags(self, tags: Mapping[Any, Any]) -> Series | None:
        """The series for a tags callable's result; None if its names are bad.

        The series is what Prometheus tells apart: labels by their sanitised names, an empty
        label the same as a missing one (the exporter fills missing labels with ""), so those
        are left out.
        """
        labels = {name: text for name, value in tags.items() if (text := _label(value))}
        try:
            key: frozenset[tuple[str, str]] | None = frozenset(
                (_label_name(name), text) for name, text in labels.items()
            )
        except TypeError:  # a name that is not a string
            key = None
        series = None if key is None else self.by_label.get(key)
        if series is not None:
            return series
        problem = self.check(list(labels))
        if problem is not None:
            with self.lock:
                self.skipped += 1
                first, self.bad_tags = not self.bad_tags, True
            _log.log(
                logging.WARNING if first else logging.DEBUG,
                "metric %s: event skipped: its tags callable returned %s",
                self.metric.name, problem,
            )
            return None
        assert key is not None
        return self.new_series(key, labels)

    def new_series(self, key: Any, attrs: Mapping[str, str]) -> Series:
        if self.warned:  # the cap was reached: series never grows again, no lock needed
            return self.overflow
        with self.lock:
            known = self.by_label.get(key)
            if known is not None:
                return known
            if len(self.by_label) >= self.metric.max_series:
                if not self.warned:
                    self.warned = True
                    _log.warning(
                        "metric %s reached %d distinct tag sets; further new tag sets are "
                        "recorded in one series tagged %s=\"true\"",
                        self.metric.name, self.metric.max_series, OVERFLOW_ATTRIBUTE,
                    )
                return self.overflow
            series = Series(attrs)
            self.by_label[key] = series
            return series


_Record: TypeAlias = Callable[[tuple[str, ...], Measurements, Metadata, Any], None]


def _recorder(
    metric: Metric, state: _State, sink: Callable[[Any, Mapping[str, Any]], None] | None
) -> _Record:
    """Build the handler of one metric, specialised on its options.

    With `sink` None, it updates the metric's cells in vsrtel (see `_aggregation`); else it
    calls `sink(value, attributes)`, an OpenTelemetry instrument's update method.
    """
    is_counter = metric.type == "counter"
    key = metric.measurement if isinstance(metric.measurement, str) else None
    measure = metric._measure
    filt = metric._filter
    tag_values = metric.tag_values
    factor = metric.factor
    scale = factor != 1
    # The SDK drops these silently; checked here so they are counted in `skipped`.
    no_negative = metric.type in ("distribution", "summary") or (
        metric.type == "sum" and metric.reporter_options.get("monotonic", True)
    )
    tag_fn = metric.tags if callable(metric.tags) else None
    tag_keys = metric.tags if isinstance(metric.tags, tuple) else ()
    getter = itemgetter(*tag_keys) if tag_keys else None
    single = len(tag_keys) == 1
    pair = len(tag_keys) == 2
    local = state.cells.local
    kind = state.cells.kind if sink is None else -1
    bounds = state.cells.bounds
    at_sum = len(bounds) + 1  # a histogram cell: bucket counts, then sum, min, max
    stamp = state.cells.stamp

    def record(
        event_name: tuple[str, ...], measurements: Measurements, metadata: Metadata, _: Any
    ) -> None:
        try:
            if filt is not None and not filt(metadata, measurements):
                return
            if is_counter:
                value: Any = 1
            else:
                if key is not None:
                    try:
                        value = measurements[key]
                    except KeyError:
                        state.skip("measurement %r missing", key)
                        return
                else:
                    assert measure is not None
                    value = measure(measurements, metadata)
                cls = value.__class__
                if cls is int and _INT64_MIN <= value <= _INT64_MAX:
                    if scale:  # an int this size times a unit factor is finite
                        value = value * factor
                else:
                    if cls is not float:
                        number = _number(value)
                        if number is None:
                            state.skip("measurement value %r is not a number", value)
                            return
                        value = number
                    if scale:
                        value = value * factor
                    if value - value != 0:  # inf or NaN, also after scaling
                        state.skip("measurement value %r is not finite", value)
                        return
                if no_negative and value < 0:
                    state.skip("negative value %r for a %s", value, metric.type)
                    return
            md = metadata if tag_values is None else tag_values(metadata)
            tag_key: Any
            if getter is not None:
                try:
                    tag_key = getter(md)
                except (LookupError, TypeError) as exc:
                    state.skip("tag %s missing from metadata", exc)
                    return
                # True == 1 == 1.0: only str and int values are their series' key (see _PLAIN).
                if pair:
                    first, second = tag_key
                    plain = first.__class__ in _PLAIN and second.__class__ in _PLAIN
                elif single:
                    plain = tag_key.__class__ in _PLAIN
                else:
                    plain = _PLAIN.issuperset(map(type, tag_key))
                if plain:
                    try:
                        cell = local.cells[tag_key]
                    except (AttributeError, KeyError):  # a new thread or series
                        cell = state.cell(tag_key, tag_keys)
                else:
                    cell = state.cell(tag_key, tag_keys)
            elif tag_fn is not None:
                series = state.find_tags(tag_fn(md))
                if series is None:
                    return
                if sink is not None:
                    sink(value, series.attrs)
                    return
                cell = state.cells.cell(series)
            else:
                try:
                    cell = local.cells[()]
                except (AttributeError, KeyError):
                    cell = state.cell((), ())
            # Each cell has one writer, the thread that owns it: updates need no lock.
            if kind == COUNTER:
                cell[0] += 1
            elif kind == SUM:
                cell[0] += value
            elif kind == HISTOGRAM:
                cell[bisect_left(bounds, value)] += 1
                cell[at_sum] += value
                if value < cell[at_sum + 1]:
                    cell[at_sum + 1] = value
                if value > cell[at_sum + 2]:
                    cell[at_sum + 2] = value
            elif kind == LAST_VALUE:
                cell[0] = value
                cell[1] = stamp()
            else:
                assert sink is not None
                sink(value, cell[-1].attrs)
        except Exception:
            # A faulty user callable must not detach the whole reporter: count and report it,
            # at ERROR the first time only so a hot event cannot flood the log.
            with state.lock:
                state.skipped += 1
                first, state.failed = not state.failed, True
            _log.log(
                logging.ERROR if first else logging.DEBUG,
                "metric %s: failed to record an event; skipped (further failures log at DEBUG)",
                metric.name,
                exc_info=True,
            )

    return record


def _dispatch(
    event_name: tuple[str, ...],
    measurements: Measurements,
    metadata: Metadata,
    config: tuple[_Record, ...],
) -> None:
    for record in config:
        record(event_name, measurements, metadata, None)


class MetricsReporter:
    """Report metric definitions to OpenTelemetry instruments from the events they name.

    `meter_provider` defaults to OpenTelemetry's global one (a RuntimeWarning says so when that
    is not set: the metrics would go nowhere); `registry` to vsrtel's default registry.
    Instruments are created at construction; `attach()` attaches one handler per event name (all
    metrics of that event share it) and `detach()` removes them. Also a context manager.

    Definitions that would break a Prometheus scrape raise ValueError here, naming them: two
    metrics with one name (OpenTelemetry names ignore case) or one Prometheus name, a tag on the
    label a type reserves (`le` on a distribution or summary, `quantile` on a summary), two tags
    that sanitise to one label.

    Tag values are exported as text (`True` is "true", `1` is "1", `1.0` is "1.0"). Events
    lacking a measurement or tag, or whose value the SDK would drop (not a number, a bool, not
    finite, beyond 64 bits, negative on a histogram or monotonic sum), are skipped (debug log)
    and counted in `skipped`; a
    user callable that raises is logged and counted too. Neither ever detaches the reporter.
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        *,
        meter_provider: otel_metrics.MeterProvider | None = None,
        registry: vsrtel.Registry | None = None,
        aggregation: Literal["vsrtel", "otel"] = "vsrtel",
    ) -> None:
        if aggregation not in ("vsrtel", "otel"):
            raise ValueError(f"aggregation must be 'vsrtel' or 'otel', got {aggregation!r}")
        self.metrics: tuple[Metric, ...] = tuple(metrics)
        names: dict[str, Metric] = {}
        for metric in self.metrics:
            if not isinstance(metric, Metric):
                raise TypeError(f"expected a metric definition, got {metric!r}")
            # OpenTelemetry instrument names ignore case: the SDK would merge the two.
            other = names.setdefault(metric.name.casefold(), metric)
            if other is not metric:
                raise ValueError(
                    f"two metrics are named {other.name!r}"
                    + ("" if other.name == metric.name else f" and {metric.name!r}")
                    + " (OpenTelemetry instrument names ignore case)"
                )
        checks = _check_prometheus(self.metrics)
        provider = meter_provider or otel_metrics.get_meter_provider()
        # The API package holds only the no-op provider and the proxy that stands in for a global
        # one not set yet: either way nothing is recorded, and a scrape silently lacks it all.
        if type(provider).__module__.startswith("opentelemetry.metrics"):
            warnings.warn(
                "MetricsReporter has no working MeterProvider: OpenTelemetry's global one is not "
                "set (or is a no-op), so these metrics are discarded. Pass "
                "meter_provider=server.meter_provider (from serve_metrics) or "
                "otel.configure(...).meter_provider",
                RuntimeWarning,
                stacklevel=2,
            )
        meter = provider.get_meter(METER_NAME)
        hook = install(provider, _SCOPE) if aggregation == "vsrtel" else None
        self.aggregation: Literal["vsrtel", "otel"] = "vsrtel" if hook is not None else "otel"
        self._registry = registry if registry is not None else vsrtel.default_registry
        self._states = []
        exports = []
        by_event: dict[tuple[str, ...], list[_Record]] = {}
        for metric, check in zip(self.metrics, checks, strict=True):
            # A summary's aggregation is the provider's (its views): it stays an SDK histogram.
            if hook is None or metric.type == "summary":
                state = _State(metric, check, Cells(COUNTER))
                record = _recorder(metric, state, _instrument(meter, metric))
            else:
                state = _State(metric, check, _cells(metric))
                record = _recorder(metric, state, None)
                monotonic = metric.type == "counter" or (
                    metric.type == "sum" and metric.reporter_options.get("monotonic", True)
                )
                exports.append(Export(
                    metric.name, metric.description, metric.export_unit, state.cells, monotonic
                ))
            self._states.append(state)
            by_event.setdefault(metric.event_name, []).append(record)
        if hook is not None:
            hook.add(exports)
        self._handlers = {event: tuple(recs) for event, recs in by_event.items()}
        self._id = f"vsrtel.handlers.metrics/{uuid.uuid4().hex[:12]}"
        self._attached: list[str] = []

    @property
    def skipped(self) -> dict[str, int]:
        """Per metric name, how many events were skipped (missing data or a failing callable)."""
        return {s.metric.name: s.skipped for s in self._states}

    @property
    def attached(self) -> bool:
        """Whether the reporter's handlers are attached."""
        return bool(self._attached)

    def series_count(self, name: str) -> int:
        """Distinct tag sets recorded so far for metric `name` (the overflow series excluded)."""
        for state in self._states:
            if state.metric.name == name:
                return len(state.by_label)
        raise KeyError(name)

    def attach(self) -> MetricsReporter:
        """Attach one handler per event name; raises RuntimeError if already attached."""
        if self._attached:
            raise RuntimeError("this MetricsReporter is already attached")
        try:
            for event, records in self._handlers.items():
                handler_id = f"{self._id}/{'.'.join(event)}"
                if len(records) == 1:  # the metric's own handler, without a dispatch loop
                    self._registry.attach(handler_id, event, records[0])
                else:
                    self._registry.attach(handler_id, event, _dispatch, records)
                self._attached.append(handler_id)
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Detach every handler this reporter attached (no-op when not attached)."""
        while self._attached:
            self._registry.detach(self._attached.pop())

    def __enter__(self) -> MetricsReporter:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()


def _cells(metric: Metric) -> Cells:
    """Empty cells of the kind `metric` aggregates into."""
    if metric.type == "distribution":
        return Cells(HISTOGRAM, buckets_for(metric))
    if metric.type == "last_value":
        return Cells(LAST_VALUE)
    return Cells(COUNTER if metric.type == "counter" else SUM)


def _instrument(
    meter: otel_metrics.Meter, metric: Metric
) -> Callable[[Any, Mapping[str, Any]], None]:
    """Create the OTel instrument for `metric` and return its bound update method."""
    name, unit, desc = metric.name, metric.export_unit, metric.description
    if metric.type == "counter":
        return meter.create_counter(name, unit=unit, description=desc).add
    if metric.type == "sum":
        if metric.reporter_options.get("monotonic", True):
            return meter.create_counter(name, unit=unit, description=desc).add
        return meter.create_up_down_counter(name, unit=unit, description=desc).add
    if metric.type == "last_value":
        return meter.create_gauge(name, unit=unit, description=desc).set
    return meter.create_histogram(
        name,
        unit=unit,
        description=desc,
        explicit_bucket_boundaries_advisory=buckets_for(metric),
    ).record
