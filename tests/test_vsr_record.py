"""vsrtel.vsr.record: a simulated run as plain data, and the report built from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vsrtel
from vsrtel.vsr import InvariantViolation, Replica, Simulation
from vsrtel.vsr import report as report_module
from vsrtel.vsr.record import MessageStats, RunRecord
from vsrtel.vsr.replica import MS
from vsrtel.vsr.report import build_report


def test_a_finished_run_records_every_request_answered() -> None:
    with Simulation(seed=3, requests=40, clients=4, faults="heavy",
                    registry=vsrtel.Registry()) as sim:
        sim.run()
        record = sim.record()
    assert isinstance(record, RunRecord)
    assert (record.seed, record.replicas, record.clients, record.faults, record.requests) == (
        3, 3, 4, "heavy", 40)
    assert sorted((r.client_id, r.request_number) for r in record.client_requests) == [
        (c, n) for c in range(1, 5) for n in range(1, 11)]
    assert all(r.latency is not None and r.latency > 0 and r.attempts >= 1
               for r in record.client_requests)
    assert record.requests_committed == 40 and record.violation is None
    assert isinstance(record.messages, MessageStats)
    assert record.messages.delivered <= record.messages.sent + record.messages.duplicated
    assert record.events[("vsr", "protocol", "client_request", "start")] >= 40
    assert record.simulated_ns == sim.now
    assert build_report(record) == sim.report()


def test_a_run_stopped_part_way_is_a_snapshot_with_unanswered_requests() -> None:
    with Simulation(seed=1, requests=30, faults="none", registry=vsrtel.Registry()) as sim:
        sim.run_until(3 * MS)
        early = sim.record()
        sim.run()
    unanswered = [r for r in early.client_requests if r.latency is None]
    assert unanswered and all(r.attempts == 1 for r in unanswered)
    assert len(early.client_requests) < 30 and early.simulated_ns == 3 * MS
    # It did not change as the run went on.
    assert sum(early.events.values()) < sum(sim.record().events.values())
    assert len(early.spans) < len(sim.record().spans)


def test_request_finds_one_request_or_raises_key_error() -> None:
    with Simulation(seed=2, requests=6, faults="none", registry=vsrtel.Registry()) as sim:
        record = sim.run().record()
    assert record.request(2, 1).client_id == 2
    with pytest.raises(KeyError):
        record.request(2, 99)


def test_the_report_reads_the_record_not_the_simulator() -> None:
    tree = ast.parse(Path(report_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "vsrtel.vsr.sim" not in imported


def test_a_failed_run_records_its_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Replica, "_on_prepare_ok", lambda self, msg: None)
    with Simulation(seed=7, requests=4, clients=2, faults="none",
                    registry=vsrtel.Registry()) as sim, pytest.raises(InvariantViolation):
        sim.run()
    record = sim.record()
    assert record.violation is not None and record.violation.startswith("seed 7: liveness:")
    assert record.requests_committed == 0
    assert [r.latency for r in record.client_requests] == [None, None]
    assert all(r.attempts > 1 for r in record.client_requests)  # the clients kept retrying
