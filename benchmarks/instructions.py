"""Instructions per operation of benchmark rows, counted by valgrind's callgrind.

Usage: ``python -m benchmarks.instructions ROW [ROW ...] [--loops N]``. On a shared machine the
timings of ``python -m benchmarks`` move by tens of percent from run to run; an instruction count
does not, so it is the measure to compare two versions of a hot path (or the pure-Python and
compiled modes: set ``VSRTEL_PURE_PYTHON=1`` for the former). Each row runs in two child
processes under callgrind, ``N`` and ``2 N`` times after the same warm-up; the difference of
their totals divided by ``N`` leaves out start-up, imports and set-up. Needs ``valgrind``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys

import benchmarks
from benchmarks._harness import Case
from vsrtel.cli import Parser

_WARM_UP = 200  # runs before the counted ones: caches filled, bytecode specialised


def main() -> int:
    parser = Parser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("rows", nargs="+", metavar="ROW", help="a row name, as in the table")
    parser.add_argument("--loops", type=int, default=10_000, help="N (default 10,000)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:  # inside callgrind: run the one row, warm-up then N times
        case = _cases()[args.rows[0]]
        case.run(_WARM_UP)
        case.run(args.child)
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    unknown = set(args.rows) - set(_cases())
    if unknown:
        parser.error(f"no such row: {', '.join(sorted(unknown))}")
    width = max(len(row) for row in args.rows)
    for row in args.rows:
        once, twice = (_instructions(row, n) for n in (args.loops, 2 * args.loops))
        print(f"{row:<{width}}  {(twice - once) / args.loops:10.0f} instructions/op", flush=True)
    return 0


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for module in pkgutil.iter_modules(benchmarks.__path__):
        if module.name.startswith("bench_"):
            for case in importlib.import_module(f"benchmarks.{module.name}").CASES:
                cases[case.name] = case
    return cases


def _instructions(row: str, loops: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.instructions", row, "--child", str(loops),
    ]
    # One hash seed for both runs: str hashes decide dict probes, a few instructions per lookup.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind reported no count for {row!r}:\n{done.stderr}")
    return int(found.group(1))


if __name__ == "__main__":
    sys.exit(main())
