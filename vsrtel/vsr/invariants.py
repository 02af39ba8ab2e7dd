"""Safety invariants of a VSR cluster, checked after every replica step and client reply."""

from __future__ import annotations

from collections.abc import Sequence

from vsrtel.vsr.messages import Entry, ReplicaMessage, Reply, Result
from vsrtel.vsr.replica import Replica
from vsrtel.vsr.state_machine import StateMachine

__all__ = ["Checker", "InvariantViolation"]


class InvariantViolation(AssertionError):
    """A safety or liveness property failed; the message names the seed to replay it."""


class Checker:
    """Checks, for one simulation run (``seed`` is quoted in every violation):

    - a replica's commit-number never decreases (not even across a crash: it is durable) and
      never exceeds its op-number;
    - a message a replica sends (PREPARE, COMMIT, DOVIEWCHANGE, STARTVIEW, GETSTATE, NEWSTATE)
      carries a commit-number between the replica's commit-numbers before and after the step
      that sent it: a replica never announces a commit-number lower than it reached, nor one
      it has not reached;
    - its view-number and last normal view never decrease, and the last normal view is at most
      the view-number (both survive crashes);
    - all replicas agree on the committed prefix (one global committed log);
    - an operation is in the logs of at least f+1 replicas when it is first committed;
    - no (client, request number) appears twice in the committed log (checked on its own
      record, not through the replicas' client table);
    - each replica's state machine equals a fold over its committed log;
    - every client reply matches the committed result of that request.
    """

    def __init__(self, seed: int, replicas: Sequence[Replica]) -> None:
        self.seed = seed
        self.committed: list[Entry] = []
        self.results: dict[tuple[int, int], Result] = {}
        self._global = StateMachine()
        count = len(replicas)
        self._replicas = list(replicas)
        self._quorum = (count - 1) // 2 + 1
        self._requests: dict[tuple[int, int], int] = {}  # (client, request) -> op-number
        self._views = [(r.view_number, r.last_normal_view) for r in replicas]
        self._shadows = [StateMachine() for _ in range(count)]
        self._applied = [0] * count
        self._verified = [0] * count
        self._versions = [r.log_version for r in replicas]
        self._commits = [r.commit_number for r in replicas]

    def fail(self, message: str) -> InvariantViolation:
        """Return the violation for ``message``, quoting the seed."""
        return InvariantViolation(f"seed {self.seed}: {message}")

    def after_step(
        self, replica: Replica, now: int,
        messages: Sequence[tuple[int, ReplicaMessage]] = (),
    ) -> None:
        """Check ``replica`` after it took a step at simulated time ``now``, sending
        ``messages`` (``(destination, message)`` pairs)."""
        i, k = replica.node_id, replica.commit_number
        before = self._commits[i]
        where = f"replica {i} at {now / 1e6:.3f} ms"
        if k < before:
            raise self.fail(f"{where}: commit-number went from {before} down to {k}")
        if k > replica.op_number:
            raise self.fail(f"{where}: commit-number {k} exceeds op-number {replica.op_number}")
        for destination, message in messages:
            announced = getattr(message, "commit_number", None)
            if announced is not None and not before <= announced <= k:
                raise self.fail(
                    f"{where}: sent {type(message).__name__} to replica {destination} with "
                    f"commit-number {announced}, outside its own {before}..{k}"
                )
        self._commits[i] = k
        view, log_view = replica.view_number, replica.last_normal_view
        old_view, old_log_view = self._views[i]
        if view < old_view or log_view < old_log_view:
            raise self.fail(
                f"{where}: view-number/last normal view went from {old_view}/{old_log_view} "
                f"down to {view}/{log_view}"
            )
        if log_view > view:
            raise self.fail(f"{where}: last normal view {log_view} exceeds view-number {view}")
        self._views[i] = (view, log_view)
        # The log may only be appended to without a version bump: re-verify all on a bump.
        start = self._verified[i] if replica.log_version == self._versions[i] else 0
        log, committed = replica.log, self.committed
        for n in range(start, k):
            entry = log[n]
            if n < len(committed):
                if committed[n] != entry:
                    raise self.fail(
                        f"{where}: committed op {n + 1} is {entry} but another replica "
                        f"committed {committed[n]}"
                    )
            else:
                self._check_new_commit(n, entry, where)
                committed.append(entry)
                result = self._global.execute(entry)
                if result is not None:
                    self.results[(entry.client_id, entry.request_number)] = result
        self._verified[i], self._versions[i] = k, replica.log_version
        shadow = self._shadows[i]
        for n in range(self._applied[i], k):
            shadow.execute(committed[n])
        self._applied[i] = k
        if replica.machine != shadow:
            raise self.fail(
                f"{where}: state machine {replica.machine.data} differs from the fold of its "
                f"{k} committed ops {shadow.data}"
            )

    def _check_new_commit(self, n: int, entry: Entry, where: str) -> None:
        holders = sum(1 for r in self._replicas if len(r.log) > n and r.log[n] == entry)
        if holders < self._quorum:
            raise self.fail(
                f"{where}: op {n + 1} committed while only {holders} replicas hold it "
                f"(f+1 = {self._quorum})"
            )
        key = (entry.client_id, entry.request_number)
        first = self._requests.setdefault(key, n + 1)
        if first != n + 1:
            raise self.fail(
                f"{where}: client {key[0]} request {key[1]} committed twice, as ops {first} "
                f"and {n + 1}"
            )

    def check_reply(self, reply: Reply, now: int) -> None:
        """Check that a reply a client received carries the committed result of its request."""
        key = (reply.client_id, reply.request_number)
        expected = self.results.get(key)
        if expected is None:
            raise self.fail(f"client {key[0]} got a reply to uncommitted request {key[1]}")
        if reply.result != expected:
            raise self.fail(
                f"client {key[0]} request {key[1]}: reply {reply.result} at {now / 1e6:.3f} ms "
                f"differs from the committed result {expected}"
            )
