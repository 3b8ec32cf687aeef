"""What the radial component is sent (``radial.pack_flow``) and what it derives from it: ``unpack_flow``
(the Python twin of radial.js's ``expand``, which tests/test_radial_browser.py checks in Chromium) gives
back FlowData's head glyphs and edge columns exactly, in every mode, with one and two words of head bits."""

from __future__ import annotations

import numpy as np
import pytest

from attnflows_panel.graph import AttentionGraph
from attnflows_panel.views.flow_data import FlowData
from attnflows_panel.views.radial import pack_flow, unpack_flow


def _attn(rng, L, H, n):
    x = rng.normal(size=(L, H, n, n)) * 3.5
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _data(mode, H=6, n=40, L=4, seed=0, heads=None):
    rng = np.random.default_rng(seed)
    half = n // 2
    tokens = ["[CLS]"] + [f"a{i}" for i in range(1, half)] + ["[SEP]"] + [f"b{i}" for i in range(half + 1, n - 1)]
    tokens += ["[SEP]"]
    segments = [0] * (half + 1) + [1] * (n - half - 1)
    pre = AttentionGraph.build(_attn(rng, L, H, n), 0.2, heads=heads)
    fine = AttentionGraph.build(_attn(rng, L, H, n), 0.2)
    return FlowData(tokens, segments, pre, fine, mode)


@pytest.mark.parametrize("mode", ["combined", "pretrained", "finetuned"])
@pytest.mark.parametrize("H", [6, 40])
def test_unpack_gives_back_the_glyphs_and_edges(mode, H):
    data = _data(mode, H=H)
    sent = pack_flow(data)
    assert not any(k.startswith("g_") and k not in ("g_du", "g_dv") for k in sent)  # glyphs are derived
    assert "e_u" not in sent and "e_mem" not in sent and "n_out" in sent
    d = unpack_flow(sent)
    g, e = data.glyphs, data.edges
    assert d["G"] == len(g) > 0 and d["E"] == len(e) > 0
    for k in ("node", "head", "model", "part", "gc", "cp", "cf"):
        np.testing.assert_array_equal(d[f"g_{k}"], g[k].to_numpy(), err_msg=k)
    np.testing.assert_allclose(d["g_x"], g["x"], atol=1e-3)
    np.testing.assert_allclose(d["g_y"], g["y"], atol=1e-3)
    for k, c in (("u", "u"), ("mem", "member"), ("nh", "nh"), ("rest", "rest")):
        np.testing.assert_array_equal(d[f"e_{k}"], e[c].to_numpy(), err_msg=k)
    np.testing.assert_allclose(d["e_w"], e["w"], atol=0.5 / 255 + 1e-6)


def test_a_head_restriction_lights_only_the_allowed_heads():
    heads = np.ones((4, 6), dtype=bool)
    heads[2, 1:] = False  # layer 2: head 0 only
    data = _data("pretrained", heads=heads)
    d = unpack_flow(pack_flow(data))
    g = data.glyphs
    np.testing.assert_array_equal(d["g_head"], g["head"].to_numpy())
    lv = np.asarray(d["n_level"])[d["g_node"]]
    assert set(np.asarray(d["g_head"])[lv == 3].tolist()) <= {0}
