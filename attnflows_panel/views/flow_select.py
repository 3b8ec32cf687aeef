"""Frozen selections of the radial Attention Flow view, without Bokeh: a click, a brush, two rings or a
head glyph turned into highlight codes by asking the graph (``trace`` / ``paths``) or, for a head, the
edges that head carries (:class:`Selections`, the part of
:class:`~attnflows_panel.views.flow_data.FlowData` that answers them), and those codes turned into the
display states of every drawn item (:func:`compose_states`; the state codes are documented in
:mod:`attnflows_panel.views.flow_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from attnflows_panel.compare import BOTH, FINE, PRE
from attnflows_panel.views.flow_style import HL_ALPHA_MAX, HL_ALPHA_MIN, HL_INK, density_alpha

if TYPE_CHECKING:
    from attnflows_panel.views.flow_data import FlowData

__all__ = ["Highlight", "Selections", "compose_states"]


@dataclass
class Highlight:
    """Highlight codes of one selection: per node / edge the model code (0 = not highlighted), per glyph
    row whether its head carries the selection's attention, and the selected nodes themselves."""

    nodes: np.ndarray
    edges: np.ndarray
    glyphs: np.ndarray
    origin: np.ndarray
    message: str = ""

    @property
    def active(self) -> bool:
        return bool(self.nodes.any())

    def node_set(self, data: FlowData) -> dict[tuple[int, int], int]:
        """``{(level, token): code}`` of the highlighted nodes."""
        ids = np.flatnonzero(self.nodes)
        lv = data.columns("nodes")["level"][ids]
        ps = data.columns("nodes")["pos"][ids]
        return {(int(a), int(b)): int(c) for a, b, c in zip(lv, ps, self.nodes[ids], strict=True)}


def compose_states(data: FlowData, hl: Highlight | None) -> dict[str, np.ndarray]:
    """Display states (module docstring) of every drawn item for a highlight, or for none.

    The browser's hover code (``flow.js``, ``compose``) does exactly the same from its own codes.
    """
    nodes, edges = data.columns("nodes"), data.columns("edges")
    G = len(data.columns("glyphs"))
    node_base = nodes["base"].astype(np.uint8)
    edge_base = edges["base"].astype(np.uint8)
    if hl is None or not hl.active:
        node_st = 5 + node_base
        edge_st = 5 + edge_base
        glyph_st = np.full(G, 5, dtype=np.uint8)
    else:
        node_st = np.where(hl.nodes > 0, hl.nodes, 4).astype(np.uint8)
        node_st = np.where(hl.origin, 8 + np.maximum(hl.nodes, 1), node_st).astype(np.uint8)
        edge_st = np.where(hl.edges > 0, hl.edges, 4).astype(np.uint8)
        gm = data.columns("glyphs")["model"].astype(np.uint8)
        glyph_st = np.where(hl.glyphs, gm, 4).astype(np.uint8)
    sparks = data.columns("sparks")
    spark_st = node_st[sparks["node"]] if len(sparks) else np.zeros(0, np.uint8)
    layer = edges["layer"].astype(np.int64)
    lit = edge_st < 4
    count = np.bincount(layer[lit], minlength=data.L)
    ha = density_alpha(count, data.sweep, HL_INK, HL_ALPHA_MIN, HL_ALPHA_MAX)[layer]
    return {"nodes": node_st.astype(np.uint8), "edges": edge_st.astype(np.uint8), "edge_alpha": ha,
            "glyphs": glyph_st.astype(np.uint8), "sparks": np.asarray(spark_st, dtype=np.uint8)}


class Selections:
    """Frozen selections of a :class:`~attnflows_panel.views.flow_data.FlowData` (its base class: it reads
    the view's graphs, node index, layout and edge/glyph columns)."""

    def node_id(self, level: int, token: int) -> int:
        if not 0 <= level <= self.L or not 0 <= token < self.n:
            return -1
        return int(self.node_index[level, token])

    def _empty(self, message: str = "") -> Highlight:
        return Highlight(
            nodes=np.zeros(self.n_nodes, np.uint8),
            edges=np.zeros(len(self.columns("edges")), np.uint8),
            glyphs=np.zeros(self.n_glyphs, bool),  # the glyphs' count, without building their geometry
            origin=np.zeros(self.n_nodes, bool),
            message=message,
        )

    def _mark(self, hl: Highlight, code: int, mask: np.ndarray, head: tuple[int, int] | None) -> None:
        """Mark, in bulk, the edges and head glyphs of model ``code``'s traversal whose nodes are ``mask``
        (bool [L+1, n]): an edge of that model is a step of the traversal exactly when both its ends are
        in the mask (as in ``Trace.edges`` / ``PathResult.edges``, and as flow.js marks a hover); with
        ``head = (layer, h)`` that layer's steps are only those carried by head h. A glyph (u, h) lights
        when a marked edge of u carries head h in that model."""
        e = self._edge_arrays()
        if e["u"].size == 0:
            return
        N = e["N"]
        node_in = np.zeros(N + 1, dtype=bool)  # last slot: nodes absent from the view
        ids = self.node_index.ravel()[np.flatnonzero(mask)]
        node_in[ids[ids >= 0]] = True
        lit = e[f"in{code}"] & node_in[e["u"]] & node_in[e["v"]]
        words = list(e[f"w{code}"])  # uint32 [E] per 32-head word
        if head is not None:
            at = e["layer"] == head[0]
            carried = ((words[head[1] // 32] >> np.uint32(head[1] % 32)) & np.uint32(1)).astype(bool)
            lit &= ~at | carried
            for w in range(self.words):
                mine = np.uint32(1 << (head[1] % 32)) if w == head[1] // 32 else np.uint32(0)
                words[w] = np.where(at, mine, words[w])
        hl.edges[lit] |= np.uint8(code)
        gl = self._glyph_arrays()
        rows = gl[f"rows{code}"]
        lit_ids = np.flatnonzero(lit)
        if rows.size == 0 or lit_ids.size == 0:
            return
        # edges are ordered by (layer, a), so the marked edges of one upper node u are consecutive: OR
        # their head words per u with one reduceat
        u = e["u"][lit_ids]
        starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1])))
        gnode, gword, gshift = gl[f"node{code}"], gl[f"word{code}"], gl[f"shift{code}"]
        for w in range(self.words):
            acc = np.zeros(N, dtype=np.uint32)
            acc[u[starts]] = np.bitwise_or.reduceat(words[w][lit_ids], starts)
            on = ((acc[gnode] >> gshift) & np.uint32(1)).astype(bool)
            if self.words > 1:
                on &= gword == w
            hl.glyphs[rows[on]] = True

    def _edge_arrays(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_earr"):
            e = self.columns("edges")
            cols = ["u", "v", "layer", "member"] + [f"h{c}_{w}" for c in (PRE, FINE) for w in range(self.words)]
            earr = {c: e[c] for c in cols}
            earr["u"] = np.asarray(earr["u"], dtype=np.int64)  # no copy: the columns are int64 and uint32
            earr["v"] = np.asarray(earr["v"], dtype=np.int64)
            earr["N"] = self.n_nodes
            for c in (PRE, FINE):
                earr[f"in{c}"] = (earr["member"] & c) != 0
                earr[f"w{c}"] = [np.asarray(earr[f"h{c}_{w}"], dtype=np.uint32) for w in range(self.words)]
            self._earr = earr
        return self._earr

    def _glyph_arrays(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_garr"):
            g = self.columns("glyphs")
            garr = {c: np.asarray(g[c], dtype=np.int64) for c in ("node", "head", "model")}
            for c in (PRE, FINE):  # per model: its glyph rows, their nodes, head words and bit shifts
                rows = np.flatnonzero(garr["model"] == c)
                h = garr["head"][rows]
                garr[f"rows{c}"], garr[f"node{c}"] = rows, garr["node"][rows]
                garr[f"word{c}"], garr[f"shift{c}"] = h // 32, (h % 32).astype(np.uint32)
            self._garr = garr
        return self._garr

    def _apply_mask(self, hl: Highlight, mask: np.ndarray, code: int | None = None) -> None:
        flat = np.flatnonzero(mask)
        ids = self.node_index.ravel()[flat]
        ok = ids >= 0
        vals = mask.ravel()[flat] if code is None else np.full(flat.size, code)
        hl.nodes[ids[ok]] |= np.asarray(vals, dtype=np.uint8)[ok]

    def highlight(
        self,
        selection: Sequence[Sequence[int]],
        head: Sequence[int] | None = None,
        head_model: str | None = None,
    ) -> Highlight:
        """The frozen highlight of a selection of ``(level, token)`` nodes, asked of graph/compare.

        - a head (``head = (layer, h)``, a click on a head glyph): what that head attends to above τ at
          its layer, in every drawn model: its edges through ``layer`` and their end tokens, each coded by
          the model(s) whose head h carries it (pre-trained only, fine-tuned only, both: how fine-tuning
          changed the head), head h's glyphs on level ``layer + 1`` lit and every other glyph dimmed; the
          selected tokens are the origin. Not a trace: nothing beyond the head's own layer lights up
          (:meth:`head_highlight`). ``head_model`` is accepted for the callers that pass it; both models
          are shown either way, since the comparison is the point;
        - tokens at one level: ``trace(level, tokens)`` (several tokens: the brushed intersection,
          §4.4.1);
        - tokens at two levels: ``paths`` between them (§4.4.2, Figs. 7-8);
        - more levels: the paths between the lowest and the highest, with a message saying so.
        Messages name levels 1-based, as the UI does. Selected tokens not in the drawn graph(s) are ignored
        (e.g. after τ changed); an empty result means no highlight.
        """
        sel = []
        for item in selection or []:
            lv, tok = int(item[0]), int(item[1])
            if self.node_id(lv, tok) >= 0:
                sel.append((lv, tok))
        if head is not None:
            return self.head_highlight(int(head[0]), int(head[1]), sel)
        if not sel:
            return self._empty()
        by_level: dict[int, list[int]] = {}
        for lv, tok in sel:
            by_level.setdefault(lv, []).append(tok)
        hl = self._empty()
        for lv, toks in by_level.items():
            for t in toks:
                hl.origin[self.node_index[lv, t]] = True
        levels = sorted(by_level)
        message = ""
        if len(levels) > 2:
            message = (f"tokens selected at {len(levels)} levels: showing the paths between levels "
                       f"{levels[0] + 1} and {levels[-1] + 1}")
            for lv in levels[1:-1]:
                for t in by_level[lv]:
                    hl.origin[self.node_index[lv, t]] = False
            levels = [levels[0], levels[-1]]
        head_t = None if head is None else (int(head[0]), int(head[1]))
        model_code = {None: None, "pretrained": PRE, "finetuned": FINE, "both": None}.get(head_model)
        if len(levels) == 1:
            lv = levels[0]
            toks = sorted(by_level[lv])
            if self.comparison is not None:
                res = self.comparison.trace_mask(lv, toks, head=head_t, model=model_code if head_t else None)
                self._apply_mask(hl, res)
                for c in (PRE, FINE):
                    self._mark(hl, c, (res & c).astype(bool), head_t)
            else:
                (c, g), = self.graphs.items()
                tr = g.trace(lv, toks, head=head_t)
                self._apply_mask(hl, tr.mask, c)
                self._mark(hl, c, tr.mask, head_t)
            if len(toks) > 1:
                message = message or f"brushed intersection of {len(toks)} tokens at level {lv + 1}"
        else:
            message = self._paths_highlight(hl, levels, by_level, message)
        # selected tokens stay highlighted even if a model lacks them
        miss = hl.origin & (hl.nodes == 0)
        hl.nodes[miss] = self.layout.column("member")[miss]
        hl.message = message
        return hl

    def _paths_highlight(self, hl: Highlight, levels: list[int], by_level: dict[int, list[int]],
                         message: str) -> str:
        """Mark the paths between the tokens selected at two levels (§4.4.2); returns the status message."""
        la, lb = levels
        ta, tb = sorted(by_level[la]), sorted(by_level[lb])
        if self.comparison is not None:
            res = self.comparison.paths_mask(la, ta, lb, tb)
            self._apply_mask(hl, res)
            for c in (PRE, FINE):
                self._mark(hl, c, (res & c).astype(bool), None)
        else:
            (c, g), = self.graphs.items()
            pm = g.paths_mask(la, ta, lb, tb)
            self._apply_mask(hl, pm, c)
            self._mark(hl, c, pm, None)
        if not hl.nodes.any():
            message = message or f"no path joins the tokens selected at levels {la + 1} and {lb + 1}"
            # keep the selected tokens visible
            hl.nodes[hl.origin] = np.maximum(hl.nodes[hl.origin], 1)
        else:
            message = message or f"paths between levels {la + 1} and {lb + 1}"
        return message

    def head_highlight(self, layer: int, h: int, selection: Sequence[Sequence[int]] = ()) -> Highlight:
        """What head ``h`` of layer ``layer`` attends to above τ, in both drawn models (a head click).

        Edge codes: ``PRE`` where only the pre-trained model's head h carries the edge, ``FINE`` only the
        fine-tuned one's, ``BOTH`` both; nodes: the end tokens of those edges (levels ``layer + 1`` and
        ``layer``), coded by the union of their edges' codes; glyphs: head h's glyphs of level
        ``layer + 1`` (everything else is dimmed); origin: the selected ``(level, token)`` nodes. The
        message counts the edges per code (layers and heads named 1-based, as the UI does)."""
        if not 0 <= layer < self.L or not 0 <= h < self.H:
            raise ValueError(f"head ({layer}, {h}) is out of range: layers 0 .. {self.L - 1}, heads 0 .. {self.H - 1}")
        hl = self._empty()
        e = self._edge_arrays()
        at = e["layer"] == layer
        word, bit = h // 32, np.uint32(1 << (h % 32))
        for c in self.graphs:
            carried = at & ((e[f"w{c}"][word] & bit) != 0)
            hl.edges[carried] |= np.uint8(c)
        lit = np.flatnonzero(hl.edges)
        np.bitwise_or.at(hl.nodes, e["u"][lit], hl.edges[lit])
        np.bitwise_or.at(hl.nodes, e["v"][lit], hl.edges[lit])
        gl = self._glyph_arrays()
        glevel = self.layout.column("level")[gl["node"]] if gl["node"].size else gl["node"]
        hl.glyphs[:] = (gl["head"] == h) & (glevel == layer + 1)
        for lv, tok in selection:
            hl.origin[self.node_index[lv, tok]] = True
        miss = hl.origin & (hl.nodes == 0)
        hl.nodes[miss] = self.layout.column("member")[miss]
        codes = hl.edges[lit]
        name = f"head {h + 1} of layer {layer + 1}"
        if lit.size == 0:
            hl.message = f"{name} attends to nothing above τ = {self.tau:g} here"
        elif self.comparison is not None:
            hl.message = (f"{name}: {int((codes == BOTH).sum())} edges in both models, "
                          f"{int((codes == PRE).sum())} only pre-trained, {int((codes == FINE).sum())} only fine-tuned")
        else:
            hl.message = f"{name}: {lit.size} edges above τ = {self.tau:g}"
        return hl
