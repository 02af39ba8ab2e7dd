"""vsrtel.vsr.replica: the VR Revisited step function, driven message by message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import vsrtel
from vsrtel.testing import CapturedEvent, capture
from vsrtel.vsr import TICK, Output, Replica, SimClock
from vsrtel.vsr.catalog import PREFIX, common_metadata
from vsrtel.vsr.messages import (
    Commit,
    DoViewChange,
    Entry,
    GetState,
    NewState,
    Operation,
    Prepare,
    PrepareOk,
    Request,
    Result,
    StartView,
    StartViewChange,
)

MS = 1_000_000


class Cluster:
    """Three replicas on an isolated registry; messages are delivered by hand."""

    def __init__(self, size: int = 3) -> None:
        self.registry = vsrtel.Registry()
        self.clock = SimClock()
        scope = vsrtel.Scope(PREFIX, common_metadata, registry=self.registry, clock=self.clock)
        self.replicas = [Replica(i, size, scope=scope) for i in range(size)]
        for replica in self.replicas:
            replica.start(0)

    def step(self, i: int, message: object, now: int = 0) -> Output:
        self.clock.now = now
        return self.replicas[i].step(message, now)  # type: ignore[arg-type]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield Cluster()


def names(events: list[CapturedEvent]) -> list[str]:
    return [".".join(e.name[1:]) for e in events]


def test_replicas_must_be_2f_plus_1() -> None:
    scope = vsrtel.Scope(PREFIX, common_metadata, registry=vsrtel.Registry())
    with pytest.raises(ValueError, match="odd"):
        Replica(0, 4, scope=scope)
    with pytest.raises(ValueError, match="node_id"):
        Replica(3, 3, scope=scope)


def test_normal_case_request_prepare_prepare_ok_commit_reply(cluster: Cluster) -> None:
    request = Request(7, 1, Operation("set", "x", 5))
    with capture("vsr", registry=cluster.registry) as events:
        out = cluster.step(0, request, now=1 * MS)
    prepares = [(dst, m) for dst, m in out.messages if isinstance(m, Prepare)]
    assert [dst for dst, _ in prepares] == [1, 2]
    prepare = prepares[0][1]
    assert (prepare.view, prepare.op_number, prepare.commit_number) == (0, 1, 0)
    assert names(events) == ["protocol.client_request.start", "replication.log_append",
                             "protocol.prepare.sent"]
    assert events[-1].measurements == {"count": 2}  # frames on the wire, not broadcasts

    with capture("vsr", registry=cluster.registry) as events:
        ok = cluster.step(1, prepare, now=2 * MS)
    assert ok.messages == [(0, PrepareOk(0, 1, 1))]
    assert names(events) == ["replication.log_append", "protocol.prepare.received",
                             "protocol.prepare_ok.sent"]
    assert events[1].metadata["outcome"] == "appended"
    assert cluster.replicas[1].commit_number == 0

    with capture("vsr", registry=cluster.registry) as events:
        done = cluster.step(0, PrepareOk(0, 1, 1), now=3 * MS)
    assert done.replies[0].result == Result(True, 5)
    assert [m for _, m in done.messages] == [Commit(0, 1, 0), Commit(0, 1, 0)]
    assert names(events) == [
        "protocol.prepare_ok.received", "replication.quorum_reached", "state.commit_advance",
        "state_machine.operation.start", "state_machine.operation.stop",
        "protocol.client_request.stop", "protocol.commit.sent",
    ]
    stop = events[5]
    assert stop.measurements["duration"] == 2 * MS  # simulated time, from the scope's clock
    assert stop.metadata["commit_number"] == 1 and stop.metadata["is_primary"] is True
    assert cluster.replicas[0].machine.data == {"x": 5}

    cluster.step(1, Commit(0, 1, 0), now=4 * MS)
    assert cluster.replicas[1].commit_number == 1
    assert cluster.replicas[1].machine.data == {"x": 5}


def test_duplicate_request_gets_the_cached_reply_and_is_not_reexecuted(cluster: Cluster) -> None:
    request = Request(7, 1, Operation("add", "x", 2))
    prepare = next(m for _, m in cluster.step(0, request).messages)
    assert cluster.step(0, request).messages == []  # in progress: dropped
    cluster.step(1, prepare)
    cluster.step(0, PrepareOk(0, 1, 1))
    again = cluster.step(0, request)
    assert [r.result for r in again.replies] == [Result(True, 2)]
    assert cluster.replicas[0].op_number == 1 and cluster.replicas[0].machine.data == {"x": 2}


def test_rejected_operation_is_an_exception_span_with_an_error_reply(cluster: Cluster) -> None:
    prepare = next(m for _, m in cluster.step(0, Request(1, 1, Operation("div", "x", 0))).messages)
    cluster.step(1, prepare)
    with capture("vsr.state_machine", registry=cluster.registry) as events:
        out = cluster.step(0, PrepareOk(0, 1, 1))
    assert names(events) == ["state_machine.operation.start", "state_machine.operation.exception"]
    assert "division by zero" in str(events[1].metadata["reason"])
    assert out.replies[0].result == Result(False, error="division by zero: div x 0")
    with capture("vsr.state_machine", registry=cluster.registry) as events:
        cluster.step(1, Commit(0, 1, 0))
    assert names(events)[-1] == "state_machine.operation.exception"  # same on every replica


def test_prepare_out_of_order_is_buffered_then_appended(cluster: Cluster) -> None:
    p1 = next(m for _, m in cluster.step(0, Request(1, 1, Operation("set", "a", 1))).messages)
    p2 = next(m for _, m in cluster.step(0, Request(2, 1, Operation("set", "b", 2))).messages)
    with capture("vsr.protocol.prepare", registry=cluster.registry) as events:
        assert cluster.step(1, p2).messages == []
        assert cluster.step(1, p1).messages == [(0, PrepareOk(0, 2, 1))]
    assert [e.metadata["outcome"] for e in events] == ["buffered", "appended"]
    assert cluster.replicas[1].op_number == 2


def test_idle_primary_sends_heartbeats_and_backup_times_out(cluster: Cluster) -> None:
    with capture("vsr.timer", registry=cluster.registry) as events:
        out = cluster.step(0, TICK, now=10 * MS)
    assert [m for _, m in out.messages] == [Commit(0, 0, 0, heartbeat=True)] * 2
    assert events[0].measurements == {"count": 2}
    assert out.wake_at == 20 * MS
    with capture("vsr", registry=cluster.registry) as events:
        out = cluster.step(1, TICK, now=60 * MS)
    assert names(events)[:1] == ["timer.primary_timeout"]
    assert events[0].measurements == {"elapsed": 60 * MS}
    assert "view_change.start" in names(events)
    assert [m for _, m in out.messages] == [StartViewChange(1, 1)] * 2
    assert cluster.replicas[1].status == "view_change" and cluster.replicas[1].view_number == 1


def test_view_change_picks_the_log_of_the_latest_normal_view(cluster: Cluster) -> None:
    old = Entry(0, 1, 1, Operation("set", "a", 1))
    newer = Entry(2, 1, 2, Operation("set", "a", 9))
    longer_but_older = (old, Entry(0, 2, 1, Operation("set", "b", 1)),
                        Entry(0, 3, 1, Operation("set", "c", 1)))
    new_primary = cluster.replicas[1]
    cluster.step(1, TICK, now=60 * MS)  # timeout: view 1, whose primary is replica 1
    with capture("vsr", registry=cluster.registry) as events:
        out = cluster.step(1, DoViewChange(1, longer_but_older, 0, 3, 1, 2), now=61 * MS)
        assert out.messages == []  # one vote (f+1 = 2 needed)
        out = cluster.step(1, DoViewChange(1, (old, newer), 2, 2, 1, 0), now=62 * MS)
    assert new_primary.status == "normal" and new_primary.is_primary
    assert new_primary.log == [old, newer]  # largest last-normal view wins over a longer log
    assert new_primary.commit_number == 1
    start_views = [(dst, m) for dst, m in out.messages if isinstance(m, StartView)]
    assert [dst for dst, _ in start_views] == [0, 2]
    assert start_views[0][1].log == (old, newer)
    assert names(events) == [
        "view_change.do_view_change.received", "view_change.do_view_change.received",
        "state.status_change", "state.role_change", "view_change.complete",
        "state.commit_advance", "state_machine.operation.start", "state_machine.operation.stop",
    ]
    complete = events[4]
    assert complete.measurements == {"count": 2, "duration": 2 * MS}
    assert complete.metadata["role"] == "primary"


def test_view_change_ties_break_on_op_number() -> None:
    cluster = Cluster()
    a = Entry(0, 1, 1, Operation("set", "a", 1))
    b = Entry(0, 1, 2, Operation("set", "a", 2))
    cluster.step(1, TICK, now=60 * MS)
    cluster.step(1, DoViewChange(1, (a,), 0, 1, 0, 0), now=61 * MS)
    cluster.step(1, DoViewChange(1, (a, b), 0, 2, 0, 2), now=62 * MS)
    assert cluster.replicas[1].log == [a, b]


def test_f_start_view_change_votes_send_do_view_change(cluster: Cluster) -> None:
    with capture("vsr.view_change", registry=cluster.registry) as events:
        out = cluster.step(2, StartViewChange(1, 0), now=5 * MS)
    assert cluster.replicas[2].view_number == 1
    assert names(events) == ["view_change.start", "view_change.vote_received",
                             "view_change.do_view_change.sent"]
    assert events[0].metadata["reason"] == "higher_view"
    dvc = [(dst, m) for dst, m in out.messages if isinstance(m, DoViewChange)]
    assert dvc == [(1, DoViewChange(1, (), 0, 0, 0, 2))]


def test_backup_adopts_start_view_and_acks_uncommitted_entries(cluster: Cluster) -> None:
    entries = (Entry(0, 1, 1, Operation("set", "a", 1)), Entry(1, 1, 2, Operation("add", "a", 1)))
    with capture("vsr", registry=cluster.registry) as events:
        out = cluster.step(2, StartView(1, entries, 2, 1, 1), now=5 * MS)
    replica = cluster.replicas[2]
    assert (replica.view_number, replica.last_normal_view, replica.status) == (1, 1, "normal")
    assert replica.log == list(entries) and replica.commit_number == 1
    assert out.messages == [(1, PrepareOk(1, 2, 2))]
    assert "view_change.complete" in names(events)
    assert "state.view_change" in names(events)


def test_start_view_discarding_uncommitted_entries_is_a_log_conflict(cluster: Cluster) -> None:
    mine = Entry(0, 5, 1, Operation("set", "z", 1))
    cluster.step(1, Prepare(0, mine, 1, 0, 0))
    other = Entry(1, 6, 1, Operation("set", "y", 1))
    with capture("vsr.replication", registry=cluster.registry) as events:
        cluster.step(1, StartView(2, (other,), 1, 0, 2))
    assert names(events) == ["replication.log_conflict"]
    assert events[0].measurements == {"discarded": 1}
    assert events[0].metadata["cause"] == "view_change"


def test_lagging_backup_fetches_state_from_the_primary(cluster: Cluster) -> None:
    backup = cluster.replicas[2]
    entries = []
    for n in range(1, 4):
        out = cluster.step(0, Request(1, n, Operation("add", "k", n)), now=n * MS)
        prepare = next(m for _, m in out.messages if isinstance(m, Prepare))
        cluster.step(1, prepare, now=n * MS)
        cluster.step(0, PrepareOk(0, n, 1), now=n * MS)
        entries.append(prepare.entry)
    # Replica 2 saw nothing; a commit tells it that it lags.
    cluster.step(2, Commit(0, 3, 0), now=10 * MS)
    cluster.step(2, Commit(0, 3, 0, heartbeat=True), now=40 * MS)
    assert backup.commit_number == 0
    with capture("vsr.state_transfer", registry=cluster.registry) as events:
        out = cluster.step(2, TICK, now=70 * MS)  # the lag outlived Timeouts.lag (60 ms)
        assert out.messages == [(0, GetState(0, 0, 0, 0, 2))]
        served = cluster.step(0, out.messages[0][1], now=71 * MS)
        new_state = served.messages[0][1]
        assert new_state == NewState(0, 1, tuple(entries), 3, 3, 0)
        cluster.step(2, new_state, now=72 * MS)
    assert names(events) == ["state_transfer.request_sent", "state_transfer.request_received",
                             "state_transfer.snapshot_sent", "state_transfer.snapshot_received"]
    assert events[0].metadata["reason"] == "lagging"
    assert events[2].measurements == {"entries": 3}
    assert backup.log == entries and backup.commit_number == 3
    assert backup.machine.data == {"k": 6}


def test_missed_view_is_joined_through_its_primary_without_claiming_it_early(
    cluster: Cluster,
) -> None:
    # Regression: a replica that learns of a newer view from a COMMIT must not present a
    # shortened log as that view's log (it could win a later view change and lose commits).
    mine = Entry(0, 5, 1, Operation("set", "z", 1))
    cluster.step(2, Prepare(0, mine, 1, 0, 0))
    out = cluster.step(2, Commit(3, 0, 0), now=5 * MS)
    replica = cluster.replicas[2]
    assert replica.status == "recovering"
    assert (replica.view_number, replica.last_normal_view, replica.log) == (3, 0, [mine])
    assert out.messages == [(0, GetState(3, 0, 1, 0, 2))]
    # A NEWSTATE of view 3 from a replica that is not its primary is refused ...
    cluster.step(2, NewState(3, 1, (), 0, 0, 1), now=6 * MS)
    assert replica.status == "recovering"
    # ... the primary's is installed.
    theirs = Entry(3, 8, 1, Operation("set", "q", 4))
    cluster.step(2, NewState(3, 1, (theirs,), 1, 0, 0), now=7 * MS)
    assert (replica.status, replica.last_normal_view, replica.log) == ("normal", 3, [theirs])


def test_crash_and_restart_rebuild_the_state_machine_and_recover(cluster: Cluster) -> None:
    out = cluster.step(0, Request(1, 1, Operation("set", "a", 3)), now=1 * MS)
    prepare = next(m for _, m in out.messages if isinstance(m, Prepare))
    cluster.step(1, prepare, now=2 * MS)
    cluster.step(0, PrepareOk(0, 1, 1), now=3 * MS)
    with capture("vsr.protocol.client_request", registry=cluster.registry):
        # heard from its start: a span nobody listened to then emits nothing when it ends
        pending = cluster.step(0, Request(2, 1, Operation("set", "b", 1)), now=4 * MS)
        assert pending.messages
        primary = cluster.replicas[0]
        with capture("vsr", registry=cluster.registry) as events:
            cluster.clock.now = 5 * MS
            primary.crash(5 * MS)
            cluster.clock.now = 9 * MS
            out = primary.restart(9 * MS)
    assert names(events)[0] == "protocol.client_request.exception"
    assert type(events[0].metadata["reason"]).__name__ == "RequestAbandoned"
    assert events[0].metadata["stacktrace"]
    assert primary.incarnation == 1
    assert primary.machine.data == {"a": 3}  # the fold of its committed prefix
    assert primary.op_number == 2  # the log survived
    # The primary of its last normal view resumes it and resends the uncommitted PREPARE.
    assert primary.status == "normal" and primary.is_primary
    assert out.messages == [] and out.wake_at == 9 * MS
    resent = cluster.step(0, TICK, now=9 * MS)
    assert {m.op_number for _, m in resent.messages if isinstance(m, Prepare)} == {2}
    # A restarted backup recovers by state transfer.
    backup = cluster.replicas[1]
    backup.crash(10 * MS)
    cluster.clock.now = 11 * MS
    out = backup.restart(11 * MS)
    assert backup.status == "recovering"
    assert [m for _, m in out.messages] == [GetState(0, 0, 1, 0, 1)] * 2
    served = cluster.step(0, GetState(0, 0, 1, 0, 1), now=12 * MS)
    cluster.step(1, served.messages[0][1], now=13 * MS)
    assert backup.status == "normal" and backup.op_number == 2


def test_common_metadata_reflects_the_state_at_each_event(cluster: Cluster) -> None:
    assert common_metadata(cluster.replicas[0]) == {
        "node_id": 0, "view_number": 0, "status": "normal", "is_primary": True,
        "op_number": 0, "commit_number": 0,
    }


def test_a_late_start_view_of_a_view_already_joined_is_ignored(cluster: Cluster) -> None:
    # Regression (seed 1153): a recovering replica took a delayed STARTVIEW of its own view
    # and shrank its log below its commit-number.
    entries = (Entry(1, 1, 1, Operation("set", "a", 1)),)
    cluster.step(2, StartView(1, entries, 1, 0, 1), now=1 * MS)
    more = Entry(1, 1, 2, Operation("set", "a", 2))
    cluster.step(2, Prepare(1, more, 2, 2, 1), now=2 * MS)
    replica = cluster.replicas[2]
    replica.crash(3 * MS)
    replica.restart(4 * MS)
    assert replica.status == "recovering" and replica.commit_number == 2
    cluster.step(2, StartView(1, entries, 1, 0, 1), now=5 * MS)
    assert replica.log == [entries[0], more] and replica.status == "recovering"


def _primary_of_view_1(cluster: Cluster) -> None:
    """Replica 1 becomes primary of view 1 with replica 2; replica 0 stays in view 0."""
    cluster.step(1, TICK, now=60 * MS)
    cluster.step(1, StartViewChange(1, 2), now=61 * MS)
    out = cluster.step(1, DoViewChange(1, (), 0, 0, 0, 2), now=62 * MS)
    start_view = next(m for dst, m in out.messages if dst == 2)
    cluster.step(2, start_view, now=63 * MS)
    assert cluster.replicas[1].is_primary and cluster.replicas[2].status == "normal"


def test_a_restarted_primary_of_its_last_normal_view_resumes_it(cluster: Cluster) -> None:
    # Regression (seed 572): the restarted primary waited, recovering, for a NEWSTATE that only
    # a normal replica of its view may send; its backups were recovering too: a deadlock.
    _primary_of_view_1(cluster)
    primary = cluster.replicas[1]
    primary.crash(70 * MS)
    cluster.clock.now = 80 * MS
    primary.restart(80 * MS)
    assert primary.status == "normal" and primary.is_primary and primary.view_number == 1
    backup = cluster.replicas[2]
    backup.crash(81 * MS)
    cluster.clock.now = 82 * MS
    asked = backup.restart(82 * MS)
    get_state = next(m for dst, m in asked.messages if dst == 1)
    served = cluster.step(1, get_state, now=83 * MS)
    assert [type(m).__name__ for _, m in served.messages] == ["NewState"]


def test_a_higher_view_get_state_moves_a_replica_of_an_older_view_on(cluster: Cluster) -> None:
    _primary_of_view_1(cluster)
    old = cluster.replicas[0]
    assert old.view_number == 0 and old.is_primary
    out = cluster.step(0, GetState(1, 1, 0, 0, 2), now=70 * MS)
    assert (old.view_number, old.status) == (1, "recovering")
    assert out.messages == [(1, GetState(1, 0, 0, 0, 0))]


def test_a_recovering_replica_nobody_answers_starts_a_view_change(cluster: Cluster) -> None:
    replica = cluster.replicas[2]
    replica.crash(1 * MS)
    cluster.clock.now = 2 * MS
    out = replica.restart(2 * MS)
    for _ in range(10):  # every GETSTATE is lost
        if replica.status != "recovering":
            break
        assert out.wake_at is not None
        out = cluster.step(2, TICK, now=out.wake_at)
    assert (replica.status, replica.view_number) == ("view_change", 1)
    assert [m for _, m in out.messages] == [StartViewChange(1, 2)] * 2


def test_view_change_duration_after_a_restart_counts_from_the_restart(cluster: Cluster) -> None:
    replica = cluster.replicas[2]
    replica.crash(5 * MS)
    cluster.clock.now = 10 * MS
    replica.restart(10 * MS)
    with capture("vsr.view_change.complete", registry=cluster.registry) as events:
        cluster.step(2, StartView(1, (), 0, 0, 1), now=30 * MS)
    assert [e.measurements["duration"] for e in events] == [20 * MS]


def test_a_view_change_resends_its_messages_and_backs_off(cluster: Cluster) -> None:
    replica = cluster.replicas[2]
    cluster.step(2, StartViewChange(1, 0), now=1 * MS)  # DOVIEWCHANGE to replica 1
    out = cluster.step(2, TICK, now=21 * MS)  # view_change_retry: both may have been lost
    assert sorted(type(m).__name__ for _, m in out.messages) == [
        "DoViewChange", "StartViewChange", "StartViewChange"]
    # The view change timeout (80 ms) is jittered by up to half, and doubles when it fails.
    first = replica._view_change_deadline - 1 * MS
    now = 21 * MS
    while replica.view_number == 1:
        assert out.wake_at is not None
        now = out.wake_at
        out = cluster.step(2, TICK, now=now)
    second = replica._view_change_deadline - now
    assert 80 * MS <= first < 120 * MS and 160 * MS <= second < 200 * MS


def test_the_new_primary_answers_a_straggler_with_start_view(cluster: Cluster) -> None:
    _primary_of_view_1(cluster)
    out = cluster.step(1, StartViewChange(1, 0), now=70 * MS)  # replica 0 missed STARTVIEW
    assert [(dst, type(m).__name__) for dst, m in out.messages] == [(0, "StartView")]
    cluster.step(0, out.messages[0][1], now=71 * MS)
    assert (cluster.replicas[0].view_number, cluster.replicas[0].status) == (1, "normal")


def test_a_new_primary_never_announces_a_lower_commit_number_than_its_own() -> None:
    # Five replicas (f = 2). Replica 1, the primary of view 1, learns that ops 1-2 committed;
    # replicas 2-4 hold both ops but not the commit. They change view without it, and their
    # three DOVIEWCHANGEs (commit-number 0) complete the view change before it sends its own.
    cluster = Cluster(5)
    new_primary = cluster.replicas[1]
    prepares = []
    for n in (1, 2):
        out = cluster.step(0, Request(1, n, Operation("add", "k", n)), now=n * MS)
        prepares.append(next(m for _, m in out.messages if isinstance(m, Prepare)))
    for i in (1, 2, 3, 4):
        for prepare in prepares:
            cluster.step(i, prepare, now=3 * MS)
    cluster.step(0, PrepareOk(0, 2, 2), now=4 * MS)
    out = cluster.step(0, PrepareOk(0, 2, 3), now=4 * MS)
    commit = next(m for dst, m in out.messages if dst == 1 and isinstance(m, Commit))
    cluster.step(1, commit, now=5 * MS)
    assert new_primary.commit_number == 2
    assert [cluster.replicas[i].commit_number for i in (2, 3, 4)] == [0, 0, 0]

    votes: list[StartViewChange] = []
    for i in (2, 3, 4):
        out = cluster.step(i, TICK, now=70 * MS)  # the old primary went silent
        votes.append(next(m for _, m in out.messages if isinstance(m, StartViewChange)))
    do_view_changes = []
    for i in (2, 3, 4):
        for vote in votes:
            out = cluster.step(i, vote, now=71 * MS)
            do_view_changes += [m for dst, m in out.messages
                                if dst == 1 and isinstance(m, DoViewChange)]
    assert sorted(m.replica for m in do_view_changes) == [2, 3, 4]
    assert {m.commit_number for m in do_view_changes} == {0}

    start_views = []
    for message in do_view_changes:
        out = cluster.step(1, message, now=72 * MS)
        assert new_primary.commit_number == 2  # never lower than what it had reached
        start_views += [m for _, m in out.messages if isinstance(m, StartView)]
    assert new_primary.is_primary and new_primary.view_number == 1
    assert [m.commit_number for m in start_views] == [2] * 4  # its own, not the DVCs' 0
    cluster.step(2, start_views[0], now=73 * MS)
    assert cluster.replicas[2].commit_number == 2


def test_a_replica_changing_view_fetches_the_state_on_a_prepare_of_that_view(
    cluster: Cluster,
) -> None:
    # Deviation: its STARTVIEW was lost, but a PREPARE (or COMMIT) of view 1 shows that view is
    # established; it asks view 1's primary for the log rather than waiting for a STARTVIEW.
    replica = cluster.replicas[2]
    cluster.step(2, TICK, now=60 * MS)  # primary timeout: changing to view 1
    assert (replica.view_number, replica.status) == (1, "view_change")
    entry = Entry(1, 4, 1, Operation("set", "a", 1))
    out = cluster.step(2, Prepare(1, entry, 1, 0, 1), now=61 * MS)
    assert (replica.view_number, replica.status, replica.log) == (1, "recovering", [])
    assert out.messages == [(1, GetState(1, 0, 0, 0, 2))]
    cluster.step(2, NewState(1, 1, (entry,), 1, 0, 1), now=62 * MS)
    assert (replica.status, replica.last_normal_view, replica.log) == ("normal", 1, [entry])
