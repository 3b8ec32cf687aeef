"""The page's address and the browser's Back / Forward buttons: :class:`BrowserHistory`.

Panel's ``pn.state.location`` writes every change of its ``search`` with ``history.pushState`` (one
history entry per τ step) and listens to no ``popstate``, so Back and Forward change the address bar
and not the page (panel/models/location.ts in Panel 1.9). This small ``JSComponent`` (vanilla
JavaScript, no import) does both jobs the app needs:

- :meth:`BrowserHistory.write` sets the address's query and says how: ``push=True`` adds a history
  entry (a discrete change: a sample, a freeze, a head, a mode), ``push=False`` replaces the current
  one (a continuous change: τ, the level; the first state of a page);
- Back and Forward (``popstate``) send the address's query back to Python, where the callbacks given
  to :meth:`BrowserHistory.on_pop` restore the state it names.

It draws nothing (an empty, zero-size element).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import param
from panel.custom import JSComponent

__all__ = ["BrowserHistory", "QuietWrites"]


class BrowserHistory(JSComponent):
    """Writes the page's query (push or replace) and reports Back / Forward (see the module docstring)."""

    entry = param.Dict(default={}, doc='the last write: {"search": "?query", "push": bool, "seq": int}')

    _esm = """
export function render({ model }) {
  const write = () => {
    const e = model.entry || {}
    if (typeof e.search !== "string") return
    if (e.search === window.location.search) return
    const url = window.location.pathname + e.search + window.location.hash
    if (e.push) window.history.pushState({attnflows: e.seq}, "", url)
    else window.history.replaceState({attnflows: e.seq}, "", url)
  }
  const popped = () => model.send_msg({search: window.location.search})
  window.addEventListener("popstate", popped)
  model.on("entry", write)
  model.on("remove", () => window.removeEventListener("popstate", popped))
  write()
  const el = document.createElement("span")
  el.className = "af-history"
  return el
}
"""

    def __init__(self, **params: Any) -> None:
        params.setdefault("width", 0)
        params.setdefault("height", 0)
        params.setdefault("margin", 0)
        super().__init__(**params)
        self._seq = 0
        self._pop_callbacks: list[Callable[[str], None]] = []
        self.on_msg(self._popped)

    def write(self, query: str, push: bool) -> None:
        """Show ``query`` (without its "?") in the address bar: a new history entry when ``push``,
        else in place of the current one. The same query again changes nothing."""
        search = f"?{query}" if query else ""
        if self.entry.get("search") == search:
            return
        self._seq += 1
        self.entry = {"search": search, "push": bool(push), "seq": self._seq}

    def on_pop(self, callback: Callable[[str], None]) -> None:
        """``callback(query)`` on Back or Forward, with the query the address now holds (no "?")."""
        self._pop_callbacks.append(callback)

    def _popped(self, event: Any) -> None:
        data = getattr(event, "data", event)  # on_msg hands over the DataEvent; its data is the message
        search = str(data.get("search") or "") if isinstance(data, dict) else ""
        # the address already shows it: a later write of the same state is no new entry
        self.param.update(entry={"search": search, "push": False, "seq": self._seq})
        for callback in self._pop_callbacks:
            callback(search.lstrip("?"))


class QuietWrites:
    """A mixin for an app that writes its URL on every change of its view: the changes made inside
    :meth:`_quietly` write none of their own (``_quiet > 0``); the caller writes one entry for all."""

    _quiet = 0

    @contextlib.contextmanager
    def _quietly(self):
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1
