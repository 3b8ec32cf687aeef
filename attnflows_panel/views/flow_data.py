"""What the radial Attention Flow view (§4.3, Fig. 1(c), Figs. 4-8) draws, without Bokeh.

:class:`FlowData` holds everything the view draws for one input, τ and mode, assembled from what
:mod:`attnflows_panel.graph` / :mod:`attnflows_panel.compare` answer and laid out by
:mod:`attnflows_panel.layout`: nodes (the Token Rings, with their placed labels), head glyphs,
sparklines, edges, and the per-node hover highlight sets. It also turns a frozen selection (click,
brush, two rings, a head glyph) into highlight codes by asking the graph (``trace``/``paths``).
:mod:`attnflows_panel.views.flow` builds the Bokeh figure from it; this module imports no Bokeh.

What the browser receives (P6): coordinates as float32 (tokens) or int16 tenths of a pixel (edges,
glyphs, sparkline bars), small integer columns, the edges with the heads that carry them as bit masks, and per model one bit stream of every node's ancestors (the graph's
``all_traces()``), never attention matrices. Hover runs in the browser (P4): the trace of node ``u`` is
its ancestors' bits, plus the nodes ``v`` above whose ancestor bits hold ``u`` (its descendants). A head
glyph ``(u, h)`` at level ``k`` restricts layer ``k-1`` to head ``h`` (Fig. 6(b)); its trace is ``u``'s
descendants plus, for every child ``b`` that head ``h`` connects ``u`` to, ``b`` and ``b``'s ancestors -
exactly :meth:`AttentionGraph.trace` with ``head=(k-1, h)`` (the tests check both against the graph).

Display states (one ``st`` byte per drawn item, written by Python for a frozen selection and by the
browser while hovering; colours and alphas are looked up from it):

====  =====================================================
0     unused
1-3   highlighted, by model code (1 pre-trained, 2 fine-tuned, 3 both)
4     dimmed (a highlight is shown and this item is not part of it)
5-8   normal, 5 + the item's base model code (0 in single-model mode)
9-11  the hovered / selected token itself, 8 + model code
====  =====================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import BOTH, FINE, PRE, GraphComparison
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.ring_labels import CONTENT, token_classes
from attnflows_panel.layout import (
    RadialLayout,
    RadialStyle,
    edge_curves,
    glyph_grid_arrays,
    radial_layout,
    sparkline_segments,
)

__all__ = [
    "FlowData",
    "Highlight",
    "MODES",
    "compose_states",
    "count_palette",
    "NODE_TEXT",
    "NODE_HALO_ALPHA",
    "EDGE_ALPHA",
    "GLYPH_ALPHA",
    "STATE_COLORS",
]

MODES = ("combined", "pretrained", "finetuned")
MODE_CODE = {"pretrained": PRE, "finetuned": FINE, "combined": BOTH}
MODEL_NAME = {PRE: "pre-trained", FINE: "fine-tuned", BOTH: "both"}

TEXT_COLOR = "#222222"
DIM_COLOR = "#c8c8c8"
NEUTRAL_EDGE = "#7f7f7f"
#: sparkline bars of a single-model view (combined views colour them by model)
SINGLE_SPARK_COLOR = "#555555"
_MODEL_COLOR = {PRE: PRETRAINED_COLOR, FINE: FINETUNED_COLOR, BOTH: SHARED_COLOR}

# colour per display state (see the module docstring), for highlights and model-coded items
STATE_COLORS = [
    TEXT_COLOR,  # 0 unused
    PRETRAINED_COLOR,
    FINETUNED_COLOR,
    SHARED_COLOR,
    DIM_COLOR,  # 4 dimmed
    TEXT_COLOR,  # 5 normal, no model code
    PRETRAINED_COLOR,
    FINETUNED_COLOR,
    SHARED_COLOR,
    PRETRAINED_COLOR,  # 9-11 origin
    FINETUNED_COLOR,
    SHARED_COLOR,
]
# token label text: normal tokens of both models (8) stay dark, single-model tokens take their colour
NODE_TEXT = list(STATE_COLORS)
NODE_TEXT[8] = TEXT_COLOR
EDGE_COLORS = list(STATE_COLORS)
EDGE_COLORS[5] = NEUTRAL_EDGE
EDGE_COLORS[8] = NEUTRAL_EDGE  # edges of both models: neutral until highlighted
# alphas per display state
NODE_HALO_ALPHA = [0, 0.13, 0.13, 0.13, 0, 0, 0, 0, 0, 0.32, 0.32, 0.32]
EDGE_ALPHA = [0, 0.85, 0.85, 0.85, 0.03, 0.2, 0.3, 0.3, 0.2, 0.85, 0.85, 0.85]
EDGE_WIDTH = [0.7, 1.3, 1.3, 1.3, 0.6, 0.7, 0.7, 0.7, 0.7, 1.3, 1.3, 1.3]
# Edge opacity follows density, so that a crowded gap reads as a texture and not as a solid band: an
# edge's opacity is INK / (how many drawn edges overlap a point of its gap), where the overlap of a layer
# is (number of edges) × (mean angle an edge sweeps) / 2π, clamped to [MIN, MAX]. Normal edges count
# all edges of their layer; highlighted edges count the highlighted ones (computed again on hover).
EDGE_INK, EDGE_ALPHA_MIN, EDGE_ALPHA_MAX = 3.0, 10 / 255, 0.4
HL_INK, HL_ALPHA_MIN, HL_ALPHA_MAX = 5.0, 0.025, 0.9


#: edges drawn at rest per layer at most (module docstring, ``rest``)
REST_PER_LAYER = 48


def rest_edges(layer: np.ndarray, lower: np.ndarray, weight: np.ndarray, per_layer: int = REST_PER_LAYER) -> np.ndarray:
    """uint8 per edge: 1 for the edges drawn at rest. Every lower node keeps its strongest incoming edge
    (the largest attention weight, ties to the first edge), so each token shows where its strongest
    reader sits one level up; of those, each layer keeps its ``per_layer`` strongest. Everything else is
    drawn only on hover or freeze."""
    E = layer.size
    out = np.zeros(E, dtype=np.uint8)
    if E == 0:
        return out
    order = np.lexsort((np.arange(E), -np.asarray(weight, dtype=np.float64), lower))
    first = np.concatenate(([True], lower[order][1:] != lower[order][:-1]))
    best = order[first]  # the strongest edge into each lower node
    by_layer = best[np.lexsort((np.arange(best.size), -np.asarray(weight)[best], layer[best]))]
    lay = layer[by_layer]
    starts = np.concatenate(([True], lay[1:] != lay[:-1]))
    idx = np.arange(by_layer.size)
    rank = idx - np.maximum.accumulate(np.where(starts, idx, 0))
    out[by_layer[rank < per_layer]] = 1
    return out


def density_alpha(count: np.ndarray, sweep: np.ndarray, ink: float, lo: float, hi: float) -> np.ndarray:
    """Opacity per layer for ``count`` edges of mean sweep ``sweep`` (fraction of a turn), as uint8·255."""
    overlap = np.asarray(count, dtype=np.float64) * np.asarray(sweep, dtype=np.float64)
    alpha = np.clip(ink / np.maximum(overlap, 1e-9), lo, hi)
    return np.floor(alpha * 255 + 0.5).astype(np.uint8)

GLYPH_ALPHA = [1, 1, 1, 1, 0.14, 1, 1, 1, 1, 1, 1, 1]
# the chosen level's band (the sentence view's level): its own colour, apart from the three model colours
LEVEL_BAND_FILL = "#e6ebf5"
LEVEL_BAND_LINE = "#5b6f95"
SPARK_ALPHA = [1, 1, 1, 1, 0.15, 0.9, 0.9, 0.9, 0.9, 1, 1, 1]


# glyph colours: index into GLYPH_PALETTE. Single-model mode: a sequential ramp of the model's colour by
# the number of tokens the head attends to (1..6+); combined mode: the model colour (§4.3.3).
RAMP_STEPS = 6


def _mix(color: str, other: str, t: float) -> str:
    a = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    b = np.array([int(other[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    c = np.clip(np.round(a * (1 - t) + b * t), 0, 255).astype(int)
    return "#%02x%02x%02x" % tuple(c)


def count_palette(color: str, steps: int = RAMP_STEPS) -> list[str]:
    """A light-to-dark ramp of ``color`` with ``steps`` entries (1, 2, …, steps+ tokens attended)."""
    ts = np.linspace(0.0, 1.0, steps)
    out = []
    for t in ts:
        if t < 0.5:
            out.append(_mix("#ffffff", color, 0.25 + 1.5 * t))  # tint → the colour itself
        else:
            out.append(_mix(color, "#000000", (t - 0.5) * 0.9))  # the colour → a dark shade
    return out


GLYPH_PALETTE = count_palette(PRETRAINED_COLOR) + count_palette(FINETUNED_COLOR) + [PRETRAINED_COLOR, FINETUNED_COLOR]


def _f32(a) -> np.ndarray:
    return np.round(np.asarray(a, dtype=np.float64), 2).astype(np.float32)


# Coordinates of the many small items (edges, glyphs, sparkline bars) travel as int16 tenths of a pixel
# (half the bytes of float32; the browser divides by QUANT in a transform). Extents stay far below the
# ±3276 px that int16 allows.
QUANT = 10


def _q16(a) -> np.ndarray:
    q = np.round(np.asarray(a, dtype=np.float64) * QUANT)
    if q.size and np.abs(q).max() > np.iinfo(np.int16).max:
        raise ValueError("the drawing is too large for int16 coordinates (more than 3276 px from the centre)")
    return q.astype(np.int16)


def _uint(a, n_max: int) -> np.ndarray:
    a = np.asarray(a)
    if n_max < 256:
        return a.astype(np.uint8)
    if n_max < 65536:
        return a.astype(np.uint16)
    return a.astype(np.uint32)


def _pack_heads(heads_bool: np.ndarray) -> np.ndarray:
    """bool [m, H] → uint32 [m, W]: bit ``h % 32`` of word ``h // 32`` is set when head h carries the edge."""
    m, H = heads_bool.shape
    W = max(1, math.ceil(H / 32))
    padded = np.zeros((m, W * 32), dtype=bool)
    padded[:, :H] = heads_bool
    # 8 heads per byte, little-endian bits, 4 bytes per uint32 word (this machine order: little-endian)
    return np.packbits(padded, axis=1, bitorder="little").view("<u4").astype(np.uint32)


class _Columns:
    """Read-only numpy columns of one of :class:`FlowData`'s frames (``cols["x"]`` equals
    ``frame["x"].to_numpy()``). The view is built from these arrays; the pandas frames are made from them
    only when someone asks for one (a DataFrame costs more than the rest of a small view, P1)."""

    __slots__ = ("_get", "_n")

    def __init__(self, get, n: int):
        self._get, self._n = get, n

    def __getitem__(self, name: str) -> np.ndarray:
        return self._get(name)

    def __len__(self) -> int:
        return self._n


def _frozen_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        v.flags.writeable = False
        out[k] = v
    return out


@dataclass
class Highlight:
    """Highlight codes of one selection: per node / edge the model code (0 = not highlighted), per glyph
    row whether its head carries the selection's attention, and the selected nodes themselves."""

    nodes: np.ndarray
    edges: np.ndarray
    glyphs: np.ndarray
    origin: np.ndarray
    message: str = ""

    @property
    def active(self) -> bool:
        return bool(self.nodes.any())

    def node_set(self, data: FlowData) -> dict[tuple[int, int], int]:
        """``{(level, token): code}`` of the highlighted nodes."""
        ids = np.flatnonzero(self.nodes)
        lv = data.columns("nodes")["level"][ids]
        ps = data.columns("nodes")["pos"][ids]
        return {(int(a), int(b)): int(c) for a, b, c in zip(lv, ps, self.nodes[ids])}


def compose_states(data: FlowData, hl: Highlight | None) -> dict[str, np.ndarray]:
    """Display states (module docstring) of every drawn item for a highlight, or for none.

    The browser's hover code (``flow.js``, ``compose``) does exactly the same from its own codes.
    """
    nodes, edges = data.columns("nodes"), data.columns("edges")
    G = len(data.columns("glyphs"))
    node_base = nodes["base"].astype(np.uint8)
    edge_base = edges["base"].astype(np.uint8)
    if hl is None or not hl.active:
        node_st = 5 + node_base
        edge_st = 5 + edge_base
        glyph_st = np.full(G, 5, dtype=np.uint8)
    else:
        node_st = np.where(hl.nodes > 0, hl.nodes, 4).astype(np.uint8)
        node_st = np.where(hl.origin, 8 + np.maximum(hl.nodes, 1), node_st).astype(np.uint8)
        edge_st = np.where(hl.edges > 0, hl.edges, 4).astype(np.uint8)
        gm = data.columns("glyphs")["model"].astype(np.uint8)
        glyph_st = np.where(hl.glyphs, gm, 4).astype(np.uint8)
    sparks = data.columns("sparks")
    spark_st = node_st[sparks["node"]] if len(sparks) else np.zeros(0, np.uint8)
    layer = edges["layer"].astype(np.int64)
    lit = edge_st < 4
    count = np.bincount(layer[lit], minlength=data.L)
    ha = density_alpha(count, data.sweep, HL_INK, HL_ALPHA_MIN, HL_ALPHA_MAX)[layer]
    return {"nodes": node_st.astype(np.uint8), "edges": edge_st.astype(np.uint8), "edge_alpha": ha,
            "glyphs": glyph_st.astype(np.uint8), "sparks": np.asarray(spark_st, dtype=np.uint8)}


class FlowData:
    """What the radial view draws for one input at one τ in one mode (no Bokeh here).

    Parameters
    ----------
    tokens, segments:
        The input's WordPiece tokens and segment ids.
    pre, fine:
        The two models' Attention Graphs (either may be None in a single-model mode).
    mode:
        ``"combined"`` (union of both graphs, §4.3.3), ``"pretrained"`` or ``"finetuned"``.
    style:
        Geometry (:class:`~attnflows_panel.layout.RadialStyle`).

    Attributes (pandas DataFrames, row index = id used by the browser)
    -------------------------------------------------------------------
    nodes: the layout's nodes plus ``member`` (model code of the graphs holding the node), ``base``
        (colour code in the normal state) and the glyph-block and sparkline baseline geometry.
    glyphs: one row per lit head glyph (a split glyph is two rows, §4.3.3): node, head, model, x, y, w,
        angle, gc (palette index), cp / cf (tokens attended in each model).
    edges: one row per edge (layer, a, b) of the drawn graph(s): u, v (node ids), layer, member code,
        the heads carrying it per model as uint32 words (``h1_w`` for pre-trained, ``h2_w`` fine-tuned)
        and its Bézier geometry.
    sparks: sparkline bars (node, model, x0, y0, x1, y1).
    bits: ``{model code: uint8 array}``: each node's ancestors in that model as one little-endian bit
        stream; node ``u``'s row holds ``lo[level(u)]`` bits (the nodes on lower levels), rows in node order.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        segments: Sequence[int],
        pre: AttentionGraph | None,
        fine: AttentionGraph | None,
        mode: str = "combined",
        style: RadialStyle | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        graphs = {PRE: pre, FINE: fine}
        need = [c for c in (PRE, FINE) if MODE_CODE[mode] & c]
        for c in need:
            if graphs[c] is None:
                raise ValueError(f"mode {mode!r} needs the {MODEL_NAME[c]} graph")
        self.mode = mode
        self.models = MODE_CODE[mode]
        self.graphs: dict[int, AttentionGraph] = {c: graphs[c] for c in need}
        g0 = self.graphs[need[0]]
        self.L, self.H, self.n = g0.L, g0.H, g0.n
        if len(tokens) != self.n:
            raise ValueError(f"{len(tokens)} tokens for a graph of n = {self.n}")
        self.tau = g0.tau
        self.tokens = list(tokens)
        self.segments = list(segments)
        self.comparison = GraphComparison(pre, fine) if mode == "combined" else None
        if self.comparison is not None:
            levels = self.comparison.levels
            membership = np.asarray(self.comparison.membership)
        else:
            levels = g0.levels
            membership = np.asarray(g0.member, dtype=np.int8) * self.models
        self.levels = [np.asarray(lv) for lv in levels]
        self.influence = {c: g.influence() for c, g in self.graphs.items()}  # eq. 4, [L, n] per model
        self.priority = self._label_priority()
        self.layout: RadialLayout = radial_layout(self.levels, self.tokens, self.segments, self.H, style,
                                                  priority=self.priority)
        self.style = self.layout.style
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._frames: dict[str, pd.DataFrame] = {}
        self.node_index = self.layout.node_index(self.n)
        self.n_nodes = len(self.layout.cols["node"])
        self.bounds = self.layout.level_bounds()
        lv, ps = self.layout.column("level"), self.layout.column("pos")
        member = membership[lv, ps].astype(np.uint8)
        extra = {"member": member,
                 "base": member if self.comparison is not None else np.zeros(member.size, np.uint8)}
        extra.update(self._glyph_block_geometry())
        self.layout.add_columns(extra)  # one concat (a pandas setitem per column cost more)
        self._arrays["glyphs"] = self._build_glyphs()
        self._arrays["edges"] = self._build_edges()
        self._arrays["sparks"] = self._build_sparks()
        self.bits = {c: self._ancestor_bits(g) for c, g in self.graphs.items()}

    # ------------------------------------------------------------------ construction

    @property
    def nodes(self) -> pd.DataFrame:
        return self.layout.nodes

    @property
    def glyphs(self) -> pd.DataFrame:
        return self._frame("glyphs")

    @property
    def edges(self) -> pd.DataFrame:
        return self._frame("edges")

    @property
    def sparks(self) -> pd.DataFrame:
        return self._frame("sparks")

    @property
    def runs(self) -> pd.DataFrame:
        """Runs of folded tokens (module docstring): level, angle, angle0, angle1, count, first_token,
        last_token, radius."""
        return self.layout.runs

    def _frame(self, name: str) -> pd.DataFrame:
        df = self._frames.get(name)
        if df is None:
            df = self._frames[name] = pd.DataFrame(self._arrays[name])
        return df

    def columns(self, frame: str) -> _Columns:
        """Numpy columns of ``nodes``, ``glyphs``, ``edges``, ``sparks`` or ``runs``:
        ``columns("edges")["u"]`` is ``edges["u"].to_numpy()`` (read-only), without building the frame."""
        if frame == "nodes":
            return _Columns(self.layout.column, len(self.layout.cols["node"]))
        if frame == "runs":
            rc = self.layout.run_cols
            return _Columns(rc.__getitem__, len(rc["level"]))
        arrays = self._arrays[frame]
        return _Columns(arrays.__getitem__, len(next(iter(arrays.values()))))

    def _label_priority(self) -> np.ndarray:
        """float [L+1, n], the ``prio`` column: which labels show first (higher first). The token's class
        decides (:func:`~attnflows_panel.ring_labels.token_classes`: content words, then stop words, then
        lone word pieces, then punctuation and special tokens), then its influence I_k (eq. 4, the larger
        of the drawn models', clamped at 5 as the ratings are), then its degree in the drawn graph(s)
        (edges to the level above and below) as a tie-breaker; never its length. The root comes first.
        ``prio = 10 · class + min(I_k, 5) + degree / (max degree + 1)``."""
        L, n = self.L, self.n
        infl = np.zeros((L + 1, n))
        deg = np.zeros((L + 1, n))
        for c, g in self.graphs.items():
            infl[:L] = np.maximum(infl[:L], self.influence[c])
            adj = g.adjacency.view(np.uint8)  # [L, n, n]: edge (k+1, a) -> (k, b), summed as bytes
            acc = np.uint16 if n < 65536 else np.int64
            deg[:L] = np.maximum(deg[:L], adj.sum(axis=1, dtype=acc))  # from the level above
            deg[1:] = np.maximum(deg[1:], adj.sum(axis=2, dtype=acc))  # to the level below
        cls = token_classes(self.tokens).astype(np.float64)
        prio = 10.0 * cls[None, :] + np.minimum(infl, 5.0) + deg / (deg.max() + 1.0)
        prio[L] = 10.0 * (CONTENT + 1)
        return prio

    def _glyph_block_geometry(self) -> dict[str, np.ndarray]:
        """The nodes' glyph-block size (bw, bh) and sparkline baseline end (sx1, sy1), as new columns."""
        col, st = self.layout.column, self.style
        gw, gh = st.glyph_block(self.H)
        lv0 = col("level") == 0  # level 0 has no level below: no glyphs, no empty block
        sw = col("sw")
        return {
            "bw": np.where(lv0, 0.0, gw + 1.2),
            "bh": np.where(lv0, 0.0, gh + 1.2),
            "sx1": col("sx0") + sw * col("ux"),
            "sy1": col("sy0") + sw * col("uy"),
        }

    def _build_glyphs(self) -> pd.DataFrame:
        """Lit head glyphs (§4.3.2): single-model mode colours them by the number of tokens attended
        (``g.glyphs(k)``), combined mode by ``c.glyph_states(k)``: turquoise, purple, or a split glyph."""
        H = self.H
        grid = glyph_grid_arrays(self.layout, H)
        nodes = self.layout.nodes
        N = len(nodes)
        pos = self.layout.column("pos")
        counts = {c: np.zeros((N, H), dtype=np.int64) for c in (PRE, FINE)}
        above0 = int(self.bounds[1])  # nodes of levels >= 1 (level 0 has no glyphs): g.glyphs(k)[pos]
        lv = self.layout.column("level")[above0:]
        for c, g in self.graphs.items():
            counts[c][above0:] = g.out_degree[lv - 1, pos[above0:]]
        if self.comparison is not None:
            # c.glyph_states(k) of every node (level 0 has none): PRE where the pre-trained head attends
            # to some token of the level below, FINE likewise, BOTH for a split glyph (§4.3.3)
            state = PRE * (counts[PRE] > 0) + FINE * (counts[FINE] > 0)
        else:
            (c,) = self.graphs
            state = (counts[c] > 0) * c
        st = state.ravel()
        cp, cf = counts[PRE].ravel(), counts[FINE].ravel()
        lit = np.flatnonzero(st)  # (node, head) cells, ascending: rows come out ordered by node, head
        g = self.style.glyph
        cols = ["node", "head", "model", "x", "y", "w", "part", "angle", "gc", "cp", "cf"]
        if lit.size == 0:
            return _frozen_arrays({c: np.zeros(0) for c in cols})
        # a split glyph (both models, §4.3.3) is two half-width rows, pre-trained (left) then fine-tuned
        split_cell = st[lit] == BOTH
        idx = np.repeat(lit, np.where(split_cell, 2, 1))
        split = np.repeat(split_cell, np.where(split_cell, 2, 1))
        first = np.concatenate(([True], idx[1:] != idx[:-1]))
        model = np.where(split, np.where(first, PRE, FINE), st[idx]).astype(np.int64)
        cs = self.layout.column("cs")[lit // H][np.repeat(np.arange(lit.size), np.where(split_cell, 2, 1))]
        off = np.where(split, np.where(first, -g / 4, g / 4), 0.0) * cs
        if self.comparison is not None:
            gc = np.where(model == PRE, 12, 13).astype(np.int64)
        else:
            cnt = np.where(model == PRE, cp[idx], cf[idx])
            gc = np.where(model == PRE, 0, RAMP_STEPS) + np.minimum(cnt, RAMP_STEPS) - 1
        return _frozen_arrays({
            "node": grid["node"][idx], "head": grid["head"][idx], "model": model,
            "x": grid["x"][idx] + off * grid["ux"][idx], "y": grid["y"][idx] + off * grid["uy"][idx],
            "w": np.where(split, g / 2, g) * cs, "part": np.where(split, model, 0).astype(np.int64),
            "angle": grid["angle"][idx], "gc": gc, "cp": cp[idx], "cf": cf[idx],
        })

    def _build_edges(self) -> pd.DataFrame:
        """The edges of the drawn graph(s), one row per (layer, a, b), with each model's carrying heads.

        Built in numpy (one DataFrame at the end: a DataFrame per layer cost more than the rest of the
        view's data together)."""
        n, H = self.n, self.H
        W = max(1, math.ceil(H / 32))
        cols = ["layer", "a", "b", "nh"] + [f"h{c}_{w}" for c in (PRE, FINE) for w in range(W)] + ["member"]
        per = {}
        for c, g in self.graphs.items():  # every layer at once: keys (k, a, b) ascending
            key = np.flatnonzero(g.adjacency)  # (k * n + a) * n + b, ascending (np.nonzero is slow in 3-d)
            k, rem = np.divmod(key, n * n)
            a, b = np.divmod(rem, n)
            heads = g.active[k, :, a, b]  # bool [m, H]
            weight = np.where(heads, g.attn[k, :, a, b], 0).max(axis=1) if key.size else np.zeros(0)
            per[c] = (key.astype(np.int64), heads, g.head_counts[k, a, b], weight)
        keys = np.sort(np.concatenate([p[0] for p in per.values()])) if per else np.zeros(0, np.int64)
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys  # np.unique, faster
        if keys.size == 0:
            edges = {c: np.zeros(0, dtype=np.int64) for c in cols}
            edges["w"] = np.zeros(0, dtype=np.float32)
        else:
            edges = {"layer": keys // (n * n), "a": keys // n % n, "b": keys % n}
            member = np.zeros(keys.size, dtype=np.int64)
            nh = np.zeros(keys.size, dtype=np.int64)
            weight = np.zeros(keys.size, dtype=np.float32)
            words = {}
            for c in (PRE, FINE):
                words[c] = np.zeros((keys.size, W), dtype=np.uint32)
                if c in per:
                    key_c, heads, count_c, weight_c = per[c]
                    pos = np.searchsorted(keys, key_c)
                    words[c][pos] = _pack_heads(heads)
                    member[pos] |= c
                    nh[pos] = np.maximum(nh[pos], count_c)  # heads carrying the edge
                    weight[pos] = np.maximum(weight[pos], weight_c)  # the strongest carrying head
            edges["nh"] = nh
            for c in (PRE, FINE):
                for w in range(W):
                    edges[f"h{c}_{w}"] = words[c][:, w]
            edges["member"] = member
            edges["w"] = weight
        layer = edges["layer"]
        u = self.node_index[layer + 1, edges["a"]]
        v = self.node_index[layer, edges["b"]]
        edges["u"], edges["v"] = u, v
        edges["base"] = edges["member"] if self.comparison is not None else np.zeros(layer.size, dtype=np.int64)
        # normal-state opacity per layer: dense layers fade so that they read as texture, not ink
        # (see density_alpha; the mean sweep per layer also scales highlighted edges in the browser) ...
        ang = self.layout.column("angle")
        t0, t1 = ang[u], ang[v]
        sweep = (np.abs(np.mod(t1 - t0 + np.pi, 2 * np.pi) - np.pi) + 0.05) / (2 * np.pi)
        count = np.bincount(layer, minlength=self.L)
        self.sweep = np.bincount(layer, weights=sweep, minlength=self.L) / np.maximum(count, 1)
        # ... and within a layer by the number of heads carrying the edge (the larger of the two models'):
        # one head draws at 45% of the layer's opacity, four or more heads at 100%
        ea = density_alpha(count, self.sweep, EDGE_INK, EDGE_ALPHA_MIN, EDGE_ALPHA_MAX)[layer].astype(np.float64)
        heads_w = 0.45 + 0.55 * (np.minimum(edges["nh"], 4) - 1).clip(0) / 3.0
        edges["ea"] = np.clip(np.floor(ea * heads_w * 1.6 + 0.5), 3, 255).astype(np.uint8)
        edges.update(edge_curves(self.layout, u, v))
        edges["rest"] = rest_edges(layer, v, edges["w"], REST_PER_LAYER)
        self.words = W
        return _frozen_arrays(edges)

    def _build_sparks(self) -> pd.DataFrame:
        """Sparklines (§4.3.2, the columns of the attention matrices): under token w of level k, a bar at
        the relative position ``(a - w)/(n-1)`` of each token a of level k+1 that attends to w through
        layer k, as high as the number of heads doing so, clamped at 3 - i.e. ``g.sparkline(k, w,
        "attending")``. Read for every level at once from the graph's ``head_counts`` (the number of
        heads carrying each edge: the same numbers; the tests check them against ``g.sparkline`` token by
        token)."""
        models = list(self.graphs.items())
        shift = 0.9 if len(models) == 2 else 0.0
        denom = max(self.n - 1, 1)
        ux_all, uy_all = self.layout.column("ux"), self.layout.column("uy")
        cols: dict[str, list[np.ndarray]] = {c: [] for c in ("node", "x0", "y0", "x1", "y1", "model")}
        for i, (c, g) in enumerate(models):
            heads = g.head_counts  # [k, a, w]: heads carrying edge (k+1, a) -> (k, w)
            flat = np.flatnonzero(g.adjacency)  # ordered by layer, then a, then w (np.nonzero is slow in 3-d)
            k_idx, rem = np.divmod(flat, self.n * self.n)
            a_idx, w_idx = np.divmod(rem, self.n)
            if k_idx.size:
                seg = sparkline_segments(self.layout, [self.node_index[k_idx, w_idx]], [(a_idx - w_idx) / denom],
                                         [np.minimum(heads[k_idx, a_idx, w_idx], 3)], per_bar=True)
            else:
                seg = sparkline_segments(self.layout, [], [], [])
            x0, y0, x1, y1 = seg["x0"], seg["y0"], seg["x1"], seg["y1"]
            if shift and seg["node"].size:
                nid = seg["node"]
                off = shift * (1 if i else -1) / 2
                dx, dy = off * ux_all[nid], off * uy_all[nid]
                x0, x1, y0, y1 = x0 + dx, x1 + dx, y0 + dy, y1 + dy
            for key, arr in (("node", seg["node"]), ("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1),
                             ("model", np.full(seg["node"].size, c, dtype=np.int64))):
                cols[key].append(arr)
        return _frozen_arrays({k: np.concatenate(v) for k, v in cols.items()})

    def _ancestor_bits(self, g: AttentionGraph) -> np.ndarray:
        """Each node's ancestors in graph ``g`` (``g.all_traces()``, read in bulk through
        :meth:`AttentionGraph.ancestor_sets`, numbered by this view's node ids) as one packed bit stream: node ``u``'s row holds the
        nodes of the levels below its own, rows in node order."""
        bounds = self.bounds  # this view's nodes of level l are ids bounds[l]:bounds[l+1]
        ids = self.node_index.ravel()[g.levels_flat]  # this view's node id of each of g's nodes
        sets = g.ancestor_sets(ids, self.n_nodes)  # numbered by this view's ids: no scatter
        off = np.concatenate([[0], np.cumsum([len(x) for x in g.levels])])
        rows = []
        for l in range(self.L + 1):
            m, lo = int(bounds[l + 1] - bounds[l]), int(bounds[l])
            if m == 0:
                continue
            mine = np.unpackbits(sets[l].view(np.uint8), axis=1, count=lo, bitorder="little").view(bool)
            if mine.shape[0] == m:  # g holds every node of this level
                rows.append(mine.ravel())
                continue
            block = np.zeros((m, lo), dtype=bool)  # node u of level l: the nodes below its level
            block[ids[off[l] : off[l + 1]] - lo] = mine
            rows.append(block.ravel())
        stream = np.concatenate(rows) if rows else np.zeros(0, dtype=bool)
        return np.packbits(stream, bitorder="little")

    # ------------------------------------------------------------------ selections (server side)

    def node_id(self, level: int, token: int) -> int:
        if not 0 <= level <= self.L or not 0 <= token < self.n:
            return -1
        return int(self.node_index[level, token])

    def _edge_lookup(self) -> np.ndarray:
        if not hasattr(self, "_eid"):
            eid = np.full((self.L, self.n, self.n), -1, dtype=np.int64)
            e = self.columns("edges")
            eid[e["layer"], e["a"], e["b"]] = np.arange(len(e))
            self._eid = eid
        return self._eid

    def _glyph_lookup(self) -> dict[int, np.ndarray]:
        if not hasattr(self, "_gid"):
            N = self.n_nodes
            out = {}
            gl = self.columns("glyphs")
            for c in (PRE, FINE):
                m = np.full(N * self.H, -1, dtype=np.int64)
                sel = gl["model"] == c
                m[gl["node"][sel] * self.H + gl["head"][sel]] = np.flatnonzero(sel)
                out[c] = m
            self._gid = out
        return self._gid

    def _empty(self, message: str = "") -> Highlight:
        return Highlight(
            nodes=np.zeros(self.n_nodes, np.uint8),
            edges=np.zeros(len(self.columns("edges")), np.uint8),
            glyphs=np.zeros(len(self.columns("glyphs")), bool),
            origin=np.zeros(self.n_nodes, bool),
            message=message,
        )

    def _apply_edges(self, hl: Highlight, code: int, edges) -> None:
        eid = self._edge_lookup()
        gid = self._glyph_lookup()[code]
        H = self.H
        for e in edges:
            i = eid[e.layer, e.a, e.b]
            if i < 0:
                continue
            hl.edges[i] |= code
            u = self.node_index[e.layer + 1, e.a]
            for h in e.heads:
                j = gid[u * H + h]
                if j >= 0:
                    hl.glyphs[j] = True

    def _mark(self, hl: Highlight, code: int, mask: np.ndarray, head: tuple[int, int] | None) -> None:
        """Mark, in bulk, the edges and head glyphs of model ``code``'s traversal whose nodes are ``mask``
        (bool [L+1, n]): an edge of that model is a step of the traversal exactly when both its ends are
        in the mask (as in ``Trace.edges`` / ``PathResult.edges``, and as flow.js marks a hover); with
        ``head = (layer, h)`` that layer's steps are only those carried by head h. A glyph (u, h) lights
        when a marked edge of u carries head h in that model."""
        e = self._edge_arrays()
        if e["u"].size == 0:
            return
        N = e["N"]
        node_in = np.zeros(N + 1, dtype=bool)  # last slot: nodes absent from the view
        ids = self.node_index.ravel()[np.flatnonzero(mask)]
        node_in[ids[ids >= 0]] = True
        lit = e[f"in{code}"] & node_in[e["u"]] & node_in[e["v"]]
        words = list(e[f"w{code}"])  # uint64 [E] per 32-head word
        if head is not None:
            at = e["layer"] == head[0]
            carried = ((words[head[1] // 32] >> np.uint64(head[1] % 32)) & np.uint64(1)).astype(bool)
            lit &= ~at | carried
            for w in range(self.words):
                words[w] = np.where(at, np.uint64(1 << (head[1] % 32)) if w == head[1] // 32 else np.uint64(0), words[w])
        hl.edges[lit] |= np.uint8(code)
        gl = self._glyph_arrays()
        rows = gl[f"rows{code}"]
        lit_ids = np.flatnonzero(lit)
        if rows.size == 0 or lit_ids.size == 0:
            return
        # edges are ordered by (layer, a), so the marked edges of one upper node u are consecutive: OR
        # their head words per u with one reduceat
        u = e["u"][lit_ids]
        starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1])))
        gnode, gword, gshift = gl[f"node{code}"], gl[f"word{code}"], gl[f"shift{code}"]
        for w in range(self.words):
            acc = np.zeros(N, dtype=np.uint64)
            acc[u[starts]] = np.bitwise_or.reduceat(words[w][lit_ids], starts)
            on = ((acc[gnode] >> gshift) & np.uint64(1)).astype(bool)
            if self.words > 1:
                on &= gword == w
            hl.glyphs[rows[on]] = True

    def _edge_arrays(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_earr"):
            e = self.columns("edges")
            cols = ["u", "v", "layer", "member"] + [f"h{c}_{w}" for c in (PRE, FINE) for w in range(self.words)]
            earr = {c: e[c] for c in cols}
            earr["u"] = earr["u"].astype(np.int64)
            earr["v"] = earr["v"].astype(np.int64)
            earr["N"] = self.n_nodes
            for c in (PRE, FINE):
                earr[f"in{c}"] = (earr["member"] & c).astype(bool)
                earr[f"w{c}"] = [earr[f"h{c}_{w}"].astype(np.uint64) for w in range(self.words)]
            self._earr = earr
        return self._earr

    def _glyph_arrays(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_garr"):
            g = self.columns("glyphs")
            garr = {c: g[c].astype(np.int64) for c in ("node", "head", "model")}
            for c in (PRE, FINE):  # per model: its glyph rows, their nodes, head words and bit shifts
                rows = np.flatnonzero(garr["model"] == c)
                h = garr["head"][rows]
                garr[f"rows{c}"], garr[f"node{c}"] = rows, garr["node"][rows]
                garr[f"word{c}"], garr[f"shift{c}"] = h // 32, (h % 32).astype(np.uint64)
            self._garr = garr
        return self._garr

    def _apply_mask(self, hl: Highlight, mask: np.ndarray, code: int | None = None) -> None:
        flat = np.flatnonzero(mask)
        ids = self.node_index.ravel()[flat]
        ok = ids >= 0
        vals = mask.ravel()[flat] if code is None else np.full(flat.size, code)
        hl.nodes[ids[ok]] |= np.asarray(vals, dtype=np.uint8)[ok]

    def highlight(
        self,
        selection: Sequence[Sequence[int]],
        head: Sequence[int] | None = None,
        head_model: str | None = None,
    ) -> Highlight:
        """The frozen highlight of a selection of ``(level, token)`` nodes, asked of graph/compare.

        - a head (``head = (layer, h)``, a click on a head glyph): what that head attends to above τ at
          its layer, in every drawn model: its edges through ``layer`` and their end tokens, each coded by
          the model(s) whose head h carries it (pre-trained only, fine-tuned only, both: how fine-tuning
          changed the head), head h's glyphs on level ``layer + 1`` lit and every other glyph dimmed; the
          selected tokens are the origin. Not a trace: nothing beyond the head's own layer lights up
          (:meth:`head_highlight`). ``head_model`` is accepted for the callers that pass it; both models
          are shown either way, since the comparison is the point;
        - tokens at one level: ``trace(level, tokens)`` (several tokens: the brushed intersection,
          §4.4.1);
        - tokens at two levels: ``paths`` between them (§4.4.2, Figs. 7-8);
        - more levels: the paths between the lowest and the highest, with a message saying so.
        Messages name levels 1-based, as the UI does. Selected tokens not in the drawn graph(s) are ignored (e.g. after τ changed); an empty result
        means no highlight.
        """
        sel = []
        for item in selection or []:
            lv, tok = int(item[0]), int(item[1])
            if self.node_id(lv, tok) >= 0:
                sel.append((lv, tok))
        if head is not None:
            return self.head_highlight(int(head[0]), int(head[1]), sel)
        if not sel:
            return self._empty()
        by_level: dict[int, list[int]] = {}
        for lv, tok in sel:
            by_level.setdefault(lv, []).append(tok)
        hl = self._empty()
        for lv, toks in by_level.items():
            for t in toks:
                hl.origin[self.node_index[lv, t]] = True
        levels = sorted(by_level)
        message = ""
        if len(levels) > 2:
            message = (f"tokens selected at {len(levels)} levels: showing the paths between levels "
                       f"{levels[0] + 1} and {levels[-1] + 1}")
            for lv in levels[1:-1]:
                for t in by_level[lv]:
                    hl.origin[self.node_index[lv, t]] = False
            levels = [levels[0], levels[-1]]
        head_t = None if head is None else (int(head[0]), int(head[1]))
        model_code = {None: None, "pretrained": PRE, "finetuned": FINE, "both": None}.get(head_model, None)
        if len(levels) == 1:
            lv = levels[0]
            toks = sorted(by_level[lv])
            if self.comparison is not None:
                res = self.comparison.trace_mask(lv, toks, head=head_t, model=model_code if head_t else None)
                self._apply_mask(hl, res)
                for c in (PRE, FINE):
                    self._mark(hl, c, (res & c).astype(bool), head_t)
            else:
                (c, g), = self.graphs.items()
                tr = g.trace(lv, toks, head=head_t)
                self._apply_mask(hl, tr.mask, c)
                self._mark(hl, c, tr.mask, head_t)
            if len(toks) > 1:
                message = message or f"brushed intersection of {len(toks)} tokens at level {lv + 1}"
        else:
            la, lb = levels
            ta, tb = sorted(by_level[la]), sorted(by_level[lb])
            if self.comparison is not None:
                res = self.comparison.paths_mask(la, ta, lb, tb)
                self._apply_mask(hl, res)
                for c in (PRE, FINE):
                    self._mark(hl, c, (res & c).astype(bool), None)
            else:
                (c, g), = self.graphs.items()
                pm = g.paths_mask(la, ta, lb, tb)
                self._apply_mask(hl, pm, c)
                self._mark(hl, c, pm, None)
            if not hl.nodes.any():
                message = message or f"no path joins the tokens selected at levels {la + 1} and {lb + 1}"
                # keep the selected tokens visible
                hl.nodes[hl.origin] = np.maximum(hl.nodes[hl.origin], 1)
            else:
                message = message or f"paths between levels {la + 1} and {lb + 1}"
        # selected tokens stay highlighted even if a model lacks them
        miss = hl.origin & (hl.nodes == 0)
        hl.nodes[miss] = self.layout.column("member")[miss]
        hl.message = message
        return hl

    def head_highlight(self, layer: int, h: int, selection: Sequence[Sequence[int]] = ()) -> Highlight:
        """What head ``h`` of layer ``layer`` attends to above τ, in both drawn models (a head click).

        Edge codes: ``PRE`` where only the pre-trained model's head h carries the edge, ``FINE`` only the
        fine-tuned one's, ``BOTH`` both; nodes: the end tokens of those edges (levels ``layer + 1`` and
        ``layer``), coded by the union of their edges' codes; glyphs: head h's glyphs of level
        ``layer + 1`` (everything else is dimmed); origin: the selected ``(level, token)`` nodes. The
        message counts the edges per code (layers and heads named 1-based, as the UI does)."""
        if not 0 <= layer < self.L or not 0 <= h < self.H:
            raise ValueError(f"head ({layer}, {h}) is out of range: layers 0 .. {self.L - 1}, heads 0 .. {self.H - 1}")
        hl = self._empty()
        e = self._edge_arrays()
        at = e["layer"] == layer
        word, bit = h // 32, np.uint64(1 << (h % 32))
        for c in self.graphs:
            carried = at & ((e[f"w{c}"][word] & bit) != 0)
            hl.edges[carried] |= np.uint8(c)
        lit = np.flatnonzero(hl.edges)
        np.bitwise_or.at(hl.nodes, e["u"][lit], hl.edges[lit])
        np.bitwise_or.at(hl.nodes, e["v"][lit], hl.edges[lit])
        gl = self._glyph_arrays()
        glevel = self.layout.column("level")[gl["node"]] if gl["node"].size else gl["node"]
        hl.glyphs[:] = (gl["head"] == h) & (glevel == layer + 1)
        for lv, tok in selection:
            hl.origin[self.node_index[lv, tok]] = True
        miss = hl.origin & (hl.nodes == 0)
        hl.nodes[miss] = self.layout.column("member")[miss]
        codes = hl.edges[lit]
        name = f"head {h + 1} of layer {layer + 1}"
        if lit.size == 0:
            hl.message = f"{name} attends to nothing above τ = {self.tau:g} here"
        elif self.comparison is not None:
            hl.message = (f"{name}: {int((codes == BOTH).sum())} edges in both models, "
                          f"{int((codes == PRE).sum())} only pre-trained, {int((codes == FINE).sum())} only fine-tuned")
        else:
            hl.message = f"{name}: {lit.size} edges above τ = {self.tau:g}"
        return hl

    # ------------------------------------------------------------------ what the browser receives

    def sources(self, ring_labels: bool = True) -> dict[str, dict[str, Any]]:
        """Column dicts for the browser (compact dtypes, rounded float32 coordinates): ``nodes``,
        ``glyphs``, ``edges``, ``sparks``, ``runs`` and ``bits`` (module docstring).

        ring_labels: include the per-ring placement at the design size (``label`` = the placed text,
        ``lstat``, ``olx``, ``oly``) that the Bokeh figure draws; a client that places labels itself
        (from ``text``, ``prio``, ``nchar``, ``angle``, ``half``, ``radius``) passes False and skips that
        work."""
        nodes, glyphs, edges, sparks = (self.columns(f) for f in ("nodes", "glyphs", "edges", "sparks"))
        N = len(nodes)
        states = compose_states(self, None)
        node_cols = {
            "level": _uint(nodes["level"], 255),
            "pos": _uint(nodes["pos"], self.n),
            "token": nodes["token"].tolist(),
            "text": nodes["label"].tolist(),
            "nchar": _uint(nodes["nchar"], 65535),
            "prio": _f32(nodes["prio"]),
            "angle": nodes["angle"].astype(np.float32), "half": nodes["half"].astype(np.float32),
            "radius": _f32(nodes["radius"]), "cs": _f32(nodes["cs"]),
            "mem": nodes["member"].astype(np.uint8),
            "lx": _f32(nodes["lx"]), "ly": _f32(nodes["ly"]), "ta": _f32(nodes["text_angle"]),
            "hx": _f32(nodes["hx"]), "hy": _f32(nodes["hy"]), "hr": _f32(nodes["hr"]),
            "bx": _f32(nodes["bx"]), "by": _f32(nodes["by"]), "bw": _f32(nodes["bw"]), "bh": _f32(nodes["bh"]),
            "sx0": _f32(nodes["sx0"]), "sy0": _f32(nodes["sy0"]), "sx1": _f32(nodes["sx1"]), "sy1": _f32(nodes["sy1"]),
            "st": states["nodes"], "fz": states["nodes"].copy(),
        }
        if ring_labels:
            node_cols.update({"label": nodes["ring_label"].tolist(), "lstat": nodes["lstat"].astype(np.uint8),
                              "olx": _f32(nodes["olx"]), "oly": _f32(nodes["oly"])})  # the overlay's place
        # influence I_k (eq. 4) of every node in each drawn model, for the hover details (none at the root)
        lv = nodes["level"]
        ps = nodes["pos"]
        below_root = lv < self.L
        for c in (PRE, FINE):
            if c in self.influence:
                infl = np.full(N, -1.0)
                infl[below_root] = self.influence[c][lv[below_root], ps[below_root]]
                node_cols[f"i{c}"] = np.round(infl, 2).astype(np.float32)
        glyph_cols = {
            "node": _uint(glyphs["node"], N), "head": _uint(glyphs["head"], 255),
            "model": glyphs["model"].astype(np.uint8),
            "part": glyphs["part"].astype(np.uint8),  # 0 whole glyph, 1/2 left/right half
            "x": _q16(glyphs["x"]), "y": _q16(glyphs["y"]),
            "gc": glyphs["gc"].astype(np.uint8),
            "cp": _uint(glyphs["cp"], self.n), "cf": _uint(glyphs["cf"], self.n),
            "st": states["glyphs"], "fz": states["glyphs"].copy(),
        }
        edge_cols = {k: _q16(edges[k]) for k in ("x0", "y0", "x1", "y1", "cx0", "cy0", "cx1", "cy1")}
        edge_cols.update({
            "u": _uint(edges["u"], N), "v": _uint(edges["v"], N),
            "mem": edges["member"].astype(np.uint8),
            "ea": edges["ea"].astype(np.uint8),
            "w": np.round(edges["w"].astype(np.float64), 3).astype(np.float32),
            "rest": edges["rest"].astype(np.uint8),
            "ha": states["edge_alpha"],
            "st": states["edges"], "fz": states["edges"].copy(),
        })
        mask_dtype = np.uint8 if self.H <= 8 else np.uint16 if self.H <= 16 else np.uint32
        for c in self.graphs:
            for w in range(self.words):
                edge_cols[f"h{c}_{w}"] = edges[f"h{c}_{w}"].astype(mask_dtype)
        spark_cols = {k: _q16(sparks[k]) for k in ("x0", "y0", "x1", "y1")}
        spark_cols.update({"node": _uint(sparks["node"], N), "model": sparks["model"].astype(np.uint8),
                           "st": states["sparks"]})
        bits = {"H": [self.H], "W": [self.words], "models": [self.models], "L": [self.L], "n": [self.n],
                "sizes": [[len(nodes), len(edges), len(glyphs)]],  # lets the browser skip half-updated data
                "sweep": [np.asarray(self.sweep, dtype=np.float32)],
                "hl_ink": [[HL_INK, HL_ALPHA_MIN, HL_ALPHA_MAX]]}
        for c in (PRE, FINE):
            bits[f"b{c}"] = [self.bits.get(c, np.zeros(0, np.uint8))]
        runs = self.columns("runs")
        run_cols = {"level": _uint(runs["level"], 255), "angle0": runs["angle0"].astype(np.float32),
                    "angle1": runs["angle1"].astype(np.float32), "radius": _f32(runs["radius"]),
                    "count": _uint(runs["count"], self.n), "first_token": _uint(runs["first_token"], self.n),
                    "last_token": _uint(runs["last_token"], self.n)}
        return {"nodes": node_cols, "glyphs": glyph_cols, "edges": edge_cols, "sparks": spark_cols,
                "runs": run_cols, "bits": bits}
