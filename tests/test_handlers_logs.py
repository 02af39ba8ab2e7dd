"""Tests for vsrtel.handlers.logs and vsrtel.debug: vsrtel events as structlog calls."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

import vsrtel
from vsrtel.handlers import logs, spans


@pytest.fixture
def captured() -> Iterator[list[Any]]:
    with capture_logs() as entries:
        yield entries


def test_event_becomes_one_structlog_call(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute("app.cache.hit", {"count": 3}, {"key": "user:1"})
    vsrtel.execute("other.event", {"count": 1})
    assert captured == [
        {"event": "app.cache.hit", "log_level": "debug", "count": 3, "key": "user:1"}
    ]


def test_span_events_show_durations_in_milliseconds(captured: list[Any]) -> None:
    class Clock:
        now = 0

        def monotonic_ns(self) -> int:
            self.now += 1_234_567
            return self.now

        def time_ns(self) -> int:
            return 1_700_000_000_000_000_000

    registry = vsrtel.Registry(clock=Clock())
    logs.attach_logger("db", registry=registry)
    with registry.span("db.query", {"table": "users"}) as s:
        s.measurements["queue_time"] = 2_000_000
    start, stop = captured
    assert start == {
        "event": "db.query.start",
        "log_level": "debug",
        "table": "users",
        "telemetry_span_context": start["telemetry_span_context"],
    }
    assert stop["event"] == "db.query.stop"
    assert stop["duration_ms"] == 1.235
    assert stop["queue_time_ms"] == 2.0
    assert "monotonic_time" not in stop and "duration" not in stop
    assert stop["telemetry_span_context"] == start["telemetry_span_context"]


def test_exception_events_log_at_error_with_the_exception(captured: list[Any]) -> None:
    logs.attach_logger(level="info", levels={"app": "debug"})
    error = KeyError("missing")
    with pytest.raises(KeyError), vsrtel.span("app.request", {"path": "/x"}):
        raise error
    start, exception = captured
    assert start["log_level"] == "debug"
    assert exception["event"] == "app.request.exception"
    assert exception["log_level"] == "error"
    assert exception["exception"].startswith("Traceback (most recent call last):")
    assert exception["exception"].endswith("KeyError: 'missing'") and "exc_info" not in exception
    assert exception["kind"] == "KeyError"
    assert exception["path"] == "/x"
    assert "stacktrace" not in exception and "reason" not in exception


def test_handler_failures_are_logged_at_error(captured: list[Any]) -> None:
    logs.attach_logger("vsrtel")

    def broken(*_: Any) -> None:
        raise RuntimeError("handler bug")

    vsrtel.attach("broken", "app.tick", broken)
    vsrtel.execute("app.tick", {"n": 1})
    [failure] = captured
    assert failure["event"] == "vsrtel.handler.failure"
    assert failure["log_level"] == "error"
    assert failure["exception"].endswith("RuntimeError: handler bug")


def test_any_failure_event_is_logged_at_error(captured: list[Any]) -> None:
    logs.attach_logger("vsrtel", level="debug")
    error = OSError("disk gone")
    vsrtel.execute("vsrtel.poller.failure", {}, {"kind": OSError, "reason": error})
    [failure] = captured
    assert failure["log_level"] == "error" and failure["exception"] == "OSError: disk gone"


def test_levels_map_prefixes_longest_match_wins(captured: list[Any]) -> None:
    logs.attach_logger(
        "vsr",
        level="info",
        levels={"vsr.heartbeat": "debug", ("vsr", "view"): "warning", "vsr.view.change": 20},
    )
    vsrtel.execute("vsr.heartbeat.sent", {"n": 1})
    vsrtel.execute("vsr.view.change.start", {"n": 1})
    vsrtel.execute("vsr.view.timeout", {"n": 1})
    vsrtel.execute("vsr.prepare.sent", {"n": 1})
    assert [(e["event"], e["log_level"]) for e in captured] == [
        ("vsr.heartbeat.sent", "debug"),
        ("vsr.view.change.start", "info"),
        ("vsr.view.timeout", "warning"),
        ("vsr.prepare.sent", "info"),
    ]


def test_filtered_out_events_build_nothing() -> None:
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise AssertionError("metadata was read for a filtered-out event")

        def __iter__(self) -> Iterator[str]:
            raise AssertionError("metadata was read for a filtered-out event")

        def __len__(self) -> int:
            return 1

    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    registry = vsrtel.Registry(on_error="raise")
    logs.attach_logger("app", logger=logger, level="debug", registry=registry)
    registry.execute("app.tick", {"n": 1}, Exploding())
    assert out.getvalue() == ""
    registry.execute("app.tick", {"n": 1}, lambda: Exploding())
    assert out.getvalue() == ""


def test_stdlib_logger_level_is_honoured_when_it_changes() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    std = logging.getLogger("vsrtel.test.stdlib")
    std.propagate = False
    std.addHandler(Collect())
    std.setLevel(logging.INFO)
    logger = structlog.wrap_logger(
        std,
        processors=[structlog.processors.KeyValueRenderer(sort_keys=True)],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    logs.attach_logger("app", logger=logger)
    vsrtel.execute("app.tick", {"n": 1})
    std.setLevel(logging.DEBUG)
    vsrtel.execute("app.tick", {"n": 2})
    assert [r.getMessage() for r in records] == ["event='app.tick' n=2"]


def test_secrets_are_redacted_case_insensitively_and_nested(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute(
        "app.login",
        {"n": 1},
        {
            "user": "ann",
            "PASSWORD": "hunter2",
            "Authorization": "Bearer x",
            "request": {"headers": {"Cookie": "c", "X-Api-Key": "k", "accept": "*/*"}},
            "access_token": "t",
            "retries": 12,
        },
    )
    [entry] = captured
    assert entry["user"] == "ann"
    assert entry["PASSWORD"] == "[REDACTED]"
    assert entry["Authorization"] == "[REDACTED]"
    assert entry["request"] == {
        "headers": {"Cookie": "[REDACTED]", "X-Api-Key": "[REDACTED]", "accept": "*/*"}
    }
    assert entry["access_token"] == "[REDACTED]"
    assert entry["retries"] == 12


def test_custom_and_empty_redact_sets(captured: list[Any]) -> None:
    logs.attach_logger("a", redact={"ssn"})
    logs.attach_logger("b", redact=())
    vsrtel.execute("a.x", {"n": 1}, {"ssn": "1", "password": "p"})
    vsrtel.execute("b.x", {"n": 1}, {"password": "p"})
    assert captured[0]["ssn"] == "[REDACTED]" and captured[0]["password"] == "p"
    assert captured[1]["password"] == "p"


def test_measurements_and_dicts_in_lists_are_redacted(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute(
        "app.login",
        {"n": 1, "token": 42},
        {"users": [{"name": "ann", "password": "hunter2"}], "apiKey": "k", b"pwd": "p"},
    )
    [entry] = captured
    assert entry["token"] == "[REDACTED]" and entry["n"] == 1
    assert entry["users"] == [{"name": "ann", "password": "[REDACTED]"}]
    assert entry["apiKey"] == "[REDACTED]"
    assert entry["b'pwd'"] == "[REDACTED]"


def test_debug_redacts_everywhere() -> None:
    out = io.StringIO()
    with vsrtel.debug("app", file=out):
        vsrtel.execute("app.x", {"accessToken": 7}, {"users": [{"secret_key": "hunter2"}]})
    assert "hunter2" not in out.getvalue() and "accessToken=[REDACTED]" in out.getvalue()


def test_trace_ids_are_added_when_a_span_is_recording(captured: list[Any]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    logs.attach_logger("app")
    spans.attach_tracer(["app.request"], tracer_provider=provider)
    vsrtel.execute("app.before", {"n": 1})
    with vsrtel.span("app.request"):
        vsrtel.execute("app.inside", {"n": 1})
    before, start, inside, stop = captured
    [span] = exporter.get_finished_spans()
    assert span.context is not None
    assert "trace_id" not in before
    assert inside["trace_id"] == trace.format_trace_id(span.context.trace_id)
    assert inside["span_id"] == trace.format_span_id(span.context.span_id)
    # The logs handler was attached first, so it runs before the span opens and after it ends.
    assert "trace_id" not in start
    assert stop["span_id"] == inside["span_id"]


def test_reserved_structlog_keys_are_renamed(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute("app.x", {"n": 1}, {"event": "mine", "exc_info": "nope"})
    assert captured == [
        {"event": "app.x", "log_level": "debug", "n": 1, "event_": "mine", "exc_info_": "nope"}
    ]


def test_odd_keys_become_str_and_clashing_keys_are_renamed(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute("app.x", {0: 1, "self": 2}, {"self": 3, "method_name": 4, (1, 2): 5})
    vsrtel.execute("app.y", {"n": 1})
    assert captured == [
        {
            "event": "app.x",
            "log_level": "debug",
            "0": 1,
            "self_": 2,
            "method_name_": 4,
            "(1, 2)": 5,
        },
        {"event": "app.y", "log_level": "debug", "n": 1},
    ]


def _json_logger(out: io.StringIO) -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )


def test_values_a_json_renderer_cannot_hold_are_logged_as_repr() -> None:
    out = io.StringIO()
    handler_id = logs.attach_logger("app", logger=_json_logger(out))
    cyclic: dict[str, Any] = {"n": 1}
    cyclic["again"] = cyclic
    vsrtel.execute("app.cycle", {"n": 1}, {"data": cyclic})
    vsrtel.execute("app.tuple_keys", {"n": 1}, {"data": {(1, 2): "pair"}})
    vsrtel.execute("app.after", {"n": 2})
    cycle, tuple_keys, after = map(json.loads, out.getvalue().splitlines())
    assert cycle["data"] == {"n": 1, "again": "[CYCLE]"}
    assert tuple_keys["data"] == "{(1, 2): 'pair'}"
    assert after == {"event": "app.after", "n": 2}
    assert [r.id for r in vsrtel.list_handlers()] == [handler_id]


def test_huge_and_nan_durations_are_logged_as_they_are(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute("app.x", {"duration": 10**400, "queue_time": math.nan})
    [entry] = captured
    assert entry["duration"] == 10**400 and math.isnan(entry["queue_time"])


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class UnprintableInt(int):
    __str__ = __repr__ = Unprintable.__repr__


def huge_int(digits: int, negative: bool = False) -> int:
    """An int of ``digits + 1`` digits: past 4,300, ``repr`` raises (built here, not in a
    strategy's description, which hypothesis prints with repr)."""
    return -(10**digits) if negative else 10**digits


def huge_int_error() -> ValueError:
    return ValueError(huge_int(5000))


def test_unreadable_event_data_still_gives_a_line(captured: list[Any]) -> None:
    class Unreadable(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("no items")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("no items")

        def __len__(self) -> int:
            return 1

    handler_id = logs.attach_logger("app")
    vsrtel.execute("app.x", {"n": 1}, {"password": "hunter2", "nested": Unreadable()})
    vsrtel.execute("app.y", {"n": 1})
    assert captured[0]["event"] == "app.x" and "no items" in captured[0]["log_error"]
    assert "hunter2" not in str(captured[0])
    assert captured[1]["event"] == "app.y"
    assert [r.id for r in vsrtel.list_handlers()] == [handler_id]


def test_keys_whose_str_fails_are_rendered(captured: list[Any]) -> None:
    logs.attach_logger("app")
    vsrtel.execute("app.x", {10**5000: 1}, {Unprintable(): 2, "n": 3})
    assert captured == [
        {
            "event": "app.x",
            "log_level": "debug",
            "<unrepresentable Unprintable>": 2,
            "n": 3,
            "<int of 5001 digits>": 1,
        }
    ]


def _odd_values() -> dict[str, Any]:
    return {
        "huge": 10**5000,
        "negative": -(10**6000),
        "nested": {"ok": 1, "list": [7, 10**5000]},
        "object": Unprintable(),
        "int_subclass": UnprintableInt(3),
        "error": ValueError(10**5000),
    }


def test_huge_ints_and_values_whose_repr_fails_are_rendered_by_debug() -> None:
    out = io.StringIO()
    registry = vsrtel.Registry()  # the default policy: a failing handler is detached
    handle = vsrtel.debug("app", file=out, registry=registry)
    registry.execute("app.odd", {"count": 10**5000}, _odd_values())
    registry.execute("app.after", {"n": 1})
    assert [r.id for r in registry.list_handlers()] == [handle.id]
    odd, after = out.getvalue().splitlines()
    assert "count='<int of 5001 digits>'" in odd
    assert "negative='<negative int of 6001 digits>'" in odd
    assert "[7, <int of 5001 digits>]" in odd
    assert "object='<unrepresentable Unprintable>'" in odd
    assert "int_subclass='<unrepresentable UnprintableInt>'" in odd
    assert "error='<unrepresentable ValueError>'" in odd
    assert "app.after" in after and "n=1" in after


def test_huge_ints_and_values_whose_repr_fails_are_rendered_as_json() -> None:
    out = io.StringIO()
    registry = vsrtel.Registry()
    handle = logs.attach_logger("app", logger=_json_logger(out), registry=registry)
    registry.execute("app.odd", {"count": 10**5000}, _odd_values())
    registry.execute("app.after", {"n": 1})
    assert [r.id for r in registry.list_handlers()] == [handle.id]
    odd, after = map(json.loads, out.getvalue().splitlines())
    assert odd["count"] == odd["huge"] == "<int of 5001 digits>"
    assert odd["object"] == "<unrepresentable Unprintable>"
    assert "<int of 5001 digits>" in odd["nested"]
    assert after == {"event": "app.after", "n": 1}


def test_a_huge_int_in_an_exception_event_keeps_the_traceback() -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    )
    registry = vsrtel.Registry()
    logs.attach_logger("app", logger=logger, registry=registry)
    with pytest.raises(ValueError), registry.span("app.job", {"size": 10**5000}):
        raise ValueError("bad size")
    start, exception = map(json.loads, out.getvalue().splitlines())
    assert start["size"] == exception["size"] == "<int of 5001 digits>"
    assert "ValueError: bad size" in exception["exception"]
    assert len(registry.list_handlers()) == 1


def test_attaching_again_for_the_same_prefix_and_logger_replaces(captured: list[Any]) -> None:
    first = logs.attach_logger("app")
    second = logs.attach_logger("app", level="info")  # a notebook cell run again, edited
    assert first == second
    assert [r.id for r in vsrtel.list_handlers()] == [first]
    vsrtel.execute("app.x", {"n": 1})
    assert captured == [{"event": "app.x", "log_level": "info", "n": 1}]  # once, at the new level


def test_other_prefixes_loggers_and_explicit_ids_are_separate_handlers() -> None:
    out_a, out_b = io.StringIO(), io.StringIO()
    logger_a = _json_logger(out_a)
    logs.attach_logger("app", logger=logger_a)
    logs.attach_logger("app.x", logger=logger_a)
    logs.attach_logger("app", logger=_json_logger(out_b))
    logs.attach_logger("app", logger=logger_a, handler_id="mine")
    assert len(vsrtel.list_handlers()) == 4
    vsrtel.execute("app.x", {"n": 1})
    assert len(out_a.getvalue().splitlines()) == 3 and len(out_b.getvalue().splitlines()) == 1


def test_handler_id_and_detach(captured: list[Any]) -> None:
    handler_id = logs.attach_logger("app", handler_id="app-logs")
    assert handler_id == "app-logs"
    with pytest.raises(vsrtel.AlreadyAttachedError):
        logs.attach_logger("app", handler_id="app-logs")
    assert vsrtel.detach("app-logs")
    vsrtel.execute("app.x", {"n": 1})
    assert captured == []


def test_a_logs_handle_tells_whether_it_is_attached_and_never_skips() -> None:
    out = io.StringIO()
    registry = vsrtel.Registry()
    logger = _json_logger(out)
    handle = logs.attach_logger("app", logger=logger, registry=registry)
    printer = logs.debug("app", file=io.StringIO(), registry=registry)
    cycle: dict[str, Any] = {}
    cycle["me"] = [cycle]
    registry.execute("app.odd", {"nan": math.nan, "huge": 10**5000}, cycle)
    assert handle.attached and printer.attached
    assert handle.skipped == 0 and printer.skipped == 0  # logged as best it can be
    assert "app.odd" in out.getvalue()
    again = logs.attach_logger("app", logger=logger, registry=registry)  # replaces, same id
    assert again == handle and handle.attached
    with handle:
        pass
    assert not handle.attached and not again.attached and printer.attached
    assert printer.detach() is True
    assert not printer.attached and registry.list_handlers() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"level": "verbose"}, ValueError, "verbose"),
        ({"level": 15}, ValueError, "15"),
        ({"levels": {"app": "loud"}}, ValueError, "loud"),
        ({"min_level": "verbose"}, ValueError, "min_level 'verbose'"),
        ({"min_level": 0}, ValueError, "min_level 0"),
        ({"levels": {"": "info"}}, ValueError, "levels key"),
        ({"prefix": ("a", 2)}, TypeError, "prefix"),
        ({"prefix": "a..b"}, ValueError, "prefix"),
        ({"redact": "password"}, TypeError, "password"),
        ({"redact": ["ok", 3]}, TypeError, "3"),
        ({"logger": object()}, TypeError, "logger"),
    ],
)
def test_bad_arguments_raise_naming_the_value(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        logs.attach_logger(**kwargs)
    assert vsrtel.list_handlers() == []


def test_debug_prints_readable_lines_and_detaches() -> None:
    out = io.StringIO()
    handle = vsrtel.debug("app", file=out)
    vsrtel.execute("app.cache.hit", {"count": 3}, {"key": "user:1", "password": "x"})
    vsrtel.execute("elsewhere.event", {"count": 1})
    assert handle.detach() is True
    assert handle.detach() is False
    vsrtel.execute("app.cache.hit", {"count": 4})
    [line] = out.getvalue().splitlines()
    assert "app.cache.hit" in line and "count=3" in line and "key=user:1" in line
    assert "[debug" in line
    assert "password=[REDACTED]" in line


def test_debug_as_a_context_manager_with_a_registry() -> None:
    out = io.StringIO()
    registry = vsrtel.Registry()
    with vsrtel.debug(file=out, registry=registry) as handle:
        assert [r.id for r in registry.list_handlers()] == [handle.id]
        with pytest.raises(ZeroDivisionError), registry.span("calc"):
            1 / 0  # noqa: B018
    assert registry.list_handlers() == []
    text = out.getvalue()
    assert "calc.start" in text and "calc.exception" in text
    assert "ZeroDivisionError" in text


def test_import_vsrtel_does_not_import_structlog_or_opentelemetry() -> None:
    code = (
        "import sys, vsrtel\n"
        "assert callable(vsrtel.debug) and 'debug' in vsrtel.__all__\n"
        "bad = [m for m in sys.modules if m.startswith(('structlog', 'opentelemetry'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


keys = st.one_of(
    st.sampled_from(
        ["self", "event", "exc_info", "method_name", "password", "apiKey", "duration", "reason"]
    ),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.frozensets(st.integers(), max_size=3),
    st.builds(huge_int, st.just(5000)),
    st.builds(Unprintable),
)


def _deep(levels: int) -> list[Any]:
    deep: list[Any] = []
    for _ in range(levels):
        deep = [deep]
    return deep


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(10**400),
    st.floats(),
    st.text(),
    st.binary(),
    st.just("x" * 20_000),
    st.builds(_deep, st.just(1_500)),
    st.just(ValueError("boom")),
    st.just(object()),
    # Values whose repr raises: ints past the str-conversion limit, broken __repr__/__str__.
    st.builds(huge_int, st.sampled_from([4300, 5000]), st.booleans()),
    st.builds(Unprintable),
    st.builds(UnprintableInt, st.integers()),
    st.builds(huge_int_error),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)
payloads = st.dictionaries(keys, values, max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(measurements=payloads | st.integers() | st.floats(), metadata=payloads, cycle=st.booleans())
def test_any_event_is_logged_and_the_handlers_stay_attached(
    measurements: Any, metadata: dict[Any, Any], cycle: bool
) -> None:
    if cycle:
        metadata["loop"] = [metadata]
        if isinstance(measurements, dict):
            measurements["loop"] = measurements
    registry = vsrtel.Registry()  # the default policy: a failing handler is detached
    json_out, debug_out = io.StringIO(), io.StringIO()
    logs.attach_logger("app", logger=_json_logger(json_out), registry=registry)
    vsrtel.debug("app", file=debug_out, registry=registry)
    attached = registry.list_handlers()

    registry.execute("app.odd", measurements, metadata)
    registry.execute("app.after", {"n": 1})

    assert registry.list_handlers() == attached
    *_, last = json_out.getvalue().splitlines()
    assert json.loads(last) == {"event": "app.after", "n": 1}
    assert "app.after" in debug_out.getvalue().splitlines()[-1]


def test_debug_shows_metadata_named_level_and_timestamp() -> None:
    out = io.StringIO()
    with vsrtel.debug("game", file=out):
        vsrtel.execute("game.player.joined", {"n": 1}, {"level": "gold", "timestamp": 1234})
    [line] = out.getvalue().splitlines()
    assert "level_=gold" in line and "timestamp_=1234" in line
    assert "[debug" in line  # the line's own level and time are still there


@pytest.fixture
def default_structlog() -> Iterator[None]:
    """structlog exactly as a new user has it: not configured at all."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_level_and_timestamp_survive_structlog_default_processors(
    default_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.attach_logger("game")
    vsrtel.execute("game.player.joined", {"n": 1}, {"level": "gold", "timestamp": 1234})
    line = capsys.readouterr().out
    assert "level_=gold" in line and "timestamp_=1234" in line


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_remote_parent_is_shown_as_its_trace_id_by_debug() -> None:
    out = io.StringIO()
    with vsrtel.debug("app", file=out):
        parent = spans.extract({"traceparent": TRACEPARENT})
        with vsrtel.span("app.request", {"trace_parent": parent}):
            pass
    start, stop = out.getvalue().splitlines()
    for line in (start, stop):
        # The whole value (not its length: the line holds a span id, which grows test by test).
        assert re.findall(r"trace_parent=(\S+)", line) == [TRACE_ID]
        assert "SpanContext" not in line


def test_every_form_of_remote_parent_is_shown_as_its_trace_id(captured: list[Any]) -> None:
    logs.attach_logger("app")
    context = spans.extract({"traceparent": TRACEPARENT})
    span_context = trace.get_current_span(context).get_span_context()
    parents = [
        context,
        span_context,
        trace.NonRecordingSpan(span_context),
        TRACEPARENT,
        spans.extract({}),  # no traceparent header came in
        "not a traceparent",
    ]
    for parent in parents:
        vsrtel.execute("app.request.start", {"n": 1}, {"trace_parent": parent})
    assert [entry["trace_parent"] for entry in captured] == [
        TRACE_ID,
        TRACE_ID,
        TRACE_ID,
        TRACE_ID,
        None,
        "not a traceparent",
    ]


def test_min_level_filters_under_structlog_default_configuration(
    default_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.attach_logger("app", level="debug", min_level="info", levels={"app.audit": "warning"})
    for _ in range(3):
        with vsrtel.span("app.request", {"path": "/x"}):  # start and stop at debug
            vsrtel.execute("app.audit.login", {"n": 1})
    with pytest.raises(KeyError), vsrtel.span("app.request", {"path": "/y"}):
        raise KeyError("gone")
    lines = capsys.readouterr().out.splitlines()
    events = [m.group(1) for m in map(re.compile(r".*\[\w+ *\] (\S+)").match, lines) if m]
    assert events == ["app.audit.login"] * 3 + ["app.request.exception"]


def test_min_level_filtered_events_build_nothing() -> None:
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise AssertionError("metadata was read for a filtered-out event")

        def __iter__(self) -> Iterator[str]:
            raise AssertionError("metadata was read for a filtered-out event")

        def __len__(self) -> int:
            return 1

    registry = vsrtel.Registry(on_error="raise")
    with capture_logs() as entries:
        logs.attach_logger("app", min_level="warning", level="info", registry=registry)
        registry.execute("app.tick", {"n": 1}, Exploding())
    assert entries == []


def test_min_level_and_the_loggers_own_level_both_apply() -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    logs.attach_logger(
        "app", logger=logger, min_level="info", levels={"app.a": "debug", "app.b": "info"}
    )
    for name in ("app.a.x", "app.b.x", "app.c.x", "app.c.failure"):
        vsrtel.execute(name, {"n": 1})
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["app.c.failure"]


def test_min_level_accepts_names_and_numbers(captured: list[Any]) -> None:
    logs.attach_logger("a", min_level="WARNING")
    logs.attach_logger("b", min_level=logging.INFO, level="info")
    vsrtel.execute("a.x", {"n": 1})
    vsrtel.execute("b.x", {"n": 1})
    assert [entry["event"] for entry in captured] == ["b.x"]
