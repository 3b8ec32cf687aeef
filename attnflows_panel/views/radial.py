"""The radial Attention Flow view (§4.3-4.4, Fig. 1(c), Figs. 4-8) as one Panel ``JSComponent``.

:class:`RadialFlow` draws a :class:`~attnflows_panel.views.flow_data.FlowData` on a Canvas 2D in the
browser. Its ES module is ``radial.js`` and its parts beside this file (``ESM_PARTS``, joined into one
module string): plain JavaScript with no imports (no CDN), so
it works offline in ``panel serve``, in a notebook and in JupyterLab. Python keeps the analysis and the
geometry; the component gets typed arrays (one numpy array per column, which Bokeh sends as binary
buffers) and does the drawing and every interaction in the browser:

- hover a token or a head glyph: its trace (§4.4.1, Fig. 6), walked over the edges in the browser, no round trip;
- click: freeze a token (``pick``), a head glyph (its head restriction, Fig. 6(b)); shift-click: add a
  token (two rings: the paths between them, Fig. 8); click empty space: clear;
- box and lasso brushing (toolbar "Box"/"Lasso"): the brushed tokens' intersection (one ring) or paths;
- wheel zoom, drag pan, "Reset"; labels are placed in the browser at the current zoom (semantic zoom),
  greedily in priority order (traced tokens first), never overlapping, at 11 px, each along its ring
  (turned with its cell, upright) on its cell's label row or one line further out;
- folded runs (tokens a level does not hold): a grey arc with its count (``+N``) where there is room; the
  hover lists its tokens; zoomed in until the arc holds all its tokens' labels, the run opens: its tokens
  are written in grey along the arc, in the sentence's reading direction;
- "SVG" / "PNG" buttons: export what is drawn (zoom included) with the legend and both sentences; the
  PNG is the SVG drawn at 3×.

What Python must know comes back through the ``pick`` parameter (``{"selection", "head", "head_model",
"seq"}``), which :class:`~attnflows_panel.views.attention_flows.AttentionFlowsView` turns into its own
``selection`` / ``head`` / ``head_model``; the frozen highlight goes to the browser as ``frozen``.

Test hook: the component's root element (``div.attnflows-radial``) carries

- ``data-label-boxes``: JSON ``[[x, y, w, h, token_index, ring, angle, folded], ...]``: the labels drawn, in
  CSS px of the root element: the box before turning (``x, y`` its top left corner), turned by ``angle``
  radians (clockwise) about its centre; ``token_index`` the 0-based token position (-1 for a folded run's
  count), ``ring`` its 0-based level; ``folded`` 1 for a token of an opened run (not in the graph at that
  level), else 0. :func:`label_overlaps` and :func:`label_inside` check them;
- ``data-trace-total`` / ``data-trace-labelled``: the tokens (with text) of the current trace (hover,
  else the frozen selection) and how many of them carry a visible label;
- ``data-trace``: ``"hover"``, ``"frozen"`` or ``""``; ``data-hover``: the hovered item's key;
- ``data-ready`` (``"1"`` once data is drawn), ``data-nodes`` (tokens drawn), ``data-draw-ms`` (the last
  redraw, measured with ``performance.now()``), ``data-trace-ms`` (the last hover's traversal),
  ``data-zoom``, ``data-tool`` (``pan``/``box``/``lasso``), ``data-brushed`` (tokens in the last brush);
- timings of the last drawing (``performance.now()``; Chromium rasterises afterwards, at the next frame):
  ``data-hover-ms`` (a hover's traversal and redraw), ``data-phase-ms`` (its phases), ``data-base-ms`` and
  ``data-base-parts`` (the cached layer at rest: cells, rings, edges at rest, composite), ``data-load-ms``
  (deriving the tables from new data);
- ``data-glyph-pixels`` / ``data-spark-pixels``: ``"1"`` when the head glyphs / sparkline bars were written
  as pixels (small and many: ``radial_data.js``, ``glyphLayer`` / ``sparkLayer``), ``"0"`` when drawn as paths.

The exported placement function ``placeLabels(items, opts)`` (``radial_labels.js``) is what a property test
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
    RAMP_STEPS,
    STATE_COLORS,
    FlowData,
    Highlight,
    as_uint,
)

__all__ = ["ESM_PARTS", "ESM_SOURCE", "RadialFlow", "esm_source", "label_inside", "label_overlaps", "pack_flow",
           "pack_highlight", "pack_roles", "unpack_flow", "REST_EDGES"]

#: edges drawn at rest per layer (the strongest; R2's ``rest`` column, when the data has one, decides)
REST_EDGES = 40


#: the parts of the component's ES module, joined in this order into one module (one scope): the view, then
#: the label placement, the data and traces, hit tests and the info box, the SVG export, the test hooks
ESM_PARTS = ("radial.js", "radial_labels.js", "radial_data.js", "radial_info.js", "radial_svg.js", "radial_hooks.js")


def esm_source() -> str:
    """The component's ES module: the ``ESM_PARTS`` beside this file, joined (JSComponent takes a string)."""
    here = Path(__file__).parent
    return "\n".join((here / name).read_text(encoding="utf-8") for name in ESM_PARTS)


ESM_SOURCE = esm_source()


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
    """What the browser draws for ``data``: one flat dict of typed columns (``n_*`` nodes, ``e_*`` edges,
    ``t_*`` ticks, ``r_*`` folded runs) and the few scalars and palettes the drawing needs.

    Only what the browser cannot derive is sent (P6: ≤ 2 MB at 512 tokens); :func:`unpack_flow` derives
    the rest in Python exactly as ``radial.js`` does in the browser:

    - edges come sorted by their upper node ``u`` (then ``v``): ``n_out`` (each node's out-degree) replaces
      ``e_u``; the model membership and head count of an edge are its head masks' (``e_h{c}_{w}``);
      the weight is quantised to ``e_w`` uint8 (``w * 255``, it only orders the edges); the edges drawn at
      rest are an index list ``e_rest_idx``;
    - the head glyphs (one row per lit head glyph, a split glyph two rows, ordered by node, head, model)
      follow from the edges: head ``h`` of node ``u`` is lit for model ``c`` when some edge of ``c`` leaves
      ``u`` through ``h``, and that count is what the glyph reports (``cp`` / ``cf``); a glyph's centre is
      its node's glyph block (``n_bx``, ``n_by``, ``n_ta``, the ring's cell scale ``cs``) plus the head's
      offset in the block (``g_du``, ``g_dv``).

    The edges' curves and the sparkline bars are derived in the browser too, and the traces are walked
    there over the edges, so neither geometry nor an ancestor table is sent."""
    nodes, edges = data.columns("nodes"), data.columns("edges")
    N, n, L = len(nodes), data.n, data.L
    frame_cols = set(nodes.names())  # without building the frame (and the per-ring placement)
    lv, ps = nodes["level"], nodes["pos"]
    if "prio" in frame_cols:  # R2's label priority and display text (word pieces joined)
        prio = _f(nodes["prio"])
        texts = [str(t) for t in nodes["label"]]
    else:
        prio = _f(data.priority[lv, ps])
        texts = [str(t) for t in nodes["token"]]
    st = data.style
    du, dv = _glyph_offsets(st, data.H)
    cs_ring = np.ones(L + 1)
    cs_ring[lv] = np.asarray(nodes["cs"], dtype=np.float64) if "cs" in frame_cols else 1.0
    out: dict = {
        "N": N, "E": len(edges), "L": L, "H": data.H, "n": n, "W": data.words,
        "models": int(data.models), "comparison": data.comparison is not None, "ramp": RAMP_STEPS,
        "extent": float(data.layout.extent), "glyph": float(st.glyph),
        "ch": float(st.cell_height(data.H)), "radii": _f(data.layout.radii), "cs": _f(cs_ring),
        "cw": float(st.row_width(data.H)), "spark_h": float(st.spark_height),
        "spark_w": float(st.spark_width), "gw": float(st.glyph_block(data.H)[0]), "g_du": _f(du), "g_dv": _f(dv),
        "tokens": _display_tokens(data),
        "segs": as_uint(data.segments, 2), "label_text": "\n".join(t.replace("\n", " ") for t in texts),
        "palette": list(GLYPH_PALETTE), "state_colors": list(STATE_COLORS), "text_colors": list(NODE_TEXT),
        "halo_alpha": [float(a) for a in NODE_HALO_ALPHA], "band_fill": LEVEL_BAND_FILL, "band_line": LEVEL_BAND_LINE,
    }
    out.update({
        "n_level": as_uint(lv, 255), "n_pos": as_uint(ps, n), "n_mem": nodes["member"].astype(np.uint8),
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
    out.update(_pack_edges(data, edges, N))
    t = data.layout.ticks
    for k in ("x0", "y0", "x1", "y1"):
        out[f"t_{k}"] = _f(t[k].to_numpy()) if len(t) else np.zeros(0, np.float32)
    runs = getattr(data, "runs", None)
    if runs is not None and len(runs):
        out["r_level"] = as_uint(np.asarray(runs["level"]), 255)
        out["r_a0"], out["r_a1"] = _f(np.asarray(runs["angle0"])), _f(np.asarray(runs["angle1"]))
        out["r_count"] = as_uint(np.asarray(runs["count"]), 65536)
        out["r_first"] = as_uint(np.asarray(runs["first_token"]), 65536)
        out["r_last"] = as_uint(np.asarray(runs["last_token"]), 65536)
    return out


def _glyph_offsets(st, H: int) -> tuple[np.ndarray, np.ndarray]:
    """Head h's glyph centre in its block, from the block's centre: along the label (``du``) and up
    (``dv``), unscaled (layout's glyph grid: H glyphs wrapped into ``glyph_grid_rows(H)`` rows)."""
    cols = st.glyph_cols(H)
    pitch = st.glyph + st.glyph_gap
    gw, gh = st.glyph_block(H)
    h = np.arange(H)
    return (h % cols) * pitch + st.glyph / 2 - gw / 2, gh / 2 - (h // cols) * pitch - st.glyph / 2


def _pack_edges(data: FlowData, edges, N: int) -> dict:
    ecols = set(edges.names())  # without building the edges' frame
    E = len(edges)
    u = np.asarray(edges["u"], dtype=np.int64)
    nh = np.asarray(edges["nh"]) if "nh" in ecols else np.ones(E)
    strength = np.asarray(edges["w"], dtype=np.float64) if "w" in ecols else nh.astype(np.float64)
    layer = np.asarray(edges["layer"], dtype=np.int64)
    rest = np.asarray(edges["rest"], dtype=np.uint8) if "rest" in ecols else _rest_flags(data, strength, layer)
    out: dict = {"e_v": as_uint(edges["v"], N), "e_rest_idx": as_uint(np.flatnonzero(rest), max(E, 1))}
    if E and np.any(np.diff(u) < 0):  # not sorted by the upper node: the browser reads e_u as it is
        out["e_u"] = as_uint(u, N)
    else:
        out["n_out"] = as_uint(np.bincount(u, minlength=N), E + 1)
    if "w" in ecols:
        out["e_w"] = np.round(np.clip(strength, 0.0, 1.0) * 255).astype(np.uint8)
    mask_dtype = np.uint8 if data.H <= 8 else np.uint16 if data.H <= 16 else np.uint32
    for c in data.graphs:
        for w in range(data.words):
            out[f"e_h{c}_{w}"] = edges[f"h{c}_{w}"].astype(mask_dtype)
    return out


def _popcount(a: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.asarray(a).astype(np.uint32)).astype(np.int64)


def pack_roles(data: FlowData, roles, packed: dict) -> dict:
    """A decoder's roles for the rings (``roles``: ``(label, start, end, colour)`` spans in order, as
    :attr:`~attnflows_panel.causal_view.CausalResult.role_bands`): ``role_names`` (each role once, in order
    of first appearance: a chat's several user turns are one role) and ``role_colors``, ``n_role`` (uint8
    per node of ``packed``: the index of its token's role, 255 for the root) and ``n_half`` (each node's slot
    half-angle, radians). The component tints each ring cell in its role's colour."""
    names = list(dict.fromkeys(str(r[0]) for r in roles))
    if len(names) > 254:
        raise ValueError(f"at most 254 roles can be drawn; got {len(names)}")
    colors = {str(r[0]): str(r[3]) for r in reversed(roles)}  # a role's colour: that of its first span
    starts = np.asarray([int(r[1]) for r in roles], dtype=np.int64)
    span_role = np.asarray([names.index(str(r[0])) for r in roles], dtype=np.uint8)
    lv, pos = np.asarray(packed["n_level"], np.intp), np.asarray(packed["n_pos"], np.intp)
    role = span_role[(np.searchsorted(starts, pos, side="right") - 1).clip(0)]
    role[lv == data.L] = 255
    nodes = data.columns("nodes")  # the rows pack_flow sent, in its order
    half = np.asarray(nodes["half"], dtype=np.float32)
    return {"n_role": role, "n_half": half, "role_names": names, "role_colors": [colors[r] for r in names]}


def unpack_flow(d: dict) -> dict:
    """``pack_flow``'s output with every column the browser derives filled in (what ``radial.js`` computes
    on loading the data): ``e_u``, ``e_mem``, ``e_nh``, ``e_rest`` (0/1), ``e_w`` (float), and the head glyph
    columns ``g_node``, ``g_head``, ``g_model``, ``g_part`` (0 whole, 1/2 left/right half), ``g_gc`` (palette
    index), ``g_x``, ``g_y`` (data units), ``g_cp``, ``g_cf``; ``G`` their number. For tests and tools."""
    out = dict(d)
    N, E, H, W = d["N"], d["E"], d["H"], d["W"]
    models = d["models"]
    if "e_u" in d:
        eu = np.asarray(d["e_u"], dtype=np.int64)
    else:
        eu = np.repeat(np.arange(N), np.asarray(d["n_out"], dtype=np.int64))
    mem = np.zeros(E, np.int64)
    nh = np.zeros(E, np.int64)
    counts = {}
    for c in (PRE, FINE):
        if not models & c:
            continue
        cnt = np.zeros(N * H, np.int64)
        pc = np.zeros(E, np.int64)
        for w in range(W):
            m = np.asarray(d[f"e_h{c}_{w}"]).astype(np.uint32)
            pc += _popcount(m)
            for b in range(min(32, H - 32 * w)):
                on = (m >> np.uint32(b)) & np.uint32(1) > 0
                np.add.at(cnt, eu[on] * H + 32 * w + b, 1)
        mem |= np.where(pc > 0, c, 0)
        nh = np.maximum(nh, pc)
        counts[c] = cnt
    rest = np.zeros(E, np.uint8)
    rest[np.asarray(d["e_rest_idx"], dtype=np.int64)] = 1
    out.update({"e_u": eu, "e_mem": mem.astype(np.uint8), "e_nh": nh, "e_rest": rest})
    if "e_w" in d:
        out["e_w"] = np.asarray(d["e_w"], dtype=np.float64) / 255.0
    zero = np.zeros(N * H, np.int64)
    cp, cf = counts.get(PRE, zero), counts.get(FINE, zero)
    lvl = np.asarray(d["n_level"], dtype=np.int64)
    above = np.repeat(lvl >= 1, H)
    st = (PRE * (cp > 0) * bool(models & PRE) + FINE * (cf > 0) * bool(models & FINE)) * above
    lit = np.flatnonzero(st)
    split_cell = st[lit] == (PRE | FINE)
    j = np.repeat(np.arange(lit.size), np.where(split_cell, 2, 1))
    idx, split = lit[j], split_cell[j]
    first = np.concatenate(([True], idx[1:] != idx[:-1])) if idx.size else np.zeros(0, bool)
    model = np.where(split, np.where(first, PRE, FINE), st[idx])
    node, head = np.divmod(idx, H)
    if d["comparison"]:
        gc = np.where(model == PRE, 12, 13)
    else:
        cnt = np.where(model == PRE, cp[idx], cf[idx])
        gc = np.where(model == PRE, 0, d["ramp"]) + np.minimum(cnt, d["ramp"]) - 1
    ta = np.asarray(d["n_ta"], dtype=np.float64)[node]
    cs = np.asarray(d["cs"], dtype=np.float64)[lvl[node]]
    ux, uy = np.cos(ta), np.sin(ta)
    off = np.where(split, np.where(model == PRE, -0.25, 0.25), 0.0) * d["glyph"]
    gu = (np.asarray(d["g_du"], dtype=np.float64)[head] + off) * cs
    gv = np.asarray(d["g_dv"], dtype=np.float64)[head] * cs
    out.update({
        "G": int(idx.size), "g_node": node, "g_head": head, "g_model": model.astype(np.uint8),
        "g_part": np.where(split, model, 0).astype(np.uint8), "g_gc": gc.astype(np.uint8),
        "g_x": np.asarray(d["n_bx"], dtype=np.float64)[node] + gu * ux - gv * uy,
        "g_y": np.asarray(d["n_by"], dtype=np.float64)[node] + gu * uy + gv * ux,
        "g_cp": cp[idx], "g_cf": cf[idx],
    })
    return out


def _display_tokens(data: FlowData) -> list[str]:
    from attnflows_panel.layout import display_token

    return [display_token(t) for t in data.tokens]


def pack_highlight(data: FlowData, hl: Highlight | None, selection=()) -> dict:
    """The frozen highlight as the browser draws it: per node its model code (``nodes``) and whether it
    is selected (``origin``), per edge its code, per glyph row whether it is lit; ``selection`` as given
    (the browser adds shift-clicks to it)."""
    sel = [[int(a), int(b)] for a, b in selection]
    if hl is None or not hl.active:
        return {"selection": sel}
    return {"nodes": hl.nodes.astype(np.uint8), "origin": hl.origin.astype(np.uint8),
            "edges": hl.edges.astype(np.uint8), "glyphs": hl.glyphs.astype(np.uint8), "selection": sel,
            "N": data.n_nodes}


def _corners(b) -> np.ndarray:
    """The four corners of a published label box ``[x, y, w, h, token, ring, angle]`` (turned by ``angle``
    radians, clockwise on screen, about its centre; no angle: upright)."""
    x, y, w, h = (float(v) for v in b[:4])
    a = float(b[6]) if len(b) > 6 else 0.0
    c, s = np.cos(a), np.sin(a)
    d = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return np.array([x + w / 2, y + h / 2]) + d @ np.array([[c, s], [-s, c]])


def label_overlaps(boxes) -> list[tuple]:
    """The pairs of published label boxes (``data-label-boxes``) whose turned boxes share interior: the
    separating-axis test over each pair's edge normals (touching edges do not overlap)."""
    corners = [_corners(b) for b in boxes]
    lo = np.array([c.min(axis=0) for c in corners]).reshape(-1, 2)
    hi = np.array([c.max(axis=0) for c in corners]).reshape(-1, 2)
    out = []
    for i in range(len(boxes)):
        near = np.flatnonzero((lo[i + 1:, 0] < hi[i, 0]) & (lo[i, 0] < hi[i + 1:, 0])
                              & (lo[i + 1:, 1] < hi[i, 1]) & (lo[i, 1] < hi[i + 1:, 1])) + i + 1
        for j in near.tolist():
            p, q = corners[i], corners[j]
            axes = np.concatenate([np.diff(p[:3], axis=0), np.diff(q[:3], axis=0)])
            axes = np.stack([-axes[:, 1], axes[:, 0]], axis=1)
            pp, qq = p @ axes.T, q @ axes.T
            if np.all((pp.max(0) > qq.min(0) + 1e-6) & (qq.max(0) > pp.min(0) + 1e-6)):
                out.append((boxes[i], boxes[j]))
    return out


def label_inside(b, width: float, height: float, slack: float = 0.5) -> bool:
    """Whether a published label box's turned corners lie within a ``width`` × ``height`` root element."""
    c = _corners(b)
    return bool(c.min() >= -slack and c[:, 0].max() <= width + slack and c[:, 1].max() <= height + slack)


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
    shown = param.Boolean(default=False, doc=(
        "Set by the browser once the component is laid out in a page. In a notebook the view sends "
        "nothing to that output before it (AttentionFlowsView._holding)."))

    _esm = ESM_SOURCE

    def _get_model(self, doc, root=None, parent=None, comm=None):
        """A new output of the component. In a notebook, a view shown again (a second cell that displays
        it) has a new output that is not laid out yet, while ``shown`` still says True from the first: it is
        set back to False, silently, so that the view holds its pushes for every output until the new one
        reports itself laid out (``AttentionFlowsView._holding``), as for the first."""
        if comm is not None and self.shown:
            with param.parameterized.discard_events(self):
                self.shown = False
        return super()._get_model(doc, root, parent, comm)

    def show(self, data: FlowData, hl: Highlight | None, selection=(), level=None) -> None:
        """Draw ``data`` with highlight ``hl`` in one update."""
        self.param.update(data=pack_flow(data), frozen=pack_highlight(data, hl, selection), level=level)
