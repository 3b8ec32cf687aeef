"""The radial Attention Flow view (§4.3, Fig. 1(c), Figs. 4-8) as a Bokeh figure.

:class:`FlowFigure` draws a :class:`~attnflows_panel.views.flow_data.FlowData` (the view's data, which
imports no Bokeh) with ColumnDataSources, and ships the client-side hover callback ``flow.js`` through
Bokeh's documented ``CustomJS`` with ``args`` (vanilla JS, no private BokehJS); it is updated in place
when τ, the mode or the selection change. :func:`legend_html` / :func:`legend_items` are the legend
beside it (and in the SVG/PNG export). The names of ``flow_data`` are re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import FINE, PRE
from attnflows_panel.views.flow_data import *  # noqa: F401,F403 - the view's data, re-exported
from attnflows_panel.views.flow_data import (  # noqa: F401 - also used by sentence, context, export
    _MODEL_COLOR,
    _f32,
    _q16,
    _uint,
    DIM_COLOR,
    EDGE_ALPHA,
    EDGE_COLORS,
    EDGE_WIDTH,
    GLYPH_ALPHA,
    GLYPH_PALETTE,
    LEVEL_BAND_FILL,
    LEVEL_BAND_LINE,
    MODEL_NAME,
    NEUTRAL_EDGE,
    NODE_HALO_ALPHA,
    NODE_TEXT,
    QUANT,
    RAMP_STEPS,
    SINGLE_SPARK_COLOR,
    SPARK_ALPHA,
    STATE_COLORS,
    TEXT_COLOR,
    FlowData,
    Highlight,
    compose_states,
)

__all__ = ["FlowFigure", "FlowData", "Highlight", "MODES", "compose_states", "count_palette", "legend_html",
           "legend_items", "LABEL_ALPHA", "FOCUS_DIM"]

_JS = Path(__file__).with_name("flow.js")
_JS_CODE = _JS.read_text(encoding="utf-8")  # the hover callback, shipped with every radial figure


# ======================================================================================================
# Bokeh
# ======================================================================================================


def _alpha_transform(table):
    from bokeh.models import CustomJSTransform

    return CustomJSTransform(
        args={"table": [float(v) for v in table]},
        v_func="const out = new Float64Array(xs.length); for (let i = 0; i < xs.length; i++) out[i] = table[xs[i]]; return out;",
    )


def _dequantize():
    from bokeh.models import CustomJSTransform

    return CustomJSTransform(
        args={"q": float(QUANT)},
        v_func="const out = new Float64Array(xs.length); for (let i = 0; i < xs.length; i++) out[i] = xs[i] / q; return out;",
    )


def _node_angle(nodes_source):
    """A glyph's rotation is its token's text angle (looked up by node id, not sent per glyph)."""
    from bokeh.models import CustomJSTransform

    return CustomJSTransform(
        args={"src": nodes_source},
        v_func="const ta = src.data.ta; const out = new Float64Array(xs.length); for (let i = 0; i < xs.length; i++) out[i] = ta[xs[i]]; return out;",
    )


def _edge_alpha_transform(source, table=None):
    """Edge opacity: normal edges (states 5-8) take their layer's ``ea``/255, highlighted ones (1-3)
    ``ha``/255 (both from :func:`density_alpha`), dimmed ones the state table's."""
    from bokeh.models import CustomJSTransform

    return CustomJSTransform(
        args={"table": [float(v) for v in (EDGE_ALPHA if table is None else table)], "src": source},
        v_func=(
            "const ea = src.data.ea, ha = src.data.ha; const out = new Float64Array(xs.length);"
            "for (let i = 0; i < xs.length; i++) { const s = xs[i];"
            " if (s >= 5 && s <= 8 && ea != null && i < ea.length) out[i] = ea[i] / 255;"
            " else if (s >= 1 && s <= 3 && ha != null && i < ha.length) out[i] = ha[i] / 255;"
            " else out[i] = table[s]; }"
            "return out;"
        ),
    )


class _Kit:
    """What the renderers of one figure share: one ``AllIndices`` filter and one ``UnionRenderers``
    selection policy (both stateless, so one model serves every source and view of the figure), and
    :meth:`add`, which adds a renderer with its glyph only (``Plot.add_glyph``): no selection,
    nonselection or muted copies (the views draw their own selection states), so no glyph models that
    are never drawn. Fewer models make the view cheaper to build and to send (benchmarks/README.md, P6)."""

    def __init__(self):
        from bokeh.models import AllIndices, UnionRenderers

        self.filter = AllIndices()
        self.policy = UnionRenderers()

    def source(self, data, name: str):
        from bokeh.models import ColumnDataSource

        return ColumnDataSource(data, name=name, selection_policy=self.policy)

    def add(self, fig, source, glyph, **kw):
        from bokeh.models import CDSView

        return fig.add_glyph(source, glyph, view=CDSView(filter=self.filter), selection_glyph=None,
                             nonselection_glyph=None, muted_glyph=None, **kw)


def _with_alpha(colors, alphas) -> list[str]:
    """``#rrggbb`` colours with an opacity each, as ``#rrggbbaa``: one colour mapper then draws both (BokehJS
    keeps a colour's opacity as a byte, as it does for a separate alpha), instead of a mapper and a transform."""
    return [f"{c[:7]}{min(255, max(0, int(a * 255 + 0.5))):02x}" for c, a in zip(colors, alphas)]


def _state_mapper(palette):
    from bokeh.models import LinearColorMapper

    return LinearColorMapper(palette=list(palette), low=-0.5, high=len(palette) - 0.5)


def _label_alpha_transform(source, overlay: bool, table=None):
    """Label opacity by display state. The ring's label (``overlay=False``) follows the state table, but
    gives way (0) to the full-text overlay on highlighted and selected tokens whose ring label is
    shortened or hidden (``lstat < 2``); the overlay (``overlay=True``) shows exactly there."""
    from bokeh.models import CustomJSTransform

    return CustomJSTransform(
        args={"table": [float(v) for v in (LABEL_ALPHA if table is None else table)], "src": source,
              "overlay": bool(overlay)},
        v_func=(
            "const ls = src.data.lstat; const out = new Float64Array(xs.length);"
            "for (let i = 0; i < xs.length; i++) { const s = xs[i];"
            " const lit = (s >= 1 && s <= 3) || s >= 9; const short = ls != null && i < ls.length && ls[i] < 2;"
            " out[i] = overlay ? ((lit && short) ? 1 : 0) : ((lit && short) ? 0 : table[s]); }"
            "return out;"
        ),
    )


#: opacity of a token label per display state (dimmed labels stay legible)
LABEL_ALPHA = [1, 1, 1, 1, 0.45, 1, 1, 1, 1, 1, 1, 1]
#: what ``focus`` changes: items that are not part of the highlight (state 4) disappear
FOCUS_DIM = 0.0

_FONT_JS = """
// One font scale for every ring: the layout placed the labels for `base` px at its design size
// (one data unit = one pixel); drawn at another size (the figure follows the window) or zoomed, the
// labels scale with the drawing, so they never collide, up to `cap` times the base size.
let sx, sy;
try {  // before the first layout the figure has no inner size yet: nothing to scale
  sx = fig.inner_width / (fig.x_range.end - fig.x_range.start);
  sy = fig.inner_height / (fig.y_range.end - fig.y_range.start);
} catch (e) { return; }
if (!(sx > 0) || !(sy > 0) || !isFinite(sx) || !isFinite(sy)) return;
const s = Math.min(sx, sy, cap);
// never below 9 px (readable); the 4 px kept between labels absorbs the difference down to ~0.8x
const px = `${Math.max(9, base * s).toFixed(2)}px`;
for (const r of labels) { if (r.glyph.text_font_size !== px) r.glyph.text_font_size = px; }
const tpx = `${Math.max(8, tick * s).toFixed(2)}px`;
if (ticks.glyph.text_font_size !== tpx) ticks.glyph.text_font_size = tpx;
"""


class FlowFigure:
    """The Bokeh figure of the radial Attention Flow view, bound to one :class:`FlowData` at a time.

    ``figure``: the Bokeh plot (``name="attnflows-radial"``); ``sources``: its ColumnDataSources
    (``nodes``, ``glyphs``, ``edges``, ``sparks``, ``bits``, ``ticks``, ``rings``);
    ``node_renderer`` (``name="attnflows-node-targets"``, one circle per token cell: hover, tap, box
    and lasso targets) / ``glyph_renderer`` (``name="attnflows-glyph-targets"``); ``info``: a Bokeh
    ``Div`` (``name="attnflows-hover-info"``) that the hover callback fills with the hovered token's or
    head glyph's details (placed beside the figure, so it never covers the token). ``update(data)``
    swaps the data in place (τ or mode changed), ``show(highlight)`` freezes a highlight,
    ``set_focus(True)`` hides everything outside the highlight. The hover callback also drives
    ``linked`` sources of other views (the context view's wedges share the node ids; the sentence
    view's tokens are indexed by position).

    Sizing: with ``size=None`` the figure is as wide as its container (``sizing_mode="stretch_width"``)
    and as high as the view's pane says (a CSS height, see ``AttentionFlowsView``); match_aspect keeps
    the rings circles whatever the canvas' shape; the label font scales with it
    (``_FONT_JS``), so the labels placed by the layout fit at every size. An int ``size`` fixes it.
    """

    FONT_CAP = 1.5  # the label font grows with the figure up to 1.5 × the layout's font

    def __init__(self, data: FlowData, size: int | None = None, linked: dict | None = None,
                 max_size: int = 1000, kit: _Kit | None = None):
        from bokeh.events import DoubleTap
        from bokeh.models import (
            Annulus,
            Bezier,
            BoxSelectTool,
            Circle,
            CustomJS,
            Div,
            HoverTool,
            LassoSelectTool,
            DataRange1d,
            PanTool,
            Plot,
            Rect,
            ResetTool,
            SaveTool,
            Segment,
            TapTool,
            Text,
            WheelZoomTool,
        )
        from bokeh.transform import transform

        self._size = size
        self._max_size = max_size
        self.data = data
        self.focus = False
        cols = data.sources()
        ext = data.layout.extent
        sizing = dict(width=int(size), height=int(size)) if size else dict(
            sizing_mode="stretch_width", width=self.design_size(data), height=self.design_size(data))
        # the ranges fit an invisible square around the drawing, and match_aspect keeps one data unit as
        # wide as it is high whatever the canvas' shape, so the rings stay circles at every window size
        # a bare Plot (bokeh.models): no axes, grids or title, which bokeh.plotting.figure would make
        self.figure = fig = Plot(
            x_range=DataRange1d(range_padding=0, name="attnflows-x"),
            y_range=DataRange1d(range_padding=0, name="attnflows-y"),
            toolbar_location="right",
            toolbar_inner=True,  # over the frame, so that the frame itself is the square
            match_aspect=True,
            outline_line_color=None,
            background_fill_color="white",
            border_fill_color="white",
            min_border=0,
            name="attnflows-radial",
            title=None,
            **sizing,
        )
        kit = self._kit = kit or _Kit()
        S = self.sources = {k: kit.source(v, f"attnflows-{k}") for k, v in cols.items()}
        S["rings"] = kit.source(self._ring_cols(data, None), "attnflows-rings")
        S["ticks"] = kit.source(self._tick_cols(data), "attnflows-ticks")
        base = float(data.style.font)

        def add(source, glyph, **kw):
            return kit.add(fig, source, glyph, **kw)

        # the chosen level's ring (level picker, its own colour) and faint rings
        self.ring_band = add(S["rings"], Annulus(x=0, y=0, inner_radius="r0", outer_radius="r1", fill_color="fill",
                                                 fill_alpha="fa", line_color="line", line_width=1.2))
        # the ranges fit the rings, padded (in proportion, which keeps match_aspect's square) out to the square
        # of ±extent that holds the labels: no renderer of their own (_fit_ranges)
        fig.x_range.renderers = fig.y_range.renderers = [self.ring_band]
        self._fit_ranges()
        add(S["ticks"], Segment(x0="x0", y0="y0", x1="x1", y1="y1", line_color="#111111", line_width=3.2,
                                line_cap="round"))
        self.tick_labels = add(S["ticks"], Text(x="tx", y="ty", text="tl", text_font_size="9px", text_color="#8a8a8a",
                                                text_align="center", text_baseline="middle", angle="tang"))
        # edges: between adjacent rings, the short way round; opacity by layer density and carrying heads
        dq = _dequantize()
        self.edge_renderer = add(S["edges"], Bezier(
            **{c: transform(c, dq) for c in ("x0", "y0", "x1", "y1", "cx0", "cy0", "cx1", "cy1")},
            line_color=transform("st", _state_mapper(EDGE_COLORS)),
            line_width=transform("st", _alpha_transform(EDGE_WIDTH)),  # its alpha: _apply_alphas
        ))
        # node halo and hit target: a circle over the token's cell (centres are what box and lasso test)
        self.node_renderer = add(S["nodes"], Circle(
            x="hx", y="hy", radius="hr",
            fill_color=transform("st", _state_mapper(_with_alpha(STATE_COLORS, NODE_HALO_ALPHA))),  # alpha included
            line_color=None,
        ), name="attnflows-node-targets")
        # glyph block frame (the empty slots of heads that attend to nothing; none on level 0)
        self.block_renderer = add(S["nodes"], Rect(x="bx", y="by", width="bw", height="bh", angle="ta",
                                                   fill_color="#f4f4f4", line_color="#dddddd", line_width=0.5))
        font = {"value": "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif"}
        text_colors = _state_mapper(NODE_TEXT)
        self.label_renderer = add(S["nodes"], Text(
            x="lx", y="ly", text="label", angle="ta", text_font_size=f"{base:g}px",
            text_align="center", text_baseline="middle", text_font=font,
            text_color=transform("st", text_colors),
        ), name="attnflows-labels")
        # sparkline baseline and bars (§4.3.2: where the attending tokens of the level above sit)
        self.spark_base = add(S["nodes"], Segment(x0="sx0", y0="sy0", x1="sx1", y1="sy1", line_color="#b0b0b0",
                                                  line_width=0.8))
        # model colours in combined mode, grey for one model (as the legend and the export draw them): one
        # mapper whose palette follows the mode (a mode switch changes no model of the document)
        self._spark_mapper = _state_mapper(self._spark_palette(data))
        self.spark_renderer = add(S["sparks"], Segment(
            **{c: transform(c, dq) for c in ("x0", "y0", "x1", "y1")},
            line_color=transform("model", self._spark_mapper), line_width=1.4,
        ))
        self.glyph_renderer = add(S["glyphs"], Rect(
            x=transform("x", dq), y=transform("y", dq),
            width=transform("part", _alpha_transform([data.style.glyph, data.style.glyph / 2, data.style.glyph / 2])),
            height=data.style.glyph, angle=transform("node", _node_angle(S["nodes"])),
            fill_color=transform("gc", _state_mapper(GLYPH_PALETTE)),
            line_color=None,
        ), name="attnflows-glyph-targets")
        # the full text of traced and selected tokens whose ring label is shortened or hidden, on top: on
        # the label row or a line further out (the layout's overlay tier), clear of its neighbours' texts
        overlay_alpha = _label_alpha_transform(S["nodes"], True)
        self.overlay_renderer = add(S["nodes"], Text(
            x="olx", y="oly", text="token", angle="ta", text_font_size=f"{base:g}px",
            text_align="center", text_baseline="middle", text_font=font,
            text_color=transform("st", text_colors),
            text_alpha=transform("st", overlay_alpha),
            background_fill_color="white",
            background_fill_alpha=transform("st", overlay_alpha),
        ), name="attnflows-label-overlay")
        self._make_alphas()
        self._apply_alphas()

        self.info = Div(text=self.INFO_IDLE, name="attnflows-hover-info", width=250,
                        styles={"font-size": "12px", "line-height": "1.4", "color": "#333"})
        args = dict(nodes=S["nodes"], glyphs=S["glyphs"], edges=S["edges"], sparks=S["sparks"], bits=S["bits"],
                    rn=self.node_renderer, rg=self.glyph_renderer, ctx=None, sent=None, circ=None,
                    info=self.info, idle=self.INFO_IDLE)
        for k, v in (linked or {}).items():
            if k not in ("ctx", "sent", "circ"):
                raise ValueError(f"unknown linked source {k!r}")
            args[k] = v
        self.hover_callback = CustomJS(args=args, code=_JS_CODE)
        self.hover = HoverTool(renderers=[self.node_renderer, self.glyph_renderer], callback=self.hover_callback,
                               tooltips=None, description="Hover: trace a token or a head glyph (details beside the view)")
        self.tap = TapTool(renderers=[self.node_renderer, self.glyph_renderer],
                           description="Click: freeze a token or head; shift-click: add (tokens on two rings: the paths "
                                       "between them); click empty space: clear")
        # Bokeh reads a second click within 300 ms as a double tap, which a "tap" TapTool ignores; the
        # figure answers it on the server as a click at that point (see on_double_tap).
        self._double_tap_handlers: list = []
        fig.on_event(DoubleTap, self._on_double_tap)
        self.box = BoxSelectTool(renderers=[self.node_renderer], description="Brush tokens (one ring: intersection; two rings: paths)")
        self.lasso = LassoSelectTool(renderers=[self.node_renderer], description="Lasso tokens")
        fig.add_tools(self.hover, self.tap, self.box, self.lasso,
                      WheelZoomTool(), PanTool(), ResetTool(), SaveTool(filename="attention-flows"))
        fig.toolbar.active_drag = self.box
        fig.toolbar.active_scroll = None
        fig.toolbar.active_tap = self.tap
        fig.toolbar.active_inspect = [self.hover]
        fig.toolbar.logo = None
        font_cb = CustomJS(args=dict(fig=fig, labels=[self.label_renderer, self.overlay_renderer],
                                     ticks=self.tick_labels, base=base, tick=9.0, cap=self.FONT_CAP), code=_FONT_JS)
        fig.js_on_change("inner_width", font_cb)
        fig.js_on_change("inner_height", font_cb)
        fig.x_range.js_on_change("start", font_cb)
        fig.x_range.js_on_change("end", font_cb)

    INFO_IDLE = ("<span style='color:#777'>Hover a token or a head glyph for its details. Click to freeze; "
                 "<b>shift-click</b> tokens on two rings for the paths between them.</span>")

    @staticmethod
    def design_size(data: FlowData) -> int:
        """The size (px) at which one data unit is one pixel: the labels' font is then exactly the layout's."""
        return int(round(2 * data.layout.extent))

    # ------------------------------------------------------------------ alphas and focus

    def _make_alphas(self) -> None:
        """The opacity transforms, made once: a focus change rewrites their tables in place
        (:meth:`_apply_alphas`), so no model enters or leaves the document after its first render."""
        from bokeh.transform import transform

        S = self.sources
        # each transform with the opacity table it draws outside the focus
        self._alphas = {
            "edge": (_edge_alpha_transform(S["edges"], EDGE_ALPHA), EDGE_ALPHA),
            "block": (_alpha_transform(SPARK_ALPHA), SPARK_ALPHA),  # glyph blocks and sparklines: one table, one model
            "glyph": (_alpha_transform(GLYPH_ALPHA), GLYPH_ALPHA),
            "label": (_label_alpha_transform(S["nodes"], False, LABEL_ALPHA), LABEL_ALPHA),
        }
        a = {key: model for key, (model, _) in self._alphas.items()}
        self.edge_renderer.glyph.line_alpha = transform("st", a["edge"])
        self.block_renderer.glyph.fill_alpha = transform("st", a["block"])
        self.block_renderer.glyph.line_alpha = transform("st", a["block"])
        self.spark_base.glyph.line_alpha = transform("st", a["block"])
        self.spark_renderer.glyph.line_alpha = transform("st", a["block"])
        self.glyph_renderer.glyph.fill_alpha = transform("st", a["glyph"])
        self.label_renderer.glyph.text_alpha = transform("st", a["label"])

    def _apply_alphas(self) -> None:
        """The opacity tables of the current focus, written into the transforms (BokehJS redraws a glyph
        whose transform changed)."""
        for model, base in self._alphas.values():
            table = [float(v) for v in base]
            if self.focus:
                table[4] = FOCUS_DIM
            if model.args["table"] != table:
                model.args = {**model.args, "table": table}

    def set_focus(self, focus: bool) -> None:
        """Focus: show only the traced subgraph of the hover or the frozen selection (dimmed items vanish)."""
        if bool(focus) == self.focus:
            return  # the alphas of this focus are set already
        self.focus = bool(focus)
        self._apply_alphas()

    # ------------------------------------------------------------------ double taps

    def on_double_tap(self, handler) -> None:
        """Call ``handler(kind, index, shift)`` for a double tap on a token (``kind="node"``) or a head
        glyph (``"glyph"``), or ``(None, -1, shift)`` on empty space: the view treats it as a click."""
        self._double_tap_handlers.append(handler)

    def hit(self, x: float, y: float) -> tuple[str | None, int]:
        """What a click at data point (x, y) hits: ``("glyph", row)``, ``("node", id)`` or ``(None, -1)``."""
        d = self.data
        gl = d.glyphs
        if len(gl):
            half = d.style.glyph / 2 + 0.3
            gx, gy = gl["x"].to_numpy(), gl["y"].to_numpy()
            near = np.flatnonzero((np.abs(gx - x) <= half) & (np.abs(gy - y) <= half))
            if near.size:
                j = near[np.argmin(np.hypot(gx[near] - x, gy[near] - y))]
                return "glyph", int(j)
        nd = d.nodes
        dist = np.hypot(nd["hx"].to_numpy() - x, nd["hy"].to_numpy() - y)
        inside = np.flatnonzero(dist <= nd["hr"].to_numpy())
        if inside.size:
            return "node", int(inside[np.argmin(dist[inside])])
        return None, -1

    def _on_double_tap(self, event) -> None:
        if event.x is None or event.y is None:
            return
        kind, idx = self.hit(float(event.x), float(event.y))
        shift = bool((event.modifiers or {}).get("shift", False))  # bokeh.events.KeyModifiers is a dict
        for handler in self._double_tap_handlers:
            handler(kind, idx, shift)

    @staticmethod
    def _tick_cols(data: FlowData) -> dict:
        t = data.layout.ticks
        if len(t) == 0:
            return {k: [] for k in ("x0", "y0", "x1", "y1", "tx", "ty", "tl", "tang")}
        ang = np.arctan2(t["y1"] - t["y0"], t["x1"] - t["x0"]).to_numpy()
        # level numbers (1-based, as everywhere in the UI) just outside the tick, upright
        tang = np.where(np.cos(ang) < 0, ang + np.pi, ang)
        r = np.hypot(t["x1"], t["y1"]).to_numpy() + 8
        return {
            "x0": _f32(t["x0"]), "y0": _f32(t["y0"]), "x1": _f32(t["x1"]), "y1": _f32(t["y1"]),
            "tx": _f32(r * np.cos(ang)), "ty": _f32(r * np.sin(ang)),
            "tl": [str(int(k) + 1) for k in t["level"]], "tang": _f32(tang),
        }

    @staticmethod
    def _ring_cols(data: FlowData, level: int | None) -> dict:
        radii = data.layout.radii
        ch = data.style.cell_height(data.H)
        r0, r1, fill, fa, line = [], [], [], [], []
        for k in range(data.L):
            chosen = level is not None and k == level
            r0.append(radii[k] - ch / 2 - (3 if chosen else 0.3))
            r1.append(radii[k] + ch / 2 + (3 if chosen else 0.3))
            fill.append(LEVEL_BAND_FILL if chosen else "#f7f7f7")
            fa.append(1.0 if chosen else 0.55)
            line.append(LEVEL_BAND_LINE if chosen else None)
        return {"r0": _f32(r0), "r1": _f32(r1), "fill": fill, "fa": fa, "line": line}

    # ------------------------------------------------------------------ updates

    @staticmethod
    def _spark_palette(data: FlowData) -> list[str]:
        """The sparkline colour of each ``model`` code (0 both, 1 pre-trained, 2 fine-tuned)."""
        if data.comparison is not None:
            return [NEUTRAL_EDGE, PRETRAINED_COLOR, FINETUNED_COLOR]
        return [SINGLE_SPARK_COLOR] * 3

    def update(self, data: FlowData) -> None:
        """Swap in new data (τ, mode or input changed), keeping the figure and its tools."""
        self.data = data
        # the size first: in a notebook a new layout after sources of new lengths, in one message,
        # would paint a text glyph that BokehJS is still updating (README.md, JupyterLab)
        self.resize(self._size)
        palette = self._spark_palette(data)
        if list(self._spark_mapper.palette) != palette:  # the mode changed: a figure made in one mode
            self._spark_mapper.palette = palette  # draws as one made in the other
        cols = data.sources()
        for k, v in cols.items():
            self.sources[k].data = v
        self.sources["ticks"].data = self._tick_cols(data)
        for src in ("nodes", "glyphs"):
            self.sources[src].selected.indices = []

    def resize(self, size: int | None) -> None:
        """Draw at ``size`` px, or (None) follow the container's width at a square aspect."""
        self._size = size
        fig = self.figure
        if size:
            fig.sizing_mode = "fixed"
            fig.width = fig.height = int(size)
        else:
            # as wide as the container; the height is the pane's (AttentionFlowsView gives its Bokeh
            # pane a CSS height that Panel's pane writes onto the figure): "stretch_both" here would
            # collapse to zero height in a container without a height of its own
            fig.sizing_mode = "stretch_width"
            fig.width = fig.height = self.design_size(self.data)

    def set_level(self, level: int | None) -> None:
        self.sources["rings"].data = self._ring_cols(self.data, level)
        self._fit_ranges()

    def _fit_ranges(self) -> None:
        """Pad the ranges, which fit the rings' outer edge, out to ±extent (the labels' square)."""
        r1 = self.sources["rings"].data["r1"]
        outer = float(np.max(r1)) if len(r1) else 0.0
        pad = self.data.layout.extent / outer - 1 if outer > 0 else 0.0
        for rng in (self.figure.x_range, self.figure.y_range):
            if rng.range_padding != pad:
                rng.range_padding = pad

    def show(self, hl: Highlight | None) -> dict[str, np.ndarray]:
        """Freeze a highlight (or clear it): write the display states and the frozen copies."""
        states = compose_states(self.data, hl)
        for key in ("nodes", "glyphs"):
            self.sources[key].data.update(st=states[key], fz=states[key].copy())
        self.sources["edges"].data.update(st=states["edges"], fz=states["edges"].copy(), ha=states["edge_alpha"])
        self.sources["sparks"].data.update(st=states["sparks"])
        return states


# ======================================================================================================
# Legend (shared by the view beside the figure and the SVG/PNG export)
# ======================================================================================================


def legend_items(data: FlowData, level: int | None = None) -> list[tuple[str, list[str], str]]:
    """The radial view's legend for ``data``'s mode: ``(kind, colours, text)`` rows, where kind is
    ``"swatch"`` (colour squares), ``"split"`` (a split glyph), ``"ramp"`` (the glyph count ramp),
    ``"spark"`` (a sparkline), ``"band"`` (the level band), ``"edge"`` or ``"text"``. Levels are 1-based."""
    rows: list[tuple[str, list[str], str]] = []
    if data.comparison is not None:
        rows.append(("swatch", [PRETRAINED_COLOR], "pre-trained model only"))
        rows.append(("swatch", [FINETUNED_COLOR], "fine-tuned model only"))
        rows.append(("swatch", [SHARED_COLOR], "both models (shared)"))
        rows.append(("split", [PRETRAINED_COLOR, FINETUNED_COLOR], "split head glyph: the head attends above τ in both models"))
        rows.append(("text", [], "head glyph colour = the model; single-model modes colour it by count:"))
        for code in (PRE, FINE):
            base = 0 if code == PRE else RAMP_STEPS
            rows.append(("ramp", GLYPH_PALETTE[base : base + RAMP_STEPS], f"tokens attended, 1 … {RAMP_STEPS}+"))
    else:
        code = next(iter(data.graphs))
        base = 0 if code == PRE else RAMP_STEPS
        rows.append(("swatch", [_MODEL_COLOR[code]], f"{MODEL_NAME[code]} model"))
        rows.append(("ramp", GLYPH_PALETTE[base : base + RAMP_STEPS],
                     f"head glyph: tokens of the level below it attends to, 1 … {RAMP_STEPS}+"))
    rows.append(("spark", [SINGLE_SPARK_COLOR], "sparkline: where the tokens of the level above that attend to this "
                 "token sit (left earlier, centre itself, right later); height = heads, 1 … 3"))
    rows.append(("edge", [NEUTRAL_EDGE], "edge: attention above τ; darker = more heads"))
    if level is not None:
        rows.append(("band", [LEVEL_BAND_FILL, LEVEL_BAND_LINE], f"level {level + 1}: the sentence view's level"))
    rows.append(("text", [], f"rings: level 1 (input) outermost … level {data.L + 1} ([CLS]) in the centre; "
                 "black tick: sentence A | B"))
    return rows


def legend_html(data: FlowData, level: int | None = None) -> str:
    """:func:`legend_items` as HTML (inline SVG swatches), for a pane beside the figure."""
    import html as _html

    def box(color, w=12, h=12, line=None):
        stroke = f"border:1px solid {line};" if line else ""
        return (f'<span style="display:inline-block;width:{w}px;height:{h}px;background:{color};{stroke}'
                f'vertical-align:middle;margin-right:1px"></span>')

    spark = ('<svg width="40" height="14" style="vertical-align:middle"><line x1="1" y1="13" x2="39" y2="13" '
             'stroke="#b0b0b0" stroke-width="1"/>'
             + "".join(f'<line x1="{x}" y1="13" x2="{x}" y2="{13 - h}" stroke="#555" stroke-width="1.6"/>'
                       for x, h in ((6, 6), (20, 12), (24, 9), (33, 6)))
             + "</svg>")
    edge = ('<svg width="40" height="14" style="vertical-align:middle"><path d="M1 12 C 14 12, 26 2, 39 2" '
            f'stroke="{NEUTRAL_EDGE}" stroke-opacity="0.35" fill="none" stroke-width="1"/>'
            f'<path d="M1 13 C 14 13, 26 6, 39 6" stroke="{NEUTRAL_EDGE}" fill="none" stroke-width="1"/></svg>')
    out = []
    for kind, colors, text in legend_items(data, level):
        t = _html.escape(text)
        if kind == "swatch":
            out.append(f"{box(colors[0])} {t}")
        elif kind == "split":
            out.append(f"{box(colors[0], 6)}{box(colors[1], 6)} {t}")
        elif kind == "ramp":
            out.append("".join(box(c, 10) for c in colors) + f" {t}")
        elif kind == "spark":
            out.append(f"{spark} {t}")
        elif kind == "edge":
            out.append(f"{edge} {t}")
        elif kind == "band":
            out.append(f"{box(colors[0], 24, 10, colors[1])} {t}")
        else:
            out.append(f"<span style='color:#666'>{t}</span>")
    return ("<div class='attnflows-legend' style='font-size:12px;line-height:17px'>"
            + "".join(f"<div style='margin:2px 0'>{r}</div>" for r in out) + "</div>")
