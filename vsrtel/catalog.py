"""Event catalogues: the declared, documented contract of the events a component emits.

A :class:`Catalog` lists :class:`EventSpec` entries under one prefix. It renders itself as
Markdown (one table per group) or JSON, validates one event against its spec, and, in tests,
checks every event emitted under its prefix (:meth:`Catalog.check`).

A ``"span"`` spec stands for the three events :func:`vsrtel.span` emits; the catalogue adds the
standard span keys itself (``monotonic_time``/``system_time`` on start, ``duration``/
``monotonic_time`` on stop and exception, ``telemetry_span_context`` on all three, ``kind``/
``reason``/``stacktrace`` on exception), so a spec declares only its own keys: ``measurements``
are the extra measurements of ``stop``, ``metadata`` the keys carried by all three events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from vsrtel._names import EventName, Name, event_name, starts_with
from vsrtel._registry import Registry

__all__ = [
    "SPAN_SUFFIXES", "Catalog", "CatalogCheck", "CatalogViolation", "EventKind", "EventSpec",
]

EventKind = Literal["event", "span"]
"""What a catalogue entry declares: one event, or a span (its start, stop and exception)."""
SPAN_SUFFIXES = ("start", "stop", "exception")

_SPAN_MEASUREMENTS: dict[str, dict[str, str]] = {
    "start": {
        "monotonic_time": "monotonic clock at start (int ns)",
        "system_time": "wall-clock time at start (int ns since the epoch)",
    },
    "stop": {
        "duration": "time from start to stop (int ns)",
        "monotonic_time": "monotonic clock at stop (int ns)",
    },
    "exception": {
        "duration": "time from start to the exception (int ns)",
        "monotonic_time": "monotonic clock at the exception (int ns)",
    },
}
_SPAN_CONTEXT = {"telemetry_span_context": "correlates the start, stop and exception events"}
_EXCEPTION_METADATA = {
    "kind": "the exception class",
    "reason": "the exception object",
    "stacktrace": "the traceback frames (traceback.StackSummary)",
}


class CatalogViolation(AssertionError):
    """Raised by :meth:`Catalog.check` when emitted events break the catalogue."""


def _descriptions(value: Mapping[str, str], what: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping of key -> description, got {value!r}")
    for key, text in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what}: key {key!r} is not a non-empty str")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what}: key {key!r} needs a one-line description, got {text!r}")
    return dict(value)


@dataclass(frozen=True, init=False)
class EventSpec:
    """The declaration of one event (or one span: its start, stop and exception events).

    ``name`` is a tuple or a dotted string; ``kind`` is ``"event"`` or ``"span"``.
    ``measurements`` and ``metadata`` map each key to a one-line description that includes the
    unit. ``optional_metadata`` lists keys that may be present (and are then allowed) but are
    not required. ``common=False`` exempts the event from the catalogue's common metadata (an
    event not emitted by the kind of node that metadata describes). Raises
    ``ValueError``/``TypeError`` naming the bad part.
    """

    name: EventName
    kind: EventKind
    description: str
    measurements: Mapping[str, str]
    metadata: Mapping[str, str]
    optional_metadata: Mapping[str, str]
    common: bool

    def __init__(
        self,
        name: Name,
        kind: EventKind,
        description: str,
        measurements: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        optional_metadata: Mapping[str, str] | None = None,
        common: bool = True,
    ) -> None:
        full = event_name(name, what="event spec name")
        dotted = ".".join(full)
        if kind not in ("event", "span"):
            raise ValueError(f"event spec {dotted}: kind must be 'event' or 'span', not {kind!r}")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"event spec {dotted}: description is empty")
        if kind == "span" and full[-1] in SPAN_SUFFIXES:
            raise ValueError(f"span spec {dotted}: give the prefix, without {full[-1]!r}")
        object.__setattr__(self, "name", full)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "common", bool(common))
        for attr, value in (("measurements", measurements), ("metadata", metadata),
                            ("optional_metadata", optional_metadata)):
            checked = _descriptions(value or {}, f"event spec {dotted} {attr}")
            object.__setattr__(self, attr, checked)

    @property
    def dotted(self) -> str:
        """The name as a dotted string."""
        return ".".join(self.name)

    def event_names(self) -> tuple[EventName, ...]:
        """Return the concrete event names: the name itself, or the three span events."""
        if self.kind == "event":
            return (self.name,)
        return tuple((*self.name, suffix) for suffix in SPAN_SUFFIXES)

    def expected_keys(
        self, name: EventName, common_metadata: Mapping[str, str] | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Return the (measurements, metadata) every event ``name`` of this spec must carry."""
        common_metadata = common_metadata if common_metadata and self.common else {}
        if self.kind == "event":
            return dict(self.measurements), {**common_metadata, **self.metadata}
        suffix = name[-1]
        measurements = dict(_SPAN_MEASUREMENTS[suffix])
        if suffix == "stop":
            measurements.update(self.measurements)
        metadata = {**common_metadata, **self.metadata, **_SPAN_CONTEXT}
        if suffix == "exception":
            metadata.update(_EXCEPTION_METADATA)
        return measurements, metadata

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain JSON-ready data."""
        return {
            "name": self.dotted,
            "kind": self.kind,
            "description": self.description,
            "events": [".".join(n) for n in self.event_names()],
            "measurements": dict(self.measurements),
            "metadata": dict(self.metadata),
            "optional_metadata": dict(self.optional_metadata),
            "common_metadata": self.common,
        }


class CatalogCheck:
    """What :meth:`Catalog.check` saw: ``problems`` (strings) and ``seen`` event counts."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.seen: dict[EventName, int] = {}

    def missing(self, catalog: Catalog) -> list[EventName]:
        """Return the catalogue's event names that were never emitted during the check."""
        return [name for name in catalog.event_names() if name not in self.seen]


class Catalog:
    """A set of :class:`EventSpec` under one ``prefix``, with ``common_metadata`` on every event.

    Raises ``ValueError`` at construction when a spec lies outside the prefix or two specs
    declare the same concrete event name.
    """

    def __init__(
        self,
        prefix: Name,
        specs: Iterable[EventSpec],
        *,
        common_metadata: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        self.prefix = event_name(prefix, what="catalog prefix")
        self.title = title or ".".join(self.prefix)
        self.common_metadata = _descriptions(common_metadata or {}, "catalog common_metadata")
        self.specs: tuple[EventSpec, ...] = tuple(specs)
        self._by_name: dict[EventName, EventSpec] = {}
        for spec in self.specs:
            if not isinstance(spec, EventSpec):
                raise TypeError(f"catalog {self.title}: not an EventSpec: {spec!r}")
            if not starts_with(spec.name, self.prefix) or len(spec.name) <= len(self.prefix):
                raise ValueError(f"catalog {self.title}: {spec.dotted} is not under the prefix")
            for name in spec.event_names():
                if name in self._by_name:
                    raise ValueError(f"catalog {self.title}: {'.'.join(name)} is declared twice")
                self._by_name[name] = spec

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def spec(self, name: Name) -> EventSpec | None:
        """Return the spec that declares the concrete event ``name``, or None."""
        return self._by_name.get(event_name(name))

    def event_names(self) -> tuple[EventName, ...]:
        """Return every concrete event name (spans expanded), in declaration order."""
        return tuple(self._by_name)

    def groups(self) -> dict[str, list[EventSpec]]:
        """Return the specs grouped by the first segment after the prefix, in declaration order."""
        groups: dict[str, list[EventSpec]] = {}
        for spec in self.specs:
            groups.setdefault(spec.name[len(self.prefix)], []).append(spec)
        return groups

    def validate(
        self, name: Name, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> list[str]:
        """Return the problems of one emitted event against the catalogue (empty when valid).

        An event is valid when it is declared, carries every declared measurement and metadata
        key (common metadata included) and no undeclared key: the catalogue is the whole
        contract, so a new key needs a new line in it.
        """
        full = event_name(name)
        dotted = ".".join(full)
        spec = self._by_name.get(full)
        if spec is None:
            return [f"{dotted}: not declared in the {self.title} catalogue"]
        want_measurements, want_metadata = spec.expected_keys(full, self.common_metadata)
        problems = []
        for what, want, got, optional in (
            ("measurement", want_measurements, measurements, {}),
            ("metadata", want_metadata, metadata, spec.optional_metadata),
        ):
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want) - set(optional))
            if missing:
                problems.append(f"{dotted}: missing {what} {', '.join(missing)}")
            if extra:
                problems.append(f"{dotted}: undeclared {what} {', '.join(extra)}")
        return problems

    @contextmanager
    def check(self, registry: Registry | None = None) -> Iterator[CatalogCheck]:
        """Check every event emitted under the prefix while the block runs (strict mode).

        Yields a :class:`CatalogCheck`; on a normal exit, raises :class:`CatalogViolation`
        listing every problem (undeclared events, missing or undeclared keys). The checking
        handler is detached on exit.
        """
        registry = Registry.or_default(registry)
        result = CatalogCheck()

        def checker(name: EventName, measurements: Any, metadata: Any, _: Any) -> None:
            result.seen[name] = result.seen.get(name, 0) + 1
            if result.seen[name] == 1 or len(result.problems) < 100:
                for problem in self.validate(name, measurements, metadata):
                    if problem not in result.problems:
                        result.problems.append(problem)

        handler_id = ("vsrtel.catalog.check", self.title, id(result))
        registry.attach_prefix(handler_id, self.prefix, checker)
        try:
            yield result
        finally:
            registry.detach(handler_id)
        if result.problems:
            raise CatalogViolation(
                f"{len(result.problems)} catalogue problem(s):\n  " + "\n  ".join(result.problems)
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the catalogue as plain JSON-ready data."""
        return {
            "prefix": ".".join(self.prefix),
            "title": self.title,
            "common_metadata": dict(self.common_metadata),
            "events": [spec.to_dict() for spec in self.specs],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return the catalogue as a JSON document (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    def render_markdown(self, heading_level: int = 3) -> str:
        """Return the catalogue as Markdown: common metadata, then one table per group."""
        hashes = "#" * heading_level
        lines = []
        if self.common_metadata:
            lines += [f"Every event under `{'.'.join(self.prefix)}` carries this metadata:", ""]
            lines += ["| Key | Meaning |", "|---|---|"]
            lines += [f"| `{k}` | {_cell(v)} |" for k, v in self.common_metadata.items()]
            lines.append("")
        lines += [
            "A *span* is three events: `start`, `stop` and `exception`, with the standard span "
            "measurements and `telemetry_span_context`; its table row lists only its own keys "
            "(measurements: extra on `stop`).",
            "",
        ]
        for group, specs in self.groups().items():
            lines += [f"{hashes} {group}", ""]
            lines += ["| Event | Kind | Measurements | Metadata | Fires when |",
                      "|---|---|---|---|---|"]
            for spec in specs:
                metadata = "<br>".join(
                    k for k in (_keys(spec.metadata), _keys(spec.optional_metadata, " (optional)"))
                    if k
                )
                if not spec.common and self.common_metadata:
                    metadata = "<br>".join(k for k in (metadata, "(no common metadata)") if k)
                lines.append(
                    f"| `{spec.dotted}` | {spec.kind} | {_keys(spec.measurements) or '-'} "
                    f"| {metadata or '-'} | {_cell(spec.description)} |"
                )
            lines.append("")
        return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _keys(descriptions: Mapping[str, str], note: str = "") -> str:
    return "<br>".join(f"`{k}`{note}: {_cell(v)}" for k, v in descriptions.items())
