"""Reachability of every node of an Attention Graph at once (§4.4.1, for hover highlights, P4/P6), in
pure numpy: ancestors and descendants propagated level by level as packed bitsets, 64 nodes per machine
word, with no per-node search.

:class:`Reachability` is a base class of :class:`~attnflows_panel.graph.AttentionGraph` (it reads the
graph's ``levels``, ``active``, ``adjacency``, ``edge_keys``, ``L`` and ``n``); its public methods are the graph's.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from attnflows_panel.traces import Node, Trace, readonly

__all__ = ["Reachability", "or_and"]


class Reachability:
    """Every node's trace in bulk (the part of :class:`~attnflows_panel.graph.AttentionGraph` that
    answers for all nodes at once)."""

    @cached_property
    def _node_order(self):
        """``(off, flat)``: level offsets of the compact node order (level by level, then by token) and
        each node's flat index ``level * n + token``, ascending."""
        off = np.zeros(self.L + 2, dtype=np.intp)
        np.cumsum([len(x) for x in self.levels], out=off[1:])
        return off, np.flatnonzero(self.member)  # member is [L+1, n]: flat order is the compact order

    @cached_property
    def _reach_base(self):
        """``(off, flat, sub)``: :attr:`_node_order` and the adjacency between consecutive levels' nodes
        ``sub[k]`` [m_{k+1}, m_k]."""
        off, flat = self._node_order
        lv = self.levels
        sub = [self._adj[k].take(lv[k + 1], axis=0).take(lv[k], axis=1) for k in range(self.L)]  # rows, then columns
        return off, flat, sub

    @cached_property
    def _edge_csr(self):
        """Every edge in compact node numbers, grouped by layer and upper node: ``(upper, lower, first,
        seg, seg_first)``. Edge i (ordered by layer, then ``a``, then ``b``) joins compact node
        ``upper[i]`` (level k + 1) to ``lower[i]`` (level k); the edges through layer k are
        ``first[k]:first[k + 1]``; ``seg`` holds the first edge of each upper node's run of edges, and
        the runs of layer k are ``seg[seg_first[k]:seg_first[k + 1]]``. One search over the whole
        adjacency instead of one per level."""
        n = self.n
        keys = self.edge_keys  # (k * n + a) * n + b, ascending: np.flatnonzero(adjacency)
        ka, b = np.divmod(keys, n)  # ka = k * n + a
        k = ka // n
        rank = np.cumsum(self.member.ravel()) - 1  # compact number of a node from its flat index
        upper = rank[ka + n]  # node (k + 1, a)
        lower = rank[ka - (ka % n) + b]  # node (k, b)
        first = np.searchsorted(k, np.arange(self.L + 1))
        new_run = np.ones(keys.size, dtype=bool)
        new_run[1:] = ka[1:] != ka[:-1]
        seg = np.flatnonzero(new_run)
        return upper, lower, first, seg, np.searchsorted(seg, first)

    @cached_property
    def _reach_down(self):
        """Ancestors of every node, propagated level by level as packed bitsets.

        Nodes are numbered compactly: bit ``off[j] + i`` stands for node ``(j, levels[j][i])``. Each node's
        set is a row of ``W`` uint64 words. ``down[l]`` (``[m_l, W]``) holds the ancestors of level l's
        nodes: the OR, over each node's children on level l-1, of the child's own bit and ancestors (a
        boolean matrix product in the OR-AND semiring, 64 nodes per machine word). Ancestors of level l
        lie on levels below l, so only the first ``ceil(off[l] / 64)`` words of ``down[l]`` can be set and
        only those are computed. No BLAS and no per-node search is involved.
        """
        off, flat, sub = self._reach_base
        down, own = self._down_sets(np.arange(off[-1]), int(off[-1]), off)
        return off, flat, down, own, sub

    def _down_sets(self, bit: np.ndarray, width: int, off: np.ndarray):
        """Packed ancestor sets ``down[l]`` [m_l, W] with node j (compact order) as bit ``bit[j]`` of
        ``width`` bits, and each node's own bit ``own[l]``; see :attr:`_reach_down`. ``bit`` ascends
        with the levels, so level l's ancestors lie below bit ``bit[off[l]]``. Each level is one gather
        and one ``bitwise_or.reduceat`` over the edges into it (:attr:`_edge_csr`), as :func:`or_and`."""
        L = self.L
        sizes = np.diff(off)
        words = max(1, -(-width // 64))
        own_all = np.zeros((int(off[-1]), words), dtype=np.uint64)
        own_all[np.arange(own_all.shape[0]), bit // 64] = np.left_shift(np.uint64(1), (bit % 64).astype(np.uint64))
        own = [own_all[off[lev] : off[lev + 1]] for lev in range(L + 1)]
        upper, lower, first, seg, seg_first = self._edge_csr
        down = [np.zeros((sizes[0], words), dtype=np.uint64)]
        for lev in range(1, L + 1):
            top = int(bit[off[lev] - 1]) + 1 if off[lev] else 0  # bits of the levels below lev
            w = -(-top // 64)  # words that can hold level lev's ancestors
            d = np.zeros((sizes[lev], words), dtype=np.uint64)
            e0, e1 = int(first[lev - 1]), int(first[lev])
            if e1 > e0 and w:
                src = down[lev - 1][:, :w] | own[lev - 1][:, :w]  # each child's ancestors and itself
                runs = seg[seg_first[lev - 1] : seg_first[lev]]
                d[upper[runs] - off[lev], :w] = np.bitwise_or.reduceat(src[lower[e0:e1] - off[lev - 1]], runs - e0)
            down.append(d)
        return down, own

    def ancestor_sets(self, bit: np.ndarray, width: int) -> list[np.ndarray]:
        """Every node's ancestors as packed bit rows, numbered by the caller: ``sets[l]`` uint64
        ``[m_l, ceil(width / 64)]``, bit ``bit[j]`` (little-endian within the row) set when node j is an
        ancestor, nodes j in the order of :meth:`nodes`. ``bit`` must ascend (a view numbering the union
        of two graphs' nodes level by level, say); unpacked, the rows are :meth:`ancestor_matrix`'s with
        its columns moved to ``bit``. What a view ships as hover highlight bits (P4/P6), without moving
        columns afterwards."""
        off, _ = self._node_order
        bit = np.asarray(bit, dtype=np.int64)
        if bit.shape != (int(off[-1]),) or (bit.size and (bit.min() < 0 or bit.max() >= width)):
            raise ValueError(f"bit must give each of the {int(off[-1])} nodes a position in 0 .. {width - 1}")
        if bit.size > 1 and not (np.diff(bit) > 0).all():
            raise ValueError("bit must ascend with the nodes' order (levels, then positions)")
        return self._down_sets(bit, width, off)[0]

    @cached_property
    def _reach_up(self):
        """Descendants of every node, as :attr:`_reach_down` (``up[l]`` [m_l, W], from the root down)."""
        off, _, _, own, sub = self._reach_down
        L = self.L
        words = own[0].shape[1]
        up = [np.zeros((0, words), dtype=np.uint64)] * L + [np.zeros((len(self.levels[L]), words), dtype=np.uint64)]
        for lev in range(L - 1, -1, -1):
            w0 = int(off[lev + 1]) // 64  # descendants of level lev lie on levels above lev: words from here
            u = np.zeros((len(self.levels[lev]), words), dtype=np.uint64)
            u[:, w0:] = or_and(sub[lev].T, (up[lev + 1] | own[lev + 1])[:, w0:])
            up[lev] = u
        return up

    @property
    def _reach(self):
        """``(off, flat, down, up, own)``: the packed reachability of :attr:`_reach_down` and :attr:`_reach_up`."""
        off, flat, down, own, _ = self._reach_down
        return off, flat, down, self._reach_up, own

    def _expand(self, packed: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """Packed compact rows [m, W] -> read-only full masks [m, L+1, n]."""
        m = packed.shape[0]
        compact = np.unpackbits(packed.view(np.uint8), axis=1, count=flat.size, bitorder="little")
        full = np.zeros((m, (self.L + 1) * self.n), dtype=bool)
        full[:, flat] = compact.view(bool)
        return readonly(full.reshape(m, self.L + 1, self.n))

    def level_masks(self, lev: int) -> tuple[np.ndarray, np.ndarray]:
        """Ancestor and descendant masks of every node of level ``l``: bool ``[m_l, L+1, n]`` each."""
        _, flat, down, up, _ = self._reach
        return self._expand(down[lev], flat), self._expand(up[lev], flat)

    def all_traces(self) -> dict[Node, Trace]:
        """The plain :meth:`trace` of every node, ``{(level, token): Trace}``, computed in bulk.

        Reachability is propagated level by level over packed bitsets (see ``_reach``), with no
        per-node search, so this is cheap enough to precompute every hover highlight set (P4).
        """
        out: dict[Node, Trace] = {}
        for lev in range(self.L + 1):
            if not len(self.levels[lev]):
                continue
            anc, desc = self.level_masks(lev)
            for i, w in enumerate(self.levels[lev].tolist()):
                out[(lev, w)] = Trace(lev, (w,), None, anc[i], desc[i], self)
        return out

    def ancestor_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Every node's ancestors at once, in compact form: ``(flat, A)``.

        ``flat`` int ``[N]``: node ``i`` is ``(flat[i] // n, flat[i] % n)``, nodes ordered by level then
        token (as :meth:`nodes`). ``A`` bool ``[N, N]``: ``A[i, j]`` iff node ``j`` is an ancestor of node
        ``i``, i.e. the ``ancestor_mask`` of :meth:`all_traces` without a Trace per node (what a view
        ships for hover highlights, P4/P6).
        """
        _, flat, down, _, _ = self._reach_down
        N = flat.size
        if N == 0:
            return flat, np.zeros((0, 0), dtype=bool)
        rows = [np.unpackbits(d.view(np.uint8), axis=1, count=N, bitorder="little") for d in down if d.shape[0]]
        return flat, np.concatenate(rows).view(bool)

    def ancestor_blocks(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """:meth:`ancestor_matrix` cut into its non-zero blocks: ``(flat, off, blocks)``.

        Ancestors lie on lower levels, so the rows of level ``l``'s nodes are zero from column ``off[l]``
        on. ``off`` int ``[L + 2]``: level ``l``'s nodes are ``off[l]:off[l+1]`` in the order of ``flat``;
        ``blocks[l]`` bool ``[m_l, off[l]]`` equals ``A[off[l]:off[l+1], :off[l]]``. Cheaper than the
        square matrix when a view ships each node's ancestors on lower levels only (P4/P6).
        """
        off, flat, down, _, _ = self._reach_down
        blocks = [
            np.unpackbits(d.view(np.uint8), axis=1, count=int(off[lev]), bitorder="little").view(bool)
            for lev, d in enumerate(down)
        ]
        return flat, off, blocks

    def all_head_traces(self) -> dict[tuple[int, int, int], Trace]:
        """``{(level, token, h): trace(level, token, head=(level-1, h))}`` for every head glyph that is lit.

        These are the highlights of hovering a head glyph (Fig. 6(b)): only head ``h`` connects the token
        to the level below, all other layers use every allowed head. Keys exist for ``level >= 1`` and
        ``glyphs(level)[token, h] > 0``. Computed in bulk like :meth:`all_traces`.
        """
        off, flat, down, up, own = self._reach
        out: dict[tuple[int, int, int], Trace] = {}
        lv = self.levels
        for lev in range(1, self.L + 1):
            if len(lv[lev]) == 0 or len(lv[lev - 1]) == 0:
                continue
            first = self.active[lev - 1][:, lv[lev]][:, :, lv[lev - 1]]  # [H, m_l, m_{lev-1}]: the step via head h
            hh, ii = np.nonzero(first.any(axis=2))
            if hh.size == 0:
                continue
            anc = self._expand(or_and(first[hh, ii], down[lev - 1] | own[lev - 1]), flat)
            desc = self._expand(up[lev], flat)
            for r, (h, i) in enumerate(zip(hh.tolist(), ii.tolist(), strict=True)):
                w = int(lv[lev][i])
                out[(lev, w, h)] = Trace(lev, (w,), (lev - 1, h), anc[r], desc[i], self)
        return out


def or_and(sel: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """Boolean matrix product over packed bitsets: row i = OR of ``sets[j]`` for every j with ``sel[i, j]``.

    ``sel`` bool [r, m], ``sets`` uint64 [m, W] -> uint64 [r, W]. One ``bitwise_or.reduceat`` over the
    selected rows of ``sets``, so the work follows the number of edges, not ``r * m``.
    """
    r, m = sel.shape
    out = np.zeros((r, sets.shape[1]), dtype=np.uint64)
    if r == 0 or m == 0 or sets.shape[1] == 0:
        return out
    flat = np.flatnonzero(sel)  # row-major: rows ascending (np.nonzero is slower in 2-d)
    if flat.size == 0:
        return out
    ii, jj = np.divmod(flat, m)
    starts = np.flatnonzero(np.concatenate(([True], ii[1:] != ii[:-1])))
    out[ii[starts]] = np.bitwise_or.reduceat(sets[jj], starts, axis=0)
    return out
