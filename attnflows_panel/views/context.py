"""The Sentence Context view (§4.3.1, Fig. 1(b)): an auxiliary radial view in which every ring is a
level and every token keeps the angle of its position in the original sentence, as one Panel
``JSComponent`` (``context.js`` beside this file, Canvas 2D, no imports).

Where the Attention Flow view packs each ring's tokens evenly, this view shows *which part of the
sentence* each level holds: ring ``L - k`` (level ``k``, the root in the centre) has a wedge at each
position of the input that is a node of level ``k``, coloured by the model(s) whose graph holds it
(turquoise pre-trained, purple fine-tuned, orange both, §4.3.3). Sentence A runs clockwise and B
counter-clockwise from the same start angle as in the flow view, with the same meeting tick. The
wedges are the radial view's nodes, in the same order, so a frozen highlight's node states apply as
they are; the chosen level's ring is outlined (the level band); hovering a wedge names its token,
position and level.

Python decides the geometry (:func:`~attnflows_panel.layout.context_layout`: each position's angle, each
level's inner and outer radius) and the colours (:func:`context_palette`, :func:`context_states`); the
browser draws them at its size.

Test hook: the root element ``div.attnflows-context`` carries ``data-ready``, ``data-wedges`` (wedges
drawn), ``data-level`` (the outlined level, 0-based, or ""), ``data-hover`` (``"level:pos"`` of the
hovered wedge, or "") and ``attnflowsWedges()``: per wedge ``{level, pos, x, y, state, color}`` with
``x, y`` its middle in page coordinates.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import param
from panel.custom import JSComponent

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.layout import ContextLayout, context_layout
from attnflows_panel.views.flow_data import DIM_COLOR, LEVEL_BAND_LINE, FlowData, Highlight

__all__ = ["ContextView", "context_palette", "context_states", "pack_context", "CONTEXT_ALPHA", "RING_FILL",
           "context_geometry"]

CONTEXT_ALPHA = [0, 1, 1, 1, 0.35, 0.9, 0.9, 0.9, 0.9, 1, 1, 1]
#: the background of every level's ring
RING_FILL = "#f3f3f3"
#: the design radius of the drawing (the browser scales it to its box)
RADIUS = 138.0


def context_palette(data: FlowData) -> list[str]:
    """Wedge colour per display state. Normal wedges (5-8) take the node's model colour; in a
    single-model mode the node states carry no model code (5), so 5 is that model's colour."""
    single = {1: PRETRAINED_COLOR, 2: FINETUNED_COLOR}.get(data.models, "#555555")
    return ["#000000", PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR, DIM_COLOR, single,
            PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR, PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR]


def context_states(data: FlowData, hl: Highlight | None) -> np.ndarray:
    """uint8 [N]: the display state of every node (the radial view's node states,
    :func:`~attnflows_panel.views.flow_select.compose_states`): 5 + its membership code without a
    highlight; with one, the code of the model(s) whose trace reaches it, 4 if none, 8 + code if selected."""
    base = data.columns("nodes")["base"].astype(np.uint8)
    if hl is None or not hl.active:
        return (5 + base).astype(np.uint8)
    st = np.where(hl.nodes > 0, hl.nodes, 4).astype(np.uint8)
    return np.where(hl.origin, 8 + np.maximum(hl.nodes, 1), st).astype(np.uint8)


def context_geometry(data: FlowData, radius: float = RADIUS):
    """(``ContextLayout``, the meeting tick ``[x0, y0, x1, y1]``) of ``data`` at design radius ``radius``."""
    lay: ContextLayout = context_layout(data.L + 1, data.segments, radius=radius, start_angle=data.style.start_angle)
    seg = np.asarray(data.segments)
    n_a = int((seg == 0).sum())
    step = 2 * math.pi / max(1, data.n)
    meet = math.radians(data.style.start_angle) - n_a * step  # between the last A and the first B position
    inner = lay.wedge_cols["inner"]
    r_in = float(inner[(data.L - 1) * data.n]) if data.L >= 1 and data.n else 0.0
    r_out = radius + 4
    tick = [r_in * math.cos(meet), r_in * math.sin(meet), r_out * math.cos(meet), r_out * math.sin(meet)]
    return lay, tick


def pack_context(data: FlowData, radius: float = RADIUS) -> dict:
    """What ``context.js`` draws for ``data``: per node (the radial view's order) its level and position;
    per position its angle (radians, counter-clockwise, y up); per level the ring's inner and outer radius;
    the wedges' half-width, the meeting tick, the tokens (for the tooltip) and the palette."""
    lay, tick = context_geometry(data, radius)
    w = lay.wedge_cols
    n, L = data.n, data.L
    nodes = data.columns("nodes")
    first = np.arange(L + 1) * n  # each level's row of position 0
    from attnflows_panel.layout import display_token

    return {
        "N": int(len(nodes["level"])), "n": int(n), "L": int(L),
        "n_level": np.asarray(nodes["level"], dtype=np.uint8),
        "n_pos": np.asarray(nodes["pos"], dtype=np.uint16 if n < 65536 else np.uint32),
        "angles": np.asarray(lay.angles, dtype=np.float32),
        "inner": np.asarray(w["inner"][first], dtype=np.float32),
        "outer": np.asarray(w["outer"][first], dtype=np.float32),
        "half": float((2 * math.pi / max(1, n)) / 2 * 0.92), "extent": float(lay.extent),
        "tick": [float(v) for v in tick],
        "tokens": "\n".join(display_token(t).replace("\n", " ") for t in data.tokens),
        "palette": context_palette(data), "alpha": CONTEXT_ALPHA, "ring_fill": RING_FILL, "band_line": LEVEL_BAND_LINE,
    }


class ContextView(JSComponent):
    """The Sentence Context view: one Canvas 2D component (see the module docstring, which also documents
    the test hook on its root element ``div.attnflows-context``). The drawing is the largest square in its
    box."""

    data = param.Dict(default={}, doc="What is drawn: pack_context(FlowData).")
    states = param.Dict(default={}, doc="The wedges' display states: {'st': context_states(...)}.")
    level = param.Integer(default=None, allow_None=True, doc="The level band (0-based): the sentence view's level.")

    _esm = Path(__file__).with_name("context.js")

    def show(self, data: FlowData, hl: Highlight | None, level: int | None) -> None:
        """Draw ``data`` with highlight ``hl`` and the band at ``level`` in one update."""
        self.param.update(data=pack_context(data), states={"st": context_states(data, hl)}, level=level)

    def show_states(self, data: FlowData, hl: Highlight | None) -> np.ndarray:
        """Draw the highlight ``hl``; return the wedges' display states."""
        st = context_states(data, hl)
        self.states = {"st": st}
        return st
