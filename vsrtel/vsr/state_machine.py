"""The replicated service: an integer key-value store with a VR client table (at-most-once)."""

from __future__ import annotations

from collections.abc import Iterable

from vsrtel.vsr.messages import Entry, Operation, Result

__all__ = ["OPERATION_KINDS", "OperationRejected", "StateMachine", "fold"]

OPERATION_KINDS = ("set", "add", "get", "div")


class OperationRejected(Exception):
    """The state machine refuses an operation (deterministically: every replica refuses it)."""


class StateMachine:
    """The key-value store plus the client table of VR (last request number and its result).

    ``apply`` runs one operation (raising :class:`OperationRejected` without changing anything
    when it is refused); ``record`` remembers a client's latest result; ``execute`` does both for
    a log entry, skipping duplicates. Replicas call ``apply`` and ``record`` themselves so that
    the operation can run inside a telemetry span.
    """

    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.clients: dict[int, tuple[int, Result]] = {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateMachine):
            return NotImplemented
        return self.data == other.data and self.clients == other.clients

    __hash__ = None  # type: ignore[assignment]

    def is_duplicate(self, entry: Entry) -> bool:
        """Whether the client table shows this request (or a later one) already executed."""
        last = self.clients.get(entry.client_id)
        return last is not None and last[0] >= entry.request_number

    def cached(self, client_id: int, request_number: int) -> Result | None:
        """The recorded result of exactly this request, or None."""
        last = self.clients.get(client_id)
        return last[1] if last is not None and last[0] == request_number else None

    def apply(self, operation: Operation) -> int | None:
        """Run ``operation`` and return its value; raise OperationRejected if it is refused."""
        kind, key, arg = operation.kind, operation.key, operation.arg
        current = self.data.get(key, 0)
        if kind == "get":
            return self.data.get(key)
        if kind == "set":
            value = arg
        elif kind == "add":
            value = current + arg
        elif kind == "div":
            if arg == 0:
                raise OperationRejected(f"division by zero: {operation}")
            value = current // arg
        else:
            raise OperationRejected(f"unknown operation kind {kind!r}")
        self.data[key] = value
        return value

    def record(self, entry: Entry, result: Result) -> None:
        """Remember ``result`` as the client's latest in the client table."""
        self.clients[entry.client_id] = (entry.request_number, result)

    def execute(self, entry: Entry) -> Result | None:
        """Execute one committed entry (None for a duplicate, which changes nothing)."""
        if self.is_duplicate(entry):
            return None
        try:
            result = Result(True, self.apply(entry.operation))
        except OperationRejected as exc:
            result = Result(False, error=str(exc))
        self.record(entry, result)
        return result


def fold(entries: Iterable[Entry]) -> StateMachine:
    """Return the state machine obtained by executing ``entries`` in order from empty."""
    machine = StateMachine()
    for entry in entries:
        machine.execute(entry)
    return machine
