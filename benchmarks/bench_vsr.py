"""The VSR simulation as a realistic load: one committed request, end to end, per operation.

Each operation is one client request of a fault-free 3-replica run (``simulate(requests=200)``
divided by 200): about 23 catalogue events, 7 messages, the invariant checks, and the report's
recorder (a prefix handler on ``vsr``). ``+ metrics`` adds a MetricsReporter of
``vsrtel.vsr.METRICS`` (in-memory reader) on the same registry.

The ``sweep`` rows are one run of ``vsrtel sweep`` (``vsrtel.vsr.sweep.check``: 200 requests,
3 clients, a private registry), a new seed each time: 60e9 / ns is seeds per minute per process.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import vsrtel
from benchmarks._harness import Case, Target, now
from vsrtel.handlers.metrics import MetricsReporter
from vsrtel.vsr import simulate
from vsrtel.vsr.recommended import METRICS
from vsrtel.vsr.sweep import Run, check

REQUESTS = 200


def _run(loops: int, *, with_metrics: bool) -> int:
    total = 0
    done = 0
    while done < loops:
        registry = vsrtel.Registry()
        reporter = None
        if with_metrics:
            provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
            reporter = MetricsReporter(METRICS, meter_provider=provider, registry=registry)
            reporter.attach()
        start = now()
        simulate(seed=done, requests=REQUESTS, faults="none", registry=registry)
        total += now() - start
        if reporter is not None:
            reporter.detach()
        done += REQUESTS
    return total * loops // done


def request(loops: int) -> int:
    return _run(loops, with_metrics=False)


def request_with_metrics(loops: int) -> int:
    return _run(loops, with_metrics=True)


def sweep_seed(replicas: int, faults: str) -> Case:
    seeds = iter(range(10**9))

    def run(loops: int) -> int:
        start = now()
        for _ in range(loops):
            check(Run(next(seeds), replicas, REQUESTS, 3, faults))
        return now() - start

    return Case(f"vsr sweep: 1 seed, {REQUESTS} requests, {replicas} replicas, {faults}", run)


CASES = [
    Case("vsr simulated request (3 replicas, ~23 events)", request),
    Case("vsr simulated request + metrics reporter", request_with_metrics),
    sweep_seed(3, "heavy"),
    sweep_seed(3, "extreme"),
    sweep_seed(5, "extreme"),
    sweep_seed(7, "extreme"),
]
TARGETS: list[Target] = []
