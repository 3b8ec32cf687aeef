"""Geometry of the two views beside the radial Attention Flow view, in pure numpy/pandas: the Sentence
Context view (Fig. 1(b): every level a ring, each input position at the angle that encodes its place in the
sentence, A clockwise and B counter-clockwise as in the flow view) and the Sentence view (Fig. 1(a): both
sentences in reading order, wrapped, with the five influence-rating circles of §4.2 over each token).

Both return their tables as numpy columns (``wedge_cols``, ``token_cols``, ``circle_cols``) and build
the pandas frames (``wedges``, ``tokens``, ``circles``) only when asked. Importable from
:mod:`attnflows_panel.layout` as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from attnflows_panel.ring_labels import display_token

__all__ = ["ContextLayout", "SentenceLayout", "context_layout", "ring_angles", "sentence_layout"]

TWO_PI = 2.0 * math.pi


def ring_angles(segments: Sequence[int], start_angle: float = 180.0) -> tuple[np.ndarray, float]:
    """Angles of the tokens of one ring, in the order given (sorted by position), in equal slots.

    segments: the segment (0 = sentence A side, 1 = sentence B side) of each token of the ring.
    Sentence A tokens go clockwise from ``start_angle`` (degrees), sentence B tokens counter-clockwise,
    each token in an equal slot of ``2π/m`` (m tokens in the ring), the first slot's centre half a slot
    from the start. Returns (angles in radians, the meeting angle where the two sentences' slots meet).
    A ring of one sentence only meets itself at the start angle. (The sentence context view uses it for
    every position; the flow view's rings also fold unreached tokens, :func:`ring_slots`.)
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


# --------------------------------------------------------------------------------------------------
# sentence context view (Fig. 1(b))
# --------------------------------------------------------------------------------------------------


@dataclass
class ContextLayout:
    """Wedges of the Sentence Context view: ring ``L - k`` for level k, a wedge per token position at
    an angle that encodes its position in the original sentence. Columns of ``wedges``: level, pos,
    inner, outer, start, end (radians), xc, yc (wedge centre); ``wedge_cols`` holds them as numpy arrays
    (the frame is built on first access). ``extent``: half-width of the drawing."""

    wedge_cols: dict
    angles: np.ndarray
    radii: np.ndarray
    extent: float
    _frame: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def wedges(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = pd.DataFrame(self.wedge_cols)
        return self._frame


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
    cols = {
        "level": np.repeat(np.arange(L + 1, dtype=np.int64), n),
        "pos": np.tile(np.arange(n, dtype=np.int64), L + 1),
        "inner": np.repeat(inner, n), "outer": np.repeat(outer, n),
        "start": start, "end": end,
        "xc": rm * np.tile(cos_p, L + 1), "yc": rm * np.tile(sin_p, L + 1),
    }
    return ContextLayout(wedge_cols=cols, angles=ang, radii=radii, extent=radius + 8.0)


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

    token_cols: dict
    circle_cols: dict
    width: float
    height: float
    line_height: float
    radius: float
    _frames: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def tokens(self) -> pd.DataFrame:
        if "tokens" not in self._frames:
            cols = ["pos", "token", "seg", "x", "y", "w", "row"]
            self._frames["tokens"] = pd.DataFrame(self.token_cols, columns=cols)
        return self._frames["tokens"]

    @property
    def circles(self) -> pd.DataFrame:
        if "circles" not in self._frames:
            self._frames["circles"] = pd.DataFrame(self.circle_cols, columns=["pos", "slot", "x", "y"])
        return self._frames["circles"]


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
        tdf = {c: np.zeros(0) for c in ("pos", "token", "seg", "x", "y", "w", "row")}
        cdf = {c: np.zeros(0) for c in ("pos", "slot", "x", "y")}
        return SentenceLayout(token_cols=tdf, circle_cols=cdf, width=width, height=lh + 6.0, line_height=lh,
                              radius=circle)
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
    tdf = {"pos": np.arange(n, dtype=np.int64), "token": shown, "seg": seg[:n], "x": cx, "y": y, "w": w_a,
           "row": row_a}
    j = np.arange(5)
    cdf = {
        "pos": np.repeat(np.arange(n, dtype=np.int64), 5), "slot": np.tile(j, n).astype(np.int64),
        "x": (cx[:, None] - circles_w / 2 + (j + 0.5)[None, :] * (2 * circle + 1.0)).ravel(),
        "y": np.repeat(y - font_size - circle - 2.0, 5),
    }
    height = (row + 1) * lh + 6.0
    return SentenceLayout(token_cols=tdf, circle_cols=cdf, width=width, height=height, line_height=lh, radius=circle)
