"""The Attention Graph of a real MiniLM sentence pair from GLUE MRPC, checked for invariants.

Attentions come straight from transformers (eager attention, ``output_attentions=True``), so this test
does not depend on ``models.py``. all-MiniLM-L6-v2's [CLS] spreads its last-layer attention (no head
puts more than ~0.25 on any token for this pair), so at τ = 0.3 the graph is the root alone; the checks
run at τ = 0.2 and 0.1, where the graph has several tokens per level, and each check asserts the graph
is non-trivial so that none of them passes vacuously.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from attnflows_panel.compare import FINE, PRE, GraphComparison
from attnflows_panel.graph import AttentionGraph

pytestmark = [pytest.mark.real_model, pytest.mark.glue]


@pytest.fixture(scope="module")
def minilm_sample(minilm_path, glue_dir):
    import torch
    from transformers import AutoTokenizer, BertModel

    with open(glue_dir / "MRPC" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, first = rows[0], rows[1]
    a, b = first[header.index("#1 String")], first[header.index("#2 String")]
    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()
    enc = tok(a, b, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    attn = np.stack([layer[0].numpy() for layer in out.attentions])  # [L, H, n, n]
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    return attn, tokens


@pytest.fixture(scope="module", params=[0.2, 0.1])
def graph(request, minilm_sample):
    attn, tokens = minilm_sample
    g = AttentionGraph.build(attn, tau=request.param)
    assert len(g.levels[g.L - 1]) >= 1 and g.edge_count() >= 10  # non-trivial
    return g, attn, tokens


def test_input_is_softmax_attention(minilm_sample):
    attn, tokens = minilm_sample
    L, H, n, _ = attn.shape
    assert (L, H) == (6, 12) and n == len(tokens) > 20
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-4)
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2


def test_levels_and_edges(graph):
    g, attn, tokens = graph
    assert g.levels[g.L].tolist() == [0] and tokens[g.root] == "[CLS]"
    for k in range(g.L):
        edges = g.edges(k)
        targets = {e.b for e in edges}
        # every node of level k has a parent edge from level k+1, and nothing else is a target
        assert targets == set(g.levels[k].tolist())
        for e in edges:
            assert g.member[k + 1, e.a] and g.member[k, e.b] and e.heads
            carrying = attn[k, :, e.a, e.b] > g.tau
            assert set(np.flatnonzero(carrying).tolist()) == set(e.heads)
        # every token of level k+1 that attends to something above τ starts an edge
        starts = {e.a for e in edges}
        expect = {a for a in g.levels[k + 1].tolist() if (attn[k, :, a, :] > g.tau).any()}
        assert starts == expect


def test_counts_glyphs_and_ratings(graph):
    g, attn, _ = graph
    np.testing.assert_array_equal(g.counts, g.active.sum(axis=(1, 2)))
    np.testing.assert_array_equal(g.counts > 0, g.member[: g.L])
    for k in range(g.L):
        per_target = np.zeros(g.n, int)
        for e in g.edges(k):
            per_target[e.b] += len(e.heads)
        np.testing.assert_array_equal(per_target, g.counts[k])
    for k in range(1, g.L + 1):
        glyphs = g.glyphs(k)
        out_heads = np.zeros(g.n, int)
        for e in g.edges(k - 1):
            out_heads[e.a] += len(e.heads)
        np.testing.assert_array_equal(glyphs.sum(axis=1), out_heads)
        assert not glyphs[~g.member[k]].any()
        for w, (x, y) in g.sparklines(k, direction="attended").items():  # the rows: one point per target
            assert ((x >= -1) & (x <= 1)).all() and ((y >= 1) & (y <= 3)).all()
            assert len(x) == np.count_nonzero(g.active[k - 1, :, w].any(axis=0))  # one point per target
    infl = g.influence()
    assert (infl >= 0).all()
    assert (infl[g.member[: g.L]] > 0).all()  # a member of level k has counts[k] > 0
    for k in range(g.L):
        r = g.ratings(k)
        assert r.shape == (g.n,) and r.min() >= 0 and r.max() <= 5
        assert (r[g.member[k]] >= 1).all()


def test_traces_consistent_with_edges(graph):
    g, _, _ = graph
    at = g.all_traces()
    assert len(at) == g.num_nodes
    everything_below_root = {node for node in g.nodes() if node[0] < g.L}
    assert at[(g.L, g.root)].ancestors == everything_below_root  # the root depends on every node
    for (level, _w), t in at.items():
        below = {(e.layer, e.b) for e in t.edges if e.layer < level}
        above = {(e.layer + 1, e.a) for e in t.edges if e.layer >= level}
        assert t.ancestors == below and t.descendants == above
        assert (g.L, g.root) in t.descendants or level == g.L  # everything flows to [CLS]
    # a brush over the first two tokens of the middle level: no more than each token alone
    k = g.L // 2
    if len(g.levels[k]) >= 2:
        w0, w1 = g.levels[k][:2].tolist()
        brush = g.trace(k, [w0, w1])
        assert brush.ancestors <= at[(k, w0)].ancestors & at[(k, w1)].ancestors
        assert brush.descendants <= at[(k, w0)].descendants & at[(k, w1)].descendants
    # head-restricted: a subset of the plain trace, using only that head at that layer
    k = g.L - 1
    w = int(g.levels[k][0])
    if k >= 1:
        h = int(np.flatnonzero(g.glyphs(k)[w])[0]) if g.glyphs(k)[w].any() else 0
        t = g.trace(k, w, head=(k - 1, h))
        assert t.ancestors <= at[(k, w)].ancestors
        assert all(e.heads == (h,) for e in t.edges if e.layer == k - 1)


def test_paths_from_root_reach_every_level0_node(graph):
    g, _, _ = graph
    for w in g.levels[0].tolist()[:5]:
        r = g.paths(g.L, g.root, 0, w)
        assert (g.L, g.root) in r.nodes and (0, w) in r.nodes
        assert {lv for lv, _ in r.nodes} == set(range(g.L + 1))  # at least one node per level
        assert {e.layer for e in r.edges} == set(range(g.L))


def test_higher_tau_and_head_mask_give_subgraphs(minilm_sample):
    attn, _ = minilm_sample
    lo, hi = AttentionGraph.build(attn, tau=0.1), AttentionGraph.build(attn, tau=0.2)
    assert not (hi.active & ~lo.active).any() and hi.num_nodes < lo.num_nodes
    mask = np.ones(attn.shape[:2], bool)
    mask[:, ::2] = False  # odd heads only
    gm = AttentionGraph.build(attn, tau=0.1, heads=mask)
    assert not (gm.active & ~lo.active).any() and not gm.active[:, ::2].any()
    # comparing the τ = 0.1 graph ("pre") with the τ = 0.2 graph ("fine"): nothing is fine-only
    c = GraphComparison(lo, hi)
    assert not (c.membership == FINE).any() and (c.membership == PRE).any()
    assert not any((c.glyph_states(k) == FINE).any() for k in range(lo.L + 1))
    pre, fine, shared = c.ratings(0)
    np.testing.assert_array_equal(shared, np.minimum(pre, fine))
    assert (fine <= pre).all()
