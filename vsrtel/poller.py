"""Periodic measurements: a daemon thread that runs measurement functions which emit events.

    poller = Poller(period=5.0).start()   # process memory, GC, threads, uptime every 5 s
    ...
    poller.stop()

A measurement is a zero-argument callable that executes its own events, so anything a poller
reports is an ordinary event that metric definitions can turn into gauges.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from functools import partial

import vsrtel
from vsrtel._redact import DEFAULT as DEFAULT_SECRETS

__all__ = [
    "Poller",
    "default_measurements",
    "process_gc",
    "process_memory",
    "process_threads",
    "process_uptime",
]

_log = logging.getLogger("vsrtel")

FAILURE_EVENT = ("vsrtel", "poller", "failure")

_IMPORTED_AT = time.monotonic()


def _bus(registry: vsrtel.Registry | None) -> vsrtel.Registry:
    return vsrtel.Registry.or_default(registry)


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4096


def process_memory(registry: vsrtel.Registry | None = None) -> None:
    """Emit `("vsrtel","process","memory")` with `{"rss": bytes}` (resident set size, read from
    /proc/self/statm); where /proc is missing, `{"max_rss": bytes}` (peak, from getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * _page_size()
        measurements = {"rss": rss}
    except OSError:
        import resource  # not on Windows; there this measurement fails and is reported

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # macOS reports bytes, other Unixes kilobytes.
        measurements = {"max_rss": peak if os.uname().sysname == "Darwin" else peak * 1024}
    _bus(registry).execute(("vsrtel", "process", "memory"), measurements)


def process_gc(registry: vsrtel.Registry | None = None) -> None:
    """Emit `("vsrtel","process","gc")` with `{"gen0": n, "gen1": n, "gen2": n}`: collections so
    far per generation, plus `"uncollectable"` (total objects found uncollectable)."""
    stats = gc.get_stats()
    measurements: dict[str, int] = {f"gen{i}": s["collections"] for i, s in enumerate(stats)}
    measurements["uncollectable"] = sum(s["uncollectable"] for s in stats)
    _bus(registry).execute(("vsrtel", "process", "gc"), measurements)


def process_threads(registry: vsrtel.Registry | None = None) -> None:
    """Emit `("vsrtel","process","threads")` with `{"count": n}` (live Python threads)."""
    _bus(registry).execute(("vsrtel", "process", "threads"), {"count": threading.active_count()})


def _process_uptime() -> float:
    try:
        with open("/proc/self/stat", "rb") as f:
            # Field 22 (starttime, clock ticks after boot) follows the ")" closing the name.
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            system_uptime = float(f.read().split()[0])
        uptime = system_uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        # /proc/uptime counts hundredths: more digits would be float noise (12.340000000000002).
        return max(0.0, round(uptime, 2))
    except (OSError, ValueError, IndexError, AttributeError):
        return round(time.monotonic() - _IMPORTED_AT, 3)  # since vsrtel.poller was imported


def process_uptime(registry: vsrtel.Registry | None = None) -> None:
    """Emit `("vsrtel","process","uptime")` with `{"seconds": s}` since the process started
    (from /proc, to the hundredth; elsewhere since this module was imported, to the
    millisecond)."""
    _bus(registry).execute(("vsrtel", "process", "uptime"), {"seconds": _process_uptime()})


def default_measurements(registry: vsrtel.Registry | None = None) -> list[Callable[[], None]]:
    """The measurements a `Poller` runs by default, bound to `registry`."""
    return [
        partial(f, registry)
        for f in (process_memory, process_gc, process_threads, process_uptime)
    ]


def _name(fn: Callable[[], None]) -> str:
    inner = fn.func if isinstance(fn, partial) else fn
    return getattr(inner, "__qualname__", None) or repr(inner)


class Poller:
    """Run measurements every `period` seconds on a daemon thread.

    `measurements`: zero-argument callables that execute their own events (default:
    `default_measurements(registry)`). The first round runs after `init_delay` seconds; each
    next one `period` seconds after the previous round ended (fixed delay, no catch-up bursts).
    A measurement that raises is logged (ERROR, logger "vsrtel"), reported as the event
    `("vsrtel","poller","failure")` (measurements `monotonic_time`, `system_time`; metadata
    `measurement`, `kind`, `reason`, `stacktrace`) and removed, as Erlang's telemetry_poller
    does; the others keep running. `start()` / `stop()`, or use it as a context manager.
    """

    def __init__(
        self,
        measurements: Iterable[Callable[[], None]] | None = None,
        *,
        period: float = 5.0,
        init_delay: float = 0.0,
        registry: vsrtel.Registry | None = None,
    ) -> None:
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not (
            math.isfinite(period) and period > 0
        ):
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        if isinstance(init_delay, bool) or not isinstance(init_delay, (int, float)) or not (
            math.isfinite(init_delay) and init_delay >= 0
        ):
            raise ValueError(f"init_delay must be a number of seconds >= 0, got {init_delay!r}")
        chosen = (
            default_measurements(registry) if measurements is None else list(measurements)
        )
        for fn in chosen:
            if not callable(fn):
                raise TypeError(f"measurement {fn!r} is not callable")
        self.period = float(period)
        self.init_delay = float(init_delay)
        self._registry = registry
        self._measurements = chosen
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def measurements(self) -> list[Callable[[], None]]:
        """The measurements still being run (failed ones are removed)."""
        with self._lock:
            return list(self._measurements)

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> None:
        """Run one round of every measurement now, in the calling thread."""
        for fn in self.measurements:
            try:
                fn()
            except Exception as exc:
                self._failed(fn, exc)

    def _failed(self, fn: Callable[[], None], exc: Exception) -> None:
        with self._lock:
            if fn in self._measurements:
                self._measurements.remove(fn)
        name = _name(fn)
        # As text scrubbed of secrets, like every report of the "vsrtel" logger.
        _log.error(
            "poller measurement %s failed and was removed\n%s",
            name,
            DEFAULT_SECRETS.format_exception(exc),
        )
        try:
            bus = _bus(self._registry)
            clock = bus.clock
            bus.execute(
                FAILURE_EVENT,
                {"monotonic_time": clock.monotonic_ns(), "system_time": clock.time_ns()},
                {
                    "measurement": name,
                    "kind": type(exc),
                    "reason": exc,
                    "stacktrace": traceback.extract_tb(exc.__traceback__),
                },
            )
        except Exception:  # the failure report must not stop the poller either
            _log.exception("could not emit %s", ".".join(FAILURE_EVENT))

    def _run(self) -> None:
        if self._stopping.wait(self.init_delay):
            return
        while True:
            self.poll()
            if self._stopping.wait(self.period):
                return

    def start(self) -> Poller:
        """Start polling on a daemon thread; raises RuntimeError if already running."""
        if self.running:
            raise RuntimeError("this Poller is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="vsrtel-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling and wait (up to `timeout` seconds) for a round in progress to end."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> Poller:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
