"""Series aggregated in vsrtel, handed to OpenTelemetry's readers when they collect.

Each metric keeps its series in *cells*: plain lists a handler updates in place
(`cell[0] += 1`), found by one dict lookup, without a lock. Why no count is lost:

- On CPython with a GIL (3.10 and later), a thread switch happens only where the interpreter
  checks for one: at a function's start, a backward jump, or after a call returns. A cell update
  is subscripts and arithmetic on ints and floats in a list, none of those, and runs no Python
  code (no `__eq__`, `__hash__` or `__del__` of ours; ints and floats never start the garbage
  collector). So all threads share one dict of cells and each update is whole. Cells are only
  *created* under the metric's lock, so two threads never make two cells for one series.
- Anywhere else (a free-threaded build, another interpreter) that reasoning does not hold: each
  thread gets its own dict of cells (`threading.local`), so every cell has one writer. When a
  thread ends, its cells are folded into the metric's `retired` ones.

A collection copies each cell (one C call) and adds up a series' cells.

In multi-process mode (`_shared.SharedCells`) a cell is a slice of doubles of a memory-mapped
file the process alone writes, not a list: the same update bytecode, the same reasoning (a
`memoryview` item update runs no Python code either). The `Series` is then not the cell's last
item but the key it is found under. `totals()` merges every process's file; `own()` is the
process's share (for a push exporter each worker runs).

A cell has a *shape* (`SHAPES`, one row each: how a cell is made, recorded into, added up and
read out); a metric kind names the shape it aggregates in (`vsrtel.metrics.MetricKind.cell`).
The metric's handler (`_recorders`) inlines each shape's `record` for speed; a shape it does not
inline is recorded by calling `record`, and a test holds the inlined code to the rows.

OpenTelemetry's Python SDK has no public way to hand it data aggregated elsewhere (no
MetricProducer). The route taken here: the SDK's collect callback of each reader of the
MeterProvider is wrapped, so that after the SDK's own collection the reporter's series are added
as ordinary `Sum`, `Gauge` and `Histogram` metrics of the reporter's instrumentation scope.
Every reader and exporter (Prometheus, OTLP, console, in-memory) then sees them exactly as it
would see the SDK's own, in the temporality it prefers. That wrapping uses the SDK's private
`_measurement_consumer` (its `collect` and `_reader_storages`), `_sdk_config.resource`, and the
readers' `_set_collect_callback` and `_instrument_class_temporality`; `install` returns None
when any is missing, and the reporter then falls back to OpenTelemetry instruments.
"""

from __future__ import annotations

import itertools
import logging
import platform
import sys
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from time import time_ns
from typing import Any, Final

from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics import UpDownCounter as SdkUpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_log = logging.getLogger("vsrtel")

PER_THREAD: Final = platform.python_implementation() != "CPython" or not getattr(
    sys, "_is_gil_enabled", lambda: True
)()
"""Whether cells are kept per thread (see above): not on CPython with its GIL."""

_CUMULATIVE: Final = AggregationTemporality.CUMULATIVE
_DELTA: Final = AggregationTemporality.DELTA
_INF: Final = float("inf")
_NEG_INF: Final = float("-inf")


class Series:
    """One tag set of one metric: its exported attributes and when it was first recorded."""

    __slots__ = ("attrs", "start_ns")

    def __init__(self, attrs: Mapping[str, str]) -> None:
        self.attrs = attrs
        self.start_ns = time_ns()


class Cells:
    """The cells of one metric, of one `Shape`: a dict from tag key (or `Series`) to its cell,
    one per thread when `per_thread`.

    `local.cells` is the calling thread's dict (a thread-local attribute is the cheapest way to
    reach it; without `per_thread`, `local` is a plain object all threads share); `threads`
    holds every live thread's dict.
    """

    __slots__ = (
        "__weakref__", "bounds", "local", "lock", "per_thread", "retired", "shape", "stamp",
        "threads",
    )

    def __init__(
        self, shape: Shape, bounds: tuple[float, ...] = (), *, per_thread: bool = PER_THREAD
    ) -> None:
        self.shape = shape
        self.bounds = bounds
        self.per_thread = per_thread
        self.local: Any = threading.local() if per_thread else _Shared()
        self.threads: dict[int, dict[Any, list[Any]]] = {}  # by id() of the dict
        self.retired: dict[Series, list[Any]] = {}
        self.lock = threading.Lock()  # guards creating cells, threads, retired; not per event
        # next() of itertools.count runs in C: no two writes get one stamp.
        self.stamp: Callable[[], float] = itertools.count().__next__

    def mine(self) -> dict[Any, list[Any]]:
        """The calling thread's dict of cells (created on its first event)."""
        try:
            cells: dict[Any, list[Any]] = self.local.cells
            return cells
        except AttributeError:
            pass
        with self.lock:
            if not self.per_thread and hasattr(self.local, "cells"):  # another thread's
                found: dict[Any, list[Any]] = self.local.cells
                return found
            cells = self.local.cells = {}
            self.threads[id(cells)] = cells
        if self.per_thread:
            # The thread's local storage is cleared when the thread ends, this marker with it.
            marker = self.local.marker = _Marker()
            weakref.finalize(marker, _retire, weakref.ref(self), cells).atexit = False
        return cells

    def retire(self, cells: dict[Any, list[Any]]) -> None:
        """Fold the cells of a thread that ended into `retired`."""
        with self.lock:
            self.threads.pop(id(cells), None)
            for cell in _unique(cells):
                total = self.retired.get(cell[-1])
                if total is None:
                    self.retired[cell[-1]] = cell
                else:
                    self.shape.merge(total, cell, self.bounds)

    def cell(self, series: Series) -> list[Any]:
        """The calling thread's cell of `series`, created empty if needed."""
        cells = self.mine()
        cell = cells.get(series)
        if cell is None:
            with self.lock:
                cell = cells.get(series)
                if cell is None:
                    cell = self.shape.new(self.bounds)
                    cell.append(series)  # the last item: whose cell it is
                    cells[series] = cell
        return cell

    def own(self) -> dict[Series, list[Any]]:
        """What this process recorded, for an exporter every process runs (a periodic push):
        here, `totals()`; in multi-process mode, this process's share of the merged view."""
        return self.totals()

    def totals(self) -> dict[Series, list[Any]]:
        """Every series with its cells added up (last value: the latest write wins).

        A histogram's min and max are those recorded since the previous call: each is reset in
        its cell as the cell is read.
        """
        merged: dict[Series, list[Any]] = {}
        at_min = len(self.bounds) + 2 if self.shape.extremes else 0
        with self.lock:
            for cells in [*self.threads.values(), self.retired]:
                for cell in _unique(cells):
                    # One copy: a consistent enough view of a cell being updated. No call nor
                    # backward jump between it and the reset, so (with the GIL) no update falls
                    # between them; with per-thread cells and no GIL, a value recorded at that
                    # very moment may have its min or max in the next collection instead.
                    copy = cell[:]
                    if at_min:
                        cell[at_min] = _INF
                        cell[at_min + 1] = _NEG_INF
                    total = merged.get(copy[-1])
                    if total is None:
                        merged[copy[-1]] = copy
                    else:
                        self.shape.merge(total, copy, self.bounds)
        return {series: total[:-1] for series, total in merged.items()}


class _Scope(threading.local):
    current: int | None = None


SCOPE: Final = _Scope()
"""The current scrape (see `scrape`) of the calling thread, or None."""
_SCOPES: Final = itertools.count(1).__next__


@contextmanager
def scrape() -> Iterator[None]:
    """One scrape: every metric read within it from a directory of worker files (multi-process
    mode, `_shared`) sees one listing of those files, taken once. A renderer reading several
    metrics' `Cells.totals()` wraps them in it; nested, the outer one counts."""
    if SCOPE.current is not None:
        yield
        return
    SCOPE.current = _SCOPES()
    try:
        yield
    finally:
        SCOPE.current = None


def _retire(owner: weakref.ref[Cells], cells: dict[Any, list[Any]]) -> None:
    # By weak reference: the finalizer must not keep the metric's cells alive.
    found = owner()
    if found is not None:
        found.retire(cells)


class _Shared:
    """Stands in for a `threading.local` when all threads share one dict of cells."""

    __slots__ = ("cells",)


class _Marker:
    """An object only a thread's local storage refers to: its end tells that the thread ended."""

    __slots__ = ("__weakref__",)


def _unique(cells: dict[Any, list[Any]]) -> list[list[Any]]:
    """The cells of a thread's dict, each once (a cell is found under several keys)."""
    # list() of a dict's values is one C call: safe while its thread adds keys.
    return list({id(cell): cell for cell in list(cells.values())}.values())


class Export:
    """What a reader gets for one metric: name, description, unit, kind and its cells; `taken`
    holds the names it takes in a scrape, which no other exported metric may share."""

    __slots__ = ("cells", "description", "monotonic", "name", "taken", "unit")

    def __init__(
        self,
        name: str,
        description: str,
        unit: str,
        cells: Cells,
        monotonic: bool,
        taken: frozenset[Hashable] = frozenset(),
    ) -> None:
        self.name = name
        self.description = description
        self.unit = unit
        self.cells = cells
        self.monotonic = monotonic
        self.taken = taken | {name}


class Hook:
    """The wrapped collection of one MeterProvider: adds the series of its reporters' metrics."""

    def __init__(self, provider: MeterProvider, scope: InstrumentationScope) -> None:
        # By weak reference: `_HOOKS` holds the hook as long as the provider lives.
        self._provider = weakref.ref(provider)
        self._scope = scope
        self._lock = threading.Lock()
        self._exports: dict[str, Export] = {}  # by metric name: a newer reporter's replaces
        self._clashed: set[str] = set()  # names also reported by SDK instruments (warned once)
        # Per reader, for delta temporality: each series' totals at the last collection.
        self._previous: weakref.WeakKeyDictionary[
            MetricReader, dict[tuple[str, Series], tuple[list[Any], int]]
        ] = weakref.WeakKeyDictionary()
        # A histogram's min and max cannot be subtracted: a collection (by any reader) takes
        # those since the previous one from the cells (`Cells.totals`) and folds them in here,
        # for all time and, per reader of delta histograms, since its own last collection.
        self._extremes: dict[tuple[str, Series], tuple[float, float]] = {}
        self._pending: weakref.WeakKeyDictionary[
            MetricReader, dict[tuple[str, Series], tuple[float, float]]
        ] = weakref.WeakKeyDictionary()
        # Readers whose owner reads our metrics itself (`read_directly`).
        self._direct: weakref.WeakSet[MetricReader] = weakref.WeakSet()

    @property
    def scope(self) -> InstrumentationScope:
        """The instrumentation scope the metrics are exported in."""
        return self._scope

    def read_directly(self, reader: MetricReader) -> None:
        """Leave our metrics out of `reader`'s collections from now on: its owner reads them
        with `totals` (the Prometheus endpoint renders them from the cells). A collection of it
        still carries the provider's resource, as one with our metrics would."""
        self._direct.add(reader)

    def totals(self) -> list[tuple[Export, dict[Series, list[Any]]]]:
        """Each exported metric with its series' totals (`Cells.totals`), read as a collection
        reads them: a histogram's min and max since the last read are kept for the readers."""
        with self._lock, scrape():  # one listing of a directory's worker files for all
            found = []
            for export in list(self._exports.values()):
                totals = export.cells.totals()
                if export.cells.shape.extremes:
                    at_min = len(export.cells.bounds) + 2
                    for series, total in totals.items():
                        if total[at_min] <= total[at_min + 1]:  # else nothing since
                            self._fold((export.name, series), total[at_min], total[at_min + 1])
                found.append((export, totals))
            return found

    def add(self, exports: Iterable[Export]) -> None:
        """Export these metrics from now on, replacing any of the same name (a reset) or
        sharing a name in `taken`."""
        with self._lock:
            for export in exports:
                for other in list(self._exports.values()):
                    if other is not export and not other.taken.isdisjoint(export.taken):
                        del self._exports[other.name]
                self._exports[export.name] = export

    def wrap(self, collect: Callable[..., MetricsData | None]) -> Callable[..., Any]:
        """A collect callback calling `collect` (the SDK's) and adding our metrics."""

        def collect_with_vsrtel(
            reader: MetricReader, timeout_millis: float = 10_000
        ) -> MetricsData | None:
            return self._merge(reader, collect(reader, timeout_millis=timeout_millis))

        return collect_with_vsrtel

    def _merge(self, reader: MetricReader, data: MetricsData | None) -> MetricsData | None:
        if reader in self._direct:
            return data if data is not None and data.resource_metrics else self._resource_only()
        # One collection at a time (concurrent scrapes of one reader would race on `previous`),
        # as the SDK does its own.
        with self._lock, scrape():
            now = time_ns()
            previous = self._previous.setdefault(reader, {})
            metrics = [
                metric for export in self._exports.values()
                if (metric := self._metric(export, reader, now, previous)) is not None
            ]
        if not metrics:
            return data
        if data is None or not data.resource_metrics:
            data = self._resource_only()
            if data is None:  # collected as it is being collected from: nothing to add to
                return None
        first, *rest = data.resource_metrics
        scopes = list(first.scope_metrics)
        for i, scope_metrics in enumerate(scopes):
            if scope_metrics.scope == self._scope:
                # A metric name the SDK reports too (an `aggregation="otel"` reporter of it on
                # this provider) would be two families of one name: a broken scrape.
                taken = {metric.name for metric in scope_metrics.metrics}
                clash = sorted(taken.intersection(m.name for m in metrics) - self._clashed)
                if clash:
                    self._clashed.update(clash)
                    _log.warning(
                        "metrics %s are reported both by OpenTelemetry instruments and by "
                        "vsrtel's aggregation on one MeterProvider; exporting the instruments' "
                        "only", ", ".join(clash),
                    )
                scopes[i] = ScopeMetrics(
                    scope=scope_metrics.scope,
                    metrics=[*scope_metrics.metrics, *(m for m in metrics if m.name not in taken)],
                    schema_url=scope_metrics.schema_url,
                )
                break
        else:
            scopes.append(ScopeMetrics(scope=self._scope, metrics=metrics, schema_url=""))
        merged = ResourceMetrics(
            resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
        )
        return MetricsData(resource_metrics=[merged, *rest])

    def _resource_only(self) -> MetricsData | None:
        provider = self._provider()
        if provider is None:
            return None
        resource = provider._sdk_config.resource
        return MetricsData(resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[], schema_url=resource.schema_url)
        ])

    def _metric(
        self,
        export: Export,
        reader: MetricReader,
        now: int,
        previous: dict[tuple[str, Series], tuple[list[Any], int]],
    ) -> Metric | None:
        # A periodic (push) exporter runs in every worker process: each sends its own series.
        # A pull reader (a scrape) gets the merged view, whichever process it reads.
        pushes = isinstance(reader, PeriodicExportingMetricReader)
        totals = export.cells.own() if pushes else export.cells.totals()
        if not totals:
            return None
        data = export.cells.shape.read(self, export, reader, now, previous, totals)
        if data is None:
            return None
        return Metric(name=export.name, description=export.description, unit=export.unit, data=data)

    def _fold(self, key: tuple[str, Series], low: float, high: float) -> tuple[float, float]:
        """Fold a histogram series' min and max since the previous collection into those of all
        time (returned) and into those pending for each reader of delta histograms."""
        if low > high:  # nothing recorded since (or a cell created, its first value not yet)
            return self._extremes.get(key, (low, high))
        for pending in self._pending.values():
            before = pending.get(key)
            pending[key] = (low, high) if before is None else (
                min(before[0], low), max(before[1], high)
            )
        before = self._extremes.get(key)
        if before is not None:
            low, high = min(before[0], low), max(before[1], high)
        self._extremes[key] = (low, high)
        return low, high

    @staticmethod
    def _since(
        export: Export,
        series: Series,
        total: list[Any],
        temporality: AggregationTemporality,
        previous: dict[tuple[str, Series], tuple[list[Any], int]],
        now: int,
    ) -> tuple[int, list[Any]]:
        """Start time and value of a point: the totals (cumulative), or what was added since the
        reader's last collection (delta)."""
        if temporality is _CUMULATIVE:
            return series.start_ns, total
        key = (export.name, series)
        before, start = previous.get(key, (None, series.start_ns))
        previous[key] = (total, now)
        if before is None:
            return start, total
        return start, [a - b for a, b in zip(total, before, strict=True)]


def _temporality(reader: MetricReader, kind: type) -> AggregationTemporality:
    for cls, temporality in reader._instrument_class_temporality.items():
        if issubclass(cls, kind):
            return temporality
    return _CUMULATIVE


# --------------------------------------------------------------------------------------------
# Cell shapes: one row each
# --------------------------------------------------------------------------------------------

_Totals = dict[Series, list[Any]]
_Previous = dict[tuple[str, Series], tuple[list[Any], int]]


def _read_total(
    hook: Hook, export: Export, reader: MetricReader, now: int, previous: _Previous,
    totals: _Totals,
) -> Sum | None:
    temporality = _temporality(reader, SdkCounter if export.monotonic else SdkUpDownCounter)
    points = []
    for s, total in totals.items():
        start, value = hook._since(export, s, total, temporality, previous, now)
        if temporality is _DELTA and not value[0]:
            continue
        points.append(NumberDataPoint(
            attributes=s.attrs, start_time_unix_nano=start, time_unix_nano=now, value=value[0],
        ))
    if not points:
        return None
    return Sum(
        data_points=points, aggregation_temporality=temporality, is_monotonic=export.monotonic
    )


def _read_last(
    hook: Hook, export: Export, reader: MetricReader, now: int, previous: _Previous,
    totals: _Totals,
) -> Gauge:
    return Gauge(data_points=[
        NumberDataPoint(
            attributes=s.attrs, start_time_unix_nano=s.start_ns, time_unix_nano=now,
            value=total[0],
        )
        for s, total in totals.items()
    ])


def _read_buckets(
    hook: Hook, export: Export, reader: MetricReader, now: int, previous: _Previous,
    totals: _Totals,
) -> Histogram | None:
    temporality = _temporality(reader, SdkHistogram)
    pending = hook._pending.setdefault(reader, {}) if temporality is _DELTA else None
    bounds = export.cells.bounds
    points = []
    n = len(bounds) + 1
    for s, total in totals.items():
        key = (export.name, s)
        first = key not in previous
        # Counts and sum subtract; min and max are folded (see `Hook._extremes`).
        start, value = hook._since(export, s, total[:n + 1], temporality, previous, now)
        low, high = hook._fold(key, total[n + 1], total[n + 2])
        if pending is not None:
            since = pending.pop(key, (_INF, _NEG_INF))
            if not first:  # a first delta point runs from the series' start
                low, high = since
        counts = value[:n]
        count = sum(counts)
        if temporality is _DELTA and not count:
            continue
        points.append(HistogramDataPoint(
            attributes=s.attrs, start_time_unix_nano=start, time_unix_nano=now,
            count=count, sum=value[n], bucket_counts=counts, explicit_bounds=bounds,
            min=low, max=high,
        ))
    if not points:
        return None
    return Histogram(data_points=points, aggregation_temporality=temporality)


def _merge_total(total: list[Any], cell: list[Any], bounds: tuple[float, ...]) -> None:
    total[0] += cell[0]


def _merge_last(total: list[Any], cell: list[Any], bounds: tuple[float, ...]) -> None:
    if cell[1] > total[1]:
        total[:2] = cell[:2]


def _merge_buckets(total: list[Any], cell: list[Any], bounds: tuple[float, ...]) -> None:
    n = len(bounds) + 1
    for i in range(n + 1):
        total[i] += cell[i]
    total[n + 1] = min(total[n + 1], cell[n + 1])
    total[n + 2] = max(total[n + 2], cell[n + 2])


def _record_total(
    cell: list[Any], value: Any, bounds: tuple[float, ...], stamp: Callable[[], float]
) -> None:
    cell[0] += value


def _record_last(
    cell: list[Any], value: Any, bounds: tuple[float, ...], stamp: Callable[[], float]
) -> None:
    cell[0] = value
    cell[1] = stamp()


def _record_buckets(
    cell: list[Any], value: Any, bounds: tuple[float, ...], stamp: Callable[[], float]
) -> None:
    at_sum = len(bounds) + 1
    cell[bisect_left(bounds, value)] += 1
    cell[at_sum] += value
    if value < cell[at_sum + 1]:
        cell[at_sum + 1] = value
    if value > cell[at_sum + 2]:
        cell[at_sum + 2] = value


@dataclass(frozen=True, eq=False)
class Shape:
    """How one shape of cell is made (`new`, given the bucket bounds), recorded into (`record`
    of one value; a metric's handler inlines it), added up (`merge` of a cell into a total of
    the same series) and read out (`read`: the OpenTelemetry data of a metric's totals).

    `extremes`: its last two numbers are a min and a max, reset as a collection reads them.
    """

    name: str
    new: Callable[[tuple[float, ...]], list[Any]]
    record: Callable[[list[Any], Any, tuple[float, ...], Callable[[], float]], None]
    merge: Callable[[list[Any], list[Any], tuple[float, ...]], None]
    read: Callable[
        [Hook, Export, MetricReader, int, _Previous, _Totals], Sum | Gauge | Histogram | None
    ]
    extremes: bool = False


TOTAL: Final = Shape("total", lambda bounds: [0], _record_total, _merge_total, _read_total)
"""[total]: a counter's or a sum's."""
LAST: Final = Shape("last", lambda bounds: [0, -1], _record_last, _merge_last, _read_last)
"""[value, stamp]: a last value's (the latest stamp wins)."""
BUCKETS: Final = Shape(
    "buckets",
    lambda bounds: [0] * (len(bounds) + 1) + [0, _INF, _NEG_INF],
    _record_buckets,
    _merge_buckets,
    _read_buckets,
    extremes=True,
)
"""[bucket counts..., sum, min, max]: a distribution's."""

SHAPES: Final[dict[str, Shape]] = {shape.name: shape for shape in (TOTAL, LAST, BUCKETS)}
"""The cell shapes, by the name a `MetricKind.cell` gives."""


_HOOKS: weakref.WeakKeyDictionary[MeterProvider, Hook] = weakref.WeakKeyDictionary()
_HOOKS_LOCK: Final = threading.Lock()


def install(provider: object, scope: InstrumentationScope) -> Hook | None:
    """The collection hook of `provider`, installed on first use; None if it cannot be.

    None for anything but the SDK's MeterProvider, and for an SDK whose internals moved.
    """
    if not isinstance(provider, MeterProvider):
        return None
    with _HOOKS_LOCK:
        hook = _HOOKS.get(provider)
        if hook is not None:
            return hook
        try:
            consumer = provider._measurement_consumer
            readers = tuple(consumer._reader_storages)  # every reader, added ones too
            original = consumer.collect
            for reader in readers:
                if not isinstance(reader._instrument_class_temporality, dict):
                    return None
        except AttributeError:
            return None
        hook = Hook(provider, scope)
        wrapped = hook.wrap(original)
        # Readers added later (provider.add_metric_reader) are given consumer.collect.
        consumer.collect = wrapped  # type: ignore[method-assign]
        for reader in readers:
            reader._set_collect_callback(wrapped)
        _HOOKS[provider] = hook
        return hook
