from __future__ import annotations

import vsrtel
from vsrtel.testing import capture

pytest_plugins = ["pytester"]


def test_capture_collects_under_prefixes_once_and_detaches() -> None:
    with capture("a", "a.b", "c.d") as events:
        assert len(vsrtel.list_handlers()) == 2  # "a.b" is covered by "a"
        vsrtel.execute("a.b", 1, {"k": 1})
        vsrtel.execute("c", 1)
        vsrtel.execute("c.d", {"n": 2})
    assert [(e.name, e.measurements, e.metadata) for e in events] == [
        (("a", "b"), {"value": 1}, {"k": 1}),
        (("c", "d"), {"n": 2}, {}),
    ]
    assert vsrtel.list_handlers() == []


def test_capture_without_prefixes_sees_everything_and_copies_payloads() -> None:
    metadata = {"k": 1}
    with capture() as events:
        vsrtel.execute("x", 1, metadata)
    metadata["k"] = 2
    assert events[0].metadata == {"k": 1}


def test_the_plugin_fixture_isolates_the_default_registry(pytester) -> None:  # type: ignore[no-untyped-def]
    vsrtel.attach("outer", "a", print)
    pytester.makepyfile(
        """
        import vsrtel

        def test_isolated(vsrtel_registry):
            assert vsrtel_registry is vsrtel.default_registry
            assert vsrtel.list_handlers() == []
            vsrtel.attach("inner", "a", print)
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert [r.id for r in vsrtel.list_handlers()] == ["outer"]
