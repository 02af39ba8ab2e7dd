"""The Prometheus scrape endpoint: HTTP behaviour, names, promtool, and a real Prometheus."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

import vsrtel
from vsrtel import metrics as m
from vsrtel.export.prometheus import (
    MAX_WAITING,
    MetricsServer,
    exposition,
    prometheus_reader,
    serve_metrics,
    serve_registry,
)
from vsrtel.handlers.metrics import MetricsReporter

IN_CI = os.environ.get("CI", "").lower() == "true"
T = TypeVar("T")


def fetch(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    with serve_metrics(port=0) as s:
        yield s


@pytest.fixture
def registry() -> vsrtel.Registry:
    return vsrtel.Registry()


def one_of_each() -> list[m.Metric]:
    return [
        m.counter("shop.order.stop.count", tags=["region"]),
        m.sum("shop.order.stop.amount", unit="byte", tags=["region"]),
        m.sum("shop.cart.change.items", reporter_options={"monotonic": False}),
        m.last_value("shop.cart.change.size"),
        m.distribution("shop.order.stop.duration", unit=("native", "second"), tags=["region"]),
        m.summary("shop.order.stop.latency", measurement="duration", unit="native"),
    ]


def emit_orders(registry: vsrtel.Registry) -> None:
    for region, ns, amount in (("eu", 2_000_000, 100), ("eu", 30_000_000, 50), ("us", 5, 7)):
        registry.execute(
            "shop.order.stop", {"duration": ns, "amount": amount}, {"region": region}
        )
    registry.execute("shop.cart.change", {"items": 3, "size": 3})
    registry.execute("shop.cart.change", {"items": -1, "size": 2})


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if not k.startswith("otel_scope")}
            out[(s.name, frozenset(labels.items()))] = s.value
    return out


# ----------------------------------------------------------------------------- HTTP


def test_reader_uses_a_private_registry() -> None:
    reader, registry = prometheus_reader()
    assert registry is not REGISTRY
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("x.y").add(2)
    names = {f.name for f in registry.collect()}
    assert "x_y" in names
    assert "x_y" not in {f.name for f in REGISTRY.collect()}
    provider.shutdown()


def test_endpoints(server: MetricsServer) -> None:
    assert server.host == "127.0.0.1"  # loopback unless asked otherwise
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, ctype, body = fetch(server.url)
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    status, ctype, body = fetch(server.base_url + "/health")
    assert (status, body) == (200, "OK")
    status, _, body = fetch(server.base_url + "/nope")
    assert status == 404


def test_openmetrics_when_the_scraper_asks(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider,
                           registry=registry):
        emit_orders(registry)
        _, ctype, body = fetch(server.url, accept="application/openmetrics-text;version=1.0.0")
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    assert "# UNIT shop_order_stop_duration_seconds seconds" in body


def test_head_answers_like_get_without_a_body(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider,
                           registry=registry):
        emit_orders(registry)
        for path in ("/metrics", "/health"):
            request = urllib.request.Request(server.base_url + path, method="HEAD")
            with urllib.request.urlopen(request, timeout=10) as head:
                assert head.status == 200
                assert head.read() == b""
                length = int(head.headers["Content-Length"])
            with urllib.request.urlopen(server.base_url + path, timeout=10) as get:
                assert length == len(get.read()) > 0
                assert head.headers["Content-Type"] == get.headers["Content-Type"]


class FailingCollector:
    def collect(self) -> list[Any]:
        raise RuntimeError("collector broke")


def test_a_failing_collector_is_a_logged_500_and_the_endpoint_lives_on(
    server: MetricsServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    collector = FailingCollector()
    server.registry.register(collector)  # type: ignore[arg-type]
    status, _, body = fetch(server.url)
    assert status == 500 and "see the application's log" in body
    assert any(
        r.name == "vsrtel" and "collector broke" in (r.exc_text or str(r.exc_info))
        for r in caplog.records
    )
    assert "Traceback" not in capfd.readouterr().err  # reported to the log, not stderr
    server.registry.unregister(collector)  # type: ignore[arg-type]
    assert fetch(server.url)[0] == 200
    assert fetch(server.base_url + "/health")[0] == 200


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_connections": 0}, "max_connections"), ({"read_timeout": 0}, "read_timeout"),
     ({"read_timeout": float("inf")}, "read_timeout"), ({"max_connections": True}, "max_conn")],
)
def test_bad_limits(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        serve_metrics(port=0, **kwargs)


# ----------------------------------------------------------------------------- under load
# Loopback only, bounded in count and time; no timing assertions beyond generous timeouts.


def test_200_concurrent_scrapes_are_all_answered(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    clients = 200
    start = threading.Barrier(clients)
    answers: list[object] = []

    def scrape() -> None:
        start.wait(timeout=30)
        try:
            answers.append(fetch(server.url)[0])
        except OSError as exc:  # a refused or timed-out connection is a lost scrape
            answers.append(exc)

    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider,
                           registry=registry):
        emit_orders(registry)
        threads = [threading.Thread(target=scrape) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert answers == [200] * clients


def test_idle_connections_hold_no_thread_and_are_dropped() -> None:
    idle = 40
    with serve_metrics(port=0, max_connections=4, read_timeout=0.3) as server:

        def handler_threads() -> int:
            name = f"vsrtel-metrics-{server.port}-connection"
            return sum(t.name == name for t in threading.enumerate())

        before = handler_threads()
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                   for _ in range(idle)]
        try:
            most = 0
            for sock in sockets:  # each is dropped once its time to send a request is up
                most = max(most, handler_threads() - before)
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1) == b""
        finally:
            for sock in sockets:
                sock.close()
        assert most == 0
        assert fetch(server.url)[0] == 200  # the endpoint still answers
        deadline = time.monotonic() + 30
        while handler_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handler_threads() == before


def scrape_within(server: MetricsServer, seconds: float) -> int:
    """The status of one scrape that must be answered within ``seconds`` (else OSError)."""
    with urllib.request.urlopen(server.url, timeout=seconds) as resp:
        resp.read()
        status: int = resp.status
        return status


@pytest.mark.parametrize("idle", [100, MAX_WAITING + 40])  # beyond the cap, the oldest go
def test_a_scrape_is_answered_within_5s_with_100_idle_sockets_open(idle: int) -> None:
    with serve_metrics(port=0) as server:  # the default limits: 32 threads, 5 s per request
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                   for _ in range(idle)]
        try:
            time.sleep(0.2)  # every idle socket is accepted before the scrape connects
            assert scrape_within(server, 5) == 200
        finally:
            for sock in sockets:
                sock.close()


def test_a_scrape_is_answered_within_10s_with_32_slowloris_clients() -> None:
    # Each client sends a request line, then one more header line every second, never the
    # blank line that ends the head: no read ever waits 5 s, yet no request completes.
    with serve_metrics(port=0) as server:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                   for _ in range(32)]
        stop = threading.Event()

        def trickle() -> None:
            for sock in sockets:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            while not stop.wait(1.0):
                for sock in sockets:
                    with contextlib.suppress(OSError):  # dropped by the server: fine
                        sock.sendall(b"X-Slow: 1\r\n")

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            time.sleep(1.5)  # every slow client has started its request before the scrape
            assert scrape_within(server, 10) == 200
        finally:
            stop.set()
            sender.join(timeout=30)
            for sock in sockets:
                sock.close()


def test_a_request_trickling_in_is_dropped_when_its_time_is_up() -> None:
    with serve_metrics(port=0, read_timeout=1.0) as server, socket.create_connection(
        ("127.0.0.1", server.port), timeout=0.2
    ) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        for _ in range(90):  # a header line every 0.2 s, for up to 18 s
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                if sock.recv(1) == b"":  # closed by the server
                    break
            except TimeoutError:
                continue
            except OSError:  # reset by the server
                break
        else:
            pytest.fail("a request still unfinished after 18 s was not dropped")


def test_complete_requests_beyond_the_thread_cap_are_all_answered() -> None:
    with serve_metrics(port=0, max_connections=1) as server:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                   for _ in range(20)]
        try:
            for sock in sockets:
                sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            answers = []
            for sock in sockets:
                with sock.makefile("rb") as answer:
                    answers.append(answer.read())
        finally:
            for sock in sockets:
                sock.close()
        assert all(a.startswith(b"HTTP/1.0 200") and a.endswith(b"OK") for a in answers)


def test_close_returns_while_every_slot_is_taken() -> None:
    server = serve_metrics(port=0, max_connections=2, read_timeout=60)
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
               for _ in range(6)]
    try:
        closer = threading.Thread(target=server.close)
        closer.start()
        closer.join(timeout=30)
        assert not closer.is_alive()
    finally:
        for sock in sockets:
            sock.close()


def test_an_empty_host_is_refused() -> None:
    with pytest.raises(ValueError, match=r"host must be .* got ''.*'0\.0\.0\.0'"):
        serve_metrics(port=0, host="")
    _, prom_registry = prometheus_reader()
    with pytest.raises(ValueError, match="host"):
        serve_registry(prom_registry, port=0, host="")


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_bind_beyond_loopback_warns_once_naming_the_address(host: str) -> None:
    # Tests bind loopback only: the port is taken on 127.0.0.1, so this bind fails after warning.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.warns(RuntimeWarning) as warned, pytest.raises(OSError):
            serve_metrics(port=port, host=host, dashboard=True)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert repr(host) in message and str(port) in message and "dashboard" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_bind_does_not_warn(host: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serve_metrics(port=0, host=host).close()


def test_port_in_use_names_the_port(server: MetricsServer) -> None:
    with pytest.raises(OSError, match=f"port {server.port} is already in use"):
        serve_metrics(port=server.port)


@pytest.mark.parametrize("port", [-1, 70000, "9464", True])
def test_bad_port(port: Any) -> None:
    with pytest.raises(ValueError, match="port"):
        serve_metrics(port=port)


def test_close_releases_the_port_and_is_idempotent() -> None:
    s = serve_metrics(port=0)
    port = s.port
    s.close()
    s.close()
    assert "closed" in repr(s)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    with serve_metrics(port=port) as again:
        assert fetch(again.base_url + "/health")[0] == 200


def test_serve_registry_for_an_external_provider(registry: vsrtel.Registry) -> None:
    reader, prom_registry = prometheus_reader()
    provider = MeterProvider(metric_readers=[reader])
    with serve_registry(prom_registry, port=0, meter_provider=provider) as s:
        assert s.meter_provider is provider
        with MetricsReporter([m.counter("ext.e.n")], meter_provider=provider,
                               registry=registry):
            registry.execute("ext.e", {})
            assert samples(fetch(s.url)[2])[("ext_e_n_total", frozenset())] == 1
    # The server does not shut down a provider it does not own.
    provider.get_meter("t").create_counter("still.alive").add(1)
    provider.shutdown()


# ----------------------------------------------------------------------------- rendering


def odd_metrics() -> list[m.Metric]:
    return [
        *one_of_each(),
        m.distribution("shop.order.stop.size", measurement="amount",
                       tags=["region", "zone"], reporter_options={"buckets": [-10, 0, 10]}),
        m.counter("odd.e.n", tags=lambda md: md, reporter_options={"max_series": 3}),
        m.sum("odd.e.big", measurement="v", unit="By", tags=["id"]),
        m.last_value("odd.e.last", measurement="v", unit="1"),
    ]


def emit_odd(registry: vsrtel.Registry) -> None:
    emit_orders(registry)
    for region in ('quote " back \\ new\nline %d.0', "caf\udce9", "ünïcode"):
        registry.execute("shop.order.stop", {"duration": 10**12, "amount": -3},
                         {"region": region, "zone": "z"})
    for i, v in enumerate([10**20, 1_234_567, 0.1, -2.5e-300, 1e300]):
        # a tags callable with varying keys, then the overflow series
        registry.execute("odd.e", {"v": v}, {"id": str(i)} if i % 2 else {"x.y": i})


def reference(scope_labels: bool, resource: Resource) -> tuple[MetricsServer, vsrtel.Registry]:
    """Today's way: the same metrics through OpenTelemetry's exporter and prometheus_client."""
    reader, prom_registry = prometheus_reader(scope_labels=scope_labels)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    registry = vsrtel.Registry()
    MetricsReporter(odd_metrics(), meter_provider=provider, registry=registry).attach()
    return serve_registry(prom_registry, port=0, meter_provider=provider), registry


ACCEPTS = [
    None,
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",  # left to prometheus_client
    # What Prometheus 3 sends.
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
    "escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
]


@pytest.mark.parametrize("scope_labels", [False, True])
def test_the_scrape_is_byte_for_byte_the_exporters(scope_labels: bool) -> None:
    resource = Resource.create({"service.name": "shop"})
    with serve_metrics(port=0, scope_labels=scope_labels, resource=resource) as server:
        ours = vsrtel.Registry()
        MetricsReporter(odd_metrics(), meter_provider=server.meter_provider,
                        registry=ours).attach()
        old, theirs = reference(scope_labels, resource)
        with old:
            for registry in (ours, theirs):
                emit_odd(registry)
            for accept in ACCEPTS:
                for query in ("", "?name[]=odd_e_n_total&name[]=target_info"):
                    status, ctype, body = fetch(server.url + query, accept)
                    assert status == 200
                    assert (ctype, body) == fetch(old.url + query, accept)[1:], (accept, query)
            # the parsers and promtool take it
            body = fetch(server.url)[2]
            assert len(list(text_string_to_metric_families(body))) == 10
            assert promtool_findings(body)[0] == 0
            openmetrics = fetch(server.url, ACCEPTS[1])[2]
            assert len(list(om_families(openmetrics))) == 10


def test_a_scrape_is_gzipped_at_the_fastest_level_when_accepted(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider, registry=registry):
        emit_orders(registry)
        plain = fetch(server.url)[2].encode()
        for accept_encoding in ("gzip", "br, GZIP;q=0.5", "deflate, gzip"):
            request = urllib.request.Request(
                server.url, headers={"Accept-Encoding": accept_encoding}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.headers["Content-Encoding"] == "gzip"
                body = resp.read()
            assert gzip.decompress(body) == plain
            assert body[8] == 4  # gzip's XFL byte: 4 is "fastest" (level 1), 2 "best" (9)
        for accept_encoding in ("gzip;q=0", "identity", "br"):
            request = urllib.request.Request(
                server.url, headers={"Accept-Encoding": accept_encoding}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.headers["Content-Encoding"] is None
                assert resp.read() == plain


def test_target_info_is_served_only_beside_some_metric(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider, registry=registry):
        assert fetch(server.url)[2] == ""
        assert fetch(server.url, ACCEPTS[1])[2] == "# EOF\n"
        registry.execute("shop.cart.change", {"items": 1, "size": 1})
        names = [f.name for f in text_string_to_metric_families(fetch(server.url)[2])]
    assert names == ["target_info", "shop_cart_change_items", "shop_cart_change_size"]


def test_an_sdk_instrument_of_a_reported_name_wins_and_no_family_is_doubled(
    server: MetricsServer, registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.meter_provider is not None
    server.meter_provider.get_meter("app").create_counter("shop.order.stop.count").add(5)
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider, registry=registry):
        emit_orders(registry)
        for _ in range(2):
            text = fetch(server.url)[2]
            names = [f.name for f in text_string_to_metric_families(text)]
            assert names.count("shop_order_stop_count") == 1
            assert samples(text)[("shop_order_stop_count_total", frozenset())] == 5
    warned = [r for r in caplog.records if "reported both" in r.getMessage()]
    assert len(warned) == 1 and "shop.order.stop.count" not in warned[0].getMessage()
    assert "shop_order_stop_count" in warned[0].getMessage()


def test_scrapes_keep_a_histograms_min_and_max_for_other_readers(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    assert server.meter_provider is not None
    memory = InMemoryMetricReader()
    server.meter_provider.add_metric_reader(memory)
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider, registry=registry):
        emit_orders(registry)
        fetch(server.url)  # reads the cells, min and max with them
        fetch(server.url)
        data = memory.get_metrics_data()
    assert data is not None
    points = {
        p.attributes["region"]: p
        for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
        if metric.name == "shop.order.stop.duration" for p in metric.data.data_points
    }
    assert (points["eu"].min, points["eu"].max) == pytest.approx((0.002, 0.03))
    assert (points["us"].min, points["us"].max) == pytest.approx((5e-9, 5e-9))


def test_the_registry_and_dashboard_still_see_vsrtel_metrics(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider, registry=registry):
        emit_orders(registry)
        assert generate_latest(server.registry).decode() == fetch(server.url)[2]


# ----------------------------------------------------------------------------- names


def test_prometheus_names_units_and_values(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider,
                           registry=registry):
        emit_orders(registry)
        text = fetch(server.url)[2]
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["shop_order_stop_count"] == "counter"
    assert types["shop_order_stop_amount_bytes"] == "counter"
    assert types["shop_cart_change_items"] == "gauge"  # non-monotonic sum
    assert types["shop_cart_change_size"] == "gauge"
    assert types["shop_order_stop_duration_seconds"] == "histogram"
    assert types["shop_order_stop_latency_seconds"] == "histogram"
    s = samples(text)
    eu = frozenset({("region", "eu")})
    assert s[("shop_order_stop_count_total", eu)] == 2
    assert s[("shop_order_stop_amount_bytes_total", eu)] == 150
    assert s[("shop_cart_change_items", frozenset())] == 2
    assert s[("shop_cart_change_size", frozenset())] == 2
    assert s[("shop_order_stop_duration_seconds_sum", eu)] == pytest.approx(0.032)
    assert s[("shop_order_stop_duration_seconds_count", eu)] == 2
    assert s[("shop_order_stop_duration_seconds_bucket", eu | {("le", "0.0025")})] == 1
    assert s[("shop_order_stop_latency_seconds_count", frozenset())] == 3


def promtool_findings(text: str) -> tuple[int, str, str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is not on PATH; CI must install it (Debian package prometheus)")
        pytest.skip("promtool not installed")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout, result.stderr


def test_a_tag_value_utf8_cannot_encode_fails_no_scrape(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    bad = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 file name: a lone surrogate in UTF-8 mode
    with MetricsReporter([m.counter("files.read.count", tags=["name"])],
                           meter_provider=server.meter_provider, registry=registry):
        registry.execute("files.read", {}, {"name": "ok.txt"})
        registry.execute("files.read", {}, {"name": bad})
        for _ in range(2):  # the series stays: every later scrape must answer too
            status, _, text = fetch(server.url)
            assert status == 200
            s = samples(text)
            assert s[("files_read_count_total", frozenset({("name", "ok.txt")}))] == 1
            assert s[("files_read_count_total", frozenset({("name", "caf\\udce9.txt")}))] == 1
        assert fetch(server.url, accept="application/openmetrics-text;version=1.0.0")[0] == 200
        assert fetch(server.base_url + "/health")[0] == 200
    assert promtool_findings(text) == (0, "", "")


def test_series_carry_only_their_tags_unless_scope_labels_are_asked_for(
    registry: vsrtel.Registry,
) -> None:
    for scope_labels in (False, True):
        with serve_metrics(port=0, scope_labels=scope_labels) as server, MetricsReporter(
            one_of_each(), meter_provider=server.meter_provider, registry=registry
        ):
            emit_orders(registry)
            text = fetch(server.url)[2]
        labels = {k for f in text_string_to_metric_families(text) for s in f.samples
                  for k in s.labels}
        assert ("otel_scope_name" in labels) is scope_labels
        if not scope_labels:
            assert 'shop_order_stop_count_total{region="eu"} 2.0' in text.splitlines()
        assert promtool_findings(text) == (0, "", "")


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env}, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


SHOW_TARGET_INFO = """
import urllib.request
from vsrtel.export import otel
from vsrtel.export.prometheus import serve_metrics
from vsrtel import metrics as m
from vsrtel.handlers.metrics import MetricsReporter
import vsrtel
{setup}
with serve_metrics(port=0) as server:
    MetricsReporter([m.counter("a.b.n")], meter_provider=server.meter_provider).attach()
    vsrtel.execute("a.b", {{}})
    text = urllib.request.urlopen(server.url, timeout=10).read().decode()
print([line for line in text.splitlines() if line.startswith("target_info")][0])
"""


def test_serve_metrics_names_the_service_configure_named() -> None:
    # The README's tour: otel.configure (step 3), then serve_metrics (step 4).
    configured = run_python(SHOW_TARGET_INFO.format(
        setup='otel.configure("items-api", resource_attributes={"team": "a"}).shutdown()'
    ))
    assert 'service_name="items-api"' in configured and 'team="a"' in configured
    assert 'service_name="from-env"' in run_python(
        SHOW_TARGET_INFO.format(setup=""), OTEL_SERVICE_NAME="from-env"
    )
    assert 'service_name="vsrtel"' in run_python(
        SHOW_TARGET_INFO.format(setup=""), OTEL_SERVICE_NAME=""
    )


def test_overflow_series_is_exposed(server: MetricsServer, registry: vsrtel.Registry) -> None:
    defs = [m.counter("ov.e.n", tags=["id"], reporter_options={"max_series": 2})]
    with MetricsReporter(defs, meter_provider=server.meter_provider, registry=registry):
        for i in range(5):
            registry.execute("ov.e", {}, {"id": str(i)})
        s = samples(fetch(server.url)[2])
    assert s[("ov_e_n_total", frozenset({("id", ""), ("otel_metric_overflow", "true")}))] == 3


def test_promtool_check_metrics_is_clean(
    server: MetricsServer, registry: vsrtel.Registry
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is not on PATH; CI must install it (Debian package prometheus)")
        pytest.skip("promtool not installed")
    with MetricsReporter(one_of_each(), meter_provider=server.meter_provider,
                           registry=registry):
        emit_orders(registry)
        text = fetch(server.url)[2]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_promtool_finds_problems_it_is_meant_to_find(server: MetricsServer) -> None:
    # Guards the test above: a non-base unit is a finding, so an empty output means something.
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is not on PATH; CI must install it (Debian package prometheus)")
        pytest.skip("promtool not installed")
    assert server.meter_provider is not None
    server.meter_provider.get_meter("t").create_histogram("slow.thing", unit="ms").record(1)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=fetch(server.url)[2], capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "milliseconds" in result.stdout + result.stderr


# ----------------------------------------------------------------------------- real Prometheus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, probe: Callable[[], T | None], proc: subprocess.Popen[bytes],
             timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode} while waiting {what}")
        try:
            value = probe()
        except (OSError, ValueError, KeyError, IndexError):
            value = None
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.integration
def test_real_prometheus_scrapes_the_endpoint(
    server: MetricsServer, registry: vsrtel.Registry, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        if IN_CI:
            pytest.fail(
                "the prometheus binary is not on PATH but CI=true: this test must run in CI "
                "(.ci/run installs the Debian package 'prometheus')"
            )
        pytest.skip("prometheus not installed (apt-get install prometheus)")

    reporter = MetricsReporter(one_of_each(), meter_provider=server.meter_provider,
                                 registry=registry).attach()
    emit_orders(registry)

    api_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: vsrtel\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{api_port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{api_port}/api/v1"

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"{api}/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def target_up() -> bool | None:
        with urllib.request.urlopen(f"{api}/targets", timeout=5) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        return True if targets and targets[0]["health"] == "up" else None

    def value_of(expr: str, expected: float) -> float | None:
        result = query(expr)
        value = float(result[0]["value"][1]) if result else None
        return value if value == pytest.approx(expected) else None

    try:
        wait_for("the target to be up", target_up, proc)
        assert wait_for("the counter", lambda: value_of(
            'shop_order_stop_count_total{region="eu"}', 2), proc) == 2
        registry.execute("shop.order.stop", {"duration": 1_000_000_000, "amount": 1},
                         {"region": "eu"})
        # A later scrape sees the new value: Prometheus reads live data, not a snapshot.
        assert wait_for("the counter to move", lambda: value_of(
            'shop_order_stop_count_total{region="eu"}', 3), proc) == 3
        assert wait_for("the histogram", lambda: value_of(
            'shop_order_stop_duration_seconds_count{region="eu"}', 3), proc) == 3
        assert wait_for("the gauge", lambda: value_of("shop_cart_change_size", 2), proc) == 2
        summed = query('sum(shop_order_stop_amount_bytes_total{region="eu"})')
        assert float(summed[0]["value"][1]) == 151
        up = query('up{job="vsrtel"}')
        assert float(up[0]["value"][1]) == 1
    except AssertionError:
        log.flush()
        print((tmp_path / "prometheus.log").read_text()[-4000:])
        raise
    finally:
        reporter.detach()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def test_exposition_reports_the_exporters_names_types_units_and_labels() -> None:
    found = exposition(
        [
            m.counter("app.request.stop.count", tags=["route"]),
            m.distribution("app.request.stop.duration", unit=("native", "second")),
            m.last_value("app.queue.depth", keep=lambda md: md["queue"] == "main"),
            m.sum("app.bytes.sent", measurement=lambda ms: ms["n"] * 2, tags=lambda md: {"p": 1}),
        ]
    )
    assert [(f.name, f.type, f.unit, f.labels) for f in found] == [
        ("app_request_stop_count", "counter", "", ("route",)),
        ("app_request_stop_duration_seconds", "histogram", "seconds", ()),
        ("app_queue_depth", "gauge", "", ()),
        ("app_bytes_sent", "counter", "", ("p",)),
    ]
    assert found[0].samples == ("app_request_stop_count_total",)
    assert "app_request_stop_duration_seconds_bucket" in found[1].samples


def test_exposition_names_a_metric_whose_tags_reject_stand_in_metadata() -> None:
    with pytest.raises(ValueError, match=r"'a\.b\.c'"):
        exposition([m.counter("a.b.c", tags=lambda md: {"k": md["x"]["y"]})])
