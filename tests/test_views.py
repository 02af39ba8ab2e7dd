"""The read-only view of a payload: the optional C helper and its pure-Python fallback.

The compiled cases are skipped where ``vsrtel._speedups`` is not built; ``.ci/run`` builds it and
checks that the wheel carries it, and runs the suite again with ``VSRTEL_PURE_PYTHON=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from vsrtel import _views

BUILT = importlib.util.find_spec("vsrtel._speedups") is not None


def _compiled_view() -> Callable[[Any], Any]:
    from vsrtel import _speedups

    return _speedups.view


IMPLEMENTATIONS = [
    pytest.param(lambda: MappingProxyType, id="python"),
    pytest.param(
        _compiled_view,
        id="compiled",
        marks=pytest.mark.skipif(not BUILT, reason="vsrtel._speedups is not built"),
    ),
]


class Config(Mapping[str, int]):
    """A mapping that is not a dict."""

    def __getitem__(self, key: str) -> int:
        if key != "a":
            raise KeyError(key)
        return 1

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_view_is_read_only_and_shows_the_mapping_as_it_is(implementation: Any) -> None:
    view = implementation()
    payload = {"count": 2}
    seen = view(payload)
    assert type(seen) is MappingProxyType
    assert seen == payload and dict(seen) == {"count": 2}
    with pytest.raises(TypeError):
        seen["count"] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        del seen["count"]  # type: ignore[attr-defined]
    payload["more"] = 1  # a view, not a copy
    assert seen == {"count": 2, "more": 1}
    for mapping in (Config(), OrderedDict(b=2), MappingProxyType({"c": 3})):
        assert view(mapping) == mapping


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad", [1, 2.5, None, [("a", 1)], ("a",), {"a"}, object()])
def test_a_non_mapping_is_rejected_as_types_mappingproxytype_rejects_it(
    implementation: Any, bad: object
) -> None:
    with pytest.raises(TypeError) as expected:
        MappingProxyType(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as got:
        implementation()(bad)
    assert str(got.value) == str(expected.value)
    assert type(bad).__name__ in str(got.value)


def _in_subprocess(code: str, pure_python: str | None) -> Any:
    env = dict(os.environ)
    env.pop("VSRTEL_PURE_PYTHON", None)
    if pure_python is not None:
        env["VSRTEL_PURE_PYTHON"] = pure_python
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


CHOICE = """
import json, types
from vsrtel import _views
print(json.dumps([_views.COMPILED, _views.view is types.MappingProxyType]))
"""


@pytest.mark.parametrize(
    ("pure_python", "compiled"),
    [(None, BUILT), ("", BUILT), ("0", BUILT), ("1", False), ("yes", False)],
)
def test_vsrtel_pure_python_forces_the_fallback(pure_python: str | None, compiled: bool) -> None:
    assert _in_subprocess(CHOICE, pure_python) == [compiled, not compiled]


def test_this_process_uses_the_helper_unless_told_not_to() -> None:
    forced = os.environ.get("VSRTEL_PURE_PYTHON", "") not in ("", "0")
    assert _views.COMPILED is (BUILT and not forced)
    assert (_views.view is MappingProxyType) is not _views.COMPILED


HANDLER_SEES = """
import json, vsrtel
registry, seen = vsrtel.Registry(), []
def handler(name, measurements, metadata, config):
    for payload in (measurements, metadata):
        try:
            payload["x"] = 1
            seen.append("written")
        except TypeError:
            seen.append(type(payload).__name__ + " " + json.dumps(dict(payload)))
registry.attach("h", "a.b", handler)
registry.execute("a.b", {"count": 2}, {"node": 1})
registry.execute("a.b", {"count": 3})
print(json.dumps(seen))
"""


@pytest.mark.parametrize("pure_python", [None, "1"])
def test_handlers_get_read_only_views_in_both_modes(pure_python: str | None) -> None:
    assert _in_subprocess(HANDLER_SEES, pure_python) == [
        'mappingproxy {"count": 2}',
        'mappingproxy {"node": 1}',
        'mappingproxy {"count": 3}',
        "mappingproxy {}",
    ]
