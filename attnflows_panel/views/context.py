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

    def __init__(self, data: FlowData, size: int = 300, level: int | None = None):
        from bokeh.models import ColumnDataSource, HoverTool, Range1d
        from bokeh.plotting import figure
        from bokeh.transform import transform

        from attnflows_panel.views.flow import _alpha_transform, _state_mapper

        self.size = size
        radius = size / 2 - 12
        cols, rings, tick, lay = self._columns(data, radius, level)
        self.layout = lay
        self.wedges = ColumnDataSource(cols, name="attnflows-context-wedges")
        self.rings = ColumnDataSource(rings, name="attnflows-context-rings")
        self.tick = ColumnDataSource(tick, name="attnflows-context-tick")
        ext = lay.extent
        self.figure = fig = figure(
            width=size, height=size, x_range=Range1d(-ext, ext), y_range=Range1d(-ext, ext), tools=[],
            toolbar_location=None, outline_line_color=None, min_border=0, match_aspect=True,
            name="attnflows-context",
            x_axis_type=None, y_axis_type=None,  # no axis, tick or grid models: none is drawn
        )
        fig.annulus(x=0, y=0, inner_radius="r0", outer_radius="r1", source=self.rings, fill_color="fill",
                    line_color="line", line_width=1.0)
        self.mapper = _state_mapper(context_palette(data))
        self.wedge_renderer = fig.annular_wedge(
            x=0, y=0, inner_radius="inner", outer_radius="outer", start_angle="start", end_angle="end",
            source=self.wedges, fill_color=transform("st", self.mapper),
            fill_alpha=transform("st", _alpha_transform(CONTEXT_ALPHA)), line_color=None,
        )
        fig.segment("x0", "y0", "x1", "y1", source=self.tick, line_color="#111111", line_width=2.5)
        for r in fig.renderers:
            r.selection_glyph = None
            r.nonselection_glyph = None
        fig.add_tools(HoverTool(renderers=[self.wedge_renderer],
                                tooltips="<b>@token</b> · token @p1 of the input · level @lv1",
                                description="Token and its position in the sentence"))

    @staticmethod
    def _columns(data: FlowData, radius: float, level: int | None):
        lay: ContextLayout = context_layout(data.L + 1, data.segments, radius=radius,
                                            start_angle=data.style.start_angle)
        w = lay.wedges
        nodes = data.nodes
        rows = (nodes["level"].to_numpy() * data.n + nodes["pos"].to_numpy())
        sub = w.iloc[rows]
        st = compose_states(data, None)["nodes"]
        cols = {
            "inner": sub["inner"].to_numpy().astype(np.float32),
            "outer": sub["outer"].to_numpy().astype(np.float32),
            "start": sub["start"].to_numpy().astype(np.float32),
            "end": sub["end"].to_numpy().astype(np.float32),
            "level": nodes["level"].to_numpy().astype(np.int32),
            "pos": nodes["pos"].to_numpy().astype(np.int32),
            "lv1": (nodes["level"].to_numpy() + 1).astype(np.int32),  # 1-based, as everywhere in the UI
            "p1": (nodes["pos"].to_numpy() + 1).astype(np.int32),
            "token": nodes["token"].tolist(),
            "st": st, "fz": st.copy(),
        }
        r0, r1, fill, line = [], [], [], []
        for k in range(data.L):
            ring = w[(w["level"] == k) & (w["pos"] == 0)].iloc[0]
            r0.append(float(ring["inner"]))
            r1.append(float(ring["outer"]))
            fill.append("#f3f3f3")
            line.append(LEVEL_BAND_LINE if level is not None and k == level else "#00000000")
        rings = {"r0": r0, "r1": r1, "fill": fill, "line": line}
        # the meeting tick: between the last sentence-A position and the first sentence-B one
        seg = np.asarray(data.segments)
        n_a = int((seg == 0).sum())
        step = 2 * math.pi / max(1, data.n)
        meet = math.radians(data.style.start_angle) - n_a * step
        r_in = float(w["inner"][w["level"] == data.L - 1].min()) if data.L >= 1 else 0.0
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
        self.mapper.palette = context_palette(data)

    def set_level(self, data: FlowData, level: int | None) -> None:
        _, rings, _, _ = self._columns(data, self.size / 2 - 12, level)
        self.rings.data = rings

    def show(self, data: FlowData, hl: Highlight | None) -> np.ndarray:
        st = compose_states(data, hl)["nodes"]
        self.wedges.data.update(st=st, fz=st.copy())
        return st
