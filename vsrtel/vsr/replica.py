"""One VSR replica as a deterministic step function: (state, message or tick, now) -> output.

The protocol is "Viewstamped Replication Revisited" (Liskov and Cowling, 2012): the normal case
(section 4.1), view changes (4.2) and state transfer (5.2). The replica owns no socket, thread,
clock or random source: :meth:`Replica.step` takes the input and the simulated time, updates
the replica's state and returns the messages to send, the replies for clients and the next time
it wants a :data:`TICK`. Every catalogue event is emitted where it happens, through a
:class:`vsrtel.Scope` whose clock is the simulator's.

Durability model (documented deviation from the paper's disk-less recovery protocol): the view
number, the log, its view (last normal view) and the commit-number survive a crash, as if written
before any message leaves. A restarted replica rebuilds its state machine from its committed
prefix, enters status ``recovering`` and uses state transfer (GETSTATE to all; a NEWSTATE from a
replica of its log's view, or from the primary of a newer view) before it processes PREPAREs
again; it still takes part in view changes, with its honest log and last normal view. A replica
that crashed during a view change resumes that view change instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vsrtel import Scope, Span
from vsrtel.vsr.catalog import PROTOCOL_CLIENT_REQUEST, STATE_MACHINE_OPERATION, ReplicaLike
from vsrtel.vsr.messages import (
    Commit,
    DoViewChange,
    Entry,
    GetState,
    NewState,
    Prepare,
    PrepareOk,
    ReplicaMessage,
    Reply,
    Request,
    Result,
    StartView,
    StartViewChange,
)
from vsrtel.vsr.state_machine import OperationRejected, StateMachine, fold

NORMAL, VIEW_CHANGE, RECOVERING = "normal", "view_change", "recovering"
MS = 1_000_000  # nanoseconds per millisecond


class Tick:
    """The timer input: the replica checks its deadlines."""

    def __repr__(self) -> str:
        return "TICK"


TICK = Tick()


class RequestAbandoned(Exception):
    """Ends a ``client_request`` span whose primary lost its role or crashed before commit."""


class Propagation(NamedTuple):
    """How trace context crosses nodes inside messages (pluggable; default: none).

    ``inject(carrier, span)`` writes the trace context of the running ``span`` into the
    ``carrier`` dict; ``extract(carrier)`` returns a parent context (put in span metadata under
    ``"trace_parent"``) or None.
    """

    inject: Callable[[dict[str, str], Span], None]
    extract: Callable[[Mapping[str, str]], object]


def _no_inject(carrier: dict[str, str], span: Span) -> None:
    return None


def _no_extract(carrier: Mapping[str, str]) -> object:
    return None


NO_PROPAGATION = Propagation(_no_inject, _no_extract)


@dataclass(frozen=True)
class Timeouts:
    """Protocol timers, in simulated nanoseconds."""

    heartbeat: int = 10 * MS  # primary: idle time before a heartbeat COMMIT
    primary: int = 60 * MS  # backup: silence from the primary before a view change
    view_change: int = 80 * MS  # a view change that has not completed moves to the next view
    view_change_retry: int = 20 * MS  # resend STARTVIEWCHANGE (and DOVIEWCHANGE) meanwhile
    prepare_retry: int = 25 * MS  # primary: retransmit unacknowledged PREPAREs
    lag: int = 60 * MS  # backup: how long a gap may last before state transfer (> 2 retries)
    state_transfer: int = 40 * MS  # retry GETSTATE
    recovery_rounds: int = 3  # unanswered GETSTATEs before a recovering replica changes view
    retransmit_window: int = 16  # entries per backup per retransmission


@dataclass
class Output:
    """What one step produced: messages ``(destination, message)``, client replies, next tick."""

    messages: list[tuple[int, ReplicaMessage]] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    wake_at: int | None = None


class Replica:
    """Replica ``node_id`` of a cluster of ``replicas`` (= 2f+1) replicas.

    Public state (read it, never write it): ``view_number``, ``status``, ``last_normal_view``,
    ``log`` (entry of op-number n is ``log[n-1]``), ``commit_number``, ``machine`` (the state
    machine and client table), ``log_version`` (bumped whenever the log is replaced or
    truncated rather than appended to), ``incarnation`` (restarts so far).
    """

    def __init__(
        self,
        node_id: int,
        replicas: int,
        *,
        scope: Scope[ReplicaLike],
        timeouts: Timeouts | None = None,
        propagation: Propagation = NO_PROPAGATION,
        context_prefix: str = "",
    ) -> None:
        if replicas < 1 or replicas % 2 == 0:
            raise ValueError(f"replicas must be odd (2f+1) and >= 1, got {replicas}")
        if not 0 <= node_id < replicas:
            raise ValueError(f"node_id must be in 0..{replicas - 1}, got {node_id}")
        self.node_id = node_id
        self.replicas = replicas
        self.f = (replicas - 1) // 2
        self.scope = scope
        self.timeouts = timeouts or Timeouts()
        self.propagation = propagation
        self.context_prefix = context_prefix
        # durable
        self.view_number = 0
        self.status = NORMAL
        self.last_normal_view = 0
        self.log: list[Entry] = []
        self.commit_number = 0
        self.log_version = 0
        self.incarnation = 0
        self._reset_volatile(0)

    # -- state ---------------------------------------------------------------------------------

    @property
    def op_number(self) -> int:
        """The op-number: entries in the log."""
        return len(self.log)

    @property
    def is_primary(self) -> bool:
        """Whether this replica is the active primary: primary of its view, status normal."""
        return self.status == NORMAL and self.view_number % self.replicas == self.node_id

    def primary_of(self, view: int) -> int:
        """The primary of ``view`` (round robin)."""
        return view % self.replicas

    def _reset_volatile(self, now: int) -> None:
        self.machine = StateMachine()
        self._spans: dict[tuple[int, int], Span] = {}
        self._span_seq = 0
        self._reset_view_state(now)
        self._view_change_started: int | None = None
        self._view_change_rounds = 0  # view changes started since the last normal status

    def _reset_view_state(self, now: int) -> None:
        self._acked: dict[int, int] = {}
        self._svc_votes: set[int] = set()
        self._dvc: dict[int, DoViewChange] = {}
        self._dvc_sent = False
        self._pending: dict[int, Entry] = {}
        self._known_commit = self.commit_number
        self._lag_since: int | None = None
        self._transfer_at: int | None = None
        self._transfer_tries = 0
        self._last_heard = now
        self._heartbeat_at = now + self.timeouts.heartbeat
        self._retry_at: int | None = None
        self._prepared_at: dict[int, int] = {}  # primary: op-number -> last PREPARE sent
        self._view_change_deadline = now + self.timeouts.view_change
        self._view_change_retry_at = now + self.timeouts.view_change_retry

    # -- entry points --------------------------------------------------------------------------

    def start(self, now: int) -> Output:
        """Begin at time ``now`` (status normal, view 0); return the first output."""
        self._begin(now)
        self._reset_view_state(now)
        return self._finish()

    def step(self, message: ReplicaMessage | Tick, now: int) -> Output:
        """Process one message or a :data:`TICK` at simulated time ``now``."""
        self._begin(now)
        getattr(self, _HANDLERS[type(message)])(message)
        return self._finish()

    def crash(self, now: int) -> None:
        """Crash: the volatile state is lost (open ``client_request`` spans end with an error)."""
        self._now = now
        self._abandon_requests("replica crashed")

    def restart(self, now: int) -> Output:
        """Restart from the durable state: rebuild the state machine, then recover by transfer."""
        self._begin(now)
        self.incarnation += 1
        was_primary = self.is_primary
        self._reset_volatile(now)
        self.machine = fold(self.log[: self.commit_number])
        if (self.last_normal_view == self.view_number
                and self.primary_of(self.view_number) == self.node_id):
            # The primary of its last normal view: its durable log is that view's log, which no
            # other replica can send it. It resumes (its PREPAREs go out again from the timer).
            self._transition(status=NORMAL)
            if self.op_number > self.commit_number:
                self._retry_at = now
            return self._finish()
        if self.status == VIEW_CHANGE:
            # It crashed during a view change: resume it (its view-number is a promise never to
            # act in a lower view again, so replicas of a lower view cannot serve it).
            self._view_change_started = now
            self._start_view_change(self.view_number, "restart")
            return self._finish()
        previous = self.status
        self.status = RECOVERING
        self._view_change_started = now
        if previous != RECOVERING:
            self._emit(("state", "status_change"), {}, {"previous_status": previous})
        if was_primary:
            self._emit(("state", "role_change"), {}, {"role": "backup", "previous_role": "primary"})
        self._request_state("recovering")
        return self._finish()

    # -- plumbing ------------------------------------------------------------------------------

    def _begin(self, now: int) -> None:
        self._now = now
        self._out = Output()

    def _finish(self) -> Output:
        out = self._out
        out.wake_at = self._wake_at()
        return out

    def _emit(self, event: tuple[str, ...], measurements: Mapping[str, Any],
              metadata: Mapping[str, Any] | None = None) -> None:
        self.scope.execute(event, self, measurements, metadata)

    def _send(self, destination: int, message: ReplicaMessage) -> None:
        self._out.messages.append((destination, message))

    def _others(self) -> list[int]:
        return [i for i in range(self.replicas) if i != self.node_id]

    def _broadcast(self, message: ReplicaMessage) -> int:
        others = self._others()
        for i in others:
            self._send(i, message)
        return len(others)

    def _span_metadata(
        self, request: Request | Entry, op_number: int, **extra: Any
    ) -> dict[str, Any]:
        """Metadata of a client_request or operation span, under the sender's trace if any."""
        metadata: dict[str, Any] = {
            "client_id": request.client_id,
            "request_number": request.request_number,
            "operation": request.operation.kind,
            "entry_op_number": op_number,
            **extra,
            "telemetry_span_context": self._next_context(),
        }
        if request.trace:
            parent = self.propagation.extract(request.trace)
            if parent is not None:
                metadata["trace_parent"] = parent
        return metadata

    def _next_context(self) -> str:
        self._span_seq += 1
        return f"{self.context_prefix}n{self.node_id}.{self.incarnation}.{self._span_seq}"

    def _wake_at(self) -> int | None:
        t = self.timeouts
        deadlines: list[int] = []
        if self.status == NORMAL:
            if self.is_primary:
                deadlines.append(self._heartbeat_at)
                if self._retry_at is not None:
                    deadlines.append(self._retry_at)
            else:
                deadlines.append(self._last_heard + t.primary)
                if self._lag_since is not None and self._transfer_at is None:
                    deadlines.append(self._lag_since + t.lag)
        elif self.status == VIEW_CHANGE:
            deadlines.append(min(self._view_change_deadline, self._view_change_retry_at))
        if self._transfer_at is not None:
            deadlines.append(self._transfer_at + t.state_transfer)
        return min(deadlines) if deadlines else None

    def _transition(self, *, view: int | None = None, status: str | None = None) -> None:
        """Change view and/or status, emitting the state events (and role change) they imply."""
        was_primary = self.is_primary
        if view is not None and view != self.view_number:
            previous_view, self.view_number = self.view_number, view
            self._emit(("state", "view_change"), {}, {"previous_view": previous_view})
        if status is not None and status != self.status:
            if self.status == NORMAL or self._view_change_started is None:
                self._view_change_started = self._now
            if status == NORMAL:
                self._view_change_rounds = 0
            previous_status, self.status = self.status, status
            self._emit(("state", "status_change"), {}, {"previous_status": previous_status})
        if self.is_primary != was_primary:
            role, previous = ("primary", "backup") if self.is_primary else ("backup", "primary")
            self._emit(("state", "role_change"), {}, {"role": role, "previous_role": previous})
            if was_primary:
                self._abandon_requests(f"left the primary role (view {self.view_number})")

    def _abandon_requests(self, why: str) -> None:
        spans, self._spans = self._spans, {}
        for span in spans.values():
            try:  # raised so that its traceback (the span's stacktrace) is this frame only
                raise RequestAbandoned(why)
            except RequestAbandoned as error:
                span.metadata.update(self.scope.metadata(self))
                span.stop(error=error)

    def _replace_log(self, log: list[Entry], cause: str) -> None:
        """Install ``log``, reporting uncommitted entries of the old log that it discards."""
        old, start = self.log, self.commit_number
        discarded = sum(
            1 for i in range(start, len(old)) if i >= len(log) or old[i] != log[i]
        )
        self.log = log
        self.log_version += 1
        if discarded:
            self._emit(("replication", "log_conflict"), {"discarded": discarded}, {"cause": cause})

    # -- normal case ---------------------------------------------------------------------------

    def _on_request(self, msg: Request) -> None:
        if not self.is_primary:
            return  # backups drop client requests; the client retries to all replicas
        last = self.machine.clients.get(msg.client_id)
        if last is not None and last[0] >= msg.request_number:
            if last[0] == msg.request_number:  # executed already: resend the reply
                self._out.replies.append(
                    Reply(self.view_number, msg.client_id, msg.request_number, last[1])
                )
            return
        for entry in self.log[self.commit_number:]:
            if (entry.client_id, entry.request_number) == (msg.client_id, msg.request_number):
                return  # in progress: the reply follows the commit
        op_number = self.op_number + 1
        metadata = self._span_metadata(msg, op_number)
        context = metadata["telemetry_span_context"]
        span = self.scope.span(PROTOCOL_CLIENT_REQUEST, self, metadata).start()
        carrier: dict[str, str] = {}
        self.propagation.inject(carrier, span)
        entry = Entry(self.view_number, msg.client_id, msg.request_number, msg.operation,
                      origin=context, trace=carrier)
        self._spans[(msg.client_id, msg.request_number)] = span
        self.log.append(entry)
        self._emit(("replication", "log_append"), {}, {"entry_op_number": op_number})
        prepare = Prepare(self.view_number, entry, op_number, self.commit_number, self.node_id)
        count = self._broadcast(prepare)
        self._prepared_at[op_number] = self._now
        self._emit(("protocol", "prepare", "sent"), {"count": count},
                   {"entry_op_number": op_number, "retransmit": False})
        self._heartbeat_at = self._now + self.timeouts.heartbeat
        if self._retry_at is None:
            self._retry_at = self._now + self.timeouts.prepare_retry
        self._try_commit()

    def _on_prepare(self, msg: Prepare) -> None:
        if not self._in_view(msg.view) or self.is_primary:
            return
        self._last_heard = self._now
        if msg.op_number <= self.op_number:
            outcome = "duplicate"
        elif msg.op_number == self.op_number + 1:
            outcome = "appended"
            self._append(msg.entry)
        else:
            outcome = "buffered"
            self._pending[msg.op_number] = msg.entry
        self._emit(("protocol", "prepare", "received"), {},
                   {"entry_op_number": msg.op_number, "from_node": msg.replica, "outcome": outcome})
        if outcome != "buffered":
            self._send_prepare_ok()
        self._learn_commit(msg.commit_number)

    def _append(self, entry: Entry) -> None:
        self.log.append(entry)
        self._emit(("replication", "log_append"), {}, {"entry_op_number": self.op_number})
        while self.op_number + 1 in self._pending:
            self.log.append(self._pending.pop(self.op_number + 1))
            self._emit(("replication", "log_append"), {}, {"entry_op_number": self.op_number})
        for n in [n for n in self._pending if n <= self.op_number]:
            del self._pending[n]

    def _send_prepare_ok(self) -> None:
        primary = self.primary_of(self.view_number)
        self._send(primary, PrepareOk(self.view_number, self.op_number, self.node_id))
        self._emit(("protocol", "prepare_ok", "sent"), {},
                   {"entry_op_number": self.op_number, "to_node": primary})

    def _learn_commit(self, commit_number: int) -> None:
        """A backup learns the primary's commit-number: execute what its log holds, note lag."""
        self._known_commit = max(self._known_commit, commit_number)
        self._advance_commit(min(self._known_commit, self.op_number))
        self._update_lag()

    def _update_lag(self) -> None:
        lagging = bool(self._pending) or self._known_commit > self.op_number
        if not lagging:
            self._lag_since = None
        elif self._lag_since is None:
            self._lag_since = self._now

    def _on_prepare_ok(self, msg: PrepareOk) -> None:
        if not self.is_primary or msg.view != self.view_number:
            return
        self._emit(("protocol", "prepare_ok", "received"), {},
                   {"entry_op_number": msg.op_number, "from_node": msg.replica})
        if msg.op_number > self._acked.get(msg.replica, 0):
            self._acked[msg.replica] = min(msg.op_number, self.op_number)
        self._try_commit()

    def _try_commit(self) -> None:
        """Primary: commit every op held by f+1 replicas (itself included) in this view."""
        positions = sorted([self.op_number, *self._acked.values()], reverse=True)
        if len(positions) <= self.f:
            return
        target = positions[self.f]
        if target <= self.commit_number:
            return
        for n in range(self.commit_number + 1, target + 1):
            acks = sum(1 for p in positions if p >= n)
            self._emit(("replication", "quorum_reached"), {"acks": acks}, {"entry_op_number": n})
        self._advance_commit(target)
        count = self._broadcast(Commit(self.view_number, self.commit_number, self.node_id))
        if count:
            self._emit(("protocol", "commit", "sent"), {"count": count})
        self._heartbeat_at = self._now + self.timeouts.heartbeat

    def _advance_commit(self, target: int) -> None:
        """Set the commit-number to ``target`` and execute the newly committed entries."""
        previous = self.commit_number
        if target <= previous:
            return
        self.commit_number = target
        self._emit(("state", "commit_advance"), {"count": target - previous},
                   {"previous_commit_number": previous})
        for n in range(previous + 1, target + 1):
            self._execute(n, self.log[n - 1])

    def _execute(self, op_number: int, entry: Entry) -> None:
        result: Result | None
        if self.machine.is_duplicate(entry):
            result = self.machine.cached(entry.client_id, entry.request_number)
        else:
            metadata = self._span_metadata(entry, op_number, client_request_context=entry.origin)
            try:
                with self.scope.span(STATE_MACHINE_OPERATION, self, metadata):
                    result = Result(True, self.machine.apply(entry.operation))
            except OperationRejected as exc:
                result = Result(False, error=str(exc))
            self.machine.record(entry, result)
        if not self.is_primary or result is None:
            return
        self._out.replies.append(
            Reply(self.view_number, entry.client_id, entry.request_number, result)
        )
        span = self._spans.pop((entry.client_id, entry.request_number), None)
        if span is not None:
            span.metadata.update(self.scope.metadata(self))
            span.stop()

    def _in_view(self, view: int) -> bool:
        """Whether a PREPARE/COMMIT of ``view`` is for us; rejoin a view we missed."""
        if view < self.view_number or (view == self.view_number and self.status == RECOVERING):
            return False
        if view > self.view_number or self.status != NORMAL:
            self._rejoin(view)
            return False
        return True

    def _on_commit(self, msg: Commit) -> None:
        if not self._in_view(msg.view) or self.is_primary:
            return
        self._last_heard = self._now
        if msg.heartbeat:
            self._emit(("timer", "heartbeat_received"), {}, {"from_node": msg.replica})
        else:
            self._emit(("protocol", "commit", "received"), {},
                       {"from_node": msg.replica, "received_commit_number": msg.commit_number})
        self._learn_commit(msg.commit_number)

    # -- timers --------------------------------------------------------------------------------

    def _on_tick(self, _: Tick) -> None:
        now, t = self._now, self.timeouts
        if self.status == NORMAL and self.is_primary:
            if now >= self._heartbeat_at:
                count = self._broadcast(
                    Commit(self.view_number, self.commit_number, self.node_id, heartbeat=True)
                )
                self._heartbeat_at = now + t.heartbeat
                if count:
                    self._emit(("timer", "heartbeat_sent"), {"count": count})
            if self._retry_at is not None and now >= self._retry_at:
                self._retransmit()
        elif self.status == NORMAL:
            if now - self._last_heard >= t.primary:
                self._emit(("timer", "primary_timeout"), {"elapsed": now - self._last_heard})
                self._start_view_change(self.view_number + 1, "primary_timeout")
                return
            retry = self._transfer_at is not None and now >= self._transfer_at + t.state_transfer
            overdue = self._lag_since is not None and now >= self._lag_since + t.lag
            if retry or (overdue and self._transfer_at is None):
                self._transfer_at = None
                if self._lag_since is not None:
                    self._request_state("lagging")
        elif self.status == VIEW_CHANGE:
            if now >= self._view_change_deadline:
                self._start_view_change(self.view_number + 1, "view_change_timeout")
            elif now >= self._view_change_retry_at:
                self._retransmit_view_change()
        elif self._transfer_at is not None and now >= self._transfer_at + t.state_transfer:
            if self._transfer_tries >= t.recovery_rounds:
                # Nobody serves us: its primary may be recovering too, or in no view at all.
                self._start_view_change(self.view_number + 1, "recovery_timeout")
                return
            self._request_state("recovering")

    def _retransmit(self) -> None:
        """Primary: resend PREPAREs that backups have not acknowledged."""
        window, due = self.timeouts.retransmit_window, self._now - self.timeouts.prepare_retry
        sent_at = self._prepared_at
        destinations: dict[int, list[int]] = {}
        waiting = False
        lowest = self.op_number
        for i in self._others():
            acked = self._acked.get(i, self.commit_number)
            lowest = min(lowest, acked)
            if acked < self.commit_number - window:
                continue  # far behind: its own lag detection fetches the state instead
            for n in range(acked + 1, min(self.op_number, acked + window) + 1):
                if sent_at.get(n, due) <= due:  # never sent (since a restart) counts as due
                    destinations.setdefault(n, []).append(i)
                else:
                    waiting = True  # sent recently: its PREPAREOK may be on the way
        for n in [n for n in sent_at if n <= lowest]:
            del sent_at[n]
        for n in sorted(destinations):
            prepare = Prepare(self.view_number, self.log[n - 1], n, self.commit_number,
                              self.node_id)
            for i in destinations[n]:
                self._send(i, prepare)
            sent_at[n] = self._now
            self._emit(("protocol", "prepare", "sent"), {"count": len(destinations[n])},
                       {"entry_op_number": n, "retransmit": True})
        more = destinations or waiting
        self._retry_at = self._now + self.timeouts.prepare_retry if more else None

    # -- view change ---------------------------------------------------------------------------

    def _start_view_change(self, view: int, reason: str) -> None:
        previous_view = self.view_number
        self._transition(view=view, status=VIEW_CHANGE)
        self._reset_view_state(self._now)
        self._view_change_rounds += 1
        self._view_change_deadline = self._now + self._view_change_timeout()
        count = self._broadcast(StartViewChange(view, self.node_id))
        self._emit(("view_change", "start"), {"count": count},
                   {"reason": reason, "previous_view": previous_view})
        self._maybe_send_do_view_change()

    def _view_change_timeout(self) -> int:
        """Back off over consecutive failed view changes, jittered so replicas do not move in
        step. The jitter is a hash of (replica, view): the replica has no random source."""
        base = self.timeouts.view_change
        backoff = base << min(self._view_change_rounds - 1, 2)
        mixed = ((self.node_id + 1) * 0x9E3779B1 + self.view_number * 0x85EBCA77) % 2**32
        return backoff + mixed * (base // 2) // 2**32

    def _retransmit_view_change(self) -> None:
        """Resend STARTVIEWCHANGE, and DOVIEWCHANGE once sent: either may have been lost."""
        self._view_change_retry_at = self._now + self.timeouts.view_change_retry
        self._broadcast(StartViewChange(self.view_number, self.node_id))
        if self._dvc_sent:
            self._dvc_sent = False
            self._maybe_send_do_view_change()

    def _resend_start_view(self, to: int) -> None:
        """The primary of an established view answers a straggler still changing to it."""
        self._send(to, StartView(self.view_number, tuple(self.log), self.op_number,
                                 self.commit_number, self.node_id))

    def _on_start_view_change(self, msg: StartViewChange) -> None:
        if msg.replica == self.node_id:
            return
        if msg.view > self.view_number:
            self._start_view_change(msg.view, "higher_view")
        if msg.view == self.view_number and self.is_primary:
            self._resend_start_view(msg.replica)
            return
        if msg.view != self.view_number or self.status != VIEW_CHANGE:
            return
        if msg.replica not in self._svc_votes:
            self._svc_votes.add(msg.replica)
            self._emit(("view_change", "vote_received"), {"votes": len(self._svc_votes)},
                       {"from_node": msg.replica})
        self._maybe_send_do_view_change()

    def _maybe_send_do_view_change(self) -> None:
        if self._dvc_sent or len(self._svc_votes) < self.f:
            return
        self._dvc_sent = True
        message = DoViewChange(self.view_number, tuple(self.log), self.last_normal_view,
                               self.op_number, self.commit_number, self.node_id)
        primary = self.primary_of(self.view_number)
        if primary == self.node_id:
            self._record_do_view_change(message)
            return
        self._send(primary, message)
        self._emit(("view_change", "do_view_change", "sent"), {},
                   {"to_node": primary, "log_view": self.last_normal_view})

    def _on_do_view_change(self, msg: DoViewChange) -> None:
        if msg.view > self.view_number:
            self._start_view_change(msg.view, "higher_view")
        if msg.view == self.view_number and self.is_primary and msg.replica != self.node_id:
            self._resend_start_view(msg.replica)
            return
        if (msg.view != self.view_number or self.status != VIEW_CHANGE
                or self.primary_of(msg.view) != self.node_id):
            return
        self._dvc[msg.replica] = msg
        self._emit(("view_change", "do_view_change", "received"), {"votes": len(self._dvc)},
                   {"from_node": msg.replica, "log_view": msg.log_view})
        self._record_do_view_change(msg)

    def _record_do_view_change(self, msg: DoViewChange) -> None:
        self._dvc[msg.replica] = msg
        if len(self._dvc) < self.f + 1:
            return
        # The new log: largest last-normal view, ties broken by the largest op-number.
        best = max(self._dvc.values(), key=lambda m: (m.log_view, m.op_number, m.replica))
        # Its own commit-number counts too: it may have completed without its own DOVIEWCHANGE,
        # and a new view must never announce a lower commit-number than its primary reached.
        commit = max(self.commit_number, *(m.commit_number for m in self._dvc.values()))
        self._replace_log(list(best.log), "view_change")
        self.last_normal_view = self.view_number
        started = self._view_change_started
        self._transition(status=NORMAL)
        self._reset_view_state(self._now)
        count = self._broadcast(StartView(self.view_number, tuple(self.log), self.op_number,
                                          commit, self.node_id))
        self._emit(("view_change", "complete"),
                   {"count": count, "duration": self._now - started if started is not None else 0},
                   {"role": "primary"})
        self._view_change_started = None
        self._advance_commit(min(commit, self.op_number))
        if self.op_number > self.commit_number:
            self._retry_at = self._now + self.timeouts.prepare_retry
        self._try_commit()

    def _on_start_view(self, msg: StartView) -> None:
        # Stale when we already hold a log of that view (which has only grown since).
        if msg.view < self.view_number or msg.view <= self.last_normal_view:
            return
        if msg.replica == self.node_id:
            return
        self._replace_log(list(msg.log), "view_change")
        self.last_normal_view = msg.view
        started = self._view_change_started
        self._transition(view=msg.view, status=NORMAL)
        self._reset_view_state(self._now)
        self._emit(("view_change", "complete"),
                   {"count": 0, "duration": self._now - started if started is not None else 0},
                   {"role": "backup"})
        self._view_change_started = None
        if self.op_number > self.commit_number:
            self._send_prepare_ok()
        self._learn_commit(msg.commit_number)

    def _rejoin(self, view: int) -> None:
        """Catch up with ``view``, established without us, by state transfer from its primary.

        Until the primary's log arrives the replica is ``recovering`` and keeps its log and its
        last normal view: claiming the new view with a shortened log (section 5.2 of the paper
        read literally) would let that short log win a later view change and lose commits.
        """
        self._transition(view=view, status=RECOVERING)
        self._reset_view_state(self._now)
        self._request_state("new_view", self.primary_of(view))

    # -- state transfer ------------------------------------------------------------------------

    def _request_state(self, reason: str, target: int | None = None) -> None:
        message = GetState(self.view_number, self.last_normal_view, self.op_number,
                           self.commit_number, self.node_id)
        if target is None and self.status == RECOVERING:
            count = self._broadcast(message)
        else:
            if target is None:
                others = self._others()
                primary = self.primary_of(self.view_number)
                # Ask the primary first, then rotate through the others.
                ordered = [primary] + [i for i in others if i != primary]
                target = ordered[self._transfer_tries % len(ordered)]
            self._send(target, message)
            count = 1
        self._transfer_tries += 1
        self._transfer_at = self._now
        self._emit(("state_transfer", "request_sent"), {"count": count},
                   {"reason": reason, "log_view": self.last_normal_view})

    def _on_get_state(self, msg: GetState) -> None:
        if msg.view > self.view_number:
            # Only a replica of an established view asks in it: join that view.
            self._rejoin(msg.view)
        # A newer view's log may only come from its primary, whose log is complete.
        served = (self.status == NORMAL and self.view_number >= msg.view
                  and msg.replica != self.node_id
                  and (self.view_number == msg.log_view or self.is_primary))
        self._emit(("state_transfer", "request_received"), {},
                   {"from_node": msg.replica, "served": served})
        if not served:
            return
        # Same view: the requester's log is a prefix of ours; else resend after its commits.
        known = msg.op_number if self.view_number == msg.log_view else msg.commit_number
        start = min(known, self.op_number) + 1
        entries = tuple(self.log[start - 1:])
        self._send(msg.replica, NewState(self.view_number, start, entries, self.op_number,
                                         self.commit_number, self.node_id))
        self._emit(("state_transfer", "snapshot_sent"), {"entries": len(entries)},
                   {"to_node": msg.replica, "start_op_number": start})

    def _on_new_state(self, msg: NewState) -> None:
        if self._transfer_at is None or self.status == VIEW_CHANGE or msg.view < self.view_number:
            return
        if msg.view == self.last_normal_view:
            if msg.start > self.op_number + 1:
                return
            if msg.start - 1 + len(msg.entries) > self.op_number:
                self._replace_log(self.log[: msg.start - 1] + list(msg.entries), "state_transfer")
        else:
            if (msg.replica != self.primary_of(msg.view) or msg.start > self.commit_number + 1
                    or msg.op_number < self.commit_number):
                return
            self._replace_log(self.log[: msg.start - 1] + list(msg.entries), "state_transfer")
        pending = self._pending if msg.view == self.last_normal_view else {}
        self.last_normal_view = msg.view
        self._transition(view=msg.view, status=NORMAL)
        self._reset_view_state(self._now)
        self._pending = {n: e for n, e in pending.items() if n > self.op_number}
        self._emit(("state_transfer", "snapshot_received"), {"entries": len(msg.entries)},
                   {"from_node": msg.replica})
        self._known_commit = max(self._known_commit, msg.commit_number)
        if self.is_primary:
            self._advance_commit(min(self._known_commit, self.op_number))
            if self.op_number > self.commit_number:
                self._retry_at = self._now
            return
        if self.op_number + 1 in self._pending:
            self._append(self._pending.pop(self.op_number + 1))
        if self.op_number > self.commit_number:
            self._send_prepare_ok()
        self._learn_commit(self._known_commit)


# What arrived -> the name of the method that handles it, looked up at each call (as in sim.py):
# a test or a subclass may replace a handler.
_HANDLERS: dict[type, str] = {
    Request: "_on_request",
    Prepare: "_on_prepare",
    PrepareOk: "_on_prepare_ok",
    Commit: "_on_commit",
    StartViewChange: "_on_start_view_change",
    DoViewChange: "_on_do_view_change",
    StartView: "_on_start_view",
    GetState: "_on_get_state",
    NewState: "_on_new_state",
    Tick: "_on_tick",
}
