"""The live dashboard of the metrics endpoint: its JSON snapshot, its page, and a real browser."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

import vsrtel
from vsrtel import metrics as m
from vsrtel.export.multiprocess import serve_directory
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


def api(server: MetricsServer, query: str = "") -> dict[str, Any]:
    status, headers, body = fetch(server.base_url + "/api/metrics" + query)
    assert status == 200 and headers["Content-Type"] == "application/json"
    data: dict[str, Any] = json.loads(body)  # strict JSON: json.dumps(allow_nan=False) made it
    return data


def families(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in data["families"]}


def points(family: dict[str, Any], label: str, stat: int = 0) -> list[float | None]:
    [found] = [s["values"][stat] for s in family["series"] if s["label"] == label]
    return list(found)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def ticks_after(server: MetricsServer, n: int) -> dict[str, Any]:
    """The history once the server has taken `n` more points than now (one a second)."""
    first = api(server)["end"]
    return wait_for(f"{n} more points", lambda: (d := api(server))["end"] >= first + n and d,
                    timeout=n + 10)


def test_the_history_holds_what_each_chart_plots(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(shop_metrics(), meter_provider=server.meter_provider,
                         registry=registry):
        ticks_after(server, 1)
        for seq in range(1, 4):
            order(registry, seq)  # 4, 6 and 8 ms
        order(registry, 4, region="us")  # 10 ms
        data = ticks_after(server, 2)
    assert data["start"] == 0 and data["end"] == len(data["times"]) >= 3
    assert (data["period"], data["points"], data["max_series"]) == (1.0, 900, 10)
    assert data["times"] == sorted(data["times"])  # ms since the epoch, one a second
    assert abs(data["times"][-1] / 1000 - time.time()) < 30
    found = families(data)
    count = found["shop_order_stop_count"]
    assert (count["type"], count["unit"], count["hidden"]) == ("counter", "", 0)
    assert count["help"]  # the metric's description
    # A counter is plotted as its rate per second: the 3 orders spread over the seconds they
    # fell in (a series born after the first point counts from zero).
    seconds = [None, *((b - a) / 1000 for a, b in itertools.pairwise(data["times"]))]

    def total(label: str) -> float:
        return sum(v * dt for v, dt in zip(points(count, label), seconds, strict=True)
                   if v is not None and dt is not None)

    assert total("region=eu") == pytest.approx(3, rel=0.1)
    assert total("region=us") == pytest.approx(1, rel=0.1)
    assert points(found["shop_order_stop_seq"], "")[-1] == 4  # a gauge as its value
    duration = found["shop_order_stop_duration_seconds"]
    assert (duration["type"], duration["unit"]) == ("histogram", "seconds")
    assert data["quantiles"] == [0.5, 0.9, 0.99]
    # A histogram as p50, p90 and p99 of each second's observations (None: none that second).
    series = next(s for s in duration["series"] if s["label"] == "region=us")
    p50, p90, p99 = ([v for v in values if v is not None] for values in series["values"])
    assert len(p50) == 1 and 0.005 < p50[0] <= p90[0] <= p99[0] <= 0.025
    assert "target" not in found  # info families have no chart


def test_a_page_asks_only_for_the_points_it_lacks(server: MetricsServer) -> None:
    first = ticks_after(server, 2)
    later = wait_for("a new point", lambda: (d := api(server, f"?since={first['end']}"))["times"]
                     and d)
    assert later["start"] == first["end"] and later["end"] == first["end"] + len(later["times"])
    assert later["times"][0] > first["times"][-1]
    assert api(server, "?since=99999")["times"] == []  # ahead of the server: nothing yet
    assert api(server, "?since=0&cache=1")["start"] == 0
    for bad in ("-1", "x", "1.5", "", "1" * 40):
        status, _, body = fetch(server.base_url + "/api/metrics?since=" + bad)
        assert status == 400 and repr(bad).encode() in body


def test_non_finite_values_are_gaps_in_valid_json(server: MetricsServer) -> None:
    class Odd:
        def collect(self) -> list[GaugeMetricFamily]:
            family = GaugeMetricFamily("odd_value", "odd values", labels=["v"])
            for v in ("inf", "-inf", "nan", "1.5"):
                family.add_metric([v], float(v))
            return [family]

    server.registry.register(Odd())  # type: ignore[arg-type]
    odd = families(ticks_after(server, 1))["odd_value"]
    assert [points(odd, f"v={v}")[-1] for v in ("inf", "-inf", "nan", "1.5")] == [
        None, None, None, 1.5]


def test_the_history_is_bounded_per_chart_however_many_series(server: MetricsServer) -> None:
    class Many:
        def collect(self) -> list[CounterMetricFamily]:
            family = CounterMetricFamily("many_requests", "requests", labels=["user"])
            for user in range(5000):
                family.add_metric([str(user)], user)
            overflow = CounterMetricFamily(
                "many_capped", "capped by the reporter", labels=["otel_metric_overflow", "k"])
            overflow.add_metric(["true", ""], 7)
            for k in range(12):
                overflow.add_metric(["", str(k)], k)
            return [family, overflow]

    server.registry.register(Many())  # type: ignore[arg-type]
    data = ticks_after(server, 1)
    many = families(data)["many_requests"]
    assert len(many["series"]) == 10 and many["hidden"] == 4990
    assert [s["label"] for s in many["series"]] == [f"user={u}" for u in range(10)]
    capped = families(data)["many_capped"]
    # The reporter's overflow series is kept besides the cap, labelled as such.
    assert len(capped["series"]) == 11 and capped["hidden"] == 2
    [overflow] = [s for s in capped["series"] if s["overflow"]]
    assert overflow["label"].startswith("overflow")
    assert len(fetch(server.base_url + "/api/metrics")[2]) < 20_000 + 500 * len(data["times"])


def test_the_ring_keeps_the_latest_points_rates_survive_a_reset() -> None:
    from prometheus_client import CollectorRegistry

    from vsrtel.export._dashboard import History

    readings = iter([10, 20, 40, 5, 15, 25, 35, 45, 55, 65])  # a restart after 40

    class Ticking:
        def collect(self) -> list[CounterMetricFamily]:
            return [CounterMetricFamily("jobs", "jobs", value=next(readings))]

    source = CollectorRegistry()
    source.register(Ticking())  # type: ignore[arg-type]
    history = History(source, points=4)
    for second in range(10):
        history.sample(wall=1000.0 + second, mono=float(second))
    data = history.since(0)
    assert (data["start"], data["end"]) == (6, 10)  # the 4 latest of 10 points
    assert data["times"] == [1_006_000, 1_007_000, 1_008_000, 1_009_000]
    assert families(data)["jobs"]["series"][0]["values"] == [[10.0, 10.0, 10.0, 10.0]]
    early = History(source, points=10)
    readings = iter([10, 20, 40, 5, 15])
    for second in range(5):
        early.sample(wall=float(second), mono=float(second))
    # The first point has no rate; a counter that went down restarted from zero.
    assert families(early.since(0))["jobs"]["series"][0]["values"] == [
        [None, 10.0, 20.0, 5.0, 10.0]]


def test_the_merged_view_of_a_directory_has_a_history(tmp_path: Path) -> None:
    reporter = MetricsReporter([m.counter("app.job.stop.count", tags=["queue"])],
                               meter_provider=MeterProvider(), directory=tmp_path)
    with reporter, serve_directory(tmp_path, port=0, dashboard=True) as server:
        ticks_after(server, 1)
        for _ in range(5):
            vsrtel.execute(("app", "job", "stop"), {}, {"queue": "mail"})
        data = ticks_after(server, 2)
    rates = points(families(data)["app_job_stop_count"], "queue=mail")
    assert max(v for v in rates if v is not None) > 0


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


def test_a_failing_collector_is_logged_once_and_shown_on_the_page(
    server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing:
        def collect(self) -> list[Any]:
            raise RuntimeError("collector broke")

    collector = Failing()
    server.registry.register(collector)  # type: ignore[arg-type]
    data = ticks_after(server, 2)
    assert "application's log" in data["error"]  # the history so far is still answered
    broke = [r for r in caplog.records if "collector broke" in (r.exc_text or str(r.exc_info))]
    assert len(broke) == 1 and broke[0].name == "vsrtel"  # once per outage, not every second
    server.registry.unregister(collector)  # type: ignore[arg-type]
    assert ticks_after(server, 1)["error"] is None


# ----------------------------------------------------------------------------- real browser


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


# The page as the browser drew it, read in one script each time: charts are redrawn every
# second, so element handles found in one call can be stale by the next.
CHARTS = """return [...document.querySelectorAll('[data-metric]')].map(c => ({
  name: c.dataset.metric,
  x: [...c.querySelectorAll('text.x-tick')].map(t => t.textContent),
  y: [...c.querySelectorAll('text.y-tick')].map(t => t.textContent),
  lines: Object.fromEntries([...c.querySelectorAll('path[data-series]')].map(
    p => [p.dataset.series, p.getAttribute('stroke') + ' ' + p.getAttribute('stroke-dasharray')])),
  marked: !!c.querySelector('line.rule'),
  tip: c.querySelector('.tip').innerText,
  legend: [...c.querySelectorAll('li')].map(li => li.textContent),
  note: c.querySelector('.note').textContent,
  on_screen: c.getBoundingClientRect().bottom > 0 && c.getBoundingClientRect().top < innerHeight,
}))"""
CLOCK = re.compile(r"^\d\d:\d\d(:\d\d)?$")
# A round number, a readable prefix, the unit: "0", "2.5k", "250 ms", "1.5k/s", "40 µs".
NUMBER = r"-?\d+(\.\d+)?"
Y_TICK = {
    "counter": re.compile(rf"^{NUMBER}( [µm]?s| [kMG]?B|[kMG]?)/s$"),
    "gauge": re.compile(rf"^{NUMBER}( [µm]?s| [kMG]?B|[kMG]?)$"),
    "histogram": re.compile(rf"^{NUMBER} [µm]?s$"),  # the seconds of these tests' histograms
}


def charts(driver: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in driver.execute_script(CHARTS)}


def every_chart(driver: Any, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each chart, drawn: the page draws the charts on screen only, so scroll to each."""
    found = {}
    for name in names:
        driver.execute_script(
            f"document.querySelector('[data-metric=\"{name}\"]').scrollIntoView()")
        found[name] = wait_for(f"the chart of {name}",
                               lambda n=name: (c := charts(driver)[n])["lines"] and c["x"] and c)
    driver.execute_script("window.scrollTo(0, 0)")
    return found


def check_marked(found: dict[str, dict[str, Any]]) -> None:
    """The hovered instant is marked on every chart in view."""
    shown = [c for c in found.values() if c["on_screen"]]
    assert len(shown) >= 2 and all(c["marked"] for c in shown), shown


def check_axes(chart: dict[str, Any], kind: str) -> None:
    """Clock labels along the time axis, round ticks with the unit up the other."""
    assert len(chart["x"]) >= 2 and all(CLOCK.match(t) for t in chart["x"]), chart
    assert len(chart["y"]) >= 2 and all(Y_TICK[kind].match(t) for t in chart["y"]), chart


def hover(driver: Any, metric: str, right: float) -> dict[str, dict[str, Any]]:
    """Point at `metric`'s chart, `right` of the way across; the page as it shows that."""
    from selenium.webdriver.common.action_chains import ActionChains

    svg = driver.find_element("css selector", f'[data-metric="{metric}"] svg')
    width = svg.size["width"]
    ActionChains(driver).move_to_element_with_offset(svg, int(width * (right - 0.5)), 0).perform()
    return wait_for("the hovered values", lambda: (c := charts(driver))[metric]["tip"] and c)


def check_colours(found: dict[str, dict[str, Any]], label: str, at_least: int) -> None:
    """`label`'s line looks the same on every chart that has it."""
    styles = [c["lines"][label] for c in found.values() if label in c["lines"]]
    assert len(styles) >= at_least and len(set(styles)) == 1, styles


def check_history(driver: Any, before: float) -> None:
    """The page, opened `before` seconds after the server started, drew points from then."""
    first, opened = driver.execute_script(
        "return [vsrtelDashboard.times[0], performance.timeOrigin]")
    assert first < opened - 1000 * (before - 2)


def screenshot(driver: Any, path: Path) -> None:
    """A real, non-blank PNG, and no console errors."""
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    out = os.environ.get("VSRTEL_DASHBOARD_SCREENSHOTS")  # to regenerate docs/dashboard*.png
    if out:
        shutil.copy(path, Path(out) / path.name)


@pytest.mark.integration
def test_headless_chromium_draws_the_history_with_axes_hover_and_legend(
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
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.support.ui import Select

        ticks_after(server, 5)  # the page opens 5 s into the run
        assert server.dashboard_url is not None
        driver.get(server.dashboard_url)
        kinds = {"shop_order_stop_count": "counter", "shop_order_stop_seq": "gauge",
                 "shop_order_stop_duration_seconds": "histogram"}
        wait_for("a chart of every metric", lambda: charts(driver).keys() == kinds.keys())
        found = every_chart(driver, kinds)
        check_history(driver, before=5)
        for name, kind in kinds.items():
            check_axes(found[name], kind)
        assert any(t.endswith(" ms") for t in found["shop_order_stop_duration_seconds"]["y"])
        check_colours(found, "region=eu", at_least=2)
        assert sorted(found["shop_order_stop_count"]["lines"]) == ["region=eu", "region=us"]
        groups = driver.execute_script("return [...document.querySelectorAll('details')]"
                                       ".map(e => e.dataset.group)")
        assert groups == ["shop_order"]

        found = hover(driver, "shop_order_stop_duration_seconds", right=0.8)
        tip = found["shop_order_stop_duration_seconds"]["tip"].splitlines()
        assert CLOCK.match(tip[0]) and len(tip) == 3, tip
        assert all(re.fullmatch(r"region=(eu|us): [\d.]+ ms", t) for t in tip[1:]), tip
        check_marked(found)  # the same instant on every chart
        # The legends show that instant too, with units.
        assert all(re.fullmatch(r"([\d.]+k?/s|\u2013) ?region=(eu|us)", t)
                   for t in found["shop_order_stop_count"]["legend"]), found

        def latest(metric: str) -> dict[str, float]:
            """The legend's values (the latest, with the pointer away), in ms."""
            ActionChains(driver).move_to_element(
                driver.find_element("css selector", "h1")).perform()
            legend = wait_for("the latest values", lambda: (c := charts(driver)[metric])[
                "on_screen"] and not c["marked"] and c["legend"])
            values = [re.fullmatch(r"([\d.]+) ms ?(.*)", t) for t in legend]
            assert all(values), legend
            return {v[2]: float(v[1]) for v in values if v}

        # A distribution's chart shows p99 until told otherwise; the workload's durations
        # spread from 2 to 14 ms each second, so its p50 lies below.
        duration = "shop_order_stop_duration_seconds"
        p99 = latest(duration)
        Select(driver.find_element("css selector", f'[data-metric="{duration}"] select')
               ).select_by_visible_text("p50")
        p50 = latest(duration)
        assert p50.keys() == p99.keys() == {"region=eu", "region=us"}
        assert all(p50[k] < p99[k] for k in p50), (p50, p99)
        check_axes(charts(driver)[duration], "histogram")

        def lines(metric: str) -> list[str]:
            return sorted(charts(driver)[metric]["lines"])

        def click(metric: str, label: str, double: bool = False) -> None:
            item = driver.find_element(
                "xpath", f'//*[@data-metric="{metric}"]//li[contains(., "{label}")]')
            actions = ActionChains(driver)
            (actions.double_click(item) if double else actions.click(item)).perform()

        count = "shop_order_stop_count"
        click(count, "region=eu")  # hides it
        wait_for("region=eu hidden", lambda: lines(count) == ["region=us"])
        click(count, "region=eu")  # shows it again
        wait_for("region=eu back", lambda: lines(count) == ["region=eu", "region=us"])
        click(count, "region=us", double=True)  # alone
        wait_for("region=us alone", lambda: lines(count) == ["region=us"])
        click(count, "region=us", double=True)  # everything again
        wait_for("both again", lambda: lines(count) == ["region=eu", "region=us"])

        summary = driver.find_element("css selector", "details[data-group=shop_order] summary")
        summary.click()  # the group collapses
        assert not driver.execute_script("return document.querySelector('details').open")
        summary.click()
        assert driver.execute_script("return document.querySelector('details').open")
        screenshot(driver, tmp_path / "dashboard-shop.png")
    finally:
        stop.set()
        emitter.join(timeout=10)
        reporter.detach()
        if driver is not None:
            driver.quit()


@pytest.mark.integration
def test_fifty_charts_of_ten_series_refresh_in_the_browser(
    server: MetricsServer, tmp_path: Path
) -> None:
    """The cost figure: 50 charts x 10 series, redrawn every second; the time per refresh is
    measured in the page (performance.now() around merging and drawing) and printed."""
    ticks = itertools.count()

    class Fifty:
        def collect(self) -> list[Any]:
            n = next(ticks)
            out: list[Any] = []
            for chart in range(50):
                if chart % 5 == 0:
                    family: Any = HistogramMetricFamily(
                        f"load_h{chart}_seconds", "latency", labels=["node"], unit="seconds")
                    for node in range(10):
                        counts = [n * (i + node) for i in range(1, 11)]
                        family.add_metric([str(node)], [(str(0.001 * 2**i), c) for i, c in
                                                        enumerate(counts)] + [("+Inf", counts[-1])],
                                          sum_value=n)
                elif chart % 2:
                    family = CounterMetricFamily(f"load_c{chart}", "work", labels=["node"])
                    for node in range(10):
                        family.add_metric([str(node)], n * (node + 1) * (1 + chart % 3))
                else:
                    family = GaugeMetricFamily(f"load_g{chart}", "level", labels=["node"])
                    for node in range(25 if chart == 2 else 10):  # 15 past the cap
                        family.add_metric([str(node)], 100 * node + (n * 7919 % 13))
                out.append(family)
            return out

    server.registry.register(Fifty())  # type: ignore[arg-type]
    driver = chromium(tmp_path)
    try:
        ticks_after(server, 3)
        assert server.dashboard_url is not None
        driver.get(server.dashboard_url)

        def refreshes() -> list[float]:
            found: list[float] = driver.execute_script("return vsrtelDashboard.refreshMs")
            return found

        wait_for("10 refreshes", lambda: len(refreshes()) >= 11, timeout=60)
        assert len(charts(driver)) == 50
        found = every_chart(driver, charts(driver))
        assert all(len(c["lines"]) == 10 for c in found.values())
        assert found["load_g2"]["note"] == "15 more tag set(s) not drawn (at most 10 per chart)"
        assert all(c["note"] == "" for n, c in found.items() if n != "load_g2")
        for c in found.values():
            kind = "histogram" if "_h" in c["name"] else "counter" if "_c" in c["name"] else "gauge"
            check_axes(c, kind)
        check_colours(found, "node=3", at_least=50)
        times = sorted(refreshes()[1:])  # the first draws the whole history
        print(f"\n50 charts x 10 series: {statistics.median(times):.1f} ms per refresh "
              f"(median of {len(times)}, max {times[-1]:.1f} ms)")
        screenshot(driver, tmp_path / "dashboard-fifty.png")
    finally:
        driver.quit()


@pytest.mark.integration
def test_the_heavy_fault_demo_in_the_browser(tmp_path: Path) -> None:
    """``vsrtel demo --faults heavy --serve``: a page opened a few seconds into the run shows
    the run from its start, every chart with time and unit axes, hover values with units, one
    style per node on every chart. With VSRTEL_DASHBOARD_SCREENSHOTS=docs it waits 40 s
    into the run (the faults healed) and writes docs/dashboard.png and dashboard-hover.png."""
    docs = bool(os.environ.get("VSRTEL_DASHBOARD_SCREENSHOTS"))
    driver = chromium(tmp_path)
    driver.set_window_size(1400, 1250)
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
        started = time.monotonic()
        opened_after = 40 if docs else 6
        time.sleep(opened_after)
        expected = {f["name"]: f["type"] for f in json.loads(fetch(url + "api/metrics")[2])[
            "families"] if f["name"].startswith("vsr_")}
        assert len(expected) >= 10
        driver.get(url)

        wait_for("a chart of every VSR metric", lambda: expected.keys() <= charts(driver).keys())
        found = every_chart(driver, expected)
        check_history(driver, before=time.monotonic() - started - 1)
        for name, kind in expected.items():
            check_axes(found[name], kind)
        check_colours(found, "node_id=0", at_least=8)
        check_colours(found, "node_id=1", at_least=8)
        screenshot(driver, tmp_path / "dashboard.png")

        latency = "vsr_protocol_client_request_stop_duration_seconds"
        found = hover(driver, latency, right=0.3)
        tip = found[latency]["tip"].splitlines()
        assert CLOCK.match(tip[0]) and all(re.fullmatch(r"node_id=\d: ([\d.]+ [µm]?s|\u2013)", t)
                                           for t in tip[1:]), tip
        check_marked(found)
        commits = found["vsr_protocol_prepare_sent_count"]["legend"]  # beside the latency
        assert all(re.fullmatch(r"([\d.]+k?/s|\u2013) ?node_id=\d", t) for t in commits), commits
        screenshot(driver, tmp_path / "dashboard-hover.png")
    finally:
        driver.quit()
        demo.terminate()
        try:
            demo.wait(timeout=20)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
