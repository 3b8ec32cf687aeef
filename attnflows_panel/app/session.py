"""One user's session: :class:`AttnFlowsApp`, a ``pn.viewable.Viewer`` (see README.md, "The app").

It composes

- the **Sentence view**, the radial **Attention Flow view** and the **Sentence Context view** of one
  :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView`, which owns the view state (τ,
  mode, level, frozen selection, head restriction): the sidebar's controls are that view's own
  (``view.parts().controls``, made from its parameters), so the app keeps no copy of them;
- the **corpus browser** (:class:`~attnflows_panel.views.corpus_browser.CorpusBrowser`), which owns
  its query state (current sample, space, head mask, filters) the same way;
- a sidebar with the model pair in use, those controls, a form for a typed sentence pair, and help.

What the app itself owns is *which pair is shown*: ``sample_id`` (a corpus sample) or
``sentence_a``/``sentence_b`` (a typed pair), and the ``result`` of running the models on it.

**Shared and per-session state.** Models, indexes and recent model outputs live in a
:class:`~attnflows_panel.registry.Registry` (one per process): loaded once, read-only afterwards,
shared by every session. Everything a user changes lives in the session's own objects.

**Document changes.** Model runs (a corpus sample, a typed pair, another model pair) go to a worker
thread (``asyncio.to_thread``); their result comes back to the page through
``doc.add_next_tick_callback``, which runs it under the document's lock. Widget changes reach the
views through Panel, and the flow view redraws its figures on the document's next tick (under the
lock); the corpus browser's plots are HoloViews'. No Bokeh model is changed from a thread or outside
the lock.

**Errors are shown.** An exception in any callback of the session (Panel's, through the session's
``pn.config.exception_handler``, and the views' Bokeh callbacks) is logged and shown to that user in
the message bar; the session keeps working. Bad input (empty or over-long sentences, markup in a
sentence, a bad URL value, an unknown sample id, a failing model folder) gives a visible message.

**Shareable state.** The page's URL holds the state (:mod:`attnflows_panel.app.url_state`); the app
reads it at the start and writes it back on every change.

Stable hooks for browser tests (CSS classes of the panes and inputs): ``af-message`` (notices),
``af-sample`` / ``af-sample-id`` / ``af-text-a`` / ``af-text-b`` (the sample card), ``af-pair`` (the
model pair), ``af-input-a`` / ``af-input-b`` / ``af-run`` / ``af-form-note`` (the typed-pair form),
``af-flow-view`` / ``af-sentence-view`` / ``af-context-view`` (the views), ``af-browser`` (the corpus
browser), ``af-head-panel`` (the slot for the head panel), ``af-busy`` (the busy note); the view's
controls carry the ``name=`` values listed in ``AttentionFlowsView``'s docstring.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from typing import Any, Callable

import numpy as np
import panel as pn
import param

from attnflows_panel import FINETUNED_COLOR
from attnflows_panel.app.cards import HELP_HTML, NOTICE_COLORS, esc, notice_html, pair_html, sample_html
from attnflows_panel.app.config import EXAMPLE_PAIR, AppConfig, model_task
from attnflows_panel.app.url_state import UrlState
from attnflows_panel.registry import Registry, shared_registry
from attnflows_panel.views.attention_flows import AttentionFlowsView

__all__ = ["AttnFlowsApp", "LOCKED_TIMEOUT_S"]

log = logging.getLogger(__name__)

#: how long a finished model run waits for its session's next tick; a session closed meanwhile never
#: gives one, and its coroutine then ends instead of holding the session's objects forever
LOCKED_TIMEOUT_S = 120.0

_VIEW_STATE = ("tau", "mode", "level", "selection", "head", "head_model")

#: CSS height of the radial view in the app: the window's height less the header, the sample card and
#: the sentence view above it (about 350 px for the demo's pairs at 1280×800, a little less on wider
#: windows, where the card wraps less), so the whole drawing is in view when the page opens
APP_FLOW_HEIGHT = "max(420px, calc(100vh - 350px))"


async def _locked(doc, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on ``doc``'s next tick (``doc.add_next_tick_callback``: under the document's lock)
    and wait for it. Work done in a worker thread comes back to the page this way."""
    future = asyncio.get_running_loop().create_future()

    def call():
        if future.done():
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            future.set_exception(exc)
        else:
            future.set_result(None)

    try:
        doc.add_next_tick_callback(call)
    except Exception:  # noqa: BLE001 - the session is gone
        return
    try:
        await asyncio.wait_for(future, LOCKED_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.debug("session closed before a finished run could be shown")


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


def _heading(text: str) -> pn.pane.HTML:
    """A sidebar section heading (plain HTML: nothing to render as Markdown in every new session)."""
    return pn.pane.HTML(f'<h4 style="margin:0">{esc(text)}</h4>', margin=(12, 10, 4, 10))


class AttnFlowsApp(pn.viewable.Viewer):
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
        Write the state back into the browser's URL (default: when served).

    The view state (``tau``, ``mode``, ``level``, ``selection``, ``head``, ``head_model``) is the
    parameters of :attr:`view`; the app's attributes of those names are aliases of them.
    """

    sample_id = param.String(default="", doc="id of the corpus sample shown ('' when a typed pair is shown)")
    sentence_a = param.String(default="", doc="sentence A of a typed pair ('' when a corpus sample is shown)")
    sentence_b = param.String(default="", doc="sentence B of a typed pair")
    result = param.Parameter(default=None, doc="the PairResult shown (read-only)")
    message = param.String(default="", doc="the last notice or error shown to the user (plain text)")
    busy = param.Boolean(default=False, doc="True while models load or run")

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
        doc = pn.state.curdoc
        self._served = bool(doc is not None and doc.session_context)
        self._sync_url = self._served if sync_url is None else bool(sync_url)
        if query is None and self._served and pn.state.location is not None:
            query = pn.state.location.search or ""
        view_state.setdefault("tau", self.config.tau)
        self.view = AttentionFlowsView(cache=self.registry.shared, flow_height=APP_FLOW_HEIGHT, **view_state)
        self._build_widgets()
        self._layout = None
        self._parts()
        self.view.param.watch(self._write_url, list(_VIEW_STATE))
        self.view.param.watch(self._on_view_status, ["status", "result"])
        self.param.watch(self._write_url, ["sample_id", "sentence_a", "sentence_b"])
        self.param.watch(self._on_busy, ["busy"])
        if self._served:
            # this session's handler (pn.config is per session when set inside one). It holds the app
            # weakly: the per-session config is a WeakKeyDictionary keyed by the document, and a value
            # that refers back to the document would keep a closed session alive
            pn.config.exception_handler = _weak_handler(self)
        self._notices: list[str] = []
        url_state, errors = UrlState.parse(query or "")
        self._notices.extend(errors)
        self._pending_url = url_state
        if self._resources_ready():
            self._start(url_state)
            # the first view is drawn now, while the session's document is being built, so that it is
            # part of the first document a browser pulls (not a redraw on the next tick, sent as patches)
            if self.view._scheduled:
                self.view._draw_pending()
        else:
            self._set_busy(True, "Loading the model pair and the index …")
            if self._served:
                pn.state.onload(self._start_async)
            else:  # a notebook or a test without a server: load right here
                self._start(url_state)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, **kwargs: Any) -> AttnFlowsApp:
        """An app configured by ``ATTNFLOWS_*`` environment variables (see ``AppConfig.from_env``)."""
        return cls(AppConfig.from_env(), **kwargs)

    def _build_widgets(self) -> None:
        cfg = self.config
        W = pn.widgets
        self._spinner = pn.indicators.LoadingSpinner(value=False, size=22, name="", margin=(8, 5), color="light",
                                                     bgcolor="dark")
        self._busy_text = pn.pane.HTML("", margin=(10, 5), styles={"color": "white", "font-size": "13px"},
                                       css_classes=["af-busy"])
        self._alert = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", css_classes=["af-message"],
                                   margin=(5, 10))
        self._pair_info = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-pair"], margin=(0, 5))
        self._a_w = W.TextAreaInput(name="Sentence A", placeholder="first sentence / premise / question",
                                    max_length=cfg.max_chars, rows=3, sizing_mode="stretch_width", css_classes=["af-input-a"])
        self._b_w = W.TextAreaInput(name="Sentence B", placeholder="second sentence / hypothesis / answer",
                                    max_length=cfg.max_chars, rows=3, sizing_mode="stretch_width", css_classes=["af-input-b"])
        self._run_w = W.Button(name="Run pair and find similar samples", button_type="primary",
                               sizing_mode="stretch_width", css_classes=["af-run"])
        self._run_w.on_click(self._on_run_click)
        self._form_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-form-note"], margin=(0, 10),
                                       styles={"font-size": "12px"})
        self._model_pre_w = self._model_fine_w = self._model_load_w = None
        if cfg.allow_model_paths:
            self._model_pre_w = W.TextInput(name="Pre-trained (hub name or server folder)",
                                            sizing_mode="stretch_width", css_classes=["af-model-pre"])
            self._model_fine_w = W.TextInput(name="Fine-tuned (hub name or server folder)",
                                             sizing_mode="stretch_width", css_classes=["af-model-fine"])
            self._model_load_w = W.Button(name="Load model pair", sizing_mode="stretch_width", css_classes=["af-model-load"])
            self._model_load_w.on_click(self._on_load_models)
        self._sample_card = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-sample"], margin=(0, 10))
        self._status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["af-status"], margin=(0, 10),
                                    styles={"font-size": "12px", "color": "#444"})
        parts = self.view.parts()
        self._sentence_slot = pn.Column(parts.sentence, sizing_mode="stretch_width", css_classes=["af-sentence-view"])
        # a Row: in a column, Bokeh sizes the figure by its design height (a flex basis) whatever the
        # view's CSS height says; across a row the figure takes the view's height (APP_FLOW_HEIGHT)
        self._flow_slot = pn.Row(parts.flow, sizing_mode="stretch_width", css_classes=["af-flow-view"])
        self._context_slot = pn.Column(parts.context, css_classes=["af-context-view"])
        self._controls = parts.controls
        self._browser_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-browser"])
        #: where a head panel goes, beside the corpus browser (empty until one is placed there)
        self.head_panel_slot = pn.Column(sizing_mode="stretch_width", css_classes=["af-head-panel"])
        # the help folds open in the page itself (an HTML <details>), without a round trip to the server
        self._help = pn.pane.HTML(
            '<details><summary style="cursor:pointer;font-weight:600;padding:6px 0">How to read the views</summary>'
            f"{HELP_HTML}</details>", sizing_mode="stretch_width", css_classes=["af-help"], margin=(10, 10))

    def _sidebar(self) -> list:
        view_controls = pn.Column(_heading("View"), self._controls, sizing_mode="stretch_width")
        form = pn.Column(_heading("Your sentence pair"), self._a_w, self._b_w, self._run_w, self._form_note,
                         sizing_mode="stretch_width", css_classes=["af-form"])
        models = [self._pair_info]
        if self.config.allow_model_paths:
            models += [self._model_pre_w, self._model_fine_w, self._model_load_w]
        pair_box = pn.Column(_heading("Model pair"), *models, sizing_mode="stretch_width")
        # one root per template area: every extra Bokeh root costs a full model-graph walk per session
        return [pn.Column(pair_box, view_controls, form, self._help, sizing_mode="stretch_width")]

    def _main(self) -> list:
        # the context view, the hover details and the legend come in parts.context; the flow view takes the rest
        flows = pn.Row(self._flow_slot, pn.Column(self._context_slot, self._status, width=350),
                       sizing_mode="stretch_width")
        top = self._main_top = pn.Column(self._alert, self._sample_card, self._sentence_slot, flows,
                                         sizing_mode="stretch_width", css_classes=["af-main"])
        return [pn.Column(top, self._browser_slot, self.head_panel_slot, sizing_mode="stretch_width")]

    def _parts(self):
        if self._layout is None:
            self._main_parts = self._main()
            self._side_parts = self._sidebar()
            self._layout = pn.Row(pn.Column(*self._side_parts, width=330),
                                  pn.Column(*self._main_parts, sizing_mode="stretch_width"), sizing_mode="stretch_width")
        return self._layout

    def template(self) -> pn.template.BaseTemplate:
        """The full page (BootstrapTemplate) for serving: sidebar, main area, busy indicator in the header.

        Every asset comes from the Panel server itself, no web font or CDN, so the page works offline.
        """
        self._parts()
        return pn.template.BootstrapTemplate(
            title=self.config.title,
            sidebar=self._side_parts,
            main=self._main_parts,
            header=[pn.Row(self._spinner, self._busy_text)],
            header_background=FINETUNED_COLOR,
            sidebar_width=350,
        )

    def __panel__(self):
        return self._parts()

    # ------------------------------------------------------------------ busy / messages / errors

    def _set_busy(self, on: bool, text: str = "") -> None:
        self.busy = on
        self._busy_text.object = esc(text) if on else ""

    def _on_busy(self, event) -> None:
        self._spinner.value = bool(event.new)
        self._main_top.loading = bool(event.new)

    def notify(self, text: str, kind: str = "warning") -> None:
        """Show ``text`` in the message bar as plain text (escaped, never markup or a link); '' hides it."""
        self.message = text
        bg, fg = NOTICE_COLORS.get(kind, NOTICE_COLORS["warning"])
        self._alert.param.update(
            object=notice_html(text), visible=bool(text),
            styles={"background": bg, "color": fg, "padding": "8px 12px", "border-radius": "4px", "font-size": "13px"},
        )

    def report_error(self, exc: BaseException) -> None:
        """An exception in a callback of this session: logged with its traceback, shown to the user."""
        log.error("a callback of this session failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        self.notify(f"Something went wrong: {type(exc).__name__}: {exc}", "danger")

    def _flush_notices(self) -> None:
        self.notify("\n".join(self._notices))
        self._notices = []

    # ------------------------------------------------------------------ loading

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
        return True

    def _load_resources(self) -> None:
        """Load the pair and open the index through the registry (blocking; run in a thread when served)."""
        if self.pair is None:
            pre, fine = self.config.model_refs()
            self.pair = self.registry.pair(pre, fine, device=self.config.device)
        if self.index is None and self._want_index and self.config.index:
            try:
                self.index = self.registry.index(self.config.index, pair=self.pair)
            except (OSError, ValueError) as exc:
                self._notices.append(f"The corpus browser is off: {exc}")
                self._want_index = False

    async def _start_async(self) -> None:
        locked = functools.partial(_locked, pn.state.curdoc)
        try:
            await asyncio.to_thread(self._load_resources)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the session stays usable
            log.exception("loading the model pair failed")
            await locked(lambda: (self._set_busy(False), self.notify(f"Loading the model pair failed: {exc}", "danger")))
            return
        await locked(lambda: self._start(self._pending_url or UrlState(), loaded=True))

    def _start(self, url: UrlState, loaded: bool = False) -> None:
        """Build the first view: from the URL's state when it has one, else the first sample."""
        if not loaded:
            try:
                self._load_resources()
            except Exception as exc:  # noqa: BLE001
                log.exception("loading the model pair failed")
                self._set_busy(False)
                self.notify(f"Loading the model pair failed: {exc}", "danger")
                return
        self.task = model_task(self.pair, self.config.index if self.index is not None else None)
        self._pair_info.object = pair_html(self.pair, self.index, self.task)
        self._setup_browser()
        a = b = None
        sample_id = ""
        if url.a is not None or url.b is not None:
            a, b, notes = self._clean_pair(url.a or "", url.b or "")
            self._notices.extend(f"Link: {n}" for n in notes)
            if a is None:
                a = b = None
        elif url.sample is not None:
            if self.index is None:
                self._notices.append(f"The link names sample {url.sample!r}, but no corpus index is loaded.")
            elif self._sample_known(url.sample):
                sample_id = url.sample
        if a is None and not sample_id:
            sample_id = self._first_sample_id() or ""
            if not sample_id:
                a, b = EXAMPLE_PAIR
        state = {k: v for k, v in (("tau", url.tau), ("mode", url.mode)) if v is not None}
        try:
            if sample_id:
                row = self.index.sample(sample_id)
                result = self.registry.run(self.pair, row["sentence_a"], row["sentence_b"])
                self._apply_result(result, sample_id=sample_id, row=row, **state)
            else:
                result = self.registry.run(self.pair, a, b)
                self._apply_result(result, a=a, b=b, **state)
                if (a, b) != EXAMPLE_PAIR:
                    self._a_w.value, self._b_w.value = a, b  # the link's pair, ready to edit
            self._apply_url_view_state(url)
        except Exception as exc:  # noqa: BLE001
            log.exception("building the first view failed")
            self._notices.append(f"Could not show the first sample: {exc}")
        self._set_busy(False)
        self._flush_notices()
        self._write_url()

    def _apply_url_view_state(self, url: UrlState) -> None:
        """Level and frozen selection from the link, checked against the sample shown."""
        if url.level is not None:
            top = self.pair.num_layers - 1
            if 0 <= url.level <= top:
                self.view.level = url.level
            else:
                self._notices.append(f"level {url.level + 1} in the link is out of range 1 … {top + 1}; "
                                     f"kept {self.view.level + 1}")
        if url.selection:
            try:
                self.view.param.update(selection=url.selection, head=url.head or [], head_model=url.head_model or "both")
            except ValueError as exc:
                self._notices.append(f"The selection in the link does not fit this sample: {exc}")
                self.view.clear_selection()

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
            pn.indicators.LoadingSpinner(value=True, size=24, name=""),
            pn.pane.HTML("Loading the corpus browser …", margin=(12, 5)),
            css_classes=["af-browser-loading"],
        )]
        pn.state.onload(self._build_browser)

    def _build_browser(self) -> None:
        from attnflows_panel.views.corpus_browser import CorpusBrowser

        if self.index is None or self.browser is not None:
            return
        try:
            browser = CorpusBrowser(self.index, task=self.task, **self._browser_query())
        except Exception as exc:  # noqa: BLE001 - the flow views keep working without it
            log.exception("building the corpus browser failed")
            self._browser_slot.objects = []
            self.notify(f"The corpus browser failed to start: {exc}", "danger")
            return
        self.browser = browser
        browser.param.watch(self._on_browser_pick, "selected_id")
        self._browser_slot.objects = [browser]
        self._build_head_panel()

    def _build_head_panel(self) -> None:
        """The head panel under the corpus browser (README.md, "Which heads changed"): the layers × heads
        heatmap of how much fine-tuning changed each head, over the corpus or the current similar samples.
        A click on a head restricts the flow view to it, lists the samples where it changed most, and
        shows what disabling it does to the current sample's prediction. Only for an index that stores
        the per-sample head change."""
        from attnflows_panel.views.head_panel import HeadPanel

        if self.index is None or self.head_panel is not None or not getattr(self.index, "has_head_change", False):
            return
        try:
            panel = HeadPanel(self.index, pair=self.pair, **self._head_panel_state())
        except Exception as exc:  # noqa: BLE001 - the flow views and the browser keep working without it
            log.exception("building the head panel failed")
            self.notify(f"The head panel failed to start: {exc}", "danger")
            return
        self.head_panel = panel
        panel.param.watch(self._on_head_pick, "selected_head")
        if self.browser is not None:
            self.browser.param.watch(self._on_browser_results, "results")
            self._on_browser_results()
        self.head_panel_slot.objects = [panel]

    def _head_panel_state(self) -> dict:
        """The current sample, for the head panel's head query and its ablation."""
        r = self.result
        return {"sample_id": self.sample_id or None,
                "sample": (r.sentence_a, r.sentence_b) if r is not None else None}

    def _on_browser_results(self, *_: Any) -> None:
        """The head panel's subset follows the similar samples of the current sample."""
        if self.head_panel is None or self.browser is None:
            return
        df = self.browser.results
        ids = [] if df is None or "id" not in df else [str(x) for x in df["id"]]
        self.head_panel.subset_ids = ids

    def _on_head_pick(self, event) -> None:
        """A head clicked in the head panel restricts the flow view's trace to it (Fig. 6(b)): from the
        frozen selection, or from [CLS] when nothing is frozen."""
        if not event.new or self.view.result is None:
            return
        layer, head = (int(x) for x in event.new)
        selection = self.view.selection or [[self.view._L, int(getattr(self.view.result, "cls_position", 0))]]
        self.view.param.update(selection=selection, head=[layer, head], head_model="both")

    def _browser_query(self) -> dict:
        """What the browser's similar-samples search starts from: the corpus sample or the typed pair shown."""
        if self.result is None:
            return {}
        if self.sample_id:
            return {"selected_id": self.sample_id, "result": None}
        return {"selected_id": None, "result": self.result}

    def _first_sample_id(self) -> str | None:
        if self.index is None or not len(self.index.metadata):
            return None
        from attnflows_panel.views.corpus_browser import task_rows

        rows = task_rows(self.index, self.task)  # the first sample of the model's task
        if rows is not None and len(rows):
            return str(self.index.metadata["id"].iloc[int(rows[0])])
        return str(self.index.metadata["id"].iloc[0])

    def _sample_known(self, sample_id: str, where: str = " in the link", then: str = " Showing another sample instead.") -> bool:
        from attnflows_panel.index import UnknownSampleError

        try:
            self.index.row_of(sample_id)
            return True
        except UnknownSampleError:
            ids = ", ".join(repr(str(x)) for x in self.index.metadata["id"].iloc[:3])
            self._notices.append(
                f"Unknown sample id {sample_id!r}{where}: this corpus has {len(self.index)} samples "
                f"(ids like {ids}).{then}"
            )
            return False

    def _sample_task(self, sample_id: str) -> str | None:
        """The task of a corpus sample, when the corpus says (see ``corpus_browser.row_tasks``)."""
        from attnflows_panel.views.corpus_browser import row_tasks

        tasks = row_tasks(self.index)
        if tasks is None:
            return None
        return tasks[int(self.index.row_of(sample_id))]

    # ------------------------------------------------------------------ showing a result

    def _apply_result(self, result, *, sample_id: str = "", row: dict | None = None, a: str = "", b: str = "",
                      **view_state: Any) -> None:
        """Show ``result`` (on the server's event loop, under the document's lock): views, card, browser."""
        self._sample_row = row
        # the view first (it resets the selection for a new pair), then what is shown: one URL write
        self.view.param.update(result=result, **view_state)
        self.param.update(result=result, sample_id=sample_id, sentence_a=a, sentence_b=b)
        other_task = None
        if sample_id and self.task:
            task = self._sample_task(sample_id)
            other_task = task if task and task != self.task else None
        self._sample_card.object = sample_html(result, sample_id, row, other_task=other_task, model_task=self.task)
        if self.browser is not None:
            self.browser.param.update(**self._browser_query())
        if self.head_panel is not None:
            self.head_panel.param.update(**self._head_panel_state())

    # ------------------------------------------------------------------ reactions

    def _on_view_status(self, *events) -> None:
        self._status.object = self.view.status_html()

    def _on_browser_pick(self, event) -> None:
        """A pick in the browser (a corpus row, a similar sample, a map point): show that sample."""
        if event.new and event.new != self.sample_id:
            self.show_sample(str(event.new))

    def _on_run_click(self, event) -> None:
        self.run_pair(self._a_w.value_input if self._a_w.value_input is not None else self._a_w.value,
                      self._b_w.value_input if self._b_w.value_input is not None else self._b_w.value)

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
        """Run a typed pair through both models (in a worker thread when served), show it and search
        the corpus for samples like it. Empty or over-long input gives a visible note."""
        a, b, notes = self._clean_pair(sentence_a, sentence_b)
        if a is None:
            self._form_note.object = f'<span style="color:#b00020">{esc(notes[0])}</span>'
            self.notify(notes[0])
            return
        self._form_note.object = ""
        self._run_then(lambda: self.registry.run(self.pair, a, b),
                       lambda r: self._after_typed(r, a, b, notes),
                       "Running both models on your sentence pair …")

    def _after_typed(self, result, a: str, b: str, notes: list[str]) -> None:
        self._apply_result(result, a=a, b=b)
        self._a_w.value, self._b_w.value = a, b
        if result.truncated:
            notes.append(f"The pair is longer than the models' maximum of {self.pair.max_length} tokens: "
                         "it was truncated (tokens were dropped from the end of the longer sentence).")
        self._form_note.object = "<br>".join(esc(n) for n in notes)
        self.notify("\n".join(notes), "info" if notes else "warning")

    def show_sample(self, sample_id: str) -> None:
        """Show a corpus sample by id (a visible message for an unknown id)."""
        if self.index is None:
            self.notify(f"No corpus index is loaded, so there is no sample {sample_id!r}.")
            return
        if not self._sample_known(sample_id, where="", then=""):
            self._flush_notices()
            return
        row = self.index.sample(sample_id)
        self._run_then(lambda: self.registry.run(self.pair, row["sentence_a"], row["sentence_b"]),
                       lambda r: (self._apply_result(r, sample_id=sample_id, row=row), self.notify("")),
                       f"Running both models on sample {sample_id} …")

    def _run_then(self, work: Callable[[], Any], then: Callable[[Any], Any], busy_text: str) -> None:
        """``then(work())``: ``work`` in a worker thread and ``then`` on the page's next tick (under the
        document's lock) with a busy indicator when served; inline otherwise. A failure of either is
        logged and shown to the user."""
        self._run_seq += 1
        seq = self._run_seq
        if not self._served:
            try:
                then(work())
            except Exception as exc:  # noqa: BLE001
                log.exception("a model run failed")
                self.notify(f"{type(exc).__name__}: {exc}", "danger")
            return

        locked = functools.partial(_locked, pn.state.curdoc)

        async def task():
            await locked(lambda: self._set_busy(True, busy_text))
            try:
                result = await asyncio.to_thread(work)  # the models run off the event loop
                if seq == self._run_seq:  # a later pick or run supersedes this one
                    await locked(lambda: then(result))
            except Exception as exc:  # noqa: BLE001 - a failing run is a message, not a broken session
                log.exception("a model run failed")
                await locked(lambda: self.notify(f"{type(exc).__name__}: {exc}", "danger"))
            finally:
                if seq == self._run_seq:
                    await locked(lambda: self._set_busy(False))

        pn.state.execute(task)

    def _on_load_models(self, event) -> None:
        if not self.config.allow_model_paths:  # pragma: no cover - the widgets do not exist then
            self.notify("This server does not allow loading other models (start it with --allow-model-paths).")
            return
        pre = (self._model_pre_w.value or "").strip() or None
        fine = (self._model_fine_w.value or "").strip() or None
        if fine is None:
            self.notify("Type at least the fine-tuned model (hub name or a folder on the server).")
            return

        def load():
            return self.registry.pair(pre, fine, device=self.config.device)

        def then(pair):
            self.pair = pair
            self.task = model_task(pair)
            if self.index is not None:
                try:
                    self.index.check_pair(pair)
                except ValueError as exc:
                    self.index, self.browser, self.head_panel = None, None, None
                    self.head_panel_slot.objects = []
                    self._setup_browser()
                    self.notify(f"Loaded {fine}. The corpus browser is off: {exc}")
            if self.head_panel is not None:
                self.head_panel.pair = pair
            self._pair_info.object = pair_html(pair, self.index, self.task)
            a = self.sentence_a or (self._sample_row or {}).get("sentence_a") or EXAMPLE_PAIR[0]
            b = self.sentence_b or (self._sample_row or {}).get("sentence_b") or EXAMPLE_PAIR[1]
            self._apply_result(self.registry.run(pair, a, b), a=a, b=b)

        self._run_then(load, then, "Loading the model pair …")

    # ------------------------------------------------------------------ URL

    def url_state(self) -> UrlState:
        """The shareable state shown now."""
        v = self.view
        # the level is left out where it is the one the view opens at by itself (the informative level
        # at this τ), so that a link without a level restores it, and one with a level keeps it
        level = None if v.result is None or int(v.level) == v.informative_level() else int(v.level)
        return UrlState(sample=self.sample_id or None, a=self.sentence_a or None, b=self.sentence_b or None,
                        tau=float(v.tau), mode=v.mode, level=level, selection=list(v.selection),
                        head=list(v.head), head_model=v.head_model)

    def url_query(self) -> str:
        """The query string that restores this view (defaults and empty values left out)."""
        return self.url_state().query(self.config.tau)

    def _write_url(self, *events) -> None:
        if not self._sync_url or self.result is None:
            return
        loc = pn.state.location
        if loc is None:
            return
        query = self.url_query()
        search = f"?{query}" if query else ""
        if loc.search != search:
            loc.search = search
