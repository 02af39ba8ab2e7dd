"""Seed sweeps: many simulated runs under one fault profile, each failure with its seed.

A run fails when an invariant is violated (safety), when the cluster stops making progress after
every fault healed (liveness), or when the simulation itself raises (a bug in the replica code).
Runs are independent and deterministic, so a sweep can spread them over processes and still
report the same failures in the same order.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from vsrtel import Registry
from vsrtel.vsr.invariants import InvariantViolation
from vsrtel.vsr.sim import FaultProfile, Simulation


@dataclass(frozen=True)
class Run:
    """One simulated run of a sweep: the arguments of a :class:`vsrtel.vsr.Simulation`."""

    seed: int
    replicas: int
    requests: int
    clients: int
    faults: str  # a spec FaultProfile.parse reads, so that the run can be replayed

    def command(self) -> str:
        """The ``vsrtel demo`` command line that replays this run."""
        return (f"vsrtel demo --seed {self.seed} --replicas {self.replicas} "
                f"--clients {self.clients} --requests {self.requests} "
                f"--faults {shlex.quote(self.faults)} "
                "--no-pace --no-metrics")


@dataclass(frozen=True)
class Failure:
    """A failed run: ``kind`` is ``safety``, ``liveness`` or ``error``; ``message`` says what."""

    run: Run
    kind: str
    message: str


def runs(
    seeds: Iterable[int],
    *,
    replicas: Sequence[int] = (3,),
    requests: int = 200,
    clients: int = 3,
    faults: str | FaultProfile = "heavy",
) -> list[Run]:
    """The runs of a sweep: each seed with each cluster size, in that order.

    Raises ``ValueError`` for a bad fault spec (before anything runs).
    """
    if isinstance(faults, FaultProfile):
        spec = faults.spec()
    else:
        FaultProfile.parse(faults)  # a bad spec fails now, not in every run
        spec = faults
    return [Run(seed, n, requests, clients, spec) for seed in seeds for n in replicas]


def check(run: Run) -> Failure | None:
    """Simulate ``run`` on a private registry; return its failure, or None when it passed."""
    try:
        with (Simulation(seed=run.seed, requests=run.requests, replicas=run.replicas,
                         clients=run.clients, faults=run.faults, registry=Registry()) as sim,
              contextlib.suppress(InvariantViolation)):  # the record has it
            sim.run()
    except Exception as exc:  # a crash of the code under test is a finding too
        return Failure(run, "error", f"{type(exc).__name__}: {exc}")
    violation = sim.record().violation
    if violation is None:
        return None
    message = violation.removeprefix(f"seed {run.seed}: ")
    return Failure(run, "liveness" if message.startswith("liveness:") else "safety", message)


def sweep(planned: Sequence[Run], *, jobs: int = 1) -> Iterator[tuple[Run, Failure | None]]:
    """Run ``planned`` (``jobs`` processes at a time) and yield each run with its outcome, in
    order."""
    if jobs <= 1:
        for run in planned:
            yield run, check(run)
        return
    # Workers ignore Ctrl-C: the parent stops the sweep and reports, without a traceback each.
    with ProcessPoolExecutor(jobs, initializer=signal.signal,
                             initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        try:
            yield from zip(planned, pool.map(check, planned, chunksize=1), strict=True)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
