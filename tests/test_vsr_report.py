"""vsrtel.vsr.report: the simulation report, its percentiles and the sample trace tree."""

from __future__ import annotations

import json

import vsrtel
from vsrtel.vsr import Simulation, render_text, simulate
from vsrtel.vsr.report import percentile, sample_trace


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7], 99) == 7
    assert percentile([], 50) == 0


def test_report_is_json_with_the_documented_keys() -> None:
    report = simulate(seed=5, requests=40, faults="light", registry=vsrtel.Registry())
    assert json.loads(json.dumps(report)) == report
    for key in ("requests_committed", "latency_ms", "view_changes", "state_transfers", "events",
                "invariants", "seed", "sample_trace"):
        assert key in report
    assert set(report["latency_ms"]) == {"p50", "p99", "max"}
    assert all(name.startswith("vsr.") for name in report["events"])


def test_sample_trace_is_the_request_span_with_each_replicas_operation() -> None:
    with Simulation(seed=2, requests=10, faults="none", registry=vsrtel.Registry()) as sim:
        sim.run()
        tree = sample_trace(sim.record(), 1, 2)
    assert tree["name"] == "request c1#2 (1 attempt)" and tree["status"] == "ok"
    [request] = tree["children"]
    assert request["name"] == "vsr.protocol.client_request" and request["node"] == 0
    assert request["status"] == "ok"
    operations = request["children"]
    assert [op["name"] for op in operations] == ["vsr.state_machine.operation"] * 3
    assert sorted(op["node"] for op in operations) == [0, 1, 2]
    # The primary executes when the request commits, i.e. when its client_request span ends.
    primary_op = next(op for op in operations if op["node"] == 0)
    assert primary_op["start_ms"] == round(request["start_ms"] + request["duration_ms"], 3)
    assert 0 < request["start_ms"] < tree["duration_ms"]


def test_render_text_shows_the_summary_events_and_the_tree() -> None:
    report = simulate(seed=3, requests=30, faults="none", registry=vsrtel.Registry())
    text = render_text(report)
    assert "requests committed  30 of 30" in text
    assert "invariants          OK" in text
    assert "vsr.protocol.prepare.sent" in text
    assert "sample trace (the request at the p99 latency):" in text
    assert "└─ vsr.protocol.client_request  node 0" in text
    assert text.count("vsr.state_machine.operation  node") == 3


def test_render_text_shows_a_violation() -> None:
    report = simulate(seed=3, requests=3, faults="none", registry=vsrtel.Registry())
    report["invariants"] = "seed 3: something broke"
    assert "invariants          seed 3: something broke" in render_text(report)


def test_no_completed_request_has_no_latency_rather_than_zero() -> None:
    report = simulate(seed=1, requests=0, replicas=1, clients=1, registry=vsrtel.Registry())
    assert report["latency_ms"] == {"p50": None, "p99": None, "max": None}
    assert json.loads(json.dumps(report))["latency_ms"]["p50"] is None
    text = render_text(report)
    assert "client latency      p50 n/a   p99 n/a   max n/a" in text
    assert "VSR cluster: 1 replica, 1 client, faults=light" in text
    assert "replicas" not in text.splitlines()[0]


def test_a_request_whose_operation_was_rejected_is_not_ok() -> None:
    with Simulation(seed=2, requests=60, faults="none", registry=vsrtel.Registry()) as sim:
        sim.run()
        tree = sample_trace(sim.record(), 3, 10)  # div k6 0: every replica rejects it
    [request] = tree["children"]
    assert {op["status"] for op in request["children"]} == {"error: division by zero: div k6 0"}
    assert tree["status"] == "error: division by zero: div k6 0"
    assert tree["duration_ms"] is not None  # it did complete: with the rejection as its reply


def test_render_text_says_what_each_count_counts() -> None:
    report = simulate(seed=1, requests=300, faults="heavy", registry=vsrtel.Registry())
    events = report["events"]
    starts, completions = events["vsr.view_change.start"], events["vsr.view_change.complete"]
    assert report["view_changes"] < completions < starts  # views, and each replica's part in them
    text = render_text(report)
    assert (f"  view changes        {report['view_changes']} new views established; replicas "
            f"started {starts} view changes, completed {completions}") in text
    assert (f"  state transfers     {report['state_transfers']} snapshots received (requested "
            f"{events['vsr.state_transfer.request_sent']})") in text
    assert "events per type, summed over replicas, clients and the network:" in text
