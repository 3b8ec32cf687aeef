"""Blocking work in a served session, never on the event loop nor under the document's lock.

:func:`off_loop` runs ``work()`` in an executor from an async callback (``pn.state.execute``) and hands its
result (or its exception) to a callback that Panel runs on the document's next tick, under its lock
(:func:`next_tick`). The sentence-pair app (:mod:`~attnflows_panel.app.session`) and the decoder app
(:mod:`~attnflows_panel.app.decoder`) run their model runs this way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import panel as pn

__all__ = ["off_loop", "next_tick"]

log = logging.getLogger(__name__)


def next_tick(fn: Callable[[], Any]) -> None:
    """``fn`` on the document's next tick, under its lock (a closed session never runs it)."""
    try:
        pn.state.execute(fn, schedule=True)
    except Exception:  # noqa: BLE001 - the session is gone
        log.debug("session closed before a finished run could be shown")


def off_loop(work: Callable[[], Any], done: Callable[[Any], Any], failed: Callable[[BaseException], Any]) -> None:
    """``work()`` in an executor; then ``done(result)`` or ``failed(exception)`` on the next tick."""

    async def task() -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, work)
        except Exception as exc:  # noqa: BLE001 - a failing run is a message, not a broken session
            next_tick(functools.partial(failed, exc))
            return
        next_tick(functools.partial(done, result))

    pn.state.execute(task)
