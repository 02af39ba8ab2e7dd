from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import vsrtel
from vsrtel.cli import main
from vsrtel.vsr import CATALOG, simulate
from vsrtel.vsr.replica import Replica


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vsrtel", *args], capture_output=True, text=True)


def test_help_and_version() -> None:
    assert run("--help").returncode == 0
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("vsrtel ")


def test_a_bad_flag_is_one_line_and_exit_status_2() -> None:
    result = run("--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vsrtel: error: unrecognized arguments: --no-such-flag"
    ]
    assert "Traceback" not in result.stderr


# -- vsrtel demo / vsrtel catalog ----------------------------------------------------------------


def test_demo_json_is_the_report_of_simulate() -> None:
    result = run("demo", "--requests", "40", "--seed", "3", "--no-metrics", "--json")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    report = json.loads(line)
    assert report == simulate(seed=3, requests=40, clients=4, registry=vsrtel.Registry())
    assert report["invariants"] == "ok" and report["requests_committed"] == 40
    assert set(report["latency_ms"]) >= {"p50", "p99"}


def test_python_m_vsrtel_demo_prints_progress_then_the_report() -> None:
    result = run("demo", "--requests", "30", "--clients", "2", "--replicas", "5", "--seed", "1",
                 "--faults", "heavy", "--no-metrics")
    assert result.returncode == 0, result.stderr
    assert "VSR cluster: 5 replicas, 2 clients, faults=heavy, seed=1" in result.stdout
    assert "invariants          OK" in result.stdout
    assert "sample trace" in result.stdout
    assert "30/30 requests committed" in result.stderr


def test_demo_serves_metrics_on_the_given_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("demo", "--requests", "10", "--seed", "2", "--metrics-port", str(port))
    assert result.returncode == 0, result.stderr
    # Every run serves the dashboard too, while it runs (--serve only keeps it up after).
    assert (f"metrics at http://127.0.0.1:{port}/metrics, dashboard at http://127.0.0.1:{port}/"
            in result.stderr)


def test_demo_reports_a_taken_metrics_port_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("demo", "--requests", "5", "--metrics-port", str(port))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"vsrtel demo: error: metrics port {port}:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "4"], "argument --replicas: must be odd (2f+1 replicas), got 4"),
        (["--replicas", "x"], "argument --replicas: not an integer: 'x'"),
        (["--requests", "-1"], "argument --requests: must be >= 0, got -1"),
        (["--clients", "0"], "argument --clients: must be >= 1, got 0"),
        (["--faults", "medium"], "argument --faults: unknown fault profile 'medium'"),
        (["--faults", "heavy,loss=x"], "argument --faults: bad value for fault knob loss: 'x'"),
        (
            ["--metrics-port", "70000"],
            "argument --metrics-port: port must be an integer in 0..65535, got 70000",
        ),
        (["--seed", "1.5"], "argument --seed: not an integer: '1.5'"),
        (["--foo"], "unrecognized arguments: --foo"),
        (["--serve", "--no-metrics"], "--serve keeps the metrics endpoint up"),
        (["--no-metrics", "--metrics-port", "9"], "argument --metrics-port: not allowed with"),
        (["--log-level", "loud"], "argument --log-level: unknown log level 'loud' (choose from "
                                  "debug, info, warning, error, critical)"),
        (["--quiet", "--log-level", "info"], "--quiet is --log-level warning"),
        (["--faults", "heavy,delay=5-1"], "argument --faults: fault knob delay must be a range "
                                          "LOW-HIGH of milliseconds with 0 <= LOW < HIGH, got "
                                          "'5-1'"),
        (["--faults", "light,crash_every=-5"], "fault knob crash_every must be milliseconds > "
                                               "0, or off, got '-5'"),
        (["--faults", "light,timer_jitter=-2"], "fault knob timer_jitter must be milliseconds "
                                                ">= 0, got '-2'"),
    ],
)
def test_demo_bad_values_are_one_line_and_exit_status_2(args: list[str], message: str) -> None:
    result = run("demo", *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("vsrtel demo: error: ") and message in line
    assert "Traceback" not in result.stderr


def test_demo_no_pace_is_the_same_run() -> None:
    result = run("demo", "--requests", "40", "--seed", "3", "--no-metrics", "--json", "--no-pace")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == simulate(seed=3, requests=40, clients=4,
                                                 registry=vsrtel.Registry())
    fast = run("demo", "--requests", "5", "--seed", "3", "--no-metrics", "--fast")
    assert fast.returncode == 0 and "5/5 requests committed" in fast.stderr


def test_demo_metrics_port_0_is_any_free_port_and_no_metrics_is_off() -> None:
    result = run("demo", "--requests", "5", "--seed", "2", "--metrics-port", "0", "--no-pace")
    assert result.returncode == 0, result.stderr
    port = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", result.stderr)
    assert port is not None and int(port.group(1)) > 0
    off = run("demo", "--requests", "5", "--seed", "2", "--no-metrics", "--no-pace")
    assert off.returncode == 0 and "metrics at" not in off.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(output: str) -> list[str]:
    """The lines a terminal shows: each line is what follows its last carriage return."""
    return [line.rsplit("\r", 1)[-1].replace("\033[K", "") for line in output.split("\n")]


def test_demo_logs_on_a_terminal_start_on_a_clean_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status = main(["demo", "--requests", "200", "--seed", "5", "--faults", "heavy",
                   "--no-metrics", "--no-pace"])
    assert status == 0
    lines = _screen(terminal.getvalue())
    logs = [line for line in lines if "vsr.view_change" in line or "vsr.state_transfer" in line]
    assert len(logs) > 5
    garbled = [line for line in logs if not line.startswith("[info")]
    assert garbled == []
    assert lines[-2].startswith("[") and "200/200 requests committed" in lines[-2]


def test_ctrl_c_stops_the_demo_with_the_report_so_far() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vsrtel", "demo", "--requests", "1000000", "--seed", "1",
         "--no-metrics"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "requests committed" in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "Traceback" not in err and "interrupted at" in err
    assert "VSR cluster: 3 replicas, 4 clients" in out and "of 1000000" in out


def test_a_closed_pipe_is_not_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, as after `head -1`
    try:
        result = subprocess.run([sys.executable, "-m", "vsrtel", "catalog", "--format", "json"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 0  # the reader read what it wanted: not a failure


def test_demo_log_level_and_quiet_choose_what_stderr_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = ["demo", "--requests", "200", "--seed", "5", "--faults", "heavy", "--no-metrics",
           "--no-pace"]
    assert main(run) == 0
    default = capsys.readouterr()
    assert "[info" in default.err and "[debug" not in default.err
    assert main([*run, "--log-level", "DEBUG"]) == 0
    debug = capsys.readouterr()
    assert "[info" in debug.err and "] vsr.view_change.vote_received" in debug.err
    assert debug.out == default.out  # the same run, the same report
    for quiet in (["--quiet"], ["-q"], ["--log-level", "warning"], ["--log-level", "error"]):
        assert main([*run, *quiet]) == 0
        result = capsys.readouterr()
        assert result.err == "", quiet  # no log line, no progress line
        assert result.out == default.out


def _clean_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def test_demo_prints_spans_and_metrics_on_stderr_when_the_environment_says_console(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_otel_environment(monkeypatch)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    result = run("demo", "--requests", "3", "--seed", "1", "--no-metrics", "--no-pace", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["requests_committed"] == 3  # stdout is only the report
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    text = result.stderr
    while (start := text.find("{\n")) != -1:  # the console exporters' indented JSON objects
        item, end = decoder.raw_decode(text, start)
        (metrics if "resource_metrics" in item else spans).append(item)
        text = text[end:]
    roots = [span for span in spans if span["name"] == "vsr.client.request"]
    assert len(roots) == 3  # one trace per request
    assert {span["context"]["trace_id"] for span in spans} == {
        root["context"]["trace_id"] for root in roots
    }
    assert [span["name"] for span in spans].count("vsr.state_machine.operation") == 9
    assert metrics and "vsr.protocol.client_request.stop.duration" in json.dumps(metrics)


def test_demo_exports_nothing_when_the_environment_says_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_otel_environment(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console,none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    assert main(["demo", "--requests", "3", "--seed", "1", "--no-metrics", "--no-pace"]) == 0
    assert "exporting" not in capsys.readouterr().err


def test_demo_without_the_otlp_extra_says_so_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                        None)  # as if the extra were not installed: importing it fails
    assert main(["demo", "--requests", "3", "--seed", "1", "--no-metrics", "--no-pace"]) == 0
    err = capsys.readouterr().err
    assert "exporting" not in err
    assert err.count("traces, metrics and logs are not exported") == 1 and "vsrtel[otlp]" in err


def test_demo_exits_1_on_an_invariant_violation(
    vsrtel_registry: vsrtel.Registry, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = Replica._execute

    def diverge(self: Replica, op_number: int, entry: object) -> None:
        original(self, op_number, entry)  # type: ignore[arg-type]
        if self.node_id == 1:
            self.machine.data["k0"] = self.machine.data.get("k0", 0) + 1

    monkeypatch.setattr(Replica, "_execute", diverge)
    status = main(["demo", "--requests", "10", "--seed", "4", "--no-metrics", "--json"])
    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert report["invariants"].startswith("seed 4: replica 1")
    assert vsrtel_registry.list_handlers() == []


def test_catalog_prints_markdown_or_json() -> None:
    markdown = run("catalog")
    assert markdown.returncode == 0
    assert markdown.stdout == CATALOG.render_markdown() + "\n"
    assert "| Event | Kind | Measurements | Metadata | Fires when |" in markdown.stdout
    as_json = run("catalog", "--format", "json")
    assert json.loads(as_json.stdout) == CATALOG.to_dict()
    bad = run("catalog", "--format", "yaml")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_catalog_and_metrics_of_the_web_domain() -> None:
    from vsrtel.vsr.recommended import render_markdown
    from vsrtel.web import CATALOG as WEB_CATALOG
    from vsrtel.web.recommended import METRICS as WEB_METRICS

    assert json.loads(run("catalog", "web", "--format", "json").stdout) == WEB_CATALOG.to_dict()
    assert run("metrics", "web").stdout == render_markdown(WEB_METRICS) + "\n"
    assert run("metrics").stdout == render_markdown() + "\n"
    bad = run("catalog", "shop")
    assert bad.returncode == 2 and "shop" in bad.stderr


@pytest.mark.integration
def test_demo_serve_keeps_metrics_up_until_ctrl_c() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "vsrtel", "demo", "--requests", "10", "--seed", "1",
         "--metrics-port", str(port), "--serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "until Ctrl-C" in line:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            assert "vsr_replica_commit_number" in response.read().decode()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "invariants          OK" in out


def test_help_points_at_sections_that_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    texts = [run("--help").stdout] + [run(command, "--help").stdout
                                      for command in ("demo", "sweep", "catalog", "metrics")]
    text = " ".join(" ".join(texts).split())  # argparse wraps lines anywhere
    assert "docs/vsr.md" in text
    references = re.findall(r'"([^"]+)" in (docs/[\w-]+\.md)', text)
    assert ("Fault profiles", "docs/vsr.md") in references
    for section, doc in references:
        assert f"## {section}\n" in (root / doc).read_text(), (section, doc)
    for section in re.findall(r"README's (.+?) section", text):
        headings = re.findall(r"^#+ (.+)$", (root / "README.md").read_text(), re.MULTILINE)
        assert section in headings, f"--help names a README section that is not there: {section}"


# -- vsrtel sweep ---------------------------------------------------------------------------------


def test_sweep_runs_every_seed_on_every_size() -> None:
    result = run("sweep", "--seeds", "3", "--first-seed", "10", "--requests", "30",
                 "--replicas", "3", "5", "--faults", "heavy,loss=0.1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("sweep: seeds 10-12 on 3, 5 replicas, 3 clients, 30 requests each, "
                        "faults=heavy,loss=0.1")
    assert lines[-1].startswith("6 of 6 runs, 0 failed (safety 0, liveness 0, error 0) in ")
    assert "seeds/min" in lines[-1]
    assert "[##############################] 6/6 runs, 0 failed" in result.stderr


def test_sweep_jobs_run_in_processes_with_the_same_outcome() -> None:
    result = run("sweep", "--seeds", "4", "--requests", "20", "--replicas", "3", "5",
                 "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("8 of 8 runs, 0 failed")
    assert "Traceback" not in result.stderr


def test_sweep_prints_each_failure_with_the_command_that_replays_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    original = Replica._execute

    def diverge(self: Replica, op_number: int, entry: object) -> None:
        original(self, op_number, entry)  # type: ignore[arg-type]
        if self.node_id == 2 and op_number == 7 and self.replicas == 5:
            self.machine.data["k0"] = self.machine.data.get("k0", 0) + 1

    monkeypatch.setattr(Replica, "_execute", diverge)
    status = main(["sweep", "--seeds", "2", "--requests", "20", "--replicas", "3", "5",
                   "--faults", "none"])
    assert status == 1
    out = capsys.readouterr().out.splitlines()
    fails = [line for line in out if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in fails] == ["FAIL seed 0, 5 replicas",
                                                      "FAIL seed 1, 5 replicas"]
    assert all(": safety: replica 2 " in line for line in fails)
    replay = out[out.index(fails[0]) + 1]
    assert replay == ("  replay: vsrtel demo --seed 0 --replicas 5 --clients 3 --requests 20 "
                      "--faults none --no-pace --no-metrics")
    assert out[-1].startswith("4 of 4 runs, 2 failed (safety 2, liveness 0, error 0)")
    assert main([*replay.split()[2:], "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["invariants"].startswith("seed 0: replica 2")


def test_sweep_reports_liveness_failures_and_crashes_and_can_stop_at_the_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(Replica, "_on_prepare_ok", lambda self, msg: None)
    assert main(["sweep", "--seeds", "5", "--requests", "2", "--faults", "none",
                 "--fail-fast"]) == 1
    out = capsys.readouterr().out
    assert "FAIL seed 0, 3 replicas: liveness: 2 of 2 requests incomplete" in out
    assert "1 of 5 runs, 1 failed (safety 0, liveness 1, error 0)" in out

    def crash(self: Replica, msg: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(Replica, "_on_prepare_ok", crash)
    assert main(["sweep", "--seeds", "1", "--requests", "2", "--faults", "none"]) == 1
    assert "FAIL seed 0, 3 replicas: error: KeyError: 'boom'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
        (["--replicas", "3", "4"], "argument --replicas: must be odd (2f+1 replicas), got 4"),
        (["--faults", "hevy"], "argument --faults: unknown fault profile 'hevy'"),
        (["--jobs", "x"], "argument --jobs: not an integer: 'x'"),
        (["--bar"], "unrecognized arguments: --bar"),
    ],
)
def test_sweep_bad_values_are_one_line_and_exit_status_2(args: list[str], message: str) -> None:
    result = run("sweep", *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("vsrtel sweep: error: ") and message in line


def test_sweep_into_a_closed_pipe_exits_0() -> None:
    # `vsrtel sweep --seeds 4 | head -1`: the reader takes the first line and goes away.
    process = subprocess.Popen(
        [sys.executable, "-m", "vsrtel", "sweep", "--seeds", "4", "--requests", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        process.stdout.close()
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert first.startswith("sweep: seeds 0-3 on 3 replicas")
    assert "Traceback" not in err and "Broken pipe" not in err
    assert process.returncode == 0


class _ClosedAfter(io.StringIO):
    """Standard output whose reader goes away after ``lines`` lines."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_sweep_stopped_by_a_closed_pipe_still_reports_a_failure_it_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Replica._execute

    def diverge(self: Replica, op_number: int, entry: object) -> None:
        original(self, op_number, entry)  # type: ignore[arg-type]
        if self.node_id == 2 and op_number == 7:
            self.machine.data["k0"] = self.machine.data.get("k0", 0) + 1

    monkeypatch.setattr(Replica, "_execute", diverge)
    out = _ClosedAfter(lines=2)  # the header and the first FAIL line, as `| head -2` reads
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["sweep", "--seeds", "3", "--requests", "20", "--faults", "none"]) == 1
    assert out.getvalue().splitlines()[1].startswith("FAIL seed 0, 3 replicas: safety:")
