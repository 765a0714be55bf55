"""Handing a worker thread's result to the UI thread, unless its screen is gone meanwhile.

A query can outlive its screen: the user presses Esc, or quits, while a page or a count is
still being read. Its result then has no widget to go to and is dropped, instead of raising
NoMatches from a half-closed screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.screen import Screen
from textual.worker import get_current_worker


def deliver(screen: Screen[Any], callback: Callable[..., None], *args: Any) -> None:
    """Call `callback(*args)` on the UI thread if `screen` is still shown; call from a worker."""
    if get_current_worker().is_cancelled:
        return
    screen.app.call_from_thread(_call_if_shown, screen, callback, *args)


def _call_if_shown(screen: Screen[Any], callback: Callable[..., None], *args: Any) -> None:
    if screen.app.is_running and screen.is_attached:
        callback(*args)
