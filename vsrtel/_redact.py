"""Redaction of secrets: the one rule behind the logs handler, ``vsrtel.debug``, the spans handler
and the registry's own failure reports.

This module is the only implementation of the rule; README.md states it once, under "Secrets" in
"What you can count on". It has three parts:

- keys: a key is secret when its letters and digits, lower-cased, contain one of the names
  (``DEFAULT_SECRET_KEYS`` unless ``redact=`` says otherwise); the value of a secret key becomes
  ``"[REDACTED]"``, whatever it is;
- containers: mappings, lists, tuples (named tuples by field name; a 2-item tuple or list whose
  first item is a str or bytes is a key/value pair, as ASGI gives headers), sets, deques and
  dataclass instances are walked, at any depth;
- text: every str and bytes value, and the message lines of exceptions, is scrubbed of the
  credentials text carries: a URL's userinfo, a Bearer token, and the value of every
  ``key=value``, ``key: value``, ``"key": "value"`` or ``('key', 'value')`` pair whose key is
  secret by the key rule (which covers query parameters such as ``?access_token=``).

Only the standard library (and vsrtel._names, for the one cache policy) is imported: the core
registry uses it for its own log lines.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import traceback
from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, AnyStr

from vsrtel._names import remember

REDACTED = "[REDACTED]"
# Stands for a container met again inside itself, so that the copy has no cycle.
CYCLE = "[CYCLE]"

DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {
        "accesskey",
        "apikey",
        "auth",
        "bearer",
        "cardnumber",
        "clientkey",
        "connectionstring",
        "cookie",
        "credential",
        "creditcard",
        "cvv",
        "databaseurl",
        "dsn",
        "jwt",
        "passphrase",
        "passwd",
        "password",
        "privatekey",
        "pwd",
        "secret",
        "session",
        "signingkey",
        "token",
    }
)

# Values that hold no keys and no text: returned as they are, recognised by one set lookup.
_NUMBERS = frozenset({int, float, bool, type(None)})
# Tuples rather than unions, and the concrete types (dict, and the read-only view handlers
# receive) before the slower ABC check: isinstance is on the walk's inner loop.
_MAPPINGS = (dict, MappingProxyType, Mapping)
_COLLECTIONS = (set, frozenset, deque)
# Containers nested deeper than this are replaced whole: they cannot be checked without
# risking the interpreter's recursion limit.
_MAX_DEPTH = 64
_IN_PROGRESS = object()

_QUOTED = r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\""""
# Where text holds a credential: a URL's userinfo or a Bearer token (the region to redact), or
# a key and its separator, where a pair starts. When the key is secret, its value is matched by
# _VALUE (by the quoted-value pattern, in a ('key', 'value') tuple) from the end of the match.
# Values are matched separately so that the scan goes on inside the value of a key that is not
# secret (a URL in `next=...`), in time linear in the text; a bare key is matched atomically
# (the lookahead-and-backreference idiom) for the same reason.
_TEXT = r"""
    ://(?P<userinfo>[^\s/?#<>]+)@
  | (?<![\w-])(?-i:Bearer|bearer|BEARER)[ \t]+(?P<bearer>[\w.~+/-]+=*)
  | \([ \t]*b?(?P<tq>['"])(?P<tkey>[\w.-]+)(?P=tq)[ \t]*,[ \t]*
  | (?: b?(?P<q>['"])(?P<qkey>[\w.-]+)(?P=q) | (?<![\w.-])(?=(?P<key>[\w.-]+))(?P=key) )
    [ \t]*[:=](?!//)[ \t]*
"""
_VALUE = rf"""
    b?(?:{_QUOTED})
  | (?:(?:bearer|basic|digest|negotiate|token)[ \t]+)?['"]?(?:[^\s&'"<>)\]}},;]|[,;](?!\s))+
"""
_TUPLE_VALUE = f"b?(?:{_QUOTED})"
_QUOTES = ("'", '"', b"'", b'"')
_BYTES_PREFIX = ("b", "B", b"b", b"B")
# The first line of an exception in a formatted traceback: "module.Type: message".
_EXCEPTION_LINE = re.compile(r"[\w.<>]+: ")


_Patterns = tuple[re.Pattern[AnyStr], re.Pattern[AnyStr], re.Pattern[AnyStr]]
_FLAGS = re.IGNORECASE | re.VERBOSE


# Compiled on first use: `import vsrtel` need not pay for them (a few milliseconds).
@functools.cache
def _str_patterns() -> _Patterns[str]:
    return re.compile(_TEXT, _FLAGS), re.compile(_VALUE, _FLAGS), re.compile(_TUPLE_VALUE, _FLAGS)


@functools.cache
def _bytes_patterns() -> _Patterns[bytes]:
    text, value, tuple_value = (s.encode() for s in (_TEXT, _VALUE, _TUPLE_VALUE))
    return re.compile(text, _FLAGS), re.compile(value, _FLAGS), re.compile(tuple_value, _FLAGS)


def _may_hold(text: str | bytes) -> bool:
    """Whether ``text`` holds what the scrubbing patterns need to match: most text does not, and
    this is much cheaper than running them."""
    if isinstance(text, str):
        return ":" in text or "=" in text or "(" in text or "earer" in text or "EARER" in text
    return b":" in text or b"=" in text or b"(" in text or b"earer" in text or b"EARER" in text


def _unquoted(value: str | bytes) -> tuple[int, int]:
    """Where to redact in a pair's value: inside its quotes (after a ``b`` prefix), if quoted."""
    first = 1 if value[:1] in _BYTES_PREFIX and value[1:2] in _QUOTES else 0
    quote = value[first : first + 1]
    if quote in _QUOTES and len(value) >= first + 2 and value[-1:] == quote:
        return first + 1, len(value) - 1
    return 0, len(value)


def _normalize(name: str | bytes) -> str:
    """``name`` lower-cased with every character but letters and digits removed."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return "".join(char for char in name.lower() if char.isalnum())


class Secrets:
    """A validated set of secret key names, and the redaction that applies it.

    ``Secrets(())`` redacts nothing at all: keys, text and tracebacks pass as they are.
    """

    __slots__ = ("_verdicts", "names")

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str | bytes):
            raise TypeError(f"redact must be a collection of key names, not the string {names!r}")
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
        """Whether the key ``key`` names a secret (a str or bytes key; others never do)."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = False
            if isinstance(key, str | bytes):
                normalized = _normalize(key)
                verdict = any(name in normalized for name in self.names)
            remember(self._verdicts, key, verdict)
        return verdict

    def redact(self, data: Mapping[Any, Any]) -> Mapping[Any, Any]:
        """Return ``data`` with every secret in it replaced by ``"[REDACTED]"``.

        The value of every secret key, and the credentials in every str or bytes value (see
        :meth:`scrub`), in ``data`` and in the containers inside it, at any depth. ``data`` is
        never modified: what changed is copied (mappings as dicts, other containers as their own
        type), the rest is shared, and ``data`` itself comes back when nothing in it is secret.
        A container met again inside itself becomes ``"[CYCLE]"``, one nested deeper than 64
        levels ``"[REDACTED]"``.
        """
        if not self.names:
            return data
        verdicts = self._verdicts
        for key, value in data.items():
            # The fast path: known, non-secret keys with numbers or plain text need no walk. Text
            # is plain when it holds none of what _TEXT needs (the test of _may_hold, inlined).
            if verdicts.get(key) is False:
                cls = value.__class__
                if cls in _NUMBERS or (
                    cls is str
                    and ":" not in value
                    and "=" not in value
                    and "(" not in value
                    and "earer" not in value
                    and "EARER" not in value
                ):
                    continue
            redacted: Mapping[Any, Any] = self._walk(data, {}, 0)
            return redacted
        return data

    def scrub(self, text: AnyStr) -> AnyStr:
        """Return ``text`` with the credentials it carries replaced by ``[REDACTED]``.

        Replaced are a URL's userinfo (``https://[REDACTED]@host``), the token after
        ``Bearer``, and the value of every ``key=value``, ``key: value``, ``"key": "value"``
        (or ``'key'``) and ``('key', 'value')`` pair whose key is secret. A quoted value keeps
        its quotes; an unquoted one runs to the next whitespace, ``&``, quote, closing bracket
        (``)``, ``]``, ``}``, ``>``), or comma or semicolon before whitespace, and takes an
        authorization scheme before it with it (``Authorization: Bearer abc`` becomes
        ``Authorization: [REDACTED]``). ``text`` itself comes back when nothing in it is secret.
        """
        if not self.names or not _may_hold(text):
            return text
        if isinstance(text, str):
            return self._scrub(text, _str_patterns(), REDACTED)
        return self._scrub(text, _bytes_patterns(), REDACTED.encode())

    def _scrub(self, text: AnyStr, patterns: _Patterns[AnyStr], redacted: AnyStr) -> AnyStr:
        find, value, tuple_value = patterns
        pieces: list[AnyStr] = []
        done = 0  # text[:done] is in pieces
        for match in find.finditer(text):
            if match.start() < done:
                continue  # inside a region already redacted
            if match.start("userinfo") >= 0:
                start, end = match.span("userinfo")
            elif match.start("bearer") >= 0:
                start, end = match.span("bearer")
            else:
                is_tuple = match.start("tkey") >= 0
                key = match.group("tkey") if is_tuple else match.group("qkey") or match.group("key")
                if not self.is_secret(key):
                    continue
                found = (tuple_value if is_tuple else value).match(text, match.end())
                if found is None or text.startswith(redacted, found.start()):
                    continue  # no value, or one redacted already: scrubbing twice changes nothing
                start, end = found.span()
                inner_start, inner_end = _unquoted(found.group())
                start, end = start + inner_start, start + inner_end
            pieces.append(text[done:start])
            pieces.append(redacted)
            done = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return text[:0].join(pieces)

    def format_exception(self, error: BaseException) -> str:
        """The traceback of ``error`` (its causes and contexts included) as text, scrubbed.

        As `traceback.format_exception` gives it, without the final newline. Every line is
        scrubbed (see :meth:`scrub`) but the frames' file names and source lines, which are code,
        not data; of an exception's own line ``module.Type: message``, only the message is.
        """
        parts = traceback.format_exception(type(error), error, error.__traceback__)
        if self.names:
            for index, part in enumerate(parts):
                if not part.startswith('  File "'):
                    head = _EXCEPTION_LINE.match(part)
                    cut = head.end() if head is not None else 0
                    parts[index] = part[:cut] + self.scrub(part[cut:])
        return "".join(parts).rstrip("\n")

    def _walk(self, value: Any, done: dict[int, Any], depth: int) -> Any:
        """``value`` redacted; ``done`` maps the id of each container seen to its result."""
        cls = value.__class__
        if cls in _NUMBERS:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, bytes):
            return self.scrub(value)
        if isinstance(value, _MAPPINGS):
            walk: Any = self._walk_mapping
        elif isinstance(value, tuple) and hasattr(cls, "_fields"):
            walk = self._walk_named_tuple
        elif isinstance(value, list | tuple):
            if len(value) == 2 and isinstance(value[0], str | bytes) and self.is_secret(value[0]):
                # A key/value pair (an ASGI header): the value is the secret.
                return [value[0], REDACTED] if isinstance(value, list) else (value[0], REDACTED)
            walk = self._walk_sequence
        elif isinstance(value, _COLLECTIONS):
            walk = self._walk_collection
        elif hasattr(cls, "__dataclass_fields__"):
            walk = self._walk_dataclass
        else:
            return value
        identity = id(value)
        seen = done.get(identity)
        if seen is not None:
            return CYCLE if seen is _IN_PROGRESS else seen
        if depth >= _MAX_DEPTH:
            return REDACTED
        done[identity] = _IN_PROGRESS
        result = done[identity] = walk(value, done, depth + 1)
        return result

    def _walk_items(
        self, items: Iterable[Any], done: dict[int, Any], depth: int
    ) -> list[Any] | None:
        """The items redacted, or None when none of them changed."""
        result: list[Any] | None = None
        for index, item in enumerate(items):
            new = self._walk(item, done, depth)
            if new is not item:
                if result is None:
                    result = list(items)
                result[index] = new
        return result

    def _walk_sequence(
        self, items: list[Any] | tuple[Any, ...], done: dict[int, Any], depth: int
    ) -> list[Any] | tuple[Any, ...]:
        result = self._walk_items(items, done, depth)
        if result is None:
            return items
        return result if isinstance(items, list) else tuple(result)

    def _walk_collection(
        self, items: set[Any] | frozenset[Any] | deque[Any], done: dict[int, Any], depth: int
    ) -> Any:
        result = self._walk_items(items, done, depth)
        if result is None:
            return items
        if isinstance(items, deque):
            return deque(result, maxlen=items.maxlen)
        try:
            return frozenset(result) if isinstance(items, frozenset) else set(result)
        except TypeError:  # an item whose redacted copy cannot be hashed
            return REDACTED

    def _walk_fields(
        self, names: Iterable[str], value: Any, done: dict[int, Any], depth: int
    ) -> dict[str, Any]:
        """The fields of ``value`` whose redacted value differs from the original."""
        changed: dict[str, Any] = {}
        for name in names:
            try:
                field = getattr(value, name)
            except AttributeError:  # a dataclass field never set (init=False, no default)
                continue
            new = REDACTED if self.is_secret(name) else self._walk(field, done, depth)
            if new is not field:
                changed[name] = new
        return changed

    def _walk_named_tuple(self, value: Any, done: dict[int, Any], depth: int) -> Any:
        changed = self._walk_fields(value._fields, value, done, depth)
        if not changed:
            return value
        try:
            return value._replace(**changed)
        except Exception:  # a named tuple whose construction we cannot repeat
            return REDACTED

    def _walk_dataclass(self, value: Any, done: dict[int, Any], depth: int) -> Any:
        names = [field.name for field in dataclasses.fields(value)]
        changed = self._walk_fields(names, value, done, depth)
        if not changed:
            return value
        try:
            # A shallow copy runs no __init__ or __post_init__; setting through object works
            # for frozen dataclasses too.
            new = copy.copy(value)
            for name, field in changed.items():
                object.__setattr__(new, name, field)
        except Exception:  # an object that cannot be copied: nothing of it is shown
            return REDACTED
        return new

    def _walk_mapping(
        self, data: Mapping[Any, Any], done: dict[int, Any], depth: int
    ) -> Mapping[Any, Any]:
        result: dict[Any, Any] | None = None
        is_secret = self.is_secret
        for key, value in data.items():
            if is_secret(key):
                new = REDACTED
            elif value.__class__ in _NUMBERS:
                continue
            else:
                new = self._walk(value, done, depth)
            if new is not value:
                if result is None:
                    result = dict(data)
                result[key] = new
        return data if result is None else result


DEFAULT = Secrets(DEFAULT_SECRET_KEYS)
"""The default rule, for reports that have no ``redact=`` setting (the core's failure logs)."""
