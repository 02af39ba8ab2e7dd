"""Run every ``benchmarks/bench_*.py`` in one process and print one table.

Usage: ``python -m benchmarks [--quick] [--output PATH]``. Writes ``benchmarks/results.json``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
from pathlib import Path

import benchmarks
from benchmarks._harness import Case, Target, measure
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

    results = measure(cases, repeats=repeats, budget_ns=budget_ns)
    width = max(len(c.name) for c in cases)
    floor = results[cases[0].name]
    print(f"{'case':<{width}}  {'ns/op':>9}  {'x floor':>7}")
    for name, ns in results.items():
        print(f"{name:<{width}}  {ns:9.1f}  {ns / floor:7.2f}")

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

    args.output.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "implementation": platform.python_implementation(),
                "machine": platform.machine(),
                "quick": args.quick,
                "ns_per_op": results,
                "targets": checked,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
