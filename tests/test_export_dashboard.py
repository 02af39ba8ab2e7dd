"""The live dashboard of the metrics endpoint: its JSON snapshot, its page, and a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily

import vsrtel
from vsrtel import metrics as m
from vsrtel.export.prometheus import MetricsServer, serve_metrics
from vsrtel.handlers.metrics import MetricsReporter

CHROMEDRIVER = "/usr/bin/chromedriver"


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    with serve_metrics(port=0, dashboard=True) as s:
        yield s


@pytest.fixture
def registry() -> vsrtel.Registry:
    return vsrtel.Registry()


def shop_metrics() -> list[m.Metric]:
    return [
        m.counter("shop.order.stop.count", tags=["region"]),
        m.last_value("shop.order.stop.seq", measurement="seq"),
        m.distribution("shop.order.stop.duration", unit=("native", "second"), tags=["region"]),
    ]


def order(registry: vsrtel.Registry, seq: int, region: str = "eu") -> None:
    registry.execute("shop.order.stop", {"duration": 2_000_000 * (seq % 7 + 1), "seq": seq},
                     {"region": region})


def families(server: MetricsServer) -> dict[str, dict[str, Any]]:
    status, headers, body = fetch(server.base_url + "/api/metrics")
    assert status == 200 and headers["Content-Type"] == "application/json"
    return {f["name"]: f for f in json.loads(body)["families"]}


def value(family: dict[str, Any], name: str, **labels: str) -> Any:
    [found] = [s["value"] for s in family["samples"] if s["name"] == name
               and all(s["labels"].get(k) == v for k, v in labels.items())]
    return found


def test_the_json_snapshot_holds_each_family_with_its_values(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(shop_metrics(), meter_provider=server.meter_provider,
                           registry=registry):
        for seq in range(1, 4):
            order(registry, seq)
        order(registry, 4, region="us")
        found = families(server)
    count = found["shop_order_stop_count"]
    assert (count["type"], count["unit"]) == ("counter", "")
    assert count["help"]  # the metric's description
    assert value(count, "shop_order_stop_count_total", region="eu") == 3
    assert value(count, "shop_order_stop_count_total", region="us") == 1
    seq = found["shop_order_stop_seq"]
    assert seq["type"] == "gauge" and value(seq, "shop_order_stop_seq") == 4
    duration = found["shop_order_stop_duration_seconds"]
    assert (duration["type"], duration["unit"]) == ("histogram", "seconds")
    assert value(duration, "shop_order_stop_duration_seconds_count", region="eu") == 3
    # JSON has no infinity: the last bucket's bound travels as Prometheus spells it.
    assert value(duration, "shop_order_stop_duration_seconds_bucket", region="eu",
                 le="+Inf") == 3
    assert found["target"]["type"] == "info"


def test_non_finite_values_are_strings_in_valid_json(server: MetricsServer) -> None:
    class Odd:
        def collect(self) -> list[GaugeMetricFamily]:
            family = GaugeMetricFamily("odd_value", "odd values", labels=["v"])
            for v in ("inf", "-inf", "nan"):
                family.add_metric([v], float(v))
            return [family]

    server.registry.register(Odd())  # type: ignore[arg-type]
    odd = families(server)["odd_value"]  # json.loads rejects nothing: strict JSON, no NaN
    assert [value(odd, "odd_value", v=v) for v in ("inf", "-inf", "nan")] == [
        "+Inf", "-Inf", "NaN"]


def test_the_page_is_self_contained(server: MetricsServer) -> None:
    assert server.dashboard_url == server.base_url + "/"
    for path in ("/", "/dashboard"):
        status, headers, body = fetch(server.base_url + path)
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        page = body.decode()
        assert '<script src="/dashboard.js"></script>' in page
    status, headers, body = fetch(server.base_url + "/dashboard.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    script = body.decode()
    for text in (page, script):
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?\s*(https?:)?//""", text, re.I)
        assert "import(" not in text and "innerHTML" not in text
    # The one absolute URL is the SVG namespace name, which is never fetched.
    assert re.findall(r"https?://[^\s\"']+", page + script) == ["http://www.w3.org/2000/svg"]


@pytest.mark.parametrize("path", ["/", "/dashboard", "/dashboard.js", "/api/metrics"])
def test_head_answers_like_get_without_a_body(server: MetricsServer, path: str) -> None:
    head_status, head, head_body = fetch(server.base_url + path, method="HEAD")
    get_status, get, get_body = fetch(server.base_url + path)
    assert head_status == get_status == 200 and head_body == b""
    assert head["Content-Type"] == get["Content-Type"]
    if path != "/api/metrics":  # a snapshot may change between the two requests
        assert int(head["Content-Length"]) == len(get_body) > 0


def test_unknown_paths_and_methods(server: MetricsServer) -> None:
    for path in ("/nope", "/api", "/api/metrics/x", "/dashboard.html", "/index.html"):
        assert fetch(server.base_url + path)[0] == 404
    assert fetch(server.base_url + "/api/metrics", method="POST")[0] == 405
    assert fetch(server.url)[0] == 200 and fetch(server.base_url + "/health")[0] == 200


def test_the_dashboard_is_off_by_default() -> None:
    with serve_metrics(port=0) as s:
        assert s.dashboard_url is None
        for path in ("/", "/api/metrics", "/dashboard.js"):
            assert fetch(s.base_url + path)[0] == 404


def test_a_failing_collector_is_a_logged_500(
    server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing:
        def collect(self) -> list[Any]:
            raise RuntimeError("collector broke")

    collector = Failing()
    server.registry.register(collector)  # type: ignore[arg-type]
    status, _, body = fetch(server.base_url + "/api/metrics")
    assert status == 500 and b"application's log" in body
    assert any("collector broke" in (r.exc_text or str(r.exc_info)) for r in caplog.records)
    server.registry.unregister(collector)  # type: ignore[arg-type]
    assert fetch(server.base_url + "/api/metrics")[0] == 200


# ----------------------------------------------------------------------------- real browser


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def chromium(tmp_path: Path) -> Any:
    """A headless Chromium driven by the system's chromedriver (Selenium downloads nothing)."""
    if not Path(CHROMEDRIVER).exists() or shutil.which("chromium") is None:
        pytest.skip(f"{CHROMEDRIVER} or chromium absent (apt-get install chromium "
                    "chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def check_screenshot(driver: Any, path: Path) -> None:
    """No console errors, and a screenshot that is a real, non-blank PNG."""
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


@pytest.mark.integration
def test_headless_chromium_draws_live_charts(
    server: MetricsServer, registry: vsrtel.Registry, tmp_path: Path
) -> None:
    stop = threading.Event()

    def emit() -> None:
        seq = 0
        while not stop.wait(0.02):
            seq += 1
            order(registry, seq, region=("eu", "us")[seq % 2])

    reporter = MetricsReporter(shop_metrics(), meter_provider=server.meter_provider,
                                 registry=registry).attach()
    emitter = threading.Thread(target=emit, daemon=True)
    emitter.start()
    driver = None
    try:
        driver = chromium(tmp_path)
        assert server.dashboard_url is not None
        driver.get(server.dashboard_url)
        names = ("shop_order_stop_count", "shop_order_stop_seq",
                 "shop_order_stop_duration_seconds")

        # Read the page in one script each time: charts are redrawn every second, so element
        # handles found in one call can be stale by the next.
        def read(script: str) -> Any:
            return driver.execute_script(script)

        def charts() -> bool:
            return all(read(f"return !!document.querySelector('[data-metric=\"{n}\"] polyline')")
                       for n in names)

        wait_for("a drawn chart of every metric family", charts)
        groups = read("return [...document.querySelectorAll('section[data-group]')]"
                      ".map(e => e.dataset.group)")
        assert groups == ["shop_order"]
        title = read("return document.querySelector("
                     "'[data-metric=\"shop_order_stop_seq\"] h3').textContent")
        assert title  # the HELP text

        def shown() -> str:
            text: str = read("return document.querySelector("
                             "'[data-metric=\"shop_order_stop_seq\"] .value').textContent")
            return text

        no_value = "\u2013"  # an en dash
        first = wait_for("a value of the gauge", lambda: shown().strip(no_value))
        wait_for("the displayed gauge to move on", lambda: shown() not in ("", first))
        legend = read("return [...document.querySelectorAll("
                      "'[data-metric=\"shop_order_stop_count\"] .label')].map(e => e.textContent)")
        assert sorted(legend) == ["region=eu", "region=us"]
        check_screenshot(driver, tmp_path / "dashboard.png")
    finally:
        stop.set()
        emitter.join(timeout=10)
        reporter.detach()
        if driver is not None:
            driver.quit()


@pytest.mark.integration
def test_the_demo_is_live_in_the_browser(tmp_path: Path) -> None:
    """``vsrtel demo --serve`` under heavy faults: every VSR metric gets a chart, and it moves."""
    driver = chromium(tmp_path)
    output = tmp_path / "demo.out"
    with output.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "vsrtel", "demo", "--faults", "heavy", "--seed", "7",
             "--requests", "100000", "--metrics-port", "0", "--serve"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
    try:
        url = wait_for("the demo's dashboard address", lambda: re.findall(
            r"dashboard at (http://127\.0\.0\.1:\d+/)", output.read_text()))[0]
        expected = {f["name"] for f in wait_for("the VSR metrics", lambda: [
            f for f in json.loads(fetch(url + "api/metrics")[2])["families"]
            if f["name"].startswith("vsr_")
        ])}
        driver.get(url)

        # Read the page in one script each time: charts are redrawn as new points arrive.
        def drawn() -> set[str]:
            names: list[str] = driver.execute_script(
                "return [...document.querySelectorAll('[data-metric]')]"
                ".filter(e => e.querySelector('svg polyline')).map(e => e.dataset.metric)")
            return set(names)

        wait_for("a chart of every VSR metric", lambda: expected <= drawn(), timeout=60)

        def commit_numbers() -> str:
            text: str = driver.execute_script(
                "return [...document.querySelectorAll("
                "'[data-metric=\"vsr_replica_commit_number\"] .value')]"
                ".map(e => e.textContent).join(' ')")
            return text

        first = wait_for("commit-numbers on the page", commit_numbers)
        wait_for("the commit-numbers to advance", lambda: commit_numbers() not in ("", first))
        check_screenshot(driver, tmp_path / "demo-dashboard.png")
    finally:
        driver.quit()
        demo.terminate()
        try:
            demo.wait(timeout=20)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
