"""Multi-process mode: each process's series in its own file of a directory, merged on scrape.

Worker processes are forked here (as a pre-fork server forks them); the real servers
(gunicorn, uvicorn) are in test_multiprocess_servers.py.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    Metric,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vsrtel
from vsrtel import metrics as m
from vsrtel.export.multiprocess import MergedMetrics
from vsrtel.handlers.metrics import OVERFLOW_ATTRIBUTE, MetricsReporter

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and flock are POSIX")

EVENT = ("app", "request", "stop")
COUNT = m.counter("app.request.stop.count", tags=["route", "code"])
DURATION = m.distribution(
    "app.request.stop.duration", unit=("native", "second"), tags=["route"]
)
TOTAL = m.sum("app.request.stop.bytes", tags=["route"])


def gauge(mode: str | None) -> m.Metric:
    options = {} if mode is None else {"multiprocess_mode": mode}
    return m.last_value("app.request.stop.queue", reporter_options=options)


class Worker:
    """A forked child recording events, told what to do over a pipe; `kill()` or `stop()`."""

    def __init__(self, work: Callable[[], None], *, linger: bool = False) -> None:
        ready_r, ready_w = os.pipe()
        self._go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            status = 0
            try:
                os.close(ready_r)
                os.close(go_w)  # so the read below ends if the parent dies
                work()
                os.write(ready_w, b"x")
                if linger:
                    os.read(self._go_r, 1)  # until the parent lets go
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(ready_w)
        self.pid = pid
        self._go_w = go_w
        assert os.read(ready_r, 1) == b"x", "the worker failed"
        os.close(ready_r)

    def stop(self) -> int:
        os.write(self._go_w, b"x")
        return self.wait()

    def kill(self) -> int:
        os.kill(self.pid, signal.SIGKILL)
        return self.wait()

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self._go_w)
        return status


def record(n: int, route: str = "/a", duration: int = 2_000_000, queue: float = 0) -> None:
    for _ in range(n):
        vsrtel.execute(
            EVENT, {"duration": duration, "bytes": 10, "queue": queue},
            {"route": route, "code": 200},
        )


class Scrape:
    """A MeterProvider with an in-memory reader over a reporter in multi-process mode."""

    def __init__(self, directory: Path, metrics: list[m.Metric], **options: Any) -> None:
        self.reader = InMemoryMetricReader(**options)
        provider = MeterProvider(metric_readers=[self.reader])
        self.reporter = MetricsReporter(
            metrics, meter_provider=provider, directory=directory
        ).attach()

    def collect(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
        }

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        metric = self.collect().get(name)
        if metric is None:
            return {}
        return {
            tuple(sorted(p.attributes.items())): p for p in metric.data.data_points
        }


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".vsm"))


# ----------------------------------------------------------------------------- merging


def test_counters_sums_and_histograms_add_up_over_every_process(directory: Path) -> None:
    scrape = Scrape(directory, [COUNT, DURATION, TOTAL])
    record(3)  # the parent is a worker too
    workers = [Worker(lambda i=i: record(10 + i, duration=(i + 1) * 1_000_000)) for i in range(4)]
    for worker in workers:
        assert worker.wait() == 0
    count = scrape.points("app.request.stop.count")
    assert {k: p.value for k, p in count.items()} == {
        (("code", "200"), ("route", "/a")): 3 + 10 + 11 + 12 + 13
    }
    [hist] = scrape.points("app.request.stop.duration").values()
    assert hist.count == 49
    assert sum(hist.bucket_counts) == 49
    assert hist.sum == pytest.approx(3 * 0.002 + 10 * 0.001 + 11 * 0.002 + 12 * 0.003 + 13 * 0.004)
    assert (hist.min, hist.max) == (pytest.approx(0.001), pytest.approx(0.004))
    [total] = scrape.points("app.request.stop.bytes").values()
    assert total.value == 490


def test_series_in_any_order_and_in_some_processes_only_add_up_series_by_series(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from vsrtel.handlers import _aggregation

    monkeypatch.setattr(_aggregation, "PER_THREAD", True)  # a cell per thread, as without a GIL
    scrape = Scrape(directory, [COUNT, DURATION])
    # Per process: (route, events, duration in ms), in the order it records them.
    Plan = list[tuple[str, int, int]]
    plans: list[Plan] = [
        [("/a", 1, 1), ("/b", 2, 2), ("/c", 3, 3)],
        [("/c", 4, 5), ("/a", 5, 1)],
        [("/d", 6, 7)],
    ]

    def run(plan: Plan) -> None:
        for route, n, ms in plan:
            record(n, route=route, duration=ms * 1_000_000)

    def in_threads(*parts: Plan) -> None:
        threads = [threading.Thread(target=run, args=(part,)) for part in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def check(done: list[Plan]) -> None:
        count = {dict(k)["route"]: p.value for k, p in scrape.points(COUNT.name).items()}
        hists = {dict(k)["route"]: p for k, p in scrape.points(DURATION.name).items()}
        steps = [step for plan in done for step in plan]
        routes = {route for route, _, _ in steps}
        assert count == {r: sum(n for x, n, _ in steps if x == r) for r in routes}
        assert set(hists) == routes
        for route, hist in hists.items():
            mine = [(n, ms) for x, n, ms in steps if x == route]
            assert hist.count == sum(hist.bucket_counts) == sum(n for n, _ in mine)
            assert hist.sum == pytest.approx(sum(n * ms / 1000 for n, ms in mine))
            assert hist.min == pytest.approx(min(ms for _, ms in mine) / 1000)
            assert hist.max == pytest.approx(max(ms for _, ms in mine) / 1000)

    for plan in plans:
        assert Worker(lambda plan=plan: run(plan)).wait() == 0
    check(plans)
    # A series no file had yet, in a live file; then a process with one cell per thread (a
    # series in both threads' cells, others in one only).
    more: list[Plan] = [[("/e", 3, 2)], [("/b", 7, 9), ("/a", 2, 8)], [("/a", 1, 4), ("/f", 2, 6)]]
    run(more[0])
    assert Worker(lambda: in_threads(more[1], more[2])).wait() == 0
    check(plans + more)
    check(plans + more)  # again, from what the previous scrape kept


def test_a_scrape_of_any_process_is_the_merged_one_in_prometheus_text(directory: Path) -> None:
    from vsrtel.export.prometheus import prometheus_reader

    reader, registry = prometheus_reader()
    MetricsReporter(
        [COUNT, DURATION], meter_provider=MeterProvider(metric_readers=[reader]),
        directory=directory,
    ).attach()
    worker = Worker(lambda: record(7, route="/b"))
    worker.wait()
    record(2)
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    assert samples[("app_request_stop_count_total", (("code", "200"), ("route", "/b")))] == 7
    assert samples[("app_request_stop_count_total", (("code", "200"), ("route", "/a")))] == 2
    assert samples[("app_request_stop_duration_seconds_count", (("route", "/b"),))] == 7
    assert "app_request_stop_count_total{code=\"200\",route=\"/b\"} 7.0" in text


def test_a_forked_child_starts_with_empty_cells_of_its_own(directory: Path) -> None:
    scrape = Scrape(directory, [COUNT])
    record(10)  # cells exist before the fork, as under gunicorn --preload
    before = files(directory)
    worker = Worker(lambda: record(5), linger=True)
    during = files(directory)
    assert len(during) == len(before) + 1  # the child wrote into a file of its own
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 15  # not 25: the child's cells did not start from the parent's 10
    worker.stop()
    record(1)
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 16


def test_the_cells_are_memory_mapped_and_the_counter_fast_path_updates_them(
    directory: Path,
) -> None:
    scrape = Scrape(directory, [COUNT])
    record(1)
    [state] = scrape.reporter._states
    cell = state.cells.mine()[("/a", 200)]
    assert isinstance(cell, memoryview) and cell.format == "d"
    record(999)
    assert cell[0] == 1000
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 1000 and isinstance(point.value, int)


# ----------------------------------------------------------------------------- gauges


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, {(): 3}),  # latest: the newest write of any process
        ("latest", {(): 3}),
        ("sum", {(): 1 + 5 + 3}),
        ("max", {(): 5}),
        ("min", {(): 1}),
        ("live_sum", {(): 1 + 5 + 3}),
    ],
)
def test_a_gauge_merges_by_its_mode(
    directory: Path, mode: str | None, expected: dict[Any, float]
) -> None:
    metric = gauge(mode)
    scrape = Scrape(directory, [metric])
    record(1, queue=1)
    first = Worker(lambda: record(1, queue=5), linger=True)
    time.sleep(0.01)  # the stamps of "latest" are wall-clock times
    second = Worker(lambda: record(1, queue=3), linger=True)
    try:
        assert {k: p.value for k, p in scrape.points(metric.name).items()} == expected
    finally:
        first.stop()
        second.stop()


def test_mode_all_gives_each_live_process_its_series_labelled_by_pid(directory: Path) -> None:
    metric = gauge("all")
    scrape = Scrape(directory, [metric])
    record(1, queue=1)
    worker = Worker(lambda: record(1, queue=5), linger=True)
    try:
        points = {k: p.value for k, p in scrape.points(metric.name).items()}
        assert points == {(("pid", str(os.getpid())),): 1, (("pid", str(worker.pid)),): 5}
    finally:
        worker.stop()
    # A dead process's series are gone.
    assert {k: p.value for k, p in scrape.points(metric.name).items()} == {
        (("pid", str(os.getpid())),): 1
    }


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("live_sum", 1), ("sum", 1 + 5), ("max", 5), ("latest", 5)],
)
def test_a_dead_process_gauge_stays_only_in_modes_that_are_not_live_only(
    directory: Path, mode: str, expected: float
) -> None:
    metric = gauge(mode)
    scrape = Scrape(directory, [metric])
    record(1, queue=1)
    time.sleep(0.01)
    Worker(lambda: record(1, queue=5)).wait()
    [point] = scrape.points(metric.name).values()
    assert point.value == expected
    [point] = scrape.points(metric.name).values()  # and after compaction too
    assert point.value == expected


def test_an_up_down_sum_in_mode_live_sum_counts_live_workers_only(directory: Path) -> None:
    """Requests in progress: a worker that died with one open takes it along, while a plain
    sum keeps what dead workers added (a counter must never go backwards)."""
    live = m.sum("app.request.stop.queue", reporter_options={
        "monotonic": False, "multiprocess_mode": "live_sum"})
    kept = m.sum("app.request.stop.bytes", reporter_options={"monotonic": False})
    scrape = Scrape(directory, [live, kept])
    record(1, queue=1)
    worker = Worker(lambda: record(1, queue=5), linger=True)
    try:
        assert [p.value for p in scrape.points(live.name).values()] == [1 + 5]
    finally:
        worker.stop()
    for _ in range(2):  # before and after compaction
        assert [p.value for p in scrape.points(live.name).values()] == [1]
        assert [p.value for p in scrape.points(kept.name).values()] == [10 + 10]


def test_gauge_modes_are_checked_in_the_definition() -> None:
    with pytest.raises(ValueError, match=r"multiprocess_mode must be one of .*'bogus'"):
        m.last_value("a.b.c", reporter_options={"multiprocess_mode": "bogus"})
    with pytest.raises(ValueError, match="'multiprocess_mode' does not apply to counter"):
        m.counter("a.b.c", reporter_options={"multiprocess_mode": "sum"})
    with pytest.raises(ValueError, match="of a sum must be 'sum' or 'live_sum', got 'max'"):
        m.sum("a.b.c", reporter_options={"monotonic": False, "multiprocess_mode": "max"})
    with pytest.raises(ValueError, match="'live_sum' needs monotonic=False"):
        m.sum("a.b.c", reporter_options={"multiprocess_mode": "live_sum"})
    with pytest.raises(ValueError, match="no tag may be named 'pid'"):
        m.last_value("a.b.c", tags=["pid"], reporter_options={"multiprocess_mode": "all"})


# ----------------------------------------------------------------------------- dead workers


def test_a_killed_worker_keeps_its_counts_and_its_file_is_compacted(directory: Path) -> None:
    scrape = Scrape(directory, [COUNT, DURATION])
    record(1)
    worker = Worker(lambda: record(40), linger=True)
    assert worker.kill() != 0
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 41
    [hist] = scrape.points("app.request.stop.duration").values()
    assert hist.count == 41
    # The scrape found the dead file and folded it into the archive.
    assert [name for name in files(directory) if name.startswith("w-")] == [
        name for name in files(directory) if name.startswith(f"w-{os.getpid()}-")
    ]
    assert any(name.startswith("archive-") for name in files(directory))
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 41


def test_recycled_workers_leave_a_bounded_number_of_files_and_no_total_goes_down(
    directory: Path,
) -> None:
    scrape = Scrape(directory, [COUNT])
    seen = []
    for i in range(30):
        Worker(lambda: record(2)).wait() if i % 2 else Worker(lambda: record(2)).kill()
        [point] = scrape.points("app.request.stop.count").values()
        seen.append(point.value)
        assert len(files(directory)) <= 3  # the archive, the parent's (none yet), one dead
    assert seen == sorted(seen)
    assert seen[-1] == 60


def test_new_workers_compact_without_any_scrape(directory: Path) -> None:
    from vsrtel.handlers._shared import COMPACT_AFTER

    scrape = Scrape(directory, [COUNT])
    for _ in range(40):
        Worker(lambda: record(1)).wait()
        # New workers fold the files of those gone before them, past a few.
        assert len(files(directory)) <= 1 + COMPACT_AFTER + 1
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 40


def crash_before_a_rename(work: Callable[[], None], before: Callable[[], None] = list) -> None:
    """Run `before`, then `work`, in a forked child that dies (as if killed) when `work` first
    renames a file."""
    pid = os.fork()
    if pid == 0:
        try:
            before()
            os.rename = lambda *args, **kwargs: os._exit(3)  # type: ignore[assignment]
            work()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, "the child did not reach a rename"


def test_temporary_files_a_crash_left_are_removed_by_the_next_compaction(
    directory: Path,
) -> None:
    import fcntl

    def temporary() -> list[str]:
        return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))

    scrape = Scrape(directory, [COUNT])
    assert Worker(lambda: record(2)).wait() == 0  # a dead worker's file, to compact

    # A worker scraping: it compacts, and dies before renaming the new archive into place.
    crash_before_a_rename(
        lambda: generate_latest(MergedMetrics(directory).registry), before=lambda: record(1)
    )
    crash_before_a_rename(lambda: record(1))  # a worker dying as it makes its file
    assert len([n for n in temporary() if n.startswith(".archive-")]) == 1
    [worker] = [n for n in temporary() if n.startswith(".w-")]
    old = time.time() - 3600  # older than the minute a worker's file is left alone
    os.utime(directory / worker, (old, old))
    # A worker being born (its file locked, not yet renamed), and one made a moment ago.
    held = directory / ".w-1-born.tmp"
    held.write_bytes(b"")
    os.utime(held, (old, old))
    fresh = directory / ".w-2-fresh.tmp"
    fresh.write_bytes(b"")
    with open(held, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert Worker(lambda: record(1)).wait() == 0
        [point] = scrape.points("app.request.stop.count").values()  # compacts
        assert temporary() == [held.name, fresh.name]
    assert point.value == 2 + 1 + 1
    assert not any(n.startswith("w-") for n in files(directory))  # all dead: compacted


def test_scrapes_while_workers_come_and_go_never_see_a_counter_go_down(directory: Path) -> None:
    scrape = Scrape(directory, [COUNT])
    seen: list[int] = []
    workers = []
    for i in range(12):
        workers.append(Worker(lambda: record(3), linger=True))
        if len(workers) > 3:
            gone = workers.pop(0)
            gone.kill() if i % 2 else gone.stop()
        for _ in range(2):
            [point] = scrape.points("app.request.stop.count").values()
            seen.append(point.value)
    for worker in workers:
        worker.stop()
    [point] = scrape.points("app.request.stop.count").values()
    seen.append(point.value)
    assert seen == sorted(seen)
    assert seen[-1] == 36


def test_the_series_cap_applies_to_the_merged_view(directory: Path) -> None:
    capped = m.counter("app.request.stop.count", tags=["route"],
                       reporter_options={"max_series": 3})
    scrape = Scrape(directory, [capped])
    record(1, route="/0")
    for i in range(1, 6):
        Worker(lambda i=i: record(1, route=f"/{i}")).wait()
    points = {k: p.value for k, p in scrape.points(capped.name).items()}
    assert len(points) == 4
    assert points[((OVERFLOW_ATTRIBUTE, "true"),)] == 3
    assert sum(points.values()) == 6


def test_delta_readers_get_what_every_process_added_since(directory: Path) -> None:
    from opentelemetry.sdk.metrics import Counter

    scrape = Scrape(
        directory, [COUNT],
        preferred_temporality={Counter: AggregationTemporality.DELTA},
    )
    Worker(lambda: record(4)).wait()
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 4
    Worker(lambda: record(3)).wait()
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 3


# ----------------------------------------------------------------------------- setup


def test_the_environment_variable_names_the_directory(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VSRTEL_MULTIPROC_DIR", str(directory))
    reporter = MetricsReporter([COUNT], meter_provider=MeterProvider())
    assert reporter.directory == str(directory)
    assert MetricsReporter([COUNT], meter_provider=MeterProvider(), aggregation="otel")


def test_without_a_meter_provider_multi_process_mode_needs_no_warning(directory: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetricsReporter([COUNT], directory=directory).attach()
    record(2)
    merged = MergedMetrics(directory)
    text = generate_latest(merged.registry).decode()
    assert 'app_request_stop_count_total{code="200",route="/a"} 2.0' in text


def test_a_directory_that_cannot_be_used_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"metrics directory '{missing}' does not exist"):
        MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=missing)
    plain = tmp_path / "file"
    plain.write_text("")
    with pytest.raises(ValueError, match=f"'{plain}' is not a directory"):
        MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=plain)
    with pytest.raises(ValueError, match="needs aggregation='vsrtel'"):
        MetricsReporter(
            [COUNT], meter_provider=MeterProvider(), directory=tmp_path, aggregation="otel"
        )
    with pytest.raises(ValueError, match="no metrics directory"):
        MergedMetrics()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_directory_is_refused_naming_it(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ValueError, match=f"'{locked}' is not writable"):
            MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=locked)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_files_of_another_version_are_refused_at_setup(tmp_path: Path) -> None:
    header = struct.pack("<8sIIQdQ", b"VSRTELMP", 99, 0, 1, 0.0, 0).ljust(64, b"\0")
    (tmp_path / "w-1-abcd.vsm").write_bytes(header)
    with pytest.raises(ValueError, match=f"'{tmp_path}' holds w-1-abcd.vsm, written by another "
                                         "version of vsrtel"):
        MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=tmp_path)


def test_a_corrupt_or_truncated_file_is_skipped_reported_once_and_counted(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scrape = Scrape(directory, [COUNT])
    Worker(lambda: record(5)).wait()
    Worker(lambda: record(2), linger=True).kill()
    record(1)
    (directory / "w-999-garbage.vsm").write_bytes(b"not a metrics file at all" * 10)
    (directory / "w-998-short.vsm").write_bytes(b"VSRTELMP")
    # A file whose records run past its end (a truncated copy of a real one).
    mine = next(p for p in directory.iterdir() if p.name.startswith(f"w-{os.getpid()}-"))
    data = mine.read_bytes()
    (directory / "w-997-cut.vsm").write_bytes(data[:100])
    merged = MergedMetrics(directory)
    with caplog.at_level(logging.WARNING, logger="vsrtel"):
        for _ in range(3):
            text = generate_latest(merged.registry).decode()
            assert 'app_request_stop_count_total{code="200",route="/a"} 8.0' in text
            [point] = scrape.points("app.request.stop.count").values()
            assert point.value == 8
    reports = [r for r in caplog.records if "skipping file" in r.getMessage()]
    assert sorted(r.getMessage().split("skipping file ")[1].split(":")[0] for r in reports) == [
        "w-997-cut.vsm", "w-998-short.vsm", "w-999-garbage.vsm",
    ]
    assert merged.skipped_files == 3


# ----------------------------------------------------------------------------- serving


def _get(url: str) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read().decode()


def test_vsrtel_serve_dir_serves_the_merged_metrics_of_a_directory(directory: Path) -> None:
    import subprocess

    MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=directory).attach()
    Worker(lambda: record(4)).wait()
    record(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "vsrtel", "serve-dir", str(directory), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"serving the merged metrics of {directory} on http://127.0.0.1:")
        url = line.split(" on ")[1].split()[0]
        status, text = _get(url)
        assert status == 200
        assert 'app_request_stop_count_total{code="200",route="/a"} 7.0' in text
        assert _get(url.replace("/metrics", "/"))[0] == 200  # the dashboard
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_vsrtel_serve_dir_refuses_a_missing_directory_in_one_line(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "vsrtel", "serve-dir", str(tmp_path / "nope"), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"vsrtel serve-dir: error: metrics directory '{tmp_path / 'nope'}' does not exist; "
        "create it first"
    )


def test_the_asgi_app_answers_metrics_health_and_not_found(directory: Path) -> None:
    import asyncio

    from vsrtel.export.multiprocess import asgi_app

    MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=directory).attach()
    record(2)
    app = asgi_app(directory)

    async def get(path: str) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
                 "headers": [(b"accept", b"text/plain")]}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = asyncio.run(get("/metrics"))
    assert status == 200
    assert b'app_request_stop_count_total{code="200",route="/a"} 2.0' in body
    assert asyncio.run(get("/health")) == (200, b"OK")
    assert asyncio.run(get("/nope"))[0] == 404


# ----------------------------------------------------------------------------- edge cases


def test_per_thread_cells_of_one_process_add_up(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from vsrtel.handlers import _aggregation

    monkeypatch.setattr(_aggregation, "PER_THREAD", True)  # as without a GIL
    scrape = Scrape(directory, [COUNT, gauge("sum")])
    threads = [threading.Thread(target=record, args=(50,), kwargs={"queue": 2})
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 200
    # A process's threads' cells of a gauge are its latest value, not their sum.
    [point] = scrape.points("app.request.stop.queue").values()
    assert point.value == 2


def test_more_cells_of_a_series_than_one_pass_adds_add_up(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from vsrtel.handlers import _aggregation

    monkeypatch.setattr(_aggregation, "PER_THREAD", True)
    scrape = Scrape(directory, [COUNT, DURATION])
    threads = [  # 40 cells of each series: several passes of the bulk addition
        threading.Thread(target=record, args=(i + 1,), kwargs={"duration": (i + 1) * 1_000_000})
        for i in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [count] = scrape.points(COUNT.name).values()
    assert count.value == 40 * 41 // 2
    [hist] = scrape.points(DURATION.name).values()
    assert hist.count == sum(hist.bucket_counts) == 40 * 41 // 2
    assert (hist.min, hist.max) == (pytest.approx(0.001), pytest.approx(0.040))


def test_a_file_defining_a_metric_with_other_buckets_is_left_out_and_reported(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = m.distribution(
        "app.request.stop.duration", unit=("native", "second"), tags=["route"],
        reporter_options={"buckets": [1.0, 2.0]},
    )

    def old_version() -> None:
        MetricsReporter([other], meter_provider=MeterProvider(), directory=directory).attach()
        record(5)

    Worker(old_version, linger=True).stop()  # a worker of the previous deployment
    scrape = Scrape(directory, [DURATION])
    record(2)
    with caplog.at_level(logging.WARNING, logger="vsrtel"):
        [hist] = scrape.points("app.request.stop.duration").values()
        [hist] = scrape.points("app.request.stop.duration").values()
    assert hist.count == 2
    assert len([r for r in caplog.records if "other buckets" in r.getMessage()]) == 1


def test_a_fork_while_another_thread_holds_the_directory_lock_does_not_wedge_the_child(
    directory: Path,
) -> None:
    import threading

    from vsrtel.handlers import _shared

    scrape = Scrape(directory, [COUNT])
    record(1)
    shared = _shared.directory(directory)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with shared._dirlock(__import__("fcntl").LOCK_EX):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    try:
        worker = Worker(lambda: record(2), linger=True)
    finally:
        release.set()
        holder.join()
    # The child lives on; were it holding the lock, this scrape would wait forever.
    found: list[Any] = []
    scraper = threading.Thread(
        target=lambda: found.extend(scrape.points("app.request.stop.count").values()),
        daemon=True,
    )
    scraper.start()
    scraper.join(30)
    worker.stop()
    assert not scraper.is_alive(), "the scrape waits for a lock the forked child holds"
    [point] = found
    assert point.value == 3


def test_a_failing_compaction_is_reported_and_the_scrape_still_served(
    directory: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vsrtel.handlers import _shared

    scrape = Scrape(directory, [COUNT])
    Worker(lambda: record(3)).wait()

    def full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_shared, "_write_archive", full)
    with caplog.at_level(logging.WARNING, logger="vsrtel"):
        [point] = scrape.points("app.request.stop.count").values()
    assert point.value == 3
    assert "compacting dead workers' files failed" in caplog.text
    monkeypatch.undo()
    [point] = scrape.points("app.request.stop.count").values()  # folded now
    assert point.value == 3
    assert [n for n in files(directory) if n.startswith("w-")] == []


def test_a_push_exporter_sends_this_process_series_and_a_scrape_the_merged_ones(
    directory: Path,
) -> None:
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )

    class Keep(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self.sent: list[MetricsData] = []

        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                   **kwargs: Any) -> MetricExportResult:
            self.sent.append(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    exporter = Keep()
    push = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    pull = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[push, pull])
    MetricsReporter([COUNT, DURATION], meter_provider=provider, directory=directory).attach()
    record(2)
    worker = Worker(lambda: record(5), linger=True)
    try:
        provider.force_flush()
        pushed = {
            metric.name: [p for p in metric.data.data_points]
            for rm in exporter.sent[-1].resource_metrics for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        assert [p.value for p in pushed["app.request.stop.count"]] == [2]
        assert [p.count for p in pushed["app.request.stop.duration"]] == [2]
        scraped = pull.get_metrics_data()
        assert scraped is not None
        [count] = [
            metric for rm in scraped.resource_metrics for sm in rm.scope_metrics
            for metric in sm.metrics if metric.name == "app.request.stop.count"
        ]
        assert [p.value for p in count.data.data_points] == [7]
    finally:
        worker.stop()
        provider.shutdown()


def test_a_directory_on_a_filesystem_without_mmap_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmap

    def no_mmap(*args: Any, **kwargs: Any) -> Any:
        raise OSError(19, "No such device")  # what mmap says on such a filesystem

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    with pytest.raises(ValueError, match=f"'{tmp_path}' cannot hold memory-mapped files"):
        MetricsReporter([COUNT], meter_provider=MeterProvider(), directory=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe is gone
