"""The VSR event catalogue, the common metadata of a replica, and the ``telemetry`` scope."""

from __future__ import annotations

from typing import Any, Protocol

from vsrtel.catalog import Catalog, EventSpec
from vsrtel.scope import Scope

PREFIX = ("vsr",)

# The catalogue's spans, named under PREFIX (what Scope.span takes); emitters use these names.
#: ``vsr.protocol.client_request``: the primary, from accepting a request to its reply.
PROTOCOL_CLIENT_REQUEST = ("protocol", "client_request")
#: ``vsr.state_machine.operation``: a replica executing a committed operation.
STATE_MACHINE_OPERATION = ("state_machine", "operation")
#: ``vsr.client.request``: a simulated client, from its first send to the reply (tracing on).
CLIENT_REQUEST = ("client", "request")


class ReplicaLike(Protocol):
    """What :func:`common_metadata` reads from a replica."""

    @property
    def node_id(self) -> int: ...
    @property
    def view_number(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def is_primary(self) -> bool: ...
    @property
    def op_number(self) -> int: ...
    @property
    def commit_number(self) -> int: ...


def common_metadata(state: ReplicaLike) -> dict[str, Any]:
    """Return the six keys every VSR event carries, read from a replica's current state."""
    return {
        "node_id": state.node_id,
        "view_number": state.view_number,
        "status": state.status,
        "is_primary": state.is_primary,
        "op_number": state.op_number,
        "commit_number": state.commit_number,
    }


#: ``Vsr.Telemetry``: emit ``("vsr", ...)`` events stamped with a replica's common metadata, on
#: the default registry. Simulations build their own scope with their registry and clock.
telemetry: Scope[ReplicaLike] = Scope(PREFIX, common_metadata)

COMMON_METADATA = {
    "node_id": "replica index i, 0..N-1 (int)",
    "view_number": "current view-number (int)",
    "status": "replica status: normal, view_change or recovering (str)",
    "is_primary": "whether the replica is the primary of its view and in normal status (bool)",
    "op_number": "op-number: entries in the replica's log (int)",
    "commit_number": "commit-number: last committed op-number (int)",
}

_ENTRY = {"entry_op_number": "op-number of the log entry concerned (int)"}
_REQUEST = {
    "client_id": "client identifier (int)",
    "request_number": "the client's request number (int)",
    "operation": "operation kind: set, add, get or div (str)",
    **_ENTRY,
}
_FROM = {"from_node": "sender's replica index (int)"}
_TO = {"to_node": "destination replica index (int)"}
_COUNT = {"count": "messages placed on the wire (frames, one per destination)"}
_TRACE = {"trace_parent": "remote parent trace context extracted from the message (tracing on)"}


def dotted(name: tuple[str, ...]) -> str:
    """The dotted event name of ``name`` under :data:`PREFIX`: ``vsr.client.request``."""
    return ".".join(PREFIX + name)


def _event(name: str, description: str, measurements: dict[str, str] | None = None,
           metadata: dict[str, str] | None = None) -> EventSpec:
    return EventSpec(f"vsr.{name}", "event", description, measurements or {}, metadata or {})


CATALOG = Catalog(
    PREFIX,
    [
        # protocol: the normal case
        EventSpec(
            dotted(PROTOCOL_CLIENT_REQUEST),
            "span",
            "starts when the primary accepts a new client request into its log; stops when the "
            "request commits and the reply is sent; exception when the primary leaves its view "
            "or crashes first",
            {},
            _REQUEST,
            optional_metadata=_TRACE,
        ),
        _event("protocol.prepare.sent", "the primary sends PREPARE for an entry to the backups "
               "(also when retransmitting)", _COUNT,
               {**_ENTRY, "retransmit": "whether this is a retransmission (bool)"}),
        _event("protocol.prepare.received", "a backup processes a PREPARE of its view", {},
               {**_ENTRY, **_FROM,
                "outcome": "appended, duplicate (already in the log) or buffered (gap) (str)"}),
        _event("protocol.prepare_ok.sent", "a backup acknowledges its log up to an op-number", {},
               {**_ENTRY, **_TO}),
        _event("protocol.prepare_ok.received", "the primary processes a PREPAREOK of its view", {},
               {**_ENTRY, **_FROM}),
        _event("protocol.commit.sent", "the primary announces a new commit-number right after a "
               "quorum (COMMIT)", _COUNT),
        _event("protocol.commit.received", "a backup processes a COMMIT of its view", {},
               {**_FROM, "received_commit_number": "commit-number in the message (int)"}),
        # state machine
        EventSpec(
            dotted(STATE_MACHINE_OPERATION),
            "span",
            "a replica executes a committed operation; exception when the state machine rejects "
            "it (every replica rejects it the same way)",
            {},
            {**_REQUEST,
             "client_request_context": "telemetry_span_context of the client_request span that "
                                       "created the entry (str, empty if none)"},
            optional_metadata=_TRACE,
        ),
        # view change
        _event("view_change.start", "a replica starts a view change: primary timeout, a "
               "STARTVIEWCHANGE/DOVIEWCHANGE for a higher view, a view change timeout, a "
               "restart during a view change, or a recovering replica that nobody serves",
               {"count": "STARTVIEWCHANGE frames sent"},
               {"reason": "primary_timeout, higher_view, view_change_timeout, restart or "
                          "recovery_timeout (str)",
                "previous_view": "view-number before the change (int)"}),
        _event("view_change.vote_received", "a STARTVIEWCHANGE for the replica's new view arrives",
               {"votes": "distinct STARTVIEWCHANGE votes from other replicas so far"}, _FROM),
        _event("view_change.do_view_change.sent", "a replica with f votes sends DOVIEWCHANGE to "
               "the new primary", {},
               {**_TO, "log_view": "view of the sender's log, its last normal view (int)"}),
        _event("view_change.do_view_change.received", "the new primary receives a DOVIEWCHANGE",
               {"votes": "distinct DOVIEWCHANGE messages collected, its own included"},
               {**_FROM, "log_view": "view of the sender's log (int)"}),
        _event("view_change.complete", "the new view is established: the new primary sends "
               "STARTVIEW, or a backup processes it",
               {"count": "STARTVIEW frames sent (0 on backups)",
                "duration": "time since this replica left normal status (or restarted), 0 if it "
                            "did neither (int ns)"},
               {"role": "primary or backup in the new view (str)"}),
        # state
        _event("state.status_change", "the replica's status changes", {},
               {"previous_status": "status before the change (str)"}),
        _event("state.view_change", "the replica's view-number changes", {},
               {"previous_view": "view-number before the change (int)"}),
        _event("state.role_change", "the replica becomes or stops being the active primary", {},
               {"role": "primary or backup (str)", "previous_role": "role before (str)"}),
        _event("state.commit_advance", "the commit-number advances",
               {"count": "operations newly committed"},
               {"previous_commit_number": "commit-number before (int)"}),
        # state transfer
        _event("state_transfer.request_sent", "a lagging or recovering replica sends GETSTATE",
               _COUNT,
               {"reason": "lagging, new_view or recovering (str)",
                "log_view": "view of the requester's log (int)"}),
        _event("state_transfer.request_received", "a replica receives GETSTATE", {},
               {**_FROM, "served": "whether it answers with NEWSTATE (bool)"}),
        _event("state_transfer.snapshot_sent", "a replica answers GETSTATE with NEWSTATE",
               {"entries": "log entries in the message"},
               {**_TO, "start_op_number": "op-number of the first entry sent (int)"}),
        _event("state_transfer.snapshot_received", "a replica applies a NEWSTATE",
               {"entries": "log entries received"}, _FROM),
        # replication
        _event("replication.log_append", "an entry is appended to the log (primary or backup)", {},
               _ENTRY),
        _event("replication.log_conflict", "uncommitted entries are discarded because a newer "
               "view's log replaces them", {"discarded": "entries dropped from the log"},
               {"cause": "view_change (a view installs another log) or state_transfer (str)"}),
        _event("replication.quorum_reached", "an operation is prepared at f+1 replicas (the "
               "primary commits it)",
               {"acks": "replicas known to hold the entry, primary included"}, _ENTRY),
        # timers
        _event("timer.heartbeat_sent", "the idle primary sends COMMIT as a heartbeat", _COUNT),
        _event("timer.heartbeat_received", "a backup processes a heartbeat COMMIT", {}, _FROM),
        _event("timer.primary_timeout", "a backup has not heard from its primary in time",
               {"elapsed": "time since it last heard from the primary (int ns)"}),
        # the simulated network
        EventSpec(
            "vsr.network.message_lost",
            "event",
            "the simulation's network lost a message: dropped at random, cut by a partition, or "
            "sent to a crashed replica. Emitted by the simulation, so without the replica metadata",
            {"count": "messages lost (1)"},
            {"reason": "loss, partition or crash (str)"},
            common=False,
        ),
        # clients
        EventSpec(
            dotted(CLIENT_REQUEST),
            "span",
            "tracing on only (a propagation is set): a simulated client's request, from its "
            "first send to the reply it accepts; the root of the request's trace, whose context "
            "the REQUEST carries to the primary's client_request span; exception when the run "
            "ends first (a failed run). Emitted by a client, so without the replica metadata",
            {"attempts": "times the request was sent (1 + retries)"},
            {k: v for k, v in _REQUEST.items() if k != "entry_op_number"},
            common=False,
        ),
    ],
    common_metadata=COMMON_METADATA,
    title="VSR",
)
