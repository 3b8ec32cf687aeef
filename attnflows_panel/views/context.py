"""The Sentence Context view (§4.3.1, Fig. 1(b)): an auxiliary radial view in which every ring is a
level and every token keeps the angle of its position in the original sentence.

Where the Attention Flow view packs each ring's tokens evenly, this view shows *which part of the
sentence* each level holds: ring ``L - k`` (level ``k``, the root in the centre) has a wedge at each
position of the input that is a node of level ``k``, coloured by the model(s) whose graph holds it
(turquoise pre-trained, purple fine-tuned, orange both, §4.3.3). Sentence A runs clockwise and B
counter-clockwise from the same start angle as in the flow view, with the same meeting tick. The
wedges share the radial view's node ids, so hover and selection highlights show here too.
"""

from __future__ import annotations

import math

import numpy as np

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.layout import ContextLayout, context_layout
from attnflows_panel.views.flow_data import DIM_COLOR, LEVEL_BAND_LINE, FlowData, Highlight, compose_states

__all__ = ["ContextFigure", "context_palette", "CONTEXT_ALPHA"]

CONTEXT_ALPHA = [0, 1, 1, 1, 0.35, 0.9, 0.9, 0.9, 0.9, 1, 1, 1]


def context_palette(data: FlowData) -> list[str]:
    """Wedge colour per display state. Normal wedges (5-8) take the node's model colour; in a
    single-model mode the node states carry no model code (5), so 5 is that model's colour."""
    single = {1: PRETRAINED_COLOR, 2: FINETUNED_COLOR}.get(data.models, "#555555")
    return ["#000000", PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR, DIM_COLOR, single,
            PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR, PRETRAINED_COLOR, FINETUNED_COLOR, SHARED_COLOR]


class ContextFigure:
    """Bokeh figure of the Sentence Context view. ``wedges`` has one row per node of the radial view,
    in the same order (so a highlight's node states apply as they are)."""

    def __init__(self, data: FlowData, size: int = 300, level: int | None = None, kit=None):
        from bokeh.models import AnnularWedge, Annulus, HoverTool, Plot, Range1d, Segment
        from bokeh.transform import transform

        from attnflows_panel.views.flow import _Kit, _state_mapper, _with_alpha

        self.size = size
        radius = size / 2 - 12
        cols, rings, tick, lay = self._columns(data, radius, level)
        self.layout = lay
        kit = kit or _Kit()  # the view passes one for all its figures
        self.wedges = kit.source(cols, "attnflows-context-wedges")
        self.rings = kit.source(rings, "attnflows-context-rings")
        self.tick = kit.source(tick, "attnflows-context-tick")
        ext = lay.extent
        self.figure = fig = Plot(  # a bare Plot: no axes, grids or title
            width=size, height=size, x_range=Range1d(-ext, ext), y_range=Range1d(-ext, ext),
            toolbar_location=None, outline_line_color=None, min_border=0, match_aspect=True,
            name="attnflows-context", title=None,
        )
        kit.add(fig, self.rings, Annulus(x=0, y=0, inner_radius="r0", outer_radius="r1", fill_color="fill",
                                         line_color="line", line_width=1.0))
        #: the wedges' colour per display state (:func:`context_palette`); the mapper draws it with
        #: :data:`CONTEXT_ALPHA` folded in (``#rrggbbaa``: one model instead of a mapper and a transform)
        self.palette = context_palette(data)
        self.mapper = _state_mapper(_with_alpha(self.palette, CONTEXT_ALPHA))
        self.wedge_renderer = kit.add(fig, self.wedges, AnnularWedge(
            x=0, y=0, inner_radius="inner", outer_radius="outer", start_angle="start", end_angle="end",
            fill_color=transform("st", self.mapper), line_color=None,
        ))
        kit.add(fig, self.tick, Segment(x0="x0", y0="y0", x1="x1", y1="y1", line_color="#111111", line_width=2.5))
        fig.add_tools(HoverTool(renderers=[self.wedge_renderer],
                                tooltips="<b>@token</b> · token @p1 of the input · level @lv1",
                                description="Token and its position in the sentence"))

    @staticmethod
    def _columns(data: FlowData, radius: float, level: int | None):
        lay: ContextLayout = context_layout(data.L + 1, data.segments, radius=radius,
                                            start_angle=data.style.start_angle)
        w = lay.wedges
        nodes = data.nodes
        lv = nodes["level"].to_numpy()
        pos = nodes["pos"].to_numpy()
        rows = lv * data.n + pos  # the wedges are level-major: (level, position) -> level * n + position
        inner, outer = w["inner"].to_numpy(), w["outer"].to_numpy()
        st = compose_states(data, None)["nodes"]
        cols = {
            "inner": inner[rows].astype(np.float32),
            "outer": outer[rows].astype(np.float32),
            "start": w["start"].to_numpy()[rows].astype(np.float32),
            "end": w["end"].to_numpy()[rows].astype(np.float32),
            "level": lv.astype(np.int32),
            "pos": pos.astype(np.int32),
            "lv1": (lv + 1).astype(np.int32),  # 1-based, as everywhere in the UI
            "p1": (pos + 1).astype(np.int32),
            "token": nodes["token"].tolist(),
            "st": st, "fz": st.copy(),
        }
        first = np.arange(data.L) * data.n  # each ring's row of position 0
        rings = {"r0": inner[first].tolist(), "r1": outer[first].tolist(), "fill": ["#f3f3f3"] * data.L,
                 "line": [LEVEL_BAND_LINE if level is not None and k == level else "#00000000" for k in range(data.L)]}
        # the meeting tick: between the last sentence-A position and the first sentence-B one
        seg = np.asarray(data.segments)
        n_a = int((seg == 0).sum())
        step = 2 * math.pi / max(1, data.n)
        meet = math.radians(data.style.start_angle) - n_a * step
        r_in = float(inner[(data.L - 1) * data.n]) if data.L >= 1 else 0.0
        r_out = radius + 4
        tick = {"x0": [r_in * math.cos(meet)], "y0": [r_in * math.sin(meet)],
                "x1": [r_out * math.cos(meet)], "y1": [r_out * math.sin(meet)]}
        return cols, rings, tick, lay

    def update(self, data: FlowData, level: int | None = None) -> None:
        cols, rings, tick, lay = self._columns(data, self.size / 2 - 12, level)
        self.layout = lay
        self.wedges.data = cols
        self.rings.data = rings
        self.tick.data = tick
        from attnflows_panel.views.flow import _with_alpha

        self.palette = context_palette(data)
        self.mapper.palette = _with_alpha(self.palette, CONTEXT_ALPHA)

    def set_level(self, data: FlowData, level: int | None) -> None:
        _, rings, _, _ = self._columns(data, self.size / 2 - 12, level)
        self.rings.data = rings

    def show(self, data: FlowData, hl: Highlight | None) -> np.ndarray:
        st = compose_states(data, hl)["nodes"]
        self.wedges.data.update(st=st, fz=st.copy())
        return st
