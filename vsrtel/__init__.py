"""vsrtel: a telemetry event bus with span tracing, modelled on Erlang's ``:telemetry``.

Code emits named events with measurements and metadata (:func:`execute`) or wraps operations in
spans (:func:`span`); handlers attached at startup (:func:`attach`) receive them synchronously.
The functions here act on a process-wide default :class:`Registry`.
"""

from __future__ import annotations

from vsrtel._registry import (
    FAILURE_EVENT,
    AlreadyAttachedError,
    Clock,
    EventName,
    HandlerRecord,
    Registry,
    default_registry,
)
from vsrtel._span import Span, current_span
from vsrtel.scope import Scope

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

__all__ = [
    "FAILURE_EVENT",
    "AlreadyAttachedError",
    "Clock",
    "EventName",
    "HandlerRecord",
    "Registry",
    "Scope",
    "Span",
    "__version__",
    "attach",
    "attach_many",
    "attach_prefix",
    "current_span",
    "default_registry",
    "detach",
    "enabled",
    "execute",
    "list_handlers",
    "signal",
    "span",
]
