"""An event's blinker signal: the storage of the handler table (see `vsrtel._handler_table`).

A module of its own so that blinker is imported when a registry first needs a signal (the first
``attach`` to an event, or ``signal()``), not by ``import vsrtel``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import blinker

__all__ = ["EventSignal"]


class EventSignal(blinker.NamedSignal):
    """An event's blinker signal. Muting it (``with signal.muted():``, or setting
    ``is_muted``) tells the registry, which re-routes the event at once: ``execute`` never has
    to ask."""

    _muted = False
    _on_change: weakref.WeakMethod[Callable[[], object]] | None = None

    def notify(self, on_change: Callable[[], object]) -> None:
        """Call the bound method ``on_change`` (held weakly) when the signal is (un)muted."""
        self._on_change = weakref.WeakMethod(on_change)

    @property
    def is_muted(self) -> bool:
        """Whether the signal is muted: then none of its receivers is called."""
        return self._muted

    @is_muted.setter
    def is_muted(self, muted: bool) -> None:
        self._muted = muted
        on_change = self._on_change() if self._on_change is not None else None
        if on_change is not None:
            on_change()
