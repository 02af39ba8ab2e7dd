"""The metrics reporter: metric definitions turned into OpenTelemetry metrics, from events.

    from vsrtel.handlers import metrics as m

    reporter = m.MetricsReporter([
        m.counter("vsr.protocol.client_request.stop.count"),
        m.distribution("vsr.protocol.client_request.stop.duration",
                       unit=("native", "second"), tags=["operation"]),
    ])
    reporter.attach()

The definitions (`counter`, `sum`, `last_value`, `summary`, `distribution`, the units and the
tag normalisers) live in `vsrtel.metrics`, free of OpenTelemetry; they are re-exported here.
`MetricsReporter` attaches one handler per event name. By default each metric aggregates its
series in vsrtel (`vsrtel.handlers._aggregation`) and hands them to the MeterProvider's readers
when they collect; `aggregation="otel"` records every event on OpenTelemetry instruments instead.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
import uuid
import warnings
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, Literal, TypeAlias

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import vsrtel
from vsrtel._redact import DEFAULT as DEFAULT_SECRETS
from vsrtel.handlers import _aggregation
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
from vsrtel.metrics import (
    DEFAULT_MAX_SERIES,
    Measurements,
    Metadata,
    Metric,
    MetricType,
    UnitSpec,
    bounded,
    buckets_for,
    counter,
    distribution,
    filter_fn,
    last_value,
    measure_fn,
    normalize_reason,
    status_class,
    sum,
    summary,
)

__all__ = [
    "DEFAULT_MAX_SERIES",
    "METER_NAME",
    "OVERFLOW_ATTRIBUTE",
    "Measurements",
    "Metadata",
    "Metric",
    "MetricType",
    "MetricsReporter",
    "UnitSpec",
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

TagCheck: TypeAlias = Callable[[Sequence[object]], "str | None"]  # a problem with tag names


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


# The series names OpenMetrics reserves for a family of each type, whether exported or not: a
# strict parser refuses a scrape where another family has one (`x_created` beside counter `x`).
_RESERVED_SUFFIXES: Final[Mapping[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


def _exposed_names(metric: Metric) -> tuple[str, ...]:
    """The family name and series names `metric` has or reserves in a Prometheus scrape.

    Named by the OpenTelemetry exporter's rules and prometheus_client's own metric families, so
    the names are a scrape's, never re-derived here; then the series names OpenMetrics reserves
    for the family's type.
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
    reserved = (family.name + suffix for suffix in _RESERVED_SUFFIXES.get(family.type, ()))
    return tuple(dict.fromkeys([family.name, *(s.name for s in family.samples), *reserved]))


_Name: TypeAlias = tuple[str, str]
"""A name a metric takes on a MeterProvider: ("instrument", casefolded) or ("Prometheus", ...)."""


def _names(metric: Metric) -> list[_Name]:
    """Every name `metric` takes on a MeterProvider: its Prometheus names (see
    `_exposed_names`) and its OpenTelemetry instrument name (which ignores case)."""
    return [
        *(("Prometheus", name) for name in _exposed_names(metric)),
        ("instrument", metric.name.casefold()),
    ]


def _describe(name: _Name) -> str:
    kind, text = name
    if kind == "instrument":
        return "one OpenTelemetry instrument name (names ignore case)"
    return f"the Prometheus name {text!r}"


def _check_prometheus(metrics: Sequence[Metric]) -> tuple[list[TagCheck], dict[_Name, Metric]]:
    """Raise ValueError for definitions that would break a scrape; return each one's tag check
    and the names they take.

    Two definitions sharing a Prometheus name (a family's, or a series name its type has or
    reserves), a static tag whose label a metric type reserves, and two tags sanitised to one
    label are refused, naming the culprits.
    """
    owners: dict[_Name, Metric] = {}
    checks = []
    for metric in metrics:
        check = _tag_check(metric.type)
        if isinstance(metric.tags, tuple) and (problem := check(metric.tags)) is not None:
            raise ValueError(f"metric {metric.name!r} has {problem}")
        for name in _names(metric):
            if name[0] == "Prometheus" and name[1] in _EXPORTER_NAMES:
                raise ValueError(
                    f"metric {metric.name!r} would export the Prometheus name {name[1]!r}, "
                    "which the exporter uses for its target_info"
                )
            other = owners.setdefault(name, metric)
            if other is not metric:
                raise ValueError(
                    f"metrics {other.name!r} and {metric.name!r} would both use "
                    f"{_describe(name)}"
                )
        checks.append(check)
    return checks, owners


# Per MeterProvider, the names its attached reporters take, with the metric and reporter taking
# each: a second reporter of one would give a scrape two families of one name. All weak: an
# entry goes with its provider, a name with its reporter (which its attached handlers keep).
_Claims: TypeAlias = "dict[_Name, tuple[Metric, weakref.ref[MetricsReporter]]]"
_CLAIMS: weakref.WeakKeyDictionary[Any, _Claims] = weakref.WeakKeyDictionary()
_CLAIMS_LOCK: Final = threading.Lock()


def _claims(provider: object) -> _Claims | None:
    """The names taken on `provider` (call with `_CLAIMS_LOCK` held); None for a provider that
    cannot be weakly referenced, whose names are then not checked across reporters."""
    try:
        return _CLAIMS.setdefault(provider, {})
    except TypeError:
        return None


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
    """`value` as an int or float the SDK records, or None.

    Any real number converts: an int (a bool is 0 or 1, as OpenTelemetry records it) or an
    integer type of another library (`__index__`: numpy's) to an int, and a float or anything
    else with `__float__` (`Decimal`, `Fraction`, numpy's floats) to a float. None for a value
    that is none of these or fails to convert, and for an int beyond 64 bits (OTLP cannot carry
    it).
    """
    if isinstance(value, float):
        return float(value)
    cls = type(value)
    try:
        if isinstance(value, int) or hasattr(cls, "__index__"):
            number = operator.index(value)  # an exact int: `in range` of a subclass would scan
            return number if number in _INT64 else None
        if hasattr(cls, "__float__"):
            return float(value)
    except Exception:  # a value that cannot convert is not a number
        pass
    return None


class _State:
    """Per-metric state: its series (shared by all threads), cells (per thread), skip counts."""

    __slots__ = (
        "bad_tags", "by_label", "cells", "check", "failed", "lock", "metric", "overflow",
        "owner", "skipped", "warned",
    )

    def __init__(
        self, metric: Metric, check: TagCheck, cells: Cells, owner: MetricsReporter
    ) -> None:
        self.metric = metric
        # The reporter: its attached handlers hold this state, so they keep it alive, and with
        # it the names it takes (held weakly in `_CLAIMS`).
        self.owner = owner
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
    measure = measure_fn(metric.measurement)
    filt = filter_fn(metric.keep, metric.drop)
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
                # Spelled out for one and two tags: `is` tests are the cheapest.
                if pair:
                    first, second = tag_key
                    plain = (first.__class__ is str or first.__class__ is int) and (
                        second.__class__ is str or second.__class__ is int
                    )
                elif single:
                    plain = tag_key.__class__ is str or tag_key.__class__ is int
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
            # No lock, and no call nor backward jump until the update is done (_aggregation).
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
        except Exception as exc:
            # A faulty user callable must not detach the whole reporter: count and report it,
            # at ERROR the first time only so a hot event cannot flood the log. The traceback is
            # text scrubbed of secrets, as in every report of the "vsrtel" logger.
            with state.lock:
                state.skipped += 1
                first, state.failed = not state.failed, True
            _log.log(
                logging.ERROR if first else logging.DEBUG,
                "metric %s: failed to record an event; skipped (further failures log at DEBUG)"
                "\n%s",
                metric.name,
                DEFAULT_SECRETS.format_exception(exc),
            )

    if kind != COUNTER or filt is not None or tag_values is not None or getter is None or not (
        single or pair
    ):
        return record
    tags_of = getter

    def count(
        event_name: tuple[str, ...], measurements: Measurements, metadata: Metadata, config: Any
    ) -> None:
        """`record` for a counter with one or two tags, when the event's series is known: one
        lookup and one increment (no call nor backward jump in between: see `_aggregation`)."""
        try:
            tag_key = tags_of(metadata)
            # The test of `record`, for one or two tags.
            if pair:
                first, second = tag_key
                plain = (first.__class__ is str or first.__class__ is int) and (
                    second.__class__ is str or second.__class__ is int
                )
            else:
                plain = tag_key.__class__ is str or tag_key.__class__ is int
            if plain:
                local.cells[tag_key][0] += 1
                return
        except Exception:
            pass  # a missing tag, a new series or a new thread: `record` sees to them
        record(event_name, measurements, metadata, config)

    return count


def _dispatch(
    event_name: tuple[str, ...],
    measurements: Measurements,
    metadata: Metadata,
    config: tuple[_Record, ...],
) -> None:
    for record in config:
        record(event_name, measurements, metadata, None)


class MetricsReporter:
    """Report metric definitions to an OpenTelemetry MeterProvider from the events they name.

    `meter_provider` defaults to OpenTelemetry's global one (a RuntimeWarning says so when that
    is not set: the metrics would go nowhere); `registry` to vsrtel's default registry.
    `attach()` attaches one handler per event name (all metrics of that event share it) and
    `detach()` removes them. Also a context manager.

    `aggregation="vsrtel"` (the default) aggregates each metric's series in vsrtel and adds them
    to what the provider's readers collect (see `vsrtel.handlers._aggregation`); a detached
    reporter's series stay exported until a reporter attached later to the same provider
    exports a metric of that name (a reset) or one clashing with it. `"otel"` records every
    event on an OpenTelemetry instrument, for the SDK's views and exemplars. Summaries always do
    (the provider's views choose their aggregation), and so does everything when the provider is
    not the SDK's; `aggregation` tells which one is in use.

    Definitions that would break a Prometheus scrape raise ValueError here, naming them: two
    metrics with one name (OpenTelemetry names ignore case) or one Prometheus name (a family's,
    or a series name its type has or reserves: `_total`, `_created`, `_bucket`, `_count`,
    `_sum`), a tag on the label a type reserves (`le` on a distribution or summary, `quantile`
    on a summary), two tags that sanitise to one label. The same holds across the reporters
    attached to one MeterProvider: a reporter taking a name that an attached one has is refused
    with ValueError, when it is built or else when it is attached. `detach()` frees the names.

    Tag values are exported as text (`True` is "true", `1` is "1", `1.0` is "1.0"). A value is
    recorded when it is a real number: an int or float, or any value converting by `__index__`
    or `__float__` (`Decimal`, `Fraction`, numpy's numbers); a bool is 0 or 1, as OpenTelemetry
    records it. Events lacking a measurement or tag, or whose value the SDK would drop (not a
    number, not finite, beyond 64 bits, negative on a histogram or monotonic sum), are skipped
    (debug log) and counted in `skipped`; a user callable that raises is logged and counted too.
    Neither ever detaches the reporter.
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
        checks, self._names = _check_prometheus(self.metrics)
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
        self._provider = provider
        self._claim(take=False)  # refused at once when an attached reporter has a name
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
                state = _State(metric, check, Cells(COUNTER), self)
                record = _recorder(metric, state, _instrument(meter, metric))
            else:
                state = _State(metric, check, _cells(metric), self)
                record = _recorder(metric, state, None)
                monotonic = metric.type == "counter" or (
                    metric.type == "sum" and metric.reporter_options.get("monotonic", True)
                )
                exports.append(Export(
                    metric.name, metric.description, metric.export_unit, state.cells, monotonic,
                    frozenset(name for name, owner in self._names.items() if owner is metric),
                ))
            self._states.append(state)
            by_event.setdefault(metric.event_name, []).append(record)
        self._hook = hook
        self._exports = exports
        self._handlers = {event: tuple(recs) for event, recs in by_event.items()}
        # An event whose metrics call no user code with the payload is attached trusted (see
        # `Registry.attach`): the records only read it.
        self._trusted = {
            event: all(_reads_only(m) for m in self.metrics if m.event_name == event)
            for event in by_event
        }
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
        """Attach one handler per event name.

        Raises RuntimeError if already attached, and ValueError if a reporter attached to the
        same MeterProvider since this one was built takes one of its names.
        """
        if self._attached:
            raise RuntimeError("this MetricsReporter is already attached")
        self._claim(take=True)
        if self._hook is not None:
            # Exported from now on, replacing any metric it clashes with: a detached reporter's.
            self._hook.add(self._exports)
        try:
            for event, records in self._handlers.items():
                handler_id = f"{self._id}/{'.'.join(event)}"
                trusted = self._trusted[event]
                if len(records) == 1:  # the metric's own handler, without a dispatch loop
                    self._registry.attach(handler_id, event, records[0], trusted=trusted)
                else:
                    self._registry.attach(handler_id, event, _dispatch, records, trusted=trusted)
                self._attached.append(handler_id)
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Detach every handler this reporter attached (no-op when not attached).

        Its series stay exported, and its names are free for another reporter to take.
        """
        while self._attached:
            self._registry.detach(self._attached.pop())
        with _CLAIMS_LOCK:
            claims = _claims(self._provider) or {}
            for name in self._names:
                held = claims.get(name)
                if held is not None and held[1]() is self:
                    del claims[name]

    def _claim(self, *, take: bool) -> None:
        """Raise ValueError if a reporter attached to this one's MeterProvider takes one of its
        names; else take them if `take` (until `detach`)."""
        with _CLAIMS_LOCK:
            claims = _claims(self._provider)
            if claims is None:
                return
            for name, metric in self._names.items():
                held = claims.get(name)
                if held is not None and held[1]() not in (None, self):
                    raise ValueError(
                        f"metric {metric.name!r} and metric {held[0].name!r} of another "
                        "MetricsReporter attached to this MeterProvider would both use "
                        f"{_describe(name)}; detach that reporter first, or rename one"
                    )
            if take:
                mine = weakref.ref(self)
                for name, metric in self._names.items():
                    claims[name] = (metric, mine)

    def __enter__(self) -> MetricsReporter:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.detach()


def _reads_only(metric: Metric) -> bool:
    """Whether `metric`'s handler calls no user code with the event's payload."""
    return (
        isinstance(metric.measurement, str)
        and isinstance(metric.tags, tuple)
        and metric.tag_values is None
        and metric.keep is None
        and metric.drop is None
    )


def _cells(metric: Metric) -> Cells:
    """Empty cells of the kind `metric` aggregates into."""
    per_thread = _aggregation.PER_THREAD  # read here, so a test can choose
    if metric.type == "distribution":
        return Cells(HISTOGRAM, buckets_for(metric), per_thread=per_thread)
    if metric.type == "last_value":
        return Cells(LAST_VALUE, per_thread=per_thread)
    return Cells(COUNTER if metric.type == "counter" else SUM, per_thread=per_thread)


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
