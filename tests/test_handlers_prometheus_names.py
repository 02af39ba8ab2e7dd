"""A definition's Prometheus names, derived once, are those a real scrape shows."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vsrtel
from vsrtel import metrics as m
from vsrtel.export.prometheus import exposition, prometheus_reader
from vsrtel.handlers import _prometheus_names
from vsrtel.handlers.metrics import MetricsReporter

UNITS: list[Any] = [None, "native", ("native", "millisecond"), "byte", "1", "each", "{job}"]


KINDS: list[tuple[str, dict[str, Any]]] = [
    *((kind, {}) for kind in m.KINDS), ("sum", {"monotonic": False})
]


@pytest.mark.parametrize("unit", UNITS, ids=repr)
@pytest.mark.parametrize(("kind", "options"), KINDS, ids=[f"{k}{o}" for k, o in KINDS])
def test_derived_names_are_a_scrapes(kind: str, options: dict[str, Any], unit: Any) -> None:
    definition = getattr(m, kind)("app.jobs.done_total", unit=unit, reporter_options=options)
    reader, registry = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    events = vsrtel.Registry(on_error="raise")
    with MetricsReporter([definition], meter_provider=provider, registry=events):
        events.execute("app.jobs", {"done_total": 1})
        families = [f for f in registry.collect() if f.type != "info"]  # not target_info
        text = generate_latest(registry).decode()
    provider.shutdown()
    [scraped] = families
    family = _prometheus_names.family(definition)
    assert (family.name, family.type, family.unit) == (scraped.name, scraped.type, scraped.unit)
    assert family.samples == tuple(dict.fromkeys(s.name for s in scraped.samples))
    [parsed] = [f for f in text_string_to_metric_families(text) if f.name == family.name]
    assert parsed.type == family.type
    assert family.type == definition.kind.prometheus_type
    [shown] = exposition([definition])
    assert (shown.name, shown.type, shown.samples) == (family.name, family.type, family.samples)


def test_the_labels_of_a_tags_callable_come_from_stand_in_metadata() -> None:
    definition = m.counter("a.b.count", tags=lambda md: {"kind": md["reason"], "none": None})
    [shown] = exposition([definition])
    assert shown.labels == ("kind",)
    refusing = m.counter("a.c.count", tags=lambda md: {"le": 1, "x": md["y"]})
    assert _prometheus_names.labels(refusing, {"y": 1}) == ("le", "x")
    with pytest.raises(ValueError, match="tags callable"):
        exposition([m.counter("a.d.count", tags=lambda md: 1 / 0)])  # type: ignore[arg-type, return-value]


def test_of_the_handlers_only_this_module_imports_prometheus_naming() -> None:
    """The layer rule of docs/design.md: handlers import OpenTelemetry, and of Prometheus only
    the names a scrape will use, here."""
    import ast
    from pathlib import Path

    import vsrtel.handlers

    found = {}
    for path in Path(vsrtel.handlers.__file__).parent.glob("*.py"):
        modules = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
        prometheus = {
            name for name in modules
            if name.startswith(("prometheus_client", "opentelemetry.exporter.prometheus"))
        }
        if prometheus:
            found[path.name] = prometheus
    assert set(found) == {"_prometheus_names.py"}, found
