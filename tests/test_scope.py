from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import vsrtel
from vsrtel.testing import capture


@dataclass
class Replica:
    node_id: int
    view: int


def common(state: Replica) -> dict[str, Any]:
    return {"node_id": state.node_id, "view_number": state.view}


def test_scope_execute_stamps_common_metadata_and_extra_wins() -> None:
    scope = vsrtel.Scope("vsr", common)
    with capture("vsr") as events:
        scope.execute("timer.heartbeat_sent", Replica(1, 4), {"count": 2}, {"view_number": 9})
        scope.execute(("state", "commit_advance"), Replica(2, 5), 1)
    assert events[0].name == ("vsr", "timer", "heartbeat_sent")
    assert events[0].metadata == {"node_id": 1, "view_number": 9}
    assert events[0].measurements == {"count": 2}
    assert events[1].metadata == {"node_id": 2, "view_number": 5}


def test_metadata_fn_is_not_called_when_nobody_listens() -> None:
    def explode(state: Any) -> dict[str, Any]:
        raise AssertionError("called")

    vsrtel.Scope("vsr", explode).execute("x", None, 1)


def test_scope_span_uses_the_scope_clock_and_registry() -> None:
    class Clock:
        t = 0

        def monotonic_ns(self) -> int:
            self.t += 250
            return self.t

        def time_ns(self) -> int:
            return 42

    registry = vsrtel.Registry()
    scope = vsrtel.Scope(("vsr",), common, registry=registry, clock=Clock())
    state = Replica(3, 1)
    with (
        capture("vsr", registry=registry) as events,
        scope.span("state_machine.operation", state, {"op": "put"}) as s,
    ):
        s.metadata["result"] = "ok"
    start, stop = events
    assert start.name == ("vsr", "state_machine", "operation", "start")
    assert start.metadata["node_id"] == 3 and start.metadata["op"] == "put"
    assert start.measurements == {"monotonic_time": 250, "system_time": 42}
    assert stop.measurements["duration"] == 250
    assert stop.metadata["result"] == "ok"


def test_bad_scope_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="scope prefix"):
        vsrtel.Scope("", common)
    with pytest.raises(ValueError, match="segment 1 is empty"):
        vsrtel.Scope("vsr", common).execute("a..b", Replica(1, 1), 1)


def test_scope_span_does_not_call_metadata_fn_when_nobody_listens() -> None:
    calls: list[Replica] = []

    def counted(state: Replica) -> dict[str, Any]:
        calls.append(state)
        return common(state)

    registry = vsrtel.Registry()
    scope = vsrtel.Scope("vsr", counted, registry=registry)
    with scope.span("state_machine.operation", Replica(1, 1), {"op": "put"}):
        pass
    assert calls == []
    with (
        capture("vsr.state_machine", registry=registry) as events,
        scope.span("state_machine.operation", Replica(2, 3), {"op": "get"}) as span,
    ):
        span.metadata["result"] = "ok"
    assert len(calls) == 1  # once per span, shared by its events
    assert [e.metadata for e in events] == [
        {"node_id": 2, "view_number": 3, "op": "get", "telemetry_span_context": span.context},
        {
            "node_id": 2,
            "view_number": 3,
            "op": "get",
            "telemetry_span_context": span.context,
            "result": "ok",
        },
    ]


def test_the_scope_name_cache_is_bounded_by_the_one_policy() -> None:
    from vsrtel._names import CACHE_LIMIT

    scope = vsrtel.Scope("app", common)
    for i in range(CACHE_LIMIT + 500):
        assert scope.name(("user", str(i))) == ("app", "user", str(i))
    assert len(scope._names) <= CACHE_LIMIT
