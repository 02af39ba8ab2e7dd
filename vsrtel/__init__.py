"""vsrtel: a telemetry event bus with span tracing, modelled on Erlang's ``:telemetry``.

Code emits named events with measurements and metadata (:func:`execute`) or wraps operations in
spans (:func:`span`); handlers attached at startup (:func:`attach`) receive them synchronously.
The functions here act on a process-wide default :class:`Registry`.
"""

from __future__ import annotations

import typing as _typing

from vsrtel._handler_table import HandlerRecord
from vsrtel._names import EventName, event_name, starts_with
from vsrtel._registry import FAILURE_EVENT, AlreadyAttachedError, Handle, Registry, default_registry
from vsrtel._span import Clock, Span, current_span
from vsrtel.scope import Scope

if _typing.TYPE_CHECKING:
    from typing import TextIO

__version__ = "0.1.0"

# Bound methods of the default registry: one call, no indirection, on the hot path.
attach = default_registry.attach
attach_many = default_registry.attach_many
attach_prefix = default_registry.attach_prefix
detach = default_registry.detach
list_handlers = default_registry.list_handlers
execute = default_registry.execute
enabled = default_registry.enabled
span = default_registry.span
signal = default_registry.signal


def debug(
    prefix: str | tuple[str, ...] = (),
    *,
    file: TextIO | None = None,
    registry: Registry | None = None,
) -> Handle:
    """Print every event under ``prefix`` (``()`` = all) readably to ``file`` (default stderr).

    A one-liner while debugging: ``with vsrtel.debug("app"): ...``, or keep the returned handle
    and call ``.detach()``. Secrets are redacted and any event prints, however odd its data (see
    `vsrtel.handlers.logs`).
    """
    # Imported here so that `import vsrtel` never loads structlog or OpenTelemetry.
    from vsrtel.handlers.logs import debug as attach_debug

    return attach_debug(prefix, file=file, registry=registry)


__all__ = [
    "FAILURE_EVENT",
    "AlreadyAttachedError",
    "Clock",
    "EventName",
    "Handle",
    "HandlerRecord",
    "Registry",
    "Scope",
    "Span",
    "__version__",
    "attach",
    "attach_many",
    "attach_prefix",
    "current_span",
    "debug",
    "default_registry",
    "detach",
    "enabled",
    "event_name",
    "execute",
    "list_handlers",
    "signal",
    "span",
    "starts_with",
]
