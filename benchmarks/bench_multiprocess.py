"""Multi-process mode (docs/multiprocess.md) against single-process mode and prometheus_client.

event rows: `bench_metrics`' counter with two tags, its cells in a memory-mapped file.
scrape rows: one Prometheus scrape (the body `wsgi_app()` answers) of the merged view of 8 live
worker processes, each holding 10,000 series (5 counters and 5 distributions of 1,000 series),
next to `bench_metrics`' single-process scrape of 10,000 series; the same data written by
prometheus_client's multiprocess mode (8 pids) and read by its `MultiProcessCollector`; and the
merged scrape once 1,000 more workers came, recorded and went (their files compacted into the
archive). Worker processes are forked when a row first runs and live until the run ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

import vsrtel
from benchmarks._harness import Case, Target, now
from benchmarks.bench_metrics import COUNTER, EVENT, METADATA
from vsrtel import metrics as m
from vsrtel.export import prometheus
from vsrtel.export.multiprocess import MergedMetrics
from vsrtel.handlers.metrics import MetricsReporter

WORKERS = 8
SERIES = 1000
RECYCLED = 1000

DEFS = [
    m.counter(f"app.scrape.m{i}.count", event_name=f"app.scrape.m{i}", tags=["id"])
    for i in range(5)
] + [
    m.distribution(f"app.scrape.m{i}.duration", event_name=f"app.scrape.m{i}",
                   unit=("native", "second"), tags=["id"])
    for i in range(5, 10)
]

_DIRECTORIES: list[str] = []
_LINGERING: list[int] = []  # write ends of the pipes the live workers wait on


def _cleanup() -> None:
    for fd in _LINGERING:  # the workers read EOF and exit
        os.close(fd)
    for path in _DIRECTORIES:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup)


def _directory() -> str:
    path = tempfile.mkdtemp(prefix="vsrtel-bench-")
    _DIRECTORIES.append(path)
    return path


def _fork(work: Callable[[], None], *, linger: bool) -> None:
    """Run `work` in a forked child; a lingering child then waits until the run ends."""
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(go_w)
            os.close(ready_r)
            work()
            os.write(ready_w, b"x")
            if linger:
                os.read(go_r, 1)
            status = 0
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(ready_w)
    if os.read(ready_r, 1) != b"x":
        raise RuntimeError("a benchmark worker failed")
    os.close(ready_r)
    if linger:
        _LINGERING.append(go_w)
    else:
        os.close(go_w)
        os.waitpid(pid, 0)


def _vsrtel_worker(directory: str, series: range) -> Callable[[], None]:
    def work() -> None:
        registry = vsrtel.Registry()
        MetricsReporter(
            DEFS, meter_provider=MeterProvider(), registry=registry, directory=directory
        ).attach()
        for i in range(10):
            event = f"app.scrape.m{i}"
            for s in series:
                registry.execute(event, {"duration": s * 1000}, {"id": s})

    return work


def event_case(directory: bool) -> Callable[[int], int]:
    def run(loops: int) -> int:
        registry = vsrtel.Registry()
        MetricsReporter(
            [COUNTER], meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            registry=registry, directory=_directory() if directory else None,
        ).attach()
        execute = registry.execute
        name, measurements, metadata = EVENT, {"duration": 1}, METADATA
        # The first event creates the series (in multi-process mode it appends a record to the
        # file): a cost once per series, not per event.
        execute(name, measurements, metadata)
        start = now()
        for _ in range(loops):
            execute(name, measurements, metadata)
        return now() - start

    return run


def merged_scrape_case(recycled: int) -> Callable[[int], int]:
    state: dict[str, Any] = {}

    def run(loops: int) -> int:
        if not state:
            directory = _directory()
            for _ in range(WORKERS):
                _fork(_vsrtel_worker(directory, range(SERIES)), linger=True)
            for r in range(recycled):  # each records one series per metric, and exits
                _fork(_vsrtel_worker(directory, range(r % SERIES, r % SERIES + 1)), linger=False)
            merged = MergedMetrics(directory)
            # The body `wsgi_app()` answers (no HTTP), as the single-process row measures it.
            environ = {"REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_ACCEPT": ""}
            state["scrape"] = lambda: prometheus._exposition(merged.registry, environ)[1]
            state["scrape"]()  # the first one compacts the recycled workers' files
        scrape = state["scrape"]
        start = now()
        for _ in range(loops):
            scrape()
        return now() - start

    return run


def prometheus_client_case(loops: int, state: dict[str, Any] = {}) -> int:  # noqa: B006
    """prometheus_client's multiprocess mode: 8 pids' files of the same 10,000 series."""
    if not state:
        from prometheus_client import Counter, Histogram, values
        from prometheus_client.multiprocess import MultiProcessCollector

        directory = _directory()

        def work() -> None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            values.ValueClass = values.MultiProcessValue()
            counters = [Counter(f"app_scrape_m{i}_count", "n", ["id"], registry=None)
                        for i in range(5)]
            histograms = [
                Histogram(f"app_scrape_m{i}_duration_seconds", "d", ["id"], registry=None,
                          buckets=m.buckets_for(DEFS[5]))
                for i in range(5, 10)
            ]
            for s in range(SERIES):
                for counter in counters:
                    counter.labels(str(s)).inc()
                for histogram in histograms:
                    histogram.labels(str(s)).observe(s * 1e-6)

        for _ in range(WORKERS):
            _fork(work, linger=True)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        state["scrape"] = lambda: generate_latest(registry)
    scrape = state["scrape"]
    start = now()
    for _ in range(loops):
        scrape()
    return now() - start


SINGLE_EVENT = "execute -> reporter counter, 2 tags"
SINGLE_SCRAPE = "scrape 10 metrics x 1,000 series (vsrtel text)"
EVENT_ROW = "execute -> reporter counter, 2 tags (multi-process mode)"
MERGED = f"scrape merged, {WORKERS} workers x 10 metrics x 1,000 series"
RECYCLED_ROW = f"{MERGED}, after {RECYCLED:,} recycled workers"
PEER = f"prometheus_client multiprocess scrape, {WORKERS} workers x 10,000 series"

CASES = [
    Case(EVENT_ROW, event_case(True)),
    Case(MERGED, merged_scrape_case(0)),
    Case(RECYCLED_ROW, merged_scrape_case(RECYCLED)),
    Case(PEER, prometheus_client_case),
]

TARGETS = [
    Target("counter event: multi-process vs single-process mode", EVENT_ROW, SINGLE_EVENT, 1.25),
    Target("merged scrape of 8 workers vs single-process scrape", MERGED, SINGLE_SCRAPE, 5.0),
    Target("merged scrape vs prometheus_client's multiprocess collector", MERGED, PEER, 0.125),
    Target("merged scrape after 1,000 recycled workers vs none", RECYCLED_ROW, MERGED, 1.2),
]
