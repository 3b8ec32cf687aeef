"""The Sentence view (§4.2, Fig. 1(a)): both sentences in reading order, with the 5-circle influence
rating over every token for the level the user picks.

The rating of token w at level k is ``min(5, ⌈I_k(w)⌉)`` (eq. 4), asked of the graph
(:meth:`AttentionGraph.ratings`) or, in the combined mode, of the comparison
(:meth:`GraphComparison.ratings`): the first ``shared = min(pre, fine)`` circles are orange, the next
``pre - shared`` turquoise or ``fine - shared`` purple (§4.2: "if I_l(w) = 2 for the pre-trained model and
I_l(w) = 4 for the fine-tuned model, then the first two circles will be orange, and the last two circles
will be purple"). Empty circles stay as outlines.

Tokens take part in the highlight of the radial view: while a token or head is hovered or a selection
is frozen, the tokens whose position appears at some level of the trace keep their colour (by the
model(s) that reach them) and the rest fade; clicking a token here selects it at the chosen level.
"""

from __future__ import annotations

import numpy as np

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import BOTH, FINE, PRE
from attnflows_panel.layout import SentenceLayout, sentence_layout
from attnflows_panel.views.flow import STATE_COLORS, TEXT_COLOR, FlowData, Highlight

__all__ = ["SentenceFigure", "rating_codes", "sentence_states", "CIRCLE_COLORS"]

# circle fill per code: 0 empty, 1 pre-trained, 2 fine-tuned, 3 shared
CIRCLE_COLORS = ["#ffffff", PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR]
CIRCLE_ALPHA = [0, 1, 1, 1, 0.25, 1, 1, 1, 1, 1, 1, 1]
TOKEN_HALO = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0.28, 0.28, 0.28]  # only the selected token gets a halo
TOKEN_TEXT = list(STATE_COLORS)
for _i in (5, 6, 7, 8):
    TOKEN_TEXT[_i] = TEXT_COLOR


def rating_codes(data: FlowData, level: int, alpha: float = 0.5) -> np.ndarray:
    """int [n, 5]: the colour code of each of the five circles over each token at level ``level``.

    Single-model mode: the first ``ratings`` circles take the model's code. Combined mode: shared circles
    (``min(pre, fine)``) are ``BOTH``, then the surplus of the larger rating takes that model's code.
    """
    n = data.n
    slots = np.arange(5)[None, :]
    if data.comparison is not None:
        pre, fine, shared = data.comparison.ratings(level, alpha)
        out = np.zeros((n, 5), dtype=np.int64)
        out[slots < shared[:, None]] = BOTH
        surplus_pre = (slots >= shared[:, None]) & (slots < pre[:, None])
        surplus_fine = (slots >= shared[:, None]) & (slots < fine[:, None])
        out[surplus_pre] = PRE
        out[surplus_fine] = FINE
        return out
    (code, g), = data.graphs.items()
    r = g.ratings(level, alpha)
    return np.where(slots < r[:, None], code, 0).astype(np.int64)


def sentence_states(data: FlowData, hl: Highlight | None) -> np.ndarray:
    """uint8 [n]: display state of every token (same scheme as the radial view): the model codes that
    reach the token at any level of the highlight, 4 if none, 8+code for the selected tokens, 5 without
    a highlight. ``radial.js`` draws the same from its own codes while hovering."""
    n = data.n
    if hl is None or not hl.active:
        return np.full(n, 5, dtype=np.uint8)
    pos = data.nodes["pos"].to_numpy()
    code = np.zeros(n, dtype=np.uint8)
    np.bitwise_or.at(code, pos, hl.nodes.astype(np.uint8))
    orig = np.zeros(n, dtype=bool)
    orig[pos[hl.origin]] = True
    st = np.where(code > 0, code, 4).astype(np.uint8)
    st[orig] = 8 + np.maximum(code[orig], 1)
    return st


class SentenceFigure:
    """Bokeh figure of the Sentence view. ``tokens`` (one row per token position) and ``circles`` (five
    rows per token) are the sources; ``target_renderer`` is the tap target (select a token at the chosen
    level)."""

    def __init__(self, data: FlowData, level: int, width: int = 900, alpha: float = 0.5, kit=None):
        from bokeh.models import HoverTool, Plot, Range1d, Rect, Scatter, TapTool, Text, Title
        from bokeh.transform import transform

        from attnflows_panel.views.flow import _alpha_transform, _Kit, _state_mapper, _with_alpha

        self.width = width
        self.alpha = alpha
        cols_t, cols_c, lay = self._columns(data, level)
        self.layout = lay
        kit = kit or _Kit()  # the view passes one for all its figures
        self.tokens = kit.source(cols_t, "attnflows-sentence-tokens")
        self.circles = kit.source(cols_c, "attnflows-sentence-circles")
        h = int(max(60, lay.height))
        self.figure = fig = Plot(  # a bare Plot: no axes or grids
            width=width, height=h + 22, x_range=Range1d(0, width), y_range=Range1d(h, 0),
            toolbar_location=None, outline_line_color=None, min_border=0, name="attnflows-sentence",
            title=Title(text=self.caption(data, level), text_font_size="12px", text_font_style="normal",
                        text_color="#444444"),
        )
        self.target_renderer = kit.add(fig, self.tokens, Rect(
            x="x", y="ty", width="w", height="th",
            fill_color=transform("st", _state_mapper(_with_alpha(STATE_COLORS, TOKEN_HALO))),  # alpha included
            line_color=None), name="attnflows-sentence-targets")
        kit.add(fig, self.tokens, Text(x="x", y="y", text="token", text_align="center", text_baseline="alphabetic",
                                       text_font_size="13px", text_color=transform("st", _state_mapper(TOKEN_TEXT)),
                                       text_font={"value": "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif"}))
        # fill and line: one table, one model
        circle_alpha = transform("st", _alpha_transform([1, 1, 1, 1, 0.25, 1, 1, 1, 1, 1, 1, 1]))
        kit.add(fig, self.circles, Scatter(
            x="x", y="y", size=2 * lay.radius + 1.5, marker="circle",
            fill_color=transform("code", _state_mapper(CIRCLE_COLORS)),
            line_color=transform("lc", _state_mapper(["#bdbdbd", PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR])),
            line_width=0.8, fill_alpha=circle_alpha, line_alpha=circle_alpha))
        fig.add_tools(
            HoverTool(renderers=[self.target_renderer], tooltips="@token · position @pos · rating @rating",
                      description="Token"),
            TapTool(renderers=[self.target_renderer], description="Click: select the token at the chosen level"),
        )
        fig.toolbar.active_tap = fig.tools[-1]

    def _columns(self, data: FlowData, level: int):
        lay: SentenceLayout = sentence_layout(data.tokens, data.segments, width=self.width)
        codes = rating_codes(data, level, self.alpha)
        tdf = lay.tokens
        st = sentence_states(data, None)
        rating = (codes > 0).sum(axis=1)
        if data.comparison is not None:
            pre, fine, _ = data.comparison.ratings(level, self.alpha)
            rating_txt = [f"pre {p} / fine {f}" for p, f in zip(pre, fine, strict=True)]
        else:
            rating_txt = [str(int(r)) for r in rating]
        cols_t = {
            "x": tdf["x"].to_numpy().astype(np.float32),
            "y": tdf["y"].to_numpy().astype(np.float32),
            "ty": (tdf["y"].to_numpy() - lay.line_height / 2 + 4).astype(np.float32),
            "w": (tdf["w"].to_numpy() - 2).astype(np.float32),
            "th": np.full(len(tdf), lay.line_height - 2, dtype=np.float32),
            "token": tdf["token"].tolist(),
            "pos": tdf["pos"].to_numpy().astype(np.int32),
            "rating": rating_txt,
            "st": st, "fz": st.copy(),
        }
        cdf = lay.circles
        code = codes[cdf["pos"].to_numpy(), cdf["slot"].to_numpy()].astype(np.uint8)
        cols_c = {
            "x": cdf["x"].to_numpy().astype(np.float32),
            "y": cdf["y"].to_numpy().astype(np.float32),
            "pos": cdf["pos"].to_numpy().astype(np.int32),
            "code": code,
            "lc": code,
            "st": st[cdf["pos"].to_numpy()],
            "fz": st[cdf["pos"].to_numpy()].copy(),
        }
        return cols_t, cols_c, lay

    @staticmethod
    def caption(data: FlowData, level: int) -> str:
        """What the circles show, with the level 1-based as everywhere in the UI, and why it was chosen
        when it is where the two models' influence differs most."""
        text = f"Influence I at level {level + 1} of {data.L + 1} (circles: ⌈I⌉, at most 5)"
        if data.comparison is not None and data.comparison.most_different_level() == level:
            text += " · the level where the two models' influence differs most"
        return text

    def update(self, data: FlowData, level: int) -> None:
        cols_t, cols_c, lay = self._columns(data, level)
        self.layout = lay
        self.tokens.data = cols_t
        self.circles.data = cols_c
        self.figure.title.text = self.caption(data, level)
        h = int(max(60, lay.height))
        self.figure.height = h + 22
        self.figure.y_range.start, self.figure.y_range.end = h, 0
        self.tokens.selected.indices = []

    def show(self, data: FlowData, hl: Highlight | None) -> np.ndarray:
        st = sentence_states(data, hl)
        self.tokens.data.update(st=st, fz=st.copy())
        cst = st[np.asarray(self.circles.data["pos"], dtype=np.int64)]
        self.circles.data.update(st=cst, fz=cst.copy())
        return st

    def codes(self) -> np.ndarray:
        """int [n, 5]: the circle colour codes currently drawn."""
        c = np.asarray(self.circles.data["code"])
        return c.reshape(-1, 5)
