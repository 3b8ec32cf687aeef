"""The Attention Graph on small hand-made attention tensors, with every answer worked out by hand.

The main example ``ATTN`` has L=3 layers, H=2 heads, n=5 tokens, root 0 and τ=0.3. Only the weights
listed below are non-zero (rows need not sum to 1 for the graph's rules). ``attn[k, h, a, b]``: query a,
key b, layer k.

    layer 2 (level 3 = {0} attends):
        h0: 0->0 .5, 0->1 .5
        h1: 0->1 .6, 0->2 .2 (<= τ), 0->0 .2 (<= τ)
      => level 2 = {0, 1}
    layer 1 (level 2 = {0, 1} attends):
        h0: 0->2 .9, 1->1 .4, 1->3 .4
        h1: 0->2 .7, 1->2 .35, 4->4 .9 (4 is not in level 2: ignored)
      => level 1 = {1, 2, 3}
    layer 0 (level 1 = {1, 2, 3} attends):
        h0: 1->0 .8, 2->4 .5, 3->4 .31
        h1: 2->4 .3 (== τ, not > τ), 3->3 .5, 0->1 .9 (0 is not in level 1: ignored)
      => level 0 = {0, 3, 4}

Edges (layer, a -> b, carrying heads):
    layer 2: 0->0 (0,), 0->1 (0, 1)
    layer 1: 0->2 (0, 1), 1->1 (0,), 1->2 (1,), 1->3 (0,)
    layer 0: 1->0 (0,), 2->4 (0,), 3->3 (1,), 3->4 (0,)
"""

from __future__ import annotations

import numpy as np
import pytest

from attnflows_panel.graph import AttentionGraph, Edge, PathResult, Trace

TAU = 0.3


def make_attn() -> np.ndarray:
    a = np.zeros((3, 2, 5, 5))
    # layer 2
    a[2, 0, 0, 0] = 0.5
    a[2, 0, 0, 1] = 0.5
    a[2, 1, 0, 1] = 0.6
    a[2, 1, 0, 2] = 0.2
    a[2, 1, 0, 0] = 0.2
    # layer 1
    a[1, 0, 0, 2] = 0.9
    a[1, 0, 1, 1] = 0.4
    a[1, 0, 1, 3] = 0.4
    a[1, 1, 0, 2] = 0.7
    a[1, 1, 1, 2] = 0.35
    a[1, 1, 4, 4] = 0.9
    # layer 0
    a[0, 0, 1, 0] = 0.8
    a[0, 0, 2, 4] = 0.5
    a[0, 0, 3, 4] = 0.31
    a[0, 1, 2, 4] = 0.3
    a[0, 1, 3, 3] = 0.5
    a[0, 1, 0, 1] = 0.9
    return a


@pytest.fixture
def g() -> AttentionGraph:
    return AttentionGraph.build(make_attn(), tau=TAU)


# ---------------------------------------------------------------- §4.1 levels, edges


def test_levels_built_backwards_from_cls(g):
    assert (g.L, g.H, g.n, g.tau, g.root) == (3, 2, 5, TAU, 0)
    assert [lv.tolist() for lv in g.levels] == [[0, 3, 4], [1, 2, 3], [0, 1], [0]]
    expected_member = np.zeros((4, 5), bool)
    for k, lv in enumerate([[0, 3, 4], [1, 2, 3], [0, 1], [0]]):
        expected_member[k, lv] = True
    np.testing.assert_array_equal(g.member, expected_member)
    assert g.heads.shape == (3, 2) and g.heads.all()
    assert g.num_nodes == 9 and list(g.nodes())[0] == (0, 0)


def test_weight_equal_to_tau_is_not_an_edge(g):
    # attn[0, 1, 2, 4] == τ exactly: head 1 does not carry 2 -> 4, only head 0 (.5) does.
    assert not g.active[0, 1, 2, 4]
    assert Edge(0, 2, 4, (0,)) in g.edges(0)


def test_rows_of_tokens_outside_the_level_are_ignored(g):
    # token 4 is not in level 2, so its .9 self-attention in layer 1 creates nothing;
    # token 0 is not in level 1, so its .9 on token 1 in layer 0 creates nothing.
    assert not g.active[1, 1, 4, 4] and not g.active[0, 1, 0, 1]
    assert not g.member[1, 4] and not g.member[0, 1]


def test_edges_with_carrying_heads(g):
    assert g.edges(2) == [Edge(2, 0, 0, (0,)), Edge(2, 0, 1, (0, 1))]
    assert g.edges(1) == [Edge(1, 0, 2, (0, 1)), Edge(1, 1, 1, (0,)), Edge(1, 1, 2, (1,)), Edge(1, 1, 3, (0,))]
    assert g.edges(0) == [Edge(0, 1, 0, (0,)), Edge(0, 2, 4, (0,)), Edge(0, 3, 3, (1,)), Edge(0, 3, 4, (0,))]
    assert g.edge_count() == 10
    a, b, heads, w = g.edge_array(1)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(0, 2), (1, 1), (1, 2), (1, 3)]
    assert heads.tolist() == [[True, True], [True, False], [False, True], [True, False]]
    np.testing.assert_allclose(w[2], [0.0, 0.35])  # 1->2: head 0 weight 0, head 1 weight .35


def test_active_matches_definition(g):
    # active[k, h, a, b] == a in level k+1 and attn > τ (all heads allowed here)
    attn = make_attn()
    for k in range(3):
        expect = (attn[k] > TAU) & g.member[k + 1][None, :, None]
        np.testing.assert_array_equal(g.active[k], expect)


def test_graph_arrays_are_read_only(g):
    with pytest.raises(ValueError):
        g.member[0, 1] = True
    with pytest.raises(ValueError):
        g.counts[0, 0] = 7


def test_head_mask_removes_a_head(g):
    # Disallow head 0 at layer 2: the root keeps only head 1's 0 -> 1 (.6), so level 2 = {1}.
    # Layer 1 from {1}: h0 1->1, 1->3; h1 1->2  => level 1 = {1, 2, 3}.
    # Layer 0 as before => level 0 = {0, 3, 4}.
    mask = np.ones((3, 2), bool)
    mask[2, 0] = False
    gm = AttentionGraph.build(make_attn(), tau=TAU, heads=mask)
    assert [lv.tolist() for lv in gm.levels] == [[0, 3, 4], [1, 2, 3], [1], [0]]
    assert gm.edges(2) == [Edge(2, 0, 1, (1,))]
    assert gm.glyphs(3)[0].tolist() == [0, 1]  # the masked head's glyph is 0
    np.testing.assert_array_equal(gm.heads, mask)


def test_fully_masked_layer_leaves_lower_levels_empty():
    mask = np.ones((3, 2), bool)
    mask[1] = False
    gm = AttentionGraph.build(make_attn(), tau=TAU, heads=mask)
    assert [lv.tolist() for lv in gm.levels] == [[], [], [0, 1], [0]]
    assert gm.edges(1) == [] and gm.edges(0) == []


def test_other_root():
    # Root 1 at level 3: layer 2 row 1 is all zero, so every level below is empty.
    g1 = AttentionGraph.build(make_attn(), tau=TAU, root=1)
    assert [lv.tolist() for lv in g1.levels] == [[], [], [], [1]]
    assert g1.counts.sum() == 0


# ---------------------------------------------------------------- §4.2 counts (eq. 3), influence (eq. 4)


def test_counts_eq3(g):
    # counts[k, w] = Σ_{a in level k+1} #{h : attn[k,h,a,w] > τ}
    # layer 2: w0 <- h0 from 0 (1); w1 <- h0, h1 from 0 (2)
    # layer 1: w1 <- h0 from 1 (1); w2 <- h0, h1 from 0 and h1 from 1 (3); w3 <- h0 from 1 (1)
    # layer 0: w0 <- h0 from 1 (1); w3 <- h1 from 3 (1); w4 <- h0 from 2 and h0 from 3 (2)
    np.testing.assert_array_equal(g.counts, [[1, 0, 0, 1, 2], [0, 1, 3, 1, 0], [1, 2, 0, 0, 0]])
    assert g.counts.dtype.kind == "i"


def test_influence_eq4(g):
    # I[k] = 1/(L-k) Σ_{k'=k}^{L-1} α^{L-1-k'} counts[k'],  L = 3, α = .5
    # k=2: 1/1 * counts[2]                         = [1, 2, 0, 0, 0]
    # k=1: 1/2 * (.5 counts[1] + counts[2])         = 1/2 [1, 2.5, 1.5, .5, 0]
    # k=0: 1/3 * (.25 counts[0] + .5 counts[1] + counts[2]) = 1/3 [1.25, 2.5, 1.5, .75, .5]
    infl = g.influence(0.5)
    np.testing.assert_allclose(infl[2], [1, 2, 0, 0, 0])
    np.testing.assert_allclose(infl[1], [0.5, 1.25, 0.75, 0.25, 0])
    np.testing.assert_allclose(infl[0], np.array([1.25, 2.5, 1.5, 0.75, 0.5]) / 3)
    # α = 1: plain average of counts from k up; k=0: 1/3 [2, 3, 3, 2, 2]
    np.testing.assert_allclose(g.influence(1.0)[0], np.array([2, 3, 3, 2, 2]) / 3)


def test_ratings_are_ceil_of_influence(g):
    # ceil of the rows above
    assert g.ratings(2).tolist() == [1, 2, 0, 0, 0]
    assert g.ratings(1).tolist() == [1, 2, 1, 1, 0]
    assert g.ratings(0).tolist() == [1, 1, 1, 1, 1]


def test_ratings_clamped_at_five():
    # L=1, H=12: the root attends to token 1 with all 12 heads (.6 each) and to itself with none.
    # counts[0] = [0, 12] -> I_0 = 12 -> rating min(5, 12) = 5. An integer influence rates itself:
    # with 3 heads, I = 3 exactly and the rating is 3, not 4.
    a = np.zeros((1, 12, 2, 2))
    a[0, :, 0, 1] = 0.6
    assert AttentionGraph.build(a).ratings(0).tolist() == [0, 5]
    a[0, 3:, 0, 1] = 0.1
    assert AttentionGraph.build(a).ratings(0).tolist() == [0, 3]


def test_ratings_tolerate_float_noise():
    # L=3, H=10, n=3. Root 0 -> 1 (layer 2, one head); 1 -> 2 (layer 1, one head); 2 -> 2 (layer 0,
    # ten heads). Token 2: counts = (c_0, c_1, c_2) = (10, 1, 0). With α = .9:
    # I_0(2) = 1/3 (.81 * 10 + .9 * 1 + 0) = 9/3 = 3 exactly, but 3.0000000000000004 in floats.
    # The rating is 3 (ceil would say 4 without the tolerance for float noise).
    a = np.zeros((3, 10, 3, 3))
    a[2, 0, 0, 1] = 0.9
    a[1, 0, 1, 2] = 0.9
    a[0, :, 2, 2] = 0.9
    g2 = AttentionGraph.build(a)
    assert g2.counts[:, 2].tolist() == [10, 1, 0]
    assert g2.influence(0.9)[0, 2] == pytest.approx(3.0)
    assert g2.ratings(0, alpha=0.9)[2] == 3


# ---------------------------------------------------------------- §4.3.2 glyphs and sparklines


def test_glyphs(g):
    # glyphs(k)[w, h] = #tokens of level k-1 that w (level k) attends to via head h of layer k-1
    assert g.glyphs(3).tolist() == [[2, 1], [0, 0], [0, 0], [0, 0], [0, 0]]  # root: h0 {0,1}, h1 {1}
    # level 2 via layer 1: 0: h0 {2}, h1 {2}; 1: h0 {1, 3}, h1 {2}; 4 is not in level 2 -> 0
    assert g.glyphs(2).tolist() == [[1, 1], [2, 1], [0, 0], [0, 0], [0, 0]]
    # level 1 via layer 0: 1: h0 {0}; 2: h0 {4} (h1's .3 == τ); 3: h0 {4}, h1 {3}
    assert g.glyphs(1).tolist() == [[0, 0], [1, 0], [1, 0], [1, 1], [0, 0]]
    assert g.glyphs(0).tolist() == [[0, 0]] * 5
    assert g.glyphs(0).shape == (g.n, g.H)


def test_sparkline_attended(g):
    # token 1 at level 2 attends via layer 1 to 1 (h0), 2 (h1), 3 (h0): x = (b - 1)/4
    x, y = g.sparkline(2, 1, direction="attended")
    np.testing.assert_allclose(x, [0.0, 0.25, 0.5])
    assert y.tolist() == [1, 1, 1]
    # the root attends to 0 (h0) and 1 (h0, h1)
    x, y = g.sparkline(3, 0, direction="attended")
    np.testing.assert_allclose(x, [0.0, 0.25])
    assert y.tolist() == [1, 2]
    # level 0 has nothing below
    x, y = g.sparkline(0, 4, direction="attended")
    assert x.size == 0 and y.size == 0


def test_sparkline_attending_reads_columns(g):
    # token 2 at level 1 is attended via layer 1 by 0 (h0, h1) and 1 (h1): x = (a - 2)/4
    assert [v.tolist() for v in g.sparkline(1, 2)] == [v.tolist() for v in g.sparkline(1, 2, direction="attending")]
    x, y = g.sparkline(1, 2, direction="attending")
    np.testing.assert_allclose(x, [-0.5, -0.25])
    assert y.tolist() == [2, 1]
    assert g.sparkline(3, 0, direction="attending")[0].size == 0  # nothing above the root


def test_sparkline_heights_clamped_at_three():
    # n=3, root 0 attends to token 2 with 4 heads and to itself with 1: heights [1, 0, 3 (clamped 4)]
    a = np.zeros((1, 4, 3, 3))
    a[0, :, 0, 2] = 0.5
    a[0, 0, 0, 0] = 0.5
    g3 = AttentionGraph.build(a)
    x, y = g3.sparkline(1, 0, direction="attended")
    np.testing.assert_allclose(x, [0.0, 1.0])
    assert y.tolist() == [1, 3]
    assert g3.sparkline_heights(1, direction="attended")[0].tolist() == [1, 0, 3]
    assert g3.sparkline(0, 2, direction="attending")[1].tolist() == [3]  # x = (0 - 2)/2 = -1


def test_sparklines_bulk_equals_single(g):
    for k in range(g.L + 1):
        for direction in ("attended", "attending"):
            bulk = g.sparklines(k, direction)
            assert sorted(bulk) == g.levels[k].tolist()
            for w, (x, y) in bulk.items():
                x1, y1 = g.sparkline(k, w, direction)
                np.testing.assert_array_equal(x, x1)
                np.testing.assert_array_equal(y, y1)


# ---------------------------------------------------------------- §4.4.1 traversals


def test_trace_plain(g):
    # (1, 2): below, 2 attends via layer 0 to 4 (h0)                      -> ancestors {(0, 4)}
    # above, attended via layer 1 by 0 (h0, h1) and 1 (h1) -> level 2 {0, 1};
    # those are attended via layer 2 by the root                          -> descendants + (3, 0)
    t = g.trace(1, 2)
    assert isinstance(t, Trace)
    assert t.ancestors == {(0, 4)}
    assert t.descendants == {(2, 0), (2, 1), (3, 0)}
    assert t.nodes == {(1, 2), (0, 4), (2, 0), (2, 1), (3, 0)}
    assert t.edges == [
        Edge(0, 2, 4, (0,)),
        Edge(1, 0, 2, (0, 1)),
        Edge(1, 1, 2, (1,)),
        Edge(2, 0, 0, (0,)),
        Edge(2, 0, 1, (0, 1)),
    ]
    assert g.ancestors(1, 2) == t.ancestors and g.descendants(1, 2) == t.descendants
    np.testing.assert_array_equal(t.flat_indices, sorted(lv * 5 + w for lv, w in t.nodes))


def test_trace_of_root_and_of_level_zero(g):
    # the root depends on everything; nothing depends on it
    t = g.trace(3, 0)
    assert t.descendants == set()
    assert t.ancestors == {(2, 0), (2, 1), (1, 1), (1, 2), (1, 3), (0, 0), (0, 3), (0, 4)}
    # (0, 0): attended by 1 (level 1), which is attended by 1 (level 2), attended by the root
    t0 = g.trace(0, 0)
    assert t0.ancestors == set()
    assert t0.descendants == {(1, 1), (2, 1), (3, 0)}


def test_trace_head_restricted_below(g):
    # (2, 1) plain: level 1 {1, 2, 3}; level 0: 1 -> 0, 2 -> 4, 3 -> 3, 4 => {0, 3, 4}
    assert g.ancestors(2, 1) == {(1, 1), (1, 2), (1, 3), (0, 0), (0, 3), (0, 4)}
    # only head 0 connects layer 1: 1 -> {1, 3} (2 was head 1's); layer 0 uses both heads:
    # 1 -> 0, 3 -> 3, 4 => level 0 {0, 3, 4}
    t = g.trace(2, 1, head=(1, 0))
    assert t.ancestors == {(1, 1), (1, 3), (0, 0), (0, 3), (0, 4)}
    assert Edge(1, 1, 1, (0,)) in t.edges and all(e.heads == (0,) for e in t.edges if e.layer == 1)
    # only head 1 connects layer 0 (two layers down); layer 1 uses both heads -> level 1 {1, 2, 3};
    # via head 1 only 3 -> 3 survives (2 -> 4 at .3 is not > τ)
    t = g.trace(2, 1, head=(0, 1))
    assert t.ancestors == {(1, 1), (1, 2), (1, 3), (0, 3)}
    assert [e for e in t.edges if e.layer == 0] == [Edge(0, 3, 3, (1,))]
    # descendants are above the restricted layer, unchanged
    assert t.descendants == {(3, 0)}


def test_trace_head_restricted_above(g):
    # (1, 3) is attended only by 1 via head 0 of layer 1
    assert g.descendants(1, 3) == {(2, 1), (3, 0)}
    assert g.descendants(1, 3, head=(1, 0)) == {(2, 1), (3, 0)}
    assert g.descendants(1, 3, head=(1, 1)) == set()
    # (2, 0) is attended by the root only via head 0 (head 1's .2 is below τ)
    assert g.descendants(2, 0, head=(2, 1)) == set()
    assert g.trace(2, 0, head=(2, 0)).edges[-1] == Edge(2, 0, 0, (0,))


def test_trace_brushed_intersection(g):
    # brush {0, 1} at level 2: 0 -> {2}, 1 -> {1, 2, 3}; intersection {2}; then 2 -> {4}
    t = g.trace(2, [0, 1])
    assert t.ancestors == {(1, 2), (0, 4)}
    assert t.descendants == {(3, 0)}  # the root attends to both
    assert t.tokens == (0, 1) and t.selected == {(2, 0), (2, 1)}
    assert [e for e in t.edges if e.layer == 1] == [Edge(1, 0, 2, (0, 1)), Edge(1, 1, 2, (1,))]
    # brush {1, 2} at level 1: below, 1 -> {0}, 2 -> {4}: empty intersection, although each token alone
    # has ancestors. Above: attended by {1} and {0, 1} -> {1}; then the root.
    t = g.trace(1, [2, 1])
    assert t.ancestors == set()
    assert g.ancestors(1, 1) and g.ancestors(1, 2)
    assert t.descendants == {(2, 1), (3, 0)}
    assert t.edges == [Edge(1, 1, 1, (0,)), Edge(1, 1, 2, (1,)), Edge(2, 0, 1, (0, 1))]
    # a brush of one token is the plain trace; duplicates collapse
    assert g.trace(2, [1, 1]) == g.trace(2, 1)


def test_brush_intersects_before_the_traversal_goes_on():
    # H=1, n=5, L=3: root 0 -> {1, 2}; 1 -> 3 and 2 -> 4 (layer 1); 3 -> 0 and 4 -> 0 (layer 0).
    # Brushing {1, 2} at level 2 intersects at level 1 first: {3} ∩ {4} = ∅, so the traversal stops
    # there, even though both tokens alone reach (0, 0) two levels down (§4.4.1: "the intersection is
    # performed at each layer before continuing traversal at the next layer").
    a = np.zeros((3, 1, 5, 5))
    a[2, 0, 0, [1, 2]] = 0.5
    a[1, 0, 1, 3] = a[1, 0, 2, 4] = 0.9
    a[0, 0, 3, 0] = a[0, 0, 4, 0] = 0.9
    g5 = AttentionGraph.build(a)
    assert g5.ancestors(2, 1) & g5.ancestors(2, 2) == {(0, 0)}
    assert g5.ancestors(2, [1, 2]) == set()
    assert g5.descendants(2, [1, 2]) == {(3, 0)}


def test_all_traces_equal_single_traces(g):
    at = g.all_traces()
    assert set(at) == set(g.nodes())
    for (level, w), t in at.items():
        assert t == g.trace(level, w)
        assert t.edges == g.trace(level, w).edges
    heads = g.all_head_traces()
    # one key per lit head glyph (see test_glyphs): level 3 has 2, level 2 has 4, level 1 has 4
    lit = {(k, w, h) for k in range(1, 4) for w, h in zip(*np.nonzero(g.glyphs(k)), strict=True)}
    assert set(heads) == lit and len(heads) == 10
    for (level, w, h), t in heads.items():
        assert t == g.trace(level, w, head=(level - 1, h))


# ---------------------------------------------------------------- §4.4.2 paths


def test_paths_adjacent(g):
    # token 1 at level 2 and {1, 2, 3} at level 1: the three edges of layer 1 from 1 (Fig. 7)
    r = g.paths(2, 1, 1, [1, 2, 3])
    assert isinstance(r, PathResult)
    assert r.edges == [Edge(1, 1, 1, (0,)), Edge(1, 1, 2, (1,)), Edge(1, 1, 3, (0,))]
    assert r.nodes == {(2, 1), (1, 1), (1, 2), (1, 3)}
    assert r.heads == {1: (0, 1)}
    assert r.intermediate == set()
    # several tokens on the upper side, and arguments in either order
    r = g.paths(1, 2, 2, [0, 1])
    assert r.edges == [Edge(1, 0, 2, (0, 1)), Edge(1, 1, 2, (1,))]
    # no edge between the selections
    assert g.paths(2, 0, 1, 3) == PathResult(set(), [])


def test_paths_non_adjacent(g):
    # root (3, 0) to (0, 4). From the root down: level 2 {0, 1}, level 1 {1, 2, 3}.
    # Up from (0, 4): level 1 {2, 3} (2 -> 4, 3 -> 4), level 2 {0, 1} (0 -> 2, 1 -> 2, 1 -> 3).
    # On the paths: level 2 {0, 1}, level 1 {2, 3}.
    r = g.paths(3, 0, 0, 4)
    assert r.nodes == {(3, 0), (2, 0), (2, 1), (1, 2), (1, 3), (0, 4)}
    assert r.intermediate == {(2, 0), (2, 1), (1, 2), (1, 3)}
    assert r.edges == [
        Edge(0, 2, 4, (0,)),
        Edge(0, 3, 4, (0,)),
        Edge(1, 0, 2, (0, 1)),
        Edge(1, 1, 2, (1,)),
        Edge(1, 1, 3, (0,)),
        Edge(2, 0, 0, (0,)),
        Edge(2, 0, 1, (0, 1)),
    ]
    assert r.heads == {0: (0,), 1: (0, 1), 2: (0, 1)}
    assert g.paths(0, 4, 3, 0) == r  # order of the two selections does not matter


def test_paths_several_tokens_per_side(g):
    # Root to {3, 4} at level 0: level 1 must attend to both 3 and 4 -> {3} (3 -> 3 h1, 3 -> 4 h0);
    # level 2 must lie between: attends to 3 -> {1}.
    r = g.paths(3, 0, 0, [3, 4])
    assert r.nodes == {(3, 0), (2, 1), (1, 3), (0, 3), (0, 4)}
    assert r.edges == [Edge(0, 3, 3, (1,)), Edge(0, 3, 4, (0,)), Edge(1, 1, 3, (0,)), Edge(2, 0, 1, (0, 1))]
    # {0, 1} at level 2 to (0, 4): level 1 must be attended by both 0 and 1 -> {2}; 2 -> 4.
    r = g.paths(2, [0, 1], 0, 4)
    assert r.nodes == {(2, 0), (2, 1), (1, 2), (0, 4)}
    assert r.edges == [Edge(0, 2, 4, (0,)), Edge(1, 0, 2, (0, 1)), Edge(1, 1, 2, (1,))]


def test_paths_none(g):
    # (2, 0) reaches only (1, 2) and then (0, 4); (0, 0) is reached only from (1, 1)
    assert g.paths(2, 0, 0, 0) == PathResult(set(), [])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "attn, match",
    [
        (np.zeros((3, 2, 5)), "4-d array"),
        (np.zeros((1, 3, 2, 5, 5)), "4-d array"),
        (np.zeros((3, 2, 5, 4)), "square"),
        (np.zeros((0, 2, 5, 5)), "at least one layer"),
        (np.zeros((3, 2, 5, 5), dtype=np.int64), "floating-point"),
        (np.full((3, 2, 5, 5), np.nan), "NaN"),
        (np.full((3, 2, 5, 5), -0.5), r"\[0, 1\]"),
        (np.full((3, 2, 5, 5), 3.0), r"\[0, 1\]"),
        (np.full((3, 2, 5, 5), np.inf), r"\[0, 1\]"),
    ],
)
def test_bad_attention(attn, match):
    with pytest.raises(ValueError, match=match):
        AttentionGraph.build(attn)


def test_single_nan_is_caught():
    a = make_attn()
    a[1, 0, 3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        AttentionGraph.build(a)


@pytest.mark.parametrize("tau", [-0.1, 1.0, 1.5, float("nan"), "high"])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        AttentionGraph.build(make_attn(), tau=tau)


@pytest.mark.parametrize(
    "heads, match",
    [
        (np.ones((2, 2), bool), r"shape \[L, H\]"),
        (np.ones((3, 3), bool), r"shape \[L, H\]"),
        (np.ones(6, bool), r"shape \[L, H\]"),
        (np.ones((3, 2)), "boolean"),
    ],
)
def test_bad_heads_mask(heads, match):
    with pytest.raises(ValueError, match=match):
        AttentionGraph.build(make_attn(), heads=heads)


@pytest.mark.parametrize("root", [5, -1, 2.0, True])
def test_bad_root(root):
    with pytest.raises(ValueError, match="root"):
        AttentionGraph.build(make_attn(), root=root)


def test_bad_traversal_arguments(g):
    with pytest.raises(ValueError, match="not in level 1"):
        g.trace(1, 0)
    with pytest.raises(ValueError, match="not in level 0"):
        g.trace(0, [0, 1])  # 0 is, 1 is not
    with pytest.raises(ValueError, match="out of range"):
        g.trace(1, 9)
    with pytest.raises(ValueError, match="level 4 is out of range"):
        g.trace(4, 0)
    with pytest.raises(ValueError, match="at least one token"):
        g.trace(1, [])
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        g.trace(1, 2, head=(3, 0))
    with pytest.raises(ValueError, match="head 2 is out of range"):
        g.trace(1, 2, head=(0, 2))
    with pytest.raises(ValueError, match="pair"):
        g.trace(1, 2, head=5)
    with pytest.raises(ValueError, match="two different levels"):
        g.paths(1, 2, 1, 3)
    with pytest.raises(ValueError, match="not in level 0"):
        g.paths(3, 0, 0, 1)
    with pytest.raises(ValueError, match="not in level 2"):
        g.sparkline(2, 3)
    with pytest.raises(ValueError, match="direction"):
        g.sparkline(2, 1, direction="sideways")
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        g.edges(3)
    with pytest.raises(ValueError, match="layer -1 is out of range"):
        g.ratings(-1)
    with pytest.raises(ValueError, match="level 5 is out of range"):
        g.glyphs(5)
    with pytest.raises(ValueError, match="alpha"):
        g.influence(1.5)
    with pytest.raises(ValueError, match="alpha"):
        g.ratings(0, alpha=-0.1)
    with pytest.raises(ValueError, match="integer"):
        g.trace(1.0, 2)
