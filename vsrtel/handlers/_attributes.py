"""Turning metadata values into OpenTelemetry attribute values, the same way for every handler."""

from __future__ import annotations

from enum import Enum
from typing import Any

INT64 = range(-(2**63), 2**63)


def scalar(value: Any) -> str | bool | int | float | None:
    """Return ``value`` as an OTel scalar attribute value, or None when it has none.

    Numbers and strings stay (an int outside int64 becomes its text), an enum member becomes its
    name, a class its qualified name, anything else its ``str()``; None, or an object whose
    ``str()`` fails, has no value.
    """
    if isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        return value if value in INT64 else str(value)
    if value is None:
        return None
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, type):
        return value.__qualname__
    return text(value)


def text(value: Any) -> str | None:
    """Return ``str(value)``, or None when its ``__str__`` raises."""
    try:
        return str(value)
    except Exception:
        return None
