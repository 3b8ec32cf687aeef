"""Every τ at once in the view (issue #27, 2): the graph read off the widest-path widths equals the graph
built at that τ, and so does everything the radial view draws from it.

A τ change no longer rebuilds the Attention Graph: :meth:`Bottleneck.graph` thresholds the widths computed
once per result (:func:`attnflows_panel.bottleneck.bottleneck`) and :meth:`AttentionGraph.assemble` derives
eq. 3's counts and the head glyphs from the heads of the edges alone. Checked here attribute by attribute
against :meth:`AttentionGraph.build` (random weights with head masks, roots, float64, non-contiguous arrays
and τ exactly on a weight), and ``FlowData`` from those graphs column by column against ``FlowData`` from
rebuilt graphs on real all-MiniLM-L6-v2 attentions of a GLUE pair, at several τ, with head subsets, in the
three modes; then the view itself after τ changes.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from attnflows_panel.bottleneck import bottleneck
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.views.flow_data import FlowData


def _softmax(rng, shape, sharp, dtype=np.float32):
    x = rng.random(shape) ** sharp
    return (x / x.sum(-1, keepdims=True)).astype(dtype)


def assert_same_graph(g: AttentionGraph, h: AttentionGraph) -> None:
    """``g`` and ``h`` are the same graph: every attribute, dtype and shape included."""
    assert (g.L, g.H, g.n, g.tau, g.root) == (h.L, h.H, h.n, h.tau, h.root)
    for name in ("member", "counts", "adjacency", "out_degree", "heads", "active", "head_counts"):
        a, b = getattr(g, name), getattr(h, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert len(g.levels) == len(h.levels)
    for a, b in zip(g.levels, h.levels, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for a, b in zip(g.edge_table, h.edge_table, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g.influence(), h.influence())
    assert g.attn is not h.attn and np.shares_memory(g.attn, h.attn)  # both views of the caller's array


def assert_same_flow(d: FlowData, e: FlowData) -> None:
    """Everything the radial view draws is the same in ``d`` and ``e``."""
    assert (d.mode, d.L, d.H, d.n, d.tau, d.words) == (e.mode, e.L, e.H, e.n, e.tau, e.words)
    n_glyphs = d.n_glyphs  # counted before the glyphs are built (FlowData builds them on first use)
    assert n_glyphs == len(d.columns("glyphs")) == d.n_glyphs
    for a, b in zip(d.levels, e.levels, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(d.priority, e.priority)
    np.testing.assert_array_equal(d.sweep, e.sweep)
    for frame in ("nodes", "edges", "glyphs", "sparks", "runs"):
        cd, ce = d.columns(frame), e.columns(frame)
        assert cd.names() == ce.names(), frame
        for name in cd.names():
            a, b = np.asarray(cd[name]), np.asarray(ce[name])
            assert a.dtype == b.dtype and a.shape == b.shape, (frame, name)
            np.testing.assert_array_equal(a, b, err_msg=f"{frame}.{name}")
    assert d.bits.keys() == e.bits.keys()
    for c in d.bits:
        np.testing.assert_array_equal(d.bits[c], e.bits[c])
    sd, se = d.sources(ring_labels=False), e.sources(ring_labels=False)
    for part in sd:
        assert sd[part].keys() == se[part].keys()
        for name in sd[part]:
            a, b = sd[part][name], se[part][name]
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b, err_msg=f"{part}.{name}")
            else:
                assert len(a) == len(b)
                for x, y in zip(a, b, strict=True):
                    np.testing.assert_array_equal(x, y, err_msg=f"{part}.{name}")


# --------------------------------------------------------------------------------------------------
# the graph at τ from the widths
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_graph_from_widths_equals_the_build_on_random_weights(seed):
    rng = np.random.default_rng(seed)
    L, H, n = 1 + seed % 4, 1 + seed % 5, 2 + 5 * seed
    dtype = np.float64 if seed % 3 == 0 else np.float32
    w = _softmax(rng, (L, H, n, n), 4 + seed, dtype)
    if seed % 4 == 1:
        w = np.asfortranarray(w)  # not C-contiguous: read by fancy indexing instead of one flat gather
    heads = rng.random((L, H)) > 0.4 if seed % 2 else None
    root = int(rng.integers(0, n))
    on_weight = float(w.ravel()[rng.integers(0, w.size)])  # "above τ" is strict: τ equal to a weight
    taus = [0.2, 0.1, 0.5, 0.05, on_weight, 0.0, 0.01, 0.99, on_weight] + list(rng.random(4) * 0.4)
    b = bottleneck(w, heads, root)
    for tau in taus:  # up and down: a τ above the lowest asked selects its edges from that one's
        assert_same_graph(b.graph(tau), AttentionGraph.build(w, tau, heads, root))
    for order in (sorted(taus), sorted(taus, reverse=True)):  # each τ a subgraph of the last; each a new lowest
        b = bottleneck(w, heads, root)
        for tau in order:
            assert_same_graph(b.graph(tau), AttentionGraph.build(w, tau, heads, root))


def test_graph_from_widths_without_the_kept_edges(monkeypatch):
    """Where the lowest τ's edges are too many to keep, every τ gathers its own (the same graphs)."""
    import attnflows_panel.bottleneck as bn

    monkeypatch.setattr(bn, "KEEP_WEIGHTS", 0)
    rng = np.random.default_rng(11)
    w = _softmax(rng, (3, 4, 20, 20), 5)
    b = bottleneck(w)
    for tau in (0.1, 0.3, 0.05, 0.2):
        assert_same_graph(b.graph(tau), AttentionGraph.build(w, tau))
    assert "_low_edges" not in b.__dict__


def test_graph_from_widths_of_a_graph_with_no_edges():
    w = np.full((2, 3, 4, 4), 0.25, dtype=np.float32)
    b = bottleneck(w)
    g = b.graph(0.3)  # nothing is above τ: the root alone
    assert_same_graph(g, AttentionGraph.build(w, 0.3))
    assert g.num_nodes == 1 and g.edge_table[0].size == 0
    assert_same_graph(b.graph(0.2), AttentionGraph.build(w, 0.2))


def test_graph_from_widths_checks_tau_and_the_weights_range():
    w = _softmax(np.random.default_rng(0), (2, 2, 5, 5), 3)
    b = bottleneck(w)
    for bad, message in ((1.0, r"tau must lie in \[0, 1\)"), (-0.1, r"tau must lie in \[0, 1\)"),
                         (float("nan"), r"tau must lie in \[0, 1\)"), ("x", "tau must be a number")):
        with pytest.raises(ValueError, match=message):
            b.graph(bad)
    # edge weights above 1 have widths (bottleneck takes any non-negative weights) but no Attention Graph:
    # the build's message, naming the range
    big = bottleneck(w * 3)
    assert big.node.max() > 1
    with pytest.raises(ValueError, match=r"attention weights must lie in \[0, 1\].*got values in \[[0-9.e-]+, 2\.4"):
        big.graph(0.2)
    with pytest.raises(ValueError, match=r"attention weights must lie in \[0, 1\]"):
        AttentionGraph.build(w * 3, 0.2)


def test_bottleneck_one_pass_check_agrees_with_the_plain_one():
    """The widths' check reads the weights' bit patterns once (see bottleneck._strongest_checked): -0.0 is
    a weight of 0 as before, NaN and negative weights are refused with the same messages, and the largest
    weight is recorded in the weights' dtype."""
    rng = np.random.default_rng(5)
    w = _softmax(rng, (2, 3, 6, 6), 2)
    z = w.copy()
    z[0, 1, 2, 3] = -0.0
    np.testing.assert_array_equal(bottleneck(z).node, bottleneck(np.where(z == 0, 0, z)).node)
    assert bottleneck(w).peak == w.max() and bottleneck(w).peak.dtype == np.float32
    heads = np.ones((2, 3), bool)
    heads[1, 0] = False
    assert bottleneck(w, heads).peak == w.max()  # the masked heads' weights count too
    for bad, message in ((-1e-30, "non-negative"), (np.nan, "NaN"), (-np.inf, "non-negative")):
        x = w.copy()
        x[1, 2, 0, 4] = bad
        for mask in (None, heads):
            with pytest.raises(ValueError, match=message):
                bottleneck(x, mask)
    x = w.copy()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # a bad weight is named before a bad mask
        bottleneck(x, np.ones((2, 2), bool))


# --------------------------------------------------------------------------------------------------
# FlowData from the widths, real MiniLM attentions
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_mrpc(minilm_path, glue_dir):
    """all-MiniLM-L6-v2 attentions of the longest of the first 20 MRPC dev pairs, its tokens and segments."""
    import torch
    from transformers import AutoTokenizer, BertModel

    with open(glue_dir / "MRPC" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    h = rows[0]
    a, b = max(((r[h.index("#1 String")], r[h.index("#2 String")]) for r in rows[1:21]),
               key=lambda p: len(p[0]) + len(p[1]))
    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()
    enc = tok(a, b, return_tensors="pt")
    with torch.no_grad():
        att = model(**enc, output_attentions=True).attentions
    attn = np.stack([x[0].numpy() for x in att])
    return attn, tok.convert_ids_to_tokens(enc["input_ids"][0]), enc["token_type_ids"][0].tolist()


@pytest.mark.real_model
@pytest.mark.glue
def test_flow_data_from_widths_equals_flow_data_from_rebuilt_graphs_minilm(minilm_mrpc):
    attn, tokens, segments = minilm_mrpc
    other = attn[::-1].copy()  # a second graph of realistic sparsity (the layers in reverse order)
    L, H = attn.shape[:2]
    rng = np.random.default_rng(24)
    masks = [None, rng.random((L, H)) > 0.4, rng.random((L, H)) > 0.7]
    shown = 0
    for heads in masks:
        bp, bf = bottleneck(attn, heads), bottleneck(other, heads)
        on_break = float(bp.breakpoints()[len(bp.breakpoints()) // 2])  # τ exactly where the levels change
        for tau in (0.04, 0.1, 0.2, on_break):
            gp, gf = bp.graph(tau), bf.graph(tau)
            rp, rf = AttentionGraph.build(attn, tau, heads), AttentionGraph.build(other, tau, heads)
            assert_same_graph(gp, rp)
            assert_same_graph(gf, rf)
            for mode in ("combined", "pretrained", "finetuned"):
                d = FlowData(tokens, segments, gp, gf, mode)
                assert_same_flow(d, FlowData(tokens, segments, rp, rf, mode))
                shown += len(d.columns("edges"))
    assert shown > 1000  # the graphs compared hold edges, not just the root


@pytest.mark.real_model
@pytest.mark.glue
def test_view_tau_changes_draw_what_a_fresh_build_draws_minilm(minilm_mrpc):
    """AttentionFlowsView reads its graphs off the widths: after τ changes (forth and back) it draws what
    FlowData of graphs built at that τ draws."""
    from attnflows_panel.models import ModelOutput, PairResult
    from attnflows_panel.views.attention_flows import AttentionFlowsView

    attn, tokens, segments = minilm_mrpc
    other = attn[::-1].copy()
    n = len(tokens)
    result = PairResult(sentence_a="a", sentence_b="b", tokens=list(tokens), input_ids=list(range(n)),
                        segments=list(segments), sep_positions=[i for i, t in enumerate(tokens) if t == "[SEP]"],
                        truncated=False, pretrained=ModelOutput(attn), finetuned=ModelOutput(other))
    view = AttentionFlowsView(result, tau=0.1)
    for tau in (0.15, 0.05, 0.1, 0.15):
        view.tau = tau
        for _ in range(2):  # the graphs of a τ seen before come from the view's cache
            ref = FlowData(tokens, segments, AttentionGraph.build(attn, tau), AttentionGraph.build(other, tau),
                           view.mode)
            assert_same_flow(view.data, ref)
        view.mode = "finetuned"
        assert_same_flow(view.data, FlowData(tokens, segments, AttentionGraph.build(attn, tau),
                                             AttentionGraph.build(other, tau), "finetuned"))
        view.mode = "combined"
