"""Every τ at once (attnflows_panel.bottleneck) against the Attention Graph built at each τ.

Hand-worked small cases, then real all-MiniLM-L6-v2 attentions (raw and norm weights) of GLUE MRPC pairs:
at 50 random τ per pair (and at τ exactly on breakpoints, where "above τ" must be strict) the levels, edges
and per-head edges read off the widths equal those of ``AttentionGraph(weights, τ, heads)``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from attnflows_panel.bottleneck import (
    Bottleneck,
    bottleneck,
    breakpoints,
    describe_width,
    membership,
    reach,
    tau_bound,
    tau_profile,
)
from attnflows_panel.graph import AttentionGraph


def _hand_case() -> np.ndarray:
    """L = 2 layers, H = 2 heads, n = 3 tokens; root 0. Weights chosen to be worked by hand."""
    w = np.zeros((2, 2, 3, 3), dtype=np.float32)
    # layer 1 (root level 2 -> level 1): the root attends to 1 with 0.6 (head 0), to 2 with 0.3 (head 1)
    w[1, 0, 0] = [0.1, 0.6, 0.3]
    w[1, 1, 0] = [0.2, 0.5, 0.3]
    # layer 0 (level 1 -> level 0)
    w[0, 0, 1] = [0.0, 0.2, 0.8]  # token 1 -> token 2 with 0.8
    w[0, 1, 1] = [0.7, 0.1, 0.2]  # token 1 -> token 0 with 0.7 (head 1)
    w[0, 0, 2] = [0.9, 0.05, 0.05]  # token 2 -> token 0 with 0.9
    w[0, 1, 2] = [0.1, 0.45, 0.45]  # token 2 -> token 1 with 0.45 (head 1)
    return w


def test_hand_worked_widths():
    b = bottleneck(_hand_case())
    # level 2: the root only. level 1: b(t) = max over heads of w[1, h, 0, t] (the root has width ∞)
    # level 0: token 0 = max(min(.6, .7), min(.3, .9)) = .6; token 1 = max(min(.6, .1), min(.3, .45)) = .3;
    #          token 2 = max(min(.6, .8), min(.3, .45)) = .6
    expected = np.array([[0.6, 0.3, 0.6], [0.2, 0.6, 0.3], [np.inf, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(b.node, expected)
    assert b.node.dtype == np.float32 and not b.node.flags.writeable
    # the edge (1, 1) -> (0, 2): min(b(1, 1) = .6, max_h w[0, h, 1, 2] = .8) = .6
    assert b.edge[0, 1, 2] == np.float32(0.6)
    assert b.head_edge[0, 1, 1, 2] == np.float32(0.2)  # head 1 carries it up to min(.6, .2)
    np.testing.assert_array_equal(b.breakpoints(), np.float32([0.2, 0.3, 0.6]).astype(np.float64))
    # strict "above τ": at τ = 0.3 exactly, the tokens of width 0.3 are out
    assert b.levels(0.3)[0].tolist() == [0, 2] and b.levels(0.3)[1].tolist() == [1]
    assert b.levels(0.29)[0].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(b.profile([0.0, 0.25, 0.3, 0.6]), [[3, 3, 1], [3, 2, 1], [2, 1, 1], [0, 0, 1]])


def test_hand_worked_head_subset():
    heads = np.array([[True, False], [True, False]])  # only head 0 in both layers
    b = bottleneck(_hand_case(), heads=heads)
    # level 1: w[1, 0, 0] = [.1, .6, .3]; level 0: token 0 = max(min(.6, 0), min(.3, .9), min(.1, 0)) = .3, ...
    expected_l0 = [max(min(0.1, 0.0), min(0.6, 0.0), min(0.3, 0.9)),
                   max(min(0.1, 0.0), min(0.6, 0.2), min(0.3, 0.05)),
                   max(min(0.1, 0.0), min(0.6, 0.8), min(0.3, 0.05))]
    np.testing.assert_allclose(b.node[0], expected_l0)
    np.testing.assert_allclose(b.node[1], [0.1, 0.6, 0.3])
    assert (b.head_edge[:, 1] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_random_small_cases_equal_the_graph(seed):
    rng = np.random.default_rng(seed)
    L, H, n = 3, 3, 7
    w = rng.random((L, H, n, n)).astype(np.float32) ** 4
    w /= w.sum(-1, keepdims=True)
    heads = rng.random((L, H)) > 0.4 if seed % 2 else None
    root = int(rng.integers(n))
    b = bottleneck(w, heads, root)
    _assert_same_as_graph(b, w, heads, root, rng.random(20) * 0.8)


@pytest.mark.parametrize("seed", range(4))
def test_reach_says_how_deep_the_graph_goes(seed):
    """reach(node, τ): the lowest level of the graph at τ, and the τ just under which the graph gains the
    level below it and the input, checked against graphs built at and just under those values."""
    rng = np.random.default_rng(seed)
    L, H, n = 4, 2, 9
    w = rng.random((L, H, n, n)).astype(np.float32) ** 6
    w /= w.sum(-1, keepdims=True)
    b = bottleneck(w)
    seen = set()
    for tau in np.linspace(0.0, 0.95, 40):
        r = reach(b.node, tau)
        levels = AttentionGraph(w, float(tau)).levels
        assert r.lowest == min(k for k in range(L + 1) if len(levels[k]))
        seen.add(r.lowest)
        for k, bound in ((r.lowest - 1, r.next_below), (0, r.input)):
            if k < 0:
                assert np.isnan(r.next_below)
                continue
            assert len(AttentionGraph(w, min(0.999, bound)).levels[k]) == 0  # "above τ" is strict
            if bound > 0:
                assert len(AttentionGraph(w, bound * (1 - 1e-5)).levels[k]) > 0
    assert {0, L} <= seen  # the input reached at τ 0, the root alone at the top


def _assert_same_as_graph(b: Bottleneck, w, heads, root, taus) -> None:
    for tau in taus:
        g = AttentionGraph(w, float(tau), heads, root)
        np.testing.assert_array_equal(b.member(tau), g.member, err_msg=f"tau={tau}")
        np.testing.assert_array_equal(b.adjacency(tau), g.adjacency, err_msg=f"tau={tau}")
        np.testing.assert_array_equal(b.active(tau), g.active, err_msg=f"tau={tau}")
        assert [lv.tolist() for lv in b.levels(tau)] == [lv.tolist() for lv in g.levels]
        np.testing.assert_array_equal(b.profile([tau])[0], [len(lv) for lv in g.levels])


# --------------------------------------------------------------------------------------------------
# real MiniLM pairs
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_weights(minilm_path, glue_dir):
    """(raw, norm) weights of all-MiniLM-L6-v2 for the first 3 MRPC dev pairs."""
    from attnflows_panel.models import ModelPair
    from attnflows_panel.weights import pair_weights

    with open(glue_dir / "MRPC" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    h = rows[0]
    pair = ModelPair.load(str(minilm_path), str(minilm_path), device="cpu")
    out = []
    for r in rows[1:4]:
        pw = pair_weights(pair, r[h.index("#1 String")], r[h.index("#2 String")], "norm")
        out.append((pw.pretrained.attentions, pw.pretrained.weights))
    return out


@pytest.mark.real_model
@pytest.mark.glue
@pytest.mark.parametrize("kind", ["raw", "norm"])
def test_membership_equals_the_graph_at_50_random_taus_minilm(minilm_weights, kind):
    rng = np.random.default_rng(27)
    for raw, norm in minilm_weights:
        w = raw if kind == "raw" else norm
        L, H, n, _ = w.shape
        b = bottleneck(w)
        top = float(b.node[: L].max())
        taus = rng.random(50) * top * 1.1  # spread over the range where the graph changes, and a little above
        _assert_same_as_graph(b, w, None, 0, taus)
        assert b.member(float(np.median(taus))).sum() > L  # the graphs compared are not the root alone
        # on a breakpoint exactly, and just below it
        bp = b.breakpoints()
        picks = bp[rng.choice(len(bp), 8, replace=False)]
        below = [float(np.nextafter(np.float32(v), np.float32(0))) for v in picks]
        _assert_same_as_graph(b, w, None, 0, list(picks) + below)


@pytest.mark.real_model
@pytest.mark.glue
def test_head_subsets_equal_the_graph_minilm(minilm_weights):
    rng = np.random.default_rng(3)
    raw, _ = minilm_weights[0]
    L, H = raw.shape[:2]
    for _ in range(4):
        heads = rng.random((L, H)) > 0.5
        b = bottleneck(raw, heads)
        _assert_same_as_graph(b, raw, heads, 0, rng.random(12) * 0.3)
    one = np.zeros((L, H), bool)
    one[:, 3] = True  # one head per layer
    _assert_same_as_graph(bottleneck(raw, one), raw, one, 0, rng.random(12) * 0.3)


@pytest.mark.real_model
@pytest.mark.glue
def test_breakpoints_are_where_the_levels_change_minilm(minilm_weights):
    raw, _ = minilm_weights[1]
    b = bottleneck(raw)
    bp = b.breakpoints()
    assert len(bp) > 10 and np.all(np.diff(bp) > 0)
    for v in bp:
        just_below = float(np.nextafter(np.float32(v), np.float32(0)))
        assert not np.array_equal(b.member(just_below), b.member(float(v)))
    # between two breakpoints nothing changes
    mids = (bp[:-1] + bp[1:]) / 2
    for lo, mid in zip(bp[:-1], mids, strict=True):
        np.testing.assert_array_equal(b.member(float(lo)), b.member(float(mid)))
    # above the largest, only the root is left
    assert b.member(float(bp[-1])).sum() == 1


@pytest.mark.real_model
@pytest.mark.glue
def test_tau_profile_counts_tokens_per_level_minilm(minilm_weights):
    raw, _ = minilm_weights[2]
    b = bottleneck(raw)
    taus = np.linspace(0, 0.6, 61)
    prof = tau_profile(b.node, taus)
    assert prof.shape == (61, raw.shape[0] + 1)
    for t, row in zip(taus, prof, strict=True):
        np.testing.assert_array_equal(row, membership(b.node, t).sum(1))
    assert (np.diff(prof, axis=0) <= 0).all() and (prof[:, -1] == 1).all()


def test_breakpoints_function():
    np.testing.assert_array_equal(breakpoints([[0.0, np.inf, 0.5], [0.25, 0.5, 0.0]]), [0.25, 0.5])
    edge = bottleneck(_hand_case()).edge
    assert set(breakpoints(bottleneck(_hand_case()).node)) <= set(breakpoints(edge))


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        (np.zeros((2, 3, 3)), {}, r"\[L, H, n, n\]"),
        (np.zeros((1, 1, 2, 3)), {}, r"\[L, H, n, n\]"),
        (np.zeros((1, 1, 2, 2), dtype=np.int64), {}, "floating-point"),
        (np.full((1, 1, 2, 2), np.nan), {}, "NaN"),
        (-np.ones((1, 1, 2, 2)), {}, "non-negative"),
        (np.zeros((1, 2, 2, 2)), {"heads": np.ones((1, 3), bool)}, "heads must be a boolean mask"),
        (np.zeros((1, 2, 2, 2)), {"heads": np.ones((1, 2))}, "heads must be a boolean mask"),
        (np.zeros((1, 1, 2, 2)), {"root": 2}, "root 2 is out of range"),
        (np.zeros((1, 1, 2, 2)), {"root": True}, "root must be a token position"),
    ],
)
def test_bad_input(weights, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bottleneck(weights, **kwargs)


def test_bad_tau():
    b = bottleneck(_hand_case())
    for bad in ("x", None, float("nan")):
        with pytest.raises(ValueError, match="tau must be a number"):
            b.member(bad)
    with pytest.raises(ValueError, match="NaN"):
        tau_profile(b.node, [0.1, float("nan")])


def test_describe_width():
    assert describe_width(np.inf) == "in the graph at every τ"
    assert describe_width(0.0) == "in the graph at no τ"
    assert describe_width(np.float32(0.234)) == "in the graph for τ < 0.23"
    assert describe_width(np.float32(0.23)) == "in the graph for τ < 0.23"
    assert describe_width(0.239) == "in the graph for τ < 0.23"  # cut, never rounded up
    assert describe_width(0.00487) == "in the graph for τ < 0.0048"
    assert describe_width(1.0) == "in the graph for τ < 1.0"
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="width"):
            describe_width(bad)
    # the bound alone (the view's notice when the graph stops early): the same cut
    assert tau_bound(0.239) == "τ < 0.23" and tau_bound(0.00487) == "τ < 0.0048"
    for bad in (0.0, -0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite width > 0"):
            tau_bound(bad)
