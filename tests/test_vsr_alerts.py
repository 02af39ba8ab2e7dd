"""The shipped alert rules: valid for promtool, built on METRICS, and firing on a simulated run."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vsrtel
import vsrtel.vsr
from vsrtel.export.prometheus import exposition, prometheus_reader
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.vsr import Simulation
from vsrtel.vsr.recommended import METRICS

pytestmark = pytest.mark.integration

ALERTS = Path(vsrtel.vsr.__file__).with_name("alerts.yml")
STEP_NS = 50_000_000  # one scrape every 50 simulated ms
LAG_THRESHOLD = 100


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package prometheus); .ci/run installs it")
        pytest.skip("promtool is not installed")
    return path


def test_the_rules_pass_promtool_check() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS: 7 rules found" in result.stdout


def test_every_rule_has_a_why_and_queries_only_series_of_metrics() -> None:
    text = ALERTS.read_text()
    alerts = re.findall(r"- alert: (\w+)", text)
    assert len(alerts) == text.count("why: ") == 7
    queried = set(re.findall(r"\b(vsr\w*_(?:total|bucket|number))\b", text))
    produced = {sample for found in exposition(METRICS) for sample in found.samples}
    assert queried and queried <= produced, queried - produced


def record_series(seed: int) -> dict[str, list[float | None]]:
    """Scrape METRICS every STEP_NS of a heavy-fault run; a handler fails half-way through."""
    reader, prometheus = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    registry = vsrtel.Registry()
    MetricsReporter(METRICS, meter_provider=provider, registry=registry).attach()
    commits = 0

    def flaky(*_: Any) -> None:
        nonlocal commits
        commits += 1
        if commits == 2_000:
            raise RuntimeError("a handler bug")

    registry.attach("flaky", "vsr.state.commit_advance", flaky)
    series: dict[str, list[float | None]] = {}
    scrapes = 0
    logging.disable(logging.ERROR)  # the flaky handler's report is expected
    try:
        run = Simulation(seed=seed, requests=3000, clients=16, faults="heavy", registry=registry)
        with run as sim:
            while not sim.run_until(sim.now + STEP_NS):
                text = generate_latest(prometheus).decode()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if family.type == "info":
                            continue
                        labels = {**sample.labels, "job": "vsr"}
                        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                        values = series.setdefault(f"{sample.name}{{{inner}}}", [None] * scrapes)
                        values.append(sample.value)
                scrapes += 1
                for values in series.values():
                    values.extend([None] * (scrapes - len(values)))
    finally:
        logging.disable(logging.NOTSET)
        provider.shutdown()
    return series


def only(series: dict[str, list[float | None]], name: str) -> list[list[float | None]]:
    return [values for key, values in series.items() if key.startswith(name + "{")]


def test_rules_fire_on_series_recorded_from_a_simulated_run(tmp_path: Path) -> None:
    """promtool replays the scrapes one a minute: ``for:`` durations count scrapes here."""
    series = record_series(seed=4)
    scrapes = len(next(iter(series.values())))
    # What the rules should say, computed from the same samples.
    replicas = only(series, "vsr_replica_commit_number")
    lag = []
    for i in range(scrapes):
        known = [v[i] for v in replicas if v[i] is not None]
        lag.append(max(known) - min(known) if known else 0.0)
    lagging = [i for i in range(2, scrapes) if all(x > LAG_THRESHOLD for x in lag[i - 2 : i + 1])]
    healthy = [i for i in range(2, scrapes) if lag[i] <= LAG_THRESHOLD]
    [failures] = only(series, "vsrtel_handler_failure_count_total")
    failed_at = next(i for i, v in enumerate(failures) if v)
    assert lagging and healthy and failed_at > 0, "seed 4 no longer shows a lagging replica"

    commit_lag = {
        "alertname": "VsrCommitLag",
        "exp_alerts": [
            {
                "exp_labels": {"severity": "critical", "job": "vsr"},
                "exp_annotations": {
                    "summary": f"A replica is {lag[lagging[0]]:g} operations behind the most "
                    "advanced one",
                    "why": "A lagging replica does not count toward quorums: one more failure "
                    "stops the cluster.",
                },
            }
        ],
    }
    detached = {
        "alertname": "VsrtelHandlerDetached",
        "exp_alerts": [
            {
                "exp_labels": {"severity": "warning", "job": "vsr", "kind": "RuntimeError"},
                "exp_annotations": {
                    "summary": "A telemetry handler raised (RuntimeError) and was detached",
                    "why": "A detached handler stays detached until restart: some logs, metrics "
                    "or traces are missing.",
                },
            }
        ],
    }
    tests = [
        {**commit_lag, "eval_time": f"{lagging[0]}m"},
        {"alertname": "VsrCommitLag", "eval_time": f"{healthy[-1]}m", "exp_alerts": []},
        {**detached, "eval_time": f"{failed_at}m"},
        {"alertname": "VsrtelHandlerDetached", "eval_time": f"{failed_at - 1}m", "exp_alerts": []},
    ]
    input_series = [
        {"series": key, "values": " ".join("_" if v is None else repr(v) for v in values)}
        for key, values in series.items()
    ]
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": tests}],
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(json.dumps(spec))  # JSON is YAML
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
