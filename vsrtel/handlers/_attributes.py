"""Turning metadata values into OpenTelemetry attribute values, the same way for every handler."""

from __future__ import annotations

from enum import Enum
from typing import Any

INT64 = range(-(2**63), 2**63)  # `in` only for exact ints: an int subclass scans the range
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def scalar(value: Any) -> str | bool | int | float | None:
    """Return ``value`` as an OTel scalar attribute value, or None when it has none.

    Numbers and strings stay (an int outside int64 becomes its text), an enum member becomes its
    name, a class its qualified name, anything else its ``str()``; None, or an object whose
    ``str()`` fails (an int too long to print among them), has no value.
    """
    if isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        # Compared, not `in INT64`: for an int subclass (an IntEnum) that scans 2**64 numbers.
        return value if _INT64_MIN <= value <= _INT64_MAX else text(value)
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
