from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import vsrtel
from vsrtel._names import CACHE_LIMIT, remember

segments = st.text(st.characters(blacklist_characters=".", blacklist_categories=["Cs"]), min_size=1)


@given(st.lists(segments, min_size=1, max_size=6))
def test_dotted_and_tuple_names_reach_the_same_handler(parts: list[str]) -> None:
    registry = vsrtel.Registry()
    calls: list[Any] = []
    registry.attach("h", ".".join(parts), lambda n, m, d, c: calls.append((n, m["value"])))
    registry.execute(tuple(parts), 1)
    registry.execute(".".join(parts), 2)
    registry.execute(list(parts), 3)
    assert calls == [(tuple(parts), 1), (tuple(parts), 2), (tuple(parts), 3)]
    assert vsrtel.event_name(".".join(parts)) == vsrtel.event_name(list(parts)) == tuple(parts)


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ((), ValueError, "empty"),
        ("", ValueError, "empty"),
        (("a", ""), ValueError, "segment 1 is empty"),
        ("a..b", ValueError, "segment 1 is empty"),
        (("a", 3), TypeError, "segment 1 is int 3"),
        (("a.b", "c"), ValueError, "contains a dot"),
        (42, TypeError, "42"),
    ],
)
def test_bad_names_are_rejected_everywhere(name: Any, error: type, fragment: str) -> None:
    registry = vsrtel.Registry()
    for call in (
        lambda: vsrtel.event_name(name),
        lambda: registry.attach("h", name, print),
        lambda: registry.attach_many("h", [name], print),
        lambda: registry.execute(name, 1),
        lambda: registry.enabled(name),
        lambda: registry.span(name),
        lambda: registry.signal(name),
    ):
        with pytest.raises(error, match=fragment):
            call()
    assert registry.list_handlers() == []


def test_a_bad_prefix_is_rejected_but_the_empty_prefix_means_everything() -> None:
    registry = vsrtel.Registry()
    with pytest.raises(TypeError, match="segment 0 is NoneType"):
        registry.attach_prefix("p", (None,), print)  # type: ignore[arg-type]
    calls: list[Any] = []
    registry.attach_prefix("all", (), lambda n, m, d, c: calls.append(n))
    registry.execute("x.y", 1)
    registry.execute("z", 1)
    assert calls == [("x", "y"), ("z",)]


def test_starts_with_compares_whole_segments() -> None:
    assert vsrtel.starts_with(("a", "b", "c"), ("a", "b"))
    assert vsrtel.starts_with(("a", "b"), ("a", "b"))
    assert vsrtel.starts_with(("a",), ())
    assert not vsrtel.starts_with(("a", "bc"), ("a", "b"))
    assert not vsrtel.starts_with(("a",), ("a", "b"))


def test_segments_of_a_dotted_name_are_interned() -> None:
    # Built at run time, so not interned by the compiler: interning makes equal names match
    # by identity in the registry's dict.
    dotted = "".join(["ap", "p.requ", "est"])
    first, second = vsrtel.event_name(dotted), vsrtel.event_name(dotted)
    assert all(a is b for a, b in zip(first, second, strict=True))


# -- the one cache policy ---------------------------------------------------------------------


def test_a_full_cache_starts_over_and_never_exceeds_the_limit() -> None:
    cache: dict[int, int] = {}
    for i in range(CACHE_LIMIT):
        assert remember(cache, i, -i) == -i
    assert len(cache) == CACHE_LIMIT
    remember(cache, CACHE_LIMIT, 0)
    assert cache == {CACHE_LIMIT: 0}
    for i in range(3 * CACHE_LIMIT):
        remember(cache, i, i)
        assert len(cache) <= CACHE_LIMIT
