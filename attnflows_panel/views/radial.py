"""The radial Attention Flow view (§4.3-4.4, Fig. 1(c), Figs. 4-8) as one Panel ``JSComponent``.

:class:`RadialFlow` draws a :class:`~attnflows_panel.views.flow_data.FlowData` on a Canvas 2D in the
browser. Its ES module is ``radial.js`` beside this file: plain JavaScript with no imports (no CDN), so
it works offline in ``panel serve``, in a notebook and in JupyterLab. Python keeps the analysis and the
geometry; the component gets typed arrays (one numpy array per column, which Bokeh sends as binary
buffers) and does the drawing and every interaction in the browser:

- hover a token or a head glyph: its trace (§4.4.1, Fig. 6), walked over the edges in the browser, no round trip;
- click: freeze a token (``pick``), a head glyph (its head restriction, Fig. 6(b)); shift-click: add a
  token (two rings: the paths between them, Fig. 8); click empty space: clear;
- box and lasso brushing (toolbar "Box"/"Lasso"): the brushed tokens' intersection (one ring) or paths;
- wheel zoom, drag pan, "Reset"; labels are placed in the browser at the current zoom (semantic zoom),
  greedily in priority order (traced tokens first), never overlapping, at 11 px;
- "SVG" / "PNG" buttons: export what is drawn (zoom included) with the legend and both sentences; the
  PNG is the SVG drawn at 3×.

What Python must know comes back through the ``pick`` parameter (``{"selection", "head", "head_model",
"seq"}``), which :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView` turns into its own
``selection`` / ``head`` / ``head_model``; the frozen highlight goes to the browser as ``frozen``.

Test hook: the component's root element (``div.attnflows-radial``) carries

- ``data-label-boxes``: JSON ``[[x, y, w, h, token_index, ring], ...]``: the labels drawn, in CSS px of
  the root element, ``token_index`` the 0-based token position, ``ring`` its 0-based level;
- ``data-trace-total`` / ``data-trace-labelled``: the tokens (with text) of the current trace (hover,
  else the frozen selection) and how many of them carry a visible label;
- ``data-trace``: ``"hover"``, ``"frozen"`` or ``""``; ``data-hover``: the hovered item's key;
- ``data-ready`` (``"1"`` once data is drawn), ``data-nodes`` (tokens drawn), ``data-draw-ms`` (the last
  redraw, measured with ``performance.now()``), ``data-trace-ms`` (the last hover's traversal),
  ``data-zoom``, ``data-tool`` (``pan``/``box``/``lasso``), ``data-brushed`` (tokens in the last brush).

The exported placement function ``placeLabels(items, opts)`` of ``radial.js`` is what a property test
runs in Chromium on random layouts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import param
from panel.custom import JSComponent

from attnflows_panel.compare import FINE, PRE
from attnflows_panel.views.flow_data import (
    GLYPH_PALETTE,
    LEVEL_BAND_FILL,
    LEVEL_BAND_LINE,
    NODE_HALO_ALPHA,
    NODE_TEXT,
    QUANT,
    STATE_COLORS,
    FlowData,
    Highlight,
)

__all__ = ["RadialFlow", "pack_flow", "pack_highlight", "REST_EDGES"]

#: edges drawn at rest per layer (the strongest; R2's ``rest`` column, when the data has one, decides)
REST_EDGES = 40


def _u(a, n_max: int) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.uint8 if n_max < 256 else np.uint16 if n_max < 65536 else np.uint32)


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _rest_flags(data: FlowData, strength: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """1 for the edges drawn at rest: the ``REST_EDGES`` strongest of each layer (ties: the shared ones)."""
    E = len(layer)
    if E == 0:
        return np.zeros(0, np.uint8)
    order = np.lexsort((-strength, layer))
    lay = layer[order]
    first = np.searchsorted(lay, lay, side="left")
    rank = np.arange(E) - first
    out = np.zeros(E, np.uint8)
    out[order[rank < REST_EDGES]] = 1
    return out


def pack_flow(data: FlowData) -> dict:
    """What the browser draws for ``data``: one flat dict of typed columns (``n_*`` nodes, ``g_*`` head
    glyphs, ``e_*`` edges, ``t_*`` ticks, ``r_*`` folded runs) and the few scalars and palettes the drawing
    needs. The edges' curves and the sparkline bars are derived in the browser, and the traces are walked
    there over the edges, so neither geometry nor an ancestor table is sent."""
    nodes, glyphs, edges = (data.columns(f) for f in ("nodes", "glyphs", "edges"))
    N, n, L = len(nodes), data.n, data.L
    frame_cols = set(data.nodes.columns)
    lv, ps = nodes["level"], nodes["pos"]
    if "prio" in frame_cols:  # R2's label priority and display text (word pieces joined)
        prio = _f(nodes["prio"])
        texts = [str(t) for t in nodes["label"]]
    else:
        prio = _f(data.priority[lv, ps])
        texts = [str(t) for t in nodes["token"]]
    out: dict = {
        "N": N, "E": len(edges), "G": len(glyphs), "L": L, "H": data.H, "n": n, "W": data.words,
        "models": int(data.models), "comparison": data.comparison is not None, "quant": QUANT,
        "extent": float(data.layout.extent), "glyph": float(data.style.glyph),
        "ch": float(data.style.cell_height(data.H)), "radii": _f(data.layout.radii),
        "cw": float(data.style.row_width(data.H)), "spark_h": float(data.style.spark_height),
        "spark_w": float(data.style.spark_width),
        "tokens": _display_tokens(data),
        "segs": _u(data.segments, 2), "label_text": "\n".join(t.replace("\n", " ") for t in texts),
        "palette": list(GLYPH_PALETTE), "state_colors": list(STATE_COLORS), "text_colors": list(NODE_TEXT),
        "halo_alpha": [float(a) for a in NODE_HALO_ALPHA], "band_fill": LEVEL_BAND_FILL, "band_line": LEVEL_BAND_LINE,
    }
    out.update({
        "n_level": _u(lv, 255), "n_pos": _u(ps, n), "n_mem": nodes["member"].astype(np.uint8),
        "n_base": nodes["base"].astype(np.uint8), "n_prio": prio,
        "n_angle": np.asarray(nodes["angle"], dtype=np.float64),  # float64: edges at half a turn curve as in Python
        "n_ta": _f(nodes["text_angle"]),
    })
    for k in ("lx", "ly", "hx", "hy", "hr", "bx", "by", "bw", "bh", "sx0", "sy0", "sx1", "sy1", "r_in", "r_out"):
        out[f"n_{k.replace('_', '')}"] = _f(nodes[k])
    below_root = lv < L
    for c in (PRE, FINE):
        if c in data.influence:
            infl = np.full(N, -1.0)
            infl[below_root] = data.influence[c][lv[below_root], ps[below_root]]
            out[f"n_i{c}"] = _f(np.round(infl, 2))
    out.update({
        "g_node": _u(glyphs["node"], N), "g_head": _u(glyphs["head"], 255), "g_model": glyphs["model"].astype(np.uint8),
        "g_part": glyphs["part"].astype(np.uint8), "g_gc": glyphs["gc"].astype(np.uint8),
        "g_x": _q(glyphs["x"]), "g_y": _q(glyphs["y"]), "g_cp": _u(glyphs["cp"], n), "g_cf": _u(glyphs["cf"], n),
    })
    ecols = set(data.edges.columns)  # the edges' curves and the sparkline bars are derived in the browser
    nh = np.asarray(edges["nh"]) if "nh" in ecols else np.ones(len(edges))
    strength = np.asarray(edges["w"], dtype=np.float64) if "w" in ecols else nh.astype(np.float64)
    layer = np.asarray(edges["layer"], dtype=np.int64)
    rest = np.asarray(edges["rest"], dtype=np.uint8) if "rest" in ecols else _rest_flags(data, strength, layer)
    out.update({"e_u": _u(edges["u"], N), "e_v": _u(edges["v"], N), "e_mem": edges["member"].astype(np.uint8),
                "e_nh": _u(nh, 255), "e_rest": rest})
    if "w" in ecols:
        out["e_w"] = _f(strength)
    mask_dtype = np.uint8 if data.H <= 8 else np.uint16 if data.H <= 16 else np.uint32
    for c in data.graphs:
        for w in range(data.words):
            out[f"e_h{c}_{w}"] = edges[f"h{c}_{w}"].astype(mask_dtype)
    t = data.layout.ticks
    for k in ("x0", "y0", "x1", "y1"):
        out[f"t_{k}"] = _f(t[k].to_numpy()) if len(t) else np.zeros(0, np.float32)
    runs = getattr(data, "runs", None)
    if runs is not None and len(runs):
        out["r_level"] = _u(np.asarray(runs["level"]), 255)
        out["r_a0"], out["r_a1"] = _f(np.asarray(runs["angle0"])), _f(np.asarray(runs["angle1"]))
        out["r_count"] = _u(np.asarray(runs["count"]), 65536)
    return out


def _display_tokens(data: FlowData) -> list[str]:
    from attnflows_panel.layout import display_token

    return [display_token(t) for t in data.tokens]


def _q(a) -> np.ndarray:
    q = np.round(np.asarray(a, dtype=np.float64) * QUANT)
    if q.size and np.abs(q).max() > np.iinfo(np.int16).max:
        return q.astype(np.int32)  # a drawing over 3276 px from the centre: int32 (the browser reads either)
    return q.astype(np.int16)


def pack_highlight(data: FlowData, hl: Highlight | None, selection=()) -> dict:
    """The frozen highlight as the browser draws it: per node its model code (``nodes``) and whether it
    is selected (``origin``), per edge its code, per glyph row whether it is lit; ``selection`` as given
    (the browser adds shift-clicks to it)."""
    sel = [[int(a), int(b)] for a, b in selection]
    if hl is None or not hl.active:
        return {"selection": sel}
    return {"nodes": hl.nodes.astype(np.uint8), "origin": hl.origin.astype(np.uint8),
            "edges": hl.edges.astype(np.uint8), "glyphs": hl.glyphs.astype(np.uint8), "selection": sel,
            "N": len(data.nodes)}


class RadialFlow(JSComponent):
    """The radial Attention Flow view: one Canvas 2D component (see the module docstring, which also
    documents the test hook on its root element ``div.attnflows-radial``)."""

    data = param.Dict(default={}, doc="What is drawn: pack_flow(FlowData).")
    frozen = param.Dict(default={}, doc="The frozen highlight: pack_highlight(...).")
    level = param.Integer(default=None, allow_None=True, doc="The level band (0-based), the sentence view's level.")
    focus = param.Boolean(default=False, doc="Show only the traced subgraph.")
    legend = param.List(default=[], doc="legend_items(...) rows, drawn into the SVG/PNG export.")
    title = param.String(default="Attention Flows", doc="The export's title line.")
    sentences = param.List(default=[], doc="Sentence A and B as typed, written in full (wrapped) under the export.")
    pick = param.Dict(default={}, doc="What the browser picked: {selection, head, head_model, seq}.")
    export = param.String(default="", doc="Set to 'svg:<n>' or 'png:<n>' to download what is drawn.")

    _esm = Path(__file__).with_name("radial.js")

    def show(self, data: FlowData, hl: Highlight | None, selection=(), level=None) -> None:
        """Draw ``data`` with highlight ``hl`` in one update."""
        self.param.update(data=pack_flow(data), frozen=pack_highlight(data, hl, selection), level=level)
