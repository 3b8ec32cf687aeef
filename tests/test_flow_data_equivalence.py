"""The view's data built in bulk (P1) equals the straightforward per-layer construction it replaced.

``FlowData`` builds its edges, sparklines, head glyphs and hover ancestor bits from the graph's bulk
arrays (``adjacency``, ``head_counts``, ``ancestor_blocks``) in a few numpy passes. The reference
functions below are the earlier implementations, one layer / one model at a time straight from
``AttentionGraph.active``, ``glyphs``, ``glyph_states`` and ``ancestor_matrix``; every column must agree
exactly, on random attention and on real MiniLM attention (benchmarks/README.md, P1).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from attnflows_panel.compare import BOTH, FINE, PRE
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.layout import glyph_grid, sparkline_segments
from attnflows_panel.views.flow_data import RAMP_STEPS, FlowData, pack_heads


def ref_edges(d: FlowData) -> dict[str, np.ndarray]:
    n, W = d.n, max(1, math.ceil(d.H / 32))
    parts: dict[str, list[np.ndarray]] = {}
    for k in range(d.L):
        per = {}
        for c, g in d.graphs.items():
            a, b = np.nonzero(g.active[k].any(axis=0))
            per[c] = (a.astype(np.int64) * n + b, g.active[k][:, a, b].T)
        keys = np.unique(np.concatenate([p[0] for p in per.values()]))
        if keys.size == 0:
            continue
        parts.setdefault("layer", []).append(np.full(keys.size, k, dtype=np.int64))
        parts.setdefault("a", []).append(keys // n)
        parts.setdefault("b", []).append(keys % n)
        member = np.zeros(keys.size, dtype=np.int64)
        nh = np.zeros(keys.size, dtype=np.int64)
        for c in (PRE, FINE):
            words = np.zeros((keys.size, W), dtype=np.uint32)
            if c in per:
                key_c, heads = per[c]
                pos = np.searchsorted(keys, key_c)
                words[pos] = pack_heads(heads)
                member[pos] |= c
                nh[pos] = np.maximum(nh[pos], heads.sum(axis=1))
            for w in range(W):
                parts.setdefault(f"h{c}_{w}", []).append(words[:, w])
        parts.setdefault("nh", []).append(nh)
        parts.setdefault("member", []).append(member)
    return {c: np.concatenate(v) for c, v in parts.items()}


def ref_sparks(d: FlowData) -> pd.DataFrame:
    nodes = d.layout.nodes
    frames = []
    models = list(d.graphs.items())
    shift = 0.9 if len(models) == 2 else 0.0
    denom = max(d.n - 1, 1)
    for i, (c, g) in enumerate(models):
        ids, rel, hts = [], [], []
        for k in range(d.L):
            heads = g.active[k].sum(axis=0)
            a_idx, w_idx = np.nonzero(heads)
            if a_idx.size == 0:
                continue
            ids.append(d.node_index[k, w_idx])
            rel.append((a_idx - w_idx) / denom)
            hts.append(np.minimum(heads[a_idx, w_idx], 3))
        if ids:
            seg = sparkline_segments(d.layout, [np.concatenate(ids)], [np.concatenate(rel)],
                                     [np.concatenate(hts)], per_bar=True)
        else:
            seg = sparkline_segments(d.layout, [], [], [])
        df = pd.DataFrame(seg)
        df["model"] = c
        if shift and len(df):
            nid = df["node"].to_numpy()
            off = shift * (1 if i else -1) / 2
            for xs, u in (("x0", "ux"), ("x1", "ux"), ("y0", "uy"), ("y1", "uy")):
                df[xs] = df[xs] + off * nodes[u].to_numpy()[nid]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def ref_glyphs(d: FlowData) -> pd.DataFrame:
    H = d.H
    grid = glyph_grid(d.layout, H)
    nodes = d.layout.nodes
    N = len(nodes)
    counts = {c: np.zeros((N, H), dtype=np.int64) for c in (PRE, FINE)}
    for c, g in d.graphs.items():
        for k in range(1, d.L + 1):
            ids = np.arange(d.bounds[k], d.bounds[k + 1])
            if ids.size:
                counts[c][ids] = g.glyphs(k)[nodes["pos"].to_numpy()[ids]]
    if d.comparison is not None:
        state = np.zeros((N, H), dtype=np.int64)
        for k in range(1, d.L + 1):
            ids = np.arange(d.bounds[k], d.bounds[k + 1])
            if ids.size:
                state[ids] = d.comparison.glyph_states(k)[nodes["pos"].to_numpy()[ids]]
    else:
        (c,) = d.graphs
        state = (counts[c] > 0) * c
    st, cp, cf = state.ravel(), counts[PRE].ravel(), counts[FINE].ravel()
    lit = np.flatnonzero(st)
    g = d.style.glyph
    parts = [(lit[st[lit] == code], code, 0.0, g) for code in (PRE, FINE)]
    split = lit[st[lit] == BOTH]
    parts += [(split, PRE, -g / 4, g / 2), (split, FINE, g / 4, g / 2)]
    rows = []
    for ids, code, off, w in parts:
        if ids.size == 0:
            continue
        sub = grid.iloc[ids]
        cs = nodes["cs"].to_numpy()[sub["node"].to_numpy()]  # the ring's cell scale
        if d.comparison is not None:
            gc = np.full(ids.size, 12 if code == PRE else 13)
        else:
            cnt = (cp if code == PRE else cf)[ids]
            gc = (0 if code == PRE else RAMP_STEPS) + np.minimum(cnt, RAMP_STEPS) - 1
        rows.append(pd.DataFrame({
            "node": sub["node"].to_numpy(), "head": sub["head"].to_numpy(), "model": np.full(ids.size, code),
            "x": sub["x"].to_numpy() + off * cs * sub["ux"].to_numpy(),
            "y": sub["y"].to_numpy() + off * cs * sub["uy"].to_numpy(),
            "w": np.full(ids.size, w) * cs, "part": np.full(ids.size, 0 if w == g else {PRE: 1, FINE: 2}[code]),
            "angle": sub["angle"].to_numpy(), "gc": gc, "cp": cp[ids], "cf": cf[ids],
        }))
    df = pd.concat(rows, ignore_index=True)
    return df.sort_values(["node", "head", "model"], kind="stable").reset_index(drop=True)


def ref_bits(d: FlowData, g: AttentionGraph) -> np.ndarray:
    nodes = d.layout.nodes
    N = len(nodes)
    flat, Ag = g.ancestor_matrix()
    A = np.zeros((N, N), dtype=bool)
    ids = d.node_index.ravel()[flat]
    A[np.ix_(ids, ids)] = Ag
    lo = d.bounds[nodes["level"].to_numpy()]
    return np.packbits(A[np.arange(N)[None, :] < lo[:, None]], bitorder="little")


def assert_same(d: FlowData) -> None:
    edges = ref_edges(d)
    assert len(d.edges) == len(edges["layer"]) > 0
    for col, ref in edges.items():
        np.testing.assert_array_equal(d.edges[col].to_numpy(), ref, err_msg=col)
        assert d.edges[col].dtype == ref.dtype, col
    pd.testing.assert_frame_equal(d.sparks, ref_sparks(d), check_exact=True)
    pd.testing.assert_frame_equal(d.glyphs, ref_glyphs(d), check_exact=True)
    for c, g in d.graphs.items():
        np.testing.assert_array_equal(d.bits[c], ref_bits(d, g))


def _softmax(rng, shape, sharp):
    x = rng.random(shape) ** sharp
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["combined", "pretrained", "finetuned"])
def test_flow_data_equals_reference_on_random_attention(seed, mode):
    rng = np.random.default_rng(seed)
    L, H, n = 5, 4 + seed, 18 + 3 * seed
    pre = AttentionGraph.build(_softmax(rng, (L, H, n, n), 6), tau=0.15)
    heads = rng.random((L, H)) > 0.3 if seed % 2 else None
    fine = AttentionGraph.build(_softmax(rng, (L, H, n, n), 6), tau=0.15, heads=heads)
    tokens = ["[CLS]"] + [f"t{i}" if i % 4 else f"##s{i}" for i in range(1, n)]
    d = FlowData(tokens, [0] * (n // 2) + [1] * (n - n // 2), pre, fine, mode)
    assert_same(d)


@pytest.fixture(scope="module")
def minilm_long(minilm_path, glue_dir):
    """all-MiniLM-L6-v2 on the longest QNLI dev pair (as benchmarks/bench_graph.py), n = 128."""
    import torch
    from transformers import AutoTokenizer, BertModel

    with open(glue_dir / "QNLI" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    question, sentence = max(((r[1], r[2]) for r in rows), key=lambda qs: len(qs[1]))
    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()
    enc = tok(question, sentence, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        att = model(**enc, output_attentions=True).attentions
    attn = np.stack([x[0].numpy() for x in att])
    return attn, tok.convert_ids_to_tokens(enc["input_ids"][0]), enc["token_type_ids"][0].tolist()


@pytest.mark.real_model
@pytest.mark.glue
@pytest.mark.parametrize("tau", [0.1, 0.15])
def test_flow_data_equals_reference_on_minilm(minilm_long, tau):
    attn, tokens, segments = minilm_long
    pre = AttentionGraph.build(attn, tau=tau)
    fine = AttentionGraph.build(attn[::-1].copy(), tau=tau)  # another graph of realistic sparsity
    assert pre.num_nodes > 20 and fine.num_nodes > 20
    for mode in ("combined", "pretrained"):
        assert_same(FlowData(tokens, segments, pre, fine, mode))


@pytest.mark.parametrize("H", [1, 12, 32, 40, 70])
def test_pack_heads_sets_bit_h_of_word_h_div_32(H):
    rng = np.random.default_rng(H)
    heads = rng.random((25, H)) > 0.5
    heads[0] = True
    words = pack_heads(heads)
    assert words.dtype == np.uint32 and words.shape == (25, math.ceil(H / 32))
    for i in range(25):
        for h in range(H):
            assert bool(words[i, h // 32] >> np.uint32(h % 32) & np.uint32(1)) == heads[i, h]
    assert pack_heads(np.zeros((0, H), bool)).shape == (0, math.ceil(H / 32))
