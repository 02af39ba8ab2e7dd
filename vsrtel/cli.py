"""The ``vsrtel`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import vsrtel


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``vsrtel`` command and its subcommands."""
    parser = _Parser(prog="vsrtel", description="vsrtel: a telemetry event bus with span tracing.")
    parser.add_argument("--version", action="version", version=f"vsrtel {vsrtel.__version__}")
    parser.add_subparsers(dest="command", parser_class=_Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0  # pragma: no cover - every subcommand returns its own status


if __name__ == "__main__":
    sys.exit(main())
