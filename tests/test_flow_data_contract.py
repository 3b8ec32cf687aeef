"""What FlowData hands the radial component beyond the drawing (flow_data's module docstring): label
text and priority, runs of folded tokens, edge weights and the edges drawn at rest, and the highlight of
a head click (issue #25, defect 4)."""

from __future__ import annotations

import numpy as np
import pytest

from attnflows_panel.compare import BOTH, FINE, PRE
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.ring_labels import CONTENT, MINOR, PIECE, STOPWORD, token_classes, word_labels
from attnflows_panel.views.flow_data import FlowData, rest_edges


def _softmax(rng, shape, sharp):
    x = rng.random(shape) ** sharp
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(7)
    L, H, n = 5, 6, 30
    pre = AttentionGraph.build(_softmax(rng, (L, H, n, n), 7), tau=0.12)
    fine = AttentionGraph.build(_softmax(rng, (L, H, n, n), 7), tau=0.12)
    words = ["the", "vaccine", "was", "203", "##0", ",", "effective", "against", "severe", "illness"]
    tokens = ["[CLS]"] + [words[i % len(words)] for i in range(1, n - 1)] + ["[SEP]"]
    segments = [0] * 15 + [1] * 15
    return tokens, segments, pre, fine


def test_token_classes_and_word_labels():
    toks = ["[CLS]", "the", "vaccine", "203", "##0", ",", "un", "##heard", "##of", "[SEP]"]
    assert token_classes(toks).tolist() == [MINOR, STOPWORD, CONTENT, CONTENT, PIECE, MINOR, CONTENT, PIECE, PIECE,
                                            MINOR]
    # one ring holding everything: pieces joined on their word's first piece, "" on the rest
    pos = np.arange(len(toks))
    assert word_labels(toks, pos, np.zeros(len(toks), int)) == \
        ["[CLS]", "the", "vaccine", "2030", "", ",", "unheardof", "", "", "[SEP]"]
    # a ring missing "203" and "##heard": the pieces that remain read alone or join what follows them
    pos = np.array([4, 6, 8])
    assert word_labels(toks, pos, np.zeros(3, int)) == ["-0", "un", "-of"]
    pos = np.array([7, 8])
    assert word_labels(toks, pos, np.zeros(2, int)) == ["-heardof", ""]
    # pieces on different rings are never joined
    assert word_labels(toks, np.array([3, 4]), np.array([0, 1])) == ["203", "-0"]


def test_prio_puts_content_words_first_and_follows_influence(pair):
    tokens, segments, pre, fine = pair
    d = FlowData(tokens, segments, pre, fine, "combined")
    nd = d.columns("nodes")
    cls = token_classes(tokens)[nd["pos"]]
    prio, level = nd["prio"], nd["level"]
    below = level < d.L
    # within a ring, every content word outranks every punctuation or special token
    for k in range(d.L):
        ring = below & (level == k)
        if (ring & (cls == CONTENT)).any() and (ring & (cls == MINOR)).any():
            assert prio[ring & (cls == CONTENT)].min() > prio[ring & (cls == MINOR)].max()
    # within a class, a larger influence (clamped at 5) never ranks lower by more than the degree tie-break
    infl = np.maximum(d.influence[PRE], d.influence[FINE])[level[below], nd["pos"][below]]
    rest = prio[below] - 10.0 * cls[below]
    assert np.all(np.abs(rest - np.minimum(infl, 5.0)) < 1.0)
    assert prio[level == d.L][0] == prio.max()  # the root first
    # the display text: joined word pieces, "" where the word's label covers the piece
    lab = nd["label"]
    for i in np.flatnonzero(nd["pos"] == 4):  # "##0"
        prev = d.node_index[level[i], 3]
        assert (lab[i] == "") == (prev >= 0)
        if prev >= 0:
            assert lab[prev] == "2030"
        else:
            assert lab[i] == "-0"
    assert np.array_equal(nd["nchar"], [len(t) for t in lab])


def test_runs_fold_every_unreached_token_once(pair):
    tokens, segments, pre, fine = pair
    d = FlowData(tokens, segments, pre, fine, "combined")
    runs = d.columns("runs")
    seg = np.asarray(segments)
    for k in range(d.L):
        held = set(d.levels[k].tolist())
        if not held:
            assert not (runs["level"] == k).any()
            continue
        mine = runs["level"] == k
        covered = []
        for a, b, c in zip(runs["first_token"][mine], runs["last_token"][mine], runs["count"][mine], strict=True):
            assert c == b - a + 1 and seg[a] == seg[b]  # contiguous, one sentence
            covered.extend(range(a, b + 1))
        assert sorted(covered) == sorted(set(range(d.n)) - held)  # each unreached token in exactly one run
        # a run is a small arc: half a token's slot
        half = d.columns("nodes")["half"][d.columns("nodes")["level"] == k][0]
        assert np.allclose(runs["angle1"][mine] - runs["angle0"][mine], half)
    src = d.sources(ring_labels=False)["runs"]
    assert set(src) == {"level", "angle0", "angle1", "radius", "count", "first_token", "last_token"}
    assert "label" not in d.sources(ring_labels=False)["nodes"] and "label" in d.sources()["nodes"]


@pytest.mark.parametrize("masked", [False, True])
def test_edge_weight_and_rest(pair, masked):
    tokens, segments, pre, fine = pair
    if masked:  # a head mask: the weight is that of an allowed head, never of a masked one
        heads = np.ones((pre.L, pre.H), dtype=bool)
        heads[:, ::2] = False
        fine = AttentionGraph.build(np.asarray(fine.attn), tau=fine.tau, heads=heads)
    d = FlowData(tokens, segments, pre, fine, "combined")
    e = d.columns("edges")
    for i in range(0, len(e), 7):
        k, a, b = int(e["layer"][i]), int(e["a"][i]), int(e["b"][i])
        best = 0.0
        for g in (pre, fine):
            heads = g.active[k, :, a, b]
            if heads.any():
                best = max(best, float(g.attn[k, heads, a, b].max()))
        assert e["w"][i] == pytest.approx(best, rel=1e-6) and best > d.tau
    rest = e["rest"].astype(bool)
    # every lower node keeps its strongest incoming edge at rest (this small view is under the per-layer cap)
    for v in np.unique(e["v"]):
        into = np.flatnonzero(e["v"] == v)
        assert rest[into].sum() == 1 and e["w"][into[rest[into]]][0] == e["w"][into].max()
    # the cap per layer keeps the strongest
    layer = np.array([0, 0, 0, 0, 1, 1])
    lower = np.array([1, 2, 3, 3, 4, 5])
    w = np.array([0.5, 0.9, 0.2, 0.3, 0.4, 0.6])
    assert rest_edges(layer, lower, w, per_layer=2).tolist() == [1, 1, 0, 0, 1, 1]
    assert rest_edges(layer, lower, w, per_layer=1).tolist() == [0, 1, 0, 0, 0, 1]


def _rest_reference(layer, lower, w, per_layer):
    """rest_edges the plain way: per lower node its strongest incoming edge (ties: the first), then per layer
    the ``per_layer`` strongest of those (ties: the lower node with the smaller id)."""
    best = {}
    for i, (v, x) in enumerate(zip(lower.tolist(), np.clip(w, 0, 1).tolist(), strict=True)):
        if v not in best or x > best[v][0]:
            best[v] = (x, i)
    by_layer = {}
    for v, (x, i) in best.items():
        by_layer.setdefault(int(layer[i]), []).append((-x, v, i))
    out = np.zeros(len(layer), np.uint8)
    for picks in by_layer.values():
        for _, _, i in sorted(picks)[:per_layer]:
            out[i] = 1
    return out


@pytest.mark.parametrize("seed", range(6))
def test_rest_edges_equals_the_plain_rule(seed):
    rng = np.random.default_rng(seed)
    E, N = int(rng.integers(1, 400)), int(rng.integers(1, 60))
    layer = np.sort(rng.integers(0, 5, E))
    lower = rng.integers(0, N, E) + (70000 if seed == 5 else 0)  # node ids beyond 16 bits too
    w = (rng.choice([0.1, 0.2, 0.5, 1.0, 1.3], E) if seed % 2 else rng.random(E)).astype(np.float32)  # ties
    for per_layer in (1, 3, 48):
        assert rest_edges(layer, lower, w, per_layer).tolist() == _rest_reference(layer, lower, w, per_layer).tolist()


@pytest.mark.parametrize("mode", ["combined", "pretrained"])
def test_a_head_click_shows_that_heads_layer_in_both_models(pair, mode):
    """Issue #25 (4): a head glyph click shows what that head attends to above τ at its layer, in both
    models, coded by model (pre only, fine only, both), with the other heads dimmed: not a whole-graph
    trace of the clicked token."""
    tokens, segments, pre, fine = pair
    d = FlowData(tokens, segments, pre, fine if mode == "combined" else None, mode)
    graphs = {PRE: pre, FINE: fine} if mode == "combined" else {PRE: pre}
    layer = 2
    # a token of level 3 whose head h attends to something in some model
    nd = d.columns("nodes")
    gl = d.columns("glyphs")
    at = nd["level"][gl["node"]] == layer + 1
    h = int(gl["head"][at][0])
    tok = int(nd["pos"][gl["node"][at][0]])
    hl = d.highlight([[layer + 1, tok]], head=(layer, h))
    e = d.columns("edges")
    expected = {}
    for c, g in graphs.items():
        for a, b in zip(*np.nonzero(g.active[layer, h]), strict=True):
            expected[(int(a), int(b))] = expected.get((int(a), int(b)), 0) | c
    got = {(int(e["a"][i]), int(e["b"][i])): int(hl.edges[i]) for i in np.flatnonzero(hl.edges)}
    assert got == expected and expected
    assert set(e["layer"][hl.edges > 0].tolist()) == {layer}
    # only the head's end tokens light up: nothing on other levels (today's code lit a whole trace)
    lit_levels = set(nd["level"][hl.nodes > 0].tolist())
    assert lit_levels <= {layer, layer + 1}
    for (a, b), c in expected.items():
        assert hl.nodes[d.node_index[layer + 1, a]] & c and hl.nodes[d.node_index[layer, b]] & c
    # glyphs: head h on level layer+1 lit, every other glyph dimmed
    lit_g = np.flatnonzero(hl.glyphs)
    assert lit_g.size and set(gl["head"][lit_g].tolist()) == {h}
    assert set(nd["level"][gl["node"][lit_g]].tolist()) == {layer + 1}
    assert hl.origin[d.node_index[layer + 1, tok]] and hl.origin.sum() == 1
    if mode == "combined":
        codes = set(expected.values())
        assert codes <= {PRE, FINE, BOTH}
        assert "only pre-trained" in hl.message and "only fine-tuned" in hl.message
    assert f"head {h + 1} of layer {layer + 1}" in hl.message


def test_edges_are_the_same_for_a_non_contiguous_attention_array(pair):
    """FlowData reads the edges' heads and weights from the flat array when it can; a strided view of the
    same attention gives the same edges."""
    tokens, segments, pre, fine = pair
    attn = np.asarray(pre.attn)
    L, H, n, _ = attn.shape
    big = np.zeros((L, H, n + 3, n + 3), dtype=attn.dtype)
    big[:, :, :n, :n] = attn
    strided = big[:, :, :n, :n]
    assert not strided.flags.c_contiguous
    d1 = FlowData(tokens, segments, pre, fine, "combined")
    d2 = FlowData(tokens, segments, AttentionGraph.build(strided, tau=pre.tau), fine, "combined")
    for col in ("layer", "a", "b", "w", "rest", "h1_0", "h2_0", "nh", "member"):
        np.testing.assert_array_equal(d1.columns("edges")[col], d2.columns("edges")[col], err_msg=col)


@pytest.mark.parametrize("mode", ["combined", "pretrained"])
def test_a_trace_and_paths_light_what_the_graph_answers(pair, mode):
    """A frozen token and two frozen rings light exactly the nodes of ``trace`` / ``paths`` (per model in
    combined mode, coded by model)."""
    from attnflows_panel.compare import GraphComparison

    tokens, segments, pre, fine = pair
    d = FlowData(tokens, segments, pre, fine if mode == "combined" else None, mode)
    nd = d.columns("nodes")
    comp = GraphComparison(pre, fine)
    top = d.L - 1
    t_top = int(d.levels[top][0])
    low = next(k for k in range(top - 2, -1, -1) if len(d.levels[k]))
    t_low = int(d.levels[low][-1])
    for sel in ([[top, t_top]], [[top, t_top], [low, t_low]]):
        hl = d.highlight(sel)
        got = {(int(nd["level"][i]), int(nd["pos"][i])): int(hl.nodes[i]) for i in np.flatnonzero(hl.nodes)}
        if len(sel) == 1:
            want = dict(comp.trace(top, [t_top])) if mode == "combined" else \
                {node: PRE for node in pre.trace(top, t_top).nodes}
        else:
            want = dict(comp.paths(top, [t_top], low, [t_low])) if mode == "combined" else \
                {node: PRE for node in pre.paths(top, [t_top], low, [t_low]).nodes}
            if not want:  # no path: the selected tokens stay visible, and the status says so
                assert "no path" in hl.message
                continue
        assert got == want, sel
