"""The Attention Flows views without a browser: the Bokeh models built for a small hand-made pair of
Attention Graphs carry the right positions, colours and highlight sets (Panel's own test style:
``get_root(Document(), comm=Comm())`` and look at the models)."""

from __future__ import annotations

import html
import io
import math
import xml.etree.ElementTree as ET

import numpy as np
import panel as pn
import pytest
from bokeh.document import Document
from pyviz_comms import Comm

from attnflows_panel import FINETUNED_COLOR, PRETRAINED_COLOR, SHARED_COLOR
from attnflows_panel.compare import BOTH, FINE, PRE, GraphComparison
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.models import ModelOutput, PairResult
from attnflows_panel.views.attention_flows import AttentionFlowsView
from attnflows_panel.views.flow import RAMP_STEPS, FlowData, count_palette
from attnflows_panel.views.radial import unpack_flow

TOKENS = ["[CLS]", "the", "cat", "[SEP]", "sat", "[SEP]"]
SEGMENTS = [0, 0, 0, 0, 1, 1]
TAU = 0.3


def _attn(spec: dict, L: int = 2, H: int = 2, n: int = 6) -> np.ndarray:
    """Attention rows that are uniform (1/6 < τ) except the listed weights {(layer, head, query): {key: w}}."""
    a = np.zeros((L, H, n, n))
    for k in range(L):
        for h in range(H):
            for q in range(n):
                big = spec.get((k, h, q), {})
                others = [b for b in range(n) if b not in big]
                a[k, h, q, others] = (1 - sum(big.values())) / len(others)
                for b, w in big.items():
                    a[k, h, q, b] = w
    return a.astype(np.float32)


# Pre-trained: [CLS] attends to "the" (head 0) and "sat" (head 1) in the last layer; in layer 0 "the"
# attends to "cat" (h0) and to itself and [SEP] (h1), "sat" to itself (h0) and [SEP] (h1).
PRE_ATTN = _attn({(1, 0, 0): {1: 0.6}, (1, 1, 0): {4: 0.5},
                  (0, 0, 1): {2: 0.7}, (0, 1, 1): {1: 0.4, 3: 0.35},
                  (0, 0, 4): {4: 0.5}, (0, 1, 4): {3: 0.45}})
# Fine-tuned: [CLS] attends to "the" (h0) and "cat" (h1); "the" to "cat" (h0), "cat" to the last [SEP] (h1).
FINE_ATTN = _attn({(1, 0, 0): {1: 0.6}, (1, 1, 0): {2: 0.8},
                   (0, 0, 1): {2: 0.7}, (0, 1, 2): {5: 0.9}})


def _result(pre=PRE_ATTN, fine=FINE_ATTN, tokens=TOKENS, segments=SEGMENTS) -> PairResult:
    return PairResult(
        sentence_a="the cat", sentence_b="sat", tokens=list(tokens), input_ids=list(range(len(tokens))),
        segments=list(segments), sep_positions=[3, 5], truncated=False,
        pretrained=ModelOutput(pre), finetuned=ModelOutput(fine, label="equivalent",
                                                            probs={"not_equivalent": 0.3, "equivalent": 0.7}),
    )


@pytest.fixture(scope="module")
def graphs():
    return AttentionGraph.build(PRE_ATTN, TAU), AttentionGraph.build(FINE_ATTN, TAU)


def _root(view):
    return view.__panel__().get_root(Document(), comm=Comm())


def _head_edges(attn, graph, layer: int, h: int) -> set:
    """What head ``h`` of ``layer`` attends to above τ among ``graph``'s nodes, from the attentions:
    {((layer + 1, a), (layer, b))} for a token a of level layer + 1 and b of level layer with
    ``attn[layer, h, a, b] > TAU``."""
    upper = [int(a) for a in graph.levels[layer + 1]]
    lower = {int(b) for b in graph.levels[layer]}
    return {((layer + 1, a), (layer, b)) for a in upper for b in range(attn.shape[-1])
            if b in lower and attn[layer, h, a, b] > TAU}


def _flow(view) -> dict[str, dict]:
    """What the radial component was sent (``RadialFlow.data`` and ``.frozen``) as the old per-kind
    columns: nodes, glyphs, edges, ticks (``n_``, ``g_``, ``e_``, ``t_`` keys); ``st`` the display states
    radial.js draws from the frozen highlight."""
    d, fz = unpack_flow(view.flow.data), view.flow.frozen  # the columns radial.js derives, filled in

    def pre(p):
        return {k[len(p):]: v for k, v in d.items() if k.startswith(p)}

    nodes, glyphs, edges = pre("n_"), pre("g_"), pre("e_")
    N, E, G = d["N"], d["E"], d["G"]
    if fz.get("nodes") is not None:
        code, origin = np.asarray(fz["nodes"]), np.asarray(fz["origin"]).astype(bool)
        nodes["st"] = np.where(origin, 8 + np.maximum(code, 1), np.where(code > 0, code, 4))
        edges["st"] = np.where(np.asarray(fz["edges"]) > 0, fz["edges"], 4)
        glyphs["st"] = np.where(np.asarray(fz["glyphs"]) > 0, glyphs["model"], 4)
    else:
        nodes["st"] = 5 + np.asarray(nodes["base"], dtype=np.int64)
        edges["st"] = np.full(E, 5)
        glyphs["st"] = np.full(G, 5)
    assert len(nodes["level"]) == N and len(edges["u"]) == E and len(glyphs["node"]) == G
    return {"nodes": nodes, "glyphs": glyphs, "edges": edges, "ticks": pre("t_")}


def _node_key(nodes) -> list[tuple[int, int]]:
    return list(zip(np.asarray(nodes["level"]).tolist(), np.asarray(nodes["pos"]).tolist(), strict=True))


def _decode_trace(nodes, edges, u: int, code: int) -> set[tuple[int, int]]:
    """Node u's trace in model ``code`` from the shipped columns, as radial.js walks it: the nodes reached
    from u along model ``code``'s edges downwards (ancestors) and upwards (descendants)."""
    eu, ev, mem = (np.asarray(edges[k], dtype=np.int64) for k in ("u", "v", "mem"))
    keys = _node_key(nodes)
    if not np.asarray(nodes["mem"])[u] & code:
        return set()
    out = {keys[u]}
    for frm, to in ((eu, ev), (ev, eu)):
        stack, seen = [u], {u}
        while stack:
            x = stack.pop()
            for y in to[(frm == x) & ((mem & code) > 0)].tolist():
                if y not in seen:
                    seen.add(y)
                    out.add(keys[y])
                    stack.append(y)
    return out


# ---------------------------------------------------------------------------------------------- models


def _glyph_colors(view):
    """(node keys, the glyph columns, each glyph's drawn colour) of a view's radial component."""
    f = _flow(view)
    palette = view.flow.data["palette"]
    return _node_key(f["nodes"]), f["glyphs"], [palette[int(v)] for v in f["glyphs"]["gc"]]


def test_radial_positions_follow_the_paper_layout(graphs):
    """[CLS] in the centre; level 1 = union {the, cat, sat}: A tokens clockwise from 9 o'clock in 120°
    slots (the at 120°, cat at 0°), B counter-clockwise (sat at 240°); the tick where they meet (300°)."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined")
    flow = _flow(view)
    nodes = flow["nodes"]
    keys = _node_key(nodes)
    assert keys == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 1), (1, 2), (1, 4), (2, 0)]
    data = view.data
    nd = data.nodes
    r1 = data.layout.radii[1]
    # sentence A clockwise from 9 o'clock ("the" before "cat"), B counter-clockwise ("sat" below)
    deg = {}
    for pos in (1, 2, 4):
        row = nd[(nd["level"] == 1) & (nd["pos"] == pos)].iloc[0]
        deg[pos] = math.degrees(row["angle"]) % 360
        rad = math.radians(deg[pos])
        assert (row["x"], row["y"]) == pytest.approx((r1 * math.cos(rad), r1 * math.sin(rad)))
    assert 180 > deg[1] > deg[2] >= 0 and 180 < deg[4] < 360
    assert np.allclose(nodes["angle"], nd["angle"].to_numpy(), atol=1e-5)  # the component draws the layout's
    root_row = nd[nd["level"] == 2].iloc[0]
    assert (root_row["x"], root_row["y"]) == (0.0, 0.0)
    # rings go outward with decreasing level: level 0 outermost
    assert data.layout.radii[0] > data.layout.radii[1] > data.layout.radii[2] == 0
    ticks = flow["ticks"]
    t1 = math.degrees(math.atan2(ticks["y1"][1], ticks["x1"][1])) % 360  # ring of level 1
    assert deg[2] > 360 - t1 - 360 and deg[4] < t1 < 360  # between the last A token and the first B token
    # the label centres sit in each token's cell, labels upright (text angle within ±90°)
    ta = np.asarray(nodes["ta"], dtype=np.float64)
    assert np.all(np.cos(ta) >= -1e-6)
    # what the browser gets is rounded float32, never attention weights
    assert np.asarray(nodes["lx"]).dtype == np.float32
    assert not any(k.startswith("attn") for k in view.flow.data)


def test_glyph_colours_single_model_count_ramp(graphs):
    """Pre-trained mode: head glyphs coloured by the number of tokens attended (g.glyphs)."""
    g, _ = graphs
    view = AttentionFlowsView(_result(), tau=TAU, mode="pretrained")
    keys, glyphs, colors = _glyph_colors(view)
    ramp = count_palette(PRETRAINED_COLOR)
    got = {(keys[n], int(h)): c for n, h, c in zip(glyphs["node"], glyphs["head"], colors, strict=True)}
    expected = {}
    for k in (1, 2):
        counts = g.glyphs(k)
        for w in g.levels[k]:
            for h in range(g.H):
                if counts[w, h] > 0:
                    expected[((k, int(w)), h)] = ramp[min(counts[w, h], RAMP_STEPS) - 1]
    assert got == expected
    # "the" at level 1: head 0 attends to one token, head 1 to two
    assert got[((1, 1), 0)] == ramp[0] and got[((1, 1), 1)] == ramp[1]


def test_glyph_states_combined_split_and_model_colours(graphs):
    """Combined mode: turquoise / purple glyphs and split glyphs (two half-width rows) from compare."""
    g, f = graphs
    c = GraphComparison(g, f)
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined")
    keys, glyphs, colors = _glyph_colors(view)
    rows: dict = {}
    widths = np.where(np.asarray(glyphs["part"]) == 0, view.data.style.glyph, view.data.style.glyph / 2)
    for n, h, m, col, w in zip(glyphs["node"], glyphs["head"], glyphs["model"], colors, widths, strict=True):
        rows.setdefault((keys[n], int(h)), []).append((int(m), col, float(w)))
    gsize = view.data.style.glyph
    for k in (1, 2):
        states = c.glyph_states(k)
        for w in c.levels[k]:
            for h in range(c.H):
                s = int(states[w, h])
                got = sorted(rows.get(((k, int(w)), h), []))
                if s == 0:
                    assert got == []
                elif s == BOTH:
                    assert got == [(PRE, PRETRAINED_COLOR, pytest.approx(gsize / 2, abs=0.01)),
                                   (FINE, FINETUNED_COLOR, pytest.approx(gsize / 2, abs=0.01))]
                else:
                    color = PRETRAINED_COLOR if s == PRE else FINETUNED_COLOR
                    assert got == [(s, color, pytest.approx(gsize, abs=0.01))]
    # the root's head 1 attends to "sat" (pre) and "cat" (fine): a split glyph
    assert len(rows[((2, 0), 1)]) == 2
    # the two halves sit side by side along the reading direction, half a glyph apart
    data = view.data
    gl = data.glyphs
    half = gl[(gl["node"] == data.node_id(2, 0)) & (gl["head"] == 1)]
    gap = math.hypot(half["x"].iloc[0] - half["x"].iloc[1], half["y"].iloc[0] - half["y"].iloc[1])
    assert gap == pytest.approx(gsize / 2, abs=1e-6)


def test_sparklines_are_the_graphs_sparklines(graphs):
    """Sparkline bars under each token = g.sparkline(k, w, "attending") (§4.3.2), per model."""
    g, f = graphs
    data = FlowData(TOKENS, SEGMENTS, g, f, "combined")
    nodes, sp = data.nodes, data.sparks
    for code, graph in ((PRE, g), (FINE, f)):
        for k in range(graph.L + 1):
            for w in graph.levels[k]:
                nid = data.node_id(k, int(w))
                bars = sp[(sp["node"] == nid) & (sp["model"] == code)]
                x, y = graph.sparkline(k, int(w), "attending")
                row = nodes.iloc[nid]
                du = (bars["x0"] - row["sx0"]) * row["ux"] + (bars["y0"] - row["sy0"]) * row["uy"]
                rel = np.sort((du.to_numpy() - (0.45 if code == FINE else -0.45)) / row["sw"] * 2 - 1)
                assert rel == pytest.approx(np.sort(x), abs=1e-6), (code, k, w)
                # 1, 2, 3 heads fill 1/2, 3/4, 4/4 of the sparkline's height (layout.sparkline_segments)
                h = np.hypot(bars["x1"] - bars["x0"], bars["y1"] - bars["y0"]) / data.style.spark_height * 4 - 1
                assert sorted(np.round(h, 6)) == pytest.approx(sorted(y)), (code, k, w)


def test_membership_and_label_colours_combined(graphs):
    g, f = graphs
    view = AttentionFlowsView(_result(), tau=TAU)
    nodes = _flow(view)["nodes"]
    keys = _node_key(nodes)
    mem = dict(zip(keys, np.asarray(nodes["mem"]).tolist(), strict=True))
    for (lv, t), code in mem.items():
        assert code == PRE * g.member[lv, t] + FINE * f.member[lv, t]
    assert mem[(1, 4)] == PRE and mem[(1, 2)] == FINE and mem[(1, 1)] == BOTH


def test_shipped_hover_sets_equal_graph_traces(graphs):
    """The bit streams sent to the browser decode to exactly the graph's trace of every node, per model;
    head glyph traces composed as radial.js does equal trace(level, token, head=(level-1, h))."""
    g, f = graphs
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined")
    flow = _flow(view)
    nodes, edges = flow["nodes"], flow["edges"]
    keys = _node_key(nodes)
    for code, graph in ((PRE, g), (FINE, f)):
        for u, (lv, t) in enumerate(keys):
            got = _decode_trace(nodes, edges, u, code)
            expected = graph.trace(lv, t).nodes if graph.member[lv, t] else set()
            assert got == expected, (code, lv, t)
        # head-restricted traces: descendants of u, plus each child through head h and its ancestors
        for (lv, t, h), tr in graph.all_head_traces().items():
            u = keys.index((lv, t))
            desc = {n for n in _decode_trace(nodes, edges, u, code) if n[0] > lv}
            got = {(lv, t)} | desc
            for e in range(len(edges["u"])):
                if edges["u"][e] == u and edges["mem"][e] & code and (int(edges[f"h{code}_0"][e]) >> h) & 1:
                    child = int(edges["v"][e])
                    got |= {n for n in _decode_trace(nodes, edges, child, code) if n[0] <= lv - 1}
            assert got == tr.nodes, (code, lv, t, h)


def test_frozen_selection_states(graphs):
    """A click (selection param) highlights graph.trace; brush = intersection; two rings = paths;
    a head glyph shows what that head attends to at its layer (issue #25); the heads involved light up."""
    g, f = graphs
    view = AttentionFlowsView(_result(), tau=TAU, mode="pretrained")
    nodes = _flow(view)["nodes"]
    keys = _node_key(nodes)

    def lit():
        st = np.asarray(_flow(view)["nodes"]["st"])
        return {keys[i] for i in range(len(keys)) if 1 <= st[i] <= 3 or st[i] >= 9}

    view.selection = [[0, 3]]
    assert lit() == g.trace(0, 3).nodes == {(0, 3), (1, 1), (1, 4), (2, 0)}
    st = np.asarray(_flow(view)["nodes"]["st"])
    assert st[keys.index((0, 3))] == 9  # the selected token itself
    assert st[keys.index((0, 2))] == 4  # dimmed
    # glyphs: the heads that carry the trace's edges light up, others dim
    gl = _flow(view)["glyphs"]
    on = {(keys[n], int(h)) for n, h, s in zip(gl["node"], gl["head"], gl["st"], strict=True) if 1 <= s <= 3}
    expected = {((e.layer + 1, e.a), h) for e in g.trace(0, 3).edges for h in e.heads}
    assert on == expected == {((1, 1), 1), ((1, 4), 1), ((2, 0), 0), ((2, 0), 1)}
    # edges of the trace highlighted
    ed = _flow(view)["edges"]
    lit_edges = {(keys[u], keys[v]) for u, v, s in zip(ed["u"], ed["v"], ed["st"], strict=True) if 1 <= s <= 3}
    assert lit_edges == {((e.layer + 1, e.a), (e.layer, e.b)) for e in g.trace(0, 3).edges}
    # brushed intersection of "the" and "sat" at level 1
    view.selection = [[1, 1], [1, 4]]
    assert lit() == g.trace(1, [1, 4]).nodes
    assert "intersection" in view.status
    # two rings: paths between [CLS] and [SEP]@0
    view.selection = [[2, 0], [0, 3]]
    assert lit() == g.paths(2, [0], 0, [3]).nodes
    # head click (head 1 of layer 0, from "the"@1): what that head attends to above τ at its layer, its
    # edges and their end tokens, and nothing beyond its layer (no trace up to [CLS]); other heads dimmed
    view.param.update(selection=[[1, 1]], head=[0, 1])
    head_edges = _head_edges(PRE_ATTN, g, 0, 1)
    assert lit() == {node for e in head_edges for node in e} | {(1, 1)} == {(1, 1), (1, 4), (0, 1), (0, 3)}
    ed = _flow(view)["edges"]
    assert {(keys[u], keys[v]) for u, v, s in zip(ed["u"], ed["v"], ed["st"], strict=True) if 1 <= s <= 3} == head_edges
    gl = _flow(view)["glyphs"]
    glyph_st = {(keys[n], int(h)): int(s) for n, h, s in zip(gl["node"], gl["head"], gl["st"], strict=True)}
    on = {k for k, s in glyph_st.items() if 1 <= s <= 3}
    assert on == {((1, int(a)), 1) for a in g.levels[1] if (PRE_ATTN[0, 1, int(a)] > TAU).any()}
    assert {s for k, s in glyph_st.items() if k not in on} == {4}
    view.param.update(selection=[], head=[])
    st = np.asarray(_flow(view)["nodes"]["st"])
    assert set(st.tolist()) <= {5, 6, 7, 8}  # all normal again
    assert view.status == ""


def test_combined_frozen_trace_coloured_by_model(graphs):
    g, f = graphs
    c = GraphComparison(g, f)
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", selection=[[1, 1]])
    root = _root(view)
    nodes = _flow(view)["nodes"]
    keys = _node_key(nodes)
    st = np.asarray(nodes["st"])
    got = {keys[i]: (int(st[i]) - 8 if st[i] >= 9 else int(st[i])) for i in range(len(keys)) if st[i] != 4}
    assert got == dict(c.trace(1, [1]))
    # the context view shares the node states; the sentence view colours tokens by the models reaching them
    assert root is not None
    ctx = view.context_view
    assert np.array_equal(np.asarray(ctx.states["st"]), st)
    assert np.array_equal(np.asarray(ctx.data["n_level"]), np.asarray(nodes["level"]))
    assert np.array_equal(np.asarray(ctx.data["n_pos"]), np.asarray(nodes["pos"]))
    sent = view.sentence_view.states
    reached = {}
    for (_lv, t), code in c.trace(1, [1]).items():
        reached[t] = reached.get(t, 0) | code
    for p, s in enumerate(np.asarray(sent["st"]).tolist()):
        if p == 1:
            assert s == 8 + reached[1]
        else:
            assert s == reached.get(p, 4)
    # a head click, here on the fine-tuned half of a split glyph: what head 1 of layer 1 attends to above τ
    # in both models (issue #25), each edge and end token coded by the model(s) whose head carries it
    view.param.update(selection=[[2, 0]], head=[1, 1], head_model="finetuned")
    fl = _flow(view)
    st = np.asarray(fl["nodes"]["st"])
    got = {keys[i]: (int(st[i]) - 8 if st[i] >= 9 else int(st[i])) for i in range(len(keys)) if st[i] != 4}
    want_edges: dict = {}
    want: dict = {}
    for code, attn, graph in ((PRE, PRE_ATTN, g), (FINE, FINE_ATTN, f)):
        for e in _head_edges(attn, graph, 1, 1):
            want_edges[e] = want_edges.get(e, 0) | code
            for node in e:
                want[node] = want.get(node, 0) | code
    assert got == want
    assert got[(1, 2)] == FINE and got[(1, 4)] == PRE and got[(2, 0)] == BOTH
    assert st[keys.index((2, 0))] == 8 + BOTH  # the selected token
    ed = fl["edges"]
    lit_edges = {(keys[u], keys[v]): int(s) for u, v, s in zip(ed["u"], ed["v"], ed["st"], strict=True)
                 if 1 <= s <= 3}
    assert lit_edges == want_edges


def test_tau_mode_and_level_update_every_view(graphs):
    g, f = graphs
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    root = _root(view)
    keys = _node_key(_flow(view)["nodes"])
    assert len(keys) == 9
    # sentence view circles: shared orange, then the larger model's surplus (compare.ratings)
    c = GraphComparison(g, f)
    pre, fine, shared = c.ratings(0)
    assert root is not None
    codes = view.sentence_view.codes()
    assert codes.shape == (len(TOKENS), 5)
    for p in range(len(TOKENS)):
        exp = [BOTH] * shared[p] + [PRE] * (pre[p] - shared[p]) + [FINE] * (fine[p] - shared[p])
        assert codes[p].tolist() == exp + [0] * (5 - len(exp))
    view.level = 1
    codes = view.sentence_view.codes()
    pre1, fine1, shared1 = c.ratings(1)
    assert (codes == BOTH).sum(axis=1).tolist() == shared1.tolist()
    assert view.sentence_view.data["r_pre"].tolist() == pre1.tolist()  # the tooltip's ratings
    assert view.sentence_view.data["r_fine"].tolist() == fine1.tolist()
    assert "level 2 of 3" in view.sentence_view.data["caption"]
    assert view.flow.level == 1 and view.context_view.level == 1  # the chosen level's ring is marked
    # τ up: fewer tokens in the rings; the context view follows
    view.tau = 0.55
    keys2 = _node_key(_flow(view)["nodes"])
    g2, f2 = AttentionGraph.build(PRE_ATTN, 0.55), AttentionGraph.build(FINE_ATTN, 0.55)
    c2 = GraphComparison(g2, f2)
    assert keys2 == [(k, int(t)) for k in range(3) for t in c2.levels[k]]
    assert len(keys2) < len(keys)
    assert len(view.context_view.states["st"]) == view.context_view.data["N"] == len(keys2)
    view.size = 640
    assert view.flow.width == view.flow.height == 640
    # mode: fine-tuned only draws the fine-tuned graph
    view.mode = "finetuned"
    keys3 = _node_key(_flow(view)["nodes"])
    assert keys3 == [(k, int(t)) for k in range(3) for t in f2.levels[k]]
    assert set(np.asarray(_flow(view)["glyphs"]["model"]).tolist()) <= {FINE}


def test_a_new_result_replaces_everything():
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=1, selection=[[1, 1]])
    root = _root(view)
    fig = view.parts().flow
    sizing = fig.sizing_mode  # the flow pane's box (a CSS height goes with it)
    n = 5
    small = _attn({(0, 0, 0): {1: 0.9}, (0, 1, 0): {3: 0.8}}, L=1, H=2, n=n)
    view.result = _result(small, small, tokens=["[CLS]", "a", "b", "[SEP]", "[SEP]"], segments=[0, 0, 0, 0, 1])
    assert view.selection == [] and view.level == 0  # level 1 does not exist with one layer
    keys = _node_key(_flow(view)["nodes"])
    assert keys == [(0, 1), (0, 3), (1, 0)]
    assert root is not None
    assert view.sentence_view.data["n"] == n and view.sentence_view.data["tokens"].split("\n")[1] == "a"
    # the same component, still sized by its box
    assert view.parts().flow is fig and fig.sizing_mode == sizing == "stretch_width"
    with pytest.raises(ValueError, match="PairResult"):
        view.result = object()
    assert view.result.n == n  # the bad value was refused, the view kept its pair


def test_parts_are_the_live_views_for_a_custom_layout():
    """parts(): the app composes its own layout from them; they must follow every later change."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    parts = view.parts()
    assert parts.flow is view.flow and parts.sentence is view.sentence_view
    # beside the flow view: the context view and the legend (the hover details are inside the component)
    assert parts.context.objects[0] is view.context_view is parts.context_view
    assert parts.info is None
    assert parts.legend in parts.context.objects
    layout = pn.Row(parts.sentence, parts.flow, parts.context, parts.controls, parts.status)
    layout.get_root(Document(), comm=Comm())  # the parts rendered in a custom layout
    before = _node_key(_flow(view)["nodes"])
    view.tau = 0.55  # the custom layout shows the new graph, with no new parts to place
    after = _node_key(_flow(view)["nodes"])
    g2, f2 = AttentionGraph.build(PRE_ATTN, 0.55), AttentionGraph.build(FINE_ATTN, 0.55)
    assert after == [(k, int(t)) for k in range(3) for t in GraphComparison(g2, f2).levels[k]] and after != before
    view.selection = [[0, 3]]
    assert parts.status.object == view.status_html() and "[SEP]" in parts.status.object
    assert "pre-trained" in parts.legend.object.lower()


def test_the_flow_views_box_follows_flow_height_and_size():
    """``flow_height`` is the CSS height of the radial view's box while it follows its container (the app
    passes its own, with more above the view); a fixed ``size`` drops it; a bad value is refused and the
    box keeps the last good one."""
    from attnflows_panel.views.attention_flows import FLOW_HEIGHT

    view = AttentionFlowsView(_result(), tau=TAU)
    pane = view.parts().flow
    assert pane.styles == {"height": FLOW_HEIGHT} and pane.sizing_mode == "stretch_width"
    view.flow_height = "calc(100vh - 350px)"
    assert pane.styles == {"height": "calc(100vh - 350px)"}
    with pytest.raises(ValueError, match="flow_height"):
        view.flow_height = "1px} body {display: none"
    assert view.flow_height == "calc(100vh - 350px)" and pane.styles == {"height": "calc(100vh - 350px)"}
    view.size = 500
    assert pane.styles == {} and pane.sizing_mode == "fixed" and view.flow.width == 500
    view.size = None
    assert pane.styles == {"height": "calc(100vh - 350px)"} and pane.sizing_mode == "stretch_width"


def test_selection_survives_tau_change_when_possible():
    view = AttentionFlowsView(_result(), tau=TAU, mode="pretrained", selection=[[0, 3]])
    assert view.highlight().active
    view.tau = 0.42  # [SEP]@0 came from weights 0.35 and 0.45: only 0.45 survives
    g = AttentionGraph.build(PRE_ATTN, 0.42)
    assert g.member[0, 3]
    assert view.highlight().node_set(view.data).keys() == g.trace(0, 3).nodes
    view.tau = 0.5  # now it is gone: no highlight, no error
    assert not view.highlight().active


def test_context_view_angles_encode_sentence_position(graphs):
    """Every node's wedge sits at the angle of its position in the input, the same on every ring
    (context_layout); sentence A clockwise from 9 o'clock, B counter-clockwise; the rings run from level 0
    outside to the root in the centre."""
    from attnflows_panel.layout import context_layout

    view = AttentionFlowsView(_result(), tau=TAU)
    d = view.context_view.data
    ang = np.asarray(d["angles"], dtype=np.float64)
    lay = context_layout(view.data.L + 1, SEGMENTS, radius=138.0, start_angle=view.data.style.start_angle)
    w = lay.wedge_cols
    mid = (w["start"] + w["end"]) / 2
    for lv in range(view.data.L):  # every ring puts a position at the angle sent
        assert np.allclose(mid[w["level"] == lv], ang, atol=1e-5)
    clockwise = {p: (math.pi - ang[p]) % (2 * math.pi) for p in (1, 2, 3)}
    assert 0 < clockwise[1] < clockwise[2] < clockwise[3] < math.pi * 2
    counter = {p: (ang[p] - math.pi) % (2 * math.pi) for p in (4, 5)}
    assert 0 < counter[4] < counter[5] < math.pi
    inner, outer = np.asarray(d["inner"]), np.asarray(d["outer"])
    assert (np.diff(inner) < 0).all() and (outer > inner).all() and inner[-1] == 0  # level 0 outside, root centre
    # the nodes are the radial view's, and their states are the radial view's node states
    from attnflows_panel.views.flow_select import compose_states

    assert np.array_equal(view.context_view.states["st"], compose_states(view.data, None)["nodes"])
    view.selection = [[1, 1]]
    hl = view.highlight()
    assert np.array_equal(view.context_view.states["st"], compose_states(view.data, hl)["nodes"])


def test_the_sentence_view_sends_the_layouts_slots_and_a_click_selects(graphs):
    """The sentence view gets sentence_layout's slot widths and segments (the browser wraps them at its
    width); a click (its ``pick``) selects the token at the chosen level, or says it is no node there; a
    malformed pick is ignored."""
    from attnflows_panel.layout import sentence_layout

    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", level=0)
    d = view.sentence_view.data
    lay = sentence_layout(TOKENS, SEGMENTS, font_size=13.0)
    assert np.allclose(d["w"], lay.token_cols["w"]) and d["segs"].tolist() == SEGMENTS
    assert d["tokens"].split("\n") == list(lay.token_cols["token"]) and d["font"] >= 10
    lv0 = [int(t) for t in view.data.levels[0]]
    view.sentence_view.pick = {"pos": lv0[0], "seq": 1}
    assert view.selection == [[0, lv0[0]]]
    assert view.sentence_view.states["st"][lv0[0]] >= 9  # the selected token
    missing = next(p for p in range(len(TOKENS)) if p not in lv0)
    view.sentence_view.pick = {"pos": missing, "seq": 2}
    assert view.selection == [[0, lv0[0]]] and "is not a node of level 1" in view._status.object
    view.sentence_view.pick = {"pos": "x", "seq": 3}
    view.sentence_view.pick = {"pos": 99, "seq": 4}
    assert view.selection == [[0, lv0[0]]]


def test_export_svg_and_png_include_the_selection(tmp_path):
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined", selection=[[1, 1]])
    svg = view.export("svg")
    tree = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text for t in tree.iter(f"{ns}text")]
    for tok in ("the", "cat", "sat", "[CLS]"):
        assert tok in texts
    # the frozen selection is drawn: the selected token's label in its model colour (both: orange)
    the = [t for t in tree.iter(f"{ns}text") if t.text == "the"]
    assert any(t.get("fill") == SHARED_COLOR for t in the)
    png = view.export("png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    assert im.size[0] > 600 and im.size[1] > 400
    px = np.asarray(im).reshape(-1, 3)
    turquoise = np.array([int(PRETRAINED_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(px.astype(int) - turquoise).sum(axis=1) < 30).sum() > 20  # coloured glyphs drawn
    view.selection = []
    assert view.export("svg") != svg  # the export follows the selection
    with pytest.raises(ValueError, match="export format"):
        view.export("gif")


def test_from_sentences_with_a_model_pair(tiny_bert_dirs):
    from attnflows_panel.models import ModelPair

    pair = ModelPair.load(str(tiny_bert_dirs[0]), str(tiny_bert_dirs[1]))
    view = AttentionFlowsView.from_sentences(pair, "The cat sat.", "A cat was sitting.", tau=0.1)
    nodes = _flow(view)["nodes"]
    assert view.data.n == len(view.result.tokens)
    assert (view.data.L, view.data.H) == (2, 4)
    assert _node_key(nodes)[-1] == (2, 0)  # the root [CLS]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"result": None, "selection": [[0, 0]]}, "needs a result"),
        ({"result": "not a result"}, "PairResult"),
        ({"result": _result(pre=PRE_ATTN[:, :, :5, :5])}, r"\[L, H, n, n\]"),
        ({"result": _result(), "level": 2}, r"level.*(must be in 0 \.\. 1|at most 1)"),
        ({"result": _result(), "selection": [[3, 0]]}, "out of range"),
        ({"result": _result(), "selection": [[0]]}, r"\[level, token\]"),
        ({"result": _result(), "selection": [[0, 1]], "head": [2, 0]}, "head"),
        ({"result": _result(), "mode": "both"}, "mode"),
        ({"result": _result(), "tau": 1.5}, "tau"),
        ({"result": _result(), "flow_height": " "}, "flow_height"),
        ({"result": _result(), "flow_height": "600px; color: red"}, "flow_height"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionFlowsView(**kwargs)


def test_bad_selection_after_construction_raises():
    view = AttentionFlowsView(_result(), tau=TAU)
    with pytest.raises(ValueError, match="out of range"):
        view.selection = [[0, 99]]


def test_flowdata_rejects_mismatched_inputs(graphs):
    g, f = graphs
    with pytest.raises(ValueError, match="mode"):
        FlowData(TOKENS, SEGMENTS, g, f, mode="nope")
    with pytest.raises(ValueError, match="needs the fine-tuned graph"):
        FlowData(TOKENS, SEGMENTS, g, None, mode="combined")
    with pytest.raises(ValueError, match="tokens"):
        FlowData(TOKENS[:-1], SEGMENTS[:-1], g, f)


@pytest.mark.real_model
def test_the_sentence_view_opens_at_the_informative_level(minilm_pair):
    """No level given: the sentence view opens where the two models' influence (eq. 4) differs most,
    whether the result comes at construction or later (as in the app); a level given with the result
    (a shared URL) is kept."""
    from attnflows_panel.compare import GraphComparison

    r = minilm_pair.run("The vaccine was 91 percent effective at preventing illness in adults.",
                        "Officials said the shot prevented severe disease in most adults.")
    tau = 0.15
    pre, fine = AttentionGraph.build(r.pretrained.attentions, tau), AttentionGraph.build(r.finetuned.attentions, tau)
    diff = np.abs(pre.influence(0.5) - fine.influence(0.5)).sum(axis=1)
    want = int(np.argmax(diff))
    assert want == GraphComparison(pre, fine).most_different_level(0.5) and diff[want] > 0
    assert AttentionFlowsView(result=r, tau=tau).level == want
    later = AttentionFlowsView(tau=tau)
    later.result = r
    assert later.level == want
    other = next(k for k in range(1, r.pretrained.attentions.shape[0]) if k != want)  # neither the default 0 nor want
    kept = AttentionFlowsView(tau=tau)
    kept.param.update(result=r, level=other)
    assert kept.level == other
    assert AttentionFlowsView(result=r, tau=tau, level=other).level == other


def test_the_components_picks_set_the_views_state(graphs):
    """What the browser picks comes back as the component's ``pick``: a click, a shift-click on a second
    ring (paths), a head glyph (head restriction of that model), clear; a malformed pick is ignored."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined")
    flow = view.flow
    flow.pick = {"selection": [[2, 0]], "head": [], "head_model": "both", "seq": 1}
    assert view.selection == [[2, 0]] and view.head == []
    flow.pick = {"selection": [[2, 0], [0, 3]], "head": [], "head_model": "both", "seq": 2}
    assert sorted(view.selection) == [[0, 3], [2, 0]] and "path" in view.status
    assert flow.frozen["selection"] == [[2, 0], [0, 3]] and flow.frozen["nodes"].any()
    flow.pick = {"selection": [[2, 0]], "head": [1, 1], "head_model": "finetuned", "seq": 3}
    assert view.head == [1, 1] and view.head_model == "finetuned"
    flow.pick = {"selection": "garbage", "seq": 4}
    assert view.selection == [[2, 0]]
    flow.pick = {"selection": [], "head": [], "head_model": "both", "seq": 5}
    assert view.selection == [] and view.head == [] and "nodes" not in flow.frozen


def test_an_empty_brushed_intersection_says_so():
    """Issue #25 (10): a brush whose intersection is empty says so in the status."""
    attn = _attn({(0, 0, 1): {3: 0.9}, (0, 0, 2): {4: 0.9}, (1, 0, 0): {1: 0.5, 2: 0.45}}, L=2, H=2, n=6)
    view = AttentionFlowsView(_result(attn, attn), tau=0.4, mode="pretrained")
    g = AttentionGraph.build(attn, 0.4)
    lv1 = [int(t) for t in g.levels[1]]
    assert lv1 == [1, 2] and not {n for n in g.trace(1, lv1).nodes if n[0] == 0}  # no common ancestor
    view.selection = [[1, t] for t in lv1]
    assert "empty" in view.status and "level 2" in view.status
    view.selection = [[1, 1]]
    assert "empty" not in view.status


@pytest.mark.parametrize("start, end", [("combined", "finetuned"), ("pretrained", "combined")])
def test_a_mode_switch_draws_as_a_view_made_in_that_mode(start, end):
    """A shared link opens in its mode; the page it was copied from got there by switching. Both must
    draw the same (a switched view kept the sparklines' colours of its first mode)."""
    def drawn(view):
        d = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in view.flow.data.items()}
        return d, view.flow.legend, view._legend.object, view.status_html()

    switched = AttentionFlowsView(_result(), tau=TAU, mode=start)
    _root(switched)
    switched.mode = end
    made = AttentionFlowsView(_result(), tau=TAU, mode=end)
    _root(made)
    assert drawn(switched) == drawn(made)


def test_focus_hides_what_is_dimmed_and_switching_back_restores_it():
    """The focus switch reaches the component (radial.js then hides what is not traced); the component
    is kept."""
    view = AttentionFlowsView(_result(), tau=0.3)
    flow = view.flow
    data = flow.data
    view.focus = True
    assert view.flow is flow and flow.focus is True and flow.data is data
    view.focus = False
    assert flow.focus is False


def test_the_status_line_says_the_current_samples_figures():
    """Issue #25 (2): status_html names the current sample's n and ring sizes, also between a parameter
    change and the redraw, and a τ or mode change fires ``status`` for an app's status line."""
    view = AttentionFlowsView(_result(), tau=TAU, mode="combined")
    seen = []
    view.param.watch(lambda e: seen.append(view.status_html()), ["status"])
    n = 5
    small = _attn({(0, 0, 0): {1: 0.9}, (0, 1, 0): {3: 0.8}}, L=1, H=2, n=n)
    view._data_key = ()  # as between a change and its redraw on a served page
    assert f"n = {len(TOKENS)} tokens" in view.status_html()
    view.result = _result(small, small, tokens=["[CLS]", "a", "b", "[SEP]", "[SEP]"], segments=[0, 0, 0, 0, 1])
    assert f"n = {n} tokens" in view.status_html() and seen and f"n = {n} tokens" in seen[-1]
    sizes = [s.split("ring sizes")[1] for s in (view.status_html(),)]
    view.mode = "pretrained"
    g = AttentionGraph.build(small, TAU)
    want = " · ".join(str(len(lv)) for lv in g.levels[::-1])
    assert f"(root → level 0): {want}" in seen[-1] and sizes


def test_a_graph_that_stops_before_the_input_says_so_and_below_which_tau_it_goes_on():
    """At the default τ a long pair's graph may be [CLS] alone: the rings would stand bare. The view says
    which graph stops where and below which τ it goes further, in the status line and in the radial
    component's help line (its data's ``notice``); a graph that reaches the input says nothing."""
    # [CLS]'s strongest weights in the last layer: 0.6 (pre-trained, "the") and 0.8 (fine-tuned, "cat")
    view = AttentionFlowsView(_result(), tau=0.85, mode="combined")
    view.draw_now()
    notice = view.reach_notice()
    assert notice == ("At τ = 0.85 the pre-trained graph is “[CLS]” alone (its next level for τ < 0.60); "
                      "the fine-tuned graph is “[CLS]” alone (its next level for τ < 0.80). "
                      "Lower τ to follow it further.")
    assert view.flow.data["notice"] == notice
    assert html.escape(notice) in view.status_html()
    view.tau = 0.7  # the fine-tuned graph reaches "cat", and through its last [SEP] (0.9) the input
    view.draw_now()
    assert view.reach_notice().startswith("At τ = 0.70 the pre-trained graph is “[CLS]” alone")
    assert "fine-tuned" not in view.reach_notice()
    view.mode = "finetuned"
    view.draw_now()
    assert view.reach_notice() == "" and view.flow.data["notice"] == ""
    view.param.update(mode="combined", tau=TAU)
    view.draw_now()
    assert view.reach_notice() == "" and "Lower τ" not in view.status_html()
    # [CLS] -> "the" at 0.9 in the last layer, every row of the first layer uniform (1/6 each)
    shallow = _attn({(1, 0, 0): {1: 0.9}})
    view.result = _result(shallow, FINE_ATTN)
    view.draw_now()
    assert view.reach_notice() == ("At τ = 0.30 the pre-trained graph stops at level 2 (the input for "
                                   "τ < 0.16). Lower τ to follow it further.")
