from __future__ import annotations

import inspect
import subprocess
import sys

import vsrtel


def test_all_lists_every_public_name_and_each_has_a_docstring() -> None:
    public = {n for n in vars(vsrtel) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if inspect.ismodule(getattr(vsrtel, n))}
    assert set(vsrtel.__all__) == (public - modules) | {"__version__"}
    for name in vsrtel.__all__:
        obj = getattr(vsrtel, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


def test_importing_vsrtel_does_not_import_handlers_or_opentelemetry() -> None:
    heavy = ("opentelemetry", "structlog", "vsrtel.handlers")
    code = f"import sys, vsrtel; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
