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
the bottom half) and ``v`` is "up" for the label. From left to right the cell holds the head glyphs (one
per head, wrapped into 3 rows) and the label with its sparkline under it.

Legibility (BERT-base: 12 rings of up to ~80 tokens): every ring is large enough for each of its tokens
to get a glyph block and a sparkline of arc, and rings are at least a band apart (:func:`ring_radii`), so
cells never overlap. Each token gets an equal slot of its ring; its label gets what arc is left beside
its glyph block. The ring's font size (``font_max`` … ``font_min``) is the one that shows the most text
legibly (:func:`_ring_font`), labels that still do not fit are shortened with an ellipsis or dropped
(:func:`fit_label`), and the views show the full token on hover. Crowded inner rings of a dense graph
therefore show glyphs and sparklines, the larger outer rings show words.
"""

from __future__ import annotations

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
    "edge_curves",
    "sparkline_segments",
    "context_layout",
    "sentence_layout",
    "display_token",
]

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class RadialStyle:
    """Sizes (pixels) of the radial Attention Flow view. Defaults are tuned for BERT-base density.

    glyph: side of one head glyph square; glyph_gap: the gap between glyphs; glyph_rows: rows of the
    head-glyph block (the paper wraps 12 heads into 3 rows).
    font_max / font_min: label font size range (px); char_width: estimated width of one character in em
    (conservative for sans-serif fonts, so estimated labels are never narrower than drawn ones).
    spark_height: height of a sparkline peak of 3 heads; spark_min: sparkline width when the label is
    dropped.
    band: the minimum radial distance between two rings; slot_pad: free arc between two cells.
    start_angle: degrees, mathematical convention (180 = 9 o'clock, 90 = 12 o'clock).
    margin: free space around the outermost ring.
    """

    glyph: float = 3.2
    glyph_gap: float = 0.8
    glyph_rows: int = 3
    font_max: float = 10.0
    font_min: float = 7.0
    char_width: float = 0.6
    spark_height: float = 5.0
    spark_min: float = 10.0
    band: float = 30.0
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

    def cell_height(self, n_heads: int) -> float:
        """Radial extent of a cell: the glyph block, or a label over its sparkline, whichever is taller."""
        return max(self.glyph_block(n_heads)[1], self.font_max + 1.0 + self.spark_height)

    def slot_min(self, n_heads: int) -> float:
        """The arc a token needs at least: its glyph block, a sparkline and the padding."""
        return self.glyph_block(n_heads)[0] + 2.0 + self.spark_min + self.slot_pad


# --------------------------------------------------------------------------------------------------
# text helpers
# --------------------------------------------------------------------------------------------------


def display_token(token: str) -> str:
    """How a WordPiece token is shown: unchanged (``##ing`` keeps its ``##``, as in exBERT/bertviz)."""
    return str(token)


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
        vx, vy (reading frame), text_angle, font_size, label (possibly shortened or ""), lx, ly (label
        centre), hx, hy, hw, hh (hit rectangle over label and sparkline, rotated by text_angle), gx, gy
        (left-bottom corner of the glyph block, in the cell frame origin), sx0, sy0 (sparkline baseline
        start), sw (sparkline width), r_in, r_out (radial extent of the cell, for edges).
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

    @property
    def L(self) -> int:
        return len(self.radii) - 1

    def node_index(self, n_tokens: int) -> np.ndarray:
        """int [L+1, n]: node id of (level, position), -1 where the token is not in the level."""
        idx = np.full((self.L + 1, n_tokens), -1, dtype=np.int64)
        idx[self.nodes["level"].to_numpy(), self.nodes["pos"].to_numpy()] = self.nodes["node"].to_numpy()
        return idx

    def level_bounds(self) -> np.ndarray:
        """int [L+2]: node ids of level k are ``bounds[k]:bounds[k+1]`` (nodes are sorted by level)."""
        counts = np.bincount(self.nodes["level"].to_numpy(), minlength=self.L + 1)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _ring_font(labels: Sequence[str], room: float, style: RadialStyle) -> float:
    """The ring's font size, from ``font_max`` down to ``font_min`` in half-pixel steps: the size that
    maximises ``mean(utility) * sqrt(size / font_max)``, where a label shown in full is worth 1, a
    shortened one 0.6 and a dropped one 0 (see :func:`fit_label`): larger text with a few shortened long
    words beats tiny text, and tiny text beats no text."""
    lengths = np.array([len(t) for t in labels], dtype=np.float64)
    best, best_f = -1.0, float(style.font_min)
    f = style.font_max
    while f >= style.font_min - 1e-9:
        full = lengths * style.char_width * f <= room
        keep = np.floor(room / (style.char_width * f)) - 1
        short = ~full & (keep >= 3)
        score = (full.mean() + 0.6 * short.mean()) * math.sqrt(f / style.font_max)
        if score > best + 1e-9:
            best, best_f = score, float(f)
        f -= 0.5
    return best_f


def radial_layout(
    levels: Sequence[np.ndarray],
    tokens: Sequence[str],
    segments: Sequence[int],
    n_heads: int,
    style: RadialStyle | None = None,
) -> RadialLayout:
    """Lay out the Token Rings (§4.3.1) of an Attention Graph.

    levels: L+1 sorted int arrays of token positions; ``levels[L]`` is the root (``[CLS]``).
    tokens, segments: the input's tokens and their segment ids (length n).
    n_heads: H, the number of head glyphs per token.
    """
    style = style or RadialStyle()
    L = len(levels) - 1
    if L < 1:
        raise ValueError("an Attention Graph needs at least one layer (L+1 >= 2 levels)")
    tokens = [display_token(t) for t in tokens]
    seg = np.asarray(segments, dtype=np.int64)
    if len(seg) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(seg)} segment ids")
    n = len(tokens)
    for k, lev in enumerate(levels):
        lev = np.asarray(lev)
        if lev.size and (lev.min() < 0 or lev.max() >= n):
            raise ValueError(f"level {k} holds positions outside 0..{n - 1}")
    if len(levels[L]) != 1:
        raise ValueError(f"level L={L} must hold exactly the root token, got {list(levels[L])}")

    gw, gh = style.glyph_block(n_heads)
    ch = style.cell_height(n_heads)
    cw_root = gw + 2.0 + text_width(tokens[int(levels[L][0])], style.font_max, style.char_width)
    root_radius = cw_root / 2.0
    sizes = [len(lev) for lev in levels]
    radii = ring_radii(sizes, n_heads, style, root_radius)

    rows = []
    ticks = []
    for k in range(L + 1):
        pos = np.asarray(levels[k], dtype=np.int64)
        if k == L:
            ang = np.array([math.pi / 2])
            meet = None
        else:
            ang, meet = ring_angles(seg[pos], style.start_angle)
        r = radii[k]
        m = len(pos)
        # the room for a label in this ring: its slot arc minus glyph block, gap and padding
        slot = TWO_PI * r / m if (m and k < L) else cw_root + 40.0
        room = slot - gw - 2.0 - style.slot_pad
        labels_full = [tokens[p] for p in pos]
        fs = _ring_font(labels_full, room, style) if (m and k < L) else style.font_max
        for i, p in enumerate(pos):
            label = labels_full[i] if k == L else fit_label(labels_full[i], room, fs, style.char_width)
            rows.append((k, int(p), labels_full[i], int(seg[p]), float(ang[i]), r, label, fs))
        if meet is not None and m:
            c, s = math.cos(meet), math.sin(meet)
            r0, r1 = r - ch / 2 - 2, r + ch / 2 + 2
            ticks.append((k, r0 * c, r0 * s, r1 * c, r1 * s))

    df = pd.DataFrame(rows, columns=["level", "pos", "token", "seg", "angle", "radius", "label", "font_size"])
    df.insert(0, "node", np.arange(len(df), dtype=np.int64))
    ang = df["angle"].to_numpy()
    rad = df["radius"].to_numpy()
    u, v, text_angle = reading_frame(ang)
    x = rad * np.cos(ang)
    y = rad * np.sin(ang)
    fs = df["font_size"].to_numpy()
    lw = np.array([text_width(t, f, style.char_width) for t, f in zip(df["label"], fs)])
    sw = np.maximum(lw, style.spark_min)
    cw = gw + 2.0 + sw
    # cell frame: u from -cw/2 (glyph block) to +cw/2 (end of label); v from -ch/2 to ch/2
    u_label = -cw / 2 + gw + 2.0 + sw / 2  # centre of the label / sparkline slot
    v_label = ch / 2 - fs / 2 - 0.5
    v_spark = v_label - fs / 2 - 1.0 - style.spark_height
    df["x"], df["y"] = x, y
    df["ux"], df["uy"], df["vx"], df["vy"] = u[:, 0], u[:, 1], v[:, 0], v[:, 1]
    df["text_angle"] = text_angle
    df["lx"] = x + u_label * u[:, 0] + v_label * v[:, 0]
    df["ly"] = y + u_label * u[:, 1] + v_label * v[:, 1]
    df["hx"] = x + u_label * u[:, 0]
    df["hy"] = y + u_label * u[:, 1]
    df["hw"] = sw + 2.0
    df["hh"] = np.full(len(df), ch)
    df["gu"] = -cw / 2  # glyph block starts here along u
    su0 = u_label - sw / 2
    df["sx0"] = x + su0 * u[:, 0] + v_spark * v[:, 0]
    df["sy0"] = y + su0 * u[:, 1] + v_spark * v[:, 1]
    df["sw"] = sw
    df["cw"] = cw
    df["r_in"] = rad - ch / 2
    df["r_out"] = rad + ch / 2
    root = df["level"].to_numpy() == L
    df.loc[root, "r_in"] = 0.0
    df.loc[root, "r_out"] = math.hypot(cw_root / 2, ch / 2)
    tick_df = pd.DataFrame(ticks, columns=["level", "x0", "y0", "x1", "y1"])
    extent = float(radii.max() + ch / 2 + style.margin) if L > 0 else 100.0
    # labels along the ring can stick out sideways by up to half a cell at 3 and 9 o'clock
    extent += float(np.max(cw, initial=0.0)) / 2
    return RadialLayout(nodes=df, ticks=tick_df, radii=radii, extent=extent, n_heads=n_heads, style=style)


def glyph_grid(layout: RadialLayout, n_heads: int, node_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Centres of the head glyphs (§4.3.2): one per (node, head), H glyphs wrapped into 3 rows.

    Head h sits in row ``h // cols`` (top row first) and column ``h % cols`` of the node's glyph block,
    in the node's reading frame. Returns columns node, head, x, y, angle (text angle of the node), ux,
    uy (reading direction, for split glyph halves). Rows are ordered by node then head.
    """
    st = layout.style
    nodes = layout.nodes if node_ids is None else layout.nodes.iloc[np.asarray(node_ids)]
    rows_n = max(1, min(st.glyph_rows, n_heads))
    cols = st.glyph_cols(n_heads)
    pitch = st.glyph + st.glyph_gap
    gh = rows_n * pitch - st.glyph_gap
    h = np.arange(n_heads)
    du = (h % cols) * pitch + st.glyph / 2  # from the block's left edge
    dv = gh / 2 - (h // cols) * pitch - st.glyph / 2
    m = len(nodes)
    gu = nodes["gu"].to_numpy()[:, None] + du[None, :]
    dvv = np.broadcast_to(dv[None, :], (m, n_heads))
    ux, uy = nodes["ux"].to_numpy()[:, None], nodes["uy"].to_numpy()[:, None]
    vx, vy = nodes["vx"].to_numpy()[:, None], nodes["vy"].to_numpy()[:, None]
    x = nodes["x"].to_numpy()[:, None] + gu * ux + dvv * vx
    y = nodes["y"].to_numpy()[:, None] + gu * uy + dvv * vy
    return pd.DataFrame(
        {
            "node": np.repeat(nodes["node"].to_numpy(), n_heads),
            "head": np.tile(h, m),
            "x": x.ravel(),
            "y": y.ravel(),
            "angle": np.repeat(nodes["text_angle"].to_numpy(), n_heads),
            "ux": np.repeat(nodes["ux"].to_numpy(), n_heads),
            "uy": np.repeat(nodes["uy"].to_numpy(), n_heads),
        }
    )


def edge_curves(layout: RadialLayout, upper: np.ndarray, lower: np.ndarray) -> dict[str, np.ndarray]:
    """Cubic Bézier curves for edges between adjacent rings (upper node at level k+1, lower at level k).

    An edge leaves the upper cell at its outer side and enters the lower cell at its inner side. The curve
    follows the ring direction (a spiral segment between the two radii, the short way round) so that it
    stays in the gap between the two rings instead of cutting across the view. Returns x0, y0, x1, y1,
    cx0, cy0, cx1, cy1 (float64 arrays), the usual Bézier columns.
    """
    nodes = layout.nodes
    upper = np.asarray(upper, dtype=np.int64)
    lower = np.asarray(lower, dtype=np.int64)
    t0 = nodes["angle"].to_numpy()[upper]
    t1 = nodes["angle"].to_numpy()[lower]
    r0 = nodes["r_out"].to_numpy()[upper]
    r1 = nodes["r_in"].to_numpy()[lower]
    is_root = nodes["level"].to_numpy()[upper] == layout.L
    # the root sits in the centre: leave it radially, towards the lower node
    t0 = np.where(is_root, t1, t0)
    d = np.mod(t1 - t0 + math.pi, TWO_PI) - math.pi
    kappa = 4.0 / 3.0 * np.tan(d / 4.0)
    dr = r1 - r0
    e0 = np.stack([np.cos(t0), np.sin(t0)])
    e1 = np.stack([np.cos(t1), np.sin(t1)])
    tan0 = np.stack([-np.sin(t0), np.cos(t0)])
    tan1 = np.stack([-np.sin(t1), np.cos(t1)])
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
    of height ``heights[i]`` heads (clamped at 3) in the node's reading frame, rising from the sparkline's
    baseline under the label. With ``per_bar=True`` each ``node_ids[i]`` is itself an array giving the
    node of every bar of ``rel[i]`` (many nodes in one go). Returns node, x0, y0, x1, y1 (one row per bar)."""
    nodes = layout.nodes
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
    sx0 = nodes["sx0"].to_numpy()[nid]
    sy0 = nodes["sy0"].to_numpy()[nid]
    sw = nodes["sw"].to_numpy()[nid]
    ux, uy = nodes["ux"].to_numpy()[nid], nodes["uy"].to_numpy()[nid]
    vx, vy = nodes["vx"].to_numpy()[nid], nodes["vy"].to_numpy()[nid]
    du = (np.clip(rel_all, -1, 1) + 1.0) / 2.0 * sw
    x0 = sx0 + du * ux
    y0 = sy0 + du * uy
    hv = h_all / 3.0 * st.spark_height
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
    rows = []
    step = TWO_PI / max(1, n)
    for k in range(L + 1):
        i = L - k
        if k == L:
            inner, outer = 0.0, hole * 0.8
        else:
            inner = hole + (i - 1) * width
            outer = inner + width * 0.82
        radii[k] = (inner + outer) / 2
        for p in range(n):
            if k == L:
                s, e = 0.0, TWO_PI
            else:
                s, e = ang[p] - step / 2 * 0.92, ang[p] + step / 2 * 0.92
            rm = (inner + outer) / 2
            rows.append((k, p, inner, outer, s, e, rm * math.cos(ang[p]), rm * math.sin(ang[p])))
    df = pd.DataFrame(rows, columns=["level", "pos", "inner", "outer", "start", "end", "xc", "yc"])
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
    rows, crow = [], []
    x = pad
    row = 0
    prev_seg = None
    for p, (tok, s) in enumerate(zip(tokens, seg)):
        tok = display_token(tok)
        w = max(text_width(tok, font_size, char_width), circles_w) + pad
        if prev_seg is not None and (s != prev_seg or x + w > width - pad):
            row += 1  # sentence B starts a new line; a full line wraps
            x = pad
        cx = x + w / 2
        y = (row + 1) * lh - 4.0
        rows.append((p, tok, int(s), cx, y, w, row))
        for j in range(5):
            crow.append((p, j, cx - circles_w / 2 + (j + 0.5) * (2 * circle + 1.0), y - font_size - circle - 2.0))
        x += w
        prev_seg = s
    tdf = pd.DataFrame(rows, columns=["pos", "token", "seg", "x", "y", "w", "row"])
    cdf = pd.DataFrame(crow, columns=["pos", "slot", "x", "y"])
    height = (row + 1) * lh + 6.0
    return SentenceLayout(tokens=tdf, circles=cdf, width=width, height=height, line_height=lh, radius=circle)


def with_style(style: RadialStyle | None = None, **changes) -> RadialStyle:
    """A copy of ``style`` (or the default) with some sizes changed."""
    return replace(style or RadialStyle(), **changes)
