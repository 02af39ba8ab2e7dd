"""The report of a simulation run: event counts, latencies, and one sample trace as a tree.

The report is built from a :class:`vsrtel.vsr.record.RunRecord`, the run as plain data; it
never reads the simulator.
"""

from __future__ import annotations

from typing import Any

from vsrtel.vsr.catalog import STATE_MACHINE_OPERATION, dotted
from vsrtel.vsr.record import RunRecord


def percentile(sorted_values: list[int], pct: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    return sorted_values[_rank(len(sorted_values), pct)] if sorted_values else 0


def _rank(count: int, pct: float) -> int:
    """Index of the nearest-rank ``pct`` percentile among ``count`` ascending values."""
    return int(max(1, -(-count * pct // 100))) - 1


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def sample_trace(record: RunRecord, client_id: int, request_number: int) -> dict[str, Any]:
    """Return the trace of one request as a tree of ``{name, node, start_ms, duration_ms,
    status, children}`` dicts, times relative to the client's first send.

    Raises ``KeyError`` if no client of the run sent that request.
    """
    request = record.request(client_id, request_number)
    sent, latency, attempts = request.sent_at, request.latency, request.attempts
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
    for span, suffix, node, when, context, origin, reason in record.spans.get(
        (client_id, request_number), ()
    ):
        if suffix == "start":
            item: dict[str, Any] = {
                "name": dotted(span),
                "node": node,
                "start_ms": _ms(when - sent),
                "duration_ms": None,
                "status": "open",
                "children": [],
            }
            by_context[context] = item
            parent = by_context.get(origin) if span == STATE_MACHINE_OPERATION else None
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


def build_report(record: RunRecord) -> dict[str, Any]:
    """Return the JSON-ready report of a run (complete or stopped part way)."""
    answered = sorted((r.latency, r.client_id, r.request_number)
                      for r in record.client_requests if r.latency is not None)
    latencies = [latency for latency, _, _ in answered]
    events = {".".join(name): count for name, count in sorted(record.events.items())}
    messages = record.messages
    sample = None
    if answered:
        _, client_id, number = answered[_rank(len(answered), 99)]
        sample = sample_trace(record, client_id, number)
    return {
        "seed": record.seed,
        "replicas": record.replicas,
        "clients": record.clients,
        "faults": record.faults,
        "requests": record.requests,
        "requests_committed": record.requests_committed,
        "latency_ms": {  # None when no request completed
            "p50": _ms(percentile(latencies, 50)) if latencies else None,
            "p99": _ms(percentile(latencies, 99)) if latencies else None,
            "max": _ms(latencies[-1]) if latencies else None,
        },
        "view_changes": record.views_established,
        "state_transfers": events.get("vsr.state_transfer.snapshot_received", 0),
        "crashes": record.crashes,
        "partitions": record.partitions,
        "messages": {"sent": messages.sent, "delivered": messages.delivered,
                     "dropped": messages.dropped, "duplicated": messages.duplicated},
        "simulated_ms": _ms(record.simulated_ns),
        "events": events,
        "invariants": "ok" if record.violation is None else record.violation,
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
    events = report["events"]
    lines = [
        f"VSR cluster: {_plural(report['replicas'], 'replica')}, "
        f"{_plural(report['clients'], 'client')}, "
        f"faults={report['faults']}, seed={report['seed']}",
        f"  requests committed  {report['requests_committed']} of {report['requests']}",
        f"  client latency      p50 {latency['p50']}   p99 {latency['p99']}   "
        f"max {latency['max']}  (simulated)",
        # Views, not the events of the table below: those count each replica's part.
        f"  view changes        {_plural(report['view_changes'], 'new view')} established; "
        f"replicas started {_plural(events.get('vsr.view_change.start', 0), 'view change')}, "
        f"completed {events.get('vsr.view_change.complete', 0)}",
        f"  state transfers     {report['state_transfers']} snapshots received "
        f"(requested {events.get('vsr.state_transfer.request_sent', 0)})",
        f"  faults injected     crashes {report['crashes']}, partitions {report['partitions']}, "
        f"messages lost {messages['dropped']} of {messages['sent']}, "
        f"duplicated {messages['duplicated']}",
        f"  simulated time      {report['simulated_ms'] / 1000:.3f} s",
        f"  invariants          {'OK' if report['invariants'] == 'ok' else report['invariants']}",
        "",
        "events per type, summed over replicas, clients and the network:",
    ]
    width = max((len(name) for name in events), default=0)
    lines += [f"  {name:<{width}}  {count:>8}" for name, count in events.items()]
    if not events:
        lines.append("  (none)")
    if report["sample_trace"] is not None:
        lines += ["", "sample trace (the request at the p99 latency):"]
        lines += ["  " + line for line in _tree_lines(report["sample_trace"], "", True, True)]
    return "\n".join(lines)
