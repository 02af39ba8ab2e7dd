"""Event names: tuples of string segments, also written as dotted strings; and the one policy
of vsrtel's caches of what a name resolves to."""

from __future__ import annotations

import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

EventName = tuple[str, ...]
#: What callers may pass as a name: a tuple (or list) of segments, or a dotted string.
Name = str | Sequence[str]


def event_name(name: Name, *, what: str = "event name", allow_empty: bool = False) -> EventName:
    """Return ``name`` as a tuple of segments, or raise naming the bad part.

    ``"a.b.c"`` and ``["a", "b", "c"]`` both become ``("a", "b", "c")``. Segments must be
    non-empty strings without dots, so the dotted and tuple spellings always agree.
    """
    if isinstance(name, str):
        parts: tuple[Any, ...] = tuple(name.split(".")) if name else ()
    elif isinstance(name, (tuple, list)):
        parts = tuple(name)
    else:
        raise TypeError(f"{what} must be a tuple of str or a dotted str, got {name!r}")
    if not parts and not allow_empty:
        raise ValueError(f"{what} is empty: {name!r}")
    for i, segment in enumerate(parts):
        if not isinstance(segment, str):
            raise TypeError(
                f"{what} {name!r}: segment {i} is {type(segment).__name__} {segment!r}, not str"
            )
        if not segment:
            raise ValueError(f"{what} {name!r}: segment {i} is empty")
        if "." in segment and not isinstance(name, str):
            raise ValueError(f"{what} {name!r}: segment {i} {segment!r} contains a dot")
    # Interned, as the compiler interns the segments of a literal name: the registry then finds
    # an equal tuple by comparing the segments' identities, not their characters.
    if isinstance(name, tuple):
        return parts
    return tuple(sys.intern(s) if s.__class__ is str else s for s in parts)


def starts_with(name: EventName, prefix: EventName) -> bool:
    """Whether ``name`` is ``prefix`` or under it (``()`` is a prefix of every name)."""
    return name[: len(prefix)] == prefix


#: The bound of every cache of what a name resolves to (a route, a span's event names, a scope's
#: full name): names are few in a sound program, but a caller that builds them from data (an id
#: in a segment) must not grow memory without end.
CACHE_LIMIT = 10_000


def remember(cache: MutableMapping[K, V], key: K, value: V) -> V:
    """Store ``value`` in ``cache`` and return it; a full cache starts over first.

    The one eviction policy of vsrtel's caches: a hit stays one plain dict lookup (an LRU would
    pay on every hit), memory stays bounded, and a program's working set, far smaller than the
    bound, is cached again within a few calls of starting over.
    """
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value
