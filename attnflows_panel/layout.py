"""Radial geometry of the Attention Flows views (§4.3), in pure numpy/pandas.

Everything here is plain geometry in *layout units* (pixels at the design size, where the drawing spans
``2 · extent``; the component fits it to its canvas and zooms). Nothing here knows about Bokeh or about
reachability: the views hand in the levels of an Attention Graph (or the union of two graphs, §4.3.3)
and get back tables of coordinates. What a label says, how important it is and which labels fit at a
given size live in :mod:`attnflows_panel.ring_labels` (re-exported here).

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
- Tokens a level does not hold are folded into *runs* on its ring, between the reached tokens in
  sentence order: a small arc with a count (:func:`ring_slots`), which the component opens on demand.

A token's *cell* on its ring (§4.3.2, Fig. 4) is laid out in its reading frame ``(u, v)``: ``u`` is the
reading direction of its label (the clockwise tangent in the top half, the counter-clockwise tangent in
the bottom half) and ``v`` is "up" for the label. The cell has two rows, centred on the token's angle:
the label on top, and below it the head glyphs (one per head, wrapped into 3 rows) beside the
sparkline. A crowded ring scales its cells down (``cs``) so that they never overlap.

Ring radii follow content (:func:`ring_radii`): a ring whose labels want more arc gets more radius,
within a disc of ``RadialStyle.radius`` that grows only when the rings need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from attnflows_panel.ring_labels import (
    LabelChoice,
    display_token,
    overlay_tiers,
    place_labels,
    place_ring,
    select_labels,
    word_labels,
)
from attnflows_panel.sentence_layouts import (
    ContextLayout,
    SentenceLayout,
    context_layout,
    ring_angles,
    sentence_layout,
)

__all__ = [
    "RadialStyle",
    "RadialLayout",
    "RingSlots",
    "RING_LABEL_COLUMNS",
    "ContextLayout",
    "SentenceLayout",
    "LabelChoice",
    "ring_angles",
    "ring_slots",
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
    "place_labels",
    "select_labels",
    "word_labels",
]

TWO_PI = 2.0 * math.pi


#: the most head glyphs side by side in a cell's block (more heads wrap into more rows)
MAX_GLYPH_COLS = 8


@dataclass(frozen=True)
class RadialStyle:
    """Sizes (layout units: pixels at the design size, where the drawing spans ``2 · extent``) of the
    radial Attention Flow view.

    glyph: side of one head glyph square; glyph_gap: the gap between glyphs; glyph_rows: rows of the
    head-glyph block (the paper wraps 12 heads into 3 rows).
    font: the label font of the cells' label row at the design size (the Bokeh figure's labels; the
    component draws labels at a fixed screen font, :func:`~attnflows_panel.ring_labels.select_labels`).
    char_width: estimated width of one character in em (conservative for sans-serif fonts);
    label_pad: free space kept between two labels of a ring.
    spark_width / spark_height: the sparkline box beside the glyph block (a peak of 3 heads fills it).
    band: the minimum radial distance between two rings; slot_pad: free arc between two cells.
    start_angle: degrees, mathematical convention (180 = 9 o'clock, 90 = 12 o'clock).
    margin: free space around the outermost ring.
    radius: the outermost ring's radius when the rings need less (the drawing's design size: rings
    spread over it by content, :func:`ring_radii`).
    run_slot: the arc of a run of folded tokens, in token slots (:func:`ring_slots`).
    cell_min: the smallest cell scale: a crowded ring shrinks its cells (glyph block, sparkline, label
    row) down to this fraction before the drawing grows.
    spread: where each ring sits between its innermost and outermost possible radius (0..1).
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
    band: float = 28.0
    slot_pad: float = 3.0
    start_angle: float = 180.0
    margin: float = 16.0
    radius: float = 460.0
    run_slot: float = 0.5
    cell_min: float = 0.2
    spread: float = 0.5

    def glyph_grid_rows(self, n_heads: int) -> int:
        """Rows of the head-glyph block: ``glyph_rows`` (the paper's 3 for 12 heads), more when the heads
        would need more than :data:`MAX_GLYPH_COLS` columns (32 heads: 4 rows of 8), so that a cell of a
        model with many heads stays near square instead of growing along its ring."""
        return max(1, min(n_heads, max(self.glyph_rows, math.ceil(n_heads / MAX_GLYPH_COLS))))

    def glyph_cols(self, n_heads: int) -> int:
        return max(1, math.ceil(n_heads / self.glyph_grid_rows(n_heads)))

    def glyph_block(self, n_heads: int) -> tuple[float, float]:
        """(width, height) of the head-glyph block of ``n_heads`` heads."""
        rows = self.glyph_grid_rows(n_heads)
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


@dataclass
class RingSlots:
    """Angles of every ring's tokens with the unreached tokens folded into runs (:func:`ring_slots`).

    angle, half: per reached (level, position), in the order of ``member``'s nonzero entries (level, then
    position): the token's angle and the half-width of its slot (radians). meet: [L+1] the meeting angle
    of each ring. runs: dict of arrays, one entry per run: level, angle (centre), angle0, angle1 (its arc,
    ``angle0 < angle1`` without wrapping: the run covers ``angle0 .. angle1`` counter-clockwise), count,
    first_token, last_token. units: [L+1] slots of each ring (tokens + ``run_slot`` · runs)."""

    angle: np.ndarray
    half: np.ndarray
    meet: np.ndarray
    runs: dict
    units: np.ndarray


def ring_slots(member: np.ndarray, segments: Sequence[int], start_angle: float = 180.0,
               run_slot: float = 0.5) -> RingSlots:
    """Angles of the Token Rings with the tokens the graph does not reach folded into runs (§4.3.1).

    member: bool [L+1, n], the tokens of each level (level L: the root alone, at 90°, no runs).
    Sentence A (segment 0) runs clockwise from ``start_angle`` and sentence B counter-clockwise, in
    sentence order, until they meet (as :func:`ring_angles`). Between two reached tokens of one sentence,
    the unreached positions between them are one *run*, an arc of ``run_slot`` token slots with their
    count; so are the unreached positions before a sentence's first reached token and after its last
    (runs never span the two sentences: those positions are not next to each other on the ring). A ring
    of m tokens and r runs cuts the circle into ``m + run_slot · r`` slot units. A level that holds no
    token has no ring and no runs.
    """
    member = np.asarray(member, dtype=bool)
    Lp1, n = member.shape
    L = Lp1 - 1
    seg = np.asarray(segments, dtype=np.int64)
    start = math.radians(start_angle)
    rings = member[:L]
    has = rings.any(axis=1)
    sides = [np.flatnonzero(seg == 0), np.flatnonzero(seg != 0)]
    weight_side, centre_side, runs_side = [], [], []
    for cols in sides:
        sub = rings[:, cols]  # [L, ns]
        unreached = ~sub & has[:, None]
        run_start = unreached.copy()
        run_start[:, 1:] &= sub[:, :-1]  # an unreached position after a reached one starts a run
        w = sub.astype(np.float64) + run_slot * run_start
        cum = np.cumsum(w, axis=1)
        centre = cum - w / 2  # a token's centre, a run's centre (at its first position)
        weight_side.append(cum[:, -1] if cols.size else np.zeros(L))
        centre_side.append(centre)
        runs_side.append((cols, unreached, run_start))
    units = weight_side[0] + weight_side[1]
    step = np.where(units > 0, TWO_PI / np.maximum(units, 1e-12), 0.0)
    meet = np.full(L + 1, start)
    meet[:L] = np.mod(start - weight_side[0] * step, TWO_PI)
    ang_full = np.zeros((L, n))
    for side, (cols, _, _) in enumerate(runs_side):
        sign = -1.0 if side == 0 else 1.0
        ang_full[:, cols] = start + sign * centre_side[side] * step[:, None]
    lv, ps = np.nonzero(member)
    ang = np.empty(lv.size)
    below = lv < L
    ang[below] = np.mod(ang_full[lv[below], ps[below]], TWO_PI)
    ang[~below] = math.pi / 2
    half = np.where(below, step[np.minimum(lv, L - 1)] / 2, math.pi)
    runs = _runs(runs_side, centre_side, step, start, run_slot)
    units_all = np.zeros(L + 1)
    units_all[:L] = units
    units_all[L] = 1.0
    return RingSlots(angle=ang, half=half, meet=meet, runs=runs, units=units_all)


def _runs(runs_side, centre_side, step: np.ndarray, start: float, run_slot: float) -> dict[str, np.ndarray]:
    """The runs of :func:`ring_slots` from each sentence side's unreached positions and run starts: per run
    its level, centre angle, arc (angle0, angle1), count and first / last position; sorted by level, then
    position."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("level", "angle", "count", "first_token",
                                                             "last_token", "angle0", "angle1")}
    for side, (cols, unreached, run_start) in enumerate(runs_side):
        if cols.size == 0:
            continue
        sign = -1.0 if side == 0 else 1.0
        rid = np.cumsum(run_start, axis=1)  # run number within the level's side
        k_s, j_s = np.nonzero(run_start)
        if k_s.size == 0:
            continue
        count = np.zeros(k_s.size, dtype=np.int64)
        k_u, j_u = np.nonzero(unreached)
        key_u = k_u * (cols.size + 1) + rid[k_u, j_u]
        key_s = k_s * (cols.size + 1) + rid[k_s, j_s]
        cnt = np.bincount(np.searchsorted(key_s, key_u), minlength=k_s.size)
        count[:] = cnt[: k_s.size]
        c = np.mod(start + sign * centre_side[side][k_s, j_s] * step[k_s], TWO_PI)
        hw = run_slot * step[k_s] / 2
        parts["level"].append(k_s)
        parts["angle"].append(c)
        parts["angle0"].append(c - hw)
        parts["angle1"].append(c + hw)
        parts["count"].append(count)
        parts["first_token"].append(cols[j_s])
        parts["last_token"].append(cols[j_s + count - 1])
    if parts["level"]:
        runs = {k: np.concatenate(v) for k, v in parts.items()}
        order = np.lexsort((runs["first_token"], runs["level"]))
        runs = {k: v[order] for k, v in runs.items()}
    else:
        runs = {k: np.zeros(0, dtype=np.float64 if k.startswith("angle") else np.int64) for k in parts}
    return runs


def ring_radii(ring_sizes: Sequence[float], n_heads: int, style: RadialStyle, root_radius: float,
               demand: Sequence[float] | None = None) -> np.ndarray:
    """Radius of every level's ring, by content. ``ring_sizes[k]``: the slot units of level k's ring
    (its tokens, plus ``run_slot`` per folded run; k = 0..L); ``demand[k]``: the arc (layout units) its
    labels want in one row (default: a slot each).

    Level L (the root) sits at radius 0, its ring at least ``root_radius`` + half a cell out. Rings are at
    least ``band`` apart and each ring is large enough for its cells at the smallest cell scale
    (``units · slot_min · cell_min / 2π``); the outermost ring goes out to ``style.radius`` (further only
    when the rings need it). Within that disc the rings are placed by content: the largest ``q`` is
    found such that every ring can get ``q`` times its labels' demand, packed from the inside out (so a
    ring with many tokens, or long words, gets more circumference, and sparse rings near the root keep
    only what they need); then each ring sits ``spread`` of the way between that innermost radius and
    the outermost it could take (packed from the outside in), so the free room is shared and no ring is
    squeezed while others stand empty.
    """
    units = np.asarray(ring_sizes, dtype=np.float64)
    L = len(units) - 1
    radii = np.zeros(L + 1)
    if L < 1:
        return radii
    slot = style.slot_min(n_heads)
    dem = units * slot if demand is None else np.maximum(np.asarray(demand, dtype=np.float64), 0.0)
    floor = units * slot * style.cell_min / TWO_PI
    centre = root_radius + style.cell_height(n_heads) / 2.0 + style.band * 0.6
    band = style.band

    j = np.arange(L, dtype=np.float64)

    def chain(need: np.ndarray) -> np.ndarray:
        """Radii packed from the inside out: ``r[L-1] = max(centre, need[L-1])``, ``r[k] = max(need[k],
        r[k+1] + band)``, i.e. ``r[k] = max_{j >= k} (need'[j] + (j - k) · band)`` (a reversed running max)."""
        x = np.asarray(need[:L], dtype=np.float64).copy()
        x[L - 1] = max(x[L - 1], centre)
        r = np.zeros(L + 1)
        r[:L] = np.maximum.accumulate((x + j * band)[::-1])[::-1] - j * band
        return r

    lo = chain(floor)
    R = max(style.radius, lo[0])
    # the largest q with chain(max(floor, q · demand / 2π))[0] <= R: each ring j bounds q by
    # (R - j · band) · 2π / demand[j] (the floors and the centre fit already, since chain(floor)[0] <= R)
    has = dem[:L] > 0
    q = float(np.min((R - j[has] * band) * TWO_PI / dem[:L][has])) if has.any() else 0.0
    lo = chain(np.maximum(floor, max(q, 0.0) * dem / TWO_PI))
    hi = np.zeros(L + 1)
    hi[:L] = np.maximum(R - j * band, lo[:L])  # packed from the outside in
    radii[:L] = lo[:L] + style.spread * (hi[:L] - lo[:L])
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

#: node columns of the per-ring placement at the design size, computed on first use (the Bokeh figure)
RING_LABEL_COLUMNS = ("ring_label", "lstat", "otier", "olx", "oly")


@dataclass
class RadialLayout:
    """Geometry of one radial Attention Flow view.

    nodes: one row per node (level, token position), ordered by level ascending (level 0 first, the
        root last) and by position within a level; the row index is the node id used everywhere in the
        views. Columns: node, level, pos, token (the token as shown alone), seg, angle, half (half the
        angle of its slot on the ring: the token owns ``angle ± half``), radius, x, y (anchor on the
        ring), ux, uy, vx, vy (reading frame), text_angle, font_size, label (display text: word pieces
        joined to their word on the first piece, "" on the pieces it covers, :func:`word_labels`),
        nchar (its length), lw (its width at ``style.font``), prio (label priority, higher first), cs
        (the cell scale of its ring, ``cell_min .. 1``), lx, ly (the label row's centre), hx, hy, hr
        (the hit target: a circle over the cell), gu, gv (the glyph block's left edge and centre in the
        cell frame), bx, by (the glyph block's centre), sx0, sy0 (sparkline baseline start), sw
        (sparkline width), cw (width of the cell's lower row), r_in, r_out (radial extent of the cell,
        for edges). Computed on first use, for the Bokeh figure: ring_label (the per-ring placement at
        the design size: the full token, a shortened form ending in "…", or ""), lstat (2 full, 1
        shortened, 0 hidden), otier, olx, oly (where a shortened or hidden token's full text goes when a
        trace shows it).
    ticks: one row per ring with level, x0, y0, x1, y1: the thick tick where the two sentences meet.
    runs: one row per run of folded tokens (:func:`ring_slots`): level, angle, angle0, angle1, count,
        first_token, last_token, radius.
    radii: [L+1] ring radius per level (level L = 0).
    extent: half-width of the square that holds the drawing.

    The columns live as numpy arrays (:meth:`column`); the DataFrames are built on first access.
    """

    cols: dict
    tick_cols: dict
    run_cols: dict
    radii: np.ndarray
    extent: float
    n_heads: int
    style: RadialStyle = field(default_factory=RadialStyle)
    _frames: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def L(self) -> int:
        return len(self.radii) - 1

    @property
    def nodes(self) -> pd.DataFrame:
        df = self._frames.get("nodes")
        if df is None:
            for name in RING_LABEL_COLUMNS:
                self.column(name)
            df = self._frames["nodes"] = pd.DataFrame(self.cols)
        return df

    @property
    def ticks(self) -> pd.DataFrame:
        df = self._frames.get("ticks")
        if df is None:
            df = self._frames["ticks"] = pd.DataFrame(self.tick_cols, columns=["level", "x0", "y0", "x1", "y1"])
        return df

    @property
    def runs(self) -> pd.DataFrame:
        df = self._frames.get("runs")
        if df is None:
            df = self._frames["runs"] = pd.DataFrame(self.run_cols)
        return df

    def column(self, name: str) -> np.ndarray:
        """Node column ``name`` as a read-only numpy array (no pandas: the views read them many times)."""
        arr = self.cols.get(name)
        if arr is None:
            if name in RING_LABEL_COLUMNS:
                self._ring_labels()
                return self.cols[name]
            raise KeyError(name)
        return arr

    def add_columns(self, columns: dict[str, np.ndarray]) -> None:
        """Add node columns (arrays of ``len(nodes)``)."""
        for k, v in columns.items():
            self.cols[k] = _frozen(np.asarray(v))
        self._frames.pop("nodes", None)

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
        """Per ring, outermost (level 0) first: ``{"level", "tokens", "full", "truncated", "hidden"}`` of
        the per-ring placement at the design size (0-based levels, as in code; the UI shows level + 1)."""
        lv = self.column("level")
        stat = self.column("lstat")
        out = []
        for k in range(self.L + 1):
            s = stat[lv == k]
            out.append({"level": k, "tokens": int(s.size), "full": int((s == 2).sum()),
                        "truncated": int((s == 1).sum()), "hidden": int((s == 0).sum())})
        return out

    def _ring_labels(self) -> None:
        """The per-ring placement at the design size (:func:`place_labels`, in priority order) and the
        overlay tiers of the hidden/shortened labels, as the columns of ``RING_LABEL_COLUMNS``."""
        col, style, L = self.column, self.style, self.L
        level, pos, ang = col("level"), col("pos"), col("angle")
        shown = list(col("token"))
        N = level.size
        local = np.arange(N) - self.level_bounds()[level]
        order_all = np.lexsort((local, -col("prio"), level))
        circ_all = np.lexsort((local, ang, level))
        first = self.level_bounds()
        labels: list[str] = []
        lstat = np.empty(N, dtype=np.uint8)
        otier = np.zeros(N, dtype=np.uint8)
        line = float(style.font) + 3.0
        ang_l = ang.tolist()
        for k in range(L + 1):
            lo, hi = int(first[k]), int(first[k + 1])
            m = hi - lo
            if m == 0:
                continue
            if k == L:
                labels.extend(shown[lo:hi])
                lstat[lo:hi] = 2
                continue
            circ = circ_all[lo:hi] - lo
            rank = np.empty(m, dtype=np.int64)
            rank[circ] = np.arange(m)
            order = (order_all[lo:hi] - lo).tolist()
            lab, stt = place_ring(shown[lo:hi], self.radii[k], order, circ.tolist(), rank.tolist(),
                                   ang_l[lo:hi], style)
            labels.extend(lab)
            lstat[lo:hi] = stt
            otier[lo:hi] = overlay_tiers(shown[lo:hi], lab, stt, self.radii[k], order, ang_l[lo:hi], style, line)
        del pos
        lx, ly, vx, vy = col("lx"), col("ly"), col("vx"), col("vy")
        self.cols["ring_label"] = _frozen(np.asarray(labels, dtype=object))
        self.cols["lstat"] = _frozen(lstat)
        self.cols["otier"] = _frozen(otier)
        self.cols["olx"] = _frozen(lx + otier * line * vx)
        self.cols["oly"] = _frozen(ly + otier * line * vy)
        self._frames.pop("nodes", None)


def _checked(levels, tokens, segments, priority):
    """:func:`radial_layout`'s inputs checked (a clear ValueError otherwise): levels as int arrays, the
    segments, the priority as float [L+1, n] or None."""
    L = len(levels) - 1
    if L < 1:
        raise ValueError("an Attention Graph needs at least one layer (L+1 >= 2 levels)")
    seg = np.asarray(segments, dtype=np.int64)
    if len(seg) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(seg)} segment ids")
    n = len(tokens)
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
    return levels, seg, priority


def _cell_columns(ang: np.ndarray, rad: np.ndarray, cs: np.ndarray, n_heads: int, style: RadialStyle) -> dict:
    """Each node's anchor, reading frame and cell (§4.3.2, Fig. 4) in its reading frame (u along the label,
    v up): the label row on top, the glyph block and the sparkline side by side below it, all centred on
    the token's anchor and scaled by its ring's cell scale ``cs``."""
    gw, _ = style.glyph_block(n_heads)
    rh, ch, rw = style.row_height(n_heads), style.cell_height(n_heads), style.row_width(n_heads)
    u, v, text_angle = reading_frame(ang)
    x, y = rad * np.cos(ang), rad * np.sin(ang)
    v_label = (ch / 2 - style.font / 2 - 0.5) * cs
    v_row = (-ch / 2 + rh / 2) * cs
    gu = -rw / 2 * cs
    su0 = gu + (gw + 2.0) * cs
    v_base = -ch / 2 * cs
    ux, uy, vx, vy = u[:, 0], u[:, 1], v[:, 0], v[:, 1]
    return {
        "x": x, "y": y, "ux": ux, "uy": uy, "vx": vx, "vy": vy, "text_angle": text_angle,
        "lx": x + v_label * vx, "ly": y + v_label * vy,
        "hx": x, "hy": y, "hr": min(ch, rw) / 2 * cs + 1.0,
        "gu": gu, "gv": v_row,
        "bx": x + (gu + gw / 2 * cs) * ux + v_row * vx, "by": y + (gu + gw / 2 * cs) * uy + v_row * vy,
        "sx0": x + su0 * ux + v_base * vx, "sy0": y + su0 * uy + v_base * vy,
        "sw": style.spark_width * cs, "cw": rw * cs,
        "r_in": rad - ch / 2 * cs, "r_out": rad + ch / 2 * cs,
    }


def radial_layout(
    levels: Sequence[np.ndarray],
    tokens: Sequence[str],
    segments: Sequence[int],
    n_heads: int,
    style: RadialStyle | None = None,
    priority: np.ndarray | None = None,
) -> RadialLayout:
    """Lay out the Token Rings (§4.3.1) of an Attention Graph.

    levels: L+1 sorted int arrays of token positions; ``levels[L]`` is the root (``[CLS]``).
    tokens, segments: the input's tokens and their segment ids (length n).
    n_heads: H, the number of head glyphs per token.
    priority: optional float ``[L+1, n]``: the label priority of token p at level k (the views pass its
        importance: token class and influence); higher labels first. Stored as the ``prio`` column.

    Every ring folds the tokens it does not hold into runs (:func:`ring_slots`), and the rings are
    spread by content (:func:`ring_radii`: the arc a ring's labels want); a ring too crowded for full-size
    cells shrinks them (``cs``, down to ``style.cell_min``).
    """
    style = style or RadialStyle()
    levels, seg, priority = _checked(levels, tokens, segments, priority)
    L, n = len(levels) - 1, len(tokens)
    member = np.zeros((L + 1, n), dtype=bool)
    for k, lev in enumerate(levels):
        member[k, lev] = True
    level_col, pos = np.nonzero(member)  # level, then position: the node order
    N = pos.size
    slots = ring_slots(member, seg, style.start_angle, style.run_slot)
    ang = slots.angle

    tok_str = [str(t) for t in tokens]
    shown_tok = [display_token(t) for t in tok_str]
    labels = word_labels(tok_str, pos, level_col)
    nchar = np.fromiter(map(len, labels), dtype=np.int64, count=N)
    lw = nchar * (style.char_width * style.font)
    # each ring's label demand: a slot per token, or its label and the gap between labels
    slot = style.slot_min(n_heads)
    want = np.where(nchar > 0, np.maximum(lw + style.label_pad, slot), slot)
    demand = np.bincount(level_col, weights=want, minlength=L + 1)
    runs_per = np.bincount(slots.runs["level"], minlength=L + 1)[: L + 1] if slots.runs["level"].size \
        else np.zeros(L + 1, dtype=np.int64)
    demand = demand + style.run_slot * slot * runs_per
    ch = style.cell_height(n_heads)
    rw = style.row_width(n_heads)
    root_text = shown_tok[int(levels[L][0])]
    root_radius = max(rw, text_width(root_text, style.font, style.char_width)) / 2.0
    radii = ring_radii(slots.units, n_heads, style, root_radius, demand=demand)
    cs_ring = np.ones(L + 1)
    cs_ring[:L] = np.clip(TWO_PI * radii[:L] / np.maximum(slots.units[:L] * slot, 1e-9), style.cell_min, 1.0)
    cs = cs_ring[level_col]
    rad = radii[level_col]

    prio = np.zeros(N) if priority is None else priority[level_col, pos]
    cols = {
        "node": np.arange(N, dtype=np.int64), "level": level_col, "pos": pos,
        "token": np.asarray(shown_tok, dtype=object)[pos] if N else np.zeros(0, dtype=object),
        "seg": seg[pos], "angle": ang, "half": slots.half, "radius": rad,
        "font_size": np.full(N, float(style.font)), "label": np.asarray(labels, dtype=object),
        "nchar": nchar, "lw": lw, "prio": prio, "cs": cs,
        **_cell_columns(ang, rad, cs, n_heads, style),
    }
    root = level_col == L
    cols["r_in"][root] = 0.0
    cols["r_out"][root] = math.hypot(root_radius, ch / 2)
    # ticks where the two sentences meet, one per ring that holds tokens
    rings = [k for k in range(L) if len(levels[k])]
    meet = slots.meet[rings]
    r0 = radii[rings] - ch / 2 * cs_ring[rings] - 2
    r1 = radii[rings] + ch / 2 * cs_ring[rings] + 2
    tick_cols = {"level": np.asarray(rings, dtype=np.int64), "x0": r0 * np.cos(meet), "y0": r0 * np.sin(meet),
                 "x1": r1 * np.cos(meet), "y1": r1 * np.sin(meet)}
    run_cols = dict(slots.runs)
    run_cols["radius"] = radii[run_cols["level"]]
    # the farthest corner of any cell from the centre, and a line for the outer ring's labels
    reach = np.hypot(rad + ch / 2 * cs, rw * cs / 2)
    extent = float(max(reach.max(initial=0.0), radii.max() + ch / 2) + style.margin + 1.5 * style.font)
    cols = {k: _frozen(np.asarray(a)) for k, a in cols.items()}
    return RadialLayout(cols=cols, tick_cols=tick_cols, run_cols=run_cols, radii=radii, extent=extent,
                        n_heads=n_heads, style=style)


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` itself, made read-only (a cached column must not change under its frame)."""
    a = np.asarray(a)
    a.flags.writeable = False
    return a


def glyph_grid(layout: RadialLayout, n_heads: int, node_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Centres of the head glyphs (§4.3.2): one per (node, head), H glyphs wrapped into 3 rows.

    Head h sits in row ``h // cols`` (top row first) and column ``h % cols`` of the node's glyph block,
    in the node's reading frame (the block is centred on ``gv``), scaled by the ring's cell scale ``cs``.
    Returns columns node, head, x, y, angle (text angle of the node), ux, uy (reading direction, for split
    glyph halves). Rows are ordered by node then head.
    """
    return pd.DataFrame(glyph_grid_arrays(layout, n_heads, node_ids))


def glyph_grid_arrays(layout: RadialLayout, n_heads: int, node_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`glyph_grid` as a dict of numpy columns (no DataFrame: for views that pick rows in bulk)."""
    node = layout.column("node")
    if node_ids is not None:
        node = node[np.asarray(node_ids)]
    cell_node = np.repeat(node, n_heads)
    x, y = glyph_cells(layout, n_heads, cell_node, np.tile(np.arange(n_heads), len(node)))
    return {
        "node": cell_node,
        "head": np.tile(np.arange(n_heads), len(node)),
        "x": x,
        "y": y,
        "angle": np.repeat(layout.column("text_angle")[node], n_heads),
        "ux": np.repeat(layout.column("ux")[node], n_heads),
        "uy": np.repeat(layout.column("uy")[node], n_heads),
    }


def _glyph_offsets(st: RadialStyle, n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Head h's glyph centre in its block (unscaled): ``du[h]`` from the block's left edge along the
    label, ``dv[h]`` from the block's centre line up (H glyphs wrapped into ``glyph_grid_rows(H)`` rows)."""
    rows_n = st.glyph_grid_rows(n_heads)
    cols = st.glyph_cols(n_heads)
    pitch = st.glyph + st.glyph_gap
    gh = rows_n * pitch - st.glyph_gap
    h = np.arange(n_heads)
    du = (h % cols) * pitch + st.glyph / 2  # from the block's left edge
    dv = gh / 2 - (h // cols) * pitch - st.glyph / 2
    return du, dv


def glyph_cells(layout: RadialLayout, n_heads: int, node: np.ndarray,
                head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(x, y)`` of the head glyphs ``(node[i], head[i])`` only: the ``x``, ``y`` of
    :func:`glyph_grid_arrays` for those cells (the same arithmetic), for views that draw a few of them."""
    du, dv = _glyph_offsets(layout.style, n_heads)
    col = layout.column
    cs = col("cs")[node]
    gu = col("gu")[node] + du[head] * cs
    dvv = col("gv")[node] + dv[head] * cs
    x = col("x")[node] + gu * col("ux")[node] + dvv * col("vx")[node]
    y = col("y")[node] + gu * col("uy")[node] + dvv * col("vy")[node]
    return x, y


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
    # p0 = r0 e0, p1 = r1 e1 (e the radial unit vector, t = (-sin, cos) the tangent);
    # c0 = p0 + κ r0 t0 + dr/3 e0, c1 = p1 - κ r1 t1 - dr/3 e1, coordinate by coordinate
    x0, y0, x1, y1 = r0 * cos0, r0 * sin0, r1 * cos1, r1 * sin1
    kr0, kr1, dr3 = kappa * r0, kappa * r1, dr / 3.0
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "cx0": x0 - kr0 * sin0 + dr3 * cos0, "cy0": y0 + kr0 * cos0 + dr3 * sin0,
            "cx1": x1 + kr1 * sin1 - dr3 * cos1, "cy1": y1 - kr1 * cos1 - dr3 * sin1}


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
    baseline beside the glyph block: 1, 2 and 3 heads fill 1/2, 3/4 and all of ``spark_height`` (times the
    ring's cell scale ``cs``), so a
    single head's peak stays visible. With ``per_bar=True`` each ``node_ids[i]`` is itself an array giving the
    node of every bar of ``rel[i]`` (many nodes in one go). Returns node, x0, y0, x1, y1 (one row per bar)."""
    st = layout.style
    ids, xs, hs = [], [], []
    for nid, r, h in zip(node_ids, rel, heights, strict=True):
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
    hv = (h_all + 1.0) / 4.0 * st.spark_height * col("cs")[nid]
    return {"node": nid, "x0": x0, "y0": y0, "x1": x0 + hv * vx, "y1": y0 + hv * vy}


def with_style(style: RadialStyle | None = None, **changes) -> RadialStyle:
    """A copy of ``style`` (or the default) with some sizes changed."""
    return replace(style or RadialStyle(), **changes)
