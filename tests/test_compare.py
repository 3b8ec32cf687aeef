"""Model comparison (§4.2, §4.3.3, §4.4) on two hand-made graphs, answers worked out by hand.

Both graphs: L=2, H=2, n=4, root 0, τ=0.3. Only the listed weights are non-zero.

    pre-trained                          fine-tuned
    layer 1: h0 0->1 .6, h1 0->2 .5      layer 1: h0 0->1 .8, h1 0->3 .5
      level 1 = {1, 2}                     level 1 = {1, 3}
    layer 0: h0 1->3 .7, h1 2->2 .4      layer 0: h0 1->3 .5, h0 1->0 .4, h1 3->0 .6
      level 0 = {2, 3}                     level 0 = {0, 3}

Union per level (PRE=1, FINE=2, BOTH=3):
    level 2: 0 both
    level 1: 1 both, 2 pre, 3 fine
    level 0: 0 fine, 2 pre, 3 both
"""

from __future__ import annotations

import numpy as np
import pytest

from attnflows_panel.compare import BOTH, FINE, NONE, PRE, CodedNodes, CompareEdge, GraphComparison
from attnflows_panel.graph import AttentionGraph, Edge


def pre_attn() -> np.ndarray:
    a = np.zeros((2, 2, 4, 4))
    a[1, 0, 0, 1] = 0.6
    a[1, 1, 0, 2] = 0.5
    a[0, 0, 1, 3] = 0.7
    a[0, 1, 2, 2] = 0.4
    return a


def fine_attn() -> np.ndarray:
    a = np.zeros((2, 2, 4, 4))
    a[1, 0, 0, 1] = 0.8
    a[1, 1, 0, 3] = 0.5
    a[0, 0, 1, 3] = 0.5
    a[0, 0, 1, 0] = 0.4
    a[0, 1, 3, 0] = 0.6
    return a


@pytest.fixture
def c() -> GraphComparison:
    return GraphComparison(AttentionGraph.build(pre_attn()), AttentionGraph.build(fine_attn()))


def test_codes_are_bit_flags():
    assert (NONE, PRE, FINE, BOTH) == (0, 1, 2, 3) and PRE | FINE == BOTH


def test_membership_and_union_levels(c):
    assert [lv.tolist() for lv in c.pre.levels] == [[2, 3], [1, 2], [0]]
    assert [lv.tolist() for lv in c.fine.levels] == [[0, 3], [1, 3], [0]]
    np.testing.assert_array_equal(c.membership, [[FINE, NONE, PRE, BOTH], [NONE, BOTH, PRE, FINE], [BOTH, 0, 0, 0]])
    assert [lv.tolist() for lv in c.levels] == [[0, 2, 3], [1, 2, 3], [0]]


def test_glyph_states(c):
    # root (level 2) via layer 1: head 0 attends to {1} in both; head 1 to {2} (pre) and {3} (fine):
    # both heads are lit in both models -> split glyphs.
    assert c.glyph_states(2)[0].tolist() == [BOTH, BOTH]
    # level 1 via layer 0:
    #   token 1: h0 -> {3} (pre), {3, 0} (fine)  -> BOTH; h1 -> nothing -> NONE
    #   token 2 (pre only): h1 -> {2}             -> PRE on h1
    #   token 3 (fine only): h1 -> {0}            -> FINE on h1
    assert c.glyph_states(1).tolist() == [[NONE, NONE], [BOTH, NONE], [NONE, PRE], [NONE, FINE]]
    assert c.glyph_states(0).tolist() == [[NONE, NONE]] * 4
    pre, fine = c.glyph_counts(1)
    assert pre[1].tolist() == [1, 0] and fine[1].tolist() == [2, 0]  # the glyph colours differ


def test_edges_union(c):
    assert c.edges(1) == [
        CompareEdge(1, 0, 1, (0,), (0,), BOTH),
        CompareEdge(1, 0, 2, (1,), (), PRE),
        CompareEdge(1, 0, 3, (), (1,), FINE),
    ]


def test_trace_shared_token(c):
    # (0, 3) in both: each model: attended by 1 at level 1, which the root attends to.
    r = c.trace(0, 3)
    assert isinstance(r, CodedNodes)
    assert r == {(0, 3): BOTH, (1, 1): BOTH, (2, 0): BOTH}
    assert r.mask[1, 1] == BOTH and r.mask.sum() == 9


def test_trace_token_of_one_model_equals_single_view(c):
    # (0, 0) only in the fine-tuned graph: attended by 1 (h0) and 3 (h1), both attended by the root.
    r = c.trace(0, 0)
    assert r == {(0, 0): FINE, (1, 1): FINE, (1, 3): FINE, (2, 0): FINE}
    single = c.fine.trace(0, 0)
    assert set(r) == single.nodes
    assert r.edges[PRE] == [] and r.edges[FINE] == single.edges
    assert r.edges[FINE] == [Edge(0, 1, 0, (0,)), Edge(0, 3, 0, (1,)), Edge(1, 0, 1, (0,)), Edge(1, 0, 3, (1,))]


def test_trace_root_union(c):
    # pre: level 1 {1, 2}, level 0 {3 (via 1), 2 (via 2)}; fine: level 1 {1, 3}, level 0 {3, 0}.
    r = c.trace(2, 0)
    assert r == {
        (2, 0): BOTH,
        (1, 1): BOTH,
        (1, 2): PRE,
        (1, 3): FINE,
        (0, 2): PRE,
        (0, 3): BOTH,
        (0, 0): FINE,
    }
    # one model only (hovering one half of a split glyph)
    assert c.trace(2, 0, model="pre") == {(2, 0): PRE, (1, 1): PRE, (1, 2): PRE, (0, 2): PRE, (0, 3): PRE}
    assert c.trace(2, 0, model=FINE) == {(2, 0): FINE, (1, 1): FINE, (1, 3): FINE, (0, 3): FINE, (0, 0): FINE}
    assert c.trace(2, 0, model="both") == r


def test_trace_head_restricted(c):
    # only head 0 connects layer 1: both models reach just 1 at level 1; below, pre 1 -> 3,
    # fine 1 -> {3, 0}.
    r = c.trace(2, 0, head=(1, 0))
    assert r == {(2, 0): BOTH, (1, 1): BOTH, (0, 3): BOTH, (0, 0): FINE}
    assert all(e.heads == (0,) for code in (PRE, FINE) for e in r.edges[code] if e.layer == 1)


def test_trace_brush_per_model(c):
    # brush {1, 3} at level 1. pre holds only 1: its plain trace {(0, 3)} below, root above.
    # fine holds both: below, 1 -> {0, 3} and 3 -> {0}: intersection {0}; above, the root attends to both.
    r = c.trace(1, [1, 3])
    assert r == {(1, 1): BOTH, (1, 3): FINE, (0, 3): PRE, (0, 0): FINE, (2, 0): BOTH}


def test_paths_per_model(c):
    # root to (0, 3): in both models via (1, 1) with head 0 at each layer
    r = c.paths(2, 0, 0, 3)
    assert r == {(2, 0): BOTH, (1, 1): BOTH, (0, 3): BOTH}
    assert r.edges[PRE] == [Edge(0, 1, 3, (0,)), Edge(1, 0, 1, (0,))]
    assert r.edges[FINE] == [Edge(0, 1, 3, (0,)), Edge(1, 0, 1, (0,))]
    # root to (0, 0): only the fine-tuned graph holds (0, 0); paths via 1 (h0) and 3 (h1)
    r = c.paths(0, 0, 2, 0)
    assert r == {(2, 0): FINE, (1, 1): FINE, (1, 3): FINE, (0, 0): FINE}
    assert r.edges[PRE] == []
    # root to {0, 2}: each model joins only the selected tokens in its own graph
    # (pre: 2, via (1, 2); fine: 0, via (1, 1) and (1, 3))
    r = c.paths(2, 0, 0, [0, 2])
    assert r == {(2, 0): BOTH, (1, 2): PRE, (0, 2): PRE, (1, 1): FINE, (1, 3): FINE, (0, 0): FINE}
    # adjacent levels
    r = c.paths(2, 0, 1, [1, 2, 3])
    assert r == {(2, 0): BOTH, (1, 1): BOTH, (1, 2): PRE, (1, 3): FINE}
    assert r.edges[PRE] == [Edge(1, 0, 1, (0,)), Edge(1, 0, 2, (1,))]


def test_all_traces_match_single(c):
    at = c.all_traces()
    assert set(at) == {(k, int(w)) for k, lv in enumerate(c.levels) for w in lv}
    for (level, w), codes in at.items():
        np.testing.assert_array_equal(codes, c.trace(level, w).mask)


def test_ratings_shared_and_per_model(c):
    # pre counts: layer 1 [0, 1, 1, 0], layer 0 [0, 0, 1, 1]
    # fine counts: layer 1 [0, 1, 0, 1], layer 0 [2, 0, 0, 1]
    # I_0 = 1/2 (.5 counts[0] + counts[1]): pre [0, .5, .75, .25], fine [.5, .5, 0, .75]
    pre, fine, shared = c.ratings(0)
    assert pre.tolist() == [0, 1, 1, 1]
    assert fine.tolist() == [1, 1, 0, 1]
    assert shared.tolist() == [0, 1, 0, 1]
    pre, fine, shared = c.ratings(1)
    assert (pre.tolist(), fine.tolist(), shared.tolist()) == ([0, 1, 1, 0], [0, 1, 0, 1], [0, 1, 0, 0])


def test_ratings_paper_example():
    # §4.2: I = 2 for the pre-trained model and 4 for the fine-tuned one -> two orange circles, then two
    # purple. L=1, H=4: the root attends to token 1 with 2 heads (pre) and with 4 heads (fine).
    pre, fine = np.zeros((1, 4, 2, 2)), np.zeros((1, 4, 2, 2))
    pre[0, :2, 0, 1] = 0.5
    fine[0, :, 0, 1] = 0.5
    c = GraphComparison(AttentionGraph.build(pre), AttentionGraph.build(fine))
    p, f, shared = c.ratings(0)
    assert (p[1], f[1], shared[1]) == (2, 4, 2)
    assert f[1] - shared[1] == 2 and p[1] - shared[1] == 0  # two purple circles, no turquoise


def test_bad_input(c):
    g = AttentionGraph.build(pre_attn())
    with pytest.raises(ValueError, match="same sample"):
        GraphComparison(g, AttentionGraph.build(np.zeros((2, 2, 5, 5))))
    with pytest.raises(ValueError, match="same sample"):
        GraphComparison(g, AttentionGraph.build(np.zeros((3, 2, 4, 4))))
    with pytest.raises(ValueError, match="different roots"):
        GraphComparison(g, AttentionGraph.build(fine_attn(), root=1))
    with pytest.raises(ValueError, match="AttentionGraph"):
        GraphComparison(g, fine_attn())
    with pytest.raises(ValueError, match="neither model"):
        c.trace(0, 1)
    with pytest.raises(ValueError, match="neither model"):
        c.paths(2, 0, 0, [1, 3])
    with pytest.raises(ValueError, match="model must be"):
        c.trace(2, 0, model="teacher")
    with pytest.raises(ValueError, match="two different levels"):
        c.paths(1, 1, 1, 2)
    with pytest.raises(ValueError, match="level 3 is out of range"):
        c.trace(3, 0)
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        c.trace(2, 0, head=(2, 0))
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        c.ratings(2)
