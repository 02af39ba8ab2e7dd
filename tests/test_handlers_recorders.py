"""A metric's handler: its inlined cell updates are the cell shapes' rows, value for value."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsrtel import metrics as m
from vsrtel.handlers import _aggregation, _recorders
from vsrtel.handlers._prometheus_names import tag_check

AGGREGATED = [kind for kind in m.KINDS.values() if kind.cell is not None]
numbers = st.one_of(
    st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
)


def handler(definition: m.Metric) -> tuple[_recorders.Record, _aggregation.Cells]:
    cells = _recorders.cells(definition)
    state = _recorders.State(definition, tag_check(definition.kind), cells, owner=None)  # type: ignore[arg-type]
    return _recorders.recorder(definition, state, None), cells


@pytest.mark.parametrize("kind", AGGREGATED, ids=lambda kind: kind.name)
@pytest.mark.parametrize("tags", [(), ("a",), ("a", "b"), ("a", "b", "c")])
@settings(max_examples=40, deadline=None)
@given(values=st.lists(numbers, min_size=1, max_size=12))
def test_the_inlined_update_of_each_kind_is_its_shapes_record(
    kind: m.MetricKind, tags: tuple[str, ...], values: list[Any]
) -> None:
    definition = m._define(kind, "t.e.v", tags=list(tags))
    record, cells = handler(definition)
    shape = _aggregation.SHAPES[kind.cell]  # type: ignore[index]
    assert cells.shape is shape
    expected = shape.new(cells.bounds)
    stamp = itertools.count().__next__
    metadata = dict.fromkeys(tags, "x")
    for value in values:
        record(("t", "e"), {"v": value}, metadata, None)
        if kind.measured and kind.non_negative and value < 0:
            continue  # skipped and counted, never recorded
        shape.record(expected, value if kind.measured else 1, cells.bounds, stamp)
    totals = cells.totals()
    if totals:
        [total] = totals.values()
        assert total == pytest.approx(expected)
    else:
        assert all(value < 0 for value in values)


def test_every_cell_shape_the_kinds_table_names_exists() -> None:
    named = {kind.cell for kind in m.KINDS.values()} - {None}
    assert named <= set(_aggregation.SHAPES)
