"""The names a metric definition takes in a Prometheus scrape: the one place they are derived.

The metrics reporter refuses definitions a scrape could not hold (two families of one name, a tag
on a label the family uses itself), and `vsrtel.export.prometheus.exposition` documents them;
both read the names here. They are named by the OpenTelemetry Prometheus exporter's own rules
(`sanitize_full_name`, `map_unit`, `sanitize_attribute`) and built as prometheus_client's metric
families, the exporter's, build them, so a name is a scrape's, never re-derived by hand. Both
libraries are imported when first needed: `import vsrtel.handlers.metrics` does not load them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from vsrtel._names import remember
from vsrtel.metrics import Metric, MetricKind

TagCheck: TypeAlias = Callable[[Sequence[object]], "str | None"]
"""A check of tag names: a sentence naming the bad tag(s), or None."""

# Labels the Prometheus exporter adds itself (instrumentation scope, the overflow series).
_EXPORTER_LABEL_PREFIX: Final = "otel_scope_"
_OVERFLOW_LABEL: Final = "otel_metric_overflow"
# The family and sample name of the exporter's `target_info`.
EXPORTER_NAMES: Final = frozenset({"target", "target_info"})

# The series names OpenMetrics reserves for a family of each type, whether exported or not: a
# strict parser refuses a scrape where another family has one (`x_created` beside counter `x`).
_RESERVED_SUFFIXES: Final[Mapping[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


_labels: dict[str, str] = {}  # tag name -> label (the caches' one policy: vsrtel._names)


def label_name(name: str) -> str:
    """The Prometheus label a tag name becomes, by the OpenTelemetry exporter's own rule."""
    try:
        return _labels[name]
    except KeyError:
        from opentelemetry.exporter.prometheus._mapping import sanitize_attribute

        return remember(_labels, name, sanitize_attribute(name))


def tag_check(kind: MetricKind) -> TagCheck:
    """A check of one metric's tag names against the labels its Prometheus family may carry."""
    reserved = kind.labels

    def check(names: Sequence[object]) -> str | None:
        seen: dict[str, object] = {}
        for name in names:
            if not isinstance(name, str) or not name:
                return f"tag name {name!r}, which is not a non-empty string"
            label = label_name(name)
            if label in reserved:
                return f"tag {name!r}, but a Prometheus {kind.name} uses the label {label!r} itself"
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


@dataclass(frozen=True)
class Family:
    """A metric's family in a scrape: its `name`, `type`, `unit`, the names of its `samples`,
    and the further series names its type `reserves`."""

    name: str
    type: str
    unit: str
    samples: tuple[str, ...]
    reserves: tuple[str, ...]


_families: dict[tuple[str, str, str], Family] = {}


def _family(name: str, prometheus_type: str, export_unit: str) -> Family:
    key = (name, prometheus_type, export_unit)
    found = _families.get(key)
    return found if found is not None else remember(_families, key, _new_family(*key))


def _new_family(name: str, prometheus_type: str, export_unit: str) -> Family:
    from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    full, unit = sanitize_full_name(name), map_unit(export_unit)
    family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
    if prometheus_type == "histogram":
        family = HistogramMetricFamily(full, "", unit=unit)
        family.add_metric([], buckets=[("+Inf", 0)], sum_value=0)
    elif prometheus_type == "counter":
        family = CounterMetricFamily(full, "", unit=unit)
        family.add_metric([], 0)
    else:
        family = GaugeMetricFamily(full, "", unit=unit)
        family.add_metric([], 0)
    samples = tuple(dict.fromkeys(s.name for s in family.samples))
    reserves = tuple(family.name + suffix for suffix in _RESERVED_SUFFIXES.get(family.type, ()))
    return Family(family.name, family.type, family.unit, samples, reserves)


def family(metric: Metric) -> Family:
    """The family `metric` is exported as in a Prometheus scrape."""
    return _family(metric.name, metric.kind.prometheus_type, metric.export_unit)


def exposed_names(metric: Metric) -> tuple[str, ...]:
    """The family name and series names `metric` has or reserves in a Prometheus scrape."""
    found = family(metric)
    return tuple(dict.fromkeys([found.name, *found.samples, *found.reserves]))


Name: TypeAlias = tuple[str, str]
"""A name a metric takes on a MeterProvider: ("instrument", casefolded) or ("Prometheus", ...)."""


def names(metric: Metric) -> list[Name]:
    """Every name `metric` takes on a MeterProvider: its Prometheus names (see
    `exposed_names`) and its OpenTelemetry instrument name (which ignores case)."""
    return [
        *(("Prometheus", name) for name in exposed_names(metric)),
        ("instrument", metric.name.casefold()),
    ]


def describe(name: Name) -> str:
    """`name` for an error message."""
    kind, text = name
    if kind == "instrument":
        return "one OpenTelemetry instrument name (names ignore case)"
    return f"the Prometheus name {text!r}"


def check(metrics: Sequence[Metric]) -> tuple[list[TagCheck], dict[Name, Metric]]:
    """Raise ValueError for definitions that would break a scrape; return each one's tag check
    and the names they take.

    Two definitions sharing a Prometheus name (a family's, or a series name its type has or
    reserves), a static tag on a label the family uses itself, and two tags sanitised to one
    label are refused, naming the culprits.
    """
    owners: dict[Name, Metric] = {}
    checks = []
    for metric in metrics:
        tags_ok = tag_check(metric.kind)
        if isinstance(metric.tags, tuple) and (problem := tags_ok(metric.tags)) is not None:
            raise ValueError(f"metric {metric.name!r} has {problem}")
        for name in names(metric):
            if name[0] == "Prometheus" and name[1] in EXPORTER_NAMES:
                raise ValueError(
                    f"metric {metric.name!r} would export the Prometheus name {name[1]!r}, "
                    "which the exporter uses for its target_info"
                )
            other = owners.setdefault(name, metric)
            if other is not metric:
                raise ValueError(
                    f"metrics {other.name!r} and {metric.name!r} would both use {describe(name)}"
                )
        checks.append(tags_ok)
    return checks, owners


def labels(metric: Metric, metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The label names of `metric`'s series, sorted, for a tags callable given `metadata`.

    A tag whose value is None or "" is no label (the exporter fills a missing one with "").
    Raises whatever a tags callable raises on `metadata`.
    """
    if isinstance(metric.tags, tuple):
        return tuple(sorted(label_name(tag) for tag in metric.tags))
    found = metric.tags(metadata)
    return tuple(sorted(
        label_name(str(tag)) for tag, value in found.items() if value is not None and value != ""
    ))
