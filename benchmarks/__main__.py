"""Run every ``benchmarks/bench_*.py`` in one process and print one table.

Usage: ``python -m benchmarks [--quick] [--output PATH]``. Writes ``benchmarks/results.json``.
Where the optional C helper (``vsrtel._speedups``) is built, the same cases then run again in a
child process on the pure-Python fallback (``VSRTEL_PURE_PYTHON=1``), and the table shows both.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks._harness import Case, Target, measure
from vsrtel._views import COMPILED
from vsrtel.cli import Parser


def main() -> int:
    parser = Parser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few short repeats (smoke test)")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    repeats, budget_ns = (3, 2_000_000) if args.quick else (11, 20_000_000)

    cases: list[Case] = []
    targets: list[Target] = []
    modules = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))
    for module_name in sorted(modules, key=lambda m: (m != "bench_core", m)):
        if module_name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{module_name}")
            cases += module.CASES
            targets += module.TARGETS

    rows = {case.name for case in cases}
    for target in targets:  # before the long measurement: a renamed row fails at once
        missing = {target.case, target.baseline or target.case} - rows
        if missing:
            parser.error(f"target {target.label!r} names no row: {', '.join(sorted(missing))}")
    results = measure(cases, repeats=repeats, budget_ns=budget_ns)
    pure = _pure_python_run(args.quick) if COMPILED else None
    width = max(len(c.name) for c in cases)
    floor = results[cases[0].name]
    mode = "compiled helper" if COMPILED else "pure Python"
    header = f"{'case':<{width}}  {'ns/op':>9}  {'x floor':>7}"
    print(header + (f"  {'pure ns':>9}  {'x floor':>7}" if pure else "") + f"   ({mode})")
    for name, ns in results.items():
        row = f"{name:<{width}}  {ns:9.1f}  {ns / floor:7.2f}"
        if pure:
            pure_ns = pure["ns_per_op"][name]
            row += f"  {pure_ns:9.1f}  {pure_ns / pure['ns_per_op'][cases[0].name]:7.2f}"
        print(row)

    print("\n(quick run: targets not judged)" if args.quick else "")
    checked = []
    for target in targets:
        value = results[target.case]
        if target.baseline is not None:
            value /= results[target.baseline]
        met = value <= target.limit
        unit = "x" if target.baseline is not None else " ns"
        # A quick run is a smoke test: too short to judge a target either way.
        verdict = "----" if args.quick else "ok  " if met else "MISS"
        print(f"{verdict} {target.label}: {value:.2f}{unit} (target <= {target.limit}{unit})")
        checked.append({**vars(target), "value": value, "met": met})
    if pure:
        print("\npure-Python fallback, same run:")
        for target in pure["targets"]:
            verdict = "----" if args.quick else "ok  " if target["met"] else "MISS"
            unit = "x" if target["baseline"] is not None else " ns"
            print(f"{verdict} {target['label']}: {target['value']:.2f}{unit}")

    args.output.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "implementation": platform.python_implementation(),
                "machine": platform.machine(),
                "quick": args.quick,
                "compiled": COMPILED,
                "ns_per_op": results,
                "targets": checked,
                "pure_python": pure,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def _pure_python_run(quick: bool) -> dict[str, Any]:
    """The same cases measured in a child process on the pure-Python fallback."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder, "pure.json")
        command = [sys.executable, "-m", "benchmarks", "--output", str(output)]
        env = {**os.environ, "VSRTEL_PURE_PYTHON": "1"}
        subprocess.run([*command, *(["--quick"] if quick else [])], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        result: dict[str, Any] = json.loads(output.read_text())
        return result


if __name__ == "__main__":
    sys.exit(main())
