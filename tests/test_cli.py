from __future__ import annotations

import json
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
    result = run("demo", "--requests", "40", "--seed", "3", "--metrics-port", "0", "--json")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    report = json.loads(line)
    assert report == simulate(seed=3, requests=40, clients=4, registry=vsrtel.Registry())
    assert report["invariants"] == "ok" and report["requests_committed"] == 40
    assert set(report["latency_ms"]) >= {"p50", "p99"}


def test_python_m_vsrtel_demo_prints_progress_then_the_report() -> None:
    result = run("demo", "--requests", "30", "--clients", "2", "--replicas", "5", "--seed", "1",
                 "--faults", "heavy", "--metrics-port", "0")
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
        (["--faults", "medium"], "argument --faults: invalid choice: 'medium'"),
        (["--metrics-port", "70000"], "argument --metrics-port: must be a port number 0-65535"),
        (["--seed", "1.5"], "argument --seed: not an integer: '1.5'"),
    ],
)
def test_demo_bad_values_are_one_line_and_exit_status_2(args: list[str], message: str) -> None:
    result = run("demo", *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("vsrtel demo: error: ") and message in line
    assert "Traceback" not in result.stderr


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
    status = main(["demo", "--requests", "10", "--seed", "4", "--metrics-port", "0", "--json"])
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
