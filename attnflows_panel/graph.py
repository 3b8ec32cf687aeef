"""The Attention Graph (§4.1), classification influence (§4.2) and attention traversals (§4.4).

Pure numpy: this module is the paper in code, and imports nothing heavier.

Conventions (the same everywhere in the package)
------------------------------------------------
HF order, 0-based. ``attn[k, h, a, b]`` is the weight that query token ``a`` puts on key token ``b`` in
layer ``k``'s head ``h``, for ``k = 0 .. L-1``. The graph has ``L + 1`` *levels*:

- level ``L`` holds only the root ([CLS], position ``root``), the output of the last layer;
- level ``k`` (``k = L-1 .. 0``) holds every token ``b`` with ``attn[k, h, a, b] > τ`` for some allowed
  head ``h`` and some ``a`` in level ``k + 1``.

An *edge* through layer ``k`` joins node ``(k + 1, a)`` to node ``(k, b)``; it is carried by every allowed
head ``h`` with ``attn[k, h, a, b] > τ``. A *node* is a ``(level, token_position)`` pair.

The paper numbers layers from 1 (its layer ``l`` holds the embeddings that enter layer ``l``'s
attention). Its ``G_j^l`` is our layer ``k = l - 1``, its ``c_l`` is our ``counts[k]`` and its ``I_l`` is our
``influence()[k]``; the equations below are rewritten in the 0-based convention.

Dependencies (§4.1): a node depends on the nodes below it that it reaches by edges (its *ancestors*),
and the nodes above it that reach it are the ones that depend on it (its *descendants*).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from itertools import repeat

import numpy as np

from attnflows_panel.graph_arrays import (
    MAX_WEIGHT,
    as_index,
    carrying_heads,
    check_root,
    check_weights,
    count_true,
    edge_heads,
    edge_weights,
    fast_check,
    head_sum,
    row_counts,
    weights_ok,
)
from attnflows_panel.reach import Reachability, or_and
from attnflows_panel.traces import Edge, Node, PathResult, Trace, mask_to_nodes, new_edge, readonly

__all__ = ["AttentionGraph", "Edge", "Trace", "PathResult", "Node", "MAX_WEIGHT", "check_root", "check_weights",
           "carrying_heads", "edge_heads", "edge_weights", "or_and"]


# ceil() of eq. 4 tolerates this much floating-point noise (so 2.0000000000000004 rates 2, not 3).
_CEIL_EPS = 1e-9


class AttentionGraph(Reachability):
    """The Attention Graph of one input (§4.1, Fig. 3).

    Build it with :meth:`build`. The graph is immutable; every array attribute is read-only.

    Attributes
    ----------
    L, H, n:
        Layers, heads per layer, tokens.
    tau:
        The threshold τ: an attention weight is an edge when it is *strictly* greater than τ.
    root:
        Position of the root token ([CLS]), the only node of level ``L``.
    heads:
        bool ``[L, H]``: the allowed heads (§4.1, option 2). All True when no mask was given.
    levels:
        ``L + 1`` ascending int arrays; ``levels[L] == [root]``.
    member:
        bool ``[L + 1, n]``; ``member[k, w] == (w in levels[k])``.
    active:
        bool ``[L, H, n, n]``: ``active[k, h, a, b]`` iff ``a`` is in ``levels[k + 1]``, head ``h`` is
        allowed and ``attn[k, h, a, b] > τ`` -- the per-head bipartite graphs ``G_j^l`` restricted to the
        Attention Graph.
    counts:
        int ``[L, n]``, eq. 3: ``counts[k, w] = Σ_{a ∈ levels[k+1]} #{allowed h : attn[k, h, a, w] > τ}``,
        the paper's ``c_{k+1}(w)``.
    attn:
        The attention array the graph was built from: a read-only view, not a copy.
    """

    def __init__(self, attn, tau: float = 0.3, heads=None, root: int = 0):
        attn = np.asarray(attn)
        if attn.ndim != 4:
            raise ValueError(
                f"attn must be a 4-d array [L, H, n, n] (layer, head, query, key); got shape {attn.shape}"
            )
        L, H, n, n2 = attn.shape
        if n != n2:
            raise ValueError(
                f"attn must be square in its last two axes [L, H, n, n]; got shape {attn.shape}"
            )
        if L == 0 or H == 0 or n == 0:
            raise ValueError(f"attn must have at least one layer, head and token; got shape {attn.shape}")
        if not np.issubdtype(attn.dtype, np.floating):
            raise ValueError(f"attn must hold floating-point attention weights; got dtype {attn.dtype}")
        try:
            tau, heads_mask, root = self._check_params(tau, heads, root, L, H, n)
        except ValueError:
            check_weights(attn)  # a bad weight is reported first (whatever else is wrong)
            raise

        member = np.zeros((L + 1, n), dtype=bool)
        member[L, root] = True
        adj = np.zeros((L, n, n), dtype=bool)  # edge (k+1, a) -> (k, b) through some allowed head
        buf = None  # one layer's per-head edges [H, n, n], reused (``active`` is built on first use)
        out_deg = np.zeros((L, n, H), dtype=np.int32)  # glyph data: out_deg[k, a, h]
        counts = np.zeros((L, n), dtype=np.int64)
        rows = np.array([root])
        levels = [rows] * (L + 1)
        all_heads = bool(heads_mask.all())
        # eq. 3 summed over a level's rows: in 16 bits while that cannot overflow (n · H heads at most)
        acc = np.uint16 if n * H < 65536 else np.int64
        fast = fast_check(attn.dtype) if attn.flags.c_contiguous else None
        for k in range(L - 1, -1, -1):
            # Every weight is checked, one layer at a time: the layer is then still in cache for the
            # comparison with τ (checking the whole array first read it from memory three times).
            layer = attn[k]
            if (fast is None or layer.view(fast[0]).max() > fast[1]) and not weights_ok(layer):
                check_weights(attn)  # raises, naming the whole array's range
            # Only the rows of the tokens in level k + 1 can start an edge through layer k.
            if 4 * rows.size >= n:  # a large level: compare in place, then clear the other rows
                buf = sub = np.greater(layer, tau, out=buf)  # [H, n, n]
                off = ~member[k + 1]
                if off.any():
                    sub[:, off, :] = False
                if not all_heads:
                    sub &= heads_mask[k][:, None, None]
                nh = head_sum(sub)  # [n, n], zero outside the level's rows
                np.greater(nh, 0, out=adj[k])
                out_deg[k] = row_counts(sub).T
            else:  # a small level: gather its rows
                sub = layer[:, rows, :] > tau  # [H, m, n]
                if not all_heads:
                    sub &= heads_mask[k][:, None, None]
                nh = head_sum(sub)  # [m, n]
                adj[k, rows] = nh > 0
                out_deg[k, rows] = row_counts(sub).T
            c = np.add.reduce(nh, axis=0, dtype=acc)  # eq. 3
            counts[k] = c
            member[k] = c > 0  # some head of some row of level k + 1 attends to the token
            rows = levels[k] = np.flatnonzero(member[k])

        self._set_parts(attn, tau, heads_mask, root, member, levels, counts, adj, out_deg)

    def _set_parts(self, attn, tau, heads_mask, root, member, levels, counts, adj, out_deg) -> None:
        L, H, n, _ = attn.shape
        self.attn = readonly(attn.view())  # the caller's array, seen read-only (not copied)
        self.L, self.H, self.n = L, H, n
        self.tau = tau
        self.root = root
        self.heads = readonly(heads_mask)
        self.member = readonly(member)
        self.levels = [readonly(lv) for lv in levels]  # levels[L] is [root]
        self.counts = readonly(counts)
        self._adj = readonly(adj)  # [L, n, n]: edge (k+1, a) -> (k, b) through any allowed head
        self._out_deg = readonly(out_deg)

    @classmethod
    def assemble(cls, attn, tau: float, heads, root: int, member: np.ndarray, edge_keys: np.ndarray,
                 weights: np.ndarray | None = None) -> AttentionGraph:
        """The graph at ``tau`` from its nodes and edges found elsewhere, equal to ``build(attn, tau, heads,
        root)`` when they are right: ``member`` bool ``[L + 1, n]`` as :attr:`member` and ``edge_keys`` as
        :attr:`edge_keys` (every edge ``(k + 1, a) -> (k, b)`` as ``(k * n + a) * n + b``, ascending);
        :meth:`attnflows_panel.bottleneck.Bottleneck.graph` reads them off the widest-path widths, so a
        change of τ needs no rebuild. ``weights``: optional ``[H, m]``, every head's weight of each edge
        (:func:`edge_weights`), when the caller has them. The per-head data (eq. 3's counts, the glyphs'
        out-degrees) come from the heads of the edges alone (:attr:`edge_table`), not from all
        ``L · H · n²`` weights. ``attn`` is not checked here: the caller has checked its weights (τ, the
        mask, the root and the shapes are checked)."""
        attn = np.asarray(attn)
        L, H, n, _ = attn.shape
        tau, heads_mask, root = cls._check_params(tau, heads, root, L, H, n)
        member, keys = np.asarray(member, dtype=bool), np.asarray(edge_keys, dtype=np.intp)
        if member.shape != (L + 1, n) or keys.ndim != 1 or (keys.size and not 0 <= keys[0] <= keys[-1] < L * n * n):
            raise ValueError(f"member must be [L + 1, n] and edge_keys ascending in [0, L·n²) for attn {attn.shape}")
        weights = edge_weights(attn, keys) if weights is None else np.asarray(weights)
        if weights.shape != (H, keys.size):
            raise ValueError(f"weights must be [H, m] = {(H, keys.size)}; got {weights.shape}")
        carrying = carrying_heads(weights, tau, heads_mask, keys // (n * n))
        adjacency = np.zeros(L * n * n, dtype=bool)
        adjacency[keys] = True
        adjacency = adjacency.reshape(L, n, n)
        ka, b = np.divmod(keys, n)  # ka = k * n + a: the edge's upper node, level k + 1
        nh = head_sum(carrying[:, None, :])[0]  # carrying heads per edge
        # eq. 3: counts[k, b] = Σ over the edges (k + 1, a) -> (k, b) of their carrying heads
        counts = np.bincount(ka - ka % n + b, weights=nh, minlength=L * n).astype(np.int64).reshape(L, n)
        out_deg = np.zeros((L, n, H), dtype=np.int32)  # per upper node and head: its edges through that head
        if keys.size:
            starts = np.flatnonzero(np.concatenate(([True], ka[1:] != ka[:-1])))
            out_deg.reshape(L * n, H)[ka[starts]] = np.add.reduceat(carrying, starts, axis=1, dtype=np.int32).T
        levels = [np.flatnonzero(row) for row in member[:L]] + [np.array([root])]
        g = cls.__new__(cls)
        g._set_parts(attn, tau, heads_mask, root, member, levels, counts, adjacency, out_deg)
        g.__dict__["edge_keys"] = keys = readonly(keys)
        g.__dict__["edge_table"] = (keys, readonly(carrying), readonly(weights))
        return g

    @cached_property
    def active(self) -> np.ndarray:
        """bool ``[L, H, n, n]`` (see the class docstring), computed on first use from ``attn``, τ, the
        head mask and the levels, the way the build computed it layer by layer (the build keeps only one
        layer of it at a time: most views never read the per-head edges of every layer). Read-only."""
        L, H, n = self.L, self.H, self.n
        active = np.zeros((L, H, n, n), dtype=bool)
        for k in range(L):
            rows = self.levels[k + 1]
            if rows.size == 0:
                continue
            sub = self.attn[k][:, rows, :] > self.tau
            if not self.heads[k].all():
                sub &= self.heads[k][:, None, None]
            active[k][:, rows, :] = sub
        return readonly(active)

    @cached_property
    def edge_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every edge with its heads: ``(keys, carrying, weights)``. ``keys`` int ``[m]``: the edges
        ``(k + 1, a) -> (k, b)`` as ``(k * n + a) * n + b``, ascending (``np.flatnonzero(adjacency)``);
        ``carrying`` bool ``[H, m]``: ``active[k, :, a, b]``; ``weights`` ``[H, m]``: ``attn[k, :, a, b]``
        for every head, carrying or not. Read from the edges alone (the per-head edges of the whole
        graph are never built). Read-only."""
        carrying, weights = edge_heads(self.attn, self.tau, self.heads, self.edge_keys)
        return self.edge_keys, readonly(carrying), readonly(weights)

    @cached_property
    def edge_keys(self) -> np.ndarray:
        """int ``[m]``: every edge ``(k + 1, a) -> (k, b)`` as ``(k * n + a) * n + b``, ascending
        (``np.flatnonzero(adjacency)``). Read-only."""
        return readonly(np.flatnonzero(self._adj))

    @property
    def out_degree(self) -> np.ndarray:
        """int32 ``[L, n, H]``: ``out_degree[k, a, h]`` = number of tokens of level ``k`` that token ``a``
        of level ``k + 1`` attends to above τ through head ``h`` of layer ``k``; ``glyphs(k + 1)`` is
        ``out_degree[k]`` (the head glyphs, §4.3.2). Read-only."""
        return self._out_deg

    @property
    def levels_flat(self) -> np.ndarray:
        """Every node as a flat index ``level * n + token``, level by level then by token (the order of
        :meth:`nodes`, :meth:`ancestor_matrix` and :meth:`ancestor_sets`)."""
        return self._node_order[1]

    @cached_property
    def head_counts(self) -> np.ndarray:
        """int32 ``[L, n, n]``: ``head_counts[k, a, b]`` = number of allowed heads carrying the edge
        ``(k + 1, a) -> (k, b)``, i.e. ``active[k, :, a, b].sum()`` (0 where there is no edge). Read-only;
        computed on first use."""
        return readonly(count_true(self.active, 1))

    @property
    def adjacency(self) -> np.ndarray:
        """bool ``[L, n, n]``: ``adjacency[k, a, b]`` iff the edge ``(k + 1, a) -> (k, b)`` exists through
        some allowed head, i.e. ``active[k, :, a, b].any()``. Read-only."""
        return self._adj

    @staticmethod
    def _check_params(tau, heads, root, L: int, H: int, n: int) -> tuple[float, np.ndarray, int]:
        try:
            tau = float(tau)
        except (TypeError, ValueError):
            raise ValueError(f"tau must be a number in [0, 1); got {tau!r}") from None
        if not 0.0 <= tau < 1.0:  # also rejects NaN
            raise ValueError(f"tau must lie in [0, 1); got {tau}")
        if heads is None:
            heads_mask = np.ones((L, H), dtype=bool)
        else:
            heads_mask = np.asarray(heads)
            if heads_mask.dtype != bool:
                raise ValueError(f"heads must be a boolean mask [L, H]; got dtype {heads_mask.dtype}")
            if heads_mask.shape != (L, H):
                raise ValueError(
                    f"heads mask must have shape [L, H] = {(L, H)} to match attn; got {heads_mask.shape}"
                )
            heads_mask = heads_mask.copy()
        return tau, heads_mask, check_root(root, n)

    @classmethod
    def build(cls, attn, tau: float = 0.3, heads=None, root: int = 0) -> AttentionGraph:
        """Build the Attention Graph from attentions ``attn`` float ``[L, H, n, n]`` (§4.1).

        Starting from the root at level ``L``, level ``k`` gathers the tokens that some token of level
        ``k + 1`` attends to with weight > ``tau`` through an allowed head of layer ``k``.

        Parameters
        ----------
        attn:
            Softmax attention weights, ``attn[k, h, a, b]`` = weight of query ``a`` on key ``b``.
        tau:
            The threshold τ in [0, 1).
        heads:
            Optional bool mask ``[L, H]`` of allowed heads; None allows every head.
        root:
            Position of [CLS].

        Raises
        ------
        ValueError
            For a wrong shape, non-finite or out-of-range weights, τ outside [0, 1), a heads mask of the
            wrong shape or dtype, or a root out of range.
        """
        return cls(attn, tau=tau, heads=heads, root=root)

    def __repr__(self) -> str:
        sizes = [len(lv) for lv in self.levels]
        return (
            f"AttentionGraph(L={self.L}, H={self.H}, n={self.n}, tau={self.tau}, root={self.root}, "
            f"level sizes={sizes})"
        )

    # ------------------------------------------------------------------ checks

    def _check_layer(self, k, what: str = "layer") -> int:
        k = self._as_int(k, what)
        if not 0 <= k < self.L:
            raise ValueError(f"{what} {k} is out of range: layers are 0 .. {self.L - 1}")
        return k

    def _check_level(self, level) -> int:
        level = self._as_int(level, "level")
        if not 0 <= level <= self.L:
            raise ValueError(f"level {level} is out of range: levels are 0 .. {self.L}")
        return level

    _as_int = staticmethod(as_index)

    def _check_tokens(self, level: int, tokens, *, require_member: bool = True) -> np.ndarray:
        if isinstance(tokens, (int, np.integer)) and not isinstance(tokens, (bool, np.bool_)):
            toks = [tokens]
        elif isinstance(tokens, Iterable) and not isinstance(tokens, (str, bytes)):
            toks = list(np.asarray(tokens).ravel().tolist()) if isinstance(tokens, np.ndarray) else list(tokens)
        else:
            raise ValueError(f"tokens must be a token position or an iterable of positions; got {tokens!r}")
        if not toks:
            raise ValueError(f"select at least one token at level {level}")
        out = sorted({self._as_int(t, "token") for t in toks})
        for t in out:
            if not 0 <= t < self.n:
                raise ValueError(f"token {t} is out of range for n = {self.n} tokens")
            if require_member and not self.member[level, t]:
                raise ValueError(
                    f"token {t} is not in level {level} of the Attention Graph "
                    f"(level {level} holds {self.levels[level].tolist()})"
                )
        return np.asarray(out, dtype=np.intp)

    def _check_head(self, head) -> tuple[int, int] | None:
        if head is None:
            return None
        try:
            layer, h = head
        except (TypeError, ValueError):
            raise ValueError(f"head must be None or a (layer, head) pair; got {head!r}") from None
        layer = self._check_layer(layer)
        h = self._as_int(h, "head")
        if not 0 <= h < self.H:
            raise ValueError(f"head {h} is out of range: heads are 0 .. {self.H - 1}")
        return layer, h

    @staticmethod
    def _check_alpha(alpha) -> float:
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}") from None
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha is the decay of eq. 4 and must lie in [0, 1]; got {alpha}")
        return alpha

    # ------------------------------------------------------------------ influence (§4.2)

    def influence(self, alpha: float = 0.5) -> np.ndarray:
        """Classification influence, eq. 4: float ``[L, n]``.

        ``influence[k, w] = 1/(L-k) · Σ_{k'=k}^{L-1} α^{L-1-k'} · counts[k', w]``, i.e. the paper's
        ``I_l(w) = 1/(L-l+1) Σ_{l'=l}^{L} α^{L-l'} c_{l'}(w)`` with ``l = k + 1``: the average over the
        layers from ``k`` up of the counts of eq. 3, decayed by ``α`` per layer below the last.
        """
        return self._influence(self._check_alpha(alpha)).copy()

    def _influence(self, alpha: float) -> np.ndarray:
        """Eq. 4 for a checked ``alpha``, computed once per ``alpha`` (the graph is immutable); read-only."""
        cache = self.__dict__.setdefault("_influence_cache", {})
        if alpha not in cache:
            L = self.L
            ks = np.arange(L)
            weighted = (alpha ** (L - 1 - ks))[:, None] * self.counts
            suffix = np.cumsum(weighted[::-1], axis=0)[::-1]  # Σ_{k'=k}^{L-1}
            cache[alpha] = readonly(suffix / (L - ks)[:, None])
        return cache[alpha]

    def ratings(self, k: int, alpha: float = 0.5) -> np.ndarray:
        """The sentence view's 5-circle rating at layer ``k`` (§4.2): int ``[n]``, ``min(5, ⌈I_k⌉)``."""
        k = self._check_layer(k)
        infl = self._influence(self._check_alpha(alpha))[k]
        return np.minimum(5, np.ceil(infl - _CEIL_EPS)).astype(np.int64)

    # ------------------------------------------------------------------ edges

    def edges(self, k: int) -> list[Edge]:
        """The edges through layer ``k``, from ``levels[k+1]`` to ``levels[k]``, ordered by ``(a, b)``."""
        k = self._check_layer(k)
        full = np.ones(self.n, dtype=bool)
        return self.edges_between(k, full, full, None)

    def edge_array(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Array form of :meth:`edges` for fast consumers.

        Returns ``(a, b, heads, weights)``: int ``[m]``, int ``[m]``, bool ``[m, H]`` (the carrying heads)
        and float ``[m, H]`` (``attn[k, h, a, b]``, for every head, carrying or not).
        """
        k = self._check_layer(k)
        a, b = np.nonzero(self._adj[k])
        return a, b, self.active[k][:, a, b].T, self.attn[k][:, a, b].T

    def edges_between(self, k: int, src: np.ndarray, dst: np.ndarray, head) -> list[Edge]:
        """Edges through layer k from tokens ``src`` (level k+1) to ``dst`` (level k), optionally one head."""
        if head is not None and head[0] == k:
            h = head[1]
            a, b = np.nonzero(self.active[k, h] & src[:, None] & dst[None, :])
            return list(map(new_edge, zip(repeat(k), a.tolist(), b.tolist(), repeat((h,)))))
        a, b = np.nonzero(self._adj[k] & src[:, None] & dst[None, :])
        if a.size == 0:
            return []
        # The carrying heads of each edge as a bit code, decoded through a small table of distinct
        # codes: one allocation per edge, whatever H.
        carrying = self.active[k][:, a, b]  # [H, m]
        codes = np.zeros(a.size, dtype=object if self.H > 62 else np.int64)
        for h in range(self.H):
            codes[carrying[h]] += 1 << h
        codes = codes.tolist()
        table = {c: tuple(h for h in range(self.H) if c >> h & 1) for c in set(codes)}
        return list(map(new_edge, zip(repeat(k), a.tolist(), b.tolist(), map(table.__getitem__, codes))))

    # ------------------------------------------------------------------ glyphs and sparklines (§4.3.2)

    def glyphs(self, k: int) -> np.ndarray:
        """Head-glyph data at level ``k`` (§4.3.2, the rows of the attention matrices): int ``[n, H]``.

        ``glyphs(k)[w, h]`` is the number of tokens of level ``k-1`` that ``w`` (in ``levels[k]``) attends
        to with weight > τ through head ``h`` of layer ``k-1``. It is 0 for heads that are not allowed,
        for tokens not in the level, and everywhere on level 0 (no level below).
        """
        k = self._check_level(k)
        if k == 0:
            return np.zeros((self.n, self.H), dtype=np.int32)
        return self._out_deg[k - 1].copy()

    def sparkline_heights(self, k: int, direction: str = "attending") -> np.ndarray:
        """All sparklines of level ``k`` at once: int ``[n, n]``, heights clamped at 3.

        Row ``w`` holds, at column ``b``, the height of ``w``'s sparkline at ``x = (b - w)/(n-1)``
        (see :meth:`sparkline`); rows of tokens not in the level are 0.
        """
        k = self._check_level(k)
        return np.minimum(self._spark_raw(k, direction), 3)

    def _spark_raw(self, k: int, direction: str) -> np.ndarray:
        if direction == "attended":  # rows: w (level k) -> the tokens b of level k-1 it attends to
            if k == 0:
                return np.zeros((self.n, self.n), dtype=np.int32)
            return self.head_counts[k - 1]
        if direction == "attending":  # columns: the tokens a of level k+1 that attend to w (level k)
            if k == self.L:
                return np.zeros((self.n, self.n), dtype=np.int32)
            return self.head_counts[k].T
        raise ValueError(f"direction must be 'attended' or 'attending'; got {direction!r}")

    def sparkline(self, k: int, w: int, direction: str = "attending") -> tuple[np.ndarray, np.ndarray]:
        """Sparkline data for token ``w`` at level ``k`` (§4.3.2): ``(x float [m], y int [m])``.

        With ``direction="attending"`` (the default, §4.3.2: "mapping the relative positions of tokens at
        layer l + 1 to sparklines under each dependent token at layer l", the reading the view draws and
        its help text describes) the points are the tokens ``a`` of level ``k+1`` that attend to ``w``
        through layer ``k``, at ``x = (a - w)/(n-1)`` in [-1, 1] (0 is ``w`` itself, < 0 earlier in the
        sequence, > 0 later), ascending, and ``y`` is the number of allowed heads with weight > τ, clamped
        at 3. Level ``L`` (nothing above) gives empty arrays.

        With ``direction="attended"`` the points are instead the tokens ``b`` of level ``k-1`` that ``w``
        attends to through layer ``k-1`` (the rows, which the head glyphs already show); level 0 gives
        empty arrays.

        Raises
        ------
        ValueError
            If ``w`` is not in ``levels[k]`` or ``direction`` is unknown.
        """
        k = self._check_level(k)
        heights = self._spark_raw(k, direction)
        sel = self._check_tokens(k, w)
        if sel.size != 1:
            raise ValueError(f"sparkline takes one token; got {sel.tolist()}")
        w = int(sel[0])
        row = heights[w]
        pos = np.flatnonzero(row)
        return (pos - w) / max(self.n - 1, 1), np.minimum(row[pos], 3).astype(np.int64)

    def sparklines(self, k: int, direction: str = "attending") -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """:meth:`sparkline` of every token of level ``k``, in bulk: ``{w: (x, y)}``."""
        k = self._check_level(k)
        toks = self.levels[k]
        heights = self._spark_raw(k, direction)[toks]  # [m, n]
        rows, pos = np.nonzero(heights)
        x = (pos - toks[rows]) / max(self.n - 1, 1)
        y = np.minimum(heights[rows, pos], 3).astype(np.int64)
        cuts = np.searchsorted(rows, np.arange(1, len(toks)))
        return {w: (xs, ys) for w, xs, ys in zip(toks.tolist(), np.split(x, cuts), np.split(y, cuts), strict=True)}

    # ------------------------------------------------------------------ traversals (§4.4)

    def _layer_adj(self, k: int, head) -> np.ndarray:
        if head is not None and head[0] == k:
            return self.active[k, head[1]]
        return self._adj[k]

    def _down(self, level: int, sel: np.ndarray, head) -> np.ndarray:
        """Ancestor mask [L+1, n] of the selection ``sel`` (token indices at ``level``).

        The first step intersects the selected tokens' dependencies (a brush, §4.4.1); the traversal then
        goes on from that intersection.
        """
        out = np.zeros((self.L + 1, self.n), dtype=bool)
        if level == 0:
            return out
        f = self._layer_adj(level - 1, head)[sel].all(axis=0)
        out[level - 1] = f
        any_rows = np.logical_or.reduce  # .any() without the method wrapper: this loop is hot
        for k in range(level - 2, -1, -1):
            if not np.count_nonzero(f):
                break
            f = any_rows(self._layer_adj(k, head)[f], axis=0)
            out[k] = f
        return out

    def _up(self, level: int, sel: np.ndarray, head) -> np.ndarray:
        """Descendant mask [L+1, n] of the selection (intersected at the first step, as :meth:`_down`)."""
        out = np.zeros((self.L + 1, self.n), dtype=bool)
        if level == self.L:
            return out
        f = self._layer_adj(level, head)[:, sel].all(axis=1)
        out[level + 1] = f
        any_cols = np.logical_or.reduce
        for k in range(level + 1, self.L):
            m = np.count_nonzero(f)
            if not m:
                break
            adj = self._layer_adj(k, head)
            # a few columns are gathered; for more, masking the rows in place is faster (no strided copy)
            f = any_cols(adj[:, f], axis=1) if 8 * m < self.n else (adj & f).any(axis=1)
            out[k + 1] = f
        return out

    def trace(self, level: int, tokens, head=None) -> Trace:
        """The dependencies of the tokens ``tokens`` selected at ``level`` (§4.4.1, Fig. 6).

        A pair of nodes is dependent when a path joins them in the Attention Graph. The trace holds the
        nodes below that the selection depends on (ancestors) and the nodes above that depend on it
        (descendants).

        Parameters
        ----------
        level:
            0 .. L.
        tokens:
            A token, or several tokens (a brush). For a brush the dependencies of the brushed tokens are
            intersected at the adjacent level, before the traversal continues (§4.4.1): the next level
            holds the nodes that *every* brushed token depends on (or that depend on every brushed
            token), and the traversal goes on from those.
        head:
            ``None``, or ``(layer, h)``: only head ``h`` connects layer ``layer``; every other layer uses
            all allowed heads (Fig. 6(b)). A head outside the allowed mask connects nothing.

        Raises
        ------
        ValueError
            If ``level`` or ``head`` is out of range, or a token is not in ``levels[level]``.
        """
        level = self._check_level(level)
        sel = self._check_tokens(level, tokens)
        head = self._check_head(head)
        return Trace(
            level,
            tuple(sel.tolist()),
            head,
            readonly(self._down(level, sel, head)),
            readonly(self._up(level, sel, head)),
            self,
        )

    def trace_mask(self, level: int, tokens, head=None) -> np.ndarray:
        """bool ``[L + 1, n]``: the nodes of :meth:`trace` (``trace(...).mask``: the selection, its ancestors
        and its descendants), same arguments and checks, without building the :class:`Trace`."""
        level = self._check_level(level)
        sel = self._check_tokens(level, tokens)
        head = self._check_head(head)
        mask = self._down(level, sel, head)
        mask |= self._up(level, sel, head)
        mask[level, sel] = True
        return mask

    def ancestors(self, level: int, tokens, head=None) -> set[Node]:
        """The ``(level, token)`` nodes below that the selection depends on (see :meth:`trace`)."""
        return self.trace(level, tokens, head).ancestors

    def descendants(self, level: int, tokens, head=None) -> set[Node]:
        """The ``(level, token)`` nodes above that depend on the selection (see :meth:`trace`)."""
        return self.trace(level, tokens, head).descendants

    def paths(self, level_a: int, tokens_a, level_b: int, tokens_b) -> PathResult:
        """The paths between tokens selected at two levels, adjacent or not (§4.4.2, Figs. 7 and 8).

        For adjacent levels the result holds every edge joining a selected token of the upper level to a
        selected token of the lower one, with the heads that carry it (Fig. 7).

        For levels further apart it holds the intermediate nodes through which attention flows from the
        upper selection down to the lower one, and every step of those paths with its heads (Fig. 8).
        With several tokens on a side, the paths are *intersection paths*: the nodes next to that side
        must connect to every selected token of it (the brush rule of :meth:`trace`).

        Raises
        ------
        ValueError
            If the two levels are equal or out of range, or a token is not in its level.
        """
        la, lb = self._check_level(level_a), self._check_level(level_b)
        if la == lb:
            raise ValueError(f"select tokens at two different levels; both are level {la}")
        sa, sb = self._check_tokens(la, tokens_a), self._check_tokens(lb, tokens_b)
        mask, lo, hi = self._paths_mask(la, sa, lb, sb)
        edges: list[Edge] = []
        for k in range(lo, hi):
            edges.extend(self.edges_between(k, mask[k + 1], mask[k], None))
        return PathResult(mask_to_nodes(mask), edges)

    def paths_mask(self, level_a: int, tokens_a, level_b: int, tokens_b) -> np.ndarray:
        """bool ``[L + 1, n]``: the nodes of :meth:`paths` (same checks), without building its edge list.

        An edge of the Attention Graph is a step of those paths exactly when both its ends are in the
        mask, which is how a view marks them in bulk."""
        la, lb = self._check_level(level_a), self._check_level(level_b)
        if la == lb:
            raise ValueError(f"select tokens at two different levels; both are level {la}")
        sa, sb = self._check_tokens(la, tokens_a), self._check_tokens(lb, tokens_b)
        return self._paths_mask(la, sa, lb, sb)[0]

    def _paths_mask(self, la: int, sa: np.ndarray, lb: int, sb: np.ndarray) -> tuple[np.ndarray, int, int]:
        (hi, s_hi), (lo, s_lo) = ((la, sa), (lb, sb)) if la > lb else ((lb, sb), (la, sa))
        top = np.zeros(self.n, dtype=bool)
        top[s_hi] = True
        bottom = np.zeros(self.n, dtype=bool)
        bottom[s_lo] = True
        mask = np.zeros((self.L + 1, self.n), dtype=bool)
        if hi - lo == 1:
            adj = self._adj[lo] & top[:, None] & bottom[None, :]
            mask[hi], mask[lo] = adj.any(axis=1), adj.any(axis=0)
            return mask, lo, hi
        on_path = self._down(hi, s_hi, None) & self._up(lo, s_lo, None)
        if not on_path[lo + 1 : hi].any(axis=1).all():
            return mask, lo, hi
        mask[lo + 1 : hi] = on_path[lo + 1 : hi]
        mask[hi], mask[lo] = top, bottom
        return mask, lo, hi

    # ------------------------------------------------------------------ misc

    def nodes(self) -> Iterator[Node]:
        """Every node, level by level from 0 up."""
        for k, lv in enumerate(self.levels):
            for w in lv.tolist():
                yield (k, w)

    @property
    def num_nodes(self) -> int:
        return int(self.member.sum())

    def edge_count(self) -> int:
        """Number of edges (token pairs, over all layers)."""
        return int(self._adj.sum())
