"""Metric definitions: the kinds table, names, options, units, buckets and tag normalisers."""

from __future__ import annotations

import enum
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsrtel import metrics as m

segment = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
names = st.lists(segment, min_size=2, max_size=6)

# ----------------------------------------------------------------------------- definitions


@given(names)
def test_name_splits_into_event_and_measurement(parts: list[str]) -> None:
    for name in (".".join(parts), tuple(parts)):
        d = m.sum(name)
        assert d.name == ".".join(parts)
        assert d.event_name == tuple(parts[:-1])
        assert d.measurement == parts[-1]


@given(names, names)
def test_event_name_override_keeps_the_whole_name_as_metric_name(
    parts: list[str], event: list[str]
) -> None:
    d = m.counter(".".join(parts), event_name=".".join(event))
    assert d.event_name == tuple(event)
    assert d.name == ".".join(parts)
    assert d.measurement == parts[-1]


def test_one_segment_name_needs_event_name() -> None:
    with pytest.raises(ValueError, match=r"'requests'.*event_name"):
        m.counter("requests")
    d = m.counter("requests", event_name="http.request.stop")
    assert d.event_name == ("http", "request", "stop")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", ValueError),
        ((), ValueError),
        ("a..b", ValueError),
        (("a", ""), ValueError),
        (("a", 3), TypeError),
        (42, TypeError),
        ("1abc.def", ValueError),  # not a valid OTel instrument name
        ("a.b c", ValueError),
    ],
)
def test_bad_names_raise_at_definition(name: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        m.counter(name)


@pytest.mark.parametrize("kind", [m.counter, m.sum, m.last_value, m.summary, m.distribution])
def test_every_constructor_validates_the_same_options(kind: Any) -> None:
    with pytest.raises(ValueError, match="unknown unit 'secnd'"):
        kind("a.b", unit="secnd")
    with pytest.raises(ValueError, match="either keep or drop"):
        kind("a.b", keep=lambda md: True, drop=lambda md: False)
    with pytest.raises(ValueError, match="reporter option 'max_serie'"):
        kind("a.b", reporter_options={"max_serie": 1})
    with pytest.raises(TypeError, match="tags"):
        kind("a.b", tags="reason")
    with pytest.raises(ValueError, match="duplicate tag"):
        kind("a.b", tags=["x", "x"])
    with pytest.raises(ValueError, match="max_series"):
        kind("a.b", reporter_options={"max_series": 0})
    d = kind("a.b", description="explicit")
    assert d.description == "explicit"
    assert kind("a.b").description  # a default help text (promtool wants one)


@pytest.mark.parametrize(
    ("unit", "suggestion"),
    [
        ("secnd", "second"),
        ("milisecond", "millisecond"),
        ("Second", "second"),
        (("native", "secnds"), "second"),
        (("bytse", "kilobyte"), "byte"),
    ],
)
def test_a_unit_typo_suggests_the_closest_unit(unit: Any, suggestion: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"did you mean {suggestion!r}?")):
        m.distribution("a.b", unit=unit)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        (("native", "parsec"), "cannot convert 'native' to 'parsec': 'parsec' is not a unit"),
        (("furlong", "second"), "'furlong' is not a unit vsrtel converts"),
        (("byte", "second"), "cannot convert 'byte'"),
        (("native",), "unit must be"),
        (5, "unit must be"),
        ("", "unit must not be empty"),
        (("each", 1), "unit 1 in conversion"),
    ],
)
def test_bad_units(unit: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        m.sum("a.b", unit=unit)


def test_bucket_and_option_validation() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        m.distribution("a.b", reporter_options={"buckets": [1, 1, 2]})
    with pytest.raises(ValueError, match="finite"):
        m.distribution("a.b", reporter_options={"buckets": [1, math.inf]})
    with pytest.raises(ValueError, match="buckets"):
        m.distribution("a.b", reporter_options={"buckets": []})
    with pytest.raises(ValueError, match="'buckets' does not apply to sum"):
        m.sum("a.b", reporter_options={"buckets": [1]})
    with pytest.raises(ValueError, match="monotonic"):
        m.sum("a.b", reporter_options={"monotonic": "no"})
    with pytest.raises(ValueError, match="max_scale"):
        m.summary("a.b", reporter_options={"max_scale": 99})
    with pytest.raises(ValueError, match="max_size"):
        m.summary("a.b", reporter_options={"max_size": 1})
    d = m.distribution("a.b", reporter_options={"buckets": [1, 2.5, 10]})
    assert m.buckets_for(d) == (1.0, 2.5, 10.0)


def test_callables_with_wrong_arity_are_rejected() -> None:
    with pytest.raises(ValueError, match="measurement"):
        m.sum("a.b", measurement=lambda: 1)
    with pytest.raises(ValueError, match="keep"):
        m.sum("a.b", keep=lambda a, b, c: True)
    with pytest.raises(TypeError, match="drop must be callable"):
        m.sum("a.b", drop=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tag_values"):
        m.sum("a.b", tag_values=lambda a, b: a)


@pytest.mark.parametrize(
    ("unit", "factor", "export"),
    [
        (None, 1, ""),
        ("native", 1e-9, "s"),  # native time is exported in base units
        ("second", 1, "s"),
        ("millisecond", 1, "ms"),
        ("byte", 1, "By"),
        ("1", 1, "1"),
        (("native", "second"), 1e-9, "s"),
        (("native", "millisecond"), 1e-6, "ms"),
        (("native", "microsecond"), 1e-3, "us"),
        (("byte", "kilobyte"), 1e-3, "KBy"),
        (("byte", "megabyte"), 1e-6, "MBy"),
        (("second", "millisecond"), 1e3, "ms"),
    ],
)
def test_unit_resolution(unit: Any, factor: float, export: str) -> None:
    d = m.distribution("a.b", unit=unit)
    assert d.factor == pytest.approx(factor)
    assert d.export_unit == export


time_units = st.sampled_from(["native", "nanosecond", "microsecond", "millisecond", "second"])
target_time_units = st.sampled_from(["nanosecond", "microsecond", "millisecond", "second"])


@given(time_units, target_time_units, target_time_units)
def test_conversions_compose(a: str, b: str, c: str) -> None:
    ab = m.sum("a.b", unit=(a, b)).factor
    bc = m.sum("a.b", unit=(b, c)).factor
    ac = m.sum("a.b", unit=(a, c)).factor
    assert ab * bc == pytest.approx(ac)
    assert m.sum("a.b", unit=(a, c)).export_unit == m.sum("a.b", unit=c).export_unit


def test_counter_ignores_units() -> None:
    d = m.counter("a.b", unit=("native", "second"))
    assert d.factor == 1 and d.export_unit == "{event}"


def test_default_buckets_follow_the_unit() -> None:
    sec = m.buckets_for(m.distribution("a.b", unit=("native", "second")))
    ms = m.buckets_for(m.distribution("a.b", unit=("native", "millisecond")))
    assert sec[0] == 0.0005 and sec[-1] == 10.0
    assert ms == tuple(pytest.approx(b * 1000) for b in sec)
    assert m.buckets_for(m.distribution("a.b", unit="byte"))[0] == 64.0
    assert m.buckets_for(m.distribution("a.b"))[:3] == (0.0, 5.0, 10.0)


# ----------------------------------------------------------------------------- normalisers


class Color(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("timeout", "timeout"),
        (Color.RED, "RED"),
        (TimeoutError("slow"), "TimeoutError"),
        (KeyError, "KeyError"),
        (("timeout", {"after": 5}), "timeout"),
        ((Color.RED, "detail"), "RED"),
        ((1, 2), "other"),
        (None, "other"),
        (42, "other"),
        (("a", "b", "c"), "other"),
    ],
)
def test_normalize_reason(reason: Any, expected: str) -> None:
    assert m.normalize_reason(reason) == expected


@given(st.integers(100, 599))
def test_status_class_of_valid_codes(code: int) -> None:
    assert m.status_class(code) == f"{code // 100}xx"
    assert m.status_class(str(code)) == f"{code // 100}xx"


@pytest.mark.parametrize("code", [99, 600, -1, "abc", None, 2.5, True])
def test_status_class_other(code: Any) -> None:
    assert m.status_class(code) == "other"


@given(st.sets(st.text(max_size=5), max_size=5), st.text(max_size=5))
def test_bounded(values: set[str], probe: str) -> None:
    norm = m.bounded(values, other="<other>")
    assert norm(probe) == (probe if probe in values else "<other>")
    assert norm(["unhashable"]) == "<other>"




# ----------------------------------------------------------------------------- the kinds table


def test_every_kind_is_one_row_with_a_constructor_of_its_name() -> None:
    for name, kind in m.KINDS.items():
        assert kind.name == name and name in m.__all__
        assert getattr(m, name)("a.b").kind is kind


def test_one_name_for_a_metric_kind() -> None:
    from vsrtel import catalog

    assert not hasattr(m, "MetricType") and not hasattr(m, "Kind")
    assert not hasattr(m.counter("a.b"), "type")
    assert not hasattr(catalog, "Kind") and "EventKind" in catalog.__all__


@pytest.mark.parametrize(
    ("definition", "monotonic", "non_negative", "prometheus_type"),
    [
        (m.counter("a.b"), True, True, "counter"),
        (m.sum("a.b"), True, True, "counter"),
        (m.sum("a.b", reporter_options={"monotonic": True}), True, True, "counter"),
        (m.sum("a.b", reporter_options={"monotonic": False}), False, False, "gauge"),
        (m.last_value("a.b"), False, False, "gauge"),
        (m.distribution("a.b"), False, True, "histogram"),
        (m.summary("a.b"), False, True, "histogram"),
    ],
)
def test_a_definition_carries_its_kinds_facts(
    definition: m.Metric, monotonic: bool, non_negative: bool, prometheus_type: str
) -> None:
    assert definition.kind.monotonic is monotonic
    assert definition.kind.non_negative is non_negative
    assert definition.kind.prometheus_type == prometheus_type


def test_a_sum_that_may_go_down_is_its_row_going_down() -> None:
    down = m.sum("a.b", reporter_options={"monotonic": False}).kind
    assert down == m.KINDS["sum"].going_down()
    assert down.name == "sum" and down.instrument == "create_up_down_counter"
    assert m.KINDS["sum"].monotonic  # the table's row is unchanged


def test_a_definition_keeps_its_callables_in_their_normalised_form() -> None:
    d = m.sum("a.b", measurement=lambda ms: ms["x"] * 2, keep=lambda md: md["ok"])
    assert d.measure is not None and d.measure({"x": 2}, {}) == 4
    assert d.accepts is not None and d.accepts({"ok": 0}, {}) is False
    two = m.sum("a.b", measurement=lambda ms, md: md["y"], drop=lambda md, ms: ms["x"] > 1)
    assert two.measure is not None and two.measure({}, {"y": 7}) == 7
    assert two.accepts is not None and two.accepts({}, {"x": 2}) is False
    assert m.sum("a.b").measure is None and m.sum("a.b").accepts is None


# ----------------------------------------------------------------------------- as the peers do


def test_reporter_options_vsrtel_does_not_read_are_kept_as_given() -> None:
    # Telemetry.Metrics keeps reporter_options for whichever reporter reads them.
    d = m.sum("a.b.c", reporter_options={"sample_rate": 0.1})
    assert d.reporter_options == {"sample_rate": 0.1}
    both = m.distribution("a.b", reporter_options={"buckets": [1, 2], "prefix": "x"})
    assert both.reporter_options == {"buckets": (1.0, 2.0), "prefix": "x"}
    assert m.buckets_for(both) == (1.0, 2.0)


def test_vsrtels_own_reporter_options_are_still_checked() -> None:
    with pytest.raises(ValueError, match="'buckets' does not apply to counter"):
        m.counter("a.b", reporter_options={"buckets": [1]})
    with pytest.raises(ValueError, match=re.escape("did you mean 'max_series'?")):
        m.counter("a.b", reporter_options={"max_serie": 10})
    with pytest.raises(TypeError, match="reporter_options must be a mapping"):
        m.counter("a.b", reporter_options=[("max_series", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("unit", "factor", "export"),
    [
        (("second", "native"), 1e9, "ns"),
        (("millisecond", "native"), 1e6, "ns"),
        (("native", "native"), 1, "ns"),
        (("nanosecond", "native"), 1, "ns"),
    ],
)
def test_native_is_a_unit_to_convert_into(unit: Any, factor: float, export: str) -> None:
    d = m.distribution("a.b", unit=unit)
    assert d.factor == pytest.approx(factor) and d.export_unit == export


@pytest.mark.parametrize(
    ("unit", "factor", "export"),
    [
        ("each", 1, "each"),
        ("{request}", 1, "{request}"),
        ("byte/s", 1, "byte/s"),
        ("sec", 1, "sec"),
        (("each", "each"), 1, "each"),
        # Plurals of the units vsrtel knows are those units.
        ("bytes", 1, "By"),
        ("seconds", 1, "s"),
        (("bytes", "kilobytes"), 1e-3, "KBy"),
        (("native", "seconds"), 1e-9, "s"),
    ],
)
def test_any_unit_name_is_accepted(unit: Any, factor: float, export: str) -> None:
    d = m.sum("a.b", unit=unit)
    assert d.factor == pytest.approx(factor) and d.export_unit == export
    assert d.unit == unit


@given(
    st.sampled_from(["native", "nanosecond", "microsecond", "millisecond", "second"]),
    st.sampled_from(["native", "nanosecond", "microsecond", "millisecond", "second"]),
)
def test_a_conversion_into_native_and_back_is_none(a: str, b: str) -> None:
    there = m.sum("a.b", unit=(a, "native")).factor
    back = m.sum("a.b", unit=("native", b)).factor
    assert there * back == pytest.approx(m.sum("a.b", unit=(a, b)).factor)
