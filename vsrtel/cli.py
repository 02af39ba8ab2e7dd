"""The ``vsrtel`` command line."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO, cast

import vsrtel

__all__ = ["Parser", "build_parser", "main"]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# The domains whose catalogue and recommended metrics ship with vsrtel.
_DOMAINS = ("vsr", "web")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``vsrtel`` command and its subcommands."""
    parser = Parser(prog="vsrtel", description="vsrtel: a telemetry event bus with span tracing.")
    parser.add_argument("--version", action="version", version=f"vsrtel {vsrtel.__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)

    demo = commands.add_parser(
        "demo",
        help="run an instrumented VSR cluster in simulation and report on it",
        description="Run a Viewstamped Replication cluster in deterministic simulation for a few "
        "seconds, with logs (view changes, state transfers), Prometheus metrics and the live "
        "dashboard while it runs, and traces, metrics and log records exported as the OTEL_* "
        "variables say (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER "
        "and OTEL_LOGS_EXPORTER: otlp, console (printed to stderr) or none), then print a report "
        "on stdout. Ctrl-C stops it and prints the report so far. See docs/vsr.md.",
    )
    demo.add_argument("--replicas", type=_odd, default=3, help="cluster size, 2f+1 (default 3)")
    _cluster_arguments(demo, replicas=False, clients=4, requests=2000, faults="light")
    demo.add_argument("--seed", type=_int, default=None,
                      help="simulation seed; the same seed replays the same run (default: random)")
    demo.add_argument("--no-pace", "--fast", dest="pace", action="store_false",
                      help="run as fast as the CPU allows instead of pacing simulated time to "
                      "the wall clock")
    endpoint = demo.add_mutually_exclusive_group()
    endpoint.add_argument("--metrics-port", type=_port, default=9464,
                          help="serve Prometheus metrics on 127.0.0.1:PORT while running; "
                          "0 = any free port (default 9464)")
    endpoint.add_argument("--no-metrics", dest="metrics", action="store_false",
                          help="do not serve Prometheus metrics")
    demo.add_argument("--serve", action="store_true",
                      help="keep serving metrics and the dashboard after the run, until Ctrl-C")
    demo.add_argument("--json", action="store_true", help="print the report as one JSON object")
    demo.add_argument("--log-level", type=_level, default=None, metavar="LEVEL",
                      help="show what is logged at LEVEL or above on stderr: debug (each step "
                      "of a view change or state transfer), info (their start and end, the "
                      "progress line; the default), warning, error or critical")
    demo.add_argument("-q", "--quiet", action="store_true",
                      help="warnings and errors only, the same as --log-level warning")
    demo.set_defaults(run=_demo, parser=demo)

    sweep = commands.add_parser(
        "sweep",
        help="simulate many seeds under a fault profile; print each failure with its seed",
        description="Run the VSR simulation for seeds FIRST..FIRST+N-1 on each cluster size and "
        "print every invariant violation (safety), liveness failure and crash, each with the "
        "command that replays it. Exit status 1 if any run failed; when the reader of stdout "
        "goes away (| head), the sweep stops with the status of the runs done so far. See "
        "docs/vsr.md.",
    )
    _cluster_arguments(sweep, replicas=True, clients=3, requests=200, faults="heavy")
    sweep.add_argument("--seeds", type=_at_least(1), default=100,
                       help="how many seeds (default 100)")
    sweep.add_argument("--first-seed", type=_int, default=0, help="the first seed (default 0)")
    sweep.add_argument("--jobs", type=_at_least(1), default=1,
                       help="runs in parallel, one process each (default 1)")
    sweep.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    sweep.set_defaults(run=_sweep, parser=sweep)

    catalog = commands.add_parser(
        "catalog", help="print an event catalogue (VSR, or web: the HTTP events)",
        description="Print an event catalogue: vsr (vsrtel.vsr.CATALOG, the default) or web "
        "(vsrtel.web.CATALOG, the HTTP events of the middleware and the httpx transports).")
    catalog.add_argument("domain", nargs="?", choices=_DOMAINS, default="vsr",
                         help="whose catalogue (default vsr)")
    catalog.add_argument("--format", choices=("markdown", "json"), default="markdown",
                         help="output format (default markdown)")
    catalog.set_defaults(run=_catalog, parser=catalog)

    metrics = commands.add_parser(
        "metrics",
        help="print recommended metrics (VSR, or web) with their Prometheus names",
        description="Print vsrtel.vsr.METRICS (or, for web, vsrtel.web.METRICS) as a table: "
        "Prometheus series, type, unit, labels.",
    )
    metrics.add_argument("domain", nargs="?", choices=_DOMAINS, default="vsr",
                         help="whose metrics (default vsr)")
    metrics.set_defaults(run=_metrics, parser=metrics)

    serve_dir = commands.add_parser(
        "serve-dir",
        help="serve the merged metrics of a multi-process directory (gunicorn, uvicorn workers)",
        description="Serve GET /metrics (and /health, and the dashboard on /) with the merged "
        "series of every worker process writing into DIRECTORY (multi-process mode: "
        "VSRTEL_MULTIPROC_DIR), until Ctrl-C; for a sidecar or a server's master process. "
        "See docs/multiprocess.md.",
    )
    serve_dir.add_argument("directory", nargs="?", default=None,
                           help="the directory (default: $VSRTEL_MULTIPROC_DIR)")
    serve_dir.add_argument("--port", type=_port, default=9464,
                           help="port to serve on; 0 = any free port (default 9464)")
    serve_dir.add_argument("--host", default="127.0.0.1",
                           help="address to bind (default 127.0.0.1: this machine only)")
    serve_dir.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                           help="serve /metrics and /health only")
    serve_dir.set_defaults(run=_serve_dir, parser=serve_dir)
    return parser


def _cluster_arguments(
    parser: argparse.ArgumentParser, *, replicas: bool, clients: int, requests: int, faults: str
) -> None:
    if replicas:
        parser.add_argument("--replicas", type=_odd, nargs="+", default=[3], metavar="N",
                            help="cluster sizes, 2f+1; every seed runs on each (default 3)")
    parser.add_argument("--clients", type=_at_least(1), default=clients,
                        help=f"clients (default {clients})")
    parser.add_argument("--requests", type=_at_least(0), default=requests,
                        help=f"requests to commit (default {requests})")
    parser.add_argument("--faults", type=_faults, default=faults, metavar="PROFILE",
                        help="fault profile: none, light, heavy or extreme, optionally followed "
                        "by knobs to override, e.g. heavy,loss=0.2,partition_size=2 (see "
                        f"\"Fault profiles\" in docs/vsr.md; default {faults})")


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
    from vsrtel.export.prometheus import check_port

    try:
        return check_port(_int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _level(text: str) -> int:
    from vsrtel.vsr.demo import log_level

    try:
        return log_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _faults(text: str) -> str:
    from vsrtel.vsr import FaultProfile

    try:
        FaultProfile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _catalog(args: argparse.Namespace) -> int:
    if args.domain == "web":
        from vsrtel.web import CATALOG
    else:
        from vsrtel.vsr import CATALOG

    print(CATALOG.to_json() if args.format == "json" else CATALOG.render_markdown())
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from vsrtel.vsr.recommended import render_markdown

    if args.domain == "web":
        from vsrtel.web.recommended import METRICS

        print(render_markdown(METRICS))
    else:
        print(render_markdown())
    return 0


def _serve_dir(args: argparse.Namespace) -> int:
    from vsrtel.export.multiprocess import serve_directory
    from vsrtel.handlers._shared import ENV

    try:
        server = serve_directory(
            args.directory, args.port, args.host, dashboard=args.dashboard
        )
    except (ValueError, OSError) as exc:
        args.parser.error(str(exc))
    with server:
        directory = os.path.abspath(args.directory or os.environ.get(ENV, ""))
        print(f"serving the merged metrics of {directory} on {server.url}"
              + (f" (dashboard: {server.dashboard_url})" if server.dashboard_url else ""),
              flush=True)
        threading.Event().wait()  # until Ctrl-C
    return 0  # pragma: no cover - the wait above ends by KeyboardInterrupt only


class _Progress:
    """One status line on stderr: rewritten in place on a terminal, else once a second.

    On a terminal, whatever else goes to the screen meanwhile must first :meth:`clear` the line
    (``log_stream`` does it for a logger), or it lands on the end of the status line; the next
    :meth:`show` draws the line again.
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0
        self.drawn = False  # a status line is on the screen, not ended by a newline
        # Console exporters write from their own threads, between two updates of the line.
        self.lock = threading.RLock()

    def show(self, text: str, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 1.0):
            return
        with self.lock:
            if self.tty:
                self.stream.write(f"\r\033[K{text}" + ("\n" if final else ""))
                self.drawn = not final
            else:
                self.stream.write(text + "\n")
            self.last = now
            self.stream.flush()

    def clear(self) -> None:
        """Erase the status line, so that the next output starts on an empty line."""
        with self.lock:
            if self.drawn:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self.drawn = False

    def log_stream(self) -> TextIO:
        """A stream writing to the same place, clearing the status line first."""
        return cast(TextIO, _ClearingStream(self))


class _ClearingStream(io.TextIOBase):
    def __init__(self, progress: _Progress) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        with self.progress.lock:
            self.progress.clear()
            return self.progress.stream.write(text)

    def flush(self) -> None:
        self.progress.stream.flush()


def _demo(args: argparse.Namespace) -> int:
    from vsrtel.vsr import Simulation, render_text
    from vsrtel.vsr import demo as wiring

    if args.serve and not args.metrics:
        args.parser.error("--serve keeps the metrics endpoint up: it cannot go with --no-metrics")
    if args.quiet and args.log_level is not None:
        args.parser.error("--quiet is --log-level warning: it cannot go with --log-level")
    level = logging.WARNING if args.quiet else args.log_level or logging.INFO
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    registry = vsrtel.default_registry
    # The progress line and the announcements are info: --quiet (or a higher level) drops them.
    progress = _Progress(not args.json and level <= logging.INFO)
    with contextlib.ExitStack() as stack:
        for handler_id in wiring.attach_logs(registry, progress.log_stream(), level):
            stack.callback(registry.detach, handler_id)
        server = None
        if args.metrics:
            try:
                server, reporter = wiring.serve_metrics(registry, args.metrics_port)
            except OSError as exc:
                print(f"vsrtel demo: error: metrics port {args.metrics_port}: {exc}",
                      file=sys.stderr)
                return 2
            stack.callback(server.close)
            stack.callback(reporter.detach)
            progress.show(f"metrics at {server.url}, dashboard at {server.dashboard_url}",
                          final=True)
        before_report, propagation = _export(stack, registry, progress,
                                             show_warnings=level <= logging.WARNING)
        sim = stack.enter_context(Simulation(
            seed=seed, requests=args.requests, replicas=args.replicas, clients=args.clients,
            faults=args.faults, registry=registry, propagation=propagation,
            epoch_ns=time.time_ns(),  # exported spans carry today's dates; the run is unchanged
        ))
        interrupted = False
        try:
            _run(sim, progress, paced=args.pace)
        except KeyboardInterrupt:
            interrupted = True
            progress.clear()
            print(f"vsrtel demo: interrupted at {sim.now / 1e9:.3f} s simulated; the report so "
                  "far:", file=sys.stderr)
        report = sim.report()
        before_report()
        try:
            print(json.dumps(report) if args.json else render_text(report), flush=True)
        except BrokenPipeError:
            _stdout_gone()  # the reader went away: the run's status still stands
        if args.serve and server is not None and not interrupted:
            with contextlib.suppress(KeyboardInterrupt):
                # Announced inside: a Ctrl-C answering the line must land in this block.
                progress.show(f"serving metrics at {server.url} and the dashboard at "
                              f"{server.dashboard_url} until Ctrl-C", final=True)
                while True:
                    time.sleep(3600)
    if interrupted:
        return 130
    return 0 if report["invariants"] == "ok" else 1


_EXPORTED_TO = {"otlp": "OTLP", "console": "the console (stderr)"}


def _export(
    stack: contextlib.ExitStack, registry: vsrtel.Registry, progress: _Progress, *,
    show_warnings: bool,
) -> tuple[Callable[[], object], Any]:
    """Export traces and metrics as the ``OTEL_*`` variables say (OTLP, console, none).

    Returns what to call before the report (it flushes what the console exporters still hold,
    so that the report comes last) and the simulation's trace propagation.
    """
    from vsrtel.export import otel
    from vsrtel.vsr import NO_PROPAGATION
    from vsrtel.vsr import demo as wiring

    chosen = {
        signal: set(otel.env_exporters(signal)) for signal in ("traces", "metrics", "logs")
    }
    otlp_signals = [signal for signal, names in chosen.items() if "otlp" in names]
    if otlp_signals and not wiring.otlp_exporter_installed():
        if show_warnings:
            print("vsrtel demo: OTLP export is configured but its exporter is not installed "
                  f"(pip install 'vsrtel[otlp]'): {_listed(otlp_signals)} are not exported "
                  "over OTLP", file=sys.stderr)
        for signal in otlp_signals:
            chosen[signal].discard("otlp")
    signals = [signal for signal, names in chosen.items() if names]
    if not signals:
        return lambda: None, NO_PROPAGATION
    # Console output goes to stderr: stdout is the report (one JSON object with --json).
    setup, detach = wiring.export_to_otlp(
        registry, traces="traces" in signals, metrics="metrics" in signals,
        logs="logs" in signals, console_out=progress.log_stream(),
    )
    stack.callback(setup.shutdown)
    stack.callback(detach)
    where = {signal: " and ".join(_EXPORTED_TO[name] for name in sorted(chosen[signal],
                                                                     reverse=True))
             for signal in signals}  # otlp before console
    progress.show("exporting " + ", ".join(f"{signal} to {where[signal]}" for signal in signals),
                  final=True)
    propagation = wiring.trace_propagation() if "traces" in signals else NO_PROPAGATION
    if any("console" in chosen[signal] for signal in signals):
        return setup.shutdown, propagation
    return lambda: None, propagation  # OTLP alone: flushed after the report, on the way out


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _run(sim: Any, progress: _Progress, *, paced: bool) -> None:
    """Run ``sim`` to its end, showing progress; paced: simulated time follows the wall clock
    (faster if it lags behind)."""
    from vsrtel.vsr import InvariantViolation
    from vsrtel.vsr.replica import MS

    start = time.monotonic()
    finished = False
    while not finished:
        if paced:
            target = max(int((time.monotonic() - start) * 1e9), sim.now + 1)
        else:
            target = sim.now + 10 * MS  # a slice, between two looks at the progress line
        try:
            finished = sim.run_until(target)
        except InvariantViolation:
            finished = True
        progress.show(
            f"[{sim.now / 1e9:6.2f} s simulated] {sim.completed}/{sim.requests} requests "
            f"committed, view {max(r.view_number for r in sim.replicas)}, "
            f"{sum(sim.recorder.counts.values()):,} events",
            final=finished,
        )
        if paced and not finished:
            ahead = sim.now / 1e9 - (time.monotonic() - start)
            time.sleep(min(max(ahead, 0.0), 0.05) or 0.001)


def _sweep(args: argparse.Namespace) -> int:
    from vsrtel.vsr import sweep

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    planned = sweep.runs(seeds, replicas=args.replicas, requests=args.requests,
                         clients=args.clients, faults=args.faults)
    sizes = ", ".join(map(str, args.replicas))
    print(f"sweep: seeds {seeds.start}-{seeds.stop - 1} on {sizes} replicas, "
          f"{args.clients} clients, {args.requests} requests each, faults={args.faults}",
          flush=True)
    progress = _Progress(True)
    failures: list[sweep.Failure] = []
    done = 0
    start = time.monotonic()
    interrupted = False
    try:
        for run, failure in sweep.sweep(planned, jobs=args.jobs):
            done += 1
            if failure is not None:
                failures.append(failure)
                progress.clear()
                print(f"FAIL seed {run.seed}, {run.replicas} replicas: {failure.kind}: "
                      f"{failure.message.removeprefix('liveness: ')}\n"
                      f"  replay: {run.command()}", flush=True)
            progress.show(_bar(done, len(planned), len(failures), start, run.seed),
                          final=done == len(planned))
            if failures and args.fail_fast:
                progress.show(_bar(done, len(planned), len(failures), start, run.seed),
                              final=True)
                break
    except KeyboardInterrupt:
        interrupted = True
        progress.clear()
        print("vsrtel sweep: interrupted", file=sys.stderr)
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop, with the status of the runs done so far.
        _stdout_gone()
        return 1 if failures else 0
    elapsed = time.monotonic() - start
    kinds = {kind: sum(f.kind == kind for f in failures) for kind in ("safety", "liveness",
                                                                       "error")}
    seeds_done = done / len(args.replicas)
    rate = f", {seeds_done / elapsed * 60:,.0f} seeds/min" if elapsed > 0 else ""
    try:
        print(f"{done} of {len(planned)} runs, {len(failures)} failed (safety {kinds['safety']}, "
              f"liveness {kinds['liveness']}, error {kinds['error']}) in {elapsed:.1f} s{rate}",
              flush=True)
    except BrokenPipeError:
        _stdout_gone()
    if failures:
        return 1
    return 130 if interrupted else 0


def _bar(done: int, total: int, failed: int, start: float, seed: int) -> str:
    width = 30
    filled = width * done // total
    elapsed = time.monotonic() - start
    rate = f", {done / elapsed * 60:,.0f} runs/min" if elapsed > 0 else ""
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} runs, {failed} failed, "
            f"seed {seed}{rate}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``vsrtel catalog | head -1``): it read what it wanted, which is
        # not a failure of the command.
        _stdout_gone()
        return 0


def _stdout_gone() -> None:
    """After a ``BrokenPipeError``: point stdout at devnull, so that what is still buffered and
    the interpreter's final flush go nowhere instead of raising again."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing will be flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 0
    if extra:  # named by the subcommand, as `vsrtel demo: error: ...`
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
