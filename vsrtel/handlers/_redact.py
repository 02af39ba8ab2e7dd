"""The redaction setting shared by the logs and spans handlers.

A metadata key is secret when, lower-cased with ``-`` read as ``_``, it equals a listed name or
ends with ``_`` plus a listed name: with ``"token"`` listed, ``"Token"``, ``"access_token"`` and
``"X-Auth-Token"`` are secret, ``"tokens_used"`` is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"

DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {"password", "passwd", "token", "secret", "cookie", "authorization", "api_key"}
)

# Nested metadata deeper than this is not walked (a cycle guard, not a feature).
_MAX_DEPTH = 8
_MAX_CACHED_KEYS = 4096


class Secrets:
    """A validated, normalised set of secret key names."""

    __slots__ = ("_verdicts", "names", "suffixes")

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str | bytes):
            raise TypeError(
                f"redact must be a collection of key names, not the string {names!r}"
            )
        normalized: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"redact key names must be str, got {name!r}")
            if not name:
                raise ValueError("redact key names must be non-empty, got ''")
            normalized.add(name.lower().replace("-", "_"))
        self.names = frozenset(normalized)
        self.suffixes = tuple(f"_{name}" for name in sorted(normalized))
        # Metadata keys repeat endlessly, so each key's verdict is computed once.
        self._verdicts: dict[object, bool] = {}

    def is_secret(self, key: object) -> bool:
        """Whether the metadata key ``key`` names a secret."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = isinstance(key, str) and (
                (normalized := key.lower().replace("-", "_")) in self.names
                or normalized.endswith(self.suffixes)
            )
            if len(self._verdicts) >= _MAX_CACHED_KEYS:
                self._verdicts = {}
            self._verdicts[key] = verdict
        return verdict

    def redact(self, metadata: Mapping[Any, Any], _depth: int = 0) -> dict[Any, Any]:
        """Copy ``metadata`` with secret values replaced by ``"[REDACTED]"``, nested maps too."""
        out: dict[Any, Any] = {}
        for key, value in metadata.items():
            if self.is_secret(key):
                out[key] = REDACTED
            elif isinstance(value, Mapping) and _depth < _MAX_DEPTH:
                out[key] = self.redact(value, _depth + 1)
            else:
                out[key] = value
        return out
