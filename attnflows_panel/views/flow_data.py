"""What the radial Attention Flow view (§4.3, Fig. 1(c), Figs. 4-8) draws, without Bokeh.

:class:`FlowData` holds everything the view draws for one input, τ and mode, assembled from what
:mod:`attnflows_panel.graph` / :mod:`attnflows_panel.compare` answer and laid out by
:mod:`attnflows_panel.layout`: nodes (the Token Rings), runs of folded tokens, head glyphs, sparklines,
edges, and the per-node hover highlight sets. It also turns a frozen selection (click, brush, two rings,
a head glyph) into highlight codes by asking the graph (``trace``/``paths``). It imports no Bokeh.

Contract with the radial component (what it reads; frames are pandas, ``columns(frame)[name]`` gives
the same columns as read-only numpy arrays without building a frame; ``sources()`` packs them compactly)
---------------------------------------------------------------------------------------------------------
Layout units: pixels at the design size; the drawing spans ``[-extent, extent]²`` (``layout.extent``),
y up, angles mathematical (radians, counter-clockwise from +x). Levels 0-based (level L = the root).

- ``nodes`` (row = node id, sorted by level then position): level, pos, token (the token shown alone,
  ``##ing`` → ``-ing``), seg, member / base (model codes), angle, half (the token owns the arc
  ``angle ± half`` of its ring), radius, x, y, ux, uy, vx, vy, text_angle (upright, tangent), the cell
  (cs = the ring's cell scale, gu, gv, bx, by, bw, bh, sx0, sy0, sx1, sy1, sw, cw, r_in, r_out, hx, hy,
  hr, lx, ly = the cell's label row), and for labels:
    * ``label``: the display text. Word pieces are joined to their word on the word's first piece when
      the pieces sit next to each other on the ring (``2030``, not ``203 -0``); ``""`` on a continuation
      piece whose word label covers it (never place a label for it); a piece alone reads ``-0``.
    * ``nchar`` (its length) and ``lw`` (its width at ``style.font`` with ``style.char_width``: measure
      the real text in the browser).
    * ``prio``: higher = more important. ``10 · class + min(I_l, 5) + degree/(max degree + 1)`` with
      class 3 content word, 2 stop word, 1 lone word piece, 0 punctuation / special token (so content
      words come before punctuation, special tokens and word pieces), I_l the token's influence (eq. 4,
      the larger of the drawn models'); the root is highest. The component adds its own boost for the
      traced path.
  Placement at a given canvas size and zoom (greedy by ``prio``, fixed screen font, tiers outward,
  collision test on annular sectors) is :func:`attnflows_panel.ring_labels.select_labels`; the component
  runs the same algorithm in the browser, server-side export and tests use the Python one.
  Computed only when read, for the Bokeh figure: ring_label, lstat, otier, olx, oly (the per-ring
  placement at the design size).
- ``runs`` (``layout.runs``): tokens a level does not hold, folded between the reached tokens of its
  ring in sentence order (never across the two sentences): level, angle, angle0, angle1 (the run's arc,
  ``angle0 < angle1``, half a token slot: ``RadialStyle.run_slot``), count, first_token, last_token
  (positions; the run holds every position between them), radius. The component draws a small arc with
  the count and opens it on zoom or hover.
- ``edges`` (sorted by layer, a, b): layer, a (upper token), b (lower token), u, v (node ids), member,
  base, nh, h1_*/h2_* (carrying heads per model as uint32 words), ea (rest opacity), the Bézier
  (x0, y0, x1, y1, cx0, cy0, cx1, cy1), ``w`` (the attention weight of the edge: the largest
  ``attn[layer, h, a, b]`` over the heads that carry it, in either drawn model) and ``rest`` (uint8,
  1 = drawn at rest: each lower node's strongest incoming edge, at most ``REST_PER_LAYER`` per layer,
  strongest first; every other edge only on hover or freeze, so a 512-token pair draws no hairball).
- ``glyphs`` (node, head, model, x, y, w, part, angle, gc, cp, cf) and ``sparks`` (node, model, x0, y0,
  x1, y1), scaled with their ring's cells.
- ``bits``: per model, every node's ancestors as one bit stream (below).

What the browser receives (P6): coordinates as float32 (tokens) or int16 tenths of a pixel (edges,
glyphs, sparkline bars), small integer columns, the edges with the heads that carry them as bit masks,
and per model one bit stream of every node's ancestors (the graph's ``all_traces()``), never attention
matrices. Hover runs in the browser (P4): the trace of node ``u`` is its ancestors' bits, plus the nodes
``v`` above whose ancestor bits hold ``u`` (its descendants). Hovering a head glyph ``(u, h)`` at level
``k`` restricts layer ``k-1`` to head ``h`` (Fig. 6(b)); its trace is ``u``'s descendants plus, for
every child ``b`` that head ``h`` connects ``u`` to, ``b`` and ``b``'s ancestors - exactly
:meth:`AttentionGraph.trace` with ``head=(k-1, h)`` (the tests check both against the graph). A head
*click* (a frozen head, :meth:`FlowData.highlight` with ``head``) shows instead what that head does:
its edges through its layer in both models, coded by model (issue #25, 4).

Display states (one ``st`` byte per drawn item, written by Python for a frozen selection and by the
browser while hovering; colours and alphas are looked up from it). :class:`Highlight` carries, per node
and per edge, the model code of the highlight (0 = not part of it: drawn dimmed, state 4), per glyph
whether it is lit, and the origin (the selected nodes); :func:`compose_states` turns it into states:

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
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from attnflows_panel.compare import BOTH, FINE, PRE, GraphComparison
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.layout import (
    RING_LABEL_COLUMNS,
    RadialLayout,
    RadialStyle,
    edge_curves,
    glyph_cells,
    radial_layout,
    sparkline_segments,
)
from attnflows_panel.ring_labels import CONTENT, token_classes
from attnflows_panel.views.flow_select import Highlight, Selections, compose_states
from attnflows_panel.views.flow_style import (
    DIM_COLOR,
    EDGE_ALPHA,
    EDGE_ALPHA_MAX,
    EDGE_ALPHA_MIN,
    EDGE_COLORS,
    EDGE_INK,
    EDGE_WIDTH,
    GLYPH_ALPHA,
    GLYPH_PALETTE,
    HL_ALPHA_MAX,
    HL_ALPHA_MIN,
    HL_INK,
    LEVEL_BAND_FILL,
    LEVEL_BAND_LINE,
    MODE_CODE,
    MODEL_COLOR,
    MODEL_NAME,
    MODES,
    NEUTRAL_EDGE,
    NODE_HALO_ALPHA,
    NODE_TEXT,
    QUANT,
    RAMP_STEPS,
    REST_PER_LAYER,
    SINGLE_SPARK_COLOR,
    SPARK_ALPHA,
    STATE_COLORS,
    TEXT_COLOR,
    as_uint,
    count_palette,
    density_alpha,
    f32,
    pack_heads,
    q16,
    rest_edges,
)

__all__ = [  # the view style is re-exported from views.flow_style for the modules that import it from here
    "FlowData",
    "Highlight",
    "compose_states",
    "MODES",
    "MODE_CODE",
    "MODEL_NAME",
    "MODEL_COLOR",
    "f32",
    "q16",
    "as_uint",
    "DIM_COLOR",
    "EDGE_ALPHA",
    "EDGE_ALPHA_MAX",
    "EDGE_ALPHA_MIN",
    "EDGE_COLORS",
    "EDGE_INK",
    "EDGE_WIDTH",
    "GLYPH_ALPHA",
    "GLYPH_PALETTE",
    "HL_ALPHA_MAX",
    "HL_ALPHA_MIN",
    "HL_INK",
    "LEVEL_BAND_FILL",
    "LEVEL_BAND_LINE",
    "NEUTRAL_EDGE",
    "NODE_HALO_ALPHA",
    "NODE_TEXT",
    "QUANT",
    "RAMP_STEPS",
    "REST_PER_LAYER",
    "SINGLE_SPARK_COLOR",
    "SPARK_ALPHA",
    "STATE_COLORS",
    "TEXT_COLOR",
    "count_palette",
    "density_alpha",
    "rest_edges",
    "pack_heads",
]

# the earlier private names of the encoders, for views.flow until it imports the public ones
_MODEL_COLOR, _f32, _q16, _uint = MODEL_COLOR, f32, q16, as_uint


class _Columns:
    """Read-only numpy columns of one of :class:`FlowData`'s frames (``cols["x"]`` equals
    ``frame["x"].to_numpy()``). The view is built from these arrays; the pandas frames are made from them
    only when someone asks for one (a DataFrame costs more than the rest of a small view, P1)."""

    __slots__ = ("_get", "_n", "_names")

    def __init__(self, get, n: int, names):
        self._get, self._n, self._names = get, n, names

    def __getitem__(self, name: str) -> np.ndarray:
        return self._get(name)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: str) -> bool:
        return name in self._names()

    def names(self) -> list[str]:
        """The frame's column names (without building it)."""
        return list(self._names())


def _frozen_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        v.flags.writeable = False
        out[k] = v
    return out


def _union_keys(parts: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The union of ascending unique int arrays, ascending, and where each part's items sit in it. One
    stable sort of the parts one after the other (a merge of sorted runs), no search."""
    if len(parts) == 1:
        return parts[0], [np.arange(parts[0].size)]
    cat = np.concatenate(parts)
    if cat.size == 0:
        return cat, [np.zeros(0, dtype=np.intp) for _ in parts]
    order = np.argsort(cat, kind="stable")
    srt = cat[order]
    new = np.empty(srt.size, dtype=bool)
    new[0] = True
    np.not_equal(srt[1:], srt[:-1], out=new[1:])
    at = np.empty(srt.size, dtype=np.intp)
    at[order] = np.cumsum(new) - 1
    cuts = np.cumsum([p.size for p in parts])[:-1]
    return srt[new], np.split(at, cuts)


#: the edges' columns built on first use (:meth:`FlowData._edge_geometry`), in their place among the columns
_EDGE_GEOMETRY = ("ea", "x0", "y0", "x1", "y1", "cx0", "cy0", "cx1", "cy1")

_BIT = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))  # 2^i as uint32, i = 0..31


class FlowData(Selections):
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

    Attributes (pandas DataFrames built on first access, row index = id used by the browser; the same
    columns as numpy arrays through :meth:`columns`; the module docstring is the contract)
    ------------------------------------------------------------------------------------------------------
    nodes: the layout's nodes (with ``label``, ``prio``, ``nchar``, ``half``, ``cs``) plus ``member`` (model
        code of the graphs holding the node), ``base`` (colour code in the normal state) and the
        glyph-block and sparkline baseline geometry.
    runs: the runs of folded tokens (level, angle0, angle1, count, first_token, last_token, ...).
    glyphs: one row per lit head glyph (a split glyph is two rows, §4.3.3): node, head, model, x, y, w,
        angle, gc (palette index), cp / cf (tokens attended in each model).
    edges: one row per edge (layer, a, b) of the drawn graph(s): u, v (node ids), layer, member code,
        the heads carrying it per model as uint32 words (``h1_w`` for pre-trained, ``h2_w`` fine-tuned),
        its Bézier geometry, ``w`` (its attention weight) and ``rest`` (1 = drawn at rest).
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
        self._arrays["edges"] = self._build_edges()
        # The head glyphs, the sparklines, the edges' curves and opacity and the hover bits are built on
        # first use (the same arrays): the radial component derives them in the browser from the nodes and
        # edges (views/radial.py), so a τ change does not build them; selections, export and tests do.

    @cached_property
    def bits(self) -> dict[int, np.ndarray]:
        """``{model code: uint8 array}``: each node's ancestors in that model as one bit stream (the class
        docstring); built on first use."""
        return {c: self._ancestor_bits(g) for c, g in self.graphs.items()}

    @cached_property
    def sweep(self) -> np.ndarray:
        """float ``[L]``: the mean angle (fraction of a turn) that an edge of each layer sweeps, for the
        edges' opacity by density (:func:`~attnflows_panel.views.flow_style.density_alpha`)."""
        e = self._arrays["edges"]
        layer = e["layer"]
        ang = self.layout.column("angle")
        t0, t1 = ang[e["u"]], ang[e["v"]]
        sweep = (np.abs(np.mod(t1 - t0 + np.pi, 2 * np.pi) - np.pi) + 0.05) / (2 * np.pi)
        count = np.bincount(layer, minlength=self.L)
        return np.bincount(layer, weights=sweep, minlength=self.L) / np.maximum(count, 1)

    @property
    def n_glyphs(self) -> int:
        """The number of glyph rows (``len(columns("glyphs"))``) without building their geometry."""
        if "glyphs" in self._arrays:
            return len(self._arrays["glyphs"]["node"])
        _, _, st, lit = self._glyph_cells
        return int(lit.size + np.count_nonzero(st[lit] == BOTH))

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
            cols = self.columns(name)
            df = self._frames[name] = pd.DataFrame({k: cols[k] for k in cols.names()})
        return df

    def _frame_arrays(self, name: str) -> dict[str, np.ndarray]:
        arrays = self._arrays.get(name)
        if arrays is None:
            if name not in ("glyphs", "sparks"):
                raise KeyError(name)
            arrays = self._arrays[name] = self._build_glyphs() if name == "glyphs" else self._build_sparks()
        return arrays

    def _edge_names(self) -> list[str]:
        names = list(self._arrays["edges"])
        if "ea" in names:
            return names
        i = names.index("rest")
        return names[:i] + list(_EDGE_GEOMETRY) + names[i:]

    def _edge_column(self, name: str) -> np.ndarray:
        arrays = self._arrays["edges"]
        if name in _EDGE_GEOMETRY and name not in arrays:
            extra = self._edge_geometry()
            arrays = self._arrays["edges"] = {k: extra[k] if k in extra else arrays[k] for k in self._edge_names()}
        return arrays[name]

    def columns(self, frame: str) -> _Columns:
        """Numpy columns of ``nodes``, ``glyphs``, ``edges``, ``sparks`` or ``runs``:
        ``columns("edges")["u"]`` is ``edges["u"].to_numpy()`` (read-only), without building the frame;
        ``"w" in columns("edges")`` and ``columns("edges").names()`` ask for columns without building it
        either (reading ``data.nodes.columns`` builds the nodes frame and the per-ring placement)."""
        if frame == "nodes":
            cols = self.layout.cols
            return _Columns(self.layout.column, len(cols["node"]), lambda: [*cols, *(c for c in RING_LABEL_COLUMNS
                                                                                    if c not in cols)])
        if frame == "runs":
            rc = self.layout.run_cols
            return _Columns(rc.__getitem__, len(rc["level"]), rc.keys)
        if frame == "edges":
            return _Columns(self._edge_column, len(self._arrays["edges"]["layer"]), self._edge_names)
        arrays = self._frame_arrays(frame)
        return _Columns(arrays.__getitem__, len(next(iter(arrays.values()))), arrays.keys)

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
            keys = g.edge_keys  # the edges (k + 1, a) -> (k, b) as (k * n + a) * n + b, counted per end
            ka = keys // n
            into = np.bincount(ka - ka % n + keys % n, minlength=L * n).reshape(L, n)  # per (k, b)
            out_of = np.bincount(ka, minlength=L * n).reshape(L, n)  # per (k, a)
            deg[:L] = np.maximum(deg[:L], into)  # from the level above
            deg[1:] = np.maximum(deg[1:], out_of)  # to the level below
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

    @cached_property
    def _glyph_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(cp, cf, st, lit)``: per (node, head) cell, flat, each model's count of tokens attended, the
        glyph state (model code of the models whose head attends to some token of the level below) and
        the lit cells, ascending."""
        H = self.H
        N = self.n_nodes
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
        return counts[PRE].ravel(), counts[FINE].ravel(), st, np.flatnonzero(st)

    def _build_glyphs(self) -> dict[str, np.ndarray]:
        """Lit head glyphs (§4.3.2): single-model mode colours them by the number of tokens attended
        (``g.glyphs(k)``), combined mode by ``c.glyph_states(k)``: turquoise, purple, or a split glyph."""
        H = self.H
        cp, cf, st, lit = self._glyph_cells  # (node, head) cells lit, ascending: rows ordered by node, head
        g = self.style.glyph
        cols = ["node", "head", "model", "x", "y", "w", "part", "angle", "gc", "cp", "cf"]
        if lit.size == 0:
            return _frozen_arrays({c: np.zeros(0) for c in cols})
        # a split glyph (both models, §4.3.3) is two half-width rows, pre-trained (left) then fine-tuned
        split_cell = st[lit] == BOTH
        j = np.repeat(np.arange(lit.size), np.where(split_cell, 2, 1))  # each row's lit cell
        idx = lit[j]
        split = split_cell[j]
        first = np.concatenate(([True], idx[1:] != idx[:-1]))
        model = np.where(split, np.where(first, PRE, FINE), st[idx]).astype(np.int64)
        node, head = np.divmod(lit, H)
        col = self.layout.column
        cs = col("cs")[node][j]
        off = np.where(split, np.where(first, -g / 4, g / 4), 0.0) * cs
        gx, gy = glyph_cells(self.layout, H, node, head)  # the lit cells' centres only
        if self.comparison is not None:
            gc = np.where(model == PRE, 12, 13).astype(np.int64)
        else:
            cnt = np.where(model == PRE, cp[idx], cf[idx])
            gc = np.where(model == PRE, 0, RAMP_STEPS) + np.minimum(cnt, RAMP_STEPS) - 1
        return _frozen_arrays({
            "node": node[j], "head": head[j], "model": model,
            "x": gx[j] + off * col("ux")[node][j], "y": gy[j] + off * col("uy")[node][j],
            "w": np.where(split, g / 2, g) * cs, "part": np.where(split, model, 0).astype(np.int64),
            "angle": col("text_angle")[node][j], "gc": gc, "cp": cp[idx], "cf": cf[idx],
        })

    def _build_edges(self) -> dict[str, np.ndarray]:
        """The edges of the drawn graph(s), one row per (layer, a, b), with each model's carrying heads.

        Built in numpy (one DataFrame at the end: a DataFrame per layer cost more than the rest of the
        view's data together)."""
        n, H = self.n, self.H
        W = max(1, math.ceil(H / 32))
        cols = ["layer", "a", "b", "nh"] + [f"h{c}_{w}" for c in (PRE, FINE) for w in range(W)] + ["member"]
        graphs = list(self.graphs.items())
        # per model: where its edges sit among the drawn edges and their head counts, for the sparklines
        self._spark_src = {c: (np.zeros(0, np.intp), np.zeros(0, np.int64)) for c, _ in graphs}
        # (k * n + a) * n + b of every drawn edge, ascending, unique; each model's edges with their heads
        tables = {c: g.edge_table for c, g in graphs}
        keys, where = _union_keys([tables[c][0] for c, _ in graphs])  # where[i]: model i's edges among keys
        if keys.size == 0:
            edges = {c: np.zeros(0, dtype=np.int64) for c in cols}
            edges["w"] = np.zeros(0, dtype=np.float32)
        else:
            k, rem = np.divmod(keys, n * n)
            a, b = np.divmod(rem, n)
            edges = {"layer": k, "a": a, "b": b}
            member = np.zeros(keys.size, dtype=np.int64)
            nh = np.zeros(keys.size, dtype=np.int64)
            weight = np.zeros(keys.size, dtype=np.float32)
            words = {c: np.zeros((keys.size, W), dtype=np.uint32) for c in (PRE, FINE)}
            for (c, g), pos in zip(graphs, where, strict=True):
                _, heads, gathered = tables[c]  # g's edges' carrying heads and weights [H, m]
                nh_c = np.zeros(pos.size, dtype=np.int64)  # carrying heads per edge (g.head_counts there)
                for w in range(W):  # the carrying heads as bits (word h // 32, bit h % 32): Σ 2^(h % 32)
                    hs = slice(32 * w, min(H, 32 * w + 32))
                    bits = _BIT[: hs.stop - hs.start] @ heads[hs]  # uint32 [m]
                    words[c][pos, w] = bits
                    nh_c += np.bitwise_count(bits)
                member[pos] |= c
                self._spark_src[c] = (pos, nh_c)
                nh[pos] = np.maximum(nh[pos], nh_c)
                # the edge's weight: the strongest carrying head (the larger of the two models'); with every
                # head allowed, the largest weight of an edge is above τ, so it is a carrying head's
                w_c = gathered.max(axis=0) if g.heads.all() else np.where(heads, gathered, 0).max(axis=0)
                weight[pos] = np.maximum(weight[pos], w_c)
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
        edges["rest"] = rest_edges(layer, v, edges["w"], REST_PER_LAYER)  # after ea and the curves (_edge_names)
        self.words = W
        return _frozen_arrays(edges)

    def _edge_geometry(self) -> dict[str, np.ndarray]:
        """The edges' rest opacity ``ea`` and Bézier curves (``_EDGE_GEOMETRY``), built on first use."""
        e = self._arrays["edges"]
        layer = e["layer"]
        # normal-state opacity per layer: dense layers fade so that they read as texture, not ink
        # (see density_alpha; the mean sweep per layer also scales highlighted edges in the browser) ...
        count = np.bincount(layer, minlength=self.L)
        # ... and within a layer by the number of heads carrying the edge (the larger of the two models'):
        # one head draws at 45% of the layer's opacity, four or more heads at 100%
        ea = density_alpha(count, self.sweep, EDGE_INK, EDGE_ALPHA_MIN, EDGE_ALPHA_MAX)[layer].astype(np.float64)
        heads_w = 0.45 + 0.55 * (np.minimum(e["nh"], 4) - 1).clip(0) / 3.0
        out = {"ea": np.clip(np.floor(ea * heads_w * 1.6 + 0.5), 3, 255).astype(np.uint8)}
        out.update(edge_curves(self.layout, e["u"], e["v"]))
        return _frozen_arrays(out)

    def _build_sparks(self) -> dict[str, np.ndarray]:
        """Sparklines (§4.3.2, the columns of the attention matrices): under token w of level k, a bar at
        the relative position ``(a - w)/(n-1)`` of each token a of level k+1 that attends to w through
        layer k, as high as the number of heads doing so, clamped at 3 - i.e. ``g.sparkline(k, w,
        "attending")``. Read for every level at once from each model's edges and the number of heads
        carrying each (its ``head_counts``, counted by :meth:`_build_edges`: the same numbers; the tests
        check them against ``g.sparkline`` token by token)."""
        models = list(self.graphs.items())
        shift = 0.9 if len(models) == 2 else 0.0
        denom = max(self.n - 1, 1)
        ux_all, uy_all = self.layout.column("ux"), self.layout.column("uy")
        cols: dict[str, list[np.ndarray]] = {c: [] for c in ("node", "x0", "y0", "x1", "y1", "model")}
        for i, (c, _) in enumerate(models):
            pos, nh = self._spark_src[c]  # g's edges (k + 1, a) -> (k, w) among the drawn ones; their heads
            e = self._arrays["edges"]
            k_idx, a_idx, w_idx = e["layer"][pos], e["a"][pos], e["b"][pos]
            if k_idx.size:
                seg = sparkline_segments(self.layout, [self.node_index[k_idx, w_idx]], [(a_idx - w_idx) / denom],
                                         [np.minimum(nh, 3)], per_bar=True)
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
        :meth:`AttentionGraph.ancestor_sets`, numbered by this view's node ids) as one packed bit stream:
        node ``u``'s row holds the nodes of the levels below its own, rows in node order."""
        bounds = self.bounds  # this view's nodes of level lev are ids bounds[lev]:bounds[lev+1]
        ids = self.node_index.ravel()[g.levels_flat]  # this view's node id of each of g's nodes
        sets = g.ancestor_sets(ids, self.n_nodes)  # numbered by this view's ids: no scatter
        off = np.concatenate([[0], np.cumsum([len(x) for x in g.levels])])
        sizes = np.diff(bounds)  # level lev's rows: sizes[lev] nodes of bounds[lev] bits each (the levels below)
        starts = np.concatenate([[0], np.cumsum(sizes * bounds[:-1])])
        stream = np.zeros(int(starts[-1]), dtype=bool)  # written level by level in place (no concatenation)
        for lev in range(self.L + 1):
            m, lo = int(sizes[lev]), int(bounds[lev])
            if m == 0 or lo == 0:
                continue
            mine = np.unpackbits(sets[lev].view(np.uint8), axis=1, count=lo, bitorder="little").view(bool)
            block = stream[starts[lev] : starts[lev + 1]].reshape(m, lo)  # node u of level lev: the nodes below
            if mine.shape[0] == m:  # g holds every node of this level
                block[...] = mine
            else:
                block[ids[off[lev] : off[lev + 1]] - lo] = mine
        return np.packbits(stream, bitorder="little")

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
            "level": as_uint(nodes["level"], 255),
            "pos": as_uint(nodes["pos"], self.n),
            "token": nodes["token"].tolist(),
            "text": nodes["label"].tolist(),
            "nchar": as_uint(nodes["nchar"], 65535),
            "prio": f32(nodes["prio"]),
            "angle": nodes["angle"].astype(np.float32), "half": nodes["half"].astype(np.float32),
            "radius": f32(nodes["radius"]), "cs": f32(nodes["cs"]),
            "mem": nodes["member"].astype(np.uint8),
            "lx": f32(nodes["lx"]), "ly": f32(nodes["ly"]), "ta": f32(nodes["text_angle"]),
            "hx": f32(nodes["hx"]), "hy": f32(nodes["hy"]), "hr": f32(nodes["hr"]),
            "bx": f32(nodes["bx"]), "by": f32(nodes["by"]), "bw": f32(nodes["bw"]), "bh": f32(nodes["bh"]),
            "sx0": f32(nodes["sx0"]), "sy0": f32(nodes["sy0"]), "sx1": f32(nodes["sx1"]), "sy1": f32(nodes["sy1"]),
            "st": states["nodes"], "fz": states["nodes"].copy(),
        }
        if ring_labels:
            node_cols.update({"label": nodes["ring_label"].tolist(), "lstat": nodes["lstat"].astype(np.uint8),
                              "olx": f32(nodes["olx"]), "oly": f32(nodes["oly"])})  # the overlay's place
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
            "node": as_uint(glyphs["node"], N), "head": as_uint(glyphs["head"], 255),
            "model": glyphs["model"].astype(np.uint8),
            "part": glyphs["part"].astype(np.uint8),  # 0 whole glyph, 1/2 left/right half
            "x": q16(glyphs["x"]), "y": q16(glyphs["y"]),
            "gc": glyphs["gc"].astype(np.uint8),
            "cp": as_uint(glyphs["cp"], self.n), "cf": as_uint(glyphs["cf"], self.n),
            "st": states["glyphs"], "fz": states["glyphs"].copy(),
        }
        edge_cols = {k: q16(edges[k]) for k in ("x0", "y0", "x1", "y1", "cx0", "cy0", "cx1", "cy1")}
        edge_cols.update({
            "u": as_uint(edges["u"], N), "v": as_uint(edges["v"], N),
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
        spark_cols = {k: q16(sparks[k]) for k in ("x0", "y0", "x1", "y1")}
        spark_cols.update({"node": as_uint(sparks["node"], N), "model": sparks["model"].astype(np.uint8),
                           "st": states["sparks"]})
        bits = {"H": [self.H], "W": [self.words], "models": [self.models], "L": [self.L], "n": [self.n],
                "sizes": [[len(nodes), len(edges), len(glyphs)]],  # lets the browser skip half-updated data
                "sweep": [np.asarray(self.sweep, dtype=np.float32)],
                "hl_ink": [[HL_INK, HL_ALPHA_MIN, HL_ALPHA_MAX]]}
        for c in (PRE, FINE):
            bits[f"b{c}"] = [self.bits.get(c, np.zeros(0, np.uint8))]
        runs = self.columns("runs")
        run_cols = {"level": as_uint(runs["level"], 255), "angle0": runs["angle0"].astype(np.float32),
                    "angle1": runs["angle1"].astype(np.float32), "radius": f32(runs["radius"]),
                    "count": as_uint(runs["count"], self.n), "first_token": as_uint(runs["first_token"], self.n),
                    "last_token": as_uint(runs["last_token"], self.n)}
        return {"nodes": node_cols, "glyphs": glyph_cols, "edges": edge_cols, "sparks": spark_cols,
                "runs": run_cols, "bits": bits}
