"""Mutation tests: each known protocol bug, applied to a copy of the replica, must be caught.

A mutant is ``vsrtel/vsr/replica.py`` with one textual edit, loaded as a separate module. It is
caught either by the invariant checker over a few heavy-fault simulations, or by a directed test
below (each directed test also runs, and passes, against the real replica). Random sweeps never
deliver a PREPAREOK of an old view to a primary of a later view whose log differs, so those two
mutations have directed tests only; so does the lower-view STARTVIEW, which the checker
catches (its view-number goes back) only in rare seeds now that view changes retransmit.
"""

from __future__ import annotations

import ast
import itertools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

import vsrtel
from vsrtel.vsr import InvariantViolation, SimClock, Simulation
from vsrtel.vsr import replica as replica_module
from vsrtel.vsr.catalog import PREFIX, common_metadata
from vsrtel.vsr.messages import (
    Commit,
    DoViewChange,
    Entry,
    Operation,
    Prepare,
    PrepareOk,
    Request,
    StartView,
    StartViewChange,
)
from vsrtel.vsr.replica import Replica

SOURCE = Path(replica_module.__file__).read_text()
_loaded = itertools.count()


class Edit(NamedTuple):
    """One textual edit: ``pattern`` (a regular expression) must match exactly once inside
    ``function`` (``Class.method``, or a module-level function); the match becomes
    ``replacement`` (literal text). Anchored on a function and a small pattern, an edit survives
    changes elsewhere in replica.py, and elsewhere on the lines it patches."""

    function: str
    pattern: str
    replacement: str


class MutationDoesNotApply(Exception):
    """A harness error, not a finding: a mutation's anchor is gone from replica.py.

    Distinct from a mutant nobody caught (an ``AssertionError``): fix the mutation's anchor.
    """


# name -> the edits that make the mutant
MUTATIONS: dict[str, list[Edit]] = {
    "new primary commits its whole chosen log": [
        Edit("Replica._record_do_view_change", r"commit = .*", "commit = best.op_number"),
    ],
    "new primary announces the DOVIEWCHANGEs' lower commit-number": [
        Edit("Replica._record_do_view_change", r"commit = .*",
             "commit = max(m.commit_number for m in self._dvc.values())"),
    ],
    "new primary's commit-number goes back to the DOVIEWCHANGEs'": [
        Edit("Replica._record_do_view_change", r"commit = .*",
             "commit = max(m.commit_number for m in self._dvc.values()); "
             "self.commit_number = min(self.commit_number, commit)"),
    ],
    "STARTVIEW of a lower view accepted": [
        Edit("Replica._on_start_view", r"msg\.view < self\.view_number or ", ""),
    ],
    "view-number lost in a crash": [
        Edit("Replica.restart", r"self\.incarnation \+= 1",
             "self.incarnation += 1; self.view_number = self.last_normal_view"),
    ],
    "primary skips its duplicate check": [
        Edit("Replica._on_request", r"last is not None and last\[0\] >= msg\.request_number",
             "False"),
        Edit("Replica._on_request", r"for entry in self\.log\[self\.commit_number:\]",
             "for entry in ()"),
    ],
    "PREPAREOK of an old view counted": [
        Edit("Replica._on_prepare_ok", r" or msg\.view != self\.view_number", ""),
    ],
    "acks kept across views": [
        Edit("Replica._reset_view_state", r"self\._acked\b.*= \{\}",
             'self._acked: dict[int, int] = getattr(self, "_acked", {})'),
    ],
    "a stalled view change retries the same view": [
        Edit("Replica._on_tick", r"self\.view_number \+ 1, \"view_change_timeout\"",
             'self.view_number, "view_change_timeout"'),
    ],
}


def _function_span(tree: ast.Module, source: str, function: str) -> tuple[int, int] | None:
    """The character offsets of ``function``'s source (``Class.method`` or ``function``)."""
    *owner, name = function.split(".")
    body: list[ast.stmt] = tree.body
    for part in owner:
        classes = [n for n in body if isinstance(n, ast.ClassDef) and n.name == part]
        if not classes:
            return None
        body = classes[0].body
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            assert node.end_lineno is not None
            lines = source.splitlines(keepends=True)
            start = sum(len(line) for line in lines[: node.lineno - 1])
            return start, start + sum(len(line) for line in lines[node.lineno - 1:
                                                                   node.end_lineno])
    return None


def apply_mutation(source: str, name: str, edits: list[Edit]) -> str:
    """``source`` with the ``edits`` of mutation ``name``; raises :class:`MutationDoesNotApply`
    when a function is gone or its pattern does not match exactly once in it."""
    for edit in edits:
        span = _function_span(ast.parse(source), source, edit.function)
        if span is None:
            raise MutationDoesNotApply(
                f"mutation {name!r} no longer applies: no function {edit.function} in replica.py"
            )
        start, end = span
        matches = list(re.finditer(edit.pattern, source[start:end]))
        if len(matches) != 1:
            raise MutationDoesNotApply(
                f"mutation {name!r} no longer applies: pattern {edit.pattern!r} matches "
                f"{len(matches)} times in {edit.function} (it must match once)"
            )
        found = matches[0]
        source = (source[:start + found.start()] + edit.replacement
                  + source[start + found.end():])
    return source


def load_mutant(name: str, edits: list[Edit] | None = None) -> type[Replica]:
    """Return the Replica class of a copy of replica.py with the edits of mutation ``name``."""
    source = apply_mutation(SOURCE, name, MUTATIONS[name] if edits is None else edits)
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


def a_new_primary_keeps_its_commit_number(replica_class: type[Replica]) -> None:
    replicas, _ = cluster(replica_class, 5)
    new_primary = replicas[1]  # of view 1
    x = entry(1)
    new_primary.step(Prepare(0, x, 1, 0, 0), 1 * MS)
    new_primary.step(Commit(0, 1, 0), 2 * MS)
    assert new_primary.commit_number == 1
    # Replicas 2-4 hold op 1 without knowing it committed; their DOVIEWCHANGEs complete view 1
    # before the new primary has a vote to send its own.
    for i in (2, 3, 4):
        out = new_primary.step(DoViewChange(1, (x,), 0, 1, 0, i), (1 + i) * MS)
        assert new_primary.commit_number == 1
    assert new_primary.is_primary
    assert {m.commit_number for _, m in out.messages if isinstance(m, StartView)} == {1}


DIRECTED: list[Callable[[type[Replica]], None]] = [
    prepare_ok_of_an_old_view_is_not_counted,
    acks_do_not_survive_a_view_change,
    start_view_of_a_lower_view_is_ignored,
    a_new_primary_keeps_its_commit_number,
]


@pytest.mark.parametrize("test", DIRECTED, ids=lambda t: t.__name__)
def test_directed_test_passes_on_the_real_replica(
    test: Callable[[type[Replica]], None],
) -> None:
    test(Replica)


# -- the harness -------------------------------------------------------------------------------

class Checked(NamedTuple):
    """Caught by the invariant checker: over at most :data:`SEEDS` runs under ``faults``, a
    violation whose message matches ``pattern``."""

    pattern: str
    faults: str = "heavy"


Catcher = Callable[[type[Replica]], None] | Checked
# mutation -> what must catch it: directed tests, and/or the checker
CAUGHT_BY: dict[str, list[Catcher]] = {
    "new primary commits its whole chosen log": [Checked("committed op|committed while only")],
    "new primary announces the DOVIEWCHANGEs' lower commit-number": [
        a_new_primary_keeps_its_commit_number,
    ],
    "new primary's commit-number goes back to the DOVIEWCHANGEs'": [
        a_new_primary_keeps_its_commit_number,
    ],
    "STARTVIEW of a lower view accepted": [start_view_of_a_lower_view_is_ignored],
    "view-number lost in a crash": [Checked("view-number/last normal view went from")],
    "primary skips its duplicate check": [Checked("committed twice")],
    "PREPAREOK of an old view counted": [prepare_ok_of_an_old_view_is_not_counted],
    "acks kept across views": [acks_do_not_survive_a_view_change],
    # With every crashed replica restarted, the view's primary always comes back; only a
    # primary dead for good leaves that view change stuck.
    "a stalled view change retries the same view": [
        Checked("^liveness: ", "heavy,permanent_crashes=3"),
    ],
}
SEEDS = 30  # runs per checked mutation, at most


def first_violation(
    mutant: type[Replica], faults: str, monkeypatch: pytest.MonkeyPatch
) -> str | None:
    """Run simulations of the mutant under ``faults``; return the first violation's message
    (without the seed)."""
    monkeypatch.setattr("vsrtel.vsr.sim.Replica", mutant)
    for seed in range(SEEDS):
        sim = Simulation(seed=seed, requests=60, replicas=3 if seed % 2 else 5, faults=faults,
                         registry=vsrtel.Registry())
        try:
            sim.run()
        except InvariantViolation as violation:
            return str(violation).removeprefix(f"seed {seed}: ")
        finally:
            sim.close()
    return None


def test_every_mutation_has_a_catcher() -> None:
    assert set(CAUGHT_BY) == set(MUTATIONS)


@pytest.fixture
def mutant(request: pytest.FixtureRequest) -> tuple[str, type[Replica]]:
    """The mutant of mutation ``request.param``: a mutation that no longer applies fails here,
    so pytest reports it as an ERROR at setup, not as a FAILED (missed) mutation."""
    name: str = request.param
    return name, load_mutant(name)


@pytest.mark.parametrize("mutant", list(MUTATIONS), indirect=True)
def test_mutation_is_caught(
    mutant: tuple[str, type[Replica]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, replica_class = mutant
    for catcher in CAUGHT_BY[name]:
        if isinstance(catcher, Checked):
            violation = first_violation(replica_class, catcher.faults, monkeypatch)
            assert violation is not None, (
                f"{name}: the checker missed it in {SEEDS} seeds of {catcher.faults}")
            assert re.search(catcher.pattern, violation), violation
        else:
            with pytest.raises(AssertionError):
                catcher(replica_class)


def test_the_unmutated_copy_is_not_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    copy = load_mutant("none", [])
    for test in DIRECTED:
        test(copy)
    monkeypatch.setattr("vsrtel.vsr.sim.Replica", copy)
    for faults in sorted({c.faults for cs in CAUGHT_BY.values() for c in cs
                          if isinstance(c, Checked)}):
        sim = Simulation(seed=1, requests=60, faults=faults, registry=vsrtel.Registry())
        with sim:
            sim.run()


# -- the harness itself ------------------------------------------------------------------------


def test_a_mutation_survives_an_unrelated_edit_of_the_line_it_patches() -> None:
    # The new primary's commit line before issue 17 (it ignored its own commit-number): the
    # mutation anchored on the function and "commit = " applies to both versions alike.
    now = "commit = max(self.commit_number, *(m.commit_number for m in self._dvc.values()))"
    before = SOURCE.replace(now, "commit = max(m.commit_number for m in self._dvc.values())")
    assert SOURCE.count(now) == 1 and before != SOURCE
    name = "new primary commits its whole chosen log"
    mutated = {apply_mutation(source, name, MUTATIONS[name]) for source in (SOURCE, before)}
    assert len(mutated) == 1 and "commit = best.op_number" in mutated.pop()


def test_every_mutation_applies_after_unrelated_edits_to_its_function() -> None:
    # A line added at the top of every function, and a comment at the end of every line.
    lines = SOURCE.splitlines(keepends=True)
    tops = sorted((node.body[0].lineno - 1, node.body[0].col_offset)
                  for node in ast.walk(ast.parse(SOURCE)) if isinstance(node, ast.FunctionDef))
    for index, indent in reversed(tops):
        lines.insert(index, " " * indent + "pass\n")
    edited = re.sub(r"(?m)(\S)$", r"\1  # an unrelated edit", "".join(lines))
    assert len(tops) > 50
    for name, edits in MUTATIONS.items():
        mutated = apply_mutation(edited, name, edits)
        compile(mutated, name, "exec")
        assert mutated != edited


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Edit("Replica._on_gone", "x", "y"), "no function Replica._on_gone in replica.py"),
        (Edit("Replica._on_prepare_ok", "no such text", ""),
         "pattern 'no such text' matches 0 times in Replica._on_prepare_ok"),
        (Edit("Replica._on_prepare_ok", "msg", ""), "times in Replica._on_prepare_ok (it must "
                                                   "match once)"),
    ],
)
def test_a_mutation_that_no_longer_applies_is_a_harness_error(edit: Edit, message: str) -> None:
    with pytest.raises(MutationDoesNotApply) as info:
        load_mutant("stale", [edit])
    assert not isinstance(info.value, AssertionError)  # not to be taken for a missed mutation
    assert "mutation 'stale' no longer applies: " in str(info.value)
    assert message in str(info.value)
