"""The Attention Graph of a causal (decoder) language model, from the attention rows it needs (§4.1).

Pure numpy: the paper in code, for one sequence and a root anywhere in it.

The semantics are those of :class:`attnflows_panel.graph.AttentionGraph` (the same 0-based layer
convention, levels, edges, counts ``c_l`` of eq. 3, influence ``I_l`` of eq. 4, head mask), but the graph
is built from a sparse set of attention rows instead of the full ``[L, H, n, n]`` array, which a decoder
at prompt lengths cannot hold (24 layers × 14 heads × 4,096² × 4 B ≈ 22 GB).

Two steps:

1. :func:`trace_rows` walks from the root down, level by level: through layer ``k`` it asks a row
   provider for the attention rows ``attn[k, :, a, :]`` of the tokens ``a`` of level ``k + 1`` only, in
   chunks, and keeps the weights strictly above the smallest τ that will be offered (``tau_min``), with
   every head allowed. Level ``k`` at ``tau_min`` is the set of keys kept. The result, :class:`RowEdges`,
   is a sparse list of ``(a, b, h, w)`` per layer.
2. :class:`CausalAttentionGraph` builds the Attention Graph for any ``τ >= tau_min`` and any head mask
   from those edges. Raising τ or masking heads only removes edges, so every level of such a graph is a
   subset of the ``tau_min`` level that step 1 computed rows for: nothing needs computing again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attnflows_panel.graph import Edge
from attnflows_panel.graph_arrays import as_index, uint_dtype

__all__ = ["RowEdges", "CausalAttentionGraph", "trace_rows", "RowProvider"]

RowProvider = Callable[[int, np.ndarray], np.ndarray]
"""``rows(k, positions) -> float [H, m, w]``: the attention rows of layer ``k`` for the query tokens
``positions`` (ascending, ``m`` of them), every head, on the keys ``0 .. w-1`` (``w <= n``: a causal
model may leave out the keys after the last query, whose weights are 0);
``rows[h, i, b] = attn[k, h, positions[i], b]``."""


def _check_tau(tau, what: str = "tau") -> float:
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1); got {tau!r}") from None
    if not 0.0 <= tau < 1.0:  # also rejects NaN
        raise ValueError(f"{what} must lie in [0, 1); got {tau}")
    return tau


@dataclass(frozen=True, eq=False)
class RowEdges:
    """The attention weights above ``tau_min`` on the rows of the ``tau_min`` Attention Graph.

    For layer ``k``, ``a[k]``, ``b[k]``, ``h[k]`` and ``w[k]`` (equal lengths) list every
    ``attn[k, h, a, b] > tau_min`` with ``a`` in level ``k + 1`` of the graph at ``tau_min`` with all heads;
    they are sorted by ``(a, b, h)``. ``a`` and ``b`` are the narrowest unsigned type that holds a position
    (:func:`~attnflows_panel.graph_arrays.uint_dtype`: uint16 up to 65,536 tokens), ``h`` the one that holds a
    head (uint8), ``w`` float32: cast before
    arithmetic on them. ``rows[k]`` are the query tokens whose rows were computed (that
    level), ascending. ``L``, ``H``, ``n``: layers, heads per layer, tokens; ``root``: the root's position.
    """

    L: int
    H: int
    n: int
    root: int
    tau_min: float
    a: tuple[np.ndarray, ...]
    b: tuple[np.ndarray, ...]
    h: tuple[np.ndarray, ...]
    w: tuple[np.ndarray, ...]
    rows: tuple[np.ndarray, ...]

    @property
    def num_rows(self) -> int:
        """How many attention rows (one query token, every head, one layer) were computed."""
        return int(sum(r.size for r in self.rows))

    @property
    def num_weights(self) -> int:
        """How many weights above ``tau_min`` are kept."""
        return int(sum(x.size for x in self.w))


def _check_block(block: np.ndarray, k: int, H: int, m: int, n: int) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim != 3 or block.shape[:2] != (H, m) or not 0 < block.shape[2] <= n:
        raise ValueError(f"the row provider returned shape {block.shape} for layer {k}; expected {(H, m, n)} "
                         f"(or fewer keys)")
    if not np.issubdtype(block.dtype, np.floating):
        raise ValueError(f"the row provider returned dtype {block.dtype}; expected floating-point weights")
    return block


def trace_rows(rows: RowProvider, L: int, H: int, n: int, root: int, tau_min: float,
               chunk: int = 256) -> RowEdges:
    """Walk the Attention Graph down from ``root`` at ``tau_min``, asking ``rows`` only for the rows needed.

    Level ``L`` is ``{root}``; through layer ``k = L-1 .. 0`` the rows of level ``k + 1`` are fetched
    ``chunk`` tokens at a time, and level ``k`` is every key some head weights strictly above ``tau_min``.
    A causal model attends only to earlier tokens, so every level lies at or before the root.
    """
    L, H, n = (as_index(v, name) for v, name in ((L, "L"), (H, "H"), (n, "n")))
    if L < 1 or H < 1 or n < 1:
        raise ValueError(f"need at least one layer, head and token; got L={L}, H={H}, n={n}")
    root = as_index(root, "root")
    if not 0 <= root < n:
        raise ValueError(f"root {root} is out of range for n = {n} tokens")
    tau_min = _check_tau(tau_min, "tau_min")
    chunk = as_index(chunk, "chunk")
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of rows; got {chunk}")
    out_a, out_b, out_h, out_w, out_rows = ([None] * L for _ in range(5))
    # compact: the first model's edges are held while the second model runs (9 bytes an edge up to 65,536
    # tokens and 256 heads, instead of 14)
    pos_t, head_t = uint_dtype(n - 1), uint_dtype(H - 1)
    level = np.array([root], dtype=np.int64)
    for k in range(L - 1, -1, -1):
        parts = [(np.empty(0, pos_t), np.empty(0, pos_t), np.empty(0, head_t), np.empty(0, np.float32))]
        for start in range(0, level.size, chunk):
            pos = level[start:start + chunk]  # ascending, as every level is
            block = _check_block(rows(k, pos), k, H, pos.size, n)
            width = block.shape[2]
            # [m, width, H]: the flat order is then (a, b, h), the order RowEdges keeps, since the chunks
            # follow ascending positions: no sort over the layer's edges, and no copy of them but the compact one
            by_row = np.ascontiguousarray(block.transpose(1, 2, 0))
            del block
            flat = np.flatnonzero(by_row > tau_min)  # one flat pass: much faster than a 3-d nonzero
            w = by_row.reshape(-1)[flat].astype(np.float32, copy=False)
            del by_row
            ii, rest = np.divmod(flat, width * H)
            bb, hh = np.divmod(rest, H)
            parts.append((pos[ii].astype(pos_t), bb.astype(pos_t), hh.astype(head_t), w))
            del flat, ii, rest, bb, hh, w
        out_a[k], out_b[k], out_h[k], out_w[k] = (np.concatenate([p[i] for p in parts]) for i in range(4))
        del parts
        out_rows[k] = level
        level = np.unique(out_b[k]).astype(np.int64)
    return RowEdges(L, H, n, root, tau_min, tuple(out_a), tuple(out_b), tuple(out_h), tuple(out_w),
                    tuple(out_rows))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class CausalAttentionGraph:
    """The Attention Graph (§4.1) from a root, built from :class:`RowEdges` at any ``τ >= tau_min``.

    Attributes mirror :class:`~attnflows_panel.graph.AttentionGraph` for the same attentions, τ, head
    mask and root: ``L``, ``H``, ``n``, ``tau``, ``root``, ``heads`` (bool ``[L, H]``), ``levels``
    (``L + 1`` ascending int arrays, ``levels[L] == [root]``), ``member`` (bool ``[L + 1, n]``), ``counts``
    (int ``[L, n]``, eq. 3: ``counts[k, w]`` = number of (token ``a`` of level ``k + 1``, allowed head ``h``)
    with ``attn[k, h, a, w] > τ``) and ``out_degree`` (int32 ``[L, n, H]``). The edges are kept sparse:
    ``edge_arrays(k)`` gives ``(a, b, h, w)`` for layer ``k``.
    """

    def __init__(self, edges: RowEdges, tau: float | None = None, heads=None):
        tau = edges.tau_min if tau is None else _check_tau(tau)
        if tau < edges.tau_min:
            raise ValueError(
                f"tau {tau} is below the smallest τ the rows were kept for ({edges.tau_min}); "
                "trace the rows again with a smaller tau_min"
            )
        L, H, n = edges.L, edges.H, edges.n
        if heads is None:
            mask = np.ones((L, H), dtype=bool)
        else:
            mask = np.asarray(heads)
            if mask.dtype != bool or mask.shape != (L, H):
                raise ValueError(f"heads must be a boolean mask of shape [L, H] = {(L, H)}; got "
                                 f"{mask.dtype} {mask.shape}")
            mask = mask.copy()
        member = np.zeros((L + 1, n), dtype=bool)
        member[L, edges.root] = True
        counts = np.zeros((L, n), dtype=np.int64)
        out_deg = np.zeros((L, n, H), dtype=np.int32)
        sel: list[np.ndarray] = [np.empty(0, dtype=np.intp)] * L
        for k in range(L - 1, -1, -1):
            a, b, h = edges.a[k], edges.b[k], edges.h[k]
            keep = np.flatnonzero(member[k + 1][a] & (edges.w[k] > tau) & mask[k][h])
            sel[k] = keep
            counts[k] = np.bincount(b[keep], minlength=n)  # eq. 3
            np.add.at(out_deg[k], (a[keep], h[keep]), 1)
            member[k, b[keep]] = True
        self.source = edges
        self.L, self.H, self.n = L, H, n
        self.tau = tau
        self.root = edges.root
        self.heads = _readonly(mask)
        self.member = _readonly(member)
        self.levels = [_readonly(np.flatnonzero(member[k])) for k in range(L + 1)]
        self.counts = _readonly(counts)
        self.out_degree = _readonly(out_deg)
        self._sel = sel

    def __repr__(self) -> str:
        sizes = [len(lv) for lv in self.levels]
        return (f"CausalAttentionGraph(L={self.L}, H={self.H}, n={self.n}, tau={self.tau}, root={self.root}, "
                f"level sizes={sizes})")

    def _check_layer(self, k) -> int:
        k = as_index(k, "layer")
        if not 0 <= k < self.L:
            raise ValueError(f"layer {k} is out of range: layers are 0 .. {self.L - 1}")
        return k

    def edge_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The graph's edges through layer ``k``, one entry per carrying head: ``(a, b, h, w)`` sorted by
        ``(a, b, h)``, with ``w = attn[k, h, a, b] > τ`` and ``a`` in level ``k + 1``, ``b`` in level ``k``."""
        k = self._check_layer(k)
        s, keep = self.source, self._sel[k]
        return s.a[k][keep], s.b[k][keep], s.h[k][keep], s.w[k][keep]

    def edges(self, k: int) -> list[Edge]:
        """The edges through layer ``k`` as :class:`~attnflows_panel.graph.Edge`, ordered by ``(a, b)``, each
        with its carrying heads ascending (the same list as ``AttentionGraph.edges(k)``)."""
        a, b, h, _ = self.edge_arrays(k)
        if a.size == 0:
            return []
        starts = np.flatnonzero(np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
        heads = np.split(h.astype(int), starts[1:])
        return [Edge(k, int(a[i]), int(b[i]), tuple(hs.tolist())) for i, hs in zip(starts, heads, strict=True)]

    def edge_count(self) -> int:
        """Number of distinct ``(layer, a, b)`` edges."""
        total = 0
        for k in range(self.L):
            a, b, _, _ = self.edge_arrays(k)
            if a.size:
                total += int(1 + np.count_nonzero((a[1:] != a[:-1]) | (b[1:] != b[:-1])))
        return total

    def glyphs(self, k: int) -> np.ndarray:
        """Head glyph data of level ``k`` (1 .. L), int32 ``[n, H]``: ``out_degree[k - 1]`` (§4.3.2)."""
        k = as_index(k, "level")
        if not 1 <= k <= self.L:
            raise ValueError(f"level {k} has no head glyphs: glyph levels are 1 .. {self.L}")
        return self.out_degree[k - 1]

    def influence(self, alpha: float = 0.5) -> np.ndarray:
        """Influence, eq. 4: float ``[L, n]``, ``I[k, w] = 1/(L-k) · Σ_{k'=k}^{L-1} α^{L-1-k'} · counts[k', w]``
        (the paper's ``I_l`` with ``l = k + 1``); here it is the influence on the root's next-token
        prediction rather than on the classification."""
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}") from None
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha is the decay of eq. 4 and must lie in [0, 1]; got {alpha}")
        L = self.L
        ks = np.arange(L)
        weighted = (alpha ** (L - 1 - ks))[:, None] * self.counts
        suffix = np.cumsum(weighted[::-1], axis=0)[::-1]
        return suffix / (L - ks)[:, None]

    def _pairs(self, k: int, head) -> tuple[np.ndarray, np.ndarray]:
        """Distinct edges ``(a, b)`` through layer ``k``; with ``head = (k, h)`` only those head ``h`` carries."""
        a, b, h, _ = self.edge_arrays(k)
        if head is not None and head[0] == k:
            keep = h == head[1]
            a, b = a[keep], b[keep]
        if a.size:
            first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]  # sorted by (a, b): drop repeats
            a, b = a[first], b[first]
        return a, b

    def trace_masks(self, level: int, tokens, head=None) -> tuple[np.ndarray, np.ndarray]:
        """The dependencies of ``tokens`` selected at ``level`` (§4.4.1), as ``AttentionGraph.trace`` gives
        them: bool ``[L + 1, n]`` masks of the ancestors (the nodes below that the selection depends on) and
        of the descendants (the nodes above that depend on it). Several tokens are a brush: their
        dependencies are intersected at the adjacent level, then the traversal goes on from there. ``head =
        (layer, h)`` lets only head ``h`` connect that layer."""
        level = as_index(level, "level")
        if not 0 <= level <= self.L:
            raise ValueError(f"level {level} is out of range: levels are 0 .. {self.L}")
        sel = np.unique(np.atleast_1d(np.asarray(tokens, dtype=np.int64)))
        if sel.size == 0 or not self.member[level, sel].all():
            raise ValueError(f"select tokens of level {level} of the Attention Graph "
                             f"(it holds {self.levels[level].tolist()}); got {np.asarray(tokens).tolist()}")
        if head is not None:
            head = (self._check_layer(head[0]), as_index(head[1], "head"))
        down = np.zeros((self.L + 1, self.n), dtype=bool)
        up = np.zeros((self.L + 1, self.n), dtype=bool)
        if level > 0:  # ancestors: keys every selected token attends to, then anything reached from them
            a, b = self._pairs(level - 1, head)
            on = np.isin(a, sel)
            down[level - 1] = np.bincount(b[on], minlength=self.n) == sel.size
            for k in range(level - 2, -1, -1):
                a, b = self._pairs(k, head)
                down[k, b[down[k + 1][a]]] = True
        if level < self.L:  # descendants: queries attending to every selected token, then upwards
            a, b = self._pairs(level, head)
            on = np.isin(b, sel)
            up[level + 1] = np.bincount(a[on], minlength=self.n) == sel.size
            for k in range(level + 1, self.L):
                a, b = self._pairs(k, head)
                up[k + 1, a[up[k][b]]] = True
        return down, up

    @property
    def num_nodes(self) -> int:
        return int(self.member.sum())
