"""Tests for vsrtel._redact: the one secret-key rule behind logs, debug and spans."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import vsrtel
from vsrtel._redact import CYCLE, DEFAULT_SECRET_KEYS, REDACTED, Secrets
from vsrtel.handlers import spans

SECRETS = Secrets(DEFAULT_SECRET_KEYS)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "Authorization",
        "X-Api-Key",
        "api_key",
        "apiKey",
        "apikey",
        "API_KEY",
        "accessToken",
        "access_token",
        "authToken",
        "authtoken",
        "card_token",
        "secret_key",
        "SECRET_KEY",
        "aws_secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        "client_secret",
        "private_key",
        "privateKey",
        "credentials",
        "pwd",
        "passphrase",
        "bearer",
        "Set-Cookie",
        b"password",
        b"X-Api-Key",
    ],
)
def test_secret_spellings(key: str | bytes) -> None:
    assert SECRETS.is_secret(key)


@pytest.mark.parametrize(
    "key",
    ["user", "tokens_used", "token_count", "max_tokens", "api_key_id", "accept", "keys", 7, None],
)
def test_not_secret(key: object) -> None:
    assert not SECRETS.is_secret(key)


def test_dicts_inside_lists_and_tuples_are_redacted() -> None:
    data = {
        "users": [{"name": "ann", "password": "p1"}, {"name": "bob", "password": "p2"}],
        "pairs": ({"token": "t"}, 3),
        "deep": {"a": [[{"b": {"apiKey": "k"}}]]},
    }
    assert SECRETS.redact(data) == {
        "users": [{"name": "ann", "password": REDACTED}, {"name": "bob", "password": REDACTED}],
        "pairs": ({"token": REDACTED}, 3),
        "deep": {"a": [[{"b": {"apiKey": REDACTED}}]]},
    }


def test_a_secret_container_is_replaced_whole() -> None:
    assert SECRETS.redact({"credentials": {"user": "ann", "key": "k"}}) == {
        "credentials": REDACTED
    }


def test_the_callers_data_is_never_modified() -> None:
    data: dict[str, Any] = {"users": [{"password": "p"}], "meta": {"token": "t"}, "n": 1}
    before = copy.deepcopy(data)
    redacted = SECRETS.redact(data)
    assert data == before
    assert redacted["users"] is not data["users"]


def test_nothing_secret_comes_back_as_is() -> None:
    flat = {"node_id": 1, "role": "primary"}
    nested = {"request": {"headers": [{"accept": "*/*"}]}, "n": 2.5}
    assert SECRETS.redact(flat) is flat
    assert SECRETS.redact(nested) is nested


def test_what_did_not_change_is_shared() -> None:
    clean = {"a": [1, 2]}
    data = {"clean": clean, "password": "p"}
    assert SECRETS.redact(data)["clean"] is clean


def test_cycles_are_cut() -> None:
    data: dict[str, Any] = {"password": "p", "items": []}
    data["self"] = data
    data["items"].append(data["items"])
    redacted = SECRETS.redact(data)
    assert redacted == {"password": REDACTED, "items": [CYCLE], "self": CYCLE}


def test_shared_references_are_not_cycles() -> None:
    shared = {"token": "t"}
    redacted = SECRETS.redact({"a": shared, "b": [shared, shared]})
    assert redacted == {
        "a": {"token": REDACTED},
        "b": [{"token": REDACTED}, {"token": REDACTED}],
    }


def test_nesting_too_deep_to_check_is_replaced() -> None:
    deep: list[Any] = []
    data = {"deep": deep}
    for _ in range(5_000):
        deep.append([])
        deep = deep[0]
    redacted = SECRETS.redact(data)
    inner = redacted["deep"]
    depth = 1
    while inner != REDACTED:
        inner = inner[0]
        depth += 1
    assert 10 < depth < 5_000


def test_custom_names_replace_the_default_and_extend_it_with_union() -> None:
    only_ssn = Secrets({"ssn"})
    assert only_ssn.is_secret("customer_ssn") and not only_ssn.is_secret("password")
    both = Secrets(DEFAULT_SECRET_KEYS | {"ssn"})
    assert both.is_secret("SSN") and both.is_secret("password")
    assert not Secrets(()).is_secret("password")


@pytest.mark.parametrize(
    ("names", "error", "match"),
    [("password", TypeError, "password"), (["ok", 3], TypeError, "3"), (["-"], ValueError, "-")],
)
def test_bad_names_raise_naming_the_value(names: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Secrets(names)


def test_spans_redact_inside_lists_and_measurements() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans.attach_tracer(["app.login"], tracer_provider=provider)
    with vsrtel.span("app.login", {"users": [{"name": "ann", "password": "hunter2"}]}):
        vsrtel.execute("app.login.check", {"n": 1, "accessToken": 5}, {"apiKey": "k"})
    [span] = exporter.get_finished_spans()
    assert "hunter2" not in str(span.attributes)
    assert "[REDACTED]" in str(dict(span.attributes or {})["users"])
    assert dict(span.events[0].attributes or {}) == {
        "n": 1,
        "accessToken": "[REDACTED]",
        "apiKey": "[REDACTED]",
    }


def test_the_readme_states_the_rule_with_the_default_names() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [rule] = re.findall(r"^- \*\*Secrets\*\*.*?(?=^- |^$)", readme, flags=re.M | re.S)
    listed = " ".join(rule.split()).split("ends with one of ")[1].split("(read")[0]
    assert set(re.findall(r"`(\w+)`", listed)) == DEFAULT_SECRET_KEYS
