"""One user's session: :class:`AttnFlowsApp`, a ``pn.viewable.Viewer`` (see README.md, "The app").

It composes

- the **Sentence view**, the radial **Attention Flow view** and the **Sentence Context view** of one
  :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView`, which owns the view state (τ,
  mode, level, frozen selection, head restriction): the sidebar's controls are that view's own
  (``view.parts().controls``, made from its parameters), so the app keeps no copy of them;
- the **corpus browser** (:class:`~attnflows_panel.views.corpus_browser.CorpusBrowser`) and the
  **head panel** (:class:`~attnflows_panel.views.head_panel.HeadPanel`), which own their query state
  (space, head mask, filters, measure) the same way;
- a sidebar with the model pair in use, those controls, a form for a typed sentence pair, and help
  (the page itself: :mod:`attnflows_panel.app.page`).

**One owner for the current sample.** The app owns *which pair is shown*: ``sample_id`` (a corpus
sample) or ``sentence_a``/``sentence_b`` (a typed pair), and ``result``, the models' output on it.
Nothing else holds a copy: the flow view's ``result``, the browser's current sample and the head
panel's current sample are Panel references to these parameters (``self.param.result``,
``pn.bind``), so they follow by themselves. A pick in the browser or the head panel is a request
(``on_pick`` / ``on_open`` → :meth:`AttnFlowsApp.show_sample`), not a second owner. A sample id is
looked up in the index once (:meth:`_lookup`).

**Shared and per-session state.** Models, indexes and recent model outputs live in a
:class:`~attnflows_panel.registry.Registry` (one per process): loaded once, read-only afterwards,
shared by every session. Everything a user changes lives in the session's own objects.

**Scheduling.** A model run (a corpus sample, a typed pair, another model pair, the first view when
the models are still loading) is an async callback (``pn.state.execute``) that awaits the run in an
executor (``run_in_executor``): it never holds the document's lock nor the event loop. Its result is
shown by a callback that Panel schedules on the document's next tick, under the lock
(``pn.state.execute(..., schedule=True)``); a later run supersedes an earlier one that finishes after
it. The views schedule their own redraws.

**Errors are shown.** An exception in any callback of the session (Panel's, through the session's
``pn.config.exception_handler``, and the views' Bokeh callbacks) is logged and shown to that user in
the message bar; the session keeps working. Bad input (empty or over-long sentences, markup in a
sentence, a bad URL value, an unknown sample id, a failing model folder) gives a visible message.

**Shareable state and history.** The page's URL holds the state (:mod:`attnflows_panel.app.url_state`),
written by :class:`~attnflows_panel.app.history.BrowserHistory`: a discrete change (a sample, a typed
pair, a freeze, a head, a mode) adds a history entry, a continuous one (τ, the level) replaces the
current entry. Back and Forward restore the state their address names (:meth:`AttnFlowsApp.restore`).

Stable hooks for browser tests (CSS classes of the panes and inputs): ``af-message`` (notices),
``af-sample`` / ``af-sample-id`` / ``af-text-a`` / ``af-text-b`` (the sample card), ``af-pair`` (the
model pair), ``af-input-a`` / ``af-input-b`` / ``af-run`` / ``af-form-note`` (the typed-pair form),
``af-flow-view`` / ``af-sentence-view`` / ``af-context-view`` (the views), ``af-browser`` (the corpus
browser), ``af-head-panel`` (the slot for the head panel), ``af-busy`` (the busy note); the view's
controls carry the ``name=`` values listed in ``AttentionFlowsView``'s docstring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

import panel as pn
import param

from attnflows_panel.app.cards import esc, pair_html, sample_html, weights_html
from attnflows_panel.app.config import EXAMPLE_PAIR, AppConfig, model_task
from attnflows_panel.app.history import BrowserHistory, QuietWrites
from attnflows_panel.app.page import APP_FLOW_HEIGHT, SessionPage, fill, typed
from attnflows_panel.app.scheduling import next_tick, off_loop
from attnflows_panel.app.url_state import UrlState
from attnflows_panel.registry import Registry, shared_registry
from attnflows_panel.views.attention_flows import AttentionFlowsView, check_result
from attnflows_panel.views.notebook_hold import in_session
from attnflows_panel.weights import WEIGHT_KINDS

__all__ = ["AttnFlowsApp", "APP_FLOW_HEIGHT"]

log = logging.getLogger(__name__)

_VIEW_STATE = ("tau", "mode", "level", "selection", "head", "head_model")
#: view changes that replace the current history entry (a slider's drag); every other one adds an entry
_CONTINUOUS = frozenset({"tau", "level"})


def _weak_handler(app: AttnFlowsApp) -> Callable[[BaseException], None]:
    """``app.report_error``, holding the app weakly (after the session is gone: only logged)."""
    ref = weakref.WeakMethod(app.report_error)

    def handler(exc: BaseException) -> None:
        report = ref()
        if report is None:
            log.error("a callback of a closed session failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        else:
            report(exc)

    return handler


def _view_property(name: str) -> property:
    def get(self):
        return getattr(self.view, name)

    def set_(self, value):
        setattr(self.view, name, value)

    return property(get, set_, doc=f"The view's ``{name}`` (the view owns it; this is an alias).")


# what the browser and the head panel read of the current sample (Panel references, see pn.bind)
def _id_or_none(sample_id: str) -> str | None:
    return sample_id or None


def _sentences(result: Any) -> tuple[str, str] | None:
    return None if result is None else (result.sentence_a, result.sentence_b)


def _result_ids(results: Any) -> list[str]:
    return [] if results is None or "id" not in results else [str(x) for x in results["id"]]


@dataclasses.dataclass
class Shown:
    """What the app shows: a model run's ``result`` on a corpus sample (``sample_id``, its metadata
    ``row`` and ``task``) or on a typed pair (``a``, ``b``)."""

    result: Any
    sample_id: str = ""
    row: dict | None = None
    task: str | None = None
    a: str = ""
    b: str = ""

    def sentences(self) -> tuple[str, str]:
        """The pair the models run on."""
        return (self.row["sentence_a"], self.row["sentence_b"]) if self.row is not None else (self.a, self.b)


class AttnFlowsApp(SessionPage, QuietWrites, pn.viewable.Viewer):
    """One user's session: the Attention Flows views of one sentence pair plus the corpus browser.

    Parameters
    ----------
    config:
        :class:`~attnflows_panel.app.config.AppConfig` (models, index, initial τ, whether model paths
        may be typed).
    registry:
        Where models, indexes and results are shared (default: ``shared_registry()``).
    pair, index:
        An already loaded ``ModelPair`` / ``SignatureIndex`` (notebooks, tests); they take precedence
        over ``config``. ``index=False`` means no corpus browser.
    query:
        A URL query string to restore (default: the session's URL when served).
    sync_url:
        Write the state back into the browser's URL and follow Back / Forward (default: when served).

    The view state (``tau``, ``mode``, ``level``, ``selection``, ``head``, ``head_model``) is the
    parameters of :attr:`view`; the app's attributes of those names are aliases of them.
    """

    sample_id = param.String(default="", doc="id of the corpus sample shown ('' when a typed pair is shown)")
    sentence_a = param.String(default="", doc="sentence A of a typed pair ('' when a corpus sample is shown)")
    sentence_b = param.String(default="", doc="sentence B of a typed pair")
    result = param.Parameter(default=None, doc="the PairResult shown (read-only)")
    message = param.String(default="", doc="the last notice or error shown to the user (plain text)")
    busy = param.Boolean(default=False, doc="True while models load or run")
    weights = param.Selector(default="raw", objects=list(WEIGHT_KINDS), doc=(
        "The edge weights the views follow (attnflows_panel.weights): raw attention, norm-weighted "
        "(‖α f(x)‖) or attention attribution (attattr; a model without a classification head gets norm). "
        "Set it with set_weights(), which runs the models again."))

    tau = _view_property("tau")
    mode = _view_property("mode")
    level = _view_property("level")
    selection = _view_property("selection")
    head = _view_property("head")
    head_model = _view_property("head_model")

    def __init__(
        self,
        config: AppConfig | None = None,
        *,
        registry: Registry | None = None,
        pair: Any = None,
        index: Any = None,
        query: str | None = None,
        sync_url: bool | None = None,
        **params: Any,
    ) -> None:
        self.config = config or AppConfig()
        view_state = {k: params.pop(k) for k in _VIEW_STATE if k in params}
        super().__init__(**params)
        self.registry = registry or shared_registry()
        self.pair = pair
        self.index = None if index is False else index
        self._want_index = index is not False
        self.browser = None  # CorpusBrowser, once an index is open
        self.head_panel = None  # HeadPanel, once an index with head change is open
        self.task: str | None = None  # the fine-tuned model's task, when known
        self._sample_row: dict | None = None
        self._run_seq = 0  # the latest model run: an older one that finishes later is dropped
        self._running: str | None = None  # the sample id the latest run is for, while it runs
        self._quiet = 0  # > 0 while the app changes several things at once (one history entry for all)
        self._served = in_session()
        sync = self._served if sync_url is None else bool(sync_url)
        if query is None and self._served and pn.state.location is not None:
            query = pn.state.location.search or ""
        #: writes the address bar and reports Back / Forward (None: the URL is not kept in step)
        self.history = BrowserHistory() if sync else None
        if self.history is not None:
            self.history.on_pop(self.restore)
        view_state.setdefault("tau", self.config.tau)
        self.view = AttentionFlowsView(cache=self.registry.shared, flow_height=APP_FLOW_HEIGHT, **view_state)
        # the view reads the app's result (a reference, the view's result allows one): no copy to keep in step
        self.view.result = self.param.result
        self._weights_quiet = False  # True while _choose_weights sets the selector (nothing runs)
        self._build_widgets()
        self._page()
        self.view.param.watch(self._on_view_state, list(_VIEW_STATE))
        self.view.param.watch(self._on_view_status, ["status", "result"])
        self.param.watch(self._on_busy, ["busy"])
        if self._served:
            # this session's handler (pn.config is per session when set inside one). It holds the app
            # weakly: the per-session config is a WeakKeyDictionary keyed by the document, and a value
            # that refers back to the document would keep a closed session alive
            pn.config.exception_handler = _weak_handler(self)
        self._notices: list[str] = []
        url_state, errors = UrlState.parse(query or "")
        self._notices.extend(errors)
        # the first view is built right here when nothing has to load or run (the models and their output
        # on the first pair are in the registry), or without a server (a notebook, a test); else the page
        # comes at once with a busy note, and the models load and run in an executor
        first = self._first_target(url_state) if self._resources_ready() else None
        if url_state.weights is not None:
            self._choose_weights(url_state.weights)
        if not self._served or (first is not None and self.registry.cached_result(self.pair, *first.sentences(),
                                                                                  weights=self.weights)):
            self._start(url_state, first)
            # the first view is drawn now, while the session's document is being built, so that it is
            # part of the first document a browser pulls (not a redraw on the next tick, sent as patches)
            self.view.draw_now()
        else:
            self._set_busy(True, "Loading the model pair and the index …" if first is None
                           else "Running both models on the linked pair …")
            pn.state.onload(functools.partial(self._start_async, url_state, first))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, **kwargs: Any) -> AttnFlowsApp:
        """An app configured by ``ATTNFLOWS_*`` environment variables (see ``AppConfig.from_env``)."""
        return cls(AppConfig.from_env(), **kwargs)

    # ------------------------------------------------------------------ loading and the first view

    def _resources_ready(self) -> bool:
        """Whether the pair (and index) are loaded already, so that the first view can be built now."""
        if self.pair is None:
            pre, fine = self.config.model_refs()
            self.pair = self.registry.cached_pair(pre, fine, device=self.config.device)
            if self.pair is None:
                return False
        if self.index is None and self._want_index and self.config.index:
            self.index = self.registry.cached_index(self.config.index, pair=self.pair)
            if self.index is None:
                return False
        self.task = model_task(self.pair, self.config.index if self.index is not None else None)
        return True

    def _load_resources(self) -> None:
        """Load the pair and open the index through the registry (blocking; run in a thread when served).
        Does nothing when they are loaded."""
        if self.pair is None:
            pre, fine = self.config.model_refs()
            self.pair = self.registry.pair(pre, fine, device=self.config.device)
        if self.index is None and self._want_index and self.config.index:
            try:
                self.index = self.registry.index(self.config.index, pair=self.pair)
            except (OSError, ValueError) as exc:
                self._notices.append(f"The corpus browser is off: {exc}")
                self._want_index = False
        self.task = model_task(self.pair, self.config.index if self.index is not None else None)

    def _prepare(self, url: UrlState, first: Shown | None = None) -> Shown | None:
        """Load what is missing and run the models on the first pair (``first``, else the link's; blocking:
        an executor when served). None when the models could not be run on it (a notice says why)."""
        self._load_resources()
        try:
            first = first or self._first_target(url)
            first.result = self._model_run(*first.sentences())
            return first
        except Exception as exc:  # noqa: BLE001 - the page stays usable: the form, the browser
            log.exception("building the first view failed")
            self._notices.append(f"Could not show the first sample: {exc}")
            return None

    def _first_target(self, url: UrlState) -> Shown:
        """What the first view shows (no model run yet): the link's typed pair or sample, else the first
        sample of the model's task. A bad value of the link is a notice."""
        if url.a is not None or url.b is not None:
            a, b, notes = self._clean_pair(url.a or "", url.b or "")
            self._notices.extend(f"Link: {n}" for n in notes)
            if a is not None:
                return Shown(None, a=a, b=b)
        elif url.sample is not None:
            if self.index is None:
                self._notices.append(f"The link names sample {url.sample!r}, but no corpus index is loaded.")
            else:
                shown = self._lookup(url.sample, where=" in the link", then=" Showing another sample instead.")
                if shown is not None:
                    return shown
        first = self._first_sample_id()
        if first:
            return self._lookup(first)
        return Shown(None, a=EXAMPLE_PAIR[0], b=EXAMPLE_PAIR[1])

    async def _start_async(self, url: UrlState, first: Shown | None = None) -> None:
        """Load the models and run the first pair in an executor, then show it on the next tick."""
        try:
            shown = await asyncio.get_running_loop().run_in_executor(None, self._prepare, url, first)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the session stays usable
            log.exception("loading the model pair failed")
            next_tick(functools.partial(self._load_failed, exc))
            return
        next_tick(functools.partial(self._finish_start, url, shown))

    def _start(self, url: UrlState, first: Shown | None = None) -> None:
        try:
            shown = self._prepare(url, first)
        except Exception as exc:  # noqa: BLE001
            log.exception("loading the model pair failed")
            self._load_failed(exc)
            return
        self._finish_start(url, shown)

    def _load_failed(self, exc: BaseException) -> None:
        self._set_busy(False)
        self.notify(f"Loading the model pair failed: {exc}", "danger")

    def _finish_start(self, url: UrlState, shown: Shown | None) -> None:
        """Show the first view (under the document's lock when served) with the link's view state."""
        self._pair_info.object = pair_html(self.pair, self.index, self.task)
        self._setup_browser()
        if shown is not None:
            with self._quietly():
                self._show(shown, tau=url.tau, mode=url.mode)
                if shown.a and (shown.a, shown.b) != EXAMPLE_PAIR:
                    self._fill_form(shown.a, shown.b)  # the link's pair, ready to edit
                self._apply_level_and_selection(url, full=False)
        self._set_busy(False)
        self._flush_notices()
        self._write_url(push=False)

    def _setup_browser(self) -> None:
        """The corpus browser, or a note when there is no index.

        When served, the browser is built once the page has been drawn (``pn.state.onload``), so that
        the first view arrives sooner; a spinner holds its place meanwhile.
        """
        if self.index is None:
            note = ("No corpus index is loaded: type a sentence pair in the sidebar. Build one with "
                    "<code>attnflows index build</code> and start the app with <code>--index</code>.")
            self._browser_slot.objects = [pn.pane.HTML(f"<p>{note}</p>", css_classes=["af-no-index"])]
            return
        if not self._served:
            self._build_browser()
            return
        self._browser_slot.objects = [pn.Row(
            pn.indicators.LoadingSpinner(value=True, size=24),
            pn.pane.HTML("Loading the corpus browser …", margin=(12, 5)),
            css_classes=["af-browser-loading"],
        )]
        pn.state.onload(self._build_browser)

    def _build_browser(self) -> None:
        """The corpus browser: its current sample is a reference to the app's (never set by hand)."""
        from attnflows_panel.app.training import training_mask
        from attnflows_panel.views.corpus_browser import CorpusBrowser

        if self.index is None or self.browser is not None:
            return
        try:
            browser = CorpusBrowser(
                self.index, task=self.task, training=training_mask(self.index, self.pair),
                selected_id=pn.bind(_id_or_none, self.param.sample_id),
                result=pn.bind(self._browser_result, self.param.result, self.param.sample_id),
                on_pick=self.show_sample,
            )
        except Exception as exc:  # noqa: BLE001 - the flow views keep working without it
            log.exception("building the corpus browser failed")
            self._browser_slot.objects = []
            self.notify(f"The corpus browser failed to start: {exc}", "danger")
            return
        self.browser = browser
        self._browser_slot.objects = [browser]
        self._build_head_panel()

    def _build_head_panel(self) -> None:
        """The head panel under the corpus browser (README.md, "Which heads changed"): the layers × heads
        heatmap of how much fine-tuning changed each head, over the browser's task or the current similar
        samples. A click on a head restricts the flow view to it, lists the samples where it changed most
        (a click on one opens it), and shows what disabling it does to the current sample's prediction.
        Only for an index that stores the per-sample head change."""
        from attnflows_panel.views.head_panel import HeadPanel

        if self.index is None or self.head_panel is not None or not getattr(self.index, "has_head_change", False):
            return
        subset = [] if self.browser is None else pn.bind(_result_ids, self.browser.param.results)
        try:
            panel = HeadPanel(self.index, pair=self.pair, task=self.task,
                              sample_id=pn.bind(_id_or_none, self.param.sample_id),
                              sample=pn.bind(_sentences, self.param.result), subset_ids=subset,
                              on_open=self.show_sample)
        except Exception as exc:  # noqa: BLE001 - the flow views and the browser keep working without it
            log.exception("building the head panel failed")
            self.notify(f"The head panel failed to start: {exc}", "danger")
            return
        self.head_panel = panel
        panel.param.watch(self._on_head_pick, "selected_head")
        self.head_panel_slot.objects = [panel]

    def _on_head_pick(self, event) -> None:
        """A head clicked in the head panel restricts the flow view's trace to it (Fig. 6(b)): from the
        frozen selection, or from [CLS] when nothing is frozen."""
        if not event.new or self.result is None:
            return
        layer, head = (int(x) for x in event.new)
        top = check_result(self.result)[0]  # the root's level: L
        selection = self.view.selection or [[top, int(getattr(self.result, "cls_position", 0))]]
        self.view.param.update(selection=selection, head=[layer, head], head_model="both")

    def _first_sample_id(self) -> str | None:
        if self.index is None or not len(self.index.metadata):
            return None
        from attnflows_panel.views.corpus_browser import task_rows

        rows = task_rows(self.index, self.task)  # the first sample of the model's task
        if rows is not None and len(rows):
            return str(self.index.metadata["id"].iloc[int(rows[0])])
        return str(self.index.metadata["id"].iloc[0])

    def _lookup(self, sample_id: str, where: str = "", then: str = "") -> Shown | None:
        """The sample's metadata row and task, from one lookup of its id; None (and a notice) when the
        index has no such id."""
        from attnflows_panel.index import UnknownSampleError
        from attnflows_panel.views.corpus_browser import row_tasks

        try:
            i = int(self.index.row_of(sample_id))
        except UnknownSampleError:
            ids = ", ".join(repr(str(x)) for x in self.index.metadata["id"].iloc[:3])
            self._notices.append(f"Unknown sample id {sample_id!r}{where}: this corpus has {len(self.index)} "
                                 f"samples (ids like {ids}).{then}")
            return None
        tasks = row_tasks(self.index)
        return Shown(None, sample_id=sample_id, row=self.index.metadata.iloc[i].to_dict(),
                     task=None if tasks is None else tasks[i])

    # ------------------------------------------------------------------ showing a result

    def _show(self, shown: Shown, **view_state: Any) -> None:
        """Make ``shown`` the current pair (under the document's lock when served). The flow view, the
        browser and the head panel follow the app's parameters; ``view_state`` (τ, mode; None values
        left out) reaches the view in the same batch as the new result: one redraw."""
        view_state = {k: v for k, v in view_state.items() if v is not None}
        self._sample_row = shown.row
        with self._quietly(), param.parameterized.batch_call_watchers(self.view):
            if view_state:
                self.view.param.update(**view_state)
            self.param.update(result=shown.result, sample_id=shown.sample_id, sentence_a=shown.a, sentence_b=shown.b)
        self._weights_note.object = weights_html(shown.result, self.weights)
        other_task = shown.task if shown.task and self.task and shown.task != self.task else None
        self._sample_card.object = sample_html(shown.result, shown.sample_id, shown.row, other_task=other_task,
                                               model_task=self.task)

    def _apply_level_and_selection(self, url: UrlState, full: bool) -> None:
        """Level and frozen selection from a link, checked against the sample shown. ``full``: what the
        link leaves out goes back to its default (the informative level, no selection), as on Back."""
        if url.level is not None:
            top = check_result(self.result)[0] - 1
            if 0 <= url.level <= top:
                self.view.level = url.level
            else:
                self._notices.append(f"level {url.level + 1} in the link is out of range 1 … {top + 1}; "
                                     f"kept {self.view.level + 1}")
        elif full:
            self.view.level = self.view.informative_level()
        if url.selection:
            try:
                self.view.param.update(selection=url.selection, head=url.head or [],
                                       head_model=url.head_model or "both")
            except ValueError as exc:
                self._notices.append(f"The selection in the link does not fit this sample: {exc}")
                self.view.clear_selection()
        elif full:
            self.view.clear_selection()

    # ------------------------------------------------------------------ reactions

    def _on_view_status(self, *events) -> None:
        self._status.object = self.view.status_html()

    def _on_view_state(self, *events) -> None:
        """A change of the view state: a continuous one (τ, level) replaces the history entry, a
        discrete one (a freeze, a head, a mode) adds one."""
        if not self._quiet:
            self._write_url(push=not all(e.name in _CONTINUOUS for e in events))

    def _on_run_click(self, event) -> None:
        self.run_pair(typed(self._a_w), typed(self._b_w))

    def _fill_form(self, a: str, b: str) -> None:
        """Put a pair in the form, as the value and as the typed text (what "Run" reads)."""
        fill(self._a_w, a)
        fill(self._b_w, b)

    # ------------------------------------------------------------------ public actions

    def _clean_pair(self, a: str, b: str) -> tuple[str | None, str | None, list[str]]:
        """Check a typed pair: both non-empty, each at most ``max_chars`` characters (cut, with a note)."""
        notes = []
        a, b = str(a or ""), str(b or "")
        if not a.strip() or not b.strip():
            missing = " and ".join(n for n, t in (("sentence A", a), ("sentence B", b)) if not t.strip())
            notes.append(f"Please type both sentences: {missing} is empty.")
            return None, None, notes
        cut = []
        limit = self.config.max_chars
        if len(a) > limit:
            a, _ = a[:limit], cut.append("A")
        if len(b) > limit:
            b, _ = b[:limit], cut.append("B")
        if cut:
            notes.append(f"Sentence {' and '.join(cut)} was cut to {limit} characters.")
        return a, b, notes

    def run_pair(self, sentence_a: str, sentence_b: str) -> None:
        """Run a typed pair through both models (in an executor when served), show it and search the
        corpus for samples like it. Empty or over-long input gives a visible note."""
        a, b, notes = self._clean_pair(sentence_a, sentence_b)
        if a is None:
            self._form_note.object = f'<span style="color:#b00020">{esc(notes[0])}</span>'
            self.notify(notes[0])
            return
        self._form_note.object = ""
        self._run(functools.partial(self._model_run, a, b),
                  functools.partial(self._after_typed, a=a, b=b, notes=notes),
                  "Running both models on your sentence pair …")

    def _after_typed(self, result, a: str, b: str, notes: list[str]) -> None:
        self._show(Shown(result, a=a, b=b))
        self._fill_form(a, b)
        if result.truncated:
            notes.append(f"The pair is longer than the models' maximum of {self.pair.max_length} tokens: "
                         "it was truncated (tokens were dropped from the end of the longer sentence).")
        self._form_note.object = "<br>".join(esc(n) for n in notes)
        self.notify("\n".join(notes), "info" if notes else "warning")
        self._write_url(push=True)

    def show_sample(self, sample_id: str, url: UrlState | None = None, again: bool = False) -> None:
        """Show a corpus sample by id (a visible message for an unknown id); ``url``: the view state to
        restore with it (Back / Forward), else the view opens as for a new sample; ``again``: run it even
        when it is the sample shown (another kind of edge weights)."""
        sample_id = str(sample_id)
        if self.index is None:
            self.notify(f"No corpus index is loaded, so there is no sample {sample_id!r}.")
            return
        if url is None and not again and sample_id in (self.sample_id, self._running):
            return  # a pick of the sample shown or being run (a row click also reports a selection): nothing new
        shown = self._lookup(sample_id)
        if shown is None:
            self._flush_notices()
            return
        row = shown.row

        def show(result) -> None:
            shown.result = result
            self._show_with(shown, url)

        self._run(functools.partial(self._model_run, row["sentence_a"], row["sentence_b"]), show,
                  f"Running both models on sample {sample_id} …", sample_id=sample_id)

    def _show_with(self, shown: Shown, url: UrlState | None) -> None:
        """Show a new pair: with ``url``'s view state (Back / Forward: the entry stays), else as a new
        history entry."""
        if url is None:
            self._show(shown)
            self.notify("")
            self._write_url(push=True)
            return
        with self._quietly():
            self._show(shown, tau=url.tau if url.tau is not None else self.config.tau, mode=url.mode or "combined")
            self._apply_level_and_selection(url, full=True)
        self._flush_notices()
        self._write_url(push=False)

    def restore(self, query: str) -> None:
        """Back / Forward: show the state that ``query`` (the address's query) names: the sample or
        typed pair (the models run when it is another one), τ, mode, level, selection and head."""
        url, errors = UrlState.parse(query)
        self._notices.extend(errors)
        kind = url.weights or "raw"
        if kind != self.weights:  # another kind of edge weights: the models run again on the entry's pair
            self._choose_weights(kind)
            if url.sample and self.index is not None:
                self.show_sample(url.sample, url=url, again=True)
                return
            if url.a is None and url.b is None:
                url.a, url.b = self.sentence_a, self.sentence_b
        if url.a is not None or url.b is not None:
            a, b, _ = self._clean_pair(url.a or "", url.b or "")
            if a is not None and (self.sample_id or (a, b) != (self.sentence_a, self.sentence_b)
                                  or self._result_kind() != self.weights):
                self._run(functools.partial(self._model_run, a, b),
                          lambda r: self._show_with(Shown(r, a=a, b=b), url), "Running both models on the pair …")
                return
        elif url.sample and url.sample != self.sample_id and self.index is not None:
            self.show_sample(url.sample, url=url)
            return
        with self._quietly():
            tau = url.tau if url.tau is not None else self.config.tau
            self.view.param.update(tau=tau, mode=url.mode or "combined")
            self._apply_level_and_selection(url, full=True)
        self._flush_notices()
        self._write_url(push=False)

    def _model_run(self, a: str, b: str, pair: Any = None):
        """Both models on a pair, with the session's kind of edge weights (blocking: called in an executor
        when served). For a typed pair shown with other weights than the corpus index counts, the index's
        kind runs too, for the corpus browser's search (:meth:`_browser_result`)."""
        pair = self.pair if pair is None else pair
        weights = self.weights
        result = self.registry.run(pair, a, b, weights=weights)
        kind = self._index_kind()
        if kind != weights and self.index is not None and pair is self.pair:
            self.registry.run(pair, a, b, weights=kind)
        return result

    def _index_kind(self) -> str:
        return str(getattr(self.index, "weights", "raw") or "raw")

    def _result_kind(self) -> str:
        """The kind of edge weights of the result shown (the fine-tuned model's: with attattr, the
        pre-trained model without a classification head holds norm)."""
        return str(getattr(getattr(self.result, "finetuned", None), "weights", "raw") or "raw")

    def _browser_result(self, result: Any, sample_id: str) -> Any:
        """The typed pair's result for the corpus browser: of the kind the index counts (a search with
        another kind is refused), taken from the cache that :meth:`_model_run` filled."""
        if sample_id or result is None:
            return None
        kind = self._index_kind()
        if {getattr(o, "weights", "raw") for o in (result.pretrained, result.finetuned)} == {kind}:
            return result
        return self.registry.cached_result(self.pair, result.sentence_a, result.sentence_b, weights=kind)

    def set_weights(self, kind: str) -> None:
        """Show the current pair with another kind of edge weights (``raw``, ``norm``, ``attattr``): the
        models run again (in an executor when served); the URL keeps the kind (``w``)."""
        from attnflows_panel.weights import check_kind

        kind = check_kind(kind)
        if self._weights_w.value != kind:
            self._weights_w.value = kind  # comes back here through the widget's watcher
            return
        if kind == self.weights and (self.result is None or self._result_kind() == kind):
            return
        self.weights = kind
        if self.result is None:
            return
        if self.sample_id:
            self.show_sample(self.sample_id, again=True)
            return
        a, b = self.sentence_a, self.sentence_b
        self._run(functools.partial(self._model_run, a, b),
                  lambda r: (self._show(Shown(r, a=a, b=b)), self._write_url(push=True)),
                  f"Running both models for {kind} edge weights …")

    def _choose_weights(self, kind: str) -> None:
        """The kind of edge weights, set with its selector, without running anything (the caller runs)."""
        self._weights_quiet = True
        try:
            self.weights = kind
            self._weights_w.value = kind
        finally:
            self._weights_quiet = False

    def _on_weights_widget(self, event) -> None:
        if not self._weights_quiet:
            self.set_weights(event.new)

    def _run(self, work: Callable[[], Any], then: Callable[[Any], Any], busy_text: str,
             sample_id: str | None = None) -> None:
        """``then(work())``: when served, ``work`` runs in an executor from an async callback (never
        under the document's lock) and ``then`` on the document's next tick (under it), with a busy
        indicator; inline otherwise. A failure of either is logged and shown to the user. A later run
        supersedes this one if it finishes first."""
        self._run_seq += 1
        seq = self._run_seq
        self._running = sample_id
        if not self._served:
            try:
                then(work())
            except Exception as exc:  # noqa: BLE001
                self._run_failed(seq, exc)
            self._running = None
            return
        self._set_busy(True, busy_text)

        off_loop(work, functools.partial(self._run_done, seq, then), functools.partial(self._run_failed, seq))

    def _run_done(self, seq: int, then: Callable[[Any], Any], result: Any) -> None:
        if seq != self._run_seq:  # a later pick or run supersedes this one
            return
        self._running = None
        try:
            then(result)
        except Exception as exc:  # noqa: BLE001
            self._run_failed(seq, exc)
            return
        self._set_busy(False)

    def _run_failed(self, seq: int, exc: BaseException) -> None:
        log.error("a model run failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        self.notify(f"{type(exc).__name__}: {exc}", "danger")
        if seq == self._run_seq:
            self._running = None
            self._set_busy(False)

    def _on_load_models(self, event) -> None:
        if not self.config.allow_model_paths:  # pragma: no cover - the widgets do not exist then
            self.notify("This server does not allow loading other models (start it with --allow-model-paths).")
            return
        pre = (self._model_pre_w.value or "").strip() or None
        fine = (self._model_fine_w.value or "").strip() or None
        if fine is None:
            self.notify("Type at least the fine-tuned model (hub name or a folder on the server).")
            return
        a = self.sentence_a or (self._sample_row or {}).get("sentence_a") or EXAMPLE_PAIR[0]
        b = self.sentence_b or (self._sample_row or {}).get("sentence_b") or EXAMPLE_PAIR[1]

        def load():  # both models load and run off the event loop
            pair = self.registry.pair(pre, fine, device=self.config.device)
            return pair, self._model_run(a, b, pair=pair)

        self._run(load, lambda got: self._use_pair(*got, a=a, b=b, name=fine), "Loading the model pair …")

    def _use_pair(self, pair, result, a: str, b: str, name: str) -> None:
        self.pair = pair
        self.task = model_task(pair)
        if self.index is not None:
            try:
                self.index.check_pair(pair)
            except ValueError as exc:
                self.index, self.browser, self.head_panel = None, None, None
                self.head_panel_slot.objects = []
                self._setup_browser()
                self.notify(f"Loaded {name}. The corpus browser is off: {exc}")
        if self.head_panel is not None:
            self.head_panel.pair = pair
        self._pair_info.object = pair_html(pair, self.index, self.task)
        self._show(Shown(result, a=a, b=b))
        self._write_url(push=True)

    # ------------------------------------------------------------------ URL

    def url_state(self) -> UrlState:
        """The shareable state shown now."""
        v = self.view
        # the level is left out where it is the one the view opens at by itself (the informative level
        # at this τ), so that a link without a level restores it, and one with a level keeps it
        level = None if v.result is None or int(v.level) == v.informative_level() else int(v.level)
        return UrlState(sample=self.sample_id or None, a=self.sentence_a or None, b=self.sentence_b or None,
                        tau=float(v.tau), mode=v.mode, level=level, selection=list(v.selection),
                        head=list(v.head), head_model=v.head_model, weights=self.weights)

    def url_query(self) -> str:
        """The query string that restores this view (defaults and empty values left out)."""
        return self.url_state().query(self.config.tau)

    def _write_url(self, push: bool = False) -> None:
        """The address bar shows the state: a new history entry when ``push``, else in place."""
        if self.history is None or self.result is None:
            return
        self.history.write(self.url_query(), push)
