"""What a simulated run produced, as plain data: the :class:`RunRecord` the report is built from.

:meth:`vsrtel.vsr.Simulation.record` returns one, at the end of a run or part way through. Its
event side (counts, the span events of each request) comes from the :class:`Recorder`, an
ordinary handler on the ``vsr`` prefix: the report shows the same events every other handler
sees. Latencies are measured where a user would, at the clients; message and fault counts are
the simulated network's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

from vsrtel import EventName, Registry, default_registry
from vsrtel.vsr.catalog import PREFIX, PROTOCOL_CLIENT_REQUEST, STATE_MACHINE_OPERATION

__all__ = ["MessageStats", "Recorder", "RequestRecord", "RunRecord", "SpanRecord"]

_ids = itertools.count(1)
_SPANS = {PROTOCOL_CLIENT_REQUEST, STATE_MACHINE_OPERATION}
_COMPLETE = PREFIX + ("view_change", "complete")


class SpanRecord(NamedTuple):
    """One event of a span of a client request, as the :class:`Recorder` saw it."""

    span: tuple[str, ...]  # PROTOCOL_CLIENT_REQUEST or STATE_MACHINE_OPERATION
    suffix: str  # start, stop or exception
    node: int
    time: int  # monotonic_time, simulated ns
    context: Any  # telemetry_span_context
    origin: str  # an operation's client_request_context, else ""
    reason: str  # an exception's reason, else ""


class RequestRecord(NamedTuple):
    """One client request: first sent at ``sent_at`` (simulated ns), answered ``latency`` ns
    later (None while unanswered), sent ``attempts`` times (1 + retries) so far."""

    client_id: int
    request_number: int
    sent_at: int
    latency: int | None
    attempts: int


class MessageStats(NamedTuple):
    """Messages of the simulated network: ``sent`` (a duplicated one counts once),
    ``delivered``, ``dropped`` (lost, cut by a partition or sent to a crashed replica) and
    ``duplicated``."""

    sent: int
    delivered: int
    dropped: int
    duplicated: int


@dataclass(frozen=True)
class RunRecord:
    """A simulated run as data (a snapshot: it does not change as the run goes on).

    ``requests`` is the number planned; ``client_requests`` holds every request a client sent,
    in the order they were answered, then the unanswered ones by client. ``requests_committed``
    counts the requests the cluster committed. ``events`` counts each ``vsr`` event; ``spans``
    holds the span events of each request, by (client id, request number).
    ``views_established`` counts views whose primary completed the view change. ``violation``
    is the failed invariant (quoting the seed), or None.
    """

    seed: int
    replicas: int
    clients: int
    faults: str
    requests: int
    simulated_ns: int
    client_requests: tuple[RequestRecord, ...]
    requests_committed: int
    messages: MessageStats
    crashes: int
    partitions: int
    events: dict[EventName, int]
    views_established: int
    spans: dict[tuple[int, int], tuple[SpanRecord, ...]]
    violation: str | None

    def request(self, client_id: int, request_number: int) -> RequestRecord:
        """The record of one request; raises ``KeyError`` if no client sent it."""
        for request in self.client_requests:
            if request.client_id == client_id and request.request_number == request_number:
                return request
        raise KeyError((client_id, request_number))


class Recorder:
    """Counts every ``vsr`` event and keeps the span events of each client request."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry
        self.counts: dict[EventName, int] = {}
        self.views_established = 0
        self.spans: dict[tuple[int, int], list[SpanRecord]] = {}
        self._handler_id = ("vsrtel.vsr.record", next(_ids))
        self.registry.attach_prefix(self._handler_id, PREFIX, self._record)
        self._attached = True

    def close(self) -> None:
        """Detach from the registry (idempotent)."""
        if self._attached:
            self._attached = False
            self.registry.detach(self._handler_id)

    def _record(self, name: EventName, measurements: Any, metadata: Any, _: Any) -> None:
        counts = self.counts
        counts[name] = counts.get(name, 0) + 1
        if len(name) == 4 and name[1:3] in _SPANS:
            key = (metadata["client_id"], metadata["request_number"])
            reason = str(metadata.get("reason", "")) if name[3] == "exception" else ""
            record = SpanRecord(name[1:3], name[3], metadata["node_id"],
                                measurements["monotonic_time"], metadata["telemetry_span_context"],
                                metadata.get("client_request_context", ""), reason)
            self.spans.setdefault(key, []).append(record)
        elif name == _COMPLETE and metadata.get("role") == "primary":
            self.views_established += 1
