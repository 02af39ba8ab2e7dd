"""The messages of Viewstamped Replication Revisited (Liskov and Cowling, 2012), and log entries.

Field names follow the paper: ``view`` is a view-number, ``op_number`` an op-number (1-based
position in the log), ``commit_number`` a commit-number, ``replica`` the sender's index.
``trace`` fields are W3C trace-context carriers filled by the pluggable propagation (empty when
tracing is off); the protocol never reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "Commit",
    "DoViewChange",
    "Entry",
    "GetState",
    "Message",
    "NewState",
    "Operation",
    "Prepare",
    "PrepareOk",
    "ReplicaMessage",
    "Reply",
    "Request",
    "Result",
    "StartView",
    "StartViewChange",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """A state-machine operation on an integer key-value store: ``kind`` ``key`` ``arg``.

    Kinds: ``set`` (value := arg), ``add`` (value += arg), ``get``, ``div`` (value //= arg;
    rejected when arg is 0).
    """

    kind: str
    key: str
    arg: int = 0

    def __str__(self) -> str:
        return f"{self.kind} {self.key}" + ("" if self.kind == "get" else f" {self.arg}")


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of an operation: ``value`` when ``ok``, else the rejection ``error``."""

    ok: bool
    value: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: a client's operation, stamped with the view in which it was prepared.

    ``origin`` is the ``telemetry_span_context`` of the primary's ``client_request`` span that
    created the entry (provenance for telemetry; empty when none).
    """

    view: int
    client_id: int
    request_number: int
    operation: Operation
    origin: str = ""
    trace: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    """Client -> primary: ``<REQUEST op, c, s>``."""

    client_id: int
    request_number: int
    operation: Operation
    trace: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """Replica -> client: ``<REPLY v, s, x>``."""

    view: int
    client_id: int
    request_number: int
    result: Result


@dataclass(frozen=True, slots=True)
class Prepare:
    """Primary -> backups: ``<PREPARE v, m, n, k>`` (the entry is ``m``)."""

    view: int
    entry: Entry
    op_number: int
    commit_number: int
    replica: int


@dataclass(frozen=True, slots=True)
class PrepareOk:
    """Backup -> primary: ``<PREPAREOK v, n, i>``; acknowledges every op up to ``op_number``."""

    view: int
    op_number: int
    replica: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Primary -> backups: ``<COMMIT v, k>``; ``heartbeat`` when sent by the idle timer."""

    view: int
    commit_number: int
    replica: int
    heartbeat: bool = False


@dataclass(frozen=True, slots=True)
class StartViewChange:
    """``<STARTVIEWCHANGE v, i>``, sent to all replicas."""

    view: int
    replica: int


@dataclass(frozen=True, slots=True)
class DoViewChange:
    """``<DOVIEWCHANGE v, l, v', n, k, i>`` to the new primary; ``log_view`` is ``v'``."""

    view: int
    log: tuple[Entry, ...]
    log_view: int
    op_number: int
    commit_number: int
    replica: int


@dataclass(frozen=True, slots=True)
class StartView:
    """New primary -> backups: ``<STARTVIEW v, l, n, k>``."""

    view: int
    log: tuple[Entry, ...]
    op_number: int
    commit_number: int
    replica: int


@dataclass(frozen=True, slots=True)
class GetState:
    """Lagging replica -> another: ``<GETSTATE v, n', i>``.

    ``view`` is the requester's view-number, ``log_view`` the view its log belongs to (its last
    normal view) and ``commit_number`` lets a responder in a newer view send the suffix after the
    requester's committed prefix.
    """

    view: int
    log_view: int
    op_number: int
    commit_number: int
    replica: int


@dataclass(frozen=True, slots=True)
class NewState:
    """``<NEWSTATE v, l, n, k>``: the log from op-number ``start`` on, of a replica of view v."""

    view: int
    start: int
    entries: tuple[Entry, ...]
    op_number: int
    commit_number: int
    replica: int


Message = (
    Request
    | Reply
    | Prepare
    | PrepareOk
    | Commit
    | StartViewChange
    | DoViewChange
    | StartView
    | GetState
    | NewState
)
ReplicaMessage = (
    Request | Prepare | PrepareOk | Commit | StartViewChange | DoViewChange | StartView | GetState
    | NewState
)
