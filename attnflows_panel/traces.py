"""The results of Attention Graph queries (§4.4): nodes, edges, traces and paths, in pure numpy.

:class:`~attnflows_panel.graph.AttentionGraph` answers with these; they are importable from
:mod:`attnflows_panel.graph` as before. Levels and layers follow the package's convention (see
:mod:`attnflows_panel.graph`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from attnflows_panel.graph import AttentionGraph

__all__ = ["Node", "Edge", "PathResult", "Trace", "new_edge", "mask_to_nodes", "readonly"]

Node = tuple[int, int]
"""A node of the Attention Graph: ``(level, token_position)``."""

class Edge(NamedTuple):
    """An edge of the Attention Graph through layer ``layer``.

    It joins node ``(layer + 1, a)`` (the query token ``a``) to node ``(layer, b)`` (the key token ``b``
    it attends to with weight > τ). ``heads`` are the allowed heads that carry it, ascending.
    """

    layer: int
    a: int
    b: int
    heads: tuple[int, ...]


class PathResult(NamedTuple):
    """Paths between tokens selected at two levels (§4.4.2).

    ``nodes`` are the ``(level, token)`` nodes on the paths: the intermediate nodes plus the selected
    tokens that the paths join. ``edges`` are the steps of those paths, each with the heads that carry it.
    Both are empty when no path joins the selections.
    """

    nodes: set[Node]
    edges: list[Edge]

    @property
    def heads(self) -> dict[int, tuple[int, ...]]:
        """Layer -> the heads through which attention flows along the paths at that layer (§4.4.2)."""
        out: dict[int, set[int]] = {}
        for e in self.edges:
            out.setdefault(e.layer, set()).update(e.heads)
        return {k: tuple(sorted(v)) for k, v in sorted(out.items())}

    @property
    def intermediate(self) -> set[Node]:
        """The nodes strictly between the two selected levels."""
        if not self.edges:
            return set()
        lo = min(e.layer for e in self.edges)
        hi = max(e.layer for e in self.edges) + 1
        return {(lv, t) for lv, t in self.nodes if lo < lv < hi}


# Builds an Edge from a (layer, a, b, heads) tuple without the Python-level NamedTuple.__new__, so that
# edge lists are made at C speed inside map().
new_edge = partial(tuple.__new__, Edge)


def mask_to_nodes(mask: np.ndarray) -> set[Node]:
    lv, tok = np.nonzero(mask)
    return set(zip(lv.tolist(), tok.tolist(), strict=True))


@dataclass(frozen=True, eq=False)
class Trace:
    """The dependency subgraph of a selection of tokens at one level (§4.4.1).

    Stored as boolean masks ``[L + 1, n]`` (row = level, column = token), so that building many traces
    is cheap; the sets and the edge list are derived on first access.

    Attributes
    ----------
    level, tokens:
        The selection: ``tokens`` (ascending) at ``level``. Several tokens are a *brush*.
    head:
        ``None``, or ``(layer, h)``: only head ``h`` connects layer ``layer`` (Fig. 6(b)).
    ancestor_mask:
        Nodes on levels below ``level`` that the selection depends on.
    descendant_mask:
        Nodes on levels above ``level`` that depend on the selection.
    """

    level: int
    tokens: tuple[int, ...]
    head: tuple[int, int] | None
    ancestor_mask: np.ndarray = field(repr=False)
    descendant_mask: np.ndarray = field(repr=False)
    graph: AttentionGraph = field(repr=False)

    @cached_property
    def selected_mask(self) -> np.ndarray:
        m = np.zeros_like(self.ancestor_mask)
        m[self.level, list(self.tokens)] = True
        return m

    @cached_property
    def mask(self) -> np.ndarray:
        """bool ``[L + 1, n]``: every node of the trace (selection, ancestors and descendants)."""
        return self.ancestor_mask | self.descendant_mask | self.selected_mask

    @cached_property
    def ancestors(self) -> set[Node]:
        """``(level, token)`` nodes below the selection that it depends on."""
        return mask_to_nodes(self.ancestor_mask)

    @cached_property
    def descendants(self) -> set[Node]:
        """``(level, token)`` nodes above the selection that depend on it."""
        return mask_to_nodes(self.descendant_mask)

    @cached_property
    def selected(self) -> set[Node]:
        return {(self.level, t) for t in self.tokens}

    @cached_property
    def nodes(self) -> set[Node]:
        """``ancestors | descendants | selected``."""
        return self.ancestors | self.descendants | self.selected

    @property
    def flat_indices(self) -> np.ndarray:
        """The trace's nodes as ascending flat indices ``level * n + token`` (compact to ship to a browser)."""
        return np.flatnonzero(self.mask)

    @cached_property
    def edges(self) -> list[Edge]:
        """The edges the traversal used, ordered by layer then ``(a, b)``.

        Each edge lists only the heads that carry it in this traversal (with ``head=(layer, h)``, only
        ``h`` at that layer).
        """
        g, sel = self.graph, self.selected_mask
        out: list[Edge] = []
        for k in range(g.L):
            if k < self.level:  # below the selection: from the selection/ancestors down to ancestors
                src, dst = self.ancestor_mask[k + 1] | sel[k + 1], self.ancestor_mask[k]
            else:  # above: from descendants down to descendants or the selection
                src, dst = self.descendant_mask[k + 1], self.descendant_mask[k] | sel[k]
            if src.any() and dst.any():
                out.extend(g.edges_between(k, src, dst, self.head))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (
            self.level == other.level
            and self.tokens == other.tokens
            and self.head == other.head
            and np.array_equal(self.ancestor_mask, other.ancestor_mask)
            and np.array_equal(self.descendant_mask, other.descendant_mask)
        )

    __hash__ = None  # type: ignore[assignment]


def readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
