"""The read-only view of an event's payload: the compiled helper where built, else pure Python.

The one place that chooses. ``view(mapping)`` is ``vsrtel._speedups.view`` (C, optional, see
setup.py) when it was built and the environment variable ``VSRTEL_PURE_PYTHON`` is unset, empty
or ``"0"`` when vsrtel is imported; otherwise it is ``types.MappingProxyType`` itself, so the
pure-Python path costs what it always did. Both return the same object, a ``mappingproxy`` of
the caller's mapping, and raise the same ``TypeError`` for anything that is not a mapping; the C
version skips ``type.__call__``'s argument parsing, about half the cost of a view.

``COMPILED`` says which one was chosen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["COMPILED", "view"]

view: Callable[[Mapping[str, Any]], MappingProxyType[str, Any]] = MappingProxyType
COMPILED = False

if os.environ.get("VSRTEL_PURE_PYTHON", "") in ("", "0"):
    try:
        import vsrtel._speedups as _speedups  # a leaf: it imports nothing of vsrtel
    except ImportError:  # not built: no compiler at install, another interpreter, a source tree
        pass
    else:
        view, COMPILED = _speedups.view, True
