"""The report of a simulation run: event counts, latencies, and one sample trace as a tree.

The :class:`Recorder` is an ordinary handler on the ``vsr`` prefix: the report is built from the
same events every other handler sees, not from the simulator's internals (latencies excepted:
they are measured where a user would, at the clients).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from vsrtel import EventName, Registry, default_registry
from vsrtel.vsr.catalog import PREFIX

if TYPE_CHECKING:
    from vsrtel.vsr.sim import Simulation

_ids = itertools.count(1)
_SPANS = {("protocol", "client_request"), ("state_machine", "operation")}
_COMPLETE = ("vsr", "view_change", "complete")
# (span kind, suffix, node, monotonic time, span context, origin context, reason)
SpanRecord = tuple[str, str, int, int, Any, str, str]


class Recorder:
    """Counts every ``vsr`` event and keeps the span events of each client request."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry
        self.counts: dict[EventName, int] = {}
        self.views_established = 0
        self.spans: dict[tuple[int, int], list[SpanRecord]] = {}
        self._handler_id = ("vsrtel.vsr.report", next(_ids))
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
            record = (name[2], name[3], metadata["node_id"], measurements["monotonic_time"],
                      metadata["telemetry_span_context"],
                      metadata.get("client_request_context", ""), reason)
            self.spans.setdefault(key, []).append(record)
        elif name == _COMPLETE and metadata.get("role") == "primary":
            self.views_established += 1


def percentile(sorted_values: list[int], pct: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    return sorted_values[_rank(len(sorted_values), pct)] if sorted_values else 0


def _rank(count: int, pct: float) -> int:
    """Index of the nearest-rank ``pct`` percentile among ``count`` ascending values."""
    return int(max(1, -(-count * pct // 100))) - 1


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def sample_trace(sim: Simulation, client_id: int, request_number: int) -> dict[str, Any]:
    """Return the trace of one request as a tree of ``{name, node, start_ms, duration_ms,
    status, children}`` dicts, times relative to the client's first send."""
    client = sim.clients[client_id - 1]
    sent = client.sent_at[request_number]
    latency = client.latency_of.get(request_number)
    attempts = client.attempts_of.get(request_number, 0)
    root: dict[str, Any] = {
        "name": f"request c{client_id}#{request_number} ({attempts} "
                f"attempt{'' if attempts == 1 else 's'})",
        "node": None,
        "start_ms": 0.0,
        "duration_ms": _ms(latency) if latency is not None else None,
        "status": "ok" if latency is not None else "incomplete",
        "children": [],
    }
    by_context: dict[Any, dict[str, Any]] = {}
    for kind, suffix, node, when, context, origin, reason in sim.recorder.spans.get(
        (client_id, request_number), []
    ):
        if suffix == "start":
            item: dict[str, Any] = {
                "name": f"vsr.{'protocol' if kind == 'client_request' else 'state_machine'}.{kind}",
                "node": node,
                "start_ms": _ms(when - sent),
                "duration_ms": None,
                "status": "open",
                "children": [],
            }
            by_context[context] = item
            parent = by_context.get(origin) if kind == "operation" else None
            (parent or root)["children"].append(item)
        elif context in by_context:
            item = by_context[context]
            item["duration_ms"] = round(_ms(when - sent) - item["start_ms"], 3)
            item["status"] = "ok" if suffix == "stop" else f"error: {reason}"
    if latency is not None:
        # Every replica rejects an operation the same way, and the client's reply says so.
        rejected = [op["status"] for span in root["children"] for op in span["children"]
                    if op["status"].startswith("error")]
        if rejected:
            root["status"] = rejected[0]
    return root


def build_report(sim: Simulation) -> dict[str, Any]:
    """Return the JSON-ready report of ``sim`` (complete or stopped by a violation)."""
    latencies = sorted(itertools.chain.from_iterable(c.latencies for c in sim.clients))
    recorder = sim.recorder
    events = {".".join(name): count for name, count in sorted(recorder.counts.items())}
    sample = None
    finished = sorted(
        (latency, c.client_id, number) for c in sim.clients for number, latency in
        c.latency_of.items()
    )
    if finished:
        _, client_id, number = finished[_rank(len(finished), 99)]
        sample = sample_trace(sim, client_id, number)
    stats = sim.stats
    return {
        "seed": sim.seed,
        "replicas": len(sim.replicas),
        "clients": len(sim.clients),
        "faults": sim.faults,
        "requests": sim.requests,
        "requests_committed": len(sim.checker.results),
        "latency_ms": {  # None when no request completed
            "p50": _ms(percentile(latencies, 50)) if latencies else None,
            "p99": _ms(percentile(latencies, 99)) if latencies else None,
            "max": _ms(latencies[-1]) if latencies else None,
        },
        "view_changes": recorder.views_established,
        "state_transfers": events.get("vsr.state_transfer.snapshot_received", 0),
        "crashes": stats["crashes"],
        "partitions": stats["partitions"],
        "messages": {k: stats[k] for k in ("sent", "delivered", "dropped", "duplicated")},
        "simulated_ms": _ms(sim.now),
        "events": events,
        "invariants": "ok" if sim.violation is None else str(sim.violation),
        "sample_trace": sample,
    }


def _tree_lines(item: dict[str, Any], prefix: str, last: bool, top: bool) -> list[str]:
    duration = "-" if item["duration_ms"] is None else f"{item['duration_ms']:.3f} ms"
    node = "" if item["node"] is None else f"  node {item['node']}"
    label = f"{item['name']}{node}  +{item['start_ms']:.3f} ms  {duration}  {item['status']}"
    lines = [label if top else f"{prefix}{'└─ ' if last else '├─ '}{label}"]
    child_prefix = "" if top else prefix + ("   " if last else "│  ")
    children = item["children"]
    for i, child in enumerate(children):
        lines += _tree_lines(child, child_prefix, i == len(children) - 1, False)
    return lines


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render_text(report: dict[str, Any]) -> str:
    """Render a report (as :func:`build_report` returns it) for a terminal."""
    latency = {k: "n/a" if v is None else f"{v:.3f} ms" for k, v in report["latency_ms"].items()}
    messages = report["messages"]
    lines = [
        f"VSR cluster: {_plural(report['replicas'], 'replica')}, "
        f"{_plural(report['clients'], 'client')}, "
        f"faults={report['faults']}, seed={report['seed']}",
        f"  requests committed  {report['requests_committed']} of {report['requests']}",
        f"  client latency      p50 {latency['p50']}   p99 {latency['p99']}   "
        f"max {latency['max']}  (simulated)",
        f"  view changes        {report['view_changes']}",
        f"  state transfers     {report['state_transfers']}",
        f"  faults injected     crashes {report['crashes']}, partitions {report['partitions']}, "
        f"messages lost {messages['dropped']} of {messages['sent']}, "
        f"duplicated {messages['duplicated']}",
        f"  simulated time      {report['simulated_ms'] / 1000:.3f} s",
        f"  invariants          {'OK' if report['invariants'] == 'ok' else report['invariants']}",
        "",
        "events per type:",
    ]
    width = max((len(name) for name in report["events"]), default=0)
    lines += [f"  {name:<{width}}  {count:>8}" for name, count in report["events"].items()]
    if not report["events"]:
        lines.append("  (none)")
    if report["sample_trace"] is not None:
        lines += ["", "sample trace (the request at the p99 latency):"]
        lines += ["  " + line for line in _tree_lines(report["sample_trace"], "", True, True)]
    return "\n".join(lines)
