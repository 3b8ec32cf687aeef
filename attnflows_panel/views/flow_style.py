"""How the radial Attention Flow view looks: colours and alphas per display state (the state codes are
documented in :mod:`attnflows_panel.views.flow_data`), the head-glyph palettes, edge opacity by density,
which edges are drawn at rest, and the compact encodings the browser receives (float32, int16 tenths of
a pixel, the narrowest unsigned ints, head bit masks). Pure numpy, no Bokeh; re-exported by
:mod:`attnflows_panel.views.flow_data`.
"""

from __future__ import annotations

import math

import numpy as np

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import BOTH, FINE, PRE
from attnflows_panel.graph_arrays import uint_dtype

MODES = ("combined", "pretrained", "finetuned")
MODE_CODE = {"pretrained": PRE, "finetuned": FINE, "combined": BOTH}
MODEL_NAME = {PRE: "pre-trained", FINE: "fine-tuned", BOTH: "both"}

TEXT_COLOR = "#222222"
DIM_COLOR = "#c8c8c8"
NEUTRAL_EDGE = "#7f7f7f"
#: sparkline bars of a single-model view (combined views colour them by model)
SINGLE_SPARK_COLOR = "#555555"
MODEL_COLOR = {PRE: PRETRAINED_COLOR, FINE: FINETUNED_COLOR, BOTH: SHARED_COLOR}

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
    w = np.clip(np.asarray(weight, dtype=np.float64), 0.0, 1.0)
    lower = np.asarray(lower, dtype=np.int64)
    # by lower node (a stable sort of small integers: a radix sort), then the strongest of each group; of
    # equally strong edges the first (the stable order keeps them in edge order)
    small = lower.min() >= 0 and lower.max() < 65536
    order = np.argsort(lower.astype(np.uint16) if small else lower, kind="stable")
    lo_sorted = lower[order]
    first = np.empty(E, dtype=bool)
    first[0] = True
    np.not_equal(lo_sorted[1:], lo_sorted[:-1], out=first[1:])
    group = np.cumsum(first) - 1  # each sorted edge's lower node, numbered 0, 1, ...
    ws = w[order]
    strongest = np.maximum.reduceat(ws, np.flatnonzero(first))
    top = np.flatnonzero(ws == strongest[group])  # the edges as strong as their lower node's strongest
    keep = np.empty(top.size, dtype=bool)
    keep[0] = True
    np.not_equal(group[top[1:]], group[top[:-1]], out=keep[1:])
    best = order[top[keep]]  # the strongest edge into each lower node
    by_layer = best[np.argsort(np.asarray(layer)[best] + (1.0 - w[best]) * 0.5, kind="stable")]
    lay = np.asarray(layer)[by_layer]
    starts = np.empty(by_layer.size, dtype=bool)
    starts[0] = True
    starts[1:] = lay[1:] != lay[:-1]
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
    return "#{:02x}{:02x}{:02x}".format(*c)


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


def f32(a) -> np.ndarray:
    return np.round(np.asarray(a, dtype=np.float64), 2).astype(np.float32)


# Coordinates of the many small items (edges, glyphs, sparkline bars) travel as int16 tenths of a pixel
# (half the bytes of float32; the browser divides by QUANT in a transform). Extents stay far below the
# ±3276 px that int16 allows.
QUANT = 10


def q16(a) -> np.ndarray:
    q = np.round(np.asarray(a, dtype=np.float64) * QUANT)
    if q.size and max(q.max(), -q.min()) > np.iinfo(np.int16).max:  # |q| without an |q| array (NaN: as before)
        raise ValueError("the drawing is too large for int16 coordinates (more than 3276 px from the centre)")
    return q.astype(np.int16)


def as_uint(a, n_max: int) -> np.ndarray:
    """``a`` (values ``0 .. n_max``) in the narrowest unsigned type that holds them (:func:`uint_dtype`)."""
    return np.asarray(a).astype(uint_dtype(n_max))


def pack_heads(heads_bool: np.ndarray) -> np.ndarray:
    """bool [m, H] → uint32 [m, W]: bit ``h % 32`` of word ``h // 32`` is set when head h carries the edge."""
    m, H = heads_bool.shape
    W = max(1, math.ceil(H / 32))
    padded = np.zeros((m, W * 32), dtype=bool)
    padded[:, :H] = heads_bool
    # 8 heads per byte, little-endian bits, 4 bytes per uint32 word (this machine order: little-endian)
    return np.packbits(padded, axis=1, bitorder="little").view("<u4").astype(np.uint32)
