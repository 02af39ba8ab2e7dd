"""The Poller: default process measurements, custom ones, failures, and the thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import vsrtel
from vsrtel import poller as poller_module
from vsrtel.poller import Poller, default_measurements, process_memory, process_uptime
from vsrtel.testing import capture

BOUND = 30.0  # generous upper bound for waits on the poller thread; never a timing assertion


@pytest.fixture
def registry() -> vsrtel.Registry:
    return vsrtel.Registry()


def test_one_round_of_default_measurements(registry: vsrtel.Registry) -> None:
    with capture(("vsrtel", "process"), registry=registry) as events:
        Poller(registry=registry).poll()
    by_name = {e.name: e for e in events}
    assert set(by_name) == {
        ("vsrtel", "process", "memory"),
        ("vsrtel", "process", "gc"),
        ("vsrtel", "process", "threads"),
        ("vsrtel", "process", "uptime"),
    }
    memory = by_name[("vsrtel", "process", "memory")].measurements
    assert isinstance(memory["rss"], int) and memory["rss"] > 1_000_000  # a Python process
    gc_stats = by_name[("vsrtel", "process", "gc")].measurements
    assert set(gc_stats) == {"gen0", "gen1", "gen2", "uncollectable"}
    assert all(isinstance(v, int) and v >= 0 for v in gc_stats.values())
    assert by_name[("vsrtel", "process", "threads")].measurements["count"] >= 1
    uptime = by_name[("vsrtel", "process", "uptime")].measurements["seconds"]
    assert isinstance(uptime, float) and uptime > 0


def uptime_seconds(registry: vsrtel.Registry) -> float:
    with capture(("vsrtel", "process", "uptime"), registry=registry) as events:
        process_uptime(registry)
    value: float = events[0].measurements["seconds"]
    return value


def test_uptime_has_no_float_noise(
    registry: vsrtel.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(20):  # the noise shows on some readings only
        uptime = uptime_seconds(registry)
        assert uptime == round(uptime, 2) and len(repr(uptime).partition(".")[2]) <= 2

    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(poller_module.os, "sysconf", no_sysconf)  # no /proc answer: fallback
    for _ in range(20):
        uptime = uptime_seconds(registry)
        assert uptime == round(uptime, 3) and len(repr(uptime).partition(".")[2]) <= 3


def test_rss_matches_proc_status(registry: vsrtel.Registry) -> None:
    with open("/proc/self/status") as f:
        status = f.read()
    vm_rss_kb = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1])
    with capture(("vsrtel", "process", "memory"), registry=registry) as events:
        process_memory(registry)
    # Same quantity from two /proc files; allow for allocation between the two reads.
    assert abs(events[0].measurements["rss"] - vm_rss_kb * 1024) < 64 * 1024 * 1024


def test_gc_counts_grow_with_collections(registry: vsrtel.Registry) -> None:
    import gc

    with capture(("vsrtel", "process", "gc"), registry=registry) as events:
        Poller([default_measurements(registry)[1]], registry=registry).poll()
        gc.collect()
        Poller([default_measurements(registry)[1]], registry=registry).poll()
    assert events[1].measurements["gen2"] == events[0].measurements["gen2"] + 1


def test_default_registry(vsrtel_registry: Any) -> None:
    with capture(("vsrtel", "process", "threads")) as events:
        Poller().poll()
    assert len(events) == 1


def test_custom_measurement_and_failure_isolation(
    registry: vsrtel.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def queue_depth() -> None:
        calls.append("ok")
        registry.execute("app.queue.depth", {"value": 7})

    def broken() -> None:
        secret = "hunter2"
        raise RuntimeError(f"no such queue, password={secret}")

    poller = Poller([broken, queue_depth], registry=registry)
    with (
        capture(("app",), registry=registry) as app_events,
        capture(("vsrtel", "poller", "failure"), registry=registry) as failures,
    ):
        poller.poll()
        poller.poll()
    assert calls == ["ok", "ok"]
    assert [e.measurements for e in app_events] == [{"value": 7}, {"value": 7}]
    assert len(failures) == 1  # removed after failing, as telemetry_poller does
    failure = failures[0]
    assert set(failure.measurements) == {"monotonic_time", "system_time"}
    assert failure.metadata["kind"] is RuntimeError
    assert str(failure.metadata["reason"]) == "no such queue, password=hunter2"
    assert "broken" in failure.metadata["measurement"]
    assert [frame.name for frame in failure.metadata["stacktrace"]][-1] == "broken"
    assert poller.measurements == [queue_depth]
    assert "no such queue" in caplog.text
    assert "hunter2" not in caplog.text  # the log's report is scrubbed of secrets
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_thread_polls_until_stopped(registry: vsrtel.Registry) -> None:
    rounds = threading.Semaphore(0)
    seen: list[int] = []

    def tick() -> None:
        seen.append(1)
        registry.execute("t.tick", {"n": len(seen)})
        rounds.release()

    poller = Poller([tick], period=0.01, registry=registry).start()
    assert poller.running
    with pytest.raises(RuntimeError, match="already running"):
        poller.start()
    for _ in range(3):
        assert rounds.acquire(timeout=BOUND)
    poller.stop()
    assert not poller.running
    assert len(seen) >= 3


def test_init_delay_and_stop_wake_the_thread(registry: vsrtel.Registry) -> None:
    calls: list[int] = []
    poller = Poller([lambda: calls.append(1)], period=3600, init_delay=3600, registry=registry)
    poller.start()
    poller.stop(timeout=BOUND)  # returns at once: stop wakes the init_delay wait
    assert not poller.running
    assert calls == []


def test_fixed_delay_means_one_round_per_period(registry: vsrtel.Registry) -> None:
    first = threading.Event()
    calls: list[int] = []

    def once() -> None:
        calls.append(1)
        first.set()

    with Poller([once], period=3600, registry=registry) as poller:
        assert first.wait(BOUND)
    assert not poller.running
    assert calls == [1]


def test_restart_after_stop(registry: vsrtel.Registry) -> None:
    done = threading.Semaphore(0)
    poller = Poller([done.release], period=3600, registry=registry)
    poller.start()
    assert done.acquire(timeout=BOUND)
    poller.stop()
    poller.start()
    assert done.acquire(timeout=BOUND)
    poller.stop()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"period": 0}, ValueError, "period"),
        ({"period": -1}, ValueError, "period"),
        ({"period": float("nan")}, ValueError, "period"),
        ({"period": "5"}, ValueError, "period"),
        ({"init_delay": -0.5}, ValueError, "init_delay"),
        ({"measurements": [42]}, TypeError, "42"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Poller(**kwargs)
