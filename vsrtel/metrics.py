"""Metric definitions: which metrics to derive from which events, as plain data.

In the style of Elixir's `Telemetry.Metrics`: libraries emit events once, and the application
lists the metrics it wants from them::

    from vsrtel import metrics as m

    METRICS = [
        m.counter("vsr.protocol.client_request.stop.count"),
        m.distribution("vsr.protocol.client_request.stop.duration",
                       unit=("native", "second"), tags=["operation"]),
    ]

A definition is validated when it is built and never changes; a reporter turns definitions into
metrics (`vsrtel.handlers.metrics.MetricsReporter`). Each kind of metric is one row of `KINDS`
(a `MetricKind`): whether it only goes up, whether it refuses negative values, its Prometheus
type, how vsrtel aggregates it; a definition carries its row as `Metric.kind`. This module needs
neither OpenTelemetry nor Prometheus. Also here: the units, the default buckets and the tag
normalisers (`status_class`, `normalize_reason`, `bounded`) that keep labels bounded.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import itertools
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypedDict

import vsrtel

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_MAX_SERIES",
    "KINDS",
    "MAX_SERIES_LIMIT",
    "MULTIPROCESS_MODES",
    "Metric",
    "MetricKind",
    "MetricOptions",
    "bounded",
    "buckets_for",
    "counter",
    "distribution",
    "last_value",
    "normalize_reason",
    "status_class",
    "sum",
    "summary",
]

Measurements: TypeAlias = Mapping[str, Any]
Metadata: TypeAlias = Mapping[str, Any]
UnitSpec: TypeAlias = "str | tuple[str, str] | None"

DEFAULT_MAX_SERIES: Final = 1000
"""Distinct tag sets a metric keeps before new ones go to its overflow series."""
# The OpenTelemetry SDK keeps at most 2000 attribute sets per metric (its default cardinality
# limit) and folds the rest into its own overflow series. A metric's series plus its overflow
# series must fit, or series a reporter believes distinct would silently merge.
_SDK_CARDINALITY_LIMIT: Final = 2000
MAX_SERIES_LIMIT: Final = _SDK_CARDINALITY_LIMIT - 1
"""The largest `max_series`: with the overflow series, the OpenTelemetry SDK's 2000 per metric."""

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


def _known_unit(unit: str) -> str | None:
    """The known unit `unit` names (itself, or the singular of its plural: "seconds"), or None."""
    if unit in _UNITS:
        return unit
    if unit.endswith("s") and unit[:-1] in _UNITS and unit != "1s":
        return unit[:-1]
    return None


def _near_miss(unit: str, cutoff: float = 0.85) -> str | None:
    """The known unit that `unit`, not a known one, looks like a typo of ("secnd"), or None.

    A ratio ("byte/s") or an annotation ("{request}") is never one.
    """
    if "/" in unit or "{" in unit:
        return None
    close = difflib.get_close_matches(unit.lower(), list(_UNITS), n=1, cutoff=cutoff)
    return close[0] if close else None


def _free_unit(unit: str, where: str = "") -> str:
    """`unit`, a unit vsrtel does not convert, as it is exported; ValueError for a typo."""
    if not unit:
        raise ValueError(f"unit must not be empty{where}; leave it out for no unit")
    close = _near_miss(unit)
    if close is not None:
        raise ValueError(
            f"unknown unit {unit!r}{where} (did you mean {close!r}?); known units, which "
            f"convert: {', '.join(_UNITS)}; any other name is exported as it is"
        )
    return unit


def _parse_unit(unit: object) -> _Unit:
    """Resolve a unit option into a conversion factor and the exported OTel unit.

    A known unit (or its plural) converts; any other string is exported as it is, as
    OpenTelemetry and `Telemetry.Metrics` do, unless it looks like a typo of a known one.
    """
    if unit is None:
        return _Unit(1, "")
    if isinstance(unit, str):
        known = _known_unit(unit)
        if known is None:
            return _Unit(1, _free_unit(unit))
        if known == "native":
            # Native time is nanoseconds; Prometheus and OTel want base units (seconds).
            return _Unit(1e-9, "s")
        return _Unit(1, _UNITS[known].otel)
    if isinstance(unit, tuple) and len(unit) == 2:
        src, dst = unit
        for end in (src, dst):
            if not isinstance(end, str):
                raise ValueError(f"unit {end!r} in conversion {unit!r} is not a string")
        src_known, dst_known = _known_unit(src), _known_unit(dst)
        if src_known is None or dst_known is None:
            if src == dst:  # no conversion: a free-form unit, as for `unit=src`
                return _Unit(1, _free_unit(src, f" in conversion {unit!r}"))
            bad = src if src_known is None else dst
            close = _near_miss(bad, cutoff=0.6)  # it must be a known unit: any hint helps
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ValueError(
                f"cannot convert {src!r} to {dst!r}: {bad!r} is not a unit vsrtel converts{hint}; "
                f"known units: {', '.join(_UNITS)}"
            )
        src_info, dst_info = _UNITS[src_known], _UNITS[dst_known]
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

@dataclass(frozen=True)
class MetricKind:
    """What a kind of metric is, as one row of facts: everything vsrtel derives from a kind.

    - `name`: the kind (`"counter"`, ...), also the name of its constructor.
    - `measured`: whether a measurement is read (False: it counts events, ignoring the
      measurement and the unit).
    - `monotonic`: whether it only goes up (a sum's `monotonic` option can say it does not).
    - `non_negative`: whether a negative value is skipped (the SDK would drop it).
    - `prometheus_type`: the type of its family in a scrape (`"counter"`, `"gauge"`,
      `"histogram"`).
    - `instrument`: the OpenTelemetry meter method making its instrument
      (`aggregation="otel"`), whose update method is `add`, `set` or `record`.
    - `labels`: the labels its Prometheus family uses itself, which no tag may take.
    - `cell`: the cell shape vsrtel aggregates it in (`vsrtel.handlers._aggregation.SHAPES`),
      or None when the MeterProvider's views aggregate it (a summary).
    - `options`: the reporter options it takes beside `max_series`; `description`: how its
      default description starts.
    """

    name: str
    measured: bool
    monotonic: bool
    non_negative: bool
    prometheus_type: Literal["counter", "gauge", "histogram"]
    instrument: Literal["create_counter", "create_up_down_counter", "create_gauge",
                        "create_histogram"]
    labels: frozenset[str]
    cell: str | None
    options: frozenset[str]
    description: str

    def going_down(self) -> MetricKind:
        """This kind when told it may go down (`monotonic=False`): a gauge in a scrape, an
        up-down counter in OpenTelemetry, negative values kept."""
        return dataclasses.replace(
            self,
            monotonic=False,
            non_negative=False,
            prometheus_type="gauge" if self.prometheus_type == "counter" else self.prometheus_type,
            instrument=(
                "create_up_down_counter" if self.instrument == "create_counter"
                else self.instrument
            ),
        )


KINDS: Final[Mapping[str, MetricKind]] = {
    kind.name: kind
    for kind in (
        MetricKind("counter", measured=False, monotonic=True, non_negative=True,
                   prometheus_type="counter", instrument="create_counter",
                   labels=frozenset(), cell="total", options=frozenset(), description="Number of"),
        MetricKind("sum", measured=True, monotonic=True, non_negative=True,
                   prometheus_type="counter", instrument="create_counter",
                   labels=frozenset(), cell="total",
                   options=frozenset({"monotonic", "multiprocess_mode"}), description="Sum of"),
        MetricKind("last_value", measured=True, monotonic=False, non_negative=False,
                   prometheus_type="gauge", instrument="create_gauge",
                   labels=frozenset(), cell="last", options=frozenset({"multiprocess_mode"}),
                   description="Last value of"),
        MetricKind("distribution", measured=True, monotonic=False, non_negative=True,
                   prometheus_type="histogram", instrument="create_histogram",
                   labels=frozenset({"le"}), cell="buckets", options=frozenset({"buckets"}),
                   description="Distribution of"),
        MetricKind("summary", measured=True, monotonic=False, non_negative=True,
                   prometheus_type="histogram", instrument="create_histogram",
                   labels=frozenset({"le", "quantile"}), cell=None,
                   options=frozenset({"max_size", "max_scale"}), description="Summary of"),
    )
}
"""The kinds of metric, one row each, by name: a reporter implements every one."""

# The reporter options vsrtel's reporter reads (each checked where given); any other option is
# kept as given, for another reporter.
_OPTIONS: Final = frozenset(
    {"max_series", "monotonic", "buckets", "max_size", "max_scale", "multiprocess_mode"}
)
MULTIPROCESS_MODES: Final = ("latest", "sum", "max", "min", "live_sum", "all")
"""How a `last_value` merges across worker processes (`multiprocess_mode`, first the default)."""
_SUM_MODES: Final = ("sum", "live_sum")  # a sum's (the default first); live_sum: monotonic=False


@dataclass(frozen=True, eq=False)
class Metric:
    """One metric definition; build it with `counter`, `sum`, `last_value`, `summary`, ...

    Attributes are normalised: `kind` is the kind's row (`KINDS`, or `going_down()` of it for
    a sum with `monotonic=False`), `name` the dotted metric (and OTel instrument) name,
    `event_name` the event tuple it listens to, `measurement` the key or callable as given,
    `tags` a tuple of metadata keys or a callable, `unit` the unit option as given and
    `export_unit` the OTel unit the values are exported in. For reporters, `measure` is a
    measurement callable in its `(measurements, metadata)` form (None for a key) and `accepts`
    the `keep` or `drop` predicate as one `(metadata, measurements)` test of the events to
    record (None for all).
    """

    kind: MetricKind
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
    measure: Callable[[Measurements, Metadata], Any] | None
    accepts: Callable[[Metadata, Measurements], bool] | None

    def __repr__(self) -> str:
        return f"<vsrtel metric {self.kind.name} {self.name!r} on {'.'.join(self.event_name)}>"


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
    """A `measurement` callable in its `(measurements, metadata)` form; None for a key."""
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
    """`keep` or `drop` as one `(metadata, measurements)` predicate of the events to record.

    None when both are None; raises ValueError when both are given.
    """
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


def _check_options(kind: MetricKind, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The reporter options, each one vsrtel's reporter reads checked; any other kept as given
    (another reporter's), unless its name looks like a typo of one vsrtel reads."""
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"reporter_options must be a mapping, got {options!r}")
    opts = dict(options or {})
    allowed = kind.options | {"max_series"}
    for key in opts:
        if key in _OPTIONS and key not in allowed:
            raise ValueError(
                f"reporter option {key!r} does not apply to {kind.name}; vsrtel's options for "
                f"it: {sorted(allowed)}"
            )
        if key not in _OPTIONS and isinstance(key, str):
            close = difflib.get_close_matches(key, sorted(_OPTIONS), n=1, cutoff=0.85)
            if close:
                raise ValueError(
                    f"unknown reporter option {key!r} (did you mean {close[0]!r}?); vsrtel's "
                    f"options for {kind.name}: {sorted(allowed)}"
                )
    if "max_series" in opts:
        n = opts["max_series"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_series must be a positive integer, got {n!r}")
        if n > MAX_SERIES_LIMIT:
            raise ValueError(
                f"max_series {n!r} is too large: the OpenTelemetry SDK keeps at most "
                f"{_SDK_CARDINALITY_LIMIT} series per metric, the overflow series included, "
                f"so max_series can be at most {MAX_SERIES_LIMIT}"
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
    if "multiprocess_mode" in opts and opts["multiprocess_mode"] not in MULTIPROCESS_MODES:
        raise ValueError(
            f"multiprocess_mode must be one of {', '.join(map(repr, MULTIPROCESS_MODES))}, got "
            f"{opts['multiprocess_mode']!r}"
        )
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
    kind: MetricKind,
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

    accepts = _filter_fn(keep, drop)
    converted = _parse_unit(unit)
    opts = _check_options(kind, reporter_options)
    if opts.get("multiprocess_mode") == "all" and isinstance(tag_spec, tuple) and (
        "pid" in tag_spec
    ):
        raise ValueError(
            "multiprocess_mode 'all' labels each process's series with 'pid': no tag may be "
            f"named 'pid' (tags {list(tag_spec)!r})"
        )
    if opts.get("monotonic", True) is False:
        kind = kind.going_down()
    mode = opts.get("multiprocess_mode")
    if kind.cell == "total" and mode is not None:
        if mode not in _SUM_MODES:
            raise ValueError(
                f"multiprocess_mode of a sum must be 'sum' or 'live_sum', got {mode!r}"
            )
        if mode == "live_sum" and kind.monotonic:
            raise ValueError(
                "multiprocess_mode 'live_sum' needs monotonic=False: a counter that dropped "
                "what dead workers counted would go backwards"
            )
    if description is None:
        what = "events" if not kind.measured else f"measurement {parts[-1]!r} of events"
        if kind.measured and not isinstance(measurement, str):
            what = "a computed measurement of events"
        description = f"{kind.description} {what} {'.'.join(event)}"
    elif not isinstance(description, str):
        raise TypeError(f"description must be a string, got {description!r}")

    return Metric(
        kind=kind,
        name=dotted,
        event_name=event,
        measurement=measurement,
        tags=tag_spec,
        tag_values=tag_values,
        keep=keep,
        drop=drop,
        unit=unit,
        export_unit=converted.otel if kind.measured else "{event}",
        factor=converted.factor if kind.measured else 1,
        description=description,
        reporter_options=opts,
        max_series=opts.get("max_series", DEFAULT_MAX_SERIES),
        measure=measure,
        accepts=accepts,
    )


class MetricOptions(TypedDict, total=False):
    """The options every constructor takes (all keyword-only, all optional).

    - `event_name`: the event to listen to; by default `name` without its last segment, which
      names the measurement.
    - `measurement`: a measurement key, or a callable of `(measurements)` or
      `(measurements, metadata)` returning the value.
    - `tags`: metadata keys to tag observations with, or a callable of metadata returning the
      tag mapping; `tag_values`: a callable applied to metadata before tags are taken.
    - `keep` / `drop`: a predicate of `(metadata)` or `(metadata, measurements)` choosing which
      events count (not both).
    - `unit`: a unit name or a conversion pair such as `("native", "second")` or
      `("byte", "kilobyte")`. vsrtel converts `"native"` (nanoseconds; alone, exported in
      seconds), `"second"`, `"millisecond"`, `"microsecond"`, `"nanosecond"`, `"byte"`,
      `"kilobyte"`, `"megabyte"` and `"1"` (plurals too); any other name (`"each"`,
      `"{request}"`) is exported as it is, unless it looks like a typo of one of these.
    - `description`: help text (a default is derived from the definition).
    - `reporter_options`: `max_series` (distinct tag sets before overflow, default 1000, at most
      1999 so the OpenTelemetry SDK's own limit of 2000 never merges series silently), and per
      kind `monotonic` (sum), `buckets` (distribution), `max_size` / `max_scale` (summary),
      `multiprocess_mode` (how worker processes' values merge, see docs/multiprocess.md;
      last_value: `"latest"`, `"sum"`, `"max"`, `"min"`, `"live_sum"`, `"all"`; a sum with
      `monotonic=False`: `"sum"`, or `"live_sum"` for live workers only).
      These are checked; any other option is kept as given, for another reporter.
    """

    event_name: str | Sequence[str] | None
    measurement: str | Callable[..., Any] | None
    tags: Sequence[str] | Callable[[Metadata], Mapping[str, Any]]
    tag_values: Callable[[Metadata], Metadata] | None
    keep: Callable[..., bool] | None
    drop: Callable[..., bool] | None
    unit: UnitSpec
    description: str | None
    reporter_options: Mapping[str, Any] | None


# One constructor per kind. `name` is a dotted string or tuple whose last segment names the
# measurement; see `MetricOptions` for the options. Each raises ValueError or TypeError naming a
# bad option at once.

def counter(name: str | Sequence[str], **options: Unpack[MetricOptions]) -> Metric:
    """Count events (the measurement's value is ignored; it need not even be present)."""
    return _define(KINDS["counter"], name, **options)


def sum(name: str | Sequence[str], **options: Unpack[MetricOptions]) -> Metric:  # Elixir's name
    """Add up a measurement (`reporter_options={"monotonic": False}` for one that goes down)."""
    return _define(KINDS["sum"], name, **options)


def last_value(name: str | Sequence[str], **options: Unpack[MetricOptions]) -> Metric:
    """Keep the most recent value of a measurement (a gauge)."""
    return _define(KINDS["last_value"], name, **options)


def distribution(name: str | Sequence[str], **options: Unpack[MetricOptions]) -> Metric:
    """Bucket a measurement: `reporter_options={"buckets": [...]}` in the exported unit, by
    default per unit (seconds: 0.5 ms .. 10 s; bytes: 64 B .. 256 MiB; else OTel's)."""
    return _define(KINDS["distribution"], name, **options)


def summary(name: str | Sequence[str], **options: Unpack[MetricOptions]) -> Metric:
    """Summarise a measurement without choosing buckets: exponential buckets where the reporter
    can (OpenTelemetry with `metric_views`), else the unit's default explicit buckets."""
    return _define(KINDS["summary"], name, **options)


def buckets_for(metric: Metric) -> tuple[float, ...]:
    """The explicit bucket bounds a distribution (or non-exponential summary) is recorded with."""
    explicit = metric.reporter_options.get("buckets")
    if explicit is not None:
        return tuple(explicit)
    return _DEFAULT_BUCKETS.get(metric.export_unit, _OTEL_DEFAULT_BUCKETS)


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
