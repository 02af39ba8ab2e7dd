"""A deterministic simulation of a VSR cluster and its clients.

One seeded ``random.Random`` drives everything (network delays, loss, duplication, partitions,
crashes, the clients' operations); time is a simulated clock advanced by a single event queue,
ties broken by insertion order. Same arguments, same run: the same events in the same order.

A run has three phases. While faults are on (as a :class:`FaultProfile` says), the network loses,
duplicates and delays messages (so it reorders them), replicas crash and restart, partitions cut
groups of replicas off (both ways or one way), and timers fire late. Once three
quarters of the requests are done (or the fault window closes) everything heals: partitions end,
crashed replicas restart (but those crashed for good, see ``permanent_crashes``), the network
stops losing messages; every remaining request must then complete (liveness). Finally the
cluster drains until every live replica has caught up with the committed log.

Every run ends: after healing, a watchdog fails a run that stops making progress, and a run
that schedules more than ``max_events`` events fails, whatever the cause.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from dataclasses import dataclass, replace
from typing import Any

from vsrtel import Registry, Scope, Span
from vsrtel.vsr.catalog import CLIENT_REQUEST, PREFIX, ReplicaLike, common_metadata
from vsrtel.vsr.invariants import Checker, InvariantViolation
from vsrtel.vsr.messages import Operation, ReplicaMessage, Reply, Request
from vsrtel.vsr.record import MessageStats, Recorder, RequestRecord, RunRecord
from vsrtel.vsr.replica import (
    MS,
    NO_PROPAGATION,
    NORMAL,
    RECOVERING,
    TICK,
    Output,
    Propagation,
    Replica,
    Timeouts,
)
from vsrtel.vsr.report import build_report
from vsrtel.vsr.state_machine import OPERATION_KINDS

SECOND = 1000 * MS
DEFAULT_EPOCH_NS = 1_700_000_000 * SECOND  # system_time of simulated time 0 (2023-11-14)
KEYS = tuple(f"k{i}" for i in range(8))


_PROBABILITIES = ("loss", "duplicate", "spike", "one_way", "clock_skew")
_RANGES = ("delay", "spike_delay", "downtime", "partition_length")
_MEANS = ("crash_every", "partition_every")
_MESSAGE_LOST = PREFIX + ("network", "message_lost")


@dataclass(frozen=True)
class FaultProfile:
    """How hostile the environment is. Times in simulated nanoseconds; rates as probabilities.

    Faults are drawn from the run's seeded random stream, so a seed and a profile replay the same
    run. A knob at zero (or None) draws nothing: adding a knob never changes the runs of the
    profiles that leave it off. Raises ``ValueError`` naming a knob with a bad value.
    """

    loss: float = 0.0  # a message is lost
    duplicate: float = 0.0  # a message is delivered twice
    delay: tuple[int, int] = (MS // 2, 3 * MS)  # uniform one-way delay (reorders messages)
    spike: float = 0.0  # a message is delayed much longer
    spike_delay: tuple[int, int] = (20 * MS, 120 * MS)
    crash_every: int | None = None  # mean time between crashes (at most f replicas down)
    downtime: tuple[int, int] = (50 * MS, 400 * MS)
    permanent_crashes: int = 0  # the first crashes, up to this many (capped at f), are for good
    partition_every: int | None = None  # mean time between partitions
    partition_length: tuple[int, int] = (50 * MS, 500 * MS)
    partition_size: int = 1  # at most this many replicas cut off together (capped at f)
    one_way: float = 0.0  # a partition cuts one direction only (the group cannot send or hear)
    timer_jitter: int = 0  # a replica's timer fires up to this late
    clock_skew: float = 0.0  # each replica's clock runs up to this fraction fast or slow

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"fault knob {name} must be between 0 and 1, got {value!r}")
        for name in _RANGES:
            value = getattr(self, name)
            if (not isinstance(value, tuple) or len(value) != 2
                    or not all(isinstance(v, int) for v in value) or not 0 <= value[0] < value[1]):
                raise ValueError(f"fault knob {name} must be a range (low, high) of ns with "
                                 f"0 <= low < high, got {value!r}")
        for name in _MEANS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"fault knob {name} must be None or ns > 0, got {value!r}")
        if (not isinstance(self.permanent_crashes, int) or isinstance(self.permanent_crashes, bool)
                or self.permanent_crashes < 0):
            raise ValueError(f"fault knob permanent_crashes must be an int >= 0, "
                             f"got {self.permanent_crashes!r}")
        if self.permanent_crashes and self.crash_every is None:
            raise ValueError("fault knob permanent_crashes needs crash_every: permanent crashes "
                             "are the first crashes it draws")
        if not isinstance(self.partition_size, int) or self.partition_size < 1:
            raise ValueError(f"fault knob partition_size must be an int >= 1, "
                             f"got {self.partition_size!r}")
        if not isinstance(self.timer_jitter, int) or self.timer_jitter < 0:
            raise ValueError(f"fault knob timer_jitter must be ns >= 0, got {self.timer_jitter!r}")
        if self.clock_skew >= 1:
            raise ValueError(f"fault knob clock_skew must be below 1, got {self.clock_skew!r}")

    @classmethod
    def parse(cls, spec: str) -> FaultProfile:
        """Parse ``NAME[,KNOB=VALUE...]``: a named profile of :data:`FAULTS`, knobs overridden.

        Probabilities are numbers from 0 to 1; times are milliseconds; ranges are ``LOW-HIGH``
        (milliseconds); ``crash_every`` and ``partition_every`` take ``off``. For example
        ``heavy,loss=0.2,spike_delay=20-200,partition_size=2``. Raises ``ValueError`` naming
        the bad part.
        """
        name, *knobs = [part.strip() for part in spec.split(",")]
        if name not in FAULTS:
            raise ValueError(f"unknown fault profile {name!r} (choose from {', '.join(FAULTS)})")
        changes: dict[str, Any] = {}
        for knob in knobs:
            key, sep, text = (s.strip() for s in knob.partition("="))
            if not sep or key not in _KNOBS:
                raise ValueError(f"bad fault knob {knob!r} (knobs: {', '.join(_KNOBS)})")
            try:
                changes[key] = _parse_knob(key, text)
            except ValueError:
                raise ValueError(f"bad value for fault knob {key}: {text!r}") from None
            rule = _SPEC_RULES.get(_kind(key))
            if rule is not None:  # a time knob's own check speaks of ns: say it in milliseconds
                try:
                    replace(FAULTS["none"], **{key: changes[key]})
                except ValueError:
                    raise ValueError(f"fault knob {key} must be {rule}, got {text!r}") from None
        return replace(FAULTS[name], **changes)  # checks the knobs that depend on each other

    def spec(self) -> str:
        """This profile as :meth:`parse` reads it: a profile's name, or ``none`` plus knobs."""
        for name, profile in FAULTS.items():
            if profile == self:
                return name
        none = FAULTS["none"]
        return ",".join(["none"] + [
            f"{key}={_format_knob(key, getattr(self, key))}" for key in _KNOBS
            if getattr(self, key) != getattr(none, key)
        ])


_KNOBS = tuple(FaultProfile.__dataclass_fields__)


def _ms(text: str) -> int:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return round(value * MS)


# What a time knob takes in a spec, for errors; other knobs' errors carry no unit.
_SPEC_RULES = {
    "range": "a range LOW-HIGH of milliseconds with 0 <= LOW < HIGH",
    "mean": "milliseconds > 0, or off",
    "timer_jitter": "milliseconds >= 0",
}


def _kind(key: str) -> str:
    return "range" if key in _RANGES else "mean" if key in _MEANS else key


def _parse_knob(key: str, text: str) -> Any:
    if key in _PROBABILITIES:
        return float(text)
    if key in _RANGES:
        low, sep, high = text.partition("-")
        if not sep:
            raise ValueError(text)
        return (_ms(low), _ms(high))
    if key in _MEANS:
        return None if text in ("off", "none") else _ms(text)
    if key in ("partition_size", "permanent_crashes"):
        return int(text)
    return _ms(text)  # timer_jitter


def _format_ms(ns: int) -> str:
    return f"{ns / MS:.6f}".rstrip("0").rstrip(".")


def _format_knob(key: str, value: Any) -> str:
    if key in _RANGES:
        return f"{_format_ms(value[0])}-{_format_ms(value[1])}"
    if key in _MEANS:
        return "off" if value is None else _format_ms(value)
    if key == "timer_jitter":
        return _format_ms(value)
    return repr(value)


FAULTS: dict[str, FaultProfile] = {
    "none": FaultProfile(),
    "light": FaultProfile(
        loss=0.01, duplicate=0.01, spike=0.002, crash_every=1500 * MS, partition_every=1500 * MS
    ),
    "heavy": FaultProfile(
        loss=0.08, duplicate=0.05, spike=0.02, crash_every=150 * MS, downtime=(20 * MS, 300 * MS),
        partition_every=150 * MS, partition_length=(20 * MS, 300 * MS),
    ),
    # A fault every ~40 ms, a fifth of the messages lost and another fifth duplicated, partitions
    # of up to f replicas (half of them one-way), late timers and clocks 10% off.
    "extreme": FaultProfile(
        loss=0.2, duplicate=0.2, spike=0.05, spike_delay=(20 * MS, 200 * MS),
        crash_every=80 * MS, downtime=(20 * MS, 300 * MS),
        partition_every=80 * MS, partition_length=(20 * MS, 300 * MS),
        partition_size=3, one_way=0.5, timer_jitter=5 * MS, clock_skew=0.1,
    ),
}

_OPERATION_WEIGHTS = (3, 4, 2, 1)  # of OPERATION_KINDS
_TIMERS = ("heartbeat", "primary", "view_change", "view_change_retry", "prepare_retry", "lag",
           "state_transfer")


def _profile(faults: object) -> FaultProfile:
    if isinstance(faults, FaultProfile):
        return faults
    if not isinstance(faults, str):
        raise ValueError(f"faults must be a FaultProfile or a str, got {faults!r}")
    return FaultProfile.parse(faults)


# Event-queue kinds.
_DELIVER, _REPLY, _TICK, _CLIENT, _FAULT, _RESTART, _UNPARTITION, _HEAL, _DEADLINE = range(9)
# Each kind -> the name of the method that handles it, looked up at each call (as in replica.py);
# every handler takes the event's (target, payload).
_HANDLERS = {
    _DELIVER: "_on_deliver",
    _REPLY: "_on_reply",
    _TICK: "_on_tick",
    _CLIENT: "_on_client",
    _FAULT: "_on_fault",
    _RESTART: "_on_restart",
    _UNPARTITION: "_on_unpartition",
    _HEAL: "_on_heal",
    _DEADLINE: "_on_deadline",
}


class RequestUnanswered(Exception):
    """Ends a client's ``vsr.client.request`` span still open when the run ends."""


class SimClock:
    """The simulated clock handed to the telemetry scope (``monotonic_ns`` / ``time_ns``)."""

    def __init__(self, epoch_ns: int = DEFAULT_EPOCH_NS) -> None:
        self.now = 0
        self.epoch_ns = epoch_ns

    def monotonic_ns(self) -> int:
        """Simulated nanoseconds since the start of the run."""
        return self.now

    def time_ns(self) -> int:
        """Simulated wall-clock time: ``epoch_ns`` plus the simulated time."""
        return self.epoch_ns + self.now


class _Client:
    """A closed-loop client: one outstanding request, retried to every replica on timeout."""

    def __init__(self, client_id: int, quota: int) -> None:
        self.client_id = client_id
        self.quota = quota
        self.next_number = 1
        self.view = 0
        self.pending: Request | None = None
        self.first_sent = 0
        self.attempt = 0


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class Simulation:
    """A VSR cluster of ``replicas`` replicas and ``clients`` clients issuing ``requests``.

    Emits the ``vsr`` catalogue on ``registry`` (default: the default registry), timed by the
    simulated clock. Drive it with :meth:`run` or step by step with :meth:`run_until`; read the
    result as data with :meth:`record`, or as a report with :meth:`report`. ``faults`` is a
    :class:`FaultProfile` or a spec of one (see :func:`simulate`). ``propagation`` carries trace
    context inside messages.
    Use it as a context manager (or call :meth:`close`) to detach its event recorder.
    Raises ``ValueError`` naming a bad argument.

    ``crashed`` holds the replicas down now; ``dead`` those of them crashed for good (the fault
    knob ``permanent_crashes``), which never restart and are not waited for at the end.
    ``max_events`` bounds the run: scheduling more events fails it (liveness).
    """

    client_timeout = 100 * MS
    think_time = (0, 2 * MS)
    fault_window = 30 * SECOND  # faults stop then at the latest
    watchdog = 20 * SECOND  # after healing, this long without progress is a liveness failure
    events_per_request = 1000  # per replica: the event budget (see max_events)

    def __init__(
        self,
        *,
        seed: int,
        requests: int,
        replicas: int = 3,
        clients: int = 3,
        faults: str | FaultProfile = "light",
        registry: Registry | None = None,
        propagation: Propagation = NO_PROPAGATION,
        timeouts: Timeouts | None = None,
        epoch_ns: int = DEFAULT_EPOCH_NS,
    ) -> None:
        _check_int("seed", seed, -(2**63))
        _check_int("requests", requests, 0)
        _check_int("replicas", replicas, 1)
        _check_int("clients", clients, 1)
        if replicas % 2 == 0:
            raise ValueError(f"replicas must be odd (2f+1), got {replicas}")
        self.profile = _profile(faults)
        self.seed, self.requests = seed, requests
        self.faults = faults if isinstance(faults, str) else self.profile.spec()
        self.rng = random.Random(seed)
        self.f = (replicas - 1) // 2
        self.clock = SimClock(epoch_ns)
        self.scope: Scope[ReplicaLike] = Scope(PREFIX, common_metadata, registry=registry,
                                               clock=self.clock)
        self.replicas = [
            Replica(i, replicas, scope=self.scope, timeouts=self._skewed(timeouts),
                    propagation=propagation, context_prefix=f"s{seed}.")
            for i in range(replicas)
        ]
        self._clients = [
            _Client(c + 1, requests // clients + (1 if c < requests % clients else 0))
            for c in range(clients)
        ]
        self.checker = Checker(seed, self.replicas)
        self.propagation = propagation
        self._client_spans: dict[int, Span] = {}
        self.recorder = Recorder(self.scope.registry)
        self.crashed: set[int] = set()
        self.dead: set[int] = set()  # crashed for good (``permanent_crashes``): never restarted
        self.cut: frozenset[tuple[int, int]] = frozenset()  # (source, destination) links down
        self.faults_on = self.profile != FAULTS["none"]
        self._stats = {"sent": 0, "delivered": 0, "dropped": 0, "duplicated": 0,
                       "crashes": 0, "partitions": 0}
        self._answered: list[RequestRecord] = []
        self.completed = 0
        self.healed_at: int | None = None
        self.finished = False
        self.violation: InvariantViolation | None = None
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        # A hard bound on the run, whatever goes wrong (passing runs use a small fraction):
        # past it the run fails liveness instead of running on.
        self.max_events = self.events_per_request * replicas * (requests + 50)
        self._wake: list[int | None] = [None] * replicas
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the clients' open traces and detach the event recorder from the registry."""
        spans, self._client_spans = self._client_spans, {}
        for client_id in sorted(spans):
            try:  # raised so that the span's stacktrace is this frame only
                raise RequestUnanswered(f"client {client_id}: the run ended before the reply")
            except RequestUnanswered as error:
                spans[client_id].stop(error=error)
        self.recorder.close()

    @property
    def now(self) -> int:
        """Simulated time, ns."""
        return self.clock.now

    def run(self) -> Simulation:
        """Run to the end (all requests done and every replica caught up); return self.

        Raises :class:`InvariantViolation` (quoting the seed) when a check fails.
        """
        while not self.run_until(self.now + SECOND):
            pass
        return self

    def run_until(self, until: int) -> bool:
        """Process every event up to simulated time ``until``; return whether the run is over."""
        queue = self._queue
        try:
            if not self._started:
                self._start()
            while queue and queue[0][0] <= until and not self.finished:
                when, _, kind, target, payload = heapq.heappop(queue)
                self.clock.now = when
                getattr(self, _HANDLERS[kind])(target, payload)
        except InvariantViolation as exc:
            self.violation = exc
            self.finished = True
            self.close()
            raise
        if not queue and not self.finished:
            self.violation = self.checker.fail("the simulation ran out of events")
            self.finished = True
            raise self.violation
        if not self.finished:
            self.clock.now = max(self.clock.now, until)
        else:
            self.close()
        return self.finished

    def record(self) -> RunRecord:
        """The run so far, as data (what :meth:`report` is built from)."""
        unanswered = [
            RequestRecord(c.client_id, c.pending.request_number, c.first_sent, None, c.attempt + 1)
            for c in self._clients if c.pending is not None
        ]
        stats, recorder = self._stats, self.recorder
        return RunRecord(
            seed=self.seed,
            replicas=len(self.replicas),
            clients=len(self._clients),
            faults=self.faults,
            requests=self.requests,
            simulated_ns=self.now,
            client_requests=tuple(self._answered + unanswered),
            requests_committed=len(self.checker.results),
            messages=MessageStats(stats["sent"], stats["delivered"], stats["dropped"],
                                  stats["duplicated"]),
            crashes=stats["crashes"],
            partitions=stats["partitions"],
            events=dict(recorder.counts),
            views_established=recorder.views_established,
            spans={key: tuple(spans) for key, spans in recorder.spans.items()},
            violation=None if self.violation is None else str(self.violation),
        )

    def report(self) -> dict[str, Any]:
        """The run's report (see :func:`vsrtel.vsr.simulate`)."""
        return build_report(self.record())

    # -- scheduling ----------------------------------------------------------------------------

    def _push(self, when: int, kind: int, target: int = 0, payload: Any = None) -> None:
        self._seq += 1
        if self._seq > self.max_events:
            raise self.checker.fail(
                f"liveness: the run scheduled {self.max_events} events without ending "
                f"({self.completed} of {self.requests} requests done)"
            )
        heapq.heappush(self._queue, (when, self._seq, kind, target, payload))

    def _start(self) -> None:
        self._started = True
        for replica in self.replicas:
            self._handle(replica, replica.start(self.now))
        for client in self._clients:
            self._push(self.rng.randrange(*self.think_time) if self.think_time[1] else 0,
                       _CLIENT, client.client_id, None)
        if self.faults_on:
            self._schedule_fault()
            self._push(self.fault_window, _HEAL)
        else:
            self._heal()
        self._check_progress()

    def _on_tick(self, i: int, incarnation: int) -> None:
        replica = self.replicas[i]
        if i in self.crashed or incarnation != replica.incarnation or self._wake[i] != self.now:
            return
        self._wake[i] = None
        self._handle(replica, replica.step(TICK, self.now))

    def _on_fault(self, _: int, __: None) -> None:
        if self.faults_on:
            self._inject_fault()
            self._schedule_fault()

    def _on_restart(self, i: int, _: None) -> None:
        if i in self.crashed:
            self._restart(i)

    def _on_unpartition(self, _: int, cut: frozenset[tuple[int, int]]) -> None:
        if self.cut == cut:
            self.cut = frozenset()

    def _on_heal(self, _: int, __: None) -> None:
        self._heal()

    # -- replicas and network ------------------------------------------------------------------

    def _handle(self, replica: Replica, output: Output) -> None:
        i = replica.node_id
        self.checker.after_step(replica, self.now, output.messages)
        if self.completed == self.requests and self._caught_up():
            self.finished = True
        for destination, message in output.messages:
            self._transmit(i, destination, message)
        for reply in output.replies:
            self._transmit_reply(reply)
        wake = output.wake_at
        if wake is not None:
            current = self._wake[i]
            if current is None or current <= self.now or wake < current:
                wake = max(wake, self.now + 1)
                if self.faults_on and self.profile.timer_jitter:
                    wake += self.rng.randrange(self.profile.timer_jitter + 1)
                self._wake[i] = wake
                self._push(wake, _TICK, i, replica.incarnation)

    def _delay(self) -> int:
        profile = self.profile
        if self.faults_on and profile.spike and self.rng.random() < profile.spike:
            return self.rng.randrange(*profile.spike_delay)
        return self.rng.randrange(*profile.delay)

    def _copies(self) -> int:
        """How many copies of a message the network delivers: 0 (lost), 1 or 2 (duplicated)."""
        self._stats["sent"] += 1
        if not self.faults_on:
            return 1
        profile = self.profile
        if profile.loss and self.rng.random() < profile.loss:
            self._lose("loss")
            return 0
        if profile.duplicate and self.rng.random() < profile.duplicate:
            self._stats["duplicated"] += 1
            return 2
        return 1

    def _lose(self, reason: str) -> None:
        self._stats["dropped"] += 1
        registry = self.scope.registry
        if registry.enabled(_MESSAGE_LOST):
            registry.execute(_MESSAGE_LOST, {"count": 1}, {"reason": reason})

    def _transmit(self, source: int, destination: int, message: ReplicaMessage) -> None:
        if (source, destination) in self.cut:
            self._stats["sent"] += 1
            self._lose("partition")
            return
        for _ in range(self._copies()):
            self._push(self.now + self._delay(), _DELIVER, destination, message)

    def _transmit_reply(self, reply: Reply) -> None:
        for _ in range(self._copies()):
            self._push(self.now + self._delay(), _REPLY, reply.client_id, reply)

    def _on_deliver(self, destination: int, message: ReplicaMessage) -> None:
        if destination in self.crashed:
            self._lose("crash")
            return
        self._stats["delivered"] += 1
        replica = self.replicas[destination]
        self._handle(replica, replica.step(message, self.now))

    # -- clients -------------------------------------------------------------------------------

    def _operation(self) -> Operation:
        rng = self.rng
        kind = rng.choices(OPERATION_KINDS, weights=_OPERATION_WEIGHTS)[0]
        key = rng.choice(KEYS)
        if kind == "div":
            return Operation(kind, key, rng.choice((0, 2, 3, 0, 5)))
        return Operation(kind, key, rng.randrange(-50, 100) if kind != "get" else 0)

    def _on_client(self, client_id: int, payload: tuple[int, int] | None) -> None:
        client = self._clients[client_id - 1]
        if payload is None:  # time to issue the next request
            if client.pending is not None or client.next_number > client.quota:
                return
            number, operation = client.next_number, self._operation()
            request = Request(client.client_id, number, operation,
                              self._start_trace(client.client_id, number, operation))
            client.next_number += 1
            client.pending, client.first_sent, client.attempt = request, self.now, 0
            self._client_send(client, broadcast=False)
            return
        number, attempt = payload  # a retry timer
        if client.pending is None or (client.pending.request_number, client.attempt) != (
            number, attempt
        ):
            return
        client.attempt += 1
        self._client_send(client, broadcast=True)

    def _client_send(self, client: _Client, *, broadcast: bool) -> None:
        request = client.pending
        assert request is not None
        targets = range(len(self.replicas)) if broadcast else [client.view % len(self.replicas)]
        for i in targets:
            for _ in range(self._copies()):
                self._push(self.now + self._delay(), _DELIVER, i, request)
        self._push(self.now + self.client_timeout, _CLIENT, client.client_id,
                   (request.request_number, client.attempt))

    def _start_trace(self, client_id: int, number: int, operation: Operation) -> dict[str, str]:
        """Tracing on: start the client's span, the root of the request's trace; return the
        trace context for the REQUEST (empty when tracing is off)."""
        if self.propagation is NO_PROPAGATION:
            return {}
        metadata = {"client_id": client_id, "request_number": number,
                    "operation": operation.kind,
                    "telemetry_span_context": f"s{self.seed}.c{client_id}.{number}"}
        span = self.scope.registry.span(PREFIX + CLIENT_REQUEST, metadata, self.clock).start()
        self._client_spans[client_id] = span
        carrier: dict[str, str] = {}
        self.propagation.inject(carrier, span)
        return carrier

    def _on_reply(self, client_id: int, reply: Reply) -> None:
        client = self._clients[client_id - 1]
        self._stats["delivered"] += 1
        self.checker.check_reply(reply, self.now)
        request = client.pending
        if request is None or reply.request_number != request.request_number:
            return
        self._answered.append(RequestRecord(client.client_id, request.request_number,
                                            client.first_sent, self.now - client.first_sent,
                                            client.attempt + 1))
        client.view = max(client.view, reply.view)
        client.pending = None
        self.completed += 1
        span = self._client_spans.pop(client.client_id, None)
        if span is not None:
            span.measurements["attempts"] = client.attempt + 1
            span.stop()
        if client.next_number <= client.quota:
            self._push(self.now + self.rng.randrange(*self.think_time), _CLIENT, client.client_id)
        self._check_progress()

    def _check_progress(self) -> None:
        if self.faults_on and self.completed * 4 >= self.requests * 3:
            self._heal()
        if self.completed == self.requests and self.healed_at is None:
            self._heal()
        if self.completed == self.requests and self._caught_up():
            self.finished = True

    def _caught_up(self) -> bool:
        committed, dead = len(self.checker.committed), self.dead
        return all(r.commit_number == committed and r.status == NORMAL
                   for r in self.replicas if r.node_id not in dead)

    # -- faults --------------------------------------------------------------------------------

    def _schedule_fault(self) -> None:
        profile = self.profile
        rates = [1 / every for every in (profile.crash_every, profile.partition_every) if every]
        if rates:
            self._push(self.now + int(self.rng.expovariate(sum(rates))), _FAULT)

    def _inject_fault(self) -> None:
        profile, rng = self.profile, self.rng
        kinds = [k for k, every in (("crash", profile.crash_every),
                                    ("partition", profile.partition_every)) if every]
        weights = [1 / every for every in (profile.crash_every, profile.partition_every) if every]
        kind = rng.choices(kinds, weights=weights)[0]
        if kind == "crash":
            down = sum(1 for r in self.replicas
                       if r.node_id in self.crashed or r.status == RECOVERING)
            candidates = [r.node_id for r in self.replicas
                          if r.node_id not in self.crashed and r.status != RECOVERING]
            if down >= self.f or not candidates:
                return
            victim = rng.choice(candidates)
            self.crashed.add(victim)
            self._stats["crashes"] += 1
            self.replicas[victim].crash(self.now)
            self._wake[victim] = None
            if len(self.dead) < min(profile.permanent_crashes, self.f):
                self.dead.add(victim)
                return
            self._push(self.now + rng.randrange(*profile.downtime), _RESTART, victim)
        elif not self.cut and len(self.replicas) > 1:
            self.cut = cut = self._partition()
            self._stats["partitions"] += 1
            self._push(self.now + rng.randrange(*profile.partition_length), _UNPARTITION, 0, cut)

    def _partition(self) -> frozenset[tuple[int, int]]:
        """Draw the links a new partition cuts: between a group of at most f replicas and the
        others, both ways or (``one_way``) only from the group or only to it."""
        profile, rng, n = self.profile, self.rng, len(self.replicas)
        size = min(profile.partition_size, max(self.f, 1))
        # One replica is drawn as before multi-node partitions existed: the same runs as then.
        group = set(rng.sample(range(n), rng.randint(1, size))) if size > 1 else {rng.randrange(n)}
        outward = [(a, b) for a in group for b in range(n) if b not in group]
        if profile.one_way and rng.random() < profile.one_way:
            if rng.random() < 0.5:
                return frozenset(outward)
            return frozenset((b, a) for a, b in outward)
        return frozenset(outward + [(b, a) for a, b in outward])

    def _skewed(self, timeouts: Timeouts | None) -> Timeouts | None:
        """The timeouts of a replica whose clock runs fast or slow by up to ``clock_skew``."""
        skew = self.profile.clock_skew
        if not skew:
            return timeouts
        base = timeouts or Timeouts()
        rate = 1 + self.rng.uniform(-skew, skew)  # its clock's seconds per simulated second
        return replace(base, **{
            name: round(getattr(base, name) / rate) for name in _TIMERS
        })

    def _restart(self, i: int) -> None:
        self.crashed.discard(i)
        replica = self.replicas[i]
        self._handle(replica, replica.restart(self.now))

    def _heal(self) -> None:
        if self.healed_at is not None:
            return
        self.healed_at = self.now
        self.faults_on = False
        self.cut = frozenset()
        for i in sorted(self.crashed - self.dead):
            self._restart(i)
        self._push(self.now + self.watchdog, _DEADLINE, 0, self._progress())

    def _progress(self) -> tuple[int, int]:
        return self.completed, sum(r.commit_number for r in self.replicas)

    def _on_deadline(self, _: int, progress: tuple[int, int]) -> None:
        """Liveness watchdog: after healing, the run must keep making progress."""
        if progress != self._progress():
            self._push(self.now + self.watchdog, _DEADLINE, 0, self._progress())
            return
        seconds = self.watchdog // SECOND
        if self.completed < self.requests:
            dead = f" but replicas {sorted(self.dead)} down for good" if self.dead else ""
            raise self.checker.fail(
                f"liveness: {self.requests - self.completed} of {self.requests} requests "
                f"incomplete, no progress for {seconds} s with every fault healed{dead}"
            )
        lagging = [r.node_id for r in self.replicas if r.node_id not in self.dead
                   and (r.commit_number != len(self.checker.committed) or r.status != NORMAL)]
        raise self.checker.fail(
            f"liveness: replicas {lagging} did not catch up within {seconds} s of healing"
        )


def simulate(
    *,
    seed: int,
    requests: int,
    replicas: int = 3,
    clients: int = 3,
    faults: str | FaultProfile = "light",
    registry: Registry | None = None,
    propagation: Propagation = NO_PROPAGATION,
) -> dict[str, Any]:
    """Run a VSR cluster in deterministic simulation and return its report.

    ``faults`` is a :class:`FaultProfile`, the name of one in :data:`FAULTS` (``"none"``,
    ``"light"``, ``"heavy"``, ``"extreme"``) or a spec :meth:`FaultProfile.parse` reads
    (``"heavy,loss=0.2"``); the report's ``faults`` is that spec. Events are emitted on ``registry``
    (default: the default registry) with simulated timings. The report is what
    ``vsrtel demo --json`` prints: ``requests_committed``, ``latency_ms`` (``p50``, ``p99``,
    ``max``), ``view_changes``, ``state_transfers``, ``events`` (dotted name -> count),
    ``invariants`` (``"ok"`` or the violation, which quotes the seed), ``seed`` and more.
    Raises ``ValueError`` for a bad argument.
    """
    with Simulation(seed=seed, requests=requests, replicas=replicas, clients=clients,
                    faults=faults, registry=registry, propagation=propagation) as sim:
        with contextlib.suppress(InvariantViolation):  # recorded in sim.violation, reported
            sim.run()
        return sim.report()
