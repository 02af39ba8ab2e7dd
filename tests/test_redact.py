"""Tests for vsrtel._redact: the one secrets rule behind logs, debug, spans and failure reports.

Most tests go through the public API: the same event is sent to the logs handler, to
``vsrtel.debug`` and to the spans handler, and the secret must appear in none of them.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

import vsrtel
from vsrtel._redact import CYCLE, DEFAULT_SECRET_KEYS, REDACTED, Secrets
from vsrtel.handlers import logs, spans

SECRETS = Secrets(DEFAULT_SECRET_KEYS)
SECRET = "hunter2"
README = Path(__file__).resolve().parent.parent / "README.md"


class Sinks:
    """One registry with the logs handler, ``debug`` and the spans handler on ``app``."""

    def __init__(self) -> None:
        self.registry = vsrtel.Registry()
        self.debug = io.StringIO()
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.entries: list[dict[str, Any]] = []

    def attach(self, **redact: Any) -> None:
        logs.attach_logger("app", registry=self.registry, **redact)
        if not redact:
            logs.debug("app", file=self.debug, registry=self.registry)
        spans.attach_tracer(
            ["app"], tracer_provider=self.provider, registry=self.registry, **redact
        )

    def send(self, measurements: dict[Any, Any], metadata: dict[Any, Any]) -> None:
        """``metadata`` on a span's start, and ``measurements`` and ``metadata`` on an event."""
        with self.registry.span("app.op", metadata):
            self.registry.execute("app.op.step", measurements, metadata)

    def outputs(self) -> dict[str, str]:
        [span] = self.exporter.get_finished_spans()
        return {
            "logs": repr(self.entries),
            "debug": self.debug.getvalue(),
            "spans": _span_text(span),
        }


def _span_text(span: ReadableSpan) -> str:
    return repr(
        (
            dict(span.attributes or {}),
            [(event.name, dict(event.attributes or {})) for event in span.events],
            span.status.description,
        )
    )


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    sinks = Sinks()
    with capture_logs() as entries:
        sinks.entries = entries
        yield sinks
    sinks.provider.shutdown()


def assert_hidden(sinks: Sinks, secret: str = SECRET) -> None:
    for sink, text in sinks.outputs().items():
        assert secret not in text, f"{secret!r} reached {sink}: {text}"
        assert REDACTED in text, f"nothing redacted in {sink}: {text}"


# The key rule


ISSUE_KEYS = [
    "password_confirmation",
    "password_hash",
    "passwords",
    "secrets",
    "session_id",
    "sessionid",
    "auth",
    "jwt",
    "secret_key_base",
    "client_key",
    "signing_key",
    "dsn",
    "database_url",
    "connection_string",
    "credit_card",
    "cvv",
]


@pytest.mark.parametrize("key", ISSUE_KEYS)
def test_what_users_name_secrets_is_redacted_everywhere(sinks: Sinks, key: str) -> None:
    sinks.attach()
    sinks.send({"n": 1}, {"user": "bob", key: SECRET})
    assert_hidden(sinks)


@pytest.mark.parametrize(
    "key",
    [
        "PASSWORD",
        "Authorization",
        "X-Api-Key",
        "apiKey",
        "accessToken",
        "authToken",
        "AWS_SECRET_ACCESS_KEY",
        "aws_access_key_id",
        "privateKey",
        "credentials",
        "pwd",
        "passphrase",
        "bearer",
        "Set-Cookie",
        "JSESSIONID",
        "OAuth",
        "card_number",
        "CreditCardNumber",
        b"password",
        b"X-Api-Key",
    ],
)
def test_secret_spellings(key: str | bytes) -> None:
    assert SECRETS.is_secret(key)


@pytest.mark.parametrize(
    "key", ["user", "node_id", "route", "accept", "keys", "key", "pass", "cursor", 7, None, ("a",)]
)
def test_not_secret(key: object) -> None:
    assert not SECRETS.is_secret(key)


stems = st.sampled_from(sorted(DEFAULT_SECRET_KEYS))
affixes = st.text(alphabet="abcXYZ019_-. ", max_size=6)


@settings(max_examples=300, deadline=None)
@given(stem=stems, before=affixes, after=affixes, separators=st.lists(st.sampled_from("_-. ")))
def test_a_key_containing_a_name_in_any_case_and_spelling_is_secret(
    stem: str, before: str, after: str, separators: list[str]
) -> None:
    spelled = list(stem.upper() if len(before) % 2 else stem)
    for index, separator in enumerate(separators):
        spelled.insert(1 + index % len(stem), separator)
    assert SECRETS.is_secret(before + "".join(spelled) + after)


def test_the_readme_states_the_rule_its_names_and_its_false_positives() -> None:
    readme = README.read_text()
    [rule] = re.findall(r"^- \*\*Secrets\*\*.*?(?=^- |^$)", readme, flags=re.M | re.S)
    rule = " ".join(rule.split())
    names = rule.split("it contains one of ")[1].split("(read the same way)")[0]
    assert set(re.findall(r"`(\w+)`", names)) == DEFAULT_SECRET_KEYS
    examples = rule.split("(read the same way). So ")[1].split("A secret key's value")[0]
    listed = re.findall(r'`b?"?([\w-]+)"?`', examples)
    assert "author" in listed and "tokens_used" in listed
    assert all(SECRETS.is_secret(key) for key in listed), listed


# Values


@pytest.mark.parametrize(
    "value",
    [
        f"https://bob:{SECRET}@db.internal:5432/x",
        f"postgres://:{SECRET}@db/x",
        f"redis connection to rediss://default:{SECRET}@cache:6380 failed",
        f"/cb?code=1&access_token={SECRET}&page=2",
        f"https://api.example.com/v1?api_key={SECRET}",
        f"Authorization: Bearer {SECRET}",
        f"Bearer {SECRET}",
        f"authorization: Basic {SECRET}",
        f"host=db user=app password={SECRET} sslmode=require",
        f'{{"user": "bob", "password": "{SECRET}"}}',
        f"{{'user': 'bob', 'token': '{SECRET}'}}",
        f"login(user='bob', password='{SECRET} two words')",
        f"[(b'host', b'x'), (b'x-api-key', b'{SECRET}')]",
    ],
)
def test_credentials_in_text_values_are_scrubbed_everywhere(sinks: Sinks, value: str) -> None:
    sinks.attach()
    sinks.send({"n": 1}, {"detail": value})
    assert_hidden(sinks)


def test_what_text_scrubbing_leaves(sinks: Sinks) -> None:
    sinks.attach()
    sinks.send({"n": 1}, {"url": f"https://bob:{SECRET}@db/x?page=2&token=t1 at 12:30"})
    [entry, *_] = sinks.entries
    assert entry["url"] == f"https://{REDACTED}@db/x?page=2&token={REDACTED} at 12:30"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("plain text: 12:30 ok=1", None),
        ("http://host:8080/path?q=1", None),
        ("missing fields: 'password', 'email'", None),
        ("password=[REDACTED] x", None),
        ("url=https://u:p@h/x", f"url=https://{REDACTED}@h/x"),
        ("filter=password=abc&x=1", f"filter=password={REDACTED}&x=1"),
        ("Cookie: sessionid=abc; theme=dark", f"Cookie: {REDACTED}; theme=dark"),
        ("password=a,b;c, x=1", f"password={REDACTED}, x=1"),
        ('{"token": 42, "n": 1}', f'{{"token": {REDACTED}, "n": 1}}'),
        ("('password', 'x')", f"('password', '{REDACTED}')"),
        (b"x-api-key: abc", b"x-api-key: " + REDACTED.encode()),
        ("password: hunter 2", f"password: {REDACTED} 2"),  # a documented limit
    ],
)
def test_scrub_examples(text: Any, scrubbed: Any) -> None:
    result = SECRETS.scrub(text)
    if scrubbed is None:
        assert result is text
    else:
        assert result == scrubbed


token_chars = st.text(alphabet="abcdefXYZ0123456789._~+/-", min_size=4, max_size=24)
free_text = st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    key=st.builds(
        lambda s, a, b: a + s + b,
        stems,
        st.sampled_from(["", "x_", "db."]),
        st.sampled_from(["", "_id", "s", "-Value"]),
    ),
    secret=token_chars.map(lambda t: "S3cr" + t),
    shape=st.sampled_from(
        [
            "{k}={v}",
            "{k}: {v}",
            "{k} = {v}",
            "'{k}': '{v}'",
            '"{k}": "{v}"',
            "{k}='{v}'",
            "?{k}={v}&next=1",
            "(b'{k}', b'{v}')",
            "{k}: Bearer {v}",
            "Bearer {v}",
        ]
    ),
    before=free_text,
    after=free_text,
)
def test_any_secret_pair_in_any_text_is_scrubbed(
    key: str, secret: str, shape: str, before: str, after: str
) -> None:
    text = f"{before} {shape.format(k=key, v=secret)} {after}"
    assert secret not in SECRETS.scrub(text)


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["https", "postgresql+psycopg", "redis", "amqp", "s3"]),
    user=st.text(alphabet="abc.-_%09", max_size=8),
    secret=st.text(alphabet="abcXYZ09!$&'()*+,;=:@%-._~", min_size=1, max_size=16).map(
        lambda t: "S3cr" + t
    ),
    rest=st.sampled_from(["", "/", "/db?x=1", ":5432/db", "#frag"]),
    before=free_text,
    after=free_text,
)
def test_any_url_userinfo_is_scrubbed(
    scheme: str, user: str, secret: str, rest: str, before: str, after: str
) -> None:
    text = f"{before} {scheme}://{user}:{secret}@host{rest} {after}"
    assert secret not in SECRETS.scrub(text)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(), st.binary()))
def test_scrubbing_is_idempotent_and_text_without_a_hint_is_returned_as_is(
    text: str | bytes,
) -> None:
    once = SECRETS.scrub(text)
    assert SECRETS.scrub(once) == once
    hints = [":", "=", "(", "earer", "EARER"]
    if isinstance(text, str) and not any(hint in text for hint in hints):
        assert once is text


# Containers


class Creds(NamedTuple):
    user: str
    password: str


@dataclasses.dataclass
class Login:
    user: str
    password: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenLogin:
    user: str
    api_key: str


@pytest.mark.parametrize(
    "value",
    [
        [(b"host", b"x"), (b"authorization", SECRET.encode())],
        [("x-api-key", SECRET)],
        [["cookie", SECRET]],
        deque([{"password": SECRET}], maxlen=5),
        {("token", SECRET), ("n", "1")},
        frozenset({("token", SECRET)}),
        Creds("bob", SECRET),
        Login("bob", SECRET),
        Login("bob", "x", {"nested": [{"jwt": SECRET}]}),
        FrozenLogin("bob", SECRET),
        {"deep": (deque([Creds("bob", SECRET)]),)},
    ],
    ids=lambda value: type(value).__name__,
)
def test_containers_are_walked_everywhere(sinks: Sinks, value: Any) -> None:
    sinks.attach()
    before = copy.deepcopy(value)
    sinks.send({"n": 1}, {"user": "bob", "payload": value})
    assert_hidden(sinks)
    assert value == before


def test_containers_keep_their_type() -> None:
    login = FrozenLogin("bob", SECRET)
    redacted = SECRETS.redact(
        {
            "q": deque([{"pwd": 1}], maxlen=3),
            "s": frozenset({("token", 1)}),
            "c": Creds("bob", SECRET),
            "d": login,
            "pair": ["cookie", "c"],
        }
    )
    assert redacted["q"] == deque([{"pwd": REDACTED}]) and redacted["q"].maxlen == 3
    assert redacted["s"] == frozenset({("token", REDACTED)})
    assert redacted["c"] == Creds("bob", REDACTED)
    assert redacted["d"] == FrozenLogin("bob", REDACTED) and login.api_key == SECRET
    assert redacted["pair"] == ["cookie", REDACTED]


def test_the_callers_data_is_never_modified() -> None:
    data: dict[str, Any] = {
        "users": [{"password": "p"}],
        "meta": {"token": "t"},
        "url": "https://u:p@h",
        "n": 1,
    }
    before = copy.deepcopy(data)
    redacted = SECRETS.redact(data)
    assert data == before
    assert redacted["users"] is not data["users"]


def test_nothing_secret_comes_back_as_is() -> None:
    flat = {"node_id": 1, "role": "primary", "at": "12:30"}
    nested = {"request": {"headers": [{"accept": "*/*"}], "q": deque([1])}, "n": 2.5}
    assert SECRETS.redact(flat) is flat
    assert SECRETS.redact(nested) is nested


def test_what_did_not_change_is_shared() -> None:
    clean = {"a": [1, 2]}
    data = {"clean": clean, "password": "p"}
    assert SECRETS.redact(data)["clean"] is clean


def test_cycles_are_cut() -> None:
    data: dict[str, Any] = {"password": "p", "items": [], "q": deque()}
    data["self"] = data
    data["items"].append(data["items"])
    data["q"].append(data["q"])
    redacted = SECRETS.redact(data)
    assert redacted == {"password": REDACTED, "items": [CYCLE], "q": deque([CYCLE]), "self": CYCLE}


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


nested_values = st.recursive(
    st.one_of(st.integers(), st.text(max_size=10), st.just({"password": SECRET})),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(deque),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.builds(Login, st.text(max_size=5), st.text(max_size=5)),
        st.builds(lambda user: Creds(user, SECRET), st.text(max_size=5)),
        st.builds(lambda key: (key, SECRET), st.sampled_from(["token", b"cookie", "X-Auth"])),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.text(max_size=6), nested_values, max_size=4))
def test_no_secret_survives_any_nesting_and_the_input_is_unchanged(data: dict[str, Any]) -> None:
    before = copy.deepcopy(data)
    redacted = SECRETS.redact(data)
    assert SECRET not in repr(redacted)
    assert data == before


# Exceptions and failure reports


def test_exception_messages_and_tracebacks_are_scrubbed_everywhere(sinks: Sinks) -> None:
    sinks.attach()
    with pytest.raises(ValueError), sinks.registry.span("app.op", {"user": "bob"}):
        try:
            raise KeyError({"password": SECRET})
        except KeyError as inner:
            raise ValueError(
                f"login failed: password={SECRET} at https://bob:{SECRET}@db"
            ) from inner
    [span] = sinks.exporter.get_finished_spans()
    [event] = span.events
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == (
        f"login failed: password={REDACTED} at https://{REDACTED}@db"
    )
    assert "raise ValueError(" in str(attributes["exception.stacktrace"])  # source lines stay
    assert span.status.description == attributes["exception.message"]
    [_, entry] = sinks.entries
    assert "Traceback" in entry["exception"] and "exc_info" not in entry
    assert "The above exception was the direct cause" in entry["exception"]
    for sink, text in sinks.outputs().items():
        assert SECRET not in text, f"{SECRET!r} reached {sink}: {text}"


def test_an_exception_type_named_like_a_secret_keeps_its_message(sinks: Sinks) -> None:
    class AuthError(Exception):
        pass

    sinks.attach()
    with pytest.raises(AuthError), sinks.registry.span("app.op"):
        raise AuthError("bad user bob")
    [_, entry] = sinks.entries
    assert entry["exception"].endswith("AuthError: bad user bob")


def test_the_registrys_report_of_a_failing_handler_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = vsrtel.Registry()

    def broken(*_: Any) -> None:
        raise RuntimeError(f"cannot connect to postgres://app:{SECRET}@db (token={SECRET})")

    registry.attach("broken", "app.x", broken)

    def lazy() -> dict[str, Any]:
        raise RuntimeError(f"Authorization: Bearer {SECRET}")

    with caplog.at_level(logging.ERROR, "vsrtel"):
        registry.execute("app.x", {"n": 1})
        registry.attach("other", "app.y", lambda *_: None)
        registry.execute("app.y", lazy)
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert SECRET not in caplog.text
    assert "RuntimeError: cannot connect to postgres://[REDACTED]@db (token=[REDACTED])" in (
        caplog.text
    )
    assert "Authorization: [REDACTED]" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


def test_the_spans_handlers_report_of_a_skipped_span_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def span_name(prefix: Any, metadata: Any) -> str:
        raise ValueError(f"no name for {dict(metadata)}")

    provider = TracerProvider(shutdown_on_exit=False)
    spans.attach_tracer(["app"], tracer_provider=provider, span_name=span_name)
    with caplog.at_level(logging.WARNING, "vsrtel"), vsrtel.span("app.op", {"password": SECRET}):
        pass
    assert "skipped event app.op.start" in caplog.text
    assert SECRET not in caplog.text and "'password': '[REDACTED]'" in caplog.text


# The redact= setting


def test_custom_names_replace_the_key_rule_in_keys_and_text(sinks: Sinks) -> None:
    sinks.attach(redact={"ssn"})
    sinks.send({"n": 1}, {"customer_ssn": "1", "password": "p", "note": "ssn=123 password=p2"})
    entry = sinks.entries[0]
    assert entry["customer_ssn"] == REDACTED and entry["password"] == "p"
    assert entry["note"] == f"ssn={REDACTED} password=p2"


def test_url_userinfo_and_bearer_are_scrubbed_whatever_the_names(sinks: Sinks) -> None:
    sinks.attach(redact={"ssn"})
    sinks.send({"n": 1}, {"db": f"https://u:{SECRET}@h", "h": f"Bearer {SECRET}"})
    assert SECRET not in repr(sinks.entries) and SECRET not in sinks.outputs()["spans"]


def test_removing_a_name_keeps_its_false_positives(sinks: Sinks) -> None:
    sinks.attach(redact=logs.DEFAULT_SECRET_KEYS - {"token"})
    sinks.send({"tokens_used": 12}, {"password": "p"})
    step = sinks.entries[1]
    assert step["tokens_used"] == 12 and step["password"] == REDACTED


def test_an_empty_list_turns_every_redaction_off(sinks: Sinks) -> None:
    sinks.attach(redact=())
    value = {"password": "p", "url": f"https://u:{SECRET}@h", "h": f"Bearer {SECRET}"}
    sinks.send({"n": 1}, value)
    entry = sinks.entries[0]
    assert {key: entry[key] for key in value} == value
    error = ValueError(f"password={SECRET}")
    with pytest.raises(ValueError), sinks.registry.span("app.fail"):
        raise error
    assert sinks.entries[-1]["exc_info"] is error


@pytest.mark.parametrize(
    ("names", "error", "match"),
    [("password", TypeError, "password"), (["ok", 3], TypeError, "3"), (["-"], ValueError, "-")],
)
def test_bad_names_raise_naming_the_value(names: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Secrets(names)


def test_the_verdict_cache_follows_the_one_cache_policy() -> None:
    from vsrtel._names import CACHE_LIMIT

    secrets = Secrets(["password"])
    for i in range(CACHE_LIMIT + 10):
        assert secrets.is_secret(f"field_{i}") is False
    assert secrets.is_secret("db_password") is True
    assert len(secrets._verdicts) <= CACHE_LIMIT
