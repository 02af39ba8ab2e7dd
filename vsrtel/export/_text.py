"""The Prometheus text formats of vsrtel-aggregated metrics, written straight from their cells.

The output is byte for byte what OpenTelemetry's Prometheus exporter and prometheus_client make
of the same series (the endpoint's tests hold it to that): the exporter's names and units
(`_prometheus_names`), its label names, each family's labels the union of its series' (a
series without one has it empty), counters as ``_total``, sums that go down and last values as
gauges, histograms as cumulative ``_bucket`` lines with ``le`` in its sorted place, then
``_count`` and ``_sum``; values and ``# HELP`` text escaped and numbers spelled as
prometheus_client spells them. Only the ``otel_scope_*`` labels are left out unless asked for.

Most of a series' line is its label text, which changes only when its family gains a label:
each series keeps it, so a scrape formats little more than the numbers.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Container, Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Any, Final, TypeAlias

from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as PromMetric

from vsrtel.handlers import _prometheus_names
from vsrtel.handlers._aggregation import BUCKETS, LAST, Export, Series

__all__ = ["Renderer", "number"]

Read: TypeAlias = "Iterable[tuple[Export, Mapping[Series, list[Any]]]]"
"""What a renderer renders: each metric with its series' totals (`Hook.totals`)."""

_INF: Final = float("inf")
# Names every escaping scheme the endpoint renders itself leaves as they are.
_PLAIN_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def number(value: Any) -> str:
    """`value` as prometheus_client writes a sample value (its ``floatToGoString``): Python's
    shortest repr of the float, but Go's exponent form for positive numbers of 7 or more
    integer digits, and ``+Inf``, ``-Inf``, ``NaN``."""
    if value.__class__ is int and -10**15 < value < 1_000_000:
        return f"{value}.0"  # what repr(float(value)) gives, without the float
    value = float(value)
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    digits = text.find(".")  # integer digits of a positive number in plain notation
    if value > 0 and digits > 6:
        mantissa = (text[0] + "." + text[1:digits] + text[digits + 1:]).rstrip("0.")
        return f"{mantissa}e+{digits - 1:02d}"
    return text


def encodable(text: str) -> str:
    """`text` if UTF-8 can encode it, else with what it cannot (lone surrogates, as
    ``os.fsdecode`` makes of undecodable bytes) written as backslash escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _label_value(value: object) -> str:
    """A label value as the exporter writes it (text as it is, anything else as JSON)."""
    return encodable(value if isinstance(value, str) else json.dumps(value, default=str))


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _scope_labels(scope: InstrumentationScope) -> dict[str, str]:
    """The exporter's ``otel_scope_*`` labels of `scope`, by label name."""
    attrs: dict[str, object] = {
        "otel_scope_" + key: value for key, value in (scope.attributes or {}).items()
    }
    attrs["otel_scope_name"] = scope.name or ""
    attrs["otel_scope_version"] = scope.version or ""
    attrs["otel_scope_schema_url"] = scope.schema_url or ""
    return {_prometheus_names.label_name(k): _label_value(v) for k, v in attrs.items()}


class _Series:
    """One series' labels and, for the family's current label names, its label text."""

    __slots__ = ("heads", "keys", "labels", "union")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels  # label name -> value, UTF-8-safe, not escaped
        self.keys = frozenset(labels)
        self.union: tuple[str, ...] | None = None  # the label names `heads` was made for
        self.heads: tuple[str, ...] = ()


class _Family:
    """What one metric's family keeps between scrapes: its names, header lines, and each
    series' label text."""

    def __init__(self, export: Export, scope: dict[str, str]) -> None:
        self.export = export
        shape = export.cells.shape
        kind = "histogram" if shape is BUCKETS else (
            "gauge" if shape is LAST or not export.monotonic else "counter"
        )
        found = _prometheus_names._family(export.name, kind, export.unit)
        self.name, self.type, self.unit = found.name, kind, found.unit
        self.samples = found.samples
        self.documentation = encodable(export.description or "")
        text_name = self.name + "_total" if kind == "counter" else self.name
        help_text = self.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        self.header = f"# HELP {text_name} {help_text}\n# TYPE {text_name} {kind}\n"
        self.header_om = (
            f"# HELP {self.name} {_escape_value(self.documentation)}\n"
            f"# TYPE {self.name} {kind}\n"
            + (f"# UNIT {self.name} {self.unit}\n" if self.unit else "")
        )
        # Names escaping would change (a colon) leave this family to prometheus_client.
        self.plain = all(_PLAIN_NAME.fullmatch(n) for n in (self.name, *self.samples))
        bounds = export.cells.bounds
        self.les = [f"{bound}" for bound in bounds] + ["+Inf"]  # as the exporter spells them
        self.count_sum = float(self.les[0]) >= 0  # prometheus_client's rule
        self.scope = scope
        self.series: dict[Series, _Series] = {}
        self.mixed = False  # whether its series have told different label names apart
        self.first_keys: frozenset[str] | None = None  # the first series' label names
        self._keys: frozenset[str] = frozenset()
        self._union: tuple[str, ...] = ()
        self.lock = threading.Lock()

    def entry(self, series: Series) -> _Series:
        labels = dict(self.scope)
        for key, value in series.attrs.items():
            labels[_prometheus_names.label_name(key)] = _label_value(value)
        found = _Series(labels)
        if self.first_keys is None:
            self.first_keys = found.keys
        elif found.keys != self.first_keys:
            self.mixed = True
        self.series[series] = found
        return found

    def union(self, entries: list[_Series]) -> tuple[str, ...]:
        """The family's label names in this read: every series' (the exporter fills a series'
        missing ones with ""), sorted."""
        if not entries:
            return ()
        keys = frozenset().union(*{e.keys for e in entries}) if self.mixed else entries[0].keys
        if keys != self._keys:  # else the same tuple: a series' text is found by identity
            self._keys, self._union = keys, tuple(sorted(keys))
        return self._union

    def heads(self, entry: _Series, union: tuple[str, ...]) -> tuple[str, ...]:
        """The text of `entry`'s lines up to their values, for label names `union`."""
        labels = entry.labels
        pairs = [f'{k}="{_escape_value(labels.get(k, ""))}"' for k in union]
        text = "{" + ",".join(pairs) + "}" if pairs else ""
        if self.type != "histogram":
            heads: tuple[str, ...] = (f"{self.samples[0]}{text} ",)
        else:
            before = "".join(p + "," for k, p in zip(union, pairs, strict=True) if k < "le")
            after = "".join("," + p for k, p in zip(union, pairs, strict=True) if k > "le")
            name = self.name
            opening, closing = f'{name}_bucket{{{before}le="', f'"{after}}} '
            count_head, sum_head = f"{name}_count{text} ", f"{name}_sum{text} "
            # All its lines as one %-template, for counts below a million (see `_render`).
            start, end = opening.replace("%", "%%"), closing.replace("%", "%%")
            template = "".join(f"{start}{le}{end}%d.0\n" for le in self.les)
            if self.count_sum:
                template += (
                    f"{count_head.replace('%', '%%')}%d.0\n{sum_head.replace('%', '%%')}%s\n"
                )
            heads = (opening, closing, count_head, sum_head, template)
        entry.union, entry.heads = union, heads
        return heads


class Renderer:
    """Writes the Prometheus text formats of vsrtel-aggregated metrics (`render`), or makes
    prometheus_client metric families of them (`families`), keeping each series' label text.

    ``scope`` adds the exporter's ``otel_scope_*`` labels of that instrumentation scope to every
    series (left out by default). A renderer is safe to share between threads.
    """

    def __init__(self, *, scope: InstrumentationScope | None = None) -> None:
        self._scope = {} if scope is None else _scope_labels(scope)
        self._families: dict[int, _Family] = {}  # by id() of the Export; the Export kept in it
        self._lock = threading.Lock()

    def family(self, export: Export) -> _Family:
        """The family of `export` (made on its first read, dropped once it is no longer read)."""
        found = self._families.get(id(export))
        if found is None or found.export is not export:
            with self._lock:
                found = self._families.get(id(export))
                if found is None or found.export is not export:
                    found = self._families[id(export)] = _Family(export, self._scope)
        return found

    def forget_others(self, exports: Iterable[Export]) -> None:
        """Drop what is kept for metrics other than `exports` (those a provider exports now)."""
        keep = {id(export) for export in exports}
        if keep != self._families.keys():
            with self._lock:
                self._families = {k: v for k, v in self._families.items() if k in keep}

    def name(self, export: Export) -> str:
        """The name of `export`'s family in a scrape."""
        return self.family(export).name

    def render(
        self, read: Read, *, openmetrics: bool = False, skip: Container[str] = ()
    ) -> tuple[list[str], list[Export]]:
        """The text of `read`'s metrics in the Prometheus text format 0.0.4 (or OpenMetrics,
        without its ``# EOF``), one string per family (joining them all would copy the whole
        scrape once more), and the metrics it left to prometheus_client: those named in `skip`
        are left out, and those whose names escaping would change are returned.

        A metric with no series has no family."""
        texts: list[str] = []
        left: list[Export] = []
        for export, totals, family in self._served(read, skip):
            if not family.plain:
                left.append(export)
                continue
            out: list[str] = []
            with family.lock:
                self._render(family, totals, openmetrics, out)
            texts.append("".join(out))
        return texts, left

    def _served(
        self, read: Read, skip: Container[str]
    ) -> Iterator[tuple[Export, Mapping[Series, list[Any]], _Family]]:
        """The metrics of `read` that have a family in the scrape: some series, not skipped."""
        for export, totals in read:
            if totals:
                family = self.family(export)
                if family.name not in skip:
                    yield export, totals, family

    @staticmethod
    def _render(
        family: _Family, totals: Mapping[Series, list[Any]], openmetrics: bool, out: list[str]
    ) -> None:
        cache, entry = family.series, family.entry
        entries = [cache.get(s) or entry(s) for s in totals]
        union = family.union(entries)
        make = family.heads
        out.append(family.header_om if openmetrics else family.header)
        if family.type != "histogram":
            for e, total in zip(entries, totals.values(), strict=True):
                heads = e.heads if e.union is union else make(e, union)
                out.append(f"{heads[0]}{number(total[0])}\n")
            return
        les, n, count_sum = family.les, len(family.les), family.count_sum
        for e, total in zip(entries, totals.values(), strict=True):
            heads = e.heads if e.union is union else make(e, union)
            running = list(accumulate(total[:n]))
            last = running[-1]
            if last.__class__ is int and last < 1_000_000:  # so is every count: "%d.0" fits
                if count_sum:
                    running += (last, number(total[n]))
                out.append(heads[4] % tuple(running))
                continue
            opening, closing, count_head, sum_head, _ = heads
            counts = [number(c) for c in running]
            out.append("".join([
                f"{opening}{le}{closing}{c}\n" for le, c in zip(les, counts, strict=True)
            ]))
            if count_sum:
                out.append(f"{count_head}{counts[-1]}\n{sum_head}{number(total[n])}\n")

    def families(self, read: Read, *, skip: Container[str] = ()) -> list[PromMetric]:
        """prometheus_client metric families of `read`'s metrics, as the OpenTelemetry exporter
        makes them (for a registry's `collect`), those named in `skip` left out."""
        made: list[PromMetric] = []
        for _, totals, family in self._served(read, skip):
            with family.lock:
                cache, entry = family.series, family.entry
                entries = [cache.get(s) or entry(s) for s in totals]
                union = family.union(entries)
            rows = [[e.labels.get(k, "") for k in union] for e in entries]
            prom: PromMetric
            if family.type == "histogram":
                hist = HistogramMetricFamily(
                    family.name, family.documentation, labels=union, unit=family.unit
                )
                n = len(family.les)
                for row, total in zip(rows, totals.values(), strict=True):
                    running = accumulate(total[:n])
                    hist.add_metric(
                        row, list(zip(family.les, running, strict=True)), sum_value=total[n]
                    )
                prom = hist
            else:
                cls = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                prom = cls(family.name, family.documentation, labels=union, unit=family.unit)
                for row, total in zip(rows, totals.values(), strict=True):
                    prom.add_metric(row, total[0])
            made.append(prom)
        return made
