"""Model comparison on two Attention Graphs of one sample (§4.2, §4.3.3, §4.4.1-§4.4.2).

Pure numpy. The pre-trained and the fine-tuned model each give an :class:`~attnflows_panel.graph.AttentionGraph`
of the same input; :class:`GraphComparison` puts them side by side:

- the union of tokens per level, each marked by the model(s) whose graph holds it (§4.3.3);
- the state of every head glyph: pre only, fine only, both (a split glyph) or neither (§4.3.3);
- traversals and paths run on each model's graph separately and then united, every highlighted node
  marked by the model(s) that reach it (§4.4.1, §4.4.2);
- influence ratings side by side, split into shared circles and per-model circles (§4.2).

Codes are bit flags: ``NONE = 0``, ``PRE = 1``, ``FINE = 2``, ``BOTH = PRE | FINE = 3``. Colour them with
``PRETRAINED_COLOR``, ``FINETUNED_COLOR`` and ``SHARED_COLOR`` from :mod:`attnflows_panel`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from attnflows_panel.graph import AttentionGraph, Edge, Node

__all__ = ["GraphComparison", "CodedNodes", "CompareEdge", "NONE", "PRE", "FINE", "BOTH"]

NONE, PRE, FINE, BOTH = 0, 1, 2, 3

_MODEL_NAMES = {"pre": PRE, "pretrained": PRE, "fine": FINE, "finetuned": FINE, "both": BOTH}


class CodedNodes(dict):
    """``{(level, token): code}`` for the nodes a comparison traversal highlights.

    Attributes
    ----------
    edges:
        ``{PRE: [Edge, ...], FINE: [Edge, ...]}``: the edges each model's traversal used (a model whose
        graph holds none of the selected tokens has an empty list).
    mask:
        int8 ``[L + 1, n]``: the same codes as an array (0 where nothing is highlighted).
    """

    def __init__(self, mask: np.ndarray, edges):
        lv, tok = np.nonzero(mask)
        super().__init__(zip(zip(lv.tolist(), tok.tolist(), strict=True), mask[lv, tok].tolist(), strict=True))
        mask.flags.writeable = False
        self.mask = mask
        self._edges = edges  # a dict, or a function that builds it (edge lists cost more than the masks)

    @property
    def edges(self) -> dict[int, list[Edge]]:
        if callable(self._edges):
            self._edges = self._edges()
        return self._edges


class CompareEdge(NamedTuple):
    """An edge through layer ``layer`` from ``(layer + 1, a)`` to ``(layer, b)`` in either model.

    ``pre_heads``/``fine_heads`` are the heads carrying it in each model; ``code`` says which models have it.
    """

    layer: int
    a: int
    b: int
    pre_heads: tuple[int, ...]
    fine_heads: tuple[int, ...]
    code: int


class GraphComparison:
    """Two Attention Graphs of the same sample: pre-trained and fine-tuned (§4.3.3).

    Both graphs must have the same number of layers, heads and tokens and the same root. They may differ
    in τ or head mask (each model's graph is its own entity, §4.4.1), though a view normally builds both
    with the same ones.

    Attributes
    ----------
    pre, fine:
        The two graphs.
    membership:
        int ``[L + 1, n]``: ``PRE`` if the token is in the pre-trained graph's level, ``FINE`` if in the
        fine-tuned one's, ``BOTH`` if in both, ``NONE`` otherwise.
    levels:
        ``L + 1`` ascending int arrays: the union of the two graphs' levels.
    """

    def __init__(self, pre: AttentionGraph, fine: AttentionGraph):
        for name, g in (("pre", pre), ("fine", fine)):
            if not isinstance(g, AttentionGraph):
                raise ValueError(f"{name} must be an AttentionGraph; got {type(g).__name__}")
        if (pre.L, pre.H, pre.n) != (fine.L, fine.H, fine.n):
            raise ValueError(
                "the two graphs must come from the same sample and architecture: pre has "
                f"(L, H, n) = {(pre.L, pre.H, pre.n)}, fine has {(fine.L, fine.H, fine.n)}"
            )
        if pre.root != fine.root:
            raise ValueError(f"the two graphs have different roots: {pre.root} and {fine.root}")
        self.pre, self.fine = pre, fine
        self.L, self.H, self.n, self.root = pre.L, pre.H, pre.n, pre.root
        membership = (PRE * pre.member + FINE * fine.member).astype(np.int8)
        membership.flags.writeable = False
        self.membership = membership
        self.levels = [np.flatnonzero(membership[k]) for k in range(self.L + 1)]
        for lv in self.levels:
            lv.flags.writeable = False

    def __repr__(self) -> str:
        return f"GraphComparison(pre={self.pre!r}, fine={self.fine!r})"

    # ------------------------------------------------------------------ helpers

    def _graphs(self, model) -> list[tuple[int, AttentionGraph]]:
        if model is None:
            code = BOTH
        elif isinstance(model, str) and model.lower() in _MODEL_NAMES:
            code = _MODEL_NAMES[model.lower()]
        elif isinstance(model, (int, np.integer)) and not isinstance(model, bool) and model in (PRE, FINE, BOTH):
            code = int(model)
        else:
            raise ValueError(f"model must be None, 'pre', 'fine', 'both' or PRE/FINE/BOTH; got {model!r}")
        return [(c, g) for c, g in ((PRE, self.pre), (FINE, self.fine)) if code & c]

    def _selection(self, level, tokens) -> tuple[int, np.ndarray]:
        """Check a selection against the union of the two graphs."""
        level = self.pre._check_level(level)
        toks = self.pre._check_tokens(level, tokens, require_member=False)
        missing = [t for t in toks.tolist() if not self.membership[level, t]]
        if missing:
            raise ValueError(
                f"token(s) {missing} are in neither model's level {level} "
                f"(the union holds {self.levels[level].tolist()})"
            )
        return level, toks

    # ------------------------------------------------------------------ §4.3.3 glyphs

    def glyph_states(self, k: int) -> np.ndarray:
        """State of every head glyph at level ``k``: int ``[n, H]`` codes.

        ``PRE`` if head ``h`` of token ``w`` attends to some token of level ``k-1`` above τ only in the
        pre-trained graph (turquoise glyph), ``FINE`` only in the fine-tuned graph (purple), ``BOTH`` in
        both (a split glyph), ``NONE`` in neither.
        """
        return (PRE * (self.pre.glyphs(k) > 0) + FINE * (self.fine.glyphs(k) > 0)).astype(np.int8)

    def glyph_counts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each model's :meth:`AttentionGraph.glyphs` at level ``k`` (the glyph colour values)."""
        return self.pre.glyphs(k), self.fine.glyphs(k)

    def edges(self, k: int) -> list[CompareEdge]:
        """The union of the two graphs' edges through layer ``k``, ordered by ``(a, b)``."""
        by_pair: dict[tuple[int, int], list] = {}
        for code, g in ((PRE, self.pre), (FINE, self.fine)):
            for e in g.edges(k):
                entry = by_pair.setdefault((e.a, e.b), [(), (), 0])
                entry[0 if code == PRE else 1] = e.heads
                entry[2] |= code
        return [CompareEdge(k, a, b, p, f, c) for (a, b), (p, f, c) in sorted(by_pair.items())]

    # ------------------------------------------------------------------ §4.4 traversals

    def trace(self, level: int, tokens, head=None, model=None) -> CodedNodes:
        """Per-model traversals of a selection, united (§4.4.1, Fig. 5).

        Each model's graph is traversed separately (see :meth:`AttentionGraph.trace`) from the selected
        tokens that are in *its* level; a model whose level holds none of them contributes nothing, so a
        token present in one model only gives exactly that model's single-view result. Every highlighted
        node, the selection included, is coded by the model(s) that reach it.

        Parameters
        ----------
        head:
            ``None`` or ``(layer, h)``, applied to each traversed model.
        model:
            ``None`` (both, the default), ``"pre"`` / ``PRE`` or ``"fine"`` / ``FINE``: hovering one half of
            a split glyph traverses only that model.

        Raises
        ------
        ValueError
            If a token is in neither model's level, or ``level``/``head``/``model`` is invalid.
        """
        mask, traces = self._trace(level, tokens, head, model)
        return CodedNodes(mask, lambda: {c: (traces[c].edges if c in traces else []) for c in (PRE, FINE)})

    def trace_mask(self, level: int, tokens, head=None, model=None) -> np.ndarray:
        """int8 ``[L + 1, n]``: the codes of :meth:`trace` as an array only (``trace(...).mask``), for
        views that mark nodes in bulk; same arguments and checks."""
        mask, _ = self._trace(level, tokens, head, model, masks_only=True)
        mask.flags.writeable = False
        return mask

    def _trace(self, level, tokens, head, model, masks_only: bool = False):
        level, toks = self._selection(level, tokens)
        mask = np.zeros((self.L + 1, self.n), dtype=np.int8)
        traces = {}
        graphs = self._graphs(model)
        self.pre._check_head(head)
        for code, g in graphs:
            mine = toks[g.member[level, toks]]
            if mine.size == 0:
                continue
            if masks_only:  # the same nodes without a Trace object
                np.bitwise_or(mask, np.int8(code), out=mask, where=g.trace_mask(level, mine, head))
                continue
            tr = g.trace(level, mine, head)
            np.bitwise_or(mask, np.int8(code), out=mask, where=tr.mask)
            traces[code] = tr
        return mask, traces

    def paths(self, level_a: int, tokens_a, level_b: int, tokens_b, model=None) -> CodedNodes:
        """Per-model paths between selections at two levels, united (§4.4.2).

        Each model searches its own graph for paths between the selected tokens that are nodes of that
        graph: "paths are not required to join all selected tokens but only those included as nodes in
        their respective attention graph". Nodes are coded by the model(s) whose paths contain them;
        ``result.edges[PRE]`` / ``result.edges[FINE]`` hold each model's steps with their heads.
        """
        mask, args, la, lb = self._paths(level_a, tokens_a, level_b, tokens_b, model)

        def edges():
            return {c: (args[c][0].paths(la, args[c][1], lb, args[c][2]).edges if c in args else [])
                    for c in (PRE, FINE)}

        return CodedNodes(mask, edges)

    def paths_mask(self, level_a: int, tokens_a, level_b: int, tokens_b, model=None) -> np.ndarray:
        """int8 ``[L + 1, n]``: the codes of :meth:`paths` as an array only (``paths(...).mask``); same
        arguments and checks."""
        mask = self._paths(level_a, tokens_a, level_b, tokens_b, model)[0]
        mask.flags.writeable = False
        return mask

    def _paths(self, level_a, tokens_a, level_b, tokens_b, model):
        la, sa = self._selection(level_a, tokens_a)
        lb, sb = self._selection(level_b, tokens_b)
        if la == lb:
            raise ValueError(f"select tokens at two different levels; both are level {la}")
        mask = np.zeros((self.L + 1, self.n), dtype=np.int8)
        args = {}
        for code, g in self._graphs(model):
            ma, mb = sa[g.member[la, sa]], sb[g.member[lb, sb]]
            if ma.size == 0 or mb.size == 0:
                continue
            np.bitwise_or(mask, np.int8(code), out=mask, where=g.paths_mask(la, ma, lb, mb))
            args[code] = (g, ma, mb)
        return mask, args, la, lb

    def all_traces(self) -> dict[Node, np.ndarray]:
        """``{(level, token): codes int8 [L + 1, n]}``: :meth:`trace` of every node of the union, in bulk.

        For client-side hover highlights: each entry equals ``trace(level, token).mask``.
        """
        out: dict[Node, np.ndarray] = {}
        for level, toks in enumerate(self.levels):
            if not len(toks):
                continue
            codes = np.zeros((len(toks), self.L + 1, self.n), dtype=np.int8)
            for code, g in ((PRE, self.pre), (FINE, self.fine)):
                mine = g.levels[level]
                if not len(mine):
                    continue
                anc, desc = g.level_masks(level)
                masks = anc | desc
                masks[np.arange(len(mine)), level, mine] = True  # the node itself
                codes[np.searchsorted(toks, mine)] |= code * masks.view(np.int8)
            for i, w in enumerate(toks.tolist()):
                out[(level, w)] = codes[i]
        return out

    # ------------------------------------------------------------------ §4.2 ratings

    def ratings(self, k: int, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both models' 5-circle ratings at layer ``k`` and the circles they share (§4.2).

        Returns ``(pre, fine, shared)``, int ``[n]`` each, with ``shared = min(pre, fine)``: the first
        ``shared`` circles are orange, the next ``pre - shared`` turquoise or ``fine - shared`` purple
        (one of the two is 0). E.g. pre 2, fine 4: two orange circles, then two purple.
        """
        pre, fine = self.pre.ratings(k, alpha), self.fine.ratings(k, alpha)
        return pre, fine, np.minimum(pre, fine)

    def most_different_level(self, alpha: float = 0.5) -> int:
        """The layer ``k`` (0 .. L-1) where the two models' influence differs most: the largest
        ``Σ_w |I_k^pre(w) - I_k^fine(w)|`` (eq. 4), ties to the lower layer. Where the sentence view opens
        (it says the most about what fine-tuning changed); 0 when the two graphs agree everywhere."""
        diff = np.abs(self.pre.influence(alpha) - self.fine.influence(alpha)).sum(axis=1)
        return int(np.argmax(diff)) if diff.size and diff.max() > 0 else 0
