"""The Sentence view (§4.2, Fig. 1(a)): both sentences in reading order, with the 5-circle influence
rating over every token for the level the user picks, as one Panel ``JSComponent`` (``sentence.js``
beside this file, Canvas 2D, no imports).

The rating of token w at level k is ``min(5, ⌈I_k(w)⌉)`` (eq. 4), asked of the graph
(:meth:`AttentionGraph.ratings`) or, in the combined mode, of the comparison
(:meth:`GraphComparison.ratings`): the first ``shared = min(pre, fine)`` circles are orange, the next
``pre - shared`` turquoise or ``fine - shared`` purple (§4.2: "if I_l(w) = 2 for the pre-trained model and
I_l(w) = 4 for the fine-tuned model, then the first two circles will be orange, and the last two circles
will be purple"). Empty circles stay as outlines.

Tokens take part in the frozen highlight of the radial view: while a selection is frozen, the tokens
whose position appears at some level of the trace keep their colour (by the model(s) that reach them)
and the rest fade; clicking a token here selects it at the chosen level (the component's ``pick``
parameter, which :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView` turns into its
``selection``).

Python decides what is drawn: the circles' colour codes (:func:`rating_codes`), the tokens' display
states (:func:`sentence_states`) and each token's slot width and the line-break rule
(:func:`~attnflows_panel.layout.sentence_layout`: sentence B starts a new line). The browser wraps the
slots into lines at the component's own width, so the view follows its box when it is resized.

Test hook: the root element ``div.attnflows-sentence`` carries ``data-ready`` ("1" once drawn),
``data-n`` (tokens), ``data-rows`` (lines at the current width), ``data-width`` (CSS px),
``data-font-px`` (the token font), ``data-hover`` (the hovered position or ""), ``data-states`` (the
display state of every token, comma-separated) and two functions: ``attnflowsTokens()``, the tokens'
boxes in page coordinates ``[{pos, x, y, w, h, state}]`` (``y`` the slot's middle), and
``attnflowsCodes()``, the circle codes drawn (``n × 5`` numbers, position-major).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import param
from panel.custom import JSComponent

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import BOTH, FINE, PRE
from attnflows_panel.layout import SentenceLayout, sentence_layout
from attnflows_panel.views.flow_data import STATE_COLORS, TEXT_COLOR, FlowData, Highlight

__all__ = ["SentenceView", "rating_codes", "sentence_states", "pack_sentence", "pack_sentence_states",
           "CIRCLE_COLORS", "CIRCLE_LINE", "CIRCLE_ALPHA", "TOKEN_HALO", "TOKEN_TEXT", "FONT_PX"]

#: circle fill per code: 0 empty, 1 pre-trained, 2 fine-tuned, 3 shared
CIRCLE_COLORS = ["#ffffff", PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR]
#: circle outline per code (an empty circle keeps a grey outline)
CIRCLE_LINE = ["#bdbdbd", PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR]
#: circle opacity per token display state (a faded token's circles fade with it)
CIRCLE_ALPHA = [1, 1, 1, 1, 0.25, 1, 1, 1, 1, 1, 1, 1]
TOKEN_HALO = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0.28, 0.28, 0.28]  # only the selected token gets a halo
TOKEN_TEXT = list(STATE_COLORS)
for _i in (5, 6, 7, 8):
    TOKEN_TEXT[_i] = TEXT_COLOR
#: the token font (CSS px); the circles' radius and the slot widths are sentence_layout's defaults
FONT_PX = 13.0


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
    a highlight."""
    n = data.n
    if hl is None or not hl.active:
        return np.full(n, 5, dtype=np.uint8)
    pos = data.columns("nodes")["pos"]
    code = np.zeros(n, dtype=np.uint8)
    np.bitwise_or.at(code, pos, hl.nodes.astype(np.uint8))
    orig = np.zeros(n, dtype=bool)
    orig[pos[hl.origin]] = True
    st = np.where(code > 0, code, 4).astype(np.uint8)
    st[orig] = 8 + np.maximum(code[orig], 1)
    return st


def caption(data: FlowData, level: int) -> str:
    """What the circles show, with the level 1-based as everywhere in the UI, and why it was chosen
    when it is where the two models' influence differs most."""
    text = f"Influence I at level {level + 1} of {data.L + 1} (circles: ⌈I⌉, at most 5)"
    if data.comparison is not None and data.comparison.most_different_level() == level:
        text += " · the level where the two models' influence differs most"
    return text


def pack_sentence(data: FlowData, level: int, alpha: float = 0.5, roles=None) -> dict:
    """What ``sentence.js`` draws for ``data`` at ``level``: the tokens (display text, one per line of
    ``tokens``), each token's segment and slot width (``sentence_layout``), the circle codes (``codes``,
    ``n × 5`` uint8, position-major), the ratings for the tooltip (``r_pre``/``r_fine`` in the combined
    mode, else ``rating``), the caption and the palettes.

    ``roles``: a decoder's segments, ``[(label, start, end, colour), ...]`` covering the tokens in order
    (:attr:`attnflows_panel.causal_view.CausalResult.role_bands`). Each then starts a new line, and every
    token is underlined in its role's colour (``band`` per token, ``band_colors``, ``band_labels``; the
    tooltip names the role)."""
    segments = data.segments
    band = None
    if roles:
        band = np.zeros(data.n, dtype=np.uint8)
        for i, (_, start, end, _) in enumerate(roles):
            band[int(start):int(end)] = i
        segments = band.astype(np.int64)
    lay: SentenceLayout = sentence_layout(data.tokens, segments, font_size=FONT_PX)
    codes = rating_codes(data, level, alpha).astype(np.uint8)
    tc = lay.token_cols
    out = {
        "n": int(len(tc["token"])), "tokens": "\n".join(str(t).replace("\n", " ") for t in tc["token"]),
        "segs": np.asarray(tc["seg"], dtype=np.uint8), "w": np.asarray(tc["w"], dtype=np.float32),
        "codes": codes.ravel(), "caption": caption(data, level), "level": int(level),
        "font": FONT_PX, "radius": float(lay.radius), "line_height": float(lay.line_height),
        "circle_colors": CIRCLE_COLORS, "circle_line": CIRCLE_LINE, "circle_alpha": CIRCLE_ALPHA,
        "token_text": TOKEN_TEXT, "halo_colors": list(STATE_COLORS), "halo_alpha": TOKEN_HALO,
        "combined": data.comparison is not None,
    }
    if band is not None:
        out.update(band=band, band_colors=[str(r[3]) for r in roles], band_labels=[str(r[0]) for r in roles])
    if data.comparison is not None:
        pre, fine, _ = data.comparison.ratings(level, alpha)
        out["r_pre"] = np.asarray(pre, dtype=np.uint8)
        out["r_fine"] = np.asarray(fine, dtype=np.uint8)
    else:
        out["rating"] = (codes > 0).sum(axis=1).astype(np.uint8)
    return out


def pack_sentence_states(data: FlowData, hl: Highlight | None) -> dict:
    """The frozen highlight as ``sentence.js`` draws it: ``{"st": uint8 [n]}`` (:func:`sentence_states`)."""
    return {"st": sentence_states(data, hl)}


class SentenceView(JSComponent):
    """The Sentence view: one Canvas 2D component (see the module docstring, which also documents the test
    hook on its root element ``div.attnflows-sentence``). It is as high as its lines at its width, and
    scrolls inside itself beyond ``scroll_height`` (when one is given)."""

    data = param.Dict(default={}, doc="What is drawn: pack_sentence(FlowData, level, alpha).")
    states = param.Dict(default={}, doc="The tokens' display states: pack_sentence_states(...).")
    pick = param.Dict(default={}, doc="The token clicked in the browser: {pos, seq}.")
    scroll_height = param.String(default="", regex=r"^[^;{}]*$", doc=(
        "CSS max-height of the view (e.g. 'max(160px, calc(100vh - 560px))'); beyond it the view scrolls "
        "inside itself. '' for none: the view is as high as its lines."))

    _esm = Path(__file__).with_name("sentence.js")

    def show(self, data: FlowData, level: int, alpha: float, hl: Highlight | None, roles=None) -> None:
        """Draw ``data`` at ``level`` with highlight ``hl`` in one update."""
        self.param.update(data=pack_sentence(data, level, alpha, roles), states=pack_sentence_states(data, hl))

    def show_states(self, data: FlowData, hl: Highlight | None) -> np.ndarray:
        """Draw the highlight ``hl``; return the tokens' display states."""
        st = pack_sentence_states(data, hl)
        self.states = st
        return st["st"]

    def codes(self) -> np.ndarray:
        """int [n, 5]: the circle colour codes currently drawn."""
        return np.asarray(self.data.get("codes", np.zeros(0, np.uint8)), dtype=np.int64).reshape(-1, 5)
