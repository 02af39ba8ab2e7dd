"""vsrtel.catalog: event specs, validation, strict checking, Markdown and JSON rendering."""

from __future__ import annotations

import json

import pytest

import vsrtel
from vsrtel.catalog import Catalog, CatalogViolation, EventSpec


def _catalog() -> Catalog:
    return Catalog(
        "app",
        [
            EventSpec("app.cache.hit", "event", "a lookup finds the key", {"count": "hits"},
                      {"key": "the key (str)"}),
            EventSpec(("app", "db", "query"), "span", "a query runs | with a pipe",
                      {"rows": "rows returned"}, {"table": "table name (str)"},
                      optional_metadata={"trace_parent": "remote parent"}),
        ],
        common_metadata={"node": "node name (str)"},
        title="App",
    )


def test_event_spec_normalises_dotted_names_and_expands_spans() -> None:
    catalog = _catalog()
    span = catalog.specs[1]
    assert catalog.specs[0].name == ("app", "cache", "hit")
    assert span.dotted == "app.db.query"
    assert span.event_names() == (
        ("app", "db", "query", "start"),
        ("app", "db", "query", "stop"),
        ("app", "db", "query", "exception"),
    )
    assert catalog.event_names() == (("app", "cache", "hit"), *span.event_names())
    assert catalog.spec("app.db.query.stop") is span
    assert catalog.spec("app.db.query") is None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", "event", "x"), {}, "empty"),
        (("a..b", "event", "x"), {}, "segment 1"),
        (("a.b", "metric", "x"), {}, "'metric'"),
        (("a.b", "event", "  "), {}, "description is empty"),
        (("a.b.stop", "span", "x"), {}, "without 'stop'"),
        (("a.b", "event", "x", {"n": ""}), {}, "key 'n'"),
        (("a.b", "event", "x", None, {"": "x"}), {}, "key ''"),
    ],
)
def test_event_spec_rejects_bad_definitions(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventSpec(*args, **kwargs)


def test_catalog_rejects_specs_outside_the_prefix_and_duplicates() -> None:
    with pytest.raises(ValueError, match=r"other\.x is not under the prefix"):
        Catalog("app", [EventSpec("other.x", "event", "x")])
    with pytest.raises(ValueError, match=r"app\.x\.stop is declared twice"):
        Catalog("app", [EventSpec("app.x", "span", "x"), EventSpec("app.x.stop", "event", "x")])
    with pytest.raises(TypeError, match="not an EventSpec"):
        Catalog("app", ["app.x"])  # type: ignore[list-item]


def test_validate_accepts_an_exact_event() -> None:
    catalog = _catalog()
    assert catalog.validate("app.cache.hit", {"count": 1}, {"node": "a", "key": "k"}) == []


def test_an_event_without_the_common_metadata() -> None:
    spec = EventSpec("app.client.call", "event", "a client calls", {}, {"id": "caller (int)"},
                     common=False)
    catalog = Catalog("app", [spec], common_metadata={"node": "node name (str)"})
    assert catalog.validate("app.client.call", {}, {"id": 1}) == []
    assert catalog.validate("app.client.call", {}, {"id": 1, "node": "a"}) == [
        "app.client.call: undeclared metadata node"]
    assert "`id`: caller (int)<br>(no common metadata)" in catalog.render_markdown()
    assert json.loads(catalog.to_json())["events"][0]["common_metadata"] is False


def test_validate_reports_unknown_events_missing_and_undeclared_keys() -> None:
    catalog = _catalog()
    assert catalog.validate("app.cache.miss", {}, {}) == [
        "app.cache.miss: not declared in the App catalogue"
    ]
    problems = catalog.validate("app.cache.hit", {"count": 1, "bytes": 3}, {"key": "k"})
    assert problems == [
        "app.cache.hit: undeclared measurement bytes",
        "app.cache.hit: missing metadata node",
    ]


def test_validate_knows_the_standard_span_keys() -> None:
    catalog = _catalog()
    meta = {"node": "a", "table": "t", "telemetry_span_context": 1}
    assert catalog.validate("app.db.query.start", {"monotonic_time": 1, "system_time": 2},
                            meta) == []
    assert catalog.validate("app.db.query.stop", {"duration": 1, "monotonic_time": 2, "rows": 3},
                            {**meta, "trace_parent": object()}) == []
    assert catalog.validate("app.db.query.stop", {"duration": 1, "monotonic_time": 2}, meta) == [
        "app.db.query.stop: missing measurement rows"
    ]
    assert catalog.validate("app.db.query.exception", {"duration": 1, "monotonic_time": 2},
                            meta) == ["app.db.query.exception: missing metadata kind, reason, "
                                      "stacktrace"]


def test_check_passes_for_real_spans_and_counts_what_it_saw() -> None:
    catalog = _catalog()
    registry = vsrtel.Registry()
    with catalog.check(registry=registry) as check:
        registry.execute("app.cache.hit", {"count": 1}, {"node": "a", "key": "k"})
        with registry.span("app.db.query", {"node": "a", "table": "t"}) as span:
            span.measurements["rows"] = 2
        with pytest.raises(KeyError), registry.span("app.db.query", {"node": "a", "table": "t"}):
            raise KeyError("boom")
        registry.execute("elsewhere.event", {}, {})  # outside the prefix: ignored
    assert check.problems == []
    assert check.seen[("app", "db", "query", "start")] == 2
    assert check.missing(catalog) == []
    assert registry.list_handlers() == []


def test_check_raises_listing_every_problem() -> None:
    catalog = _catalog()
    registry = vsrtel.Registry()
    with pytest.raises(CatalogViolation) as raised, catalog.check(registry=registry) as check:
        registry.execute("app.cache.hit", {"count": 1}, {"key": "k"})
        registry.execute("app.cache.evict", {}, {"node": "a"})
    assert "2 catalogue problem(s)" in str(raised.value)
    assert "app.cache.hit: missing metadata node" in str(raised.value)
    assert "app.cache.evict: not declared" in str(raised.value)
    assert check.missing(catalog)[0] == ("app", "db", "query", "start")
    assert registry.list_handlers() == []


def test_render_markdown_has_common_metadata_and_one_table_per_group() -> None:
    text = _catalog().render_markdown()
    assert "| `node` | node name (str) |" in text
    assert "### cache" in text and "### db" in text
    assert text.index("### cache") < text.index("### db")
    row = next(line for line in text.splitlines() if line.startswith("| `app.db.query`"))
    assert "| span |" in row
    assert "`rows`: rows returned" in row
    assert "`table`: table name (str)<br>`trace_parent` (optional): remote parent" in row
    assert "a query runs \\| with a pipe" in row


def test_to_json_round_trips_the_declarations() -> None:
    data = json.loads(_catalog().to_json())
    assert data["prefix"] == "app"
    assert data["common_metadata"] == {"node": "node name (str)"}
    query = data["events"][1]
    assert query["name"] == "app.db.query"
    assert query["kind"] == "span"
    assert query["events"] == ["app.db.query.start", "app.db.query.stop", "app.db.query.exception"]
    assert query["optional_metadata"] == {"trace_parent": "remote parent"}
