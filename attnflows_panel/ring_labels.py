"""Token labels of the radial Attention Flow view (§4.3.1): what a label says, how important it is,
and which labels fit at a given size, in pure numpy/Python.

Three jobs, one per part of this module:

- **What a label says** (:func:`word_labels`): WordPiece continuations are joined to their word on the
  word's first piece when the pieces sit next to each other on the ring (``203`` ``##0`` → ``2030`` on the
  first piece, ``""`` on the second), so a label never reads ``203 -0``. A piece whose neighbour is not on
  the ring keeps its own text (``-0``, :func:`display_token`).
- **How important it is** (:func:`token_classes`, used by ``FlowData`` for the ``prio`` column): content
  words before stop words, and both before punctuation, special tokens and lone word pieces; within a
  class, the token's influence I_l (eq. 4).
- **Which labels show at the default zoom** (:func:`select_labels`): the greedy placement that the radial
  component runs in the browser, here for server-side export and for tests. Labels are drawn at a fixed
  screen font (never below 10 px), tangent to their ring, in priority order; each takes the first free
  *tier* (its cell's label row, then one or two lines further out, never into the next ring's cells) and
  is skipped when every tier would touch a label already placed. Collisions are tested on a conservative
  annular sector around each label's rotated box, so chosen labels never overlap.

The older per-ring placement at the design size (:func:`place_labels`: full text, a shortened form with
"…", or nothing) is kept here for the Bokeh figure and the export that still read it.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from attnflows_panel.layout import RadialStyle

__all__ = [
    "display_token",
    "word_labels",
    "token_classes",
    "CONTENT",
    "STOPWORD",
    "PIECE",
    "MINOR",
    "LabelChoice",
    "select_labels",
    "label_boxes_overlap",
    "default_font",
    "place_labels",
    "place_ring",
    "overlay_tiers",
]

TWO_PI = 2.0 * math.pi

#: token classes of :func:`token_classes`, in label priority order (higher first)
CONTENT, STOPWORD, PIECE, MINOR = 3, 2, 1, 0

_STOPWORDS = frozenset((
    "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as",
    "into", "onto", "than", "then", "that", "this", "these", "those", "is", "are", "was", "were", "be", "been",
    "being", "am", "do", "does", "did", "has", "have", "had", "will", "would", "shall", "should", "can", "could",
    "may", "might", "must", "it", "its", "it's", "he", "she", "they", "we", "you", "i", "me", "him", "her", "them",
    "us", "my", "your", "our", "their", "his", "hers", "not", "no", "so", "too", "very", "there", "here", "what",
    "which", "who", "whom", "whose", "when", "where", "why", "how", "all", "any", "each", "both", "few", "more",
    "most", "other", "some", "such", "only", "own", "same", "just", "also", "about", "over", "under", "again",
    "once", "up", "down", "out", "off",
))
_SPECIAL = re.compile(r"^\[[A-Z]+\]$|^<.*>$")


def display_token(token: str) -> str:
    """How a WordPiece token is shown alone: a continuation ``##ing`` reads ``-ing`` (a suffix: recognisable
    as the rest of the word before it, and two characters shorter); other tokens are unchanged."""
    token = str(token)
    if token.startswith("##") and len(token) > 2:
        return "-" + token[2:]
    return token


def token_classes(tokens: Sequence[str]) -> np.ndarray:
    """int8 [n]: the label class of every token: :data:`CONTENT` (a word with a letter or digit, not a stop
    word), :data:`STOPWORD`, :data:`PIECE` (a ``##`` continuation) or :data:`MINOR` (punctuation, special
    tokens such as ``[CLS]``/``[SEP]``)."""
    special, stop = _SPECIAL.match, _STOPWORDS
    out = []
    for t in map(str, tokens):
        if t.startswith("##") and len(t) > 2:
            out.append(PIECE)
        elif not any(map(str.isalnum, t)) or special(t):
            out.append(MINOR)
        else:
            out.append(STOPWORD if t.lower() in stop else CONTENT)
    out = np.array(out, dtype=np.int8)
    return out


def word_labels(tokens: Sequence[str], positions: np.ndarray, level_of: np.ndarray) -> list[str]:
    """Display text of the nodes ``(level_of[i], positions[i])`` (nodes sorted by level, then position).

    Word pieces of one word that are on the same ring at consecutive positions are joined on the first of
    them, never onto a special token such as ``[SEP]`` (``203`` + ``##0`` → ``2030``; ``""`` on the pieces
    it covers); a piece whose predecessor is not on the ring keeps its own text (``-0``). Other tokens
    read as :func:`display_token`."""
    pos = np.asarray(positions, dtype=np.int64)
    lv = np.asarray(level_of, dtype=np.int64)
    m = pos.size
    toks = [str(t) for t in tokens]
    is_piece = [t.startswith("##") and len(t) > 2 for t in toks]
    shown = ["-" + t[2:] if p else t for t, p in zip(toks, is_piece, strict=True)]  # display_token, per token
    labels = [shown[p] for p in pos.tolist()]
    if m == 0 or not any(is_piece):
        return labels
    piece = np.array(is_piece, dtype=bool)
    special = np.fromiter((bool(_SPECIAL.match(t)) for t in toks), dtype=bool, count=len(toks))
    # node i continues node i-1's word when it is a piece, on the same level, at the next position
    cont = np.zeros(m, dtype=bool)
    cont[1:] = piece[pos[1:]] & (lv[1:] == lv[:-1]) & (pos[1:] == pos[:-1] + 1) & ~special[pos[:-1]]
    if not cont.any():
        return labels
    i = 0
    cont_l = cont.tolist()
    pos_l = pos.tolist()
    while i < m:
        j = i + 1
        while j < m and cont_l[j]:
            j += 1
        if j - i > 1:
            head = labels[i]
            labels[i] = head + "".join(toks[pos_l[t]][2:] for t in range(i + 1, j))
            for t in range(i + 1, j):
                labels[t] = ""
        i = j
    return labels


# --------------------------------------------------------------------------------------------------
# which labels show at a given size (the component's placement, in Python)
# --------------------------------------------------------------------------------------------------


def default_font(canvas: float) -> float:
    """The label font (CSS px) for a square canvas of side ``canvas`` px: 10 px up to 760 px, then 11 px
    (never below 10 px, the issue's floor for 1280×800)."""
    return 10.0 if canvas < 760 else 11.0


@dataclass
class LabelChoice:
    """Labels chosen by :func:`select_labels`, in placement order (highest priority first).

    node: node ids; text: what each label says; cx, cy: box centres in canvas px (origin top left, y
    down); w, h: box size (px); rot: rotation of the box in canvas coordinates (radians, clockwise
    positive, as ``ctx.rotate``); tier: 0 the cell's label row, 1.. further out; font: the font (px);
    scale: canvas px per layout unit."""

    node: np.ndarray
    text: list[str]
    cx: np.ndarray
    cy: np.ndarray
    w: np.ndarray
    h: np.ndarray
    rot: np.ndarray
    tier: np.ndarray
    font: float
    scale: float

    def boxes(self) -> list[list[float]]:
        """``[[x, y, w, h, node], ...]``: the axis-aligned bounding boxes (top-left corner) of the labels,
        as the component publishes them (``data-label-boxes``) for tests."""
        c, s = np.abs(np.cos(self.rot)), np.abs(np.sin(self.rot))
        bw = self.w * c + self.h * s
        bh = self.w * s + self.h * c
        return [[float(x), float(y), float(a), float(b), int(n)] for x, y, a, b, n in
                zip(self.cx - bw / 2, self.cy - bh / 2, bw, bh, self.node, strict=True)]

    def corners(self) -> np.ndarray:
        """float [m, 4, 2]: the corners of every (rotated) label box in canvas px."""
        c, s = np.cos(self.rot), np.sin(self.rot)
        hw, hh = self.w / 2, self.h / 2
        out = np.empty((len(self.node), 4, 2))
        for j, (du, dv) in enumerate(((-1, -1), (1, -1), (1, 1), (-1, 1))):
            out[:, j, 0] = self.cx + du * hw * c - dv * hh * s
            out[:, j, 1] = self.cy + du * hw * s + dv * hh * c
        return out


def label_boxes_overlap(corners: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of rotated boxes (``[m, 4, 2]`` corners) whose interiors overlap (separating
    axis test on the boxes' edge normals; boxes that only touch do not count)."""
    m = corners.shape[0]
    if m < 2:
        return []
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    out = []
    for i in range(m):
        cand = np.flatnonzero((lo[i + 1:, 0] < hi[i, 0]) & (hi[i + 1:, 0] > lo[i, 0])
                              & (lo[i + 1:, 1] < hi[i, 1]) & (hi[i + 1:, 1] > lo[i, 1])) + i + 1
        for j in cand.tolist():
            sep = False
            for box in (corners[i], corners[j]):
                for e in range(2):
                    ax = box[e + 1] - box[e]
                    nrm = np.array([-ax[1], ax[0]])
                    pi, pj = corners[i] @ nrm, corners[j] @ nrm
                    tol = 1e-6 * (abs(nrm).sum() + 1)
                    if pi.max() <= pj.min() + tol or pj.max() <= pi.min() + tol:
                        sep = True
                        break
                if sep:
                    break
            if not sep:
                out.append((i, j))
    return out


def _outer_limits(level: np.ndarray, radii: np.ndarray, ch: np.ndarray, L: int, s: float) -> np.ndarray:
    """Per level k: the screen radius of the bottom of level k-1's cells (labels of level k stay inside);
    infinite where there is no ring outside."""
    ring_ch = np.zeros(L + 1)
    has = np.zeros(L + 1, dtype=bool)
    for k in range(L + 1):
        sel = level == k
        if sel.any():
            ring_ch[k], has[k] = ch[sel].max(), True
    limit = np.full(L + 1, np.inf)
    for k in range(1, L + 1):
        if has[k - 1]:
            limit[k] = s * (radii[k - 1] - ring_ch[k - 1] / 2)
    return limit


class SectorIndex:
    """Placed labels as annular sectors ``(r0, r1, centre angle, half-angle)``, bucketed by radius (buckets
    of ``bucket`` px) and sorted by angle within a bucket, so that a candidate is tested only against the
    sectors that can touch it."""

    def __init__(self, bucket: float):
        self.bucket = bucket
        self.buckets: dict[int, tuple[list[float], list[tuple]]] = {}
        self.max_alpha: dict[int, float] = {}

    def free(self, r0: float, r1: float, th: float, al: float) -> bool:
        """True when the sector ``[r0, r1] × [th ± al]`` meets no placed sector."""
        for b in range(int(r0 // self.bucket), int(r1 // self.bucket) + 1):
            entry = self.buckets.get(b)
            if entry is None:
                continue
            angs, recs = entry
            win = al + self.max_alpha[b]
            if win >= math.pi:
                cands = recs
            else:
                cands = []
                for shift in (-TWO_PI, 0.0, TWO_PI):
                    lo_i = bisect.bisect_left(angs, th + shift - win)
                    hi_i = bisect.bisect_right(angs, th + shift + win)
                    cands.extend(recs[lo_i:hi_i])
            for q0, q1, qt, qa in cands:
                if q0 < r1 and r0 < q1 and abs((qt - th + math.pi) % TWO_PI - math.pi) < al + qa:
                    return False
        return True

    def add(self, r0: float, r1: float, th: float, al: float) -> None:
        rec = (r0, r1, th, al)
        for b in range(int(r0 // self.bucket), int(r1 // self.bucket) + 1):
            angs, recs = self.buckets.setdefault(b, ([], []))
            i = bisect.bisect_right(angs, th)
            angs.insert(i, th)
            recs.insert(i, rec)
            self.max_alpha[b] = max(self.max_alpha.get(b, 0.0), al)


def select_labels(layout, canvas: float, *, font: float | None = None, zoom: float = 1.0,
                  boost: Sequence[int] | None = None, char_width: float = 0.6, max_tiers: int = 2,
                  line_gap: float = 2.0) -> LabelChoice:
    """The labels the radial view shows on a square canvas of ``canvas`` px at ``zoom`` (1 = the whole
    drawing fits): greedy by priority, never two overlapping, at a fixed screen font.

    layout: a :class:`~attnflows_panel.layout.RadialLayout` (its nodes' ``level``, ``angle``, ``radius``,
    ``label`` and ``prio`` columns, ``radii``, ``extent``, the cell height of its style).
    font: the label font in px (default :func:`default_font`, never below 10 px).
    boost: node ids placed first whatever their priority (the traced path; the component does the same).

    Each label is as wide as ``len(text) · char_width · font`` (+2 px) and ``1.25 · font`` high, tangent to
    its ring and centred on its token's angle. Candidate places, in order: tier 0, the cell's label row;
    tiers 1..``max_tiers``, one line further out each, while the label stays clear of the next outer ring's
    cells (the outermost ring: inside the canvas). A place is free when the label's annular sector (radii
    ``[ρ - h/2, hypot(ρ + h/2, w/2)]``, half-angle ``atan2(w/2, ρ - h/2)``) meets no placed label's sector:
    a sector holds its box, so sectors apart means boxes apart. Empty labels (word pieces their word's
    label covers) are never placed.
    """
    font = float(default_font(canvas) if font is None else font)
    if font < 10.0:
        raise ValueError(f"the label font must be at least 10 px; got {font}")
    col = layout.column
    level, angle, radius = col("level"), col("angle"), col("radius")
    texts = list(col("label"))
    prio = np.asarray(col("prio"), dtype=np.float64).copy()
    if boost is not None and len(boost):
        prio[np.asarray(boost, dtype=np.int64)] += 1e6
    L = layout.L
    radii = np.asarray(layout.radii, dtype=np.float64)
    ch = layout.style.cell_height(layout.n_heads) * np.asarray(col("cs"), dtype=np.float64)
    s = zoom * (canvas / 2.0) / max(layout.extent, 1e-9)
    half_canvas = canvas / 2.0
    h = 1.25 * font
    line = h + line_gap
    outer_limit = _outer_limits(level, radii, ch, L, s)
    v_label = layout.style.font / 2 + 0.5  # the label row's centre below the cell's outer edge (layout units)
    order = np.lexsort((np.arange(len(texts)), -prio))
    placed = SectorIndex(max(h, 1.0))
    free, add = placed.free, placed.add
    rows: list[tuple] = []  # per placed label: node, text, cx, cy, w, rot, tier
    lv_l, ang_l, rad_l, ch_l = level.tolist(), angle.tolist(), radius.tolist(), ch.tolist()
    for i in order.tolist():
        text = texts[i]
        if not text:
            continue
        w = len(text) * char_width * font + 2.0
        k = lv_l[i]
        th = ang_l[i] % TWO_PI
        if k == L:  # the root: horizontal, in the centre
            r1 = math.hypot(h / 2, w / 2)
            if free(0.0, r1, th, math.pi):
                add(0.0, r1, th, math.pi)
                rows.append((i, text, half_canvas, half_canvas, w, 0.0, 0))
            continue
        rc = s * rad_l[i]
        top = rc + s * ch_l[i] / 2  # the cell's outer edge (screen px)
        limit = outer_limit[k] if k > 0 else (half_canvas if zoom <= 1 else math.inf)
        for t in range(max_tiers + 1):
            rho = max(top - s * v_label, rc) if t == 0 else top + (t - 0.5) * line
            if t > 0 and rho + h / 2 > limit:
                break
            inner = rho - h / 2
            r1 = math.hypot(rho + h / 2, w / 2)
            al = math.atan2(w / 2, inner) if inner > 0 else math.pi
            if k == 0 and zoom <= 1 and r1 > half_canvas:
                break  # the outermost ring: stay on the canvas
            if free(max(inner, 0.0), r1, th, al):
                add(max(inner, 0.0), r1, th, al)
                x, y = rho * math.cos(th), rho * math.sin(th)
                ta = th - math.pi / 2 if math.sin(th) >= -1e-9 else th + math.pi / 2  # upright, tangent
                rows.append((i, text, half_canvas + x, half_canvas - y, w, -ta, t))
                break
    node, text, cx, cy, w, rot, tier = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 7
    f64 = np.float64
    return LabelChoice(node=np.asarray(node, dtype=np.int64), text=text, cx=np.asarray(cx, dtype=f64),
                       cy=np.asarray(cy, dtype=f64), w=np.asarray(w, dtype=f64), h=np.full(len(rows), h),
                       rot=np.asarray(rot, dtype=f64), tier=np.asarray(tier, dtype=np.int64), font=font, scale=s)


# --------------------------------------------------------------------------------------------------
# the per-ring placement at the design size (the Bokeh figure's labels)
# --------------------------------------------------------------------------------------------------


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
    return place_ring(list(texts), radius, order.tolist(), circ.tolist(), rank.tolist(), ang.tolist(), style,
                       min_chars)


def place_ring(texts: list[str], radius: float, order: list[int], circ_l: list[int], rank_l: list[int],
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


def overlay_tiers(texts: list[str], labels: list[str], status: np.ndarray, radius: float, order: list[int],
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
    for a, j, v0, v1 in zip(rows.tolist(), cols.tolist(), o0[rows, cols].tolist(), o1[rows, cols].tolist(),
                             strict=True):
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


