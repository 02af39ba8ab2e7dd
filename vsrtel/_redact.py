"""Redaction of secrets, shared by the logs and spans handlers.

This module is the only implementation of the rule (which keys are secret, how they are matched,
what replaces their values); README.md states it once, under "Secrets".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

REDACTED = "[REDACTED]"
# Stands for a container met again inside itself, so that the copy has no cycle.
CYCLE = "[CYCLE]"

DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {
        "api_key",
        "authorization",
        "bearer",
        "cookie",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "pwd",
        "secret",
        "secret_access_key",
        "secret_key",
        "token",
    }
)

# Values that hold no keys: the common case, recognised by one set lookup of their class.
_LEAVES = frozenset({str, int, float, bool, type(None), bytes})
# Tuples rather than unions, and the concrete types (dict, and the read-only view handlers
# receive) before the slower ABC check: isinstance is on the walk's inner loop.
_MAPPINGS = (dict, MappingProxyType, Mapping)
_SEQUENCES = (list, tuple)
# Containers nested deeper than this are replaced whole: they cannot be checked without
# risking the interpreter's recursion limit.
_MAX_DEPTH = 64
_MAX_CACHED_KEYS = 4096
_IN_PROGRESS = object()


def _normalize(name: str | bytes) -> str:
    """``name`` lower-cased with every character but letters and digits removed."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return "".join(char for char in name.lower() if char.isalnum())


class Secrets:
    """A validated set of secret key names, and the redaction that applies it."""

    __slots__ = ("_verdicts", "names")

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str | bytes):
            raise TypeError(
                f"redact must be a collection of key names, not the string {names!r}"
            )
        normalized: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"redact key names must be str, got {name!r}")
            if not _normalize(name):
                raise ValueError(f"redact key names need a letter or digit, got {name!r}")
            normalized.add(_normalize(name))
        self.names = tuple(sorted(normalized))
        # Keys repeat endlessly, so each key's verdict is computed once.
        self._verdicts: dict[object, bool] = {}

    def is_secret(self, key: object) -> bool:
        """Whether the mapping key ``key`` names a secret (a str or bytes key; others never do)."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = isinstance(key, str | bytes) and _normalize(key).endswith(self.names)
            if len(self._verdicts) >= _MAX_CACHED_KEYS:
                self._verdicts = {}
            self._verdicts[key] = verdict
        return verdict

    def redact(self, data: Mapping[Any, Any]) -> Mapping[Any, Any]:
        """Return ``data`` with the value of every secret key replaced by ``"[REDACTED]"``.

        Mappings, lists and tuples inside it are walked too, at any depth. ``data`` is never
        modified: what changed is copied (mappings as dicts), the rest is shared, and ``data``
        itself comes back when nothing in it is secret. A container met again inside itself
        becomes ``"[CYCLE]"``, one nested deeper than 64 levels ``"[REDACTED]"``.
        """
        verdicts = self._verdicts
        for key, value in data.items():
            # The fast path: known, non-secret keys with plain values need no walk.
            if verdicts.get(key) is not False or value.__class__ not in _LEAVES:
                redacted: Mapping[Any, Any] = self._walk(data, {}, 0)
                return redacted
        return data

    def _walk(self, value: Any, done: dict[int, Any], depth: int) -> Any:
        """``value`` redacted; ``done`` maps the id of each container seen to its result."""
        is_mapping = isinstance(value, _MAPPINGS)
        if not (is_mapping or isinstance(value, _SEQUENCES)):
            return value
        identity = id(value)
        seen = done.get(identity)
        if seen is not None:
            return CYCLE if seen is _IN_PROGRESS else seen
        if depth >= _MAX_DEPTH:
            return REDACTED
        done[identity] = _IN_PROGRESS
        result: Any
        if is_mapping:
            result = done[identity] = self._walk_mapping(value, done, depth + 1)
        else:
            result = done[identity] = self._walk_sequence(value, done, depth + 1)
        return result

    def _walk_sequence(
        self, items: list[Any] | tuple[Any, ...], done: dict[int, Any], depth: int
    ) -> list[Any] | tuple[Any, ...]:
        copy: list[Any] | None = None
        for index, item in enumerate(items):
            if item.__class__ in _LEAVES:
                continue
            new = self._walk(item, done, depth)
            if new is not item:
                if copy is None:
                    copy = list(items)
                copy[index] = new
        if copy is None:
            return items
        return copy if isinstance(items, list) else tuple(copy)

    def _walk_mapping(
        self, data: Mapping[Any, Any], done: dict[int, Any], depth: int
    ) -> Mapping[Any, Any]:
        copy: dict[Any, Any] | None = None
        is_secret = self.is_secret
        for key, value in data.items():
            if is_secret(key):
                new = REDACTED
            elif value.__class__ in _LEAVES:
                continue
            else:
                new = self._walk(value, done, depth)
            if new is not value:
                if copy is None:
                    copy = dict(data)
                copy[key] = new
        return data if copy is None else copy
