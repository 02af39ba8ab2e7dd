"""Multi-process mode under real pre-fork servers: gunicorn, uvicorn and uWSGI, on loopback.

Each test starts the server on a free port with ``VSRTEL_MULTIPROC_DIR`` set, sends a known
number of requests over several connections, and checks that one scrape (answered by whichever
worker) counts them all; every scrape must pass ``promtool check metrics``.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pre-fork servers are POSIX")

COUNTER = "app_request_stop_count_total"
HISTOGRAM_COUNT = "app_request_stop_duration_seconds_count"

COMMON = """
import os, signal, time
import vsrtel
from vsrtel import metrics as m
from vsrtel.handlers.metrics import MetricsReporter

METRICS = [
    m.counter("app.request.stop.count", tags=["route"]),
    m.distribution("app.request.stop.duration", unit=("native", "second"), tags=["route"]),
    m.last_value("app.request.stop.inflight", reporter_options={"multiprocess_mode": "live_sum"}),
]
MetricsReporter(METRICS).attach()  # the directory: VSRTEL_MULTIPROC_DIR


def handle(path):
    if path == "/die":  # a worker killed mid-run, before it counts anything
        os.kill(os.getpid(), signal.SIGKILL)
    start = time.perf_counter_ns()
    body = b"hello from %d" % os.getpid()
    vsrtel.execute(
        ("app", "request", "stop"),
        {"duration": time.perf_counter_ns() - start, "inflight": 1},
        {"route": path},
    )
    return body
"""

WSGI_APP = COMMON + """
from vsrtel.export.multiprocess import wsgi_app

metrics = wsgi_app()


def app(environ, start_response):
    if environ["PATH_INFO"] in ("/metrics", "/health"):
        return metrics(environ, start_response)
    body = handle(environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

ASGI_APP = COMMON + """
from vsrtel.export.multiprocess import asgi_app

metrics = asgi_app()


async def app(scope, receive, send):
    if scope["type"] != "http" or scope["path"] in ("/metrics", "/health"):
        return await metrics(scope, receive, send)
    body = handle(scope["path"])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server process group started for one test, stopped (and reaped) at its end."""

    def __init__(self, tmp_path: Path, source: str, command: list[str]) -> None:
        self.directory = tmp_path / "metrics"
        self.directory.mkdir()
        app_dir = tmp_path / "app"
        app_dir.mkdir()
        (app_dir / "service.py").write_text(textwrap.dedent(source))
        self.port = free_port()
        env = {**os.environ, "VSRTEL_MULTIPROC_DIR": str(self.directory)}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(app_dir), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        self.log = (tmp_path / "server.log").open("wb")
        self.process = subprocess.Popen(
            [arg.format(port=self.port) for arg in command],
            cwd=app_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start:\n{self.output()}")
            time.sleep(0.2)

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200, body
        text = body.decode()
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode() + text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
        }

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def files(self) -> list[str]:
        return [name for name in os.listdir(self.directory) if name.endswith(".vsm")]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()


def send(server: Server, paths: list[str], connections: int = 6) -> int:
    """Send a GET of each path over `connections` concurrent clients; how many got a 200."""

    def one(path: str) -> bool:
        try:
            return server.get(path)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(one, paths))


def gunicorn(*options: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--worker-class",
        "sync", "--graceful-timeout", "5", *options, "service:app",
    ]


needs = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed"
)


@needs
def test_gunicorn_with_four_workers_counts_every_request_in_one_scrape(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    server = Server(tmp_path, WSGI_APP, gunicorn("--workers", "4"))
    try:
        n = 400
        assert send(server, ["/hello"] * n) == n
        samples = server.scrape()
        assert samples[(COUNTER, (("route", "/hello"),))] == n
        assert samples[(HISTOGRAM_COUNT, (("route", "/hello"),))] == n
        # Every worker answered some of them (else this proves little).
        pids = {name.split("-")[1] for name in server.files() if name.startswith("w-")}
        assert len(pids) >= 2
    finally:
        server.stop()


@needs
def test_gunicorn_worker_killed_mid_run_loses_nothing_and_no_scrape_goes_down(
    tmp_path: Path,
) -> None:
    pytest.importorskip("gunicorn")
    server = Server(tmp_path, WSGI_APP, gunicorn("--workers", "4"))
    try:
        seen: list[float] = []
        stop = threading.Event()

        def scraper() -> None:
            while not stop.is_set():
                try:
                    samples = server.scrape()
                except (OSError, http.client.HTTPException):
                    continue
                seen.append(samples.get((COUNTER, (("route", "/hello"),)), 0))
                time.sleep(0.05)

        watcher = threading.Thread(target=scraper)
        watcher.start()
        try:
            paths = ["/hello"] * 300
            for at in (50, 150, 250):
                paths.insert(at, "/die")
            answered = send(server, paths)
        finally:
            stop.set()
            watcher.join(timeout=120)
        assert answered == 300  # the three /die requests got no answer
        samples = server.scrape()
        assert samples[(COUNTER, (("route", "/hello"),))] == 300
        assert samples[(HISTOGRAM_COUNT, (("route", "/hello"),))] == 300
        seen.append(samples[(COUNTER, (("route", "/hello"),))])
        assert len(seen) >= 2
        assert seen == sorted(seen), seen
        # The gauge counts live workers only (each set it to 1): the killed ones are gone.
        assert samples[("app_request_stop_inflight", ())] <= 4
    finally:
        server.stop()


@needs
def test_gunicorn_recycling_workers_keeps_the_file_count_bounded(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    server = Server(
        tmp_path, WSGI_APP, gunicorn("--workers", "2", "--max-requests", "5")
    )
    try:
        most = 0
        total = 0
        for _ in range(12):
            total += send(server, ["/hello"] * 25, connections=4)
            most = max(most, len(server.files()))
        samples = server.scrape()
        # Workers were recycled dozens of times (5 requests each), yet no count is lost ...
        assert total == 300
        assert samples[(COUNTER, (("route", "/hello"),))] == total
        # ... and the directory holds the archive, the live workers' files and a few dead
        # ones not yet folded, not one file per worker ever started.
        assert most <= 2 + 1 + 8 + 1, server.files()
    finally:
        server.stop()


@needs
def test_uvicorn_with_two_workers_counts_every_request_in_one_scrape(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    server = Server(tmp_path, ASGI_APP, [
        sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}",
        "--workers", "2", "--no-access-log", "service:app",
    ])
    try:
        n = 200
        assert send(server, ["/hello"] * n) == n
        samples = server.scrape()
        assert samples[(COUNTER, (("route", "/hello"),))] == n
        assert samples[(HISTOGRAM_COUNT, (("route", "/hello"),))] == n
    finally:
        server.stop()


def uwsgi(*options: str) -> list[str]:
    """uWSGI for this Python (the dev extra's ``pyuwsgi``, or ``pip install uwsgi``, puts it
    beside the interpreter)."""
    found = Path(sys.executable).with_name("uwsgi")
    if not found.is_file():
        pytest.skip("uWSGI is not installed for this Python (pip install pyuwsgi)")
    return [
        str(found), "--http-socket", "127.0.0.1:{port}", "--master", "--processes", "4",
        "--module", "service:app", "--need-app", "--die-on-term", "--disable-logging",
        *options,
    ]


@needs
@pytest.mark.parametrize(
    "fork",
    [
        # Each worker imports the app after the fork.
        "--lazy-apps",
        # The master imports the app (and here records an event) before forking, as gunicorn's
        # --preload: Python's fork hooks run in the workers only with this option.
        "--py-call-osafterfork",
    ],
)
def test_uwsgi_with_four_workers_counts_every_request_in_one_scrape(
    tmp_path: Path, fork: str
) -> None:
    server = Server(tmp_path, WSGI_APP + '\nhandle("/imported")\n', uwsgi(fork))
    try:
        # Imported in each worker, or once in the master.
        imports = 4 if fork == "--lazy-apps" else 1
        deadline = time.monotonic() + 60  # until every worker has loaded the app
        while len(server.files()) < imports and time.monotonic() < deadline:
            time.sleep(0.1)
        n = 400
        assert send(server, ["/hello"] * n) == n
        samples = server.scrape()
        assert samples[(COUNTER, (("route", "/hello"),))] == n
        assert samples[(HISTOGRAM_COUNT, (("route", "/hello"),))] == n
        assert samples[(COUNTER, (("route", "/imported"),))] == imports
        assert "--py-call-osafterfork" not in server.output()  # no warning
        pids = {name.split("-")[1] for name in server.files() if name.startswith("w-")}
        assert len(pids) >= 2
    finally:
        server.stop()


@needs
def test_uwsgi_forking_without_python_fork_hooks_is_warned_about(tmp_path: Path) -> None:
    server = Server(tmp_path, WSGI_APP, uwsgi())
    try:
        assert server.get("/hello")[0] == 200
        assert "run uWSGI with --lazy-apps or --py-call-osafterfork" in server.output()
    finally:
        server.stop()


WEB_APP = """
import os
import vsrtel
from vsrtel.export.multiprocess import wsgi_app
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.web import METRICS
from vsrtel.web.wsgi import TelemetryMiddleware

MetricsReporter(METRICS).attach()  # the directory: VSRTEL_MULTIPROC_DIR
metrics = wsgi_app()


def route(environ):
    parts = environ["PATH_INFO"].split("/")
    return "/users/{user_id}" if parts[1:2] == ["users"] else environ["PATH_INFO"]


def service(environ, start_response):
    if environ["PATH_INFO"] == "/unavailable":
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from %d" % os.getpid()]


traced = TelemetryMiddleware(service, route=route)


def app(environ, start_response):
    if environ["PATH_INFO"] in ("/metrics", "/health"):
        return metrics(environ, start_response)
    return traced(environ, start_response)
"""


@needs
def test_gunicorn_web_service_counts_requests_by_route_and_status_class(tmp_path: Path) -> None:
    """The WSGI middleware and the recommended web metrics under gunicorn with four workers:
    one scrape holds every request, by route template and status class."""
    pytest.importorskip("gunicorn")
    server = Server(tmp_path, WEB_APP, gunicorn("--workers", "4"))
    try:
        users = [f"/users/{n}" for n in range(300)]
        assert send(server, users) == 300
        send(server, ["/unavailable"] * 40)  # 503s
        samples = server.scrape()
    finally:
        server.stop()

    def requests(route: str, status_class: str) -> float:
        labels = (("http_request_method", "GET"), ("http_response_status_class", status_class),
                  ("http_route", route))
        return samples[("http_server_request_duration_seconds_count", labels)]

    assert requests("/users/{user_id}", "2xx") == 300
    assert requests("/unavailable", "5xx") == 40
    active = [v for (name, _), v in samples.items() if name == "http_server_active_requests"]
    assert active == [0]
