"""vsrtel.vsr.catalog: the VSR catalogue, common metadata and the telemetry scope."""

from __future__ import annotations

import vsrtel
from vsrtel.testing import capture
from vsrtel.vsr import CATALOG, common_metadata, telemetry
from vsrtel.vsr.catalog import (
    CLIENT_REQUEST,
    PROTOCOL_CLIENT_REQUEST,
    STATE_MACHINE_OPERATION,
    dotted,
)

ISSUE_EVENTS = {
    "protocol": ["client_request", "prepare.sent", "prepare.received", "prepare_ok.sent",
                 "prepare_ok.received", "commit.sent", "commit.received"],
    "state_machine": ["operation"],
    "view_change": ["start", "vote_received", "do_view_change.sent", "do_view_change.received",
                    "complete"],
    "state": ["status_change", "view_change", "role_change", "commit_advance"],
    "state_transfer": ["request_sent", "request_received", "snapshot_sent", "snapshot_received"],
    "replication": ["log_append", "log_conflict", "quorum_reached"],
    "timer": ["heartbeat_sent", "heartbeat_received", "primary_timeout"],
    "network": ["message_lost"],
    "client": ["request"],
}
SPANS = {"vsr.protocol.client_request", "vsr.state_machine.operation", "vsr.client.request"}


def test_the_catalogue_declares_exactly_the_vsr_events() -> None:
    declared = {spec.dotted: spec.kind for spec in CATALOG}
    expected = {f"vsr.{group}.{name}" for group, names in ISSUE_EVENTS.items() for name in names}
    assert set(declared) == expected
    assert {name for name, kind in declared.items() if kind == "span"} == SPANS
    assert list(CATALOG.groups()) == list(ISSUE_EVENTS)
    assert CATALOG.prefix == ("vsr",)
    assert set(CATALOG.common_metadata) == {"node_id", "view_number", "status", "is_primary",
                                            "op_number", "commit_number"}


def test_the_span_names_emitters_use_are_the_catalogues_spans() -> None:
    names = {dotted(name) for name in (PROTOCOL_CLIENT_REQUEST, STATE_MACHINE_OPERATION,
                                       CLIENT_REQUEST)}
    assert names == {spec.dotted for spec in CATALOG if spec.kind == "span"} == SPANS


def test_fanout_events_carry_a_count_of_frames() -> None:
    for name in ("vsr.protocol.prepare.sent", "vsr.protocol.commit.sent",
                 "vsr.timer.heartbeat_sent"):
        spec = CATALOG.spec(name)
        assert spec is not None and "count" in spec.measurements


class _State:
    node_id, view_number, status, is_primary, op_number, commit_number = 2, 7, "normal", False, 9, 8


def test_common_metadata_and_the_telemetry_scope(vsrtel_registry: vsrtel.Registry) -> None:
    assert common_metadata(_State()) == {"node_id": 2, "view_number": 7, "status": "normal",
                                         "is_primary": False, "op_number": 9, "commit_number": 8}
    with capture("vsr") as events:
        telemetry.execute(("protocol", "prepare", "sent"), _State(), {"count": 2},
                          {"entry_op_number": 9, "retransmit": False})
    assert events[0].name == ("vsr", "protocol", "prepare", "sent")
    assert events[0].metadata["view_number"] == 7
    assert CATALOG.validate(events[0].name, events[0].measurements, events[0].metadata) == []
