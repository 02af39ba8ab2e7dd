"""The recommended metrics of a VSR cluster, ready for ``MetricsReporter(METRICS)``.

They feed the shipped alert rules (``vsrtel/vsr/alerts.yml``): latency, abandoned requests,
primary timeouts, view changes, commit progress per replica, state transfers, log conflicts,
and failing telemetry handlers. Every tag is bounded (a replica index, a role, a reason).
"""

from __future__ import annotations

from typing import Any

from vsrtel import metrics as m

_NODE = ["node_id"]


def _commit_number(_: Any, metadata: Any) -> Any:
    return metadata["commit_number"]


def _view_number(_: Any, metadata: Any) -> Any:
    return metadata["view_number"]


def _failure_kind(metadata: Any) -> dict[str, str]:
    return {"kind": m.normalize_reason(metadata["reason"])}


METRICS: list[m.Metric] = [
    m.distribution(
        "vsr.protocol.client_request.stop.duration",
        unit=("native", "second"),
        tags=_NODE,
        description="Client request latency at the primary, from accepting it to replying",
    ),
    m.counter(
        "vsr.protocol.client_request.exception.count",
        tags=_NODE,
        description="Client requests abandoned by their primary (view change or crash)",
    ),
    m.sum(
        "vsr.state.commit_advance.count",
        tags=_NODE,
        description="Operations committed, per replica",
    ),
    m.last_value(
        "vsr.replica.commit_number",
        event_name="vsr.state.commit_advance",
        measurement=_commit_number,
        tags=_NODE,
        description="Commit-number of each replica",
    ),
    m.last_value(
        "vsr.replica.view_number",
        event_name="vsr.state.view_change",
        measurement=_view_number,
        tags=_NODE,
        description="View-number of each replica",
    ),
    m.sum("vsr.protocol.prepare.sent.count", tags=_NODE, description="PREPARE frames sent"),
    m.sum("vsr.protocol.commit.sent.count", tags=_NODE, description="COMMIT frames sent"),
    m.sum("vsr.timer.heartbeat_sent.count", tags=_NODE, description="Heartbeat frames sent"),
    m.counter(
        "vsr.timer.primary_timeout.count",
        tags=_NODE,
        description="Backups that stopped hearing from their primary",
    ),
    m.counter(
        "vsr.view_change.start.count",
        tags=["node_id", "reason"],
        description="View changes started, per replica and reason",
    ),
    m.counter(
        "vsr.view_change.complete.count",
        tags=["role"],
        description="Views established (role=primary counts each new view once)",
    ),
    m.distribution(
        "vsr.view_change.complete.duration",
        unit=("native", "second"),
        tags=["role"],
        description="Time a replica spent outside normal status during a view change",
    ),
    m.counter(
        "vsr.state_transfer.snapshot_received.count",
        tags=_NODE,
        description="State transfers applied by lagging or recovering replicas",
    ),
    m.sum(
        "vsr.replication.log_conflict.discarded",
        tags=["cause"],
        description="Uncommitted log entries discarded because a newer log replaced them",
    ),
    m.counter(
        "vsr.network.message_lost.count",
        tags=["reason"],
        description="Messages the simulated network lost (loss, partition or crash)",
    ),
    m.counter(
        "vsr.state_machine.operation.exception.count",
        tags=["operation"],
        description="Operations the state machine rejected",
    ),
    m.counter(
        "vsrtel.handler.failure.count",
        tags=_failure_kind,
        description="Telemetry handlers that raised and were detached",
    ),
]


def render_markdown(metrics: list[m.Metric] | None = None) -> str:
    """Document ``metrics`` (default :data:`METRICS`) as they appear in a Prometheus scrape."""
    from vsrtel.export.prometheus import exposition

    rows = [
        "| Prometheus series | Type | Unit | Labels | From event | Description |",
        "|---|---|---|---|---|---|",
    ]
    for found in exposition(METRICS if metrics is None else metrics):
        metric = found.metric
        series = "<br>".join(f"`{name}`" for name in found.samples)
        labels = ", ".join(f"`{label}`" for label in found.labels) or "-"
        how = f"{metric.kind.name} of `{_measured(metric)}`"
        if not metric.kind.measured:
            how = "each event"
        source = f"`{'.'.join(metric.event_name)}` ({how})"
        rows.append(
            f"| {series} | {found.type} | {found.unit or '-'} | {labels} | {source} "
            f"| {metric.description} |"
        )
    return "\n".join(rows)


def _measured(metric: m.Metric) -> str:
    if isinstance(metric.measurement, str):
        return metric.measurement
    return metric.name.rsplit(".", 1)[-1]
