"""Every τ at once: the widest path from the root to each node of the Attention Graph (§4.1).

Pure numpy: like :mod:`attnflows_panel.graph`, this module is the paper in code and imports nothing heavier.

The Attention Graph at threshold τ (§4.1, :class:`attnflows_panel.graph.AttentionGraph`) keeps a node
``(k, t)`` of level ``k`` when some node ``(k + 1, p)`` of the level above attends to ``t`` through an
allowed head ``h`` of layer ``k`` with weight ``w[k, h, p, t] > τ`` (the paper's strict "above τ"); level
``L`` holds only the root, [CLS]. A node is therefore in the graph at τ exactly when a path from the root
reaches it whose every edge weighs more than τ, i.e. when the *widest* (bottleneck) path from the root to
it is wider than τ. Its width, computed level by level from the root down,

    b(root) = ∞,
    b(k, t) = max over p of min(b(k + 1, p), max over allowed h of w[k, h, p, t]),

is the largest τ at which the node is still in the graph: the node is in the graph at τ iff ``b > τ``.
An edge ``(k + 1, p) -> (k, t)`` is in the graph at τ iff ``min(b(k + 1, p), max_h w[k, h, p, t]) > τ``
(and carried by head ``h`` iff ``min(b(k + 1, p), w[k, h, p, t]) > τ``). One pass over the weights thus
gives the graph for every τ (for one set of allowed heads): a change of τ is a comparison, not a rebuild.

Conventions are the package's (HF order, 0-based): ``w[k, h, a, b]`` is the weight that query ``a`` puts on
key ``b`` in layer ``k``'s head ``h``; levels ``0 .. L``, level ``L`` is the root. Any edge weights of that
shape will do (raw attention, the norm-based or attribution weights of :mod:`attnflows_panel.weights`),
as long as they are non-negative. ``b`` keeps the weights' dtype, so ``b > τ`` compares exactly as the
graph compares the weights with τ (a Python float, cast as numpy casts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from attnflows_panel.graph import MAX_WEIGHT, AttentionGraph, check_root, check_weights, edge_weights

__all__ = ["Bottleneck", "bottleneck", "membership", "breakpoints", "tau_profile", "describe_width", "tau_bound",
           "Reach", "reach"]


_UINT_OF = {2: np.uint16, 4: np.uint32, 8: np.uint64}
#: :meth:`Bottleneck.graph` keeps the edges of the lowest τ asked, with their weights, up to this many weights
#: (16 M: 64 MB of float32; a τ above it then selects its edges from them)
KEEP_WEIGHTS = 1 << 24


def _check(weights, heads, root) -> tuple[np.ndarray, np.ndarray | None, int]:
    w = np.asarray(weights)
    if w.ndim != 4 or w.shape[2] != w.shape[3] or 0 in w.shape:
        raise ValueError(
            f"weights must be a non-empty array [L, H, n, n] (layer, head, query, key); got shape {w.shape}"
        )
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"weights must hold floating-point numbers; got dtype {w.dtype}")
    L, H, n, _ = w.shape
    mask = None
    try:
        if heads is not None:
            mask = np.asarray(heads)
            if mask.dtype != bool or mask.shape != (L, H):
                raise ValueError(
                    f"heads must be a boolean mask of shape [L, H] = {(L, H)}; got {mask.dtype} {mask.shape}")
        return w, mask, check_root(root, n)
    except ValueError:
        _check_values(w)  # a bad weight is reported first (whatever else is wrong), as the graph does
        raise


def _check_values(w: np.ndarray) -> np.floating:
    """Raise ValueError for NaN or negative weights; return the largest weight."""
    lo, hi = w.min(), w.max()
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("weights contain NaN; edge weights must be finite non-negative numbers")
    if lo < 0:
        raise ValueError(f"edge weights must be non-negative; got a minimum of {float(lo):.4g}")
    return hi


def _as_bits(w: np.ndarray):
    """``w`` read as unsigned integers of its size, and the bit pattern of +∞ (None where that does not
    apply). Non-negative floats sort like their bit patterns; a sign bit (a negative number, -0.0) or a NaN
    makes the pattern larger than that of +∞."""
    uint = _UINT_OF.get(w.dtype.itemsize)
    if uint is None or w.dtype.kind != "f":
        return None, None
    return w.view(uint), np.asarray(np.inf, dtype=w.dtype).view(uint)[()]


def _strongest_checked(w: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.floating]:
    """``([L, n, n], peak)``: per edge, the largest weight over the allowed heads (0 where no head is
    allowed), and the largest weight of all; ValueError for NaN or negative weights.

    With every head allowed, one pass does both: the largest bit pattern over the heads is the bit
    pattern of the largest weight as long as no pattern lies above that of +∞ (then every weight is a
    number >= +0.0, and the largest pattern of all is the largest weight's). Otherwise (a -0.0, a NaN, a
    negative weight) the weights are checked and reduced as floats."""
    bits, inf_bits = _as_bits(w)
    if bits is not None and (mask is None or mask.all()):
        top = bits.max(axis=1)
        peak = top.max()
        if peak <= inf_bits:
            return top.view(w.dtype), np.asarray(peak).view(w.dtype)[()]
    elif bits is not None and bits.max() <= inf_bits:
        peak = w.max()
        return np.where(mask[:, :, None, None], w, w.dtype.type(0)).max(axis=1), peak
    peak = _check_values(w)
    if mask is None or mask.all():
        return w.max(axis=1), peak
    return np.where(mask[:, :, None, None], w, w.dtype.type(0)).max(axis=1), peak


@dataclass(frozen=True, eq=False)
class Bottleneck:
    """The widest-path widths of every node and edge of the Attention Graph, for one set of allowed heads.

    Attributes
    ----------
    node:
        ``[L + 1, n]``, the weights' dtype: ``node[k, t]`` is the largest τ at which token ``t`` is in level
        ``k`` (``∞`` for the root, ``0`` for a node that is in the graph at no τ ≥ 0). Read-only.
    strongest:
        ``[L, n, n]``: ``strongest[k, a, b]`` = max over allowed heads of ``w[k, h, a, b]``. Read-only.
    weights, heads, root:
        What it was computed from (``heads`` is None when every head is allowed).
    """

    node: np.ndarray
    strongest: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    heads: np.ndarray | None = field(repr=False)
    root: int
    #: the largest of all the weights (the masked heads' included), a scalar of the weights' dtype
    peak: np.floating = field(default=np.float64("nan"), repr=False)

    @property
    def L(self) -> int:
        return self.node.shape[0] - 1

    @property
    def n(self) -> int:
        return self.node.shape[1]

    @cached_property
    def edge(self) -> np.ndarray:
        """``[L, n, n]``: ``edge[k, a, b] = min(node[k + 1, a], strongest[k, a, b])``, the largest τ at which the
        edge ``(k + 1, a) -> (k, b)`` is in the graph (0 when at none). Read-only."""
        out = np.minimum(self.node[1:, :, None], self.strongest)
        out.flags.writeable = False
        return out

    @cached_property
    def head_edge(self) -> np.ndarray:
        """``[L, H, n, n]``: the largest τ at which head ``h`` carries the edge ``(k + 1, a) -> (k, b)``:
        ``min(node[k + 1, a], w[k, h, a, b])`` for an allowed head, 0 for another. Read-only."""
        out = np.minimum(self.node[1:, None, :, None], self.weights)
        if self.heads is not None:
            out[~self.heads] = 0
        out.flags.writeable = False
        return out

    def member(self, tau: float) -> np.ndarray:
        """bool ``[L + 1, n]``: the levels of the Attention Graph at ``tau`` (``node > τ``): equal to
        ``AttentionGraph(weights, tau, heads, root).member``."""
        return membership(self.node, tau)

    def levels(self, tau: float) -> list[np.ndarray]:
        """The graph's levels at ``tau``: ``L + 1`` ascending token arrays, as ``AttentionGraph.levels``."""
        m = self.member(tau)
        return [np.flatnonzero(row) for row in m]

    def adjacency(self, tau: float) -> np.ndarray:
        """bool ``[L, n, n]``: the edges at ``tau`` through any allowed head (``AttentionGraph.adjacency``)."""
        return self.edge > _tau(tau)

    def active(self, tau: float) -> np.ndarray:
        """bool ``[L, H, n, n]``: per-head edges at ``tau`` (``AttentionGraph.active``)."""
        return self.head_edge > _tau(tau)

    def graph(self, tau: float) -> AttentionGraph:
        """The Attention Graph at ``tau`` read off the widths: equal to ``AttentionGraph.build(weights, tau,
        heads, root)`` (every attribute), without a rebuild. Its levels are ``node > τ`` and its edges
        ``edge > τ``; eq. 3's counts and the head glyphs come from the heads of those edges alone
        (:meth:`AttentionGraph.assemble`). The weights must be attention weights in [0, 1] (a graph's
        check); τ in [0, 1). What a τ slider redraws from (issue #27: no graph rebuild)."""
        if not self.peak <= MAX_WEIGHT:  # compared as the build compares; a peak not recorded (NaN) too
            check_weights(self.weights)  # raises, naming the range (the build's message)
        t = AttentionGraph._check_params(tau, None, self.root, self.L, self.weights.shape[1], self.n)[0]
        keys, weights = self._edges_above(t)
        return AttentionGraph.assemble(self.weights, t, self.heads, self.root, self.node > t, keys, weights)

    def _edges_above(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The edges of the graph at τ = ``t`` (``(k * n + a) * n + b``, ascending: ``edge > t``) and every
        head's weight of each ``[H, m]``. The edges of the lowest τ asked so far are kept with their weights
        (up to :data:`KEEP_WEIGHTS` weights): the graph at a higher τ is a subgraph of it, so its edges are
        a selection of those, with no gather from the ``L · H · n²`` weights; a lower τ gathers only the
        edges it adds. (A cache in a frozen object: it changes no result.)"""
        low = self.__dict__.get("_low_edges")
        if low is not None and t >= low[0]:
            _, keys, widths, weights = low
            sel = np.flatnonzero(widths > t)
            return keys[sel], np.take(weights, sel, axis=1)  # C order (weights[:, sel] comes out in F order)
        keys = np.flatnonzero(self.edge > t)
        widths = self.edge.reshape(-1)[keys]
        if low is None:
            weights = edge_weights(self.weights, keys)
        else:  # a lower τ than any so far: only the edges that τ adds are gathered, the kept ones are reused
            added = widths <= low[0]  # the kept edges are the others, in the same (ascending) order
            weights = np.empty((self.weights.shape[1], keys.size), dtype=self.weights.dtype)
            weights[:, ~added] = low[3]
            weights[:, added] = edge_weights(self.weights, keys[added])
        if weights.size <= KEEP_WEIGHTS:
            self.__dict__["_low_edges"] = (t, keys, widths, weights)
        return keys, weights

    def breakpoints(self, edges: bool = False) -> np.ndarray:
        """Ascending float64 values of τ at which the graph changes (see :func:`breakpoints`)."""
        return breakpoints(self.edge if edges else self.node)

    def profile(self, taus) -> np.ndarray:
        """int ``[len(taus), L + 1]``: tokens per level at each τ of ``taus`` (see :func:`tau_profile`)."""
        return tau_profile(self.node, taus)


def bottleneck(weights, heads=None, root: int = 0) -> Bottleneck:
    """One pass from the root down: the width of the widest path to every node (the module docstring).

    Parameters
    ----------
    weights:
        Non-negative edge weights ``[L, H, n, n]``, ``weights[k, h, a, b]`` from query ``a`` to key ``b``
        through layer ``k``'s head ``h`` (attention, or any weights of :mod:`attnflows_panel.weights`).
    heads:
        Optional bool ``[L, H]`` mask of the allowed heads (§4.1, option 2); None allows every head.
    root:
        Position of [CLS], the only node of level ``L``.

    Raises ValueError for a wrong shape or dtype, NaN or negative weights, a bad mask or root.
    """
    w, mask, root = _check(weights, heads, root)
    L, _, n, _ = w.shape
    strong, peak = _strongest_checked(w, mask)
    node = np.zeros((L + 1, n), dtype=w.dtype)
    node[L, root] = np.inf
    for k in range(L - 1, -1, -1):
        above = node[k + 1]
        rows = np.flatnonzero(above)  # a parent of width 0 passes on nothing (widths are >= 0)
        if rows.size:
            node[k] = np.minimum(above[rows, None], strong[k, rows]).max(axis=0)
    strong.flags.writeable = False
    node.flags.writeable = False
    w_view = w.view()
    w_view.flags.writeable = False
    return Bottleneck(node=node, strongest=strong, weights=w_view, heads=mask, root=root, peak=peak)


def _tau(tau) -> float:
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a number; got {tau!r}") from None
    if np.isnan(t):
        raise ValueError("tau must be a number; got NaN")
    return t


def membership(node, tau: float) -> np.ndarray:
    """bool ``[L + 1, n]``: the nodes in the Attention Graph at threshold ``tau``, i.e. ``node > τ`` (strict,
    as the paper's "above τ"), from the widths ``node`` of :func:`bottleneck`. No graph is rebuilt."""
    return np.asarray(node) > _tau(tau)


def breakpoints(widths) -> np.ndarray:
    """The values of τ at which the graph changes: the distinct finite positive widths, ascending (float64).

    With node widths (``Bottleneck.node``), the levels change there: for τ just below a value ``v`` the
    nodes of width ``v`` are in the graph, from τ = ``v`` on they are not. With edge widths
    (``Bottleneck.edge``), the edges change there (a superset: an edge may leave while its nodes stay).
    """
    v = np.asarray(widths, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return np.unique(v)


def tau_profile(node, taus) -> np.ndarray:
    """The τ profile: int64 ``[len(taus), L + 1]``, the number of tokens in each level at each τ.

    ``tau_profile(node, taus)[i, k] == membership(node, taus[i])[k].sum()``, computed from each level's
    sorted widths (a binary search per τ), so a fine grid of τ costs little.
    """
    node = np.asarray(node)
    t = np.asarray(taus, dtype=np.float64).ravel()
    if np.isnan(t).any():
        raise ValueError("taus must be numbers; got NaN")
    srt = np.sort(node, axis=1)
    n = node.shape[1]
    # the count of widths > τ: n minus those <= τ. Widths are compared in their own dtype, as membership does.
    tt = t.astype(node.dtype) if np.issubdtype(node.dtype, np.floating) else t
    out = np.empty((t.size, node.shape[0]), dtype=np.int64)
    for k in range(node.shape[0]):
        out[:, k] = n - np.searchsorted(srt[k], tt, side="right")
    return out


def describe_width(width: float, digits: int = 2) -> str:
    """The hover text for a node or edge of width ``width``: the τ for which it is in the graph.

    ``∞`` (the root) → "in the graph at every τ"; ``0`` → "in the graph at no τ"; otherwise
    "in the graph for τ < 0.23": ``width`` cut (not rounded up) to ``digits`` significant digits, so that the
    bound shown is not above the true one (up to float rounding): at every τ below it the node is in the graph.
    """
    w = float(width)
    if np.isnan(w) or w < 0:
        raise ValueError(f"a width is a number >= 0; got {width!r}")
    if np.isinf(w):
        return "in the graph at every τ"
    if w == 0:
        return "in the graph at no τ"
    return f"in the graph for {tau_bound(w, digits)}"


def tau_bound(width: float, digits: int = 2) -> str:
    """"τ < 0.23" for a finite width > 0: ``width`` cut (not rounded up) to ``digits`` significant digits, so
    that the bound shown is not above the true one (up to float rounding). :func:`describe_width`'s bound."""
    w = float(width)
    if not (np.isfinite(w) and w > 0):
        raise ValueError(f"a τ bound needs a finite width > 0; got {width!r}")
    e = int(np.floor(np.log10(w)))
    q = 10.0 ** (e - int(digits) + 1)
    shown = np.floor(w / q + 1e-9) * q
    return f"τ < {shown:.{max(0, int(digits) - 1 - e)}f}"


@dataclass(frozen=True)
class Reach:
    """How far down the Attention Graph at one τ goes (:func:`reach`).

    ``lowest``: the lowest level with a token (``L``: the root alone; ``0``: the graph reaches the input).
    ``next_below``: the largest τ at which the graph has a token on the level under ``lowest`` (0 when no
    τ ≥ 0 gives it one; ``nan`` when ``lowest`` is 0). ``input``: the largest τ at which the graph reaches
    level 0 (0 when at none).
    """

    lowest: int
    next_below: float
    input: float


def reach(node, tau: float) -> Reach:
    """How deep the graph at ``tau`` reaches, from the widths ``node`` (``Bottleneck.node``): what a view
    says when the graph stops before the input (a long pair at the default τ may be [CLS] alone)."""
    node = np.asarray(node)
    member = membership(node, tau)
    lowest = int(np.flatnonzero(member.any(axis=1))[0])
    below = float(node[lowest - 1].max()) if lowest > 0 else float("nan")
    return Reach(lowest, below, float(node[0].max()))
