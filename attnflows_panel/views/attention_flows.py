"""``AttentionFlowsView``: the Attention Flows views of one sentence pair as one Panel component (§4).

It composes the Sentence view (influence circles, §4.2), the radial Attention Flow view (§4.3) and the
Sentence Context view (§4.3.1) with a τ slider, a level picker, the mode (pre-trained, fine-tuned or
combined), a legend and SVG/PNG export. It works as a notebook cell output as it is, and inside
``panel serve``::

    from attnflows_panel.models import ModelPair
    from attnflows_panel.views.attention_flows import AttentionFlowsView

    pair = ModelPair.load()
    view = AttentionFlowsView.from_sentences(pair, "The cat sat on the mat.", "A cat was on the mat.")
    view            # in a notebook; or view.servable() in a script for `panel serve`

Its state is a handful of plain, JSON-serialisable parameters (``tau``, ``mode``, ``level``,
``selection`` as ``[[level, token], ...]``, ``head`` as ``[layer, h]`` or ``[]``, ``head_model``), so an
app can sync them to the URL; setting them from Python updates the views, and clicks, brushes and
widget changes in the browser set them. **The view is the one owner of that state**: its controls
(:meth:`AttentionFlowsView.parts` ``.controls``) are made from these parameters with
``Widget.from_param``, so an app that shows them holds no copy of its own. The constants that go with
them are defined here once: :data:`MODES` (from :mod:`attnflows_panel.views.flow`), :data:`MODE_LABELS`
and :data:`TAU_BOUNDS`.

A view may be created without a result (``AttentionFlowsView(tau=0.2)``): its panes are then empty
and its figures are built when ``result`` is first set, so that an app can lay out the view and its
controls before the models have run.

**Document changes.** The parameters change at once; the Bokeh figures follow on the document's next
tick (``doc.add_next_tick_callback``, which runs under the document's lock) on a served page, so that
no figure is changed outside the lock, whoever changed a parameter (a widget change, which Panel runs
outside the lock, a click, the app); without a server they follow at once. Callbacks of the figures' own
Bokeh models (taps, brushes) report an exception to ``pn.config.exception_handler`` when one is set (the app shows it to
the user), instead of losing it in the server log.

Interactions (§4.4):

- hover a token: its trace (ancestors and descendants) and the heads involved, in the browser (no round
  trip); in the combined mode each model is traversed separately and coloured by model;
- hover a head glyph: that layer restricted to that head (Fig. 6(b)); hover one half of a split glyph
  for one model, hold shift to compare both models through that head;
- click a token or a head glyph: freeze; shift-click: add tokens; click empty space: clear;
- brush (box or lasso) tokens within a ring: their intersection traversal; tokens in two rings: the
  paths between them, the intermediate tokens and the heads that carry them (Figs. 7-8);
- click a token in the sentence view: select it at the chosen level.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
from typing import Any, NamedTuple

import numpy as np
import panel as pn
import param

from attnflows_panel import DEFAULT_TAU, FINETUNED_COLOR, PRETRAINED_COLOR
from attnflows_panel.bottleneck import bottleneck, reach, tau_bound
from attnflows_panel.compare import FINE, PRE
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.layout import RadialStyle
from attnflows_panel.views.context import ContextView, pack_context
from attnflows_panel.views.export import export_views
from attnflows_panel.views.flow import (
    MODES,
    FlowData,
    Highlight,
    legend_html,
    legend_items,
)
from attnflows_panel.views.notebook_hold import NotebookHold, in_session
from attnflows_panel.views.radial import RadialFlow, pack_flow, pack_highlight, pack_roles
from attnflows_panel.views.sentence import SentenceView, pack_sentence
from attnflows_panel.views.tau_profile import TauProfile, pack_widths

__all__ = ["AttentionFlowsView", "ViewParts", "check_result", "MODES", "MODE_LABELS", "TAU_BOUNDS"]

log = logging.getLogger(__name__)

#: the mode buttons' labels, in the order of :data:`MODES`
MODE_LABELS = {"Combined": "combined", "Pre-trained": "pretrained", "Fine-tuned": "finetuned"}
#: the range of τ that the views (and the app's slider and URL) accept. Below 0.01 nearly every
#: attention weight is an edge; above 0.95 the graph is [CLS] alone for any model.
TAU_BOUNDS = (0.01, 0.95)


def reported(fn):
    """Decorate a Bokeh ``on_change`` callback: an exception goes to ``pn.config.exception_handler``
    (the app shows it to its user and logs it) when one is set; without a handler it is raised."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            handler = pn.config.exception_handler
            if handler is None:
                raise
            handler(exc)

    return wrapper



#: the parameters that the figures draw, and what a change of each redraws (``AttentionFlowsView._redraw``)
_REDRAW = {"result": "graph", "tau": "graph", "mode": "graph", "level": "level", "selection": "selection",
           "head": "selection", "head_model": "selection", "size": "size", "focus": "focus", "alpha": "alpha"}

#: CSS height of the flow view: the window's height less a margin, at least 420 px. Its width is what the
#: row leaves beside it; the drawing is the largest square in that box.
FLOW_HEIGHT = "max(420px, calc(100vh - 40px))"
#: the Sentence Context view's box (px, square)
CONTEXT_SIZE = 300
#: CSS max-height of the Sentence view in the default layout: beyond it the view scrolls inside itself
SENTENCE_HEIGHT = "max(160px, calc(100vh - 560px))"


def check_result(result: Any) -> tuple[int, int, int]:
    """Check that ``result`` looks like a :class:`~attnflows_panel.models.PairResult`; return (L, H, n)."""
    if result is None:
        raise ValueError("AttentionFlowsView needs a result: a PairResult from ModelPair.run(sentence_a, sentence_b)")
    for attr in ("tokens", "segments", "pretrained", "finetuned"):
        if not hasattr(result, attr):
            raise ValueError(f"result must be a PairResult (from ModelPair.run); it has no {attr!r}")
    n = len(result.tokens)
    if len(result.segments) != n:
        raise ValueError(f"result has {n} tokens but {len(result.segments)} segment ids")
    shapes = []
    for name in ("pretrained", "finetuned"):
        att = np.asarray(getattr(getattr(result, name), "attentions", None))
        if att.ndim != 4 or att.shape[2:] != (n, n):
            raise ValueError(
                f"result.{name}.attentions must be [L, H, n, n] with n = {n} tokens; got shape {att.shape}"
            )
        shapes.append(att.shape)
    if shapes[0] != shapes[1]:
        raise ValueError(f"the two models' attentions differ in shape: {shapes[0]} vs {shapes[1]}")
    L, H = shapes[0][:2]
    return int(L), int(H), n


class _PairResultParameter(param.Parameter):
    """A parameter that only takes a PairResult-like object (checked by :func:`check_result`)."""

    def _validate(self, val):
        super()._validate(val)
        if val is not None:
            check_result(val)


class ViewParts(NamedTuple):
    """:meth:`AttentionFlowsView.parts`: the views and controls of one AttentionFlowsView."""

    sentence: SentenceView  #: Sentence view (influence circles, §4.2): one JSComponent (views/sentence.py)
    flow: RadialFlow  #: radial Attention Flow view (§4.3): one JSComponent (views/radial.py)
    context: pn.Column  #: what goes beside the flow view: the Sentence Context view and the legend
    controls: pn.Column  #: mode, τ, level, focus, clear (SVG/PNG export: the radial view's own toolbar)
    legend: pn.pane.HTML  #: the colours and glyphs, in the views' colours (already inside ``context``)
    status: pn.pane.HTML  #: what the frozen selection shows
    info: None = None  #: unused: the hover details are drawn inside the radial component (top left)
    #: the Sentence Context view alone (§4.3.1, views/context.py), for a layout that places the legend
    #: elsewhere instead of ``context`` (place either, not both)
    context_view: ContextView | None = None


class OneBasedSlider(pn.widgets.IntSlider):
    """An integer slider whose value reads one more than it is (the view's levels are 0-based, as in Hugging
    Face, and 1-based wherever a user reads them). The formatter is a Bokeh model made afresh for each output:
    one instance given as ``format`` would be shared by the Bokeh sliders of every output, and a view shown in a
    second notebook cell would fail ("Models must be owned by only a single document")."""

    def __init__(self, **params):
        super().__init__(format="0", **params)  # a placeholder, for the output's own formatter below

    def _process_param_change(self, params):
        params = super()._process_param_change(params)
        if "format" in params:  # a new output (or a new format): a formatter of its own
            from bokeh.models import CustomJSTickFormatter

            params["format"] = CustomJSTickFormatter(code="return (tick + 1).toString()")
        return params


class AttentionFlowsView(NotebookHold, pn.viewable.Viewer):
    """The Attention Flows views of one sentence pair (a ``PairResult``), as one Panel component.

    It owns the view state (``tau``, ``mode``, ``level``, ``selection``, ``head``, ``head_model``); its
    controls are made from these parameters (see :meth:`parts`). Stable CSS classes of the controls,
    for tests that drive them in a browser (Panel 1.9's widget ``name`` is its visible label):
    ``attnflows-mode``, ``attnflows-tau``, ``attnflows-level``, ``attnflows-focus``, ``attnflows-clear``.
    SVG/PNG export in the browser: the radial view's toolbar buttons (``.af-tool-svg``, ``.af-tool-png``);
    without a browser: :meth:`export`.
    """

    result = _PairResultParameter(
        default=None, allow_refs=True,
        doc="A PairResult (ModelPair.run(a, b)): tokens, segments, both models' attentions.")
    tau = param.Number(default=DEFAULT_TAU, bounds=TAU_BOUNDS, step=0.01, label="τ (attention threshold)",
                       doc="τ: an attention weight above τ is an edge of the Attention Graph (§4.1).")
    mode = param.Selector(default="combined", objects=list(MODES),
                          doc="Which graph(s) to draw: both models (combined) or one.")
    level = param.Integer(default=0, bounds=(0, 1), label="Level (sentence view; 1 = input)",
                          doc="Level k (0-based) whose influence I_k (eq. 4) the sentence view shows.")
    selection = param.List(default=[], item_type=list, doc="Frozen selection: [[level, token_position], ...].")
    head = param.List(default=[],
                      doc="[] or [layer, h]: a head click shows what head h attends to above τ at its layer, "
                          "in both models (FlowData.head_highlight).")
    head_model = param.Selector(default="both", objects=["both", "pretrained", "finetuned"],
                                doc="The model of the clicked glyph half (combined mode); a head click shows "
                                    "both models either way.")
    alpha = param.Number(default=0.5, bounds=(0.0, 1.0), doc="Decay α of eq. 4 (the paper uses 0.5).")
    size = param.Integer(default=None, allow_None=True, bounds=(200, 3000),
                         doc="Radial view size in px (None: square, following the width of its container).")
    flow_height = param.String(default=FLOW_HEIGHT, regex=r"^[^;{}]*[^;{}\s][^;{}]*$", doc=(
        "CSS height of the radial view's box when size is None: the window's height less what sits above "
        "the view (the drawing is the largest square in this height and the width its container leaves). "
        "A page with more above the view (the app's header and sample card) passes its own."))
    focus = param.Boolean(default=False,
                          doc="Focus: show only the traced subgraph of the hover or the frozen selection.")
    status = param.String(default="", constant=True, doc="What the frozen selection shows (read-only).")
    clear = param.Action(default=lambda self: self.clear_selection(), label="Clear selection",
                         doc="Clear the frozen selection (the button of the controls).")

    def __init__(self, result=None, **params):
        self._data: FlowData | None = None
        self._data_key: tuple = ()
        self._flow: RadialFlow | None = None
        self._graphs_cache: dict = {}
        self._shown = None
        self._pending: set[str] = set()  # what changed since the figures were last drawn (_redraw)
        self._scheduled = False
        self._owed: dict = {}  # id(document) -> (document, comm, {(model id, property): model}) owed (_holding)
        self._L = self._H = self._n = 0
        self._style = params.pop("style", None) or RadialStyle()
        #: ``(owner, key, make) -> value``: a cache that several views share (an app passes its
        #: registry's ``shared``), so that the analysis of one result at one τ and mode is built once
        self._cache = params.pop("cache", None)
        auto_level = "level" not in params  # open the sentence view where it says the most
        if result is not None:
            L = check_result(result)[0]
            self.param.level.bounds = (0, max(1, L - 1))
        super().__init__(result=result, **params)
        # square, as wide as its container allows and never taller than the window (less the sentence
        # view above it), so the whole view fits at 1280×800 and grows with larger windows
        self._flow_pane = RadialFlow(margin=0, min_width=320, min_height=320, **self._flow_box())
        self._flow_pane.param.watch(self._on_pick, ["pick"])
        self._flow_pane.param.watch(self._on_shown, ["shown"])
        self._sentence_pane = SentenceView(margin=(0, 0, 6, 0), sizing_mode="stretch_width", min_width=200,
                                           scroll_height=SENTENCE_HEIGHT)
        self._sentence_pane.param.watch(self._on_sentence_select, ["pick"])
        self._context_pane = ContextView(margin=(0, 10), width=CONTEXT_SIZE, height=CONTEXT_SIZE)
        self._build_widgets()
        #: what goes beside the flow view: the Sentence Context view, the hover details and the legend
        self._side = pn.Column(self._context_pane, self._legend, width=340)
        if self.result is not None:
            self._new_result()
            if auto_level:  # see informative_level
                with param.parameterized.discard_events(self):
                    self.level = self.informative_level()
            self._check_level()
        self._check_selection()
        if self.result is not None:
            self._rebuild()
            self._update_panes()
        # one watcher for everything the figures draw: one ``param.update`` is one redraw (one push)
        self.param.watch(self._on_params, list(_REDRAW))
        # a new result without a level of its own: the sentence view opens at the informative level
        self.param.watch(self._on_new_result_level, ["result", "level"])
        self.param.watch(self._on_flow_box, ["flow_height", "size"])
        self._sync_controls()  # the level chosen above, the model's layers
        self._layout = None  # the default layout, made when first shown (an app lays out parts() itself)
        self._controls = None

    # ------------------------------------------------------------------ construction

    def _flow_box(self) -> dict:
        """The radial view's box: as wide as its container and ``flow_height`` high (``size`` None), or
        fixed (the figure's own ``size``)."""
        if self.size is None:
            return {"sizing_mode": "stretch_width", "width": None, "height": None,
                    "styles": {"height": self.flow_height}}
        return {"sizing_mode": "fixed", "width": int(self.size), "height": int(self.size), "styles": {}}

    def _on_flow_box(self, *events) -> None:
        self._flow_pane.param.update(**self._flow_box())

    @classmethod
    def from_sentences(cls, pair, sentence_a: str, sentence_b: str, **params) -> AttentionFlowsView:
        """Run a sentence pair through a :class:`~attnflows_panel.models.ModelPair` and view it."""
        return cls(result=pair.run(sentence_a, sentence_b), **params)

    def _build_widgets(self) -> None:
        """The controls. Each sets its parameter, and shows it through :meth:`_sync_controls`, which the
        view calls with its own redraw (not a ``from_param`` link, which would push on its own: in a
        notebook the view sends nothing before its output is laid out, see :meth:`_holding`)."""
        W = pn.widgets
        lo, hi = TAU_BOUNDS
        self._tau_slider = W.FloatSlider(start=lo, end=hi, step=0.01, value=self.tau, label=self.param.tau.label,
                                         sizing_mode="stretch_width", css_classes=["attnflows-tau"])
        self._mode_buttons = W.RadioButtonGroup(options=MODE_LABELS, value=self.mode, sizing_mode="stretch_width",
                                                css_classes=["attnflows-mode"])
        # levels read 1-based in the UI, as in the paper (the parameter stays 0-based, HF order)
        self._level_slider = OneBasedSlider(start=0, end=self.param.level.bounds[1], value=self.level,
                                            label=self.param.level.label, sizing_mode="stretch_width",
                                            css_classes=["attnflows-level"])
        self._focus = W.Checkbox(value=self.focus, label="Focus: only the traced subgraph",
                                 sizing_mode="stretch_width", css_classes=["attnflows-focus"])
        # a slider sets its parameter when the drag ends (value_throttled), as from_param(throttled=True)
        for widget, name, attr in ((self._tau_slider, "tau", "value_throttled"), (self._mode_buttons, "mode", "value"),
                                   (self._level_slider, "level", "value_throttled"), (self._focus, "focus", "value")):
            widget.param.watch(functools.partial(self._on_control, name), [attr])
        self._clear = W.Button.from_param(self.param.clear, sizing_mode="stretch_width",
                                          css_classes=["attnflows-clear"])
        # the τ profile under the slider: tokens in each model's graph at every τ; a click sets τ
        self._tau_profile = TauProfile(tau=self.tau, tau_max=0.6, height=100, sizing_mode="stretch_width",
                                       margin=(0, 10, 6, 10), css_classes=["attnflows-tau-profile-pane"])
        self._tau_profile.param.watch(self._on_profile_tau, ["tau"])
        self._profile_key: tuple = ()
        self._legend = pn.pane.HTML("", width=280, margin=(5, 10))
        self._status = pn.pane.HTML("", width=280, margin=(5, 10), styles={"font-size": "12px", "color": "#444"})

    def _on_control(self, name: str, event) -> None:
        """A control moved: set its parameter (the view checks and redraws as for any other change)."""
        if getattr(self, name) != event.new:
            setattr(self, name, event.new)

    def _sync_controls(self) -> None:
        """Show the parameters in the controls (and the level slider's range for the model's layers)."""
        hi = self.param.level.bounds[1]
        if self._level_slider.end != hi:
            self._level_slider.end = hi
        for widget, value in ((self._tau_slider, self.tau), (self._mode_buttons, self.mode),
                              (self._level_slider, self.level), (self._focus, self.focus)):
            if widget.value != value:
                widget.value = value

    def _on_profile_tau(self, event) -> None:
        """A click or drag on the τ profile sets τ (within the slider's bounds)."""
        lo, hi = TAU_BOUNDS
        tau = round(min(hi, max(lo, float(event.new))), 4)
        if tau != self.tau:
            self.tau = tau

    def _update_profile(self) -> None:
        """The τ profile of the current result and mode (its data only when they changed) at τ."""
        key = (id(self.result), self.mode)
        if key != self._profile_key:
            self._profile_key = key
            widths = self._graphs_cache.get(("widths", id(self.result)))
            if widths is None:
                self._graphs()
                widths = self._graphs_cache[("widths", id(self.result))]
            shown = {"pretrained": (PRE,), "finetuned": (FINE,)}.get(self.mode, (PRE, FINE))
            by_code = {PRE: widths[0].node, FINE: widths[1].node}
            self._tau_profile.param.update(data=pack_widths({c: by_code[c] for c in shown}), tau=self.tau)
        elif self._tau_profile.tau != self.tau:
            self._tau_profile.tau = self.tau

    def clear_selection(self) -> None:
        """Forget the frozen selection and its head restriction."""
        self.param.update(selection=[], head=[], head_model="both")

    def _flow_data(self) -> FlowData:
        """What the views draw for ``result`` at τ and mode (from the shared cache when one is given)."""
        def make():
            pre, fine = self._graphs()
            r = self.result
            return FlowData(r.tokens, r.segments, pre, fine, self.mode, self._style)

        if self._cache is None:
            return make()
        return self._cache(self.result, ("flow-data", float(self.tau), self.mode, self._style), make)

    def _graphs(self) -> tuple[AttentionGraph, AttentionGraph]:
        """Both models' graphs at τ, read off each model's widest-path widths (``bottleneck.py``, one pass
        per result: a τ change thresholds them instead of rebuilding; the graphs equal ``AttentionGraph.build``)."""
        key = (id(self.result), float(self.tau))
        if key not in self._graphs_cache:
            r = self.result
            wkey = ("widths", id(r))
            widths = self._graphs_cache.get(wkey)
            if len(self._graphs_cache) > 8:
                self._graphs_cache.clear()
            if widths is None:
                root = int(getattr(r, "cls_position", 0))  # [CLS] of a BERT pair; a decoder's chosen root
                widths = tuple(bottleneck(np.asarray(out.attentions), root=root) for out in (r.pretrained, r.finetuned))
            self._graphs_cache[wkey] = widths
            self._graphs_cache[key] = (widths[0].graph(self.tau), widths[1].graph(self.tau))
        return self._graphs_cache[key]

    def _flow_data_if_current(self) -> FlowData | None:
        """``self._data`` when it was built for the current result, τ and mode, else None."""
        return self._data if self._data_key == (id(self.result), float(self.tau), self.mode) else None

    def _rebuild(self) -> None:
        self._shown = self.result
        self._data = data = self._flow_data()
        self._data_key = (id(self.result), float(self.tau), self.mode)
        self._flow = self._flow_pane
        self._sentence_pane.data = pack_sentence(data, self.level, self.alpha, self._roles())
        self._context_pane.param.update(data=pack_context(data), level=self.level)
        self._update_profile()
        self._flow.param.update(data=self._packed_flow(data), level=self.level, focus=self.focus,
                                legend=[list(r) for r in legend_items(data, self.level)], title=self._title(),
                                sentences=[str(getattr(self.result, "sentence_a", "") or ""),
                                           str(getattr(self.result, "sentence_b", "") or "")])
        self._show_selection()

    def _packed_flow(self, data: FlowData) -> dict:
        """pack_flow(data) plus each node's widest-path width in each model drawn (``n_b1``, ``n_b2``):
        the hover text says below which τ the token is in that model's graph (bottleneck.describe_width)."""
        packed = pack_flow(data)
        roles = self._roles()
        if roles:  # a decoder's sequence: each ring cell tinted in its token's role colour (radial.js drawRings)
            packed.update(pack_roles(data, roles, packed))
        widths = self._graphs_cache.get(("widths", id(self.result)))
        if widths is not None:
            lv, pos = np.asarray(packed["n_level"], np.intp), np.asarray(packed["n_pos"], np.intp)
            for code, b in ((PRE, widths[0]), (FINE, widths[1])):
                if code in data.graphs:
                    packed[f"n_b{code}"] = np.asarray(b.node, np.float32)[lv, pos]
        packed["notice"] = self.reach_notice(data)
        return packed

    def reach_notice(self, data: FlowData | None = None) -> str:
        """"" when each drawn model's graph at τ reaches the input; else what stops it, and below which τ
        it goes further (read off the widest-path widths): at the default τ a long pair's graph may be the
        root alone, and bare rings would not say why. Plain text (tokens are user text: escape for HTML)."""
        data = data if data is not None else self._data
        if data is None or self.result is None:
            return ""
        widths = self._graphs_cache.get(("widths", id(self.result)))
        if widths is None:  # FlowData from a shared cache: the widths are one pass away
            self._graphs()
            widths = self._graphs_cache[("widths", id(self.result))]
        names = {PRE: "pre-trained", FINE: "fine-tuned"}
        root = self.result.tokens[int(getattr(self.result, "cls_position", 0))]
        parts = []
        for code, b in ((PRE, widths[0]), (FINE, widths[1])):
            if code not in data.graphs:
                continue
            r = reach(b.node, self.tau)
            if r.lowest == 0:
                continue
            if r.lowest == b.L:
                more = (f"its next level for {tau_bound(r.next_below)}" if r.next_below > 0
                        else "no token below it at any τ")
                parts.append(f"the {names[code]} graph is “{root}” alone ({more})")
            else:
                more = f"the input for {tau_bound(r.input)}" if r.input > 0 else "never the input"
                parts.append(f"the {names[code]} graph stops at level {r.lowest + 1} ({more})")
        if not parts:
            return ""
        return f"At τ = {self.tau:.2f} " + "; ".join(parts) + ". Lower τ to follow it further."

    def _roles(self):
        """A decoder's segments by role for the sentence view (``role_bands`` of its result), else None."""
        return getattr(self.result, "role_bands", None)

    def _title(self) -> str:
        return f"Attention Flows · {self.mode} · τ = {self.tau:.2f} · level {self.level + 1}"

    def _on_new_result_level(self, *events) -> None:
        """A result set without a level in the same update (``param.update(result=r)``) opens the
        sentence view at :meth:`informative_level`; ``param.update(result=r, level=k)`` keeps a ``k`` that
        differs from the current level, and ``level = k`` after the result always wins (the app restores
        a shared URL's level that way)."""
        names = {e.name for e in events}
        if "result" not in names or "level" in names or self.result is None:
            return
        L = check_result(self.result)[0]
        self.param.level.bounds = (0, max(1, L - 1))
        self.level = self.informative_level()

    def draw_now(self) -> None:
        """Draw a pending redraw at once instead of on the next tick: for a caller that holds the
        document's lock, e.g. while a session's first document is built (so the first view is part of
        the document a browser pulls, not patches after it)."""
        if self._scheduled:
            self._draw_pending()

    def informative_level(self) -> int:
        """The level whose influence (eq. 4) the two models' graphs disagree on most (the sum over tokens
        of ``|I_pre - I_fine|``, :meth:`GraphComparison.most_different_level`): where the sentence view
        opens when no level is given."""
        from attnflows_panel.compare import GraphComparison

        def make():
            pre, fine = self._graphs()
            return GraphComparison(pre, fine).most_different_level(self.alpha)

        key = (id(self.result), float(self.tau), float(self.alpha))
        if self._cache is not None:
            return self._cache(self.result, ("informative-level",) + key[1:], make)
        if getattr(self, "_informative", (None, None))[0] != key:
            self._informative = (key, make())
        return self._informative[1]

    def _make_layout(self):
        parts = self.parts()
        # the radial view on the left at the window's height (flow_height), everything else in one column
        # beside it: the controls, the status, the context view, the sentence view (scrolling inside
        # itself beyond SENTENCE_HEIGHT) and the legend
        side = pn.Column(
            pn.pane.HTML("<b>Attention Flows</b>", margin=(5, 10, 0, 10)),
            parts.controls, parts.status, parts.context_view, parts.sentence, parts.legend,
            width=340,
        )
        return pn.Row(parts.flow, side, sizing_mode="stretch_width")

    def __panel__(self):
        if self._layout is None:
            self._layout = self._make_layout()
        return self._layout

    # ------------------------------------------------------------------ checks

    def _check_level(self) -> None:
        if self.result is not None and not 0 <= self.level <= self._L - 1:
            raise ValueError(
                f"level must be in 0 .. {self._L - 1} (the layers whose influence I_k is defined); got {self.level}")

    def _check_selection(self) -> None:
        if self.result is None:
            if self.selection or self.head:
                raise ValueError("a selection needs a result to select in")
            return
        for item in self.selection:
            if len(item) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in item):
                raise ValueError(f"selection items must be [level, token] integer pairs; got {item!r}")
            lv, tok = item
            if not 0 <= lv <= self._L or not 0 <= tok < self._n:
                raise ValueError(
                    f"selection item {item!r} is out of range: levels 0..{self._L}, tokens 0..{self._n - 1}")
        if self.head:
            integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.head)
            if len(self.head) != 2 or not integers:
                raise ValueError(f"head must be [] or [layer, h] integers; got {self.head!r}")
            layer, h = self.head
            if not 0 <= layer < self._L or not 0 <= h < self._H:
                raise ValueError(f"head {self.head!r} is out of range: layers 0..{self._L - 1}, heads 0..{self._H - 1}")

    # ------------------------------------------------------------------ parameter watchers

    def _new_result(self) -> None:
        """A new pair: check it, forget the old graphs; the level's range follows the model's layers."""
        self._L, self._H, self._n = check_result(self.result)
        self._graphs_cache.clear()
        self.param.level.bounds = (0, max(1, self._L - 1))

    def _on_params(self, *events) -> None:
        """Check the changed parameters and redraw once for all of them.

        One watcher for every parameter that the figures draw, so that ``param.update(mode=..., selection=...)``
        (or a Bokeh callback that sets several) is one redraw: in a notebook one push of the figures'
        final state, on a served page one change on the next tick."""
        names = {e.name for e in events}
        if "tau" in names:
            tau = round(float(self.tau), 4)  # a slider's 0.15 - 0.01 is 0.13999999999999999
            if tau != self.tau:
                with param.parameterized.discard_events(self):
                    self.tau = tau
        if self.result is not None and names & {"result", "tau", "mode"} and self.result is not self._shown:
            self._shown = self.result
            self._new_result()
            with param.parameterized.discard_events(self):  # one rebuild for all
                if self.level > self._L - 1:
                    self.level = 0
                self.selection = []
                self.head = []
                self.head_model = "both"
        if "level" in names:
            self._check_level()
        if names & {"selection", "head", "head_model"}:
            self._check_selection()
        self._redraw(*{_REDRAW[n] for n in names})

    def _redraw(self, *what: str) -> None:
        """Bring the figures up to the parameters (``what`` changed: "graph", "level", "selection", ...).

        On a served page this runs on the document's next tick (``doc.add_next_tick_callback``), which
        holds the document's lock, whatever called it: a widget change that Panel runs outside the
        lock, a Bokeh callback, or the app. Several changes before that tick make one redraw. Without a
        server (a notebook, a test) it runs at once."""
        if self.result is None:
            with self._holding():
                self._sync_controls()
            return
        self._pending.update(what)
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self._draw_pending()
            return
        if not self._scheduled:
            self._scheduled = True
            doc.add_next_tick_callback(self._draw_pending)

    @reported
    def _draw_pending(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, set()
        if self.result is None or not pending:
            return
        from panel.io.notebook import block_comm

        if self._held():  # a notebook output not laid out yet: everything stays on the document
            with self._holding():
                self._draw_figures(pending)
                self._sync_controls()
                self._set_panes()
            if "graph" in pending:
                self.param.trigger("status")
            return
        # in a notebook, the radial component's and the Bokeh figures' changes go in one message (_push)
        with block_comm() if not in_session() else contextlib.nullcontext():
            self._draw_figures(pending)
            self._sync_controls()
        # In a notebook the figures' changes go to the browser now, in a message of their own, and the
        # panes' text after them. BokehJS redraws a text glyph whose source changed length in steps
        # that wait on each other (``await``); a pane's new text in the same message would lay the
        # whole output out again at once and paint that glyph half-updated ("Size mismatch", "Offset is
        # outside the bounds of the DataView" in JupyterLab). A served page shows the panes elsewhere.
        self._push()
        self._update_panes()
        if "graph" in pending:
            # what the status line says (n, ring sizes) changed with the data: an app that shows
            # status_html() (watching ``status``) follows a new sample, τ or mode (issue #25, 2)
            self.param.trigger("status")

    def _draw_figures(self, pending: set[str]) -> None:
        if "graph" in pending or self._flow is None:
            self._rebuild()  # level and selection included
        else:
            if "level" in pending or "alpha" in pending:
                self._flow.param.update(level=self.level, title=self._title(),
                                        legend=[list(r) for r in legend_items(self._data, self.level)])
                self._context_pane.level = self.level
                self._sentence_pane.data = pack_sentence(self._data, self.level, self.alpha, self._roles())
            if "focus" in pending:
                self._flow.focus = self.focus
            if pending & {"level", "alpha", "selection"}:
                self._show_selection()

    def _update_panes(self) -> None:
        """The status line and the legend (Panel panes).

        In a notebook both changes go to the browser in one message. Panel would send each pane's change
        in a message of its own, and the first of them may define a model that the second refers to (a
        stylesheet that Panel gives both panes); until the browser has opened the output's comm, Panel
        retries each message on a timer of its own, so the second could overtake the first ("reference
        … isn't known" in JupyterLab after Run All). ``block_comm`` holds Panel's pushes (Panel's
        notebook API); one push then sends the document's held changes together."""
        from panel.io.notebook import block_comm

        notebook = not in_session()
        with block_comm() if notebook else contextlib.nullcontext():
            self._set_panes()
        if notebook:
            pn.io.push_notebook(self._status, self._legend)

    def _set_panes(self) -> None:
        self._status.object = self.status_html()
        self._legend.object = self._legend_html()

    def _push(self) -> None:
        """In a notebook, in-place Bokeh changes need an explicit push (``pn.io.push_notebook``, Panel's
        Bokeh pane docs); a served session sends them itself."""
        if not in_session():
            pn.io.push_notebook(self._flow_pane, self._sentence_pane, self._context_pane)

    # ------------------------------------------------------------------ selection

    def highlight(self) -> Highlight:
        """The frozen highlight of the current selection (asked of graph/compare)."""
        head = tuple(self.head) if self.head else None
        data = self._data if not self._pending else self._flow_data()  # the figures may lag a tick behind
        return data.highlight(self.selection, head, self.head_model if head else None)

    def _show_selection(self) -> None:
        """Draw the frozen selection in the figures; set ``status`` (the status pane follows in
        :meth:`_update_panes`)."""
        data = self._data
        hl = self.highlight()
        self._flow.frozen = pack_highlight(data, hl, self.selection)
        self._context_pane.show_states(data, hl)
        self._sentence_pane.show_states(data, hl)
        with param.edit_constant(self):
            self.status = self._status_text(hl)

    @reported
    def _on_pick(self, event) -> None:
        """What the radial component picked in the browser (a click, a shift-click, a head glyph, a brush,
        clear): ``{"selection": [[level, token], ...], "head": [] or [layer, h], "head_model"}``."""
        pick = event.new or {}
        if self.result is None or self._data is None:
            return
        try:
            sel = [[int(a), int(b)] for a, b in pick.get("selection", [])]
            head = [int(v) for v in pick.get("head", [])]
        except (TypeError, ValueError):
            return  # not a pick the component sends
        hm = pick.get("head_model", "both")
        if hm not in ("both", "pretrained", "finetuned"):
            hm = "both"
        self.param.update(selection=sel, head=head if sel else [], head_model=hm if head else "both")

    @reported
    def _on_sentence_select(self, event) -> None:
        """A token clicked in the sentence view (its ``pick``: ``{"pos", "seq"}``): select it at the chosen
        level, or say that it is not a node of that level."""
        pick = event.new or {}
        if self.result is None or self._data is None or "pos" not in pick:
            return
        try:
            pos = int(pick["pos"])
        except (TypeError, ValueError):
            return  # not a pick the component sends
        if not 0 <= pos < self._data.n:
            return
        if self._data.node_id(self.level, pos) < 0:
            self._status.object = (f"<i>“{html.escape(self._data.tokens[pos])}” is not a node of level "
                                   f"{self.level + 1} at τ = {self.tau:.2f}; pick another level.</i>")
            return
        self.param.update(selection=[[self.level, pos]], head=[], head_model="both")

    # ------------------------------------------------------------------ text

    def _status_text(self, hl: Highlight) -> str:
        if not self.selection:
            return ""
        toks = ", ".join(f"“{self._data.tokens[t]}” (level {lv + 1})" for lv, t in self.selection[:6])
        extra = f" (head {self.head[1] + 1} of layer {self.head[0] + 1}, {self.head_model})" if self.head else ""
        message = hl.message
        levels = {int(lv) for lv, _ in self.selection}
        if len(self.selection) > 1 and len(levels) == 1:
            # issue #25 (10): a brush whose intersection is empty says so (no common ancestor below the
            # brushed level; at level 1, the input, no common descendant)
            lv = next(iter(levels))
            nodes_lv = self._data.columns("nodes")["level"]
            other = hl.nodes.astype(bool) & ~hl.origin & ((nodes_lv < lv) if lv > 0 else True)
            if not other.any():
                below = "ancestor on the levels below" if lv > 0 else "token on another level"
                message = (f"the intersection of the {len(self.selection)} brushed tokens at level {lv + 1} is empty: "
                           f"they share no {below}")
        return f"selected {toks}{extra}" + (f": {message}" if message else "")

    def status_html(self, hl: Highlight | None = None) -> str:
        """The predictions, the ring sizes and what the frozen selection shows, as HTML (user text escaped)."""
        r = self.result
        d = self._data
        if r is None or d is None:
            return ""
        if d is not self._flow_data_if_current():
            d = self._flow_data()  # the figures are a tick behind the parameters: say what they will show
        parts = []
        models = (("pre-trained", r.pretrained, PRETRAINED_COLOR), ("fine-tuned", r.finetuned, FINETUNED_COLOR))
        for name, out, color in models:
            label = getattr(out, "label", None)
            probs = getattr(out, "probs", None)
            if label is not None:
                p = f" ({probs[label]:.2f})" if probs and label in probs else ""
                parts.append(f'<span style="color:{color}">■</span> {name}: <b>{html.escape(str(label))}</b>{p}')
        sizes = " · ".join(str(len(lv)) for lv in d.levels[::-1])
        parts.append(f"n = {d.n} tokens{' (truncated)' if getattr(r, 'truncated', False) else ''}; "
                     f"ring sizes (root → level 0): {sizes}")
        notice = self.reach_notice(d)
        if notice:
            parts.append(f"<i>{html.escape(notice)}</i>")  # tokens are user text
        if self.status:
            parts.append(f"<b>{html.escape(self.status)}</b>")  # tokens are user text
        return "<br>".join(parts)

    def _legend_html(self) -> str:
        return legend_html(self._data, self.level)

    # ------------------------------------------------------------------ export

    def export(self, fmt: str = "svg") -> bytes:
        """The current views, frozen selection included, as SVG or PNG bytes (no browser needed)."""
        return export_views(self, fmt)

    def parts(self) -> ViewParts:
        """The view's pieces as Panel objects, for a layout of one's own (the app's sidebar and main area).

        They are the objects this view's default layout shows, and they stay live: every change of
        ``result``, τ, mode, level or selection updates the figures in place, so place each part once.
        """
        if self._controls is None:
            self._controls = pn.Column(self._mode_buttons, self._tau_slider, self._tau_profile, self._level_slider,
                                       self._focus,
                                       self._clear, sizing_mode="stretch_width", css_classes=["af-view-controls"])
        return ViewParts(
            sentence=self._sentence_pane,
            flow=self._flow_pane,
            context=self._side,
            controls=self._controls,
            legend=self._legend,
            status=self._status,
            info=None,
            context_view=self._context_pane,
        )

    # ------------------------------------------------------------------ introspection (tests, apps)

    @property
    def data(self) -> FlowData:
        """What the radial view draws now."""
        return self._data

    @property
    def flow(self) -> RadialFlow:
        return self._flow

    @property
    def sentence_view(self) -> SentenceView:
        """The Sentence view's component (what it was sent: ``.data``, ``.states``)."""
        return self._sentence_pane

    @property
    def context_view(self) -> ContextView:
        """The Sentence Context view's component (what it was sent: ``.data``, ``.states``, ``.level``)."""
        return self._context_pane


if pn.state.served and __name__.startswith("bokeh_app"):  # pragma: no cover - `panel serve <this file>`
    from attnflows_panel.models import ModelPair

    _pair = ModelPair.load()
    AttentionFlowsView.from_sentences(
        _pair, "The cat sat on the mat.", "A cat was sitting on the mat."
    ).servable(title="Attention Flows")
