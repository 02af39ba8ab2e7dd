"""The shipped web alert rules: valid for promtool, built on METRICS' series, firing as meant."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_vsr_alerts import promtool

import vsrtel.web
from vsrtel.export.prometheus import exposition
from vsrtel.web import METRICS

pytestmark = pytest.mark.integration

ALERTS = Path(vsrtel.web.__file__).with_name("alerts.yml")
COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"
EXCEPTIONS = "http_server_request_exception_count_total"


def test_the_rules_pass_promtool_check() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS: 2 rules found" in result.stdout


def test_every_rule_has_a_why_and_queries_only_series_of_metrics() -> None:
    text = ALERTS.read_text()
    alerts = re.findall(r"- alert: (\w+)", text)
    assert len(alerts) == text.count("why: ") == 2
    queried = set(re.findall(r"\b(http_\w*_(?:total|bucket|count))\b", text))
    produced = {sample for found in exposition(METRICS) for sample in found.samples}
    assert queried and queried <= produced, queried - produced


def series(name: str, per_minute: int, minutes: int = 20, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "job": "web"}.items()))
    return {"series": f"{name}{{{inner}}}", "values": f"0+{per_minute}x{minutes}"}


def run(tmp_path: Path, input_series: list[dict[str, str]], tests: list[dict[str, Any]]) -> None:
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": tests}],
    }
    test_file = tmp_path / "web_alerts_test.yml"
    test_file.write_text(json.dumps(spec))  # JSON is YAML
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


ROUTE = {"http_request_method": "GET", "http_route": "/users/{id}"}


def test_the_error_ratio_fires_on_5xx_and_exceptions_and_not_on_a_healthy_service(
    tmp_path: Path,
) -> None:
    healthy = [series(COUNT, 100, http_response_status_class="2xx", **ROUTE)]
    failing = [
        *healthy,
        series(COUNT, 4, http_response_status_class="5xx", **ROUTE),
        series(EXCEPTIONS, 4, error_type="RuntimeError", **ROUTE),
    ]
    fired = {
        "alertname": "HttpServerErrorRatioHigh",
        "eval_time": "15m",
        "exp_alerts": [{
            "exp_labels": {"severity": "critical", "job": "web"},
            "exp_annotations": {
                "summary": "7.407% of HTTP requests fail (5xx or an exception)",
                "why": "Users see errors: more than 1 request in 20 failing for 5 minutes is an "
                       "outage for some of them.",
            },
        }],
    }
    run(tmp_path, failing, [fired])
    # 5xx alone (no exception series yet) counts the same: 8 of 108 requests.
    run(tmp_path, [*healthy, series(COUNT, 8, http_response_status_class="5xx", **ROUTE)],
        [fired])
    # A service with no failures at all has no 5xx or exception series.
    run(tmp_path, healthy, [{"alertname": "HttpServerErrorRatioHigh", "eval_time": "15m",
                             "exp_alerts": []}])


def test_the_p99_latency_fires_when_the_slowest_requests_take_over_a_second(
    tmp_path: Path,
) -> None:
    def buckets(slow: int) -> list[dict[str, str]]:
        # 100 requests a minute: 100 - slow under 0.1 s, `slow` between 2.5 s and 5 s.
        rows = []
        for le in ("0.1", "2.5"):
            rows.append(series(BUCKET, 100 - slow, le=le, http_response_status_class="2xx",
                               **ROUTE))
        for le in ("5", "+Inf"):
            rows.append(series(BUCKET, 100, le=le, http_response_status_class="2xx", **ROUTE))
        return rows

    run(tmp_path, buckets(slow=5), [{
        "alertname": "HttpServerLatencyP99High", "eval_time": "15m",
        "exp_alerts": [{
            "exp_labels": {"severity": "warning", "job": "web"},
            "exp_annotations": {
                "summary": "p99 HTTP request latency is 4.5s",
                "why": "The slowest requests are what users feel first; over a second for 10 "
                       "minutes means a saturated service or a slow dependency.",
            },
        }],
    }])
    run(tmp_path, buckets(slow=0), [{
        "alertname": "HttpServerLatencyP99High", "eval_time": "15m", "exp_alerts": [],
    }])
