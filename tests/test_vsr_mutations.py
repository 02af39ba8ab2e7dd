"""Mutation tests: each known protocol bug, applied to a copy of the replica, must be caught.

A mutant is ``vsrtel/vsr/replica.py`` with one textual edit, loaded as a separate module. It is
caught either by the invariant checker over a few heavy-fault simulations, or by a directed test
below (each directed test also runs, and passes, against the real replica). Random sweeps never
deliver a PREPAREOK of an old view to a primary of a later view whose log differs, so those two
mutations have directed tests only; so does the lower-view STARTVIEW, which the checker
catches (its view-number goes back) only in rare seeds now that view changes retransmit.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import vsrtel
from vsrtel.vsr import InvariantViolation, SimClock, Simulation
from vsrtel.vsr import replica as replica_module
from vsrtel.vsr.catalog import PREFIX, common_metadata
from vsrtel.vsr.messages import (
    DoViewChange,
    Entry,
    Operation,
    PrepareOk,
    Request,
    StartView,
    StartViewChange,
)
from vsrtel.vsr.replica import Replica

SOURCE = Path(replica_module.__file__).read_text()
_loaded = itertools.count()

# name -> the edits (old text, new text) that make the mutant
MUTATIONS: dict[str, list[tuple[str, str]]] = {
    "new primary commits its whole chosen log": [(
        "commit = max(m.commit_number for m in self._dvc.values())",
        "commit = best.op_number",
    )],
    "STARTVIEW of a lower view accepted": [(
        "if msg.view < self.view_number or msg.view <= self.last_normal_view:",
        "if msg.view <= self.last_normal_view:",
    )],
    "view-number lost in a crash": [(
        "self.incarnation += 1\n",
        "self.incarnation += 1\n        self.view_number = self.last_normal_view\n",
    )],
    "primary skips its duplicate check": [
        ("if last is not None and last[0] >= msg.request_number:", "if False:"),
        ("return  # in progress: the reply follows the commit", "pass"),
    ],
    "PREPAREOK of an old view counted": [(
        "if not self.is_primary or msg.view != self.view_number:",
        "if not self.is_primary:",
    )],
    "acks kept across views": [(
        "self._acked: dict[int, int] = {}",
        'self._acked: dict[int, int] = getattr(self, "_acked", {})',
    )],
}


def load_mutant(name: str, edits: list[tuple[str, str]] | None = None) -> type[Replica]:
    """Return the Replica class of a copy of replica.py with the edits of mutation ``name``."""
    source = SOURCE
    for old, new in MUTATIONS[name] if edits is None else edits:
        assert source.count(old) == 1, f"mutation {name!r} no longer applies: {old!r}"
        source = source.replace(old, new)
    module_name = f"_vsr_mutant_{next(_loaded)}"
    module = ModuleType(module_name)
    sys.modules[module_name] = module  # dataclasses look their module up
    try:
        exec(compile(source, f"<mutant: {name}>", "exec"), module.__dict__)
    finally:
        del sys.modules[module_name]
    module._HANDLERS[replica_module.Tick] = "_on_tick"  # the simulator sends the real TICK
    mutant: type[Replica] = module.Replica
    return mutant


# -- directed tests, parametrised by the replica class ----------------------------------------

MS = 1_000_000


def cluster(replica_class: type[Replica], size: int) -> tuple[list[Replica], SimClock]:
    clock = SimClock()
    scope = vsrtel.Scope(PREFIX, common_metadata, registry=vsrtel.Registry(), clock=clock)
    replicas = [replica_class(i, size, scope=scope) for i in range(size)]
    for r in replicas:
        r.start(0)
    return replicas, clock


def entry(client: int) -> Entry:
    return Entry(0, client, 1, Operation("set", "k", client))


def prepare_ok_of_an_old_view_is_not_counted(replica_class: type[Replica]) -> None:
    replicas, _ = cluster(replica_class, 3)
    primary = replicas[0]
    primary.step(Request(1, 1, Operation("set", "k", 1)), 1 * MS)  # op 1 = x in view 0
    # View 3 (primary 0 again) installs another op 1 from replica 2's log of view 2.
    primary.step(StartViewChange(3, 1), 2 * MS)
    other = Entry(2, 9, 1, Operation("set", "k", 9))
    primary.step(DoViewChange(3, (other,), 2, 1, 0, 2), 3 * MS)
    assert primary.is_primary and primary.view_number == 3 and primary.log == [other]
    primary.step(PrepareOk(0, 1, 1), 4 * MS)  # replica 1 acknowledged x, in view 0
    assert primary.commit_number == 0


def acks_do_not_survive_a_view_change(replica_class: type[Replica]) -> None:
    replicas, _ = cluster(replica_class, 5)
    primary = replicas[0]
    primary.step(Request(1, 1, Operation("set", "k", 1)), 1 * MS)  # op 1 = x in view 0
    primary.step(PrepareOk(0, 1, 1), 2 * MS)  # 2 of 5 hold x: not committed
    assert primary.commit_number == 0
    # View 5 (primary 0 again): op 1 is y, from replica 3's log of view 4.
    other = Entry(4, 9, 1, Operation("set", "k", 9))
    primary.step(StartViewChange(5, 1), 3 * MS)
    primary.step(StartViewChange(5, 2), 4 * MS)
    primary.step(DoViewChange(5, (other,), 4, 1, 0, 3), 5 * MS)
    primary.step(DoViewChange(5, (), 0, 0, 0, 4), 6 * MS)
    assert primary.is_primary and primary.log == [other]
    primary.step(PrepareOk(5, 1, 3), 7 * MS)  # y at 0 and 3: 2 of 5, not a quorum
    assert primary.commit_number == 0


def start_view_of_a_lower_view_is_ignored(replica_class: type[Replica]) -> None:
    replicas, _ = cluster(replica_class, 3)
    backup = replicas[1]
    backup.step(StartViewChange(5, 0), 1 * MS)  # view change to view 5
    assert backup.view_number == 5
    backup.step(StartView(3, (entry(1),), 1, 0, 0), 2 * MS)  # a late STARTVIEW of view 3
    assert (backup.view_number, backup.status, backup.log) == (5, "view_change", [])


DIRECTED: list[Callable[[type[Replica]], None]] = [
    prepare_ok_of_an_old_view_is_not_counted,
    acks_do_not_survive_a_view_change,
    start_view_of_a_lower_view_is_ignored,
]


@pytest.mark.parametrize("test", DIRECTED, ids=lambda t: t.__name__)
def test_directed_test_passes_on_the_real_replica(
    test: Callable[[type[Replica]], None],
) -> None:
    test(Replica)


# -- the harness -------------------------------------------------------------------------------

Catcher = Callable[[type[Replica]], None] | str
# mutation -> what must catch it: directed tests, and/or the checker (a pattern of its message)
CAUGHT_BY: dict[str, list[Catcher]] = {
    "new primary commits its whole chosen log": ["committed op|committed while only"],
    "STARTVIEW of a lower view accepted": [start_view_of_a_lower_view_is_ignored],
    "view-number lost in a crash": ["view-number/last normal view went from"],
    "primary skips its duplicate check": ["committed twice"],
    "PREPAREOK of an old view counted": [prepare_ok_of_an_old_view_is_not_counted],
    "acks kept across views": [acks_do_not_survive_a_view_change],
}
SEEDS = 30  # heavy-fault runs per mutation, at most


def first_violation(mutant: type[Replica], monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Run heavy-fault simulations of the mutant; return the first violation's message."""
    monkeypatch.setattr("vsrtel.vsr.sim.Replica", mutant)
    for seed in range(SEEDS):
        sim = Simulation(seed=seed, requests=60, replicas=3 if seed % 2 else 5, faults="heavy",
                         registry=vsrtel.Registry())
        try:
            sim.run()
        except InvariantViolation as violation:
            return str(violation)
        finally:
            sim.close()
    return None


def test_every_mutation_has_a_catcher() -> None:
    assert set(CAUGHT_BY) == set(MUTATIONS)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutation_is_caught(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mutant = load_mutant(name)
    for catcher in CAUGHT_BY[name]:
        if isinstance(catcher, str):
            violation = first_violation(mutant, monkeypatch)
            assert violation is not None, f"{name}: the checker missed it in {SEEDS} seeds"
            assert re.search(catcher, violation), violation
        else:
            with pytest.raises(AssertionError):
                catcher(mutant)


def test_the_unmutated_copy_is_not_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    copy = load_mutant("none", [])
    for test in DIRECTED:
        test(copy)
    monkeypatch.setattr("vsrtel.vsr.sim.Replica", copy)
    sim = Simulation(seed=1, requests=60, faults="heavy", registry=vsrtel.Registry())
    with sim:
        sim.run()
