"""The handlers of the metrics reporter: one per metric, turning an event into an update.

`recorder` builds a metric's handler, specialised on its definition: it reads the measurement,
skips (and counts) what cannot be recorded, finds the series' cell by its tags and updates it in
place, each cell shape's update inlined (see `_aggregation`); or, with `aggregation="otel"`,
calls an OpenTelemetry instrument. A counter with one or two tags gets a front handler that only
finds a known series and increments it.
"""

from __future__ import annotations

import logging
import operator
import threading
from bisect import bisect_left
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Final, TypeAlias

from opentelemetry import metrics as otel_metrics

from vsrtel._redact import DEFAULT as DEFAULT_SECRETS
from vsrtel.handlers import _aggregation, _shared
from vsrtel.handlers._aggregation import BUCKETS, LAST, SHAPES, TOTAL, Cells, Series
from vsrtel.handlers._attributes import scalar
from vsrtel.handlers._prometheus_names import TagCheck, label_name
from vsrtel.metrics import Measurements, Metadata, Metric, buckets_for

_log = logging.getLogger("vsrtel")

OVERFLOW_ATTRIBUTE: Final = "otel.metric.overflow"
"""Tag carried by the one series that collects observations past a metric's `max_series` cap."""

_OVERFLOW_ATTRS: Final[Mapping[str, str]] = {OVERFLOW_ATTRIBUTE: "true"}
_INT64: Final = range(-(2**63), 2**63)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# No value of one of these types equals a value of the other, so a tag key made of them alone is
# its own series key. True == 1 == 1.0 (one hash), so a bool or float key must go by its text.
_PLAIN: Final = frozenset({str, int})
_NONFINITE: Final[Mapping[str, str]] = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _label(value: Any) -> str | None:
    """The text a tag value is exported as: its Prometheus label, and its series' identity.

    Converted as span attributes are (an enum member is its name), then to text as the Prometheus
    exporter would: `True` is "true", `1` is "1", `1.0` is "1.0"; None is "". None for a value
    without text (its `__str__` raises, an int too long to print): its event is dropped, as
    `telemetry_metrics_prometheus_core` drops it, rather than merged with a genuine "".
    """
    if value is None:
        return ""
    try:
        converted = scalar(value)
        if converted is None:
            return None
        if isinstance(converted, str):
            return str.__str__(converted)
        if isinstance(converted, bool):
            return "true" if converted else "false"
        if isinstance(converted, float):
            text = float.__repr__(converted)
            return _NONFINITE.get(text, text)
        return int.__repr__(converted)
    except Exception:
        return None


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


class State:
    """Per-metric state: its series (shared by all threads), cells (per thread), skip counts."""

    __slots__ = (
        "bad_tags", "by_label", "cells", "check", "failed", "lock", "metric", "no_text",
        "overflow", "owner", "skipped", "warned",
    )

    def __init__(
        self, metric: Metric, check: TagCheck, cells: Cells, owner: object
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
        self.no_text = False
        self.lock = threading.Lock()

    def skip(self, why: str, *args: Any) -> None:
        with self.lock:
            self.skipped += 1
        _log.debug("metric %s: event skipped: " + why, self.metric.name, *args)

    def untextable(self, name: object, value: Any) -> None:
        """Skip an event whose tag `name` has a value without text: count it, warn once."""
        with self.lock:
            self.skipped += 1
            first, self.no_text = not self.no_text, True
        try:
            shown = object.__repr__(value)
        except Exception:  # pragma: no cover - object.__repr__ does not fail
            shown = "?"
        _log.log(
            logging.WARNING if first else logging.DEBUG,
            "metric %s: event skipped: the value %s of tag %r cannot be turned into text "
            "(further ones log at DEBUG)",
            self.metric.name, shown, name,
        )

    def cell(self, key: Any, names: tuple[str, ...]) -> list[Any] | None:
        """The calling thread's cell for tag key `key`: raw tag values (a tuple when there are
        several tags) or the `Series` a tags callable's result was found to be. None when a
        tag value has no text (the event is skipped, counted and reported)."""
        if isinstance(key, Series):
            return self.cells.cell(key)
        values = key if len(names) != 1 else (key,)
        labels = tuple(map(_label, values))
        if None in labels:
            bad = labels.index(None)
            self.untextable(names[bad], values[bad])
            return None
        series = self.by_label.get(labels)
        if series is None:
            series = self.new_series(labels, dict(zip(names, labels, strict=True)))  # type: ignore[arg-type]
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
        labels = {}
        for name, value in tags.items():
            text = _label(value)
            if text is None:
                self.untextable(name, value)
                return None
            if text:
                labels[name] = text
        try:
            key: frozenset[tuple[str, str]] | None = frozenset(
                (label_name(name), text) for name, text in labels.items()
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


Record: TypeAlias = Callable[[tuple[str, ...], Measurements, Metadata, Any], None]


def recorder(
    metric: Metric, state: State, sink: Callable[[Any, Mapping[str, Any]], None] | None
) -> Record:
    """Build the handler of one metric, specialised on its definition.

    With `sink` None, it updates the metric's cells in vsrtel (see `_aggregation`); else it
    calls `sink(value, attributes)`, an OpenTelemetry instrument's update method.
    """
    counts = not metric.kind.measured
    key = metric.measurement if isinstance(metric.measurement, str) else None
    measure = metric.measure
    filt = metric.accepts
    tag_values = metric.tag_values
    factor = metric.factor
    scale = factor != 1
    # The SDK drops these silently; checked here so they are counted in `skipped`.
    no_negative = metric.kind.non_negative
    tag_fn = metric.tags if callable(metric.tags) else None
    tag_keys = metric.tags if isinstance(metric.tags, tuple) else ()
    getter = itemgetter(*tag_keys) if tag_keys else None
    single = len(tag_keys) == 1
    pair = len(tag_keys) == 2
    local = state.cells.local
    shape = state.cells.shape if sink is None else None
    # The shapes whose `record` is inlined below; any other shape's is called.
    total, buckets, last = shape is TOTAL, shape is BUCKETS, shape is LAST
    update = shape.record if shape is not None else None
    bounds = state.cells.bounds
    at_sum = len(bounds) + 1  # a buckets cell: bucket counts, then sum, min, max
    stamp = state.cells.stamp

    def record(
        event_name: tuple[str, ...], measurements: Measurements, metadata: Metadata, _: Any
    ) -> None:
        try:
            if filt is not None and not filt(metadata, measurements):
                return
            if counts:
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
                    state.skip("negative value %r for a %s", value, metric.kind.name)
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
                        if cell is None:
                            return
                else:
                    cell = state.cell(tag_key, tag_keys)
                    if cell is None:
                        return
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
                    assert cell is not None  # no tags, no text to lack
            # Each shape's `record`, inlined: no lock, and no call nor backward jump until the
            # update is done (see _aggregation).
            if total:
                cell[0] += value
            elif buckets:
                cell[bisect_left(bounds, value)] += 1
                cell[at_sum] += value
                if value < cell[at_sum + 1]:
                    cell[at_sum + 1] = value
                if value > cell[at_sum + 2]:
                    cell[at_sum + 2] = value
            elif last:
                cell[0] = value
                cell[1] = stamp()
            elif update is not None:
                update(cell, value, bounds, stamp)
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

    front = total and counts and getter is not None and (single or pair)
    if not front or filt is not None or tag_values is not None:
        return record
    assert getter is not None
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


def dispatch(
    event_name: tuple[str, ...],
    measurements: Measurements,
    metadata: Metadata,
    config: tuple[Record, ...],
) -> None:
    """The handler of an event several metrics record: `config` holds their handlers."""
    for record in config:
        record(event_name, measurements, metadata, None)


def reads_only(metric: Metric) -> bool:
    """Whether `metric`'s handler calls no user code with the event's payload."""
    return (
        isinstance(metric.measurement, str)
        and isinstance(metric.tags, tuple)
        and metric.tag_values is None
        and metric.keep is None
        and metric.drop is None
    )


def cells(metric: Metric, directory: _shared.Directory | None = None) -> Cells:
    """Empty cells of the shape `metric`'s kind aggregates in; in `directory`'s files (shared
    with other processes) when given."""
    assert metric.kind.cell is not None, metric
    per_thread = _aggregation.PER_THREAD  # read here, so a test can choose
    shape = SHAPES[metric.kind.cell]
    bounds = buckets_for(metric) if "buckets" in metric.kind.options else ()
    if directory is None:
        return Cells(shape, bounds, per_thread=per_thread)
    info = _shared.MetricInfo(
        metric.name, shape.name, bounds,
        metric.reporter_options.get("multiprocess_mode", _shared.DEFAULT_MODE),
        metric.description, metric.export_unit, metric.kind.monotonic, metric.max_series,
    )
    return _shared.SharedCells(shape, bounds, directory, info, per_thread=per_thread)


def instrument(
    meter: otel_metrics.Meter, metric: Metric
) -> Callable[[Any, Mapping[str, Any]], None]:
    """Create the OTel instrument of `metric`'s kind and return its bound update method."""
    name, unit, desc = metric.name, metric.export_unit, metric.description
    if metric.kind.instrument == "create_histogram":
        return meter.create_histogram(
            name, unit=unit, description=desc,
            explicit_bucket_boundaries_advisory=buckets_for(metric),
        ).record
    made = getattr(meter, metric.kind.instrument)(name, unit=unit, description=desc)
    method: Callable[[Any, Mapping[str, Any]], None] = getattr(
        made, _UPDATE[metric.kind.instrument]
    )
    return method


# The update method of each instrument a `MetricKind.instrument` makes.
_UPDATE: Final[Mapping[str, str]] = {
    "create_counter": "add", "create_up_down_counter": "add", "create_gauge": "set",
    "create_histogram": "record",
}
