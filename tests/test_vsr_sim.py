"""vsrtel.vsr.sim: determinism, catalogue coverage, invariants, liveness, trace propagation."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import vsrtel
from vsrtel import Span
from vsrtel.testing import capture
from vsrtel.vsr import (
    CATALOG,
    FAULTS,
    FaultProfile,
    InvariantViolation,
    Propagation,
    Simulation,
    simulate,
    sweep,
)
from vsrtel.vsr.messages import Commit, Operation
from vsrtel.vsr.replica import MS, Replica, Timeouts

ROOT = Path(__file__).resolve().parent.parent
# The harsher conditions of issue 10 ("extreme" without its partitions of several replicas,
# one-way partitions, late timers and clock skew): seed 307 deadlocked under them.
HARSH = FaultProfile(
    loss=0.2, duplicate=0.2, spike=0.05, spike_delay=(20 * MS, 200 * MS),
    crash_every=80 * MS, downtime=(20 * MS, 300 * MS),
    partition_every=80 * MS, partition_length=(20 * MS, 300 * MS),
)


def _inject(carrier: dict[str, str], span: Span) -> None:
    carrier["traceparent"] = str(span.context)


def _extract(carrier: Mapping[str, str]) -> object:
    return carrier.get("traceparent")


# A stand-in propagation that carries the telemetry span context itself.
CONTEXT_PROPAGATION = Propagation(_inject, _extract)


def event_hash(seed: int, faults: str = "heavy", requests: int = 60) -> tuple[str, int]:
    registry = vsrtel.Registry()
    with capture(registry=registry) as events:
        report = simulate(seed=seed, requests=requests, faults=faults, registry=registry)
    assert report["invariants"] == "ok"
    digest = hashlib.sha256()
    for event in events:
        digest.update(repr((event.name, event.measurements, event.metadata)).encode())
    return digest.hexdigest(), len(events)


def test_same_seed_same_event_stream() -> None:
    first, second = (event_hash(11) for _ in range(2))
    assert first == second
    assert first[1] > 1000
    assert event_hash(12)[0] != first[0]


def test_event_stream_does_not_depend_on_the_hash_seed() -> None:
    code = "from tests.test_vsr_sim import event_hash; print(event_hash(5, requests=30)[0])"
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True)
        digests.add(done.stdout.strip())
    assert digests == {event_hash(5, requests=30)[0]}


def test_one_fault_run_emits_every_catalogue_event_and_passes_strict_validation() -> None:
    registry = vsrtel.Registry()
    with CATALOG.check(registry=registry) as check:
        report = simulate(seed=2, requests=150, clients=4, faults="heavy", registry=registry,
                          propagation=CONTEXT_PROPAGATION)  # clients trace only when it is on
    assert report["invariants"] == "ok"
    assert check.problems == []
    # A client's trace ends in an exception only when the run fails before the reply.
    assert check.missing(CATALOG) == [("vsr", "client", "request", "exception")]
    assert check.seen[("vsr", "state_machine", "operation", "exception")] > 0
    assert report["events"] == {".".join(k): v for k, v in sorted(check.seen.items())}


def test_report_of_a_fault_free_run() -> None:
    report = simulate(seed=1, requests=50, replicas=5, clients=2, faults="none",
                      registry=vsrtel.Registry())
    assert report["invariants"] == "ok"
    assert report["requests_committed"] == 50
    assert (report["replicas"], report["clients"], report["seed"]) == (5, 2, 1)
    assert report["view_changes"] == 0 and report["crashes"] == 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert report["messages"]["dropped"] == 0
    events = report["events"]
    assert events["vsr.protocol.client_request.start"] == 50
    assert events["vsr.protocol.client_request.stop"] == 50
    assert events["vsr.state_machine.operation.start"] == 5 * 50  # every replica executes
    # One prepare.sent per request, no retransmission without faults (its count: 4 frames).
    assert events["vsr.protocol.prepare.sent"] == 50


def test_fanout_counts_add_up_to_frames() -> None:
    registry = vsrtel.Registry()
    with capture("vsr.protocol.prepare", registry=registry) as events:
        simulate(seed=2, requests=20, replicas=3, clients=1, faults="none", registry=registry)
    sent = sum(e.measurements["count"] for e in events if e.name[-1] == "sent")
    received = sum(1 for e in events if e.name[-1] == "received")
    assert sent == received == 2 * 20  # no loss: every frame arrives once


def test_liveness_phase_completes_every_request_under_heavy_faults() -> None:
    with Simulation(seed=8, requests=80, faults="heavy", registry=vsrtel.Registry()) as sim:
        sim.run()
        assert sim.healed_at is not None and sim.completed == 80
        record = sim.record()
        assert record.crashes + record.partitions > 0
        committed = len(sim.checker.committed)
        assert all(r.commit_number == committed for r in sim.replicas)


def test_run_until_steps_through_simulated_time_with_the_same_result() -> None:
    whole = simulate(seed=4, requests=40, registry=vsrtel.Registry())
    with Simulation(seed=4, requests=40, registry=vsrtel.Registry()) as sim:
        t = 0
        while not sim.run_until(t):
            assert sim.now == t
            t += 7_000_000
        assert sim.report() == whole


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": -1}, "requests must be an int >= 0, got -1"),
        ({"replicas": 4}, "replicas must be odd"),
        ({"replicas": 0}, "replicas must be an int >= 1"),
        ({"clients": 0}, "clients must be an int >= 1"),
        ({"faults": "medium"}, r"unknown fault profile 'medium' \(choose from none, light, "),
        ({"faults": "heavy,loss=2"}, "fault knob loss must be between 0 and 1, got 2.0"),
        ({"faults": 3}, "faults must be a FaultProfile or a str, got 3"),
        ({"seed": "x"}, "seed must be an int"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    args = {"seed": 1, "requests": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate(**args, registry=vsrtel.Registry())


# -- fault profiles ----------------------------------------------------------------------------


def test_a_fault_profile_spec_names_a_profile_and_overrides_knobs() -> None:
    profile = FaultProfile.parse("heavy, loss=0.2, spike_delay=20-200.5, crash_every=off, "
                                 "partition_size=2, timer_jitter=1.5")
    assert profile.loss == 0.2 and profile.duplicate == FAULTS["heavy"].duplicate
    assert profile.spike_delay == (20 * MS, 200 * MS + MS // 2)
    assert profile.crash_every is None and profile.partition_size == 2
    assert profile.timer_jitter == 1500 * 1000
    assert FaultProfile.parse(profile.spec()) == profile
    assert profile.spec().startswith("none,loss=0.2,")
    assert [FaultProfile.parse(name).spec() for name in FAULTS] == list(FAULTS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("heavy,los=0.1", "bad fault knob 'los=0.1' (knobs: loss, duplicate,"),
        ("heavy,loss", "bad fault knob 'loss'"),
        ("light,delay=3", "bad value for fault knob delay: '3'"),
        ("light,delay=3-1", "fault knob delay must be a range LOW-HIGH of milliseconds"),
        ("light,partition_size=0", "fault knob partition_size must be an int >= 1, got 0"),
        ("light,crash_every=nan", "bad value for fault knob crash_every: 'nan'"),
        ("light,clock_skew=1", "fault knob clock_skew must be below 1, got 1.0"),
        ("heavy,permanent_crashes=-1", "fault knob permanent_crashes must be an int >= 0, got -1"),
        ("heavy,permanent_crashes=x", "bad value for fault knob permanent_crashes: 'x'"),
        ("none,permanent_crashes=1", "fault knob permanent_crashes needs crash_every"),
    ],
)
def test_a_bad_fault_spec_names_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        FaultProfile.parse(spec)
    assert message in str(info.value)


def test_simulate_takes_a_profile_and_reports_its_spec() -> None:
    profile = FaultProfile(loss=0.05, timer_jitter=2 * MS)
    report = simulate(seed=3, requests=30, faults=profile, registry=vsrtel.Registry())
    assert report["invariants"] == "ok" and report["faults"] == "none,loss=0.05,timer_jitter=2"
    again = simulate(seed=3, requests=30, faults=report["faults"], registry=vsrtel.Registry())
    assert again == report


def test_partitions_cut_up_to_f_replicas_one_way_or_both() -> None:
    cuts: list[frozenset[tuple[int, int]]] = []
    original = Simulation._partition

    def record(self: Simulation) -> frozenset[tuple[int, int]]:
        cuts.append(original(self))
        return cuts[-1]

    profile = FaultProfile(partition_every=10 * MS, partition_length=(2 * MS, 8 * MS),
                           partition_size=5, one_way=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Simulation, "_partition", record)
        report = simulate(seed=1, requests=150, replicas=5, faults=profile,
                          registry=vsrtel.Registry())
    assert report["invariants"] == "ok" and len(cuts) > 10
    shapes = set()
    for cut in cuts:
        side = {b for b in range(5) if (0, b) not in cut and (b, 0) not in cut}
        group = min(side, set(range(5)) - side, key=len)
        assert 1 <= len(group) <= 2  # f = 2: a majority stays connected
        shapes.add((len(group), all((b, a) in cut for a, b in cut)))
    assert shapes == {(1, True), (2, True), (1, False), (2, False)}


def test_clock_skew_gives_each_replica_its_own_timer_rates() -> None:
    profile = FaultProfile(clock_skew=0.1)
    with Simulation(seed=4, requests=1, replicas=5, faults=profile,
                    registry=vsrtel.Registry()) as sim:
        primaries = [r.timeouts.primary for r in sim.replicas]
    default = Timeouts().primary
    assert len(set(primaries)) == 5
    assert all(0.9 * default <= t <= 1.12 * default for t in primaries)
    # Every timer runs at its replica's rate (the counts do not scale).
    replica = sim.replicas[0]
    rate = Timeouts().primary / replica.timeouts.primary
    for name, value in vars(replica.timeouts).items():
        if name not in ("retransmit_window", "recovery_rounds"):
            assert abs(getattr(Timeouts(), name) / value - rate) < 0.01, name


def test_the_extreme_profile_is_deterministic_and_safe() -> None:
    runs = [simulate(seed=9, requests=60, replicas=5, faults="extreme",
                     registry=vsrtel.Registry()) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0]["invariants"] == "ok" and runs[0]["requests_committed"] == 60
    assert runs[0]["crashes"] + runs[0]["partitions"] > 0


def test_a_diverging_state_machine_is_caught_with_the_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Replica._execute

    def diverge(self: Replica, op_number: int, entry: object) -> None:
        original(self, op_number, entry)  # type: ignore[arg-type]
        if self.node_id == 2 and op_number == 5:  # a stray extra execution
            self.machine.apply(Operation("add", "k0", 1))

    monkeypatch.setattr(Replica, "_execute", diverge)
    report = simulate(seed=21, requests=30, faults="none", registry=vsrtel.Registry())
    assert report["invariants"].startswith("seed 21: replica 2")
    assert "differs from the fold" in report["invariants"]


def test_a_replica_that_forgets_commits_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Replica._on_tick

    def forgetful(self: Replica, tick: object) -> None:
        original(self, tick)  # type: ignore[arg-type]
        if self.node_id == 1 and self.commit_number > 3:
            self.commit_number -= 1

    monkeypatch.setattr(Replica, "_on_tick", forgetful)
    with Simulation(seed=9, requests=30, faults="none", registry=vsrtel.Registry()) as sim:
        with pytest.raises(InvariantViolation, match=r"seed 9: replica 1 .*went from"):
            sim.run()
        assert sim.report()["invariants"].startswith("seed 9")


def test_disagreeing_logs_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Replica._append

    def corrupt(self: Replica, entry: object) -> None:
        if self.node_id == 2 and self.op_number == 6:
            entry = type(entry)(entry.view, 99, 1, entry.operation)  # type: ignore[attr-defined]
        original(self, entry)  # type: ignore[arg-type]

    monkeypatch.setattr(Replica, "_append", corrupt)
    report = simulate(seed=5, requests=30, faults="none", registry=vsrtel.Registry())
    assert "committed op 7" in report["invariants"]


def test_a_wrong_reply_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from vsrtel.vsr.messages import Result

    original = Replica._execute

    def lie(self: Replica, op_number: int, entry: object) -> None:
        original(self, op_number, entry)  # type: ignore[arg-type]
        replies = self._out.replies
        if replies and op_number == 4:
            replies[-1] = type(replies[-1])(replies[-1].view, replies[-1].client_id,
                                            replies[-1].request_number, Result(True, -12345))

    monkeypatch.setattr(Replica, "_execute", lie)
    report = simulate(seed=6, requests=20, faults="none", registry=vsrtel.Registry())
    assert "differs from the committed result" in report["invariants"]


def test_a_stuck_cluster_fails_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Replica, "_on_prepare_ok", lambda self, msg: None)
    report = simulate(seed=7, requests=5, faults="none", registry=vsrtel.Registry())
    assert report["invariants"].startswith("seed 7: liveness: 5 of 5 requests incomplete")
    assert report["requests_committed"] == 0


def test_trace_context_crosses_nodes_through_the_propagation() -> None:
    # Every operation span of a request names the primary's client_request span as parent, on
    # every replica; that span names the client's request span, the root of the trace.
    registry = vsrtel.Registry()
    with capture("vsr.client.request", "vsr.protocol.client_request.start",
                 "vsr.state_machine.operation.start", registry=registry) as events:
        report = simulate(seed=2, requests=10, faults="none", registry=registry,
                          propagation=CONTEXT_PROPAGATION)
    assert report["invariants"] == "ok"
    clients = {e.metadata["telemetry_span_context"]: e for e in events
               if e.name[1] == "client" and e.name[-1] == "start"}
    stops = [e for e in events if e.name[1] == "client" and e.name[-1] == "stop"]
    assert len(clients) == len(stops) == 10 and all(s.measurements["attempts"] == 1 for s in stops)
    roots = {e.metadata["telemetry_span_context"]: e for e in events
             if e.name[1] == "protocol"}
    for root in roots.values():
        client = clients[root.metadata["trace_parent"]]
        assert (client.metadata["client_id"], client.metadata["request_number"]) == (
            root.metadata["client_id"], root.metadata["request_number"])
        assert "node_id" not in client.metadata
    operations = [e for e in events if e.name[1] == "state_machine"]
    assert len(operations) == 30
    for op in operations:
        parent = roots[op.metadata["trace_parent"]]
        assert op.metadata["trace_parent"] == op.metadata["client_request_context"]
        assert (parent.metadata["client_id"], parent.metadata["request_number"]) == (
            op.metadata["client_id"], op.metadata["request_number"])
    assert {op.metadata["node_id"] for op in operations} == {0, 1, 2}


@pytest.mark.parametrize(("seed", "faults"), [(572, "heavy"), (307, HARSH)])
def test_a_cluster_whose_latest_primary_restarted_does_not_deadlock(
    seed: int, faults: str | FaultProfile
) -> None:
    # Regression: the restarted primary of the latest view and a replica that rejoined that
    # view were both recovering, waiting on each other; the third was normal in an older view.
    with Simulation(seed=seed, requests=200, faults=faults, registry=vsrtel.Registry()) as sim:
        sim.run()
    assert sim.completed == 200 and sim.violation is None


def test_a_failed_run_ends_the_open_client_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Replica, "_on_prepare_ok", lambda self, msg: None)
    registry = vsrtel.Registry()
    with capture("vsr.client.request", registry=registry) as events:
        report = simulate(seed=7, requests=5, clients=2, faults="none", registry=registry,
                          propagation=CONTEXT_PROPAGATION)
    assert "liveness" in report["invariants"]
    assert [e.name[-1] for e in events] == ["start", "start", "exception", "exception"]
    assert "before the reply" in str(events[-1].metadata["reason"])


def test_clients_start_no_trace_when_tracing_is_off() -> None:
    report = simulate(seed=2, requests=10, faults="none", registry=vsrtel.Registry())
    assert not any(name.startswith("vsr.client") for name in report["events"])


@pytest.mark.parametrize(("replicas", "dead"), [(3, 1), (5, 2), (7, 3)])
def test_f_replicas_crashed_for_good_stay_down_and_every_request_completes(
    replicas: int, dead: int
) -> None:
    with Simulation(seed=3, requests=150, replicas=replicas, faults="heavy,permanent_crashes=9",
                    registry=vsrtel.Registry()) as sim:
        sim.run()
        assert sim.violation is None and sim.completed == 150
        assert len(sim.dead) == dead and sim.crashed == sim.dead  # capped at f, never restarted
        assert all(sim.replicas[i].incarnation == 0 for i in sim.dead)
        committed = len(sim.checker.committed)
        live = [r for r in sim.replicas if r.node_id not in sim.dead]
        assert all(r.commit_number == committed and r.status == "normal" for r in live)
        record = sim.record()
    assert record.crashes == dead  # with f down for good, no other crash may happen
    assert record.views_established > 0  # a view change went through with f replicas dead


def test_permanent_crashes_leave_the_runs_of_other_profiles_unchanged() -> None:
    assert FaultProfile.parse("heavy,permanent_crashes=0") == FAULTS["heavy"]
    profile = FaultProfile.parse("heavy,permanent_crashes=2")
    assert profile.spec() == "none,loss=0.08,duplicate=0.05,spike=0.02,crash_every=150," \
        "downtime=20-300,permanent_crashes=2,partition_every=150,partition_length=20-300"
    assert FaultProfile.parse(profile.spec()) == profile


def test_a_replica_announcing_a_lower_commit_number_than_its_own_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Backups ignore a stale commit-number, so only the checker's look at messages sees it.
    original = Replica._broadcast

    def stale(self: Replica, message: object) -> int:
        if isinstance(message, Commit) and message.heartbeat and message.commit_number > 0:
            message = dataclasses.replace(message, commit_number=message.commit_number - 1)
        return original(self, message)  # type: ignore[arg-type]

    monkeypatch.setattr(Replica, "_broadcast", stale)
    report = simulate(seed=3, requests=30, faults="heavy", registry=vsrtel.Registry())
    assert re.fullmatch(r"seed 3: replica 0 at [\d.]+ ms: sent Commit to replica 1 with "
                        r"commit-number (\d+), outside its own (\d+)\.\.\2", report["invariants"])


def test_a_run_past_its_event_budget_fails_instead_of_running_on() -> None:
    with Simulation(seed=1, requests=50, faults="none", registry=vsrtel.Registry()) as sim:
        assert sim.max_events == 1000 * 3 * (50 + 50)
        sim.max_events = 300
        with pytest.raises(InvariantViolation, match=r"seed 1: liveness: the run scheduled 300 "
                                                     r"events without ending \(\d+ of 50"):
            sim.run()
        assert sim.finished and sim.violation is not None


# 200 requests keep the faults on for about 1.5 s of simulated time (40 requests: 0.5 s). The
# heavy window on 3 replicas holds seed 572, where the sweep found a liveness deadlock (issue 10).
SWEEPS = [
    ("heavy", 3, range(550, 600)),
    ("heavy", 5, range(15)),
    ("heavy", 7, range(15)),
    ("extreme", 3, range(15)),
    ("extreme", 5, range(10)),
    ("extreme", 7, range(10)),
    # f replicas crashed for good (permanent_crashes is capped at f), on top of the profile.
    ("heavy,permanent_crashes=3", 3, range(40)),
    ("heavy,permanent_crashes=3", 5, range(15)),
    ("heavy,permanent_crashes=3", 7, range(10)),
    ("extreme,permanent_crashes=3", 5, range(10)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("faults", "replicas", "seeds"), SWEEPS)
def test_safety_and_liveness_hold_over_a_seed_sweep(
    faults: str, replicas: int, seeds: range
) -> None:
    planned = sweep.runs(seeds, replicas=[replicas], requests=200, clients=3, faults=faults)
    failures = [failure for run in planned if (failure := sweep.check(run)) is not None]
    assert [(f.run.seed, f.kind, f.message) for f in failures] == []
