"""The Prometheus text renderer of vsrtel's cells: numbers, odd series, both formats.

The endpoint's tests hold its output byte for byte to OpenTelemetry's exporter; these hold the
renderer's paths that real traffic reaches rarely (counts past a million, negative bounds,
unusual numbers) to prometheus_client's formatting of the same families.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess

import pytest
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from vsrtel.export._text import Renderer, number
from vsrtel.handlers._aggregation import BUCKETS, LAST, TOTAL, Cells, Export, Series


class Families:
    def __init__(self, families: list[object]) -> None:
        self.families = families

    def collect(self) -> list[object]:
        return self.families


def test_numbers_are_spelled_as_prometheus_client_spells_them() -> None:
    rng = random.Random(19)
    values: list[object] = [
        0, 1, -1, 999_999, 1_000_000, 1_234_567, -1_234_567, 10**15, -(10**15), 10**16,
        2**53 + 1, 10**20, True, False, 0.0, -0.0, 0.1, 1e-9, 5e-324, 1e6, 1234567.0,
        123456.7, 1.5e300, -2.5e20, float("inf"), float("-inf"), float("nan"),
    ]
    values += [rng.uniform(-1e9, 1e9) for _ in range(500)]
    values += [rng.randrange(-10**18, 10**18) for _ in range(500)]
    values += [10.0 ** rng.randrange(-30, 30) * rng.random() for _ in range(500)]
    for value in values:
        assert number(value) == floatToGoString(value), value


def export(name: str, shape: object, bounds: tuple[float, ...] = (), *,
           monotonic: bool = True, unit: str = "", description: str = "Some help.") -> Export:
    return Export(name, description, unit, Cells(shape, bounds), monotonic)  # type: ignore[arg-type]


def both_ways(read: list[tuple[Export, dict[Series, list[object]]]],
              renderer: Renderer) -> None:
    """The renderer's text is prometheus_client's formatting of the renderer's families, in both
    formats, and both parsers and promtool take it."""
    families = Families(renderer.families(read))
    texts, left = renderer.render(read)
    assert left == []
    text = "".join(texts)
    assert text.encode() == generate_latest(families)  # type: ignore[arg-type]
    openmetrics = "".join(renderer.render(read, openmetrics=True)[0])
    assert (openmetrics + "# EOF\n").encode() == om_exposition.generate_latest(families)
    assert list(text_string_to_metric_families(text))
    assert list(om_families(openmetrics + "# EOF\n"))
    promtool = shutil.which("promtool")
    if promtool is not None:
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_counts_past_a_million_negative_bounds_and_odd_values() -> None:
    big = Series({"route": "/a"})
    small = Series({"route": 'quote " back \\ new\nline % %d.0 %s'})
    bare = Series({})
    odd = Series({"ünï.code": "naïve", "7up": "x"})
    read: list[tuple[Export, dict[Series, list[object]]]] = [
        (export("app.req.duration", BUCKETS, (0.005, 0.1, 1.0, 2.5), unit="s",
                description='help with \\ and\nnewline and "quotes"'), {
            big: [999_999, 1, 5_000_000, 0, 0, 123456.75, 0.001, 3.0],
            small: [1, 2, 3, 4, 5, 7.25, 0.001, 3.0],
            bare: [0, 0, 0, 0, 0, 0, math.inf, -math.inf],
            odd: [1.0, 2.0, 2.0, 0, 0, 1e300, 0.0, 1.0],  # float counts, as a merge may give
        }),
        (export("app.temp.delta", BUCKETS, (-10.0, 0.0, 10.0)), {  # no _count nor _sum
            bare: [1, 2, 3, 4, -3.5, -20.0, 20.0],
        }),
        (export("app.bytes.sent", TOTAL, unit="By"), {
            big: [10**20], small: [1_234_567], bare: [0.1], odd: [float("inf")],
        }),
        (export("app.queue.depth", TOTAL, monotonic=False), {
            big: [-5], small: [-1e-300], bare: [float("nan")],
        }),
        (export("app.queue.last", LAST, unit="1"), {big: [2.5e20, 3], bare: [-0.0, 1]}),
        (export("app.empty.count", TOTAL), {}),  # no series: no family
    ]
    both_ways(read, Renderer())
    both_ways(read, Renderer(scope=InstrumentationScope("my.scope", "1.2", "https://s")))


def test_a_family_gaining_a_label_rewrites_every_series_text() -> None:
    renderer = Renderer()
    first, second = Series({"a": "1"}), Series({"b": "2"})
    counter = export("app.x.count", TOTAL)
    [text], _ = renderer.render([(counter, {first: [1]})])
    assert 'app_x_count_total{a="1"} 1.0' in text.splitlines()
    [text], _ = renderer.render([(counter, {first: [1], second: [2]})])
    assert 'app_x_count_total{a="1",b=""} 1.0' in text.splitlines()
    assert 'app_x_count_total{a="",b="2"} 2.0' in text.splitlines()


def test_names_escaping_would_change_are_left_to_prometheus_client() -> None:
    renderer = Renderer()
    colon = export("app:x.count", TOTAL)
    assert renderer.render([(colon, {Series({}): [1]})]) == ([], [colon])


@pytest.mark.parametrize("shape", [TOTAL, LAST, BUCKETS])
def test_skip_leaves_a_family_out(shape: object) -> None:
    made = export("app.y.n", shape, (1.0,))
    total = {TOTAL: [1], LAST: [1, 0], BUCKETS: [1, 0, 0.5, 0.5, 0.5]}[shape]  # type: ignore[index]
    renderer = Renderer()
    name = renderer.name(made)
    assert renderer.render([(made, {Series({}): total})], skip={name}) == ([], [])
    assert renderer.families([(made, {Series({}): total})], skip={name}) == []
