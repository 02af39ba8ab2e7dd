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
    assert f"metrics at http://127.0.0.1:{port}/metrics" in result.stderr


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
    assert result.returncode == 1


def test_demo_without_the_otlp_extra_says_so_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                        None)  # as if the extra were not installed: importing it fails
    assert main(["demo", "--requests", "3", "--seed", "1", "--no-metrics", "--no-pace"]) == 0
    err = capsys.readouterr().err
    assert "exporting" not in err
    assert err.count("traces and metrics are not exported") == 1 and "vsrtel[otlp]" in err


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
