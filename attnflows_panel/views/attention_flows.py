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
widget changes in the browser set them.

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

import html
import io
from typing import Any, NamedTuple

import numpy as np
import panel as pn
import param

from attnflows_panel import DEFAULT_TAU, FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.layout import RadialStyle
from attnflows_panel.views.context import ContextFigure
from attnflows_panel.views.export import export_views
from attnflows_panel.views.flow import (
    GLYPH_PALETTE,
    MODES,
    RAMP_STEPS,
    FlowData,
    FlowFigure,
    Highlight,
    legend_html,
)
from attnflows_panel.views.sentence import SentenceFigure

__all__ = ["AttentionFlowsView", "ViewParts", "check_result"]

#: CSS height of the flow view: the window's height less the header and the sentence view above it, at
#: least 420 px. Its width is what the row leaves; the drawing is the largest square in that box.
FLOW_HEIGHT = "max(420px, calc(100vh - 190px))"

_MODE_LABELS = {"Combined": "combined", "Pre-trained": "pretrained", "Fine-tuned": "finetuned"}


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

    sentence: pn.pane.Bokeh  #: Sentence view (influence circles, §4.3.2)
    flow: pn.pane.Bokeh  #: radial Attention Flow view (§4.3.1)
    context: pn.Column  #: what goes beside the flow view: the Sentence Context view, the hover details and the legend
    controls: pn.Column  #: mode, τ, level, focus, clear, SVG/PNG export
    legend: pn.pane.HTML  #: the colours and glyphs, in the views' colours (already inside ``context``)
    status: pn.pane.HTML  #: what the frozen selection shows
    info: pn.pane.Bokeh = None  #: the hover details (Bokeh Div ``attnflows-hover-info``; already inside ``context``)


class AttentionFlowsView(pn.viewable.Viewer):
    """The Attention Flows views of one sentence pair (a ``PairResult``), as one Panel component."""

    result = _PairResultParameter(default=None, doc="A PairResult (ModelPair.run(a, b)): tokens, segments, both models' attentions.")
    tau = param.Number(default=DEFAULT_TAU, bounds=(0.0, 0.99), step=0.01, doc="τ: an attention weight above τ is an edge of the Attention Graph (§4.1).")
    mode = param.Selector(default="combined", objects=list(MODES), doc="Which graph(s) to draw: both models (combined) or one.")
    level = param.Integer(default=0, bounds=(0, None), doc="Level k (0-based) whose influence I_k (eq. 4) the sentence view shows.")
    selection = param.List(default=[], item_type=list, doc="Frozen selection: [[level, token_position], ...].")
    head = param.List(default=[], doc="[] or [layer, h]: only head h connects that layer in the frozen traversal (Fig. 6(b)).")
    head_model = param.Selector(default="both", objects=["both", "pretrained", "finetuned"], doc="Model(s) traversed with a head restriction (combined mode).")
    alpha = param.Number(default=0.5, bounds=(0.0, 1.0), doc="Decay α of eq. 4 (the paper uses 0.5).")
    size = param.Integer(default=None, allow_None=True, bounds=(200, 3000), doc="Radial view size in px (None: square, following the width of its container).")
    focus = param.Boolean(default=False, doc="Focus: show only the traced subgraph of the hover or the frozen selection.")
    status = param.String(default="", constant=True, doc="What the frozen selection shows (read-only).")

    def __init__(self, result=None, **params):
        self._data: FlowData | None = None
        self._flow: FlowFigure | None = None
        self._sentence: SentenceFigure | None = None
        self._context: ContextFigure | None = None
        self._graphs_cache: dict = {}
        self._syncing = False
        self._shown = None
        self._style = params.pop("style", None) or RadialStyle()
        auto_level = "level" not in params
        super().__init__(result=result, **params)
        self._L, self._H, self._n = check_result(self.result)
        if auto_level:  # open the sentence view where it says the most (see informative_level)
            with param.parameterized.discard_events(self):
                self.level = self.informative_level()
        self._check_level()
        self._check_selection()
        self._build_widgets()
        self._rebuild(first=True)
        self._side = pn.Column(self._context_pane, self._info_pane, self._legend, width=340)
        self._layout = self._make_layout()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_sentences(cls, pair, sentence_a: str, sentence_b: str, **params) -> AttentionFlowsView:
        """Run a sentence pair through a :class:`~attnflows_panel.models.ModelPair` and view it."""
        return cls(result=pair.run(sentence_a, sentence_b), **params)

    def _build_widgets(self) -> None:
        self._tau_slider = pn.widgets.FloatSlider(label="τ (edge threshold)", start=0.0, end=0.99, step=0.01,
                                                  value=self.tau, width=260)
        self._tau_slider.param.watch(lambda e: setattr(self, "tau", round(float(e.new), 4)), "value_throttled")
        self._mode_buttons = pn.widgets.RadioButtonGroup(options=_MODE_LABELS, value=self.mode, width=260)
        self._mode_buttons.param.watch(lambda e: setattr(self, "mode", e.new), "value")
        from bokeh.models import CustomJSTickFormatter

        self._level_slider = pn.widgets.IntSlider(label="Level (sentence view influence)", start=0,
                                                  end=max(1, self._L - 1), value=self.level, width=260,
                                                  format=CustomJSTickFormatter(code="return (tick + 1).toString()"))
        self._level_slider.param.watch(lambda e: setattr(self, "level", int(e.new)), "value_throttled")
        self._focus = pn.widgets.Checkbox.from_param(self.param.focus, name="Focus: only the traced subgraph", width=260)
        self._clear = pn.widgets.Button(label="Clear selection", width=125)
        self._clear.on_click(lambda e: self.param.update(selection=[], head=[], head_model="both"))
        self._svg = pn.widgets.FileDownload(callback=lambda: io.BytesIO(self.export("svg")), filename="attention-flows.svg",
                                            label="Export SVG", width=125, embed=False)
        self._png = pn.widgets.FileDownload(callback=lambda: io.BytesIO(self.export("png")), filename="attention-flows.png",
                                            label="Export PNG", width=125, embed=False)
        self._legend = pn.pane.HTML("", width=280, margin=(5, 10))
        self._status = pn.pane.HTML("", width=280, margin=(5, 10), styles={"font-size": "12px", "color": "#444"})

    def _graphs(self) -> tuple[AttentionGraph, AttentionGraph]:
        key = (id(self.result), float(self.tau))
        if key not in self._graphs_cache:
            if len(self._graphs_cache) > 8:
                self._graphs_cache.clear()
            r = self.result
            self._graphs_cache[key] = (
                AttentionGraph.build(np.asarray(r.pretrained.attentions), self.tau),
                AttentionGraph.build(np.asarray(r.finetuned.attentions), self.tau),
            )
        return self._graphs_cache[key]

    def _rebuild(self, first: bool = False) -> None:
        pre, fine = self._graphs()
        r = self.result
        self._shown = r
        self._data = data = FlowData(r.tokens, r.segments, pre, fine, self.mode, self._style)
        if first or self._flow is None:
            self._context = ContextFigure(data, level=self.level)
            self._sentence = SentenceFigure(data, self.level, width=900, alpha=self.alpha)
            self._flow = FlowFigure(data, size=self.size, linked={"ctx": self._context.wedges,
                                                                   "sent": self._sentence.tokens,
                                                                   "circ": self._sentence.circles})
            self._flow.set_level(self.level)
            for src in (self._flow.sources["nodes"], self._flow.sources["glyphs"]):
                src.selected.on_change("indices", self._on_radial_select)
            self._flow.on_double_tap(self._on_double_tap)
            self._flow.set_focus(self.focus)
            self._sentence.tokens.selected.on_change("indices", self._on_sentence_select)
            # square, as wide as its container allows and never taller than the window (less the sentence
            # view above it), so the whole view fits at 1280×800 and grows with larger windows
            self._flow_pane = pn.pane.Bokeh(self._flow.figure, margin=0, min_width=320,
                                            sizing_mode="stretch_width" if self.size is None else "fixed",
                                            styles={"height": FLOW_HEIGHT} if self.size is None else {})
            self._sentence_pane = pn.pane.Bokeh(self._sentence.figure, margin=(0, 0, 6, 0))
            self._context_pane = pn.pane.Bokeh(self._context.figure, margin=(0, 10))
            self._info_pane = pn.pane.Bokeh(self._flow.info, margin=(5, 10), min_height=70)
        else:
            self._syncing = True
            try:
                self._flow.update(data)
                self._flow.set_level(self.level)
                self._sentence.update(data, self.level)
                self._context.update(data, self.level)
            finally:
                self._syncing = False
        self._apply_selection()
        self._legend.object = self._legend_html()

    def informative_level(self) -> int:
        """The level whose influence (eq. 4) the two models' graphs disagree on most (the sum over tokens
        of ``|I_pre - I_fine|``, :meth:`GraphComparison.most_different_level`): where the sentence view
        opens when no level is given."""
        from attnflows_panel.compare import GraphComparison

        pre, fine = self._graphs()
        return GraphComparison(pre, fine).most_different_level(self.alpha)

    def _make_layout(self):
        parts = self.parts()
        controls = pn.Column(
            pn.pane.HTML("<b>Attention Flows</b>", margin=(5, 10, 0, 10)),
            *parts.controls, parts.status,
            width=300,
        )
        # the flow view takes the width left by the side column (legend and hover details beside it)
        return pn.Column(parts.sentence, pn.Row(parts.flow, parts.context, controls, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------------ checks

    def _check_level(self) -> None:
        if not 0 <= self.level <= self._L - 1:
            raise ValueError(f"level must be in 0 .. {self._L - 1} (the layers whose influence I_k is defined); got {self.level}")

    def _check_selection(self) -> None:
        for item in self.selection:
            if len(item) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in item):
                raise ValueError(f"selection items must be [level, token] integer pairs; got {item!r}")
            lv, tok = item
            if not 0 <= lv <= self._L or not 0 <= tok < self._n:
                raise ValueError(f"selection item {item!r} is out of range: levels 0..{self._L}, tokens 0..{self._n - 1}")
        if self.head:
            if len(self.head) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.head):
                raise ValueError(f"head must be [] or [layer, h] integers; got {self.head!r}")
            layer, h = self.head
            if not 0 <= layer < self._L or not 0 <= h < self._H:
                raise ValueError(f"head {self.head!r} is out of range: layers 0..{self._L - 1}, heads 0..{self._H - 1}")

    # ------------------------------------------------------------------ parameter watchers

    @param.depends("result", "tau", "mode", watch=True)
    def _on_graph(self):
        if self.result is not self._shown:
            # a new pair: check it, forget the old graphs and the old selection (one rebuild for all)
            self._L, self._H, self._n = check_result(self.result)
            self._graphs_cache.clear()
            self._level_slider.end = max(1, self._L - 1)
            with param.parameterized.discard_events(self):
                if self.level > self._L - 1:
                    self.level = 0
                self.selection = []
                self.head = []
            self._level_slider.value = self.level
        self._tau_slider.value = self.tau
        self._mode_buttons.value = self.mode
        self._rebuild()
        self._push()

    @param.depends("level", watch=True)
    def _on_level(self):
        self._check_level()
        self._level_slider.value = self.level
        self._flow.set_level(self.level)
        self._context.set_level(self._data, self.level)
        self._sentence.update(self._data, self.level)
        self._apply_selection()
        self._legend.object = self._legend_html()
        self._push()

    @param.depends("selection", "head", "head_model", watch=True)
    def _on_selection(self):
        self._check_selection()
        self._apply_selection()
        self._push()

    @param.depends("size", watch=True)
    def _on_size(self):
        self._flow.resize(self.size)
        self._push()

    @param.depends("focus", watch=True)
    def _on_focus(self):
        self._flow.set_focus(self.focus)
        self._push()

    @param.depends("alpha", watch=True)
    def _on_alpha(self):
        self._sentence.alpha = self.alpha
        self._sentence.update(self._data, self.level)
        self._apply_selection()
        self._push()

    def _push(self) -> None:
        """In a notebook, in-place Bokeh changes need an explicit push (Panel's Bokeh pane docs)."""
        if not pn.state.served and getattr(self._flow_pane, "_models", None):
            try:
                pn.io.push_notebook(self._layout)
            except Exception:  # pragma: no cover - no comm to push to
                pass

    # ------------------------------------------------------------------ selection

    def highlight(self) -> Highlight:
        """The frozen highlight of the current selection (asked of graph/compare)."""
        head = tuple(self.head) if self.head else None
        return self._data.highlight(self.selection, head, self.head_model if head else None)

    def _apply_selection(self) -> None:
        data = self._data
        hl = self.highlight()
        self._flow.show(hl)
        self._context.show(data, hl)
        self._sentence.show(data, hl)
        # mirror the selection into the Bokeh selections (no visual effect; keeps clicks consistent)
        self._syncing = True
        try:
            ids = [data.node_id(lv, t) for lv, t in self.selection if data.node_id(lv, t) >= 0]
            gids: list[int] = []
            if self.head and len(ids) == 1:
                gl = data.glyphs
                m = (gl["node"].to_numpy() == ids[0]) & (gl["head"].to_numpy() == self.head[1])
                gids = np.flatnonzero(m).tolist()
                ids = []
            if list(self._flow.sources["nodes"].selected.indices) != ids:
                self._flow.sources["nodes"].selected.indices = ids
            if list(self._flow.sources["glyphs"].selected.indices) != gids:
                self._flow.sources["glyphs"].selected.indices = gids
        finally:
            self._syncing = False
        with param.edit_constant(self):
            self.status = self._status_text(hl)
        self._status.object = self.status_html(hl)

    def _on_radial_select(self, attr, old, new) -> None:
        if self._syncing:
            return
        data = self._data
        gsel = list(self._flow.sources["glyphs"].selected.indices)
        nsel = list(self._flow.sources["nodes"].selected.indices)
        nodes = data.nodes
        if gsel:
            gl = data.glyphs
            first = int(gsel[0])
            node, head = int(gl["node"].iloc[first]), int(gl["head"].iloc[first])
            models = {int(gl["model"].iloc[i]) for i in gsel
                      if int(gl["node"].iloc[i]) == node and int(gl["head"].iloc[i]) == head}
            level, pos = int(nodes["level"].iloc[node]), int(nodes["pos"].iloc[node])
            hm = "both" if models == {1, 2} or data.comparison is None else ("pretrained" if models == {1} else "finetuned")
            if level == 0:
                return
            self.param.update(selection=[[level, pos]], head=[level - 1, head], head_model=hm)
        elif nsel:
            sel = [[int(nodes["level"].iloc[i]), int(nodes["pos"].iloc[i])] for i in sorted(nsel) if i < len(nodes)]
            self.param.update(selection=sel, head=[], head_model="both")
        else:
            self.param.update(selection=[], head=[], head_model="both")

    def _on_double_tap(self, kind: str | None, idx: int, shift: bool) -> None:
        """A double tap is two clicks: treat it as a click on what it hit (shift adds a token)."""
        data = self._data
        if kind == "glyph":
            self._flow.sources["glyphs"].selected.indices = [idx]
        elif kind == "node":
            cur = list(self._flow.sources["nodes"].selected.indices) if shift else []
            self._flow.sources["glyphs"].selected.indices = []
            self._flow.sources["nodes"].selected.indices = sorted(set(cur) | {idx})
        else:
            self.param.update(selection=[], head=[], head_model="both")
            return
        if self._syncing:
            return
        self._on_radial_select("indices", [], [])

    def _on_sentence_select(self, attr, old, new) -> None:
        if self._syncing or not new:
            return
        pos = int(self._sentence.tokens.data["pos"][new[-1]])
        self._syncing = True
        try:
            self._sentence.tokens.selected.indices = []
        finally:
            self._syncing = False
        if self._data.node_id(self.level, pos) < 0:
            self._status.object = (f"<i>“{html.escape(self._data.tokens[pos])}” is not a node of level {self.level + 1} at τ = "
                                   f"{self.tau:.2f}; pick another level.</i>")
            return
        self.param.update(selection=[[self.level, pos]], head=[], head_model="both")

    # ------------------------------------------------------------------ text

    def _status_text(self, hl: Highlight) -> str:
        if not self.selection:
            return ""
        toks = ", ".join(f"“{self._data.tokens[t]}” (level {lv + 1})" for lv, t in self.selection[:6])
        extra = f" (head {self.head[1] + 1} of layer {self.head[0] + 1}, {self.head_model})" if self.head else ""
        return f"selected {toks}{extra}" + (f": {hl.message}" if hl.message else "")

    def status_html(self, hl: Highlight | None = None) -> str:
        r = self.result
        d = self._data
        parts = []
        for name, out, color in (("pre-trained", r.pretrained, PRETRAINED_COLOR), ("fine-tuned", r.finetuned, FINETUNED_COLOR)):
            label = getattr(out, "label", None)
            probs = getattr(out, "probs", None)
            if label is not None:
                p = f" ({probs[label]:.2f})" if probs and label in probs else ""
                parts.append(f'<span style="color:{color}">■</span> {name}: <b>{html.escape(str(label))}</b>{p}')
        sizes = " · ".join(str(len(lv)) for lv in d.levels[::-1])
        parts.append(f"n = {d.n} tokens{' (truncated)' if getattr(r, 'truncated', False) else ''}; "
                     f"ring sizes (root → level 0): {sizes}")
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
        return ViewParts(
            sentence=self._sentence_pane,
            flow=self._flow_pane,
            context=self._side,
            controls=pn.Column(self._mode_buttons, self._tau_slider, self._level_slider, self._focus,
                               pn.Row(self._clear, margin=(0, 5)), pn.Row(self._svg, self._png, margin=(0, 5))),
            legend=self._legend,
            status=self._status,
            info=self._info_pane,
        )

    # ------------------------------------------------------------------ introspection (tests, apps)

    @property
    def data(self) -> FlowData:
        """What the radial view draws now."""
        return self._data

    @property
    def flow(self) -> FlowFigure:
        return self._flow

    @property
    def sentence_figure(self) -> SentenceFigure:
        return self._sentence

    @property
    def context_figure(self) -> ContextFigure:
        return self._context


if pn.state.served and __name__.startswith("bokeh_app"):  # pragma: no cover - `panel serve <this file>`
    from attnflows_panel.models import ModelPair

    _pair = ModelPair.load()
    AttentionFlowsView.from_sentences(
        _pair, "The cat sat on the mat.", "A cat was sitting on the mat."
    ).servable(title="Attention Flows")
