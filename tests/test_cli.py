from __future__ import annotations

import subprocess
import sys


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
