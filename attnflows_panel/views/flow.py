"""The legend of the radial Attention Flow view (§4.3, Fig. 1(c)) and small Bokeh helpers of the
sentence and context views.

The radial view itself is one Panel ``JSComponent``, :class:`~attnflows_panel.views.radial.RadialFlow`
(Canvas 2D, ``radial.js``), fed from a :class:`~attnflows_panel.views.flow_data.FlowData` (the view's
data, which imports no Bokeh). :func:`legend_html` / :func:`legend_items` are the legend beside it (and
in the SVG/PNG exports). ``_Kit``, ``_state_mapper``, ``_with_alpha`` and ``_alpha_transform`` are the
Bokeh pieces that the sentence and context figures share. The names of ``flow_data`` are re-exported here.
"""

from __future__ import annotations

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import FINE, PRE
from attnflows_panel.views.flow_data import (  # noqa: F401 - the view's data, re-exported (sentence, context, export)
    _MODEL_COLOR,
    DIM_COLOR,
    EDGE_ALPHA,
    EDGE_COLORS,
    EDGE_WIDTH,
    GLYPH_ALPHA,
    GLYPH_PALETTE,
    LEVEL_BAND_FILL,
    LEVEL_BAND_LINE,
    MODEL_NAME,
    MODES,
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
    _f32,
    _q16,
    _uint,
    compose_states,
    count_palette,
)

__all__ = ["FlowData", "Highlight", "MODES", "compose_states", "count_palette", "legend_html",
           "legend_items", "LABEL_ALPHA", "FOCUS_DIM"]

# ======================================================================================================
# Bokeh
# ======================================================================================================


def _alpha_transform(table):
    from bokeh.models import CustomJSTransform

    return CustomJSTransform(
        args={"table": [float(v) for v in table]},
        v_func=(
            "const out = new Float64Array(xs.length); "
            "for (let i = 0; i < xs.length; i++) out[i] = table[xs[i]]; return out;"
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
    return [f"{c[:7]}{min(255, max(0, int(a * 255 + 0.5))):02x}" for c, a in zip(colors, alphas, strict=True)]


def _state_mapper(palette):
    from bokeh.models import LinearColorMapper

    return LinearColorMapper(palette=list(palette), low=-0.5, high=len(palette) - 0.5)


#: opacity of a token label per display state (dimmed labels stay legible)
LABEL_ALPHA = [1, 1, 1, 1, 0.45, 1, 1, 1, 1, 1, 1, 1]
#: what ``focus`` changes: items that are not part of the highlight (state 4) disappear
FOCUS_DIM = 0.0


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
        rows.append(("split", [PRETRAINED_COLOR, FINETUNED_COLOR],
                     "split head glyph: the head attends above τ in both models"))
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
