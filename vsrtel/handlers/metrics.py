"""The metrics reporter: metric definitions turned into OpenTelemetry metrics, from events.

    from vsrtel import metrics as m
    from vsrtel.handlers.metrics import MetricsReporter

    reporter = MetricsReporter([
        m.counter("vsr.protocol.client_request.stop.count"),
        m.distribution("vsr.protocol.client_request.stop.duration",
                       unit=("native", "second"), tags=["operation"]),
    ])
    reporter.attach()

The definitions (`counter`, `sum`, `last_value`, `summary`, `distribution`, the units and the
tag normalisers) live in `vsrtel.metrics`, free of OpenTelemetry. `MetricsReporter` attaches one
handler per event name (built by `_recorders`). By default each metric aggregates its series in
vsrtel (`_aggregation`) and hands them to the MeterProvider's readers when they collect;
`aggregation="otel"` records every event on OpenTelemetry instruments instead. Definitions a
Prometheus scrape could not hold are refused by their names (`_prometheus_names`).
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterable
from typing import Any, Final, Literal, TypeAlias

from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import vsrtel
from vsrtel.handlers import _prometheus_names, _shared
from vsrtel.handlers._aggregation import TOTAL, Cells, Export, install
from vsrtel.handlers._prometheus_names import Name, describe
from vsrtel.handlers._recorders import (
    OVERFLOW_ATTRIBUTE,
    Record,
    State,
    cells,
    dispatch,
    instrument,
    reads_only,
    recorder,
)
from vsrtel.metrics import Metric

__all__ = ["METER_NAME", "OVERFLOW_ATTRIBUTE", "MetricsReporter", "metric_views"]

METER_NAME: Final = "vsrtel.handlers.metrics"
"""Name of the OpenTelemetry meter (instrumentation scope) the reporter creates instruments on."""

_SCOPE: Final = InstrumentationScope(METER_NAME)


def metric_views(metrics: Iterable[Metric]) -> list[View]:
    """OpenTelemetry Views giving each `summary` in `metrics` exponential-bucket aggregation.

    Pass them when building the MeterProvider that a `MetricsReporter` reports to, e.g.
    `MeterProvider(metric_readers=[...], views=metric_views(defs))`. Do not use them with the
    Prometheus reader: its text exposition cannot carry exponential histograms and drops them.
    """
    views = []
    for metric in metrics:
        if metric.kind.cell is not None:  # aggregated by the views: a summary
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


# Per MeterProvider, the names its attached reporters take, with the metric and reporter taking
# each: a second reporter of one would give a scrape two families of one name. All weak: an
# entry goes with its provider, a name with its reporter (which its attached handlers keep).
_Claims: TypeAlias = "dict[Name, tuple[Metric, weakref.ref[MetricsReporter]]]"
_CLAIMS: weakref.WeakKeyDictionary[Any, _Claims] = weakref.WeakKeyDictionary()
_CLAIMS_LOCK: Final = threading.Lock()


def _claims(provider: object) -> _Claims | None:
    """The names taken on `provider` (call with `_CLAIMS_LOCK` held); None for a provider that
    cannot be weakly referenced, whose names are then not checked across reporters."""
    try:
        return _CLAIMS.setdefault(provider, {})
    except TypeError:
        return None


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
    (debug log) and counted in `skipped`; so are events with a tag value that cannot be turned
    into text (a warning the first time), and a user callable that raises is logged and counted
    too. None of these ever detaches the reporter.

    `directory` turns on multi-process mode (for pre-fork servers: gunicorn, uvicorn
    `--workers`): each process writes its series into its own memory-mapped file there, and
    every collection merges all the processes' files (docs/multiprocess.md). By default it is
    the environment variable ``VSRTEL_MULTIPROC_DIR`` when set. A directory that is missing,
    not writable, cannot hold memory-mapped files or holds files of another vsrtel version
    raises ValueError naming it. Summaries stay per process (the SDK aggregates them).
    """

    def __init__(
        self,
        metrics: Iterable[Metric],
        *,
        meter_provider: otel_metrics.MeterProvider | None = None,
        registry: vsrtel.Registry | None = None,
        aggregation: Literal["vsrtel", "otel"] = "vsrtel",
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        if aggregation not in ("vsrtel", "otel"):
            raise ValueError(f"aggregation must be 'vsrtel' or 'otel', got {aggregation!r}")
        if directory is None:
            if aggregation == "vsrtel":
                directory = os.environ.get(_shared.ENV) or None
        elif aggregation == "otel":
            raise ValueError(
                "directory (multi-process mode) needs aggregation='vsrtel': OpenTelemetry's "
                "instruments aggregate in each process alone"
            )
        # Checked before anything is set up: a bad directory fails here, naming it.
        shared = _shared.directory(directory) if directory is not None else None
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
        checks, self._names = _prometheus_names.check(self.metrics)
        provider = meter_provider or otel_metrics.get_meter_provider()
        # The API package holds only the no-op provider and the proxy that stands in for a global
        # one not set yet: either way nothing is recorded, and a scrape silently lacks it all.
        # In multi-process mode the files hold the series: a private provider aggregates them.
        api_only = type(provider).__module__.startswith("opentelemetry.metrics")
        if api_only and shared is not None and meter_provider is None:
            provider = MeterProvider()
        elif api_only:
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
        self._states: list[State] = []
        exports = []
        by_event: dict[tuple[str, ...], list[Record]] = {}
        for metric, check in zip(self.metrics, checks, strict=True):
            # A kind without a cell (a summary) is aggregated by the provider's views: it stays
            # an SDK instrument.
            if hook is None or metric.kind.cell is None:
                state = State(metric, check, Cells(TOTAL), self)
                record = recorder(metric, state, instrument(meter, metric))
            else:
                state = State(metric, check, cells(metric, shared), self)
                record = recorder(metric, state, None)
                exports.append(Export(
                    metric.name, metric.description, metric.export_unit, state.cells,
                    metric.kind.monotonic,
                    frozenset(name for name, owner in self._names.items() if owner is metric),
                ))
            self._states.append(state)
            by_event.setdefault(metric.event_name, []).append(record)
        self._hook = hook
        self.directory: str | None = shared.path if shared is not None and hook else None
        """The directory of multi-process mode (absolute), None in single-process mode."""
        self._exports = exports
        self._handlers = {event: tuple(recs) for event, recs in by_event.items()}
        # An event whose metrics call no user code with the payload is attached trusted (see
        # `Registry.attach`): the records only read it.
        self._trusted = {
            event: all(reads_only(m) for m in self.metrics if m.event_name == event)
            for event in by_event
        }
        self._id = f"vsrtel.handlers.metrics/{uuid.uuid4().hex[:12]}"
        self._attached: list[str] = []

    @property
    def id(self) -> str:
        """The reporter's id: its handlers are attached as ``f"{id}/{dotted event name}"``."""
        return self._id

    @property
    def skipped(self) -> int:
        """Events skipped (missing data or a failing callable), over all metrics: an event that
        two metrics skip counts twice. Per metric: `skipped_by_metric`."""
        return sum(s.skipped for s in self._states)

    @property
    def skipped_by_metric(self) -> dict[str, int]:
        """Per metric name, how many events were skipped."""
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
                    self._registry.attach(handler_id, event, dispatch, records, trusted=trusted)
                self._attached.append(handler_id)
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> bool:
        """Detach every handler this reporter attached; False if it was not attached.

        Its series stay exported, and its names are free for another reporter to take.
        """
        was_attached = bool(self._attached)
        while self._attached:
            self._registry.detach(self._attached.pop())
        with _CLAIMS_LOCK:
            claims = _claims(self._provider) or {}
            for name in self._names:
                held = claims.get(name)
                if held is not None and held[1]() is self:
                    del claims[name]
        return was_attached

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
                        f"{describe(name)}; detach that reporter first, or rename one"
                    )
            if take:
                mine = weakref.ref(self)
                for name, metric in self._names.items():
                    claims[name] = (metric, mine)

    def __enter__(self) -> MetricsReporter:
        """Attach (unless attached already: ``with reporter.attach():`` reads like a handle)."""
        return self if self._attached else self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

