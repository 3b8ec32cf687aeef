"""Radial geometry of the Attention Flows views (§4.3), in pure numpy/pandas.

Everything here is plain geometry in *pixel units* (one data unit = one screen pixel at the default
zoom), so that the views can decide from it which labels fit. Nothing here knows about Bokeh or about
reachability: the views hand in the levels of an Attention Graph (or the union of two graphs, §4.3.3)
and get back tables of coordinates.

Conventions
-----------
- Levels follow the package's convention: level ``L`` holds only ``[CLS]`` (the root, the output of the
  last layer) and level ``k`` (``k = L-1 … 0``) holds the tokens that level ``k+1`` attends to through
  layer ``k`` above τ. The *Token Rings* of §4.3.1 put level ``L`` in the centre and level ``k`` on ring
  ``i = L - k`` (level 0, the input embeddings, outermost).
- Angles are mathematical: radians, counter-clockwise from the +x axis, y pointing up.
- Sentence A (segment 0: ``[CLS]``, A's tokens, the first ``[SEP]``) runs **clockwise** and sentence B
  (segment 1) **counter-clockwise**, both from the same start angle, until they meet; the meeting point
  of each ring gets a thick tick (§4.3.1). The default start angle is 180° (9 o'clock): sentence A then
  reads left to right across the top half and sentence B left to right across the bottom half, with
  labels set along the ring and flipped in the bottom half, so every label is upright (the paper's "as
  many tokens right side up as possible"). Any start angle works (``RadialStyle.start_angle``).

A token's *cell* on its ring (§4.3.2, Fig. 4) is laid out in its reading frame ``(u, v)``: ``u`` is the
reading direction of its label (the clockwise tangent in the top half, the counter-clockwise tangent in
the bottom half) and ``v`` is "up" for the label. The cell has two rows, centred on the token's angle:
the label on top, and below it the head glyphs (one per head, wrapped into 3 rows) beside the
sparkline.

Legibility: every ring is large enough for each of its tokens to get a glyph block and a sparkline of
arc, and rings are at least a band apart (:func:`ring_radii`), so cells never overlap. Labels use one
font size for every ring (``RadialStyle.font``) and are placed by importance (:func:`place_labels`): the
most important tokens of a ring get their full text, using the arc of neighbours whose labels are hidden,
the rest get a shortened form where a gap allows one, else none (the views show every traced token's
full text on hover and selection). :meth:`RadialLayout.label_report` counts the outcome per ring.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "RadialStyle",
    "RadialLayout",
    "ContextLayout",
    "SentenceLayout",
    "ring_angles",
    "ring_radii",
    "reading_frame",
    "fit_label",
    "text_width",
    "radial_layout",
    "glyph_grid",
    "glyph_grid_arrays",
    "edge_curves",
    "sparkline_segments",
    "context_layout",
    "sentence_layout",
    "display_token",
]

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class RadialStyle:
    """Sizes (pixels at the figure's design size) of the radial Attention Flow view.

    glyph: side of one head glyph square; glyph_gap: the gap between glyphs; glyph_rows: rows of the
    head-glyph block (the paper wraps 12 heads into 3 rows).
    font: the one label font size of every ring (px at the design size; the figure scales it with the
    window, so the labels placed here never collide at any size). char_width: estimated width of one
    character in em (conservative for sans-serif fonts, so estimated labels are never narrower than
    drawn ones); label_pad: free space kept between two labels of a ring.
    spark_width / spark_height: the sparkline box beside the glyph block (a peak of 3 heads fills it).
    band: the minimum radial distance between two rings; slot_pad: free arc between two cells.
    start_angle: degrees, mathematical convention (180 = 9 o'clock, 90 = 12 o'clock).
    margin: free space around the outermost ring.
    font_max / font_min: kept for callers of :func:`fit_label`; the layout uses ``font`` only.
    """

    glyph: float = 3.2
    glyph_gap: float = 0.8
    glyph_rows: int = 3
    font: float = 10.0
    font_max: float = 10.0
    font_min: float = 9.0
    char_width: float = 0.6
    label_pad: float = 4.0
    spark_width: float = 12.0
    spark_height: float = 11.2
    spark_min: float = 12.0
    band: float = 32.0
    slot_pad: float = 3.0
    start_angle: float = 180.0
    margin: float = 16.0

    def glyph_cols(self, n_heads: int) -> int:
        return max(1, math.ceil(n_heads / max(1, min(self.glyph_rows, n_heads))))

    def glyph_block(self, n_heads: int) -> tuple[float, float]:
        """(width, height) of the head-glyph block of ``n_heads`` heads."""
        rows = max(1, min(self.glyph_rows, n_heads))
        cols = self.glyph_cols(n_heads)
        pitch = self.glyph + self.glyph_gap
        return cols * pitch - self.glyph_gap, rows * pitch - self.glyph_gap

    def row_height(self, n_heads: int) -> float:
        """Height of a cell's lower row: the glyph block beside the sparkline."""
        return max(self.glyph_block(n_heads)[1], self.spark_height)

    def cell_height(self, n_heads: int) -> float:
        """Radial extent of a cell: the label row over the glyph block + sparkline row."""
        return self.row_height(n_heads) + 2.0 + self.font + 1.0

    def row_width(self, n_heads: int) -> float:
        """Width of a cell's lower row: glyph block, a 2 px gap, the sparkline."""
        return self.glyph_block(n_heads)[0] + 2.0 + self.spark_width

    def slot_min(self, n_heads: int) -> float:
        """The arc a token needs at least: its glyph block, its sparkline and the padding."""
        return self.row_width(n_heads) + self.slot_pad


# --------------------------------------------------------------------------------------------------
# text helpers
# --------------------------------------------------------------------------------------------------


def display_token(token: str) -> str:
    """How a WordPiece token is shown: a continuation ``##ing`` reads ``-ing`` (a suffix: recognisable
    as the rest of the word before it, and two characters shorter); other tokens are unchanged."""
    token = str(token)
    if token.startswith("##") and len(token) > 2:
        return "-" + token[2:]
    return token


def text_width(text: str, font_size: float, char_width: float = 0.6) -> float:
    """Estimated rendered width (px) of ``text`` at ``font_size`` px: ``len * char_width * font_size``."""
    return len(text) * char_width * font_size


def fit_label(text: str, room: float, font_size: float, char_width: float = 0.6, min_chars: int = 3) -> str:
    """The longest form of ``text`` that fits ``room`` px: the full text, a prefix with an ellipsis
    (at least ``min_chars`` characters before it), or ``""`` (label dropped; the view shows it on hover)."""
    if text_width(text, font_size, char_width) <= room:
        return text
    keep = int(room // (char_width * font_size)) - 1  # one character's width for the ellipsis
    if keep >= min_chars and keep < len(text):
        return text[:keep] + "…"
    return ""


# --------------------------------------------------------------------------------------------------
# angles and radii
# --------------------------------------------------------------------------------------------------


def ring_angles(segments: Sequence[int], start_angle: float = 180.0) -> tuple[np.ndarray, float]:
    """Angles of the tokens of one ring, in the order given (sorted by position).

    segments: the segment (0 = sentence A side, 1 = sentence B side) of each token of the ring.
    Sentence A tokens go clockwise from ``start_angle`` (degrees), sentence B tokens counter-clockwise,
    each token in an equal slot of ``2π/m`` (m tokens in the ring), the first slot's centre half a slot
    from the start. Returns (angles in radians, the meeting angle where the two sentences' slots meet).
    A ring of one sentence only meets itself at the start angle.
    """
    seg = np.asarray(segments, dtype=np.int64)
    m = len(seg)
    start = math.radians(start_angle)
    if m == 0:
        return np.zeros(0), start
    step = TWO_PI / m
    is_a = seg == 0
    ia = np.cumsum(is_a) - 1  # rank among A tokens
    ib = np.cumsum(~is_a) - 1  # rank among B tokens
    ang = np.where(is_a, start - (ia + 0.5) * step, start + (ib + 0.5) * step)
    p = int(is_a.sum())
    meet = start - p * step
    return np.mod(ang, TWO_PI), float(np.mod(meet, TWO_PI))


def ring_radii(ring_sizes: Sequence[int], n_heads: int, style: RadialStyle, root_radius: float) -> np.ndarray:
    """Radius of every level's ring. ``ring_sizes[k]`` = number of tokens at level k (k = 0..L).

    Level L (the root) sits at radius 0. Each ring k < L needs ``r_k >= m_k * slot_min / 2π`` so that its
    ``m_k`` tokens get at least a glyph block and a sparkline of arc each, and rings are at least ``band``
    apart; a first pass outward gives the smallest radii meeting both, which fixes the outermost ring.
    The rings inside are then packed from the outside in, one gap apart (the gap grows up to 1.5
    ``band`` when there is room), never below their own minimum: crowded outer rings stay tight, a sparse
    ring near the root moves out to its neighbour (more arc for its labels, and short edges that run in
    the gap instead of looping through a wide empty annulus), and the root keeps the free disc in the
    middle, joined to its ring by straight spokes.
    """
    sizes = np.asarray(ring_sizes, dtype=np.int64)
    L = len(sizes) - 1
    radii = np.zeros(L + 1)
    if L < 1:
        return radii
    half_cell = style.cell_height(n_heads) / 2.0
    centre = root_radius + half_cell + style.band * 0.6
    rmin = np.zeros(L + 1)
    prev = None
    for k in range(L - 1, -1, -1):
        need = sizes[k] * style.slot_min(n_heads) / TWO_PI
        base = centre if prev is None else prev + style.band
        rmin[k] = max(base, need)
        prev = rmin[k]
    gap = (rmin[0] - centre) / (L - 1) if L > 1 else style.band
    gap = min(max(gap, style.band), 1.5 * style.band)
    radii[0] = rmin[0]
    for k in range(1, L):
        radii[k] = max(radii[k - 1] - gap, rmin[k])
    return radii


def reading_frame(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per angle: the label's reading direction ``u`` [m,2], its up direction ``v`` [m,2] and the text
    angle (radians, for rotated text). Top half (sin ≥ 0): u is the clockwise tangent, v points outward.
    Bottom half: flipped (u counter-clockwise, v inward), so labels read left to right, upright."""
    a = np.asarray(angle, dtype=np.float64)
    s, c = np.sin(a), np.cos(a)
    top = s >= -1e-9
    sign = np.where(top, 1.0, -1.0)
    u = np.stack([sign * s, -sign * c], axis=1)
    v = np.stack([sign * c, sign * s], axis=1)
    text_angle = np.where(top, a - math.pi / 2, a + math.pi / 2)
    text_angle = np.mod(text_angle + math.pi, TWO_PI) - math.pi
    return u, v, text_angle


# --------------------------------------------------------------------------------------------------
# the radial layout
# --------------------------------------------------------------------------------------------------


@dataclass
class RadialLayout:
    """Geometry of one radial Attention Flow view.

    nodes: one row per node (level, token position), ordered by level ascending (level 0 first, the
        root last) and by position within a level; the row index is the node id used everywhere in the
        views. Columns: node, level, pos, token, seg, angle, radius, x, y (anchor on the ring), ux, uy,
        vx, vy (reading frame), text_angle, font_size (one size for every ring), label (the full
        token, a shortened form ending in "…", or "" when hidden), lstat (2 full, 1 shortened, 0
        hidden), lw (the label's width), lx, ly (label centre), otier, olx, oly (where a shortened or
        hidden token's full text goes when a trace shows it: tier 0 on the label row, 1 a line further
        out, so that neighbours' full texts do not print over each other), hx, hy, hr (the hit target: a circle
        over the cell), gu, gv (the glyph block's left edge and centre in the cell frame), bx, by (the
        glyph block's centre), sx0, sy0 (sparkline baseline start), sw (sparkline width), cw (width
        of the cell's lower row), r_in, r_out (radial extent of the cell, for edges).
    ticks: one row per ring with x0, y0, x1, y1: the thick tick where the two sentences meet.
    radii: [L+1] ring radius per level (level L = 0).
    extent: half-width of the square that holds the drawing.
    """

    nodes: pd.DataFrame
    ticks: pd.DataFrame
    radii: np.ndarray
    extent: float
    n_heads: int
    style: RadialStyle = field(default_factory=RadialStyle)
    #: numpy arrays of ``nodes``' columns, valid while ``nodes`` is the frame ``_columns_of`` (see column())
    _columns: dict = field(default_factory=dict, repr=False, compare=False)
    _columns_of: object = field(default=None, repr=False, compare=False)

    @property
    def L(self) -> int:
        return len(self.radii) - 1

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` of :attr:`nodes` as a read-only numpy array, read once per frame.

        The views read the node columns many times per build and pandas' column access costs about
        10 µs a time (benchmarks/README.md, P1). The arrays are those the frame was built from; a new
        ``nodes`` frame starts a new cache (treat the frame as read-only: write through
        :meth:`add_columns`)."""
        if self._columns_of is not self.nodes:
            self._columns, self._columns_of = {}, self.nodes
        arr = self._columns.get(name)
        if arr is None:
            arr = self.nodes[name].to_numpy()
            self._columns[name] = arr
        return arr

    def add_columns(self, columns: dict[str, np.ndarray]) -> None:
        """Append node columns (arrays of ``len(nodes)``) with one concat, keeping their arrays."""
        kept = self._columns if self._columns_of is self.nodes else {}
        self.nodes = pd.concat([self.nodes, pd.DataFrame(columns, index=self.nodes.index)], axis=1)
        self._columns = {**kept, **{k: _frozen(v) for k, v in columns.items()}}
        self._columns_of = self.nodes

    def node_index(self, n_tokens: int) -> np.ndarray:
        """int [L+1, n]: node id of (level, position), -1 where the token is not in the level."""
        idx = np.full((self.L + 1, n_tokens), -1, dtype=np.int64)
        idx[self.column("level"), self.column("pos")] = self.column("node")
        return idx

    def level_bounds(self) -> np.ndarray:
        """int [L+2]: node ids of level k are ``bounds[k]:bounds[k+1]`` (nodes are sorted by level)."""
        counts = np.bincount(self.column("level"), minlength=self.L + 1)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def label_report(self) -> list[dict[str, int]]:
        """Per ring, outermost (level 0) first: ``{"level", "tokens", "full", "truncated", "hidden"}``
        (0-based levels, as in code; the UI shows level + 1)."""
        lv = self.column("level")
        stat = self.column("lstat")
        out = []
        for k in range(self.L + 1):
            s = stat[lv == k]
            out.append({"level": k, "tokens": int(s.size), "full": int((s == 2).sum()),
                        "truncated": int((s == 1).sum()), "hidden": int((s == 0).sum())})
        return out


def place_labels(
    angles: np.ndarray,
    radius: float,
    texts: Sequence[str],
    priority: np.ndarray | None,
    style: RadialStyle,
    min_chars: int = 3,
) -> tuple[list[str], np.ndarray]:
    """Place the labels of one ring, most important first; the one font ``style.font`` for all rings.

    Each label is centred on its token's angle, tangent to the ring, on the label row of the cell (above
    the glyph block and sparkline), so labels compete only with the labels of their own ring. Two passes
    in ``priority`` order (highest first; ties by position): first every label that fits *in full*
    without touching a label already placed (a label may use the arc of neighbours whose labels are
    hidden); then the remaining tokens get a shortened form (at least ``min_chars`` characters and "…")
    where a gap allows one, else nothing. Token length never decides the order.

    Returns the label texts and their status (uint8: 2 full, 1 shortened, 0 hidden).
    """
    m = len(texts)
    if m == 0:
        return [], np.zeros(0, dtype=np.uint8)
    ang = np.mod(np.asarray(angles, dtype=np.float64), TWO_PI)
    pr = np.zeros(m) if priority is None else np.asarray(priority, dtype=np.float64)
    order = np.lexsort((np.arange(m), -pr))
    # ring order (by angle) and each token's rank in it
    circ = np.argsort(ang, kind="stable")
    rank = np.empty(m, dtype=np.int64)
    rank[circ] = np.arange(m)
    return _place_ring(list(texts), radius, order.tolist(), circ.tolist(), rank.tolist(), ang.tolist(), style,
                       min_chars)


def _place_ring(texts: list[str], radius: float, order: list[int], circ_l: list[int], rank_l: list[int],
                ang_l: list[float], style: RadialStyle, min_chars: int = 3) -> tuple[list[str], np.ndarray]:
    """:func:`place_labels` on one ring, given its priority order, its tokens in angle order (``circ_l``)
    and each token's rank in that order; angles in [0, 2π). Plain Python lists: the loops are sequential."""
    m = len(texts)
    status = np.zeros(m, dtype=np.uint8)
    labels = [""] * m
    if m == 1:
        labels[0], status[0] = texts[0], 2
        return labels, status
    cw = style.char_width * style.font
    pad = style.label_pad
    r = max(float(radius), 1.0)
    half = [0.0] * m  # angular half-width of each placed label (0 = none)
    placed = [False] * m
    placed_ranks: list[int] = []  # ring ranks of the placed labels, ascending

    def half_angle(width: float) -> float:
        return math.atan((width + pad) / 2.0 / r)

    lengths = [len(t) for t in texts]
    pi, bisect_right, insort, atan = math.pi, bisect.bisect_right, bisect.insort, math.atan
    n_placed = 0
    for i in order:  # pass 1, the hot loop: gap() below and the placement inlined, same arithmetic
        h = atan((lengths[i] * cw + pad) / 2.0 / r)
        g = pi
        if n_placed:
            ri, ai = rank_l[i], ang_l[i]
            j = bisect_right(placed_ranks, ri)
            t = circ_l[placed_ranks[j if j < n_placed else 0]]  # next placed label, wrapping round
            d = abs((ang_l[t] - ai + pi) % TWO_PI - pi) - half[t]
            if d < g:
                g = d
            t = circ_l[placed_ranks[j - 1]]
            d = abs((ang_l[t] - ai + pi) % TWO_PI - pi) - half[t]
            if d < g:
                g = d
        if h <= g:
            labels[i], half[i], placed[i] = texts[i], h, True
            insort(placed_ranks, rank_l[i])
            n_placed += 1
    status[np.asarray(placed, dtype=bool)] = 2
    def gap(i: int) -> float:
        """The free arc beside token ``i``: up to the nearer placed label on either side (π if none)."""
        g = pi
        if placed_ranks:
            j = bisect_right(placed_ranks, rank_l[i])
            for t in (circ_l[placed_ranks[j % len(placed_ranks)]], circ_l[placed_ranks[j - 1]]):
                g = min(g, abs((ang_l[t] - ang_l[i] + pi) % TWO_PI - pi) - half[t])
        return g

    for i in order:  # pass 2: shortened labels where a gap allows (only the tokens pass 1 left)
        if placed[i]:
            continue
        g = gap(i)
        if g <= 0:
            continue
        room = 2.0 * r * math.tan(min(g, 1.4)) - pad
        keep = int(room // cw) - 1  # one character's width for the ellipsis
        if min_chars <= keep < lengths[i]:
            text = texts[i][:keep] + "…"
            labels[i], status[i], half[i] = text, 1, half_angle(len(text) * cw)
            placed[i] = True
            insort(placed_ranks, rank_l[i])
    return labels, status


def _overlay_tiers(texts: list[str], labels: list[str], status: np.ndarray, radius: float, order: list[int],
                   ang_l: list[float], style: RadialStyle, line: float) -> np.ndarray:
    """Where the full text of each shortened or hidden token of one ring goes when a trace or a selection
    shows it (the overlay): tier 0 on the ring's label row, or tier 1 one line further out of the cell
    (``line``), into the gap between the rings. In priority order (``order``), each overlay takes the
    tier where it covers the least arc, an overlay placed there counting twice a ring label (tier 0 when
    it covers nothing). So adjacent traced tokens whose ring labels are short do not print over each
    other ("percent" and "effective" used to read "percereffective"). The arcs are numpy arrays per ring;
    only the greedy pass over the overlays that touch each other is a loop."""
    m = len(texts)
    tiers = np.zeros(m, dtype=np.uint8)
    status = np.asarray(status)
    cand = np.flatnonzero(status < 2)
    if m < 2 or cand.size == 0:
        return tiers
    cw, pad = style.char_width * style.font, style.label_pad
    r0 = max(float(radius), 1.0)
    r1 = max(r0 - line, 1.0)  # tier 1 may lie inside the ring: the smaller radius, the wider angle
    ang = np.asarray(ang_l, dtype=np.float64)
    full = np.fromiter((len(texts[i]) for i in cand.tolist()), dtype=np.float64, count=cand.size) * cw + pad
    h0, h1 = np.arctan(full / 2.0 / r0), np.arctan(full / 2.0 / r1)
    label_len = np.fromiter((len(t) for t in labels), dtype=np.float64, count=m)  # as the ring draws them
    lab = np.flatnonzero(label_len > 0)
    hl = np.arctan((label_len[lab] * cw + pad) / 2.0 / r0)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs((b[None, :] - a[:, None] + math.pi) % TWO_PI - math.pi)

    # the arc of the ring's labels (full and shortened: an unlit token's short label stays drawn) that
    # each overlay covers on the label row; its own short label gives way to it
    cover = np.maximum(h0[:, None] + hl[None, :] - dist(ang[cand], ang[lab]), 0.0)
    cover[cand[:, None] == lab[None, :]] = 0.0
    label_cost = cover.sum(axis=1).tolist()
    # overlays against each other, per tier (only the pairs that touch enter the loop)
    dc = dist(ang[cand], ang[cand])
    o0 = np.maximum(h0[:, None] + h0[None, :] - dc, 0.0)
    o1 = np.maximum(h1[:, None] + h1[None, :] - dc, 0.0)
    np.fill_diagonal(o0, 0.0)
    np.fill_diagonal(o1, 0.0)
    rows, cols = np.nonzero(o1 > 0)
    touching: list[list[tuple[int, float, float]]] = [[] for _ in range(cand.size)]
    for a, j, v0, v1 in zip(rows.tolist(), cols.tolist(), o0[rows, cols].tolist(), o1[rows, cols].tolist()):
        touching[a].append((j, v0, v1))
    slot = {int(c): a for a, c in enumerate(cand.tolist())}
    placed = [-1] * cand.size  # each overlay's tier once placed
    for i in order:
        a = slot.get(i)
        if a is None:
            continue
        cost0, cost1 = label_cost[a], 0.0
        for j, v0, v1 in touching[a]:
            if placed[j] == 0:
                cost0 += 2.0 * v0
            elif placed[j] == 1:
                cost1 += 2.0 * v1
        placed[a] = tier = 1 if cost0 > 0 and cost1 < cost0 else 0
        tiers[i] = tier
    return tiers


def radial_layout(
    levels: Sequence[np.ndarray],
    tokens: Sequence[str],
    segments: Sequence[int],
    n_heads: int,
    style: RadialStyle | None = None,
    priority: np.ndarray | None = None,
) -> RadialLayout:
    """Lay out the Token Rings (§4.3.1) of an Attention Graph, and place their labels.

    levels: L+1 sorted int arrays of token positions; ``levels[L]`` is the root (``[CLS]``).
    tokens, segments: the input's tokens and their segment ids (length n).
    n_heads: H, the number of head glyphs per token.
    priority: optional float ``[L+1, n]``: the label priority of token p at level k (the views pass its
        importance in the graph: influence, degree, selection); higher labels first (:func:`place_labels`).
    """
    style = style or RadialStyle()
    L = len(levels) - 1
    if L < 1:
        raise ValueError("an Attention Graph needs at least one layer (L+1 >= 2 levels)")
    shown = [display_token(t) for t in tokens]
    seg = np.asarray(segments, dtype=np.int64)
    if len(seg) != len(shown):
        raise ValueError(f"{len(shown)} tokens but {len(seg)} segment ids")
    n = len(shown)
    levels = [np.asarray(lev, dtype=np.int64) for lev in levels]
    for k, lev in enumerate(levels):
        if lev.size and (lev.min() < 0 or lev.max() >= n):
            raise ValueError(f"level {k} holds positions outside 0..{n - 1}")
    if len(levels[L]) != 1:
        raise ValueError(f"level L={L} must hold exactly the root token, got {list(levels[L])}")
    if priority is not None:
        priority = np.asarray(priority, dtype=np.float64)
        if priority.shape != (L + 1, n):
            raise ValueError(f"priority must have shape [L+1, n] = {(L + 1, n)}; got {priority.shape}")

    gw, gh = style.glyph_block(n_heads)
    rh = style.row_height(n_heads)
    ch = style.cell_height(n_heads)
    rw = style.row_width(n_heads)
    root_text = shown[int(levels[L][0])]
    root_radius = max(rw, text_width(root_text, style.font, style.char_width)) / 2.0
    sizes = [len(lev) for lev in levels]
    radii = ring_radii(sizes, n_heads, style, root_radius)

    level_col = np.concatenate([np.full(len(lev), k, dtype=np.int64) for k, lev in enumerate(levels)])
    pos = np.concatenate(levels)
    N = pos.size
    rad = radii[level_col]
    first = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # level k: nodes first[k]:first[k+1]
    # every ring's angles at once (ring_angles of each ring: sentence A clockwise, B counter-clockwise)
    size_of = np.asarray(sizes, dtype=np.int64)[level_col]
    local = np.arange(N) - first[level_col]  # position of the node within its ring
    start_rad = math.radians(style.start_angle)
    step = TWO_PI / np.maximum(size_of, 1)
    is_a = seg[pos] == 0
    ca, cb = np.cumsum(is_a), np.cumsum(~is_a)
    ring_start = first[level_col]
    ia = ca - np.concatenate([[0], ca])[ring_start] - 1  # rank among the ring's A tokens
    ib = cb - np.concatenate([[0], cb])[ring_start] - 1  # rank among the ring's B tokens
    ang = np.mod(np.where(is_a, start_rad - (ia + 0.5) * step, start_rad + (ib + 0.5) * step), TWO_PI)
    ang[first[L] :] = math.pi / 2  # the root
    # each ring's label order (priority, ties by position) and angle order, sorted once for all rings
    pr = np.zeros(N) if priority is None else priority[level_col, pos]
    order_all = np.lexsort((local, -pr, level_col))
    circ_all = np.lexsort((local, ang, level_col))
    a_count = np.add.reduceat(is_a.astype(np.int64), first[:-1]) if N else np.zeros(L + 1, np.int64)
    labels: list[str] = []
    lstat = np.empty(N, dtype=np.uint8)
    otier = np.zeros(N, dtype=np.uint8)
    line = float(style.font) + 3.0  # an overlay one tier out: a line beyond the label row
    ticks = []
    shown_l = [shown[i] for i in pos.tolist()]
    ang_l_all = ang.tolist()
    for k in range(L + 1):
        lo, hi = int(first[k]), int(first[k + 1])
        m = hi - lo
        if k == L:
            labels.append(root_text)
            lstat[lo:hi] = 2
            continue
        if m == 0:
            continue
        circ = circ_all[lo:hi] - lo
        rank = np.empty(m, dtype=np.int64)
        rank[circ] = np.arange(m)
        lab, stt = _place_ring(shown_l[lo:hi], radii[k], (order_all[lo:hi] - lo).tolist(), circ.tolist(),
                               rank.tolist(), ang_l_all[lo:hi], style)
        labels.extend(lab)
        lstat[lo:hi] = stt
        otier[lo:hi] = _overlay_tiers(shown_l[lo:hi], lab, stt, radii[k], (order_all[lo:hi] - lo).tolist(),
                                      ang_l_all[lo:hi], style, line)
        meet = float(np.mod(start_rad - int(a_count[k]) * (TWO_PI / m), TWO_PI))  # where A and B meet
        c, s = math.cos(meet), math.sin(meet)
        r0, r1 = radii[k] - ch / 2 - 2, radii[k] + ch / 2 + 2
        ticks.append((k, r0 * c, r0 * s, r1 * c, r1 * s))

    u, v, text_angle = reading_frame(ang)
    x, y = rad * np.cos(ang), rad * np.sin(ang)
    fs = np.full(N, float(style.font))
    lw = np.array([len(t) for t in labels], dtype=np.float64) * style.char_width * style.font
    # the cell in its reading frame (u along the label, v up): the label row on top, the glyph block and
    # the sparkline side by side below it, all centred on the token's anchor
    v_label = ch / 2 - style.font / 2 - 0.5
    v_row = -ch / 2 + rh / 2
    gu = -rw / 2
    su0 = gu + gw + 2.0
    v_base = -ch / 2
    ux, uy, vx, vy = u[:, 0], u[:, 1], v[:, 0], v[:, 1]
    cols = {
        "node": np.arange(N, dtype=np.int64), "level": level_col, "pos": pos,
        "token": shown_l, "seg": seg[pos], "angle": ang, "radius": rad,
        "x": x, "y": y, "ux": ux, "uy": uy, "vx": vx, "vy": vy, "text_angle": text_angle,
        "font_size": fs, "label": labels, "lstat": lstat, "lw": lw,
        "lx": x + v_label * vx, "ly": y + v_label * vy,
        "otier": otier, "olx": x + (v_label + otier * line) * vx, "oly": y + (v_label + otier * line) * vy,
        "hx": x, "hy": y, "hr": np.full(N, min(ch, rw) / 2 + 1.0),
        "gu": np.full(N, gu), "gv": np.full(N, v_row),
        "bx": x + (gu + gw / 2) * ux + v_row * vx, "by": y + (gu + gw / 2) * uy + v_row * vy,
        "sx0": x + su0 * ux + v_base * vx, "sy0": y + su0 * uy + v_base * vy,
        "sw": np.full(N, style.spark_width), "cw": np.full(N, rw),
        "r_in": rad - ch / 2, "r_out": rad + ch / 2,
    }
    root = level_col == L
    cols["r_in"][root] = 0.0
    cols["r_out"][root] = math.hypot(root_radius, ch / 2)
    df = pd.DataFrame(cols)
    tick_df = pd.DataFrame(ticks, columns=["level", "x0", "y0", "x1", "y1"])
    # the farthest corner of any cell (its label or its lower row) from the centre
    reach = np.hypot(rad + ch / 2, np.maximum(lw, rw) / 2)
    extent = float(max(reach.max(initial=0.0), radii.max() + ch / 2) + style.margin)
    numeric = {k: _frozen(v) for k, v in cols.items() if isinstance(v, np.ndarray)}  # not the text columns
    return RadialLayout(nodes=df, ticks=tick_df, radii=radii, extent=extent, n_heads=n_heads, style=style,
                        _columns=numeric, _columns_of=df)


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` itself, made read-only (a cached column must not change under its frame)."""
    a = np.asarray(a)
    a.flags.writeable = False
    return a


def glyph_grid(layout: RadialLayout, n_heads: int, node_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Centres of the head glyphs (§4.3.2): one per (node, head), H glyphs wrapped into 3 rows.

    Head h sits in row ``h // cols`` (top row first) and column ``h % cols`` of the node's glyph block,
    in the node's reading frame (the block is centred on ``gv``). Returns columns node, head, x, y, angle (text angle of the node), ux,
    uy (reading direction, for split glyph halves). Rows are ordered by node then head.
    """
    return pd.DataFrame(glyph_grid_arrays(layout, n_heads, node_ids))


def glyph_grid_arrays(layout: RadialLayout, n_heads: int, node_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`glyph_grid` as a dict of numpy columns (no DataFrame: for views that pick rows in bulk)."""
    st = layout.style
    pick = slice(None) if node_ids is None else np.asarray(node_ids)

    def col(name: str) -> np.ndarray:
        return layout.column(name)[pick]

    rows_n = max(1, min(st.glyph_rows, n_heads))
    cols = st.glyph_cols(n_heads)
    pitch = st.glyph + st.glyph_gap
    gh = rows_n * pitch - st.glyph_gap
    h = np.arange(n_heads)
    du = (h % cols) * pitch + st.glyph / 2  # from the block's left edge
    dv = gh / 2 - (h // cols) * pitch - st.glyph / 2
    node = col("node")
    m = len(node)
    gu = col("gu")[:, None] + du[None, :]
    dvv = col("gv")[:, None] + dv[None, :]
    ux, uy = col("ux"), col("uy")
    vx, vy = col("vx")[:, None], col("vy")[:, None]
    x = col("x")[:, None] + gu * ux[:, None] + dvv * vx
    y = col("y")[:, None] + gu * uy[:, None] + dvv * vy
    return {
        "node": np.repeat(node, n_heads),
        "head": np.tile(h, m),
        "x": x.ravel(),
        "y": y.ravel(),
        "angle": np.repeat(col("text_angle"), n_heads),
        "ux": np.repeat(ux, n_heads),
        "uy": np.repeat(uy, n_heads),
    }


def edge_curves(layout: RadialLayout, upper: np.ndarray, lower: np.ndarray) -> dict[str, np.ndarray]:
    """Cubic Bézier curves for edges between adjacent rings (upper node at level k+1, lower at level k).

    An edge leaves the upper cell at its outer side and enters the lower cell at its inner side. The curve
    follows the ring direction (a spiral segment between the two radii, the short way round) so that it
    stays in the gap between the two rings instead of cutting across the view. Returns x0, y0, x1, y1,
    cx0, cy0, cx1, cy1 (float64 arrays), the usual Bézier columns.
    """
    col = layout.column
    upper = np.asarray(upper, dtype=np.int64)
    lower = np.asarray(lower, dtype=np.int64)
    angle = col("angle")
    t0 = angle[upper]
    t1 = angle[lower]
    r0 = col("r_out")[upper]
    r1 = col("r_in")[lower]
    is_root = col("level")[upper] == layout.L
    # the root sits in the centre: leave it radially, towards the lower node
    t0 = np.where(is_root, t1, t0)
    start = np.where(is_root, lower, upper)  # the node whose angle t0 is
    d = np.mod(t1 - t0 + math.pi, TWO_PI) - math.pi
    kappa = 4.0 / 3.0 * np.tan(d / 4.0)
    dr = r1 - r0
    cos_n, sin_n = np.cos(angle), np.sin(angle)  # once per node, picked per edge end
    cos0, sin0, cos1, sin1 = cos_n[start], sin_n[start], cos_n[lower], sin_n[lower]
    e0 = np.stack([cos0, sin0])
    e1 = np.stack([cos1, sin1])
    tan0 = np.stack([-sin0, cos0])
    tan1 = np.stack([-sin1, cos1])
    p0 = r0 * e0
    p1 = r1 * e1
    c0 = p0 + kappa * r0 * tan0 + dr / 3.0 * e0
    c1 = p1 - kappa * r1 * tan1 - dr / 3.0 * e1
    return {"x0": p0[0], "y0": p0[1], "x1": p1[0], "y1": p1[1], "cx0": c0[0], "cy0": c0[1], "cx1": c1[0], "cy1": c1[1]}


def sparkline_segments(
    layout: RadialLayout,
    node_ids: Sequence,
    rel: Sequence[np.ndarray],
    heights: Sequence[np.ndarray],
    per_bar: bool = False,
) -> dict[str, np.ndarray]:
    """Sparkline peaks (§4.3.2) as segments: for node ``node_ids[i]``, one vertical bar per attended
    position at relative position ``rel[i]`` in [-1, 1] (0 = itself, in the middle of the sparkline),
    of ``heights[i]`` heads (clamped at 3) in the node's reading frame, rising from the sparkline's
    baseline beside the glyph block: 1, 2 and 3 heads fill 1/2, 3/4 and all of ``spark_height``, so a
    single head's peak stays visible. With ``per_bar=True`` each ``node_ids[i]`` is itself an array giving the
    node of every bar of ``rel[i]`` (many nodes in one go). Returns node, x0, y0, x1, y1 (one row per bar)."""
    st = layout.style
    ids, xs, hs = [], [], []
    for nid, r, h in zip(node_ids, rel, heights):
        r = np.asarray(r, dtype=np.float64)
        if r.size == 0:
            continue
        ids.append(np.asarray(nid, dtype=np.int64) if per_bar else np.full(r.size, int(nid)))
        xs.append(r)
        hs.append(np.minimum(np.asarray(h, dtype=np.float64), 3.0))
    if not ids:
        z = np.zeros(0)
        return {"node": np.zeros(0, dtype=np.int64), "x0": z, "y0": z, "x1": z, "y1": z}
    nid = np.concatenate(ids)
    rel_all = np.concatenate(xs)
    h_all = np.concatenate(hs)
    col = layout.column
    sx0 = col("sx0")[nid]
    sy0 = col("sy0")[nid]
    sw = col("sw")[nid]
    ux, uy = col("ux")[nid], col("uy")[nid]
    vx, vy = col("vx")[nid], col("vy")[nid]
    du = (np.clip(rel_all, -1, 1) + 1.0) / 2.0 * sw
    x0 = sx0 + du * ux
    y0 = sy0 + du * uy
    hv = (h_all + 1.0) / 4.0 * st.spark_height
    return {"node": nid, "x0": x0, "y0": y0, "x1": x0 + hv * vx, "y1": y0 + hv * vy}


# --------------------------------------------------------------------------------------------------
# sentence context view (Fig. 1(b))
# --------------------------------------------------------------------------------------------------


@dataclass
class ContextLayout:
    """Wedges of the Sentence Context view: ring ``L - k`` for level k, a wedge per token position at
    an angle that encodes its position in the original sentence. Columns of ``wedges``: level, pos,
    inner, outer, start, end (radians), xc, yc (wedge centre). ``extent``: half-width of the drawing."""

    wedges: pd.DataFrame
    angles: np.ndarray
    radii: np.ndarray
    extent: float


def context_layout(
    n_levels: int, segments: Sequence[int], radius: float = 140.0, start_angle: float = 180.0, hole: float = 14.0
) -> ContextLayout:
    """Sentence Context view geometry (§4.3.1): every level gets a ring, and token position p of the
    input sits at the same angle on every ring, sentence A clockwise and B counter-clockwise from
    ``start_angle`` (as in the flow view), so a ring shows which parts of the sentence a level holds.

    The view draws one wedge per (level, position) that is in the level; this function returns the
    geometry of all (level, position) pairs (``L+1`` × n rows; level L is the small disc in the centre).
    """
    seg = np.asarray(segments, dtype=np.int64)
    n = len(seg)
    L = n_levels - 1
    ang, _ = ring_angles(seg, start_angle)
    width = (radius - hole) / max(1, L)
    radii = np.zeros(L + 1)
    step = TWO_PI / max(1, n)
    inner = np.zeros(L + 1)
    outer = np.zeros(L + 1)
    for k in range(L + 1):
        i = L - k
        if k == L:
            inner[k], outer[k] = 0.0, hole * 0.8
        else:
            inner[k] = hole + (i - 1) * width
            outer[k] = inner[k] + width * 0.82
        radii[k] = (inner[k] + outer[k]) / 2
    # one row per (level, position), level-major, built in bulk; cos/sin per position from math, as before
    cos_p = np.array([math.cos(a) for a in ang.tolist()])
    sin_p = np.array([math.sin(a) for a in ang.tolist()])
    half = step / 2 * 0.92
    start = np.tile(ang - half, L + 1)
    end = np.tile(ang + half, L + 1)
    start[L * n :], end[L * n :] = 0.0, TWO_PI  # the root: a full disc
    rm = np.repeat(radii, n)
    df = pd.DataFrame({
        "level": np.repeat(np.arange(L + 1, dtype=np.int64), n),
        "pos": np.tile(np.arange(n, dtype=np.int64), L + 1),
        "inner": np.repeat(inner, n), "outer": np.repeat(outer, n),
        "start": start, "end": end,
        "xc": rm * np.tile(cos_p, L + 1), "yc": rm * np.tile(sin_p, L + 1),
    })
    return ContextLayout(wedges=df, angles=ang, radii=radii, extent=radius + 8.0)


# --------------------------------------------------------------------------------------------------
# sentence view (Fig. 1(a))
# --------------------------------------------------------------------------------------------------


@dataclass
class SentenceLayout:
    """Tokens of both sentences in reading order, wrapped into lines.

    tokens: columns pos, token, seg, x (slot centre), y (text baseline of the line), w (slot width),
    row. circles: columns pos, slot (0..4), x, y: the centres of the five influence-rating circles above
    each token. ``width``/``height``: the drawing's size (y grows downward from 0 at the top, so views flip).
    """

    tokens: pd.DataFrame
    circles: pd.DataFrame
    width: float
    height: float
    line_height: float
    radius: float


def sentence_layout(
    tokens: Sequence[str],
    segments: Sequence[int],
    width: float = 900.0,
    font_size: float = 13.0,
    char_width: float = 0.6,
    circle: float = 3.0,
    pad: float = 6.0,
) -> SentenceLayout:
    """Wrap both sentences into lines of at most ``width`` px, sentence B starting on a new line.

    Each token's slot is wide enough for its text and for the five influence circles of radius
    ``circle`` that sit over it (§4.2: the ceiling of I_l(w), clamped to 5, as a 5-circle rating).
    """
    seg = np.asarray(segments, dtype=np.int64)
    lh = font_size + 2 * circle + 14.0
    circles_w = 5 * (2 * circle + 1.0)
    shown = [display_token(t) for t in tokens][: len(seg)]
    n = len(shown)
    if n == 0:
        tdf = pd.DataFrame([], columns=["pos", "token", "seg", "x", "y", "w", "row"])
        cdf = pd.DataFrame([], columns=["pos", "slot", "x", "y"])
        return SentenceLayout(tokens=tdf, circles=cdf, width=width, height=lh + 6.0, line_height=lh, radius=circle)
    lens = np.array([len(t) for t in shown], dtype=np.float64)
    w = (np.maximum(lens * char_width * font_size, circles_w) + pad).tolist()  # text_width, or the circles
    # line wrapping is sequential (each slot starts where the previous one ended): plain floats
    seg_l = seg.tolist()
    xs, rows_l = [0.0] * n, [0] * n
    x, row, prev_seg = pad, 0, None
    for p in range(n):
        s_p, w_p = seg_l[p], w[p]
        if prev_seg is not None and (s_p != prev_seg or x + w_p > width - pad):
            row += 1  # sentence B starts a new line; a full line wraps
            x = pad
        xs[p], rows_l[p] = x, row
        x += w_p
        prev_seg = s_p
    w_a = np.asarray(w, dtype=np.float64)
    cx = np.asarray(xs, dtype=np.float64) + w_a / 2
    row_a = np.asarray(rows_l, dtype=np.int64)
    y = (row_a + 1) * lh - 4.0
    tdf = pd.DataFrame({"pos": np.arange(n, dtype=np.int64), "token": shown, "seg": seg[:n],
                        "x": cx, "y": y, "w": w_a, "row": row_a})
    j = np.arange(5)
    cdf = pd.DataFrame({
        "pos": np.repeat(np.arange(n, dtype=np.int64), 5), "slot": np.tile(j, n).astype(np.int64),
        "x": (cx[:, None] - circles_w / 2 + (j + 0.5)[None, :] * (2 * circle + 1.0)).ravel(),
        "y": np.repeat(y - font_size - circle - 2.0, 5),
    })
    height = (row + 1) * lh + 6.0
    return SentenceLayout(tokens=tdf, circles=cdf, width=width, height=height, line_height=lh, radius=circle)


def with_style(style: RadialStyle | None = None, **changes) -> RadialStyle:
    """A copy of ``style`` (or the default) with some sizes changed."""
    return replace(style or RadialStyle(), **changes)
