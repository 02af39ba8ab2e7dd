"""The ``vsrtel`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import vsrtel


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``vsrtel`` command and its subcommands."""
    parser = _Parser(prog="vsrtel", description="vsrtel: a telemetry event bus with span tracing.")
    parser.add_argument("--version", action="version", version=f"vsrtel {vsrtel.__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="run an instrumented VSR cluster in simulation and report on it",
        description="Run a Viewstamped Replication cluster in deterministic simulation for a few "
        "seconds, with logs (view changes, state transfers), Prometheus metrics and traces "
        "(OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set), then print a report.",
    )
    demo.add_argument("--replicas", type=_odd, default=3, help="cluster size, 2f+1 (default 3)")
    demo.add_argument("--clients", type=_at_least(1), default=4, help="clients (default 4)")
    demo.add_argument("--requests", type=_at_least(0), default=2000,
                      help="requests to commit (default 2000)")
    demo.add_argument("--seed", type=_int, default=None,
                      help="simulation seed; the same seed replays the same run (default: random)")
    demo.add_argument("--faults", choices=("none", "light", "heavy"), default="light",
                      help="network and crash faults (default light)")
    demo.add_argument("--metrics-port", type=_port, default=9464,
                      help="serve Prometheus metrics on 127.0.0.1:PORT while running; 0 = off "
                      "(default 9464)")
    demo.add_argument("--serve", action="store_true",
                      help="keep serving metrics after the run, until Ctrl-C")
    demo.add_argument("--json", action="store_true", help="print the report as one JSON object")
    demo.set_defaults(run=_demo)

    catalog = commands.add_parser("catalog", help="print the VSR event catalogue",
                                  description="Print the VSR event catalogue.")
    catalog.add_argument("--format", choices=("markdown", "json"), default="markdown",
                         help="output format (default markdown)")
    catalog.set_defaults(run=_catalog)

    metrics = commands.add_parser(
        "metrics",
        help="print the recommended VSR metrics with their Prometheus names",
        description="Print vsrtel.vsr.METRICS as a table: Prometheus series, type, unit, labels.",
    )
    metrics.set_defaults(run=_metrics)
    return parser


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _at_least(minimum: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    check.__name__ = f"integer >= {minimum}"
    return check


def _odd(text: str) -> int:
    value = _at_least(1)(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be odd (2f+1 replicas), got {value}")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {value}")
    return value


def _catalog(args: argparse.Namespace) -> int:
    from vsrtel.vsr import CATALOG

    print(CATALOG.to_json() if args.format == "json" else CATALOG.render_markdown())
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from vsrtel.vsr.metrics import render_markdown

    print(render_markdown())
    return 0


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, else once a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            sys.stderr.write(f"\r\033[K{text}" + ("\n" if final else ""))
        elif final or now - self.last >= 1.0:
            sys.stderr.write(text + "\n")
        else:
            return
        self.last = now
        sys.stderr.flush()


def _demo(args: argparse.Namespace) -> int:
    from vsrtel import otel
    from vsrtel.vsr import NO_PROPAGATION, Simulation, render_text
    from vsrtel.vsr import demo as wiring

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    registry = vsrtel.default_registry
    progress = _Progress(not args.json)
    with contextlib.ExitStack() as stack:
        for handler_id in wiring.attach_logs(registry, sys.stderr):
            stack.callback(registry.detach, handler_id)
        server = None
        if args.metrics_port:
            try:
                server, reporter = wiring.serve_metrics(registry, args.metrics_port)
            except OSError as exc:
                print(f"vsrtel demo: error: metrics port {args.metrics_port}: {exc}",
                      file=sys.stderr)
                return 2
            stack.callback(server.close)
            stack.callback(reporter.detach)
            progress.show(f"metrics at {server.url}", final=True)
        propagation = NO_PROPAGATION
        if otel.exports_otlp("traces"):
            setup, tracer_id = wiring.trace_to_otlp(registry)
            stack.callback(setup.shutdown)
            stack.callback(registry.detach, tracer_id)
            propagation = wiring.trace_propagation()
            progress.show("exporting traces to OTLP", final=True)
        sim = stack.enter_context(Simulation(
            seed=seed, requests=args.requests, replicas=args.replicas, clients=args.clients,
            faults=args.faults, registry=registry, propagation=propagation,
            epoch_ns=time.time_ns(),  # exported spans carry today's dates; the run is unchanged
        ))
        _run_paced(sim, progress)
        report = sim.report()
        if args.json:
            print(json.dumps(report))
        else:
            print(render_text(report))
        if args.serve and server is not None:
            progress.show(f"serving metrics at {server.url} until Ctrl-C", final=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0 if report["invariants"] == "ok" else 1


def _run_paced(sim: Any, progress: _Progress) -> None:
    """Run ``sim`` with simulated time following the wall clock (faster if it lags behind)."""
    from vsrtel.vsr import InvariantViolation

    start = time.monotonic()
    finished = False
    while not finished:
        target = int((time.monotonic() - start) * 1e9)
        try:
            finished = sim.run_until(max(target, sim.now + 1))
        except InvariantViolation:
            finished = True
        progress.show(
            f"[{sim.now / 1e9:6.2f} s simulated] {sim.completed}/{sim.requests} requests "
            f"committed, view {max(r.view_number for r in sim.replicas)}, "
            f"{sum(sim.recorder.counts.values()):,} events",
            final=finished,
        )
        if not finished:
            ahead = sim.now / 1e9 - (time.monotonic() - start)
            time.sleep(min(max(ahead, 0.0), 0.05) or 0.001)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
