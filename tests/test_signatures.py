"""Head-usage signatures (attnflows_panel.signatures): definition, vectors, masked queries, head specs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnflows_panel import signatures
from attnflows_panel.graph import AttentionGraph


def _softmax_attn(rng, L, H, n, sharp=3.0):
    logits = rng.normal(size=(L, H, n, n)) * sharp
    a = np.exp(logits - logits.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def _hand_attn():
    """L=2, H=2, n=4 attentions with known graph edges at τ = 0.3 (rows sum to 1)."""
    a = np.full((2, 2, 4, 4), 0.25, dtype=np.float32)
    # layer 1 (last): root [CLS]=0 attends to 1 (head 0) and to 1 and 2 (head 1)
    a[1, 0, 0] = [0.1, 0.7, 0.1, 0.1]
    a[1, 1, 0] = [0.0, 0.4, 0.4, 0.2]
    # layer 0: level 1 = {1, 2}; token 1 -> 3 (head 0), token 2 -> 2 (head 0) and 2 (head 1), token 1 -> 0 (head 1)
    a[0, 0, 1] = [0.1, 0.1, 0.1, 0.7]
    a[0, 0, 2] = [0.0, 0.0, 0.9, 0.1]
    a[0, 1, 1] = [0.5, 0.2, 0.2, 0.1]
    a[0, 1, 2] = [0.1, 0.1, 0.6, 0.2]
    # token 3 is not in level 1: its strong attention must not count
    a[0, 0, 3] = [0.0, 0.0, 0.0, 1.0]
    a[0, 1, 3] = [1.0, 0.0, 0.0, 0.0]
    return a


def test_hand_example_counts_and_usage():
    a = _hand_attn()
    g = AttentionGraph.build(a, tau=0.3)
    # layer 1: E = {(0,1), (0,2)}; head 0 carries (0,1), head 1 carries both
    # layer 0: E = {(1,3), (2,2), (1,0)}; head 0 carries (1,3), (2,2); head 1 carries (1,0), (2,2)
    np.testing.assert_array_equal(signatures.head_edge_counts(g), [[2, 2], [1, 2]])
    np.testing.assert_array_equal(signatures.layer_edge_counts(g), [3, 2])
    np.testing.assert_allclose(signatures.head_usage(g), [[2 / 3, 2 / 3], [0.5, 1.0]])
    np.testing.assert_allclose(signatures.usage_from_attentions(a, 0.3), signatures.head_usage(g))


def test_layer_without_edges_has_zero_usage():
    a = np.full((3, 2, 5, 5), 0.2, dtype=np.float32)  # uniform: nothing above τ = 0.3
    u = signatures.usage_from_attentions(a, 0.3)
    assert u.shape == (3, 2) and not u.any()
    assert not signatures.head_usage(AttentionGraph.build(a, tau=0.3)).any()


@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 4), H=st.integers(1, 4), n=st.integers(1, 9), tau=st.floats(0.05, 0.9),
    seed=st.integers(0, 2**16), root=st.integers(0, 8),
)
def test_fast_usage_equals_graph_definition(L, H, n, tau, seed, root):
    """usage_from_attentions (the index's fast path) == head_usage(AttentionGraph) (the definition)."""
    a = _softmax_attn(np.random.default_rng(seed), L, H, n)
    root = root % n
    g = AttentionGraph.build(a, tau=tau, root=root)
    np.testing.assert_allclose(signatures.usage_from_attentions(a, tau, root=root), signatures.head_usage(g), atol=0)
    # usage is a share of the layer's edges: in [0, 1], and >= 1/H summed over a layer with edges
    u = signatures.head_usage(g)
    assert (u >= 0).all() and (u <= 1).all()
    edges = signatures.layer_edge_counts(g)
    assert np.all(u[edges > 0].sum(axis=1) >= 1 - 1e-6)


def test_bad_attention_shapes():
    with pytest.raises(ValueError, match=r"\[L, H, n, n\]"):
        signatures.usage_from_attentions(np.zeros((2, 3, 4)), 0.3)
    with pytest.raises(ValueError, match="root 5 out of range"):
        signatures.usage_from_attentions(np.zeros((1, 1, 3, 3)), 0.3, root=5)
    with pytest.raises(ValueError, match="different"):
        signatures.pair_usage(np.zeros((1, 2, 3, 3), bool), np.zeros((2, 2, 3, 3), bool))


def _random_usage(rng, N, L, H):
    return rng.random((N, 2, L, H)).astype(np.float32) ** 2


def test_blocks_order_and_diff():
    rng = np.random.default_rng(0)
    u = _random_usage(rng, 5, 3, 4)
    b = signatures.blocks(u)
    assert b.shape == (5, 3, 12)
    k, h = 2, 1
    np.testing.assert_allclose(b[:, 0, k * 4 + h], u[:, 0, k, h])
    np.testing.assert_allclose(b[:, 1, k * 4 + h], u[:, 1, k, h])
    np.testing.assert_allclose(b[:, 2], b[:, 1] - b[:, 0])
    with pytest.raises(ValueError, match=r"\(pre, fine\)"):
        signatures.blocks(np.zeros((5, 3, 3, 4)))


def test_center_and_embedding():
    rng = np.random.default_rng(1)
    L, H = 3, 4
    u = _random_usage(rng, 50, L, H)
    c = signatures.fit_center(u, chunk=7)  # chunked mean == plain mean
    np.testing.assert_allclose(c, signatures.blocks(u).mean(axis=0), atol=1e-6)
    x = signatures.embed(u, c)
    assert x.shape == (50, 3 * L * H) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    per_block = np.linalg.norm(x.reshape(50, 3, L * H), axis=2)
    np.testing.assert_allclose(per_block, 1 / np.sqrt(3), atol=1e-5)
    # inner product of two vectors == mean of the three centred block cosines
    bl = signatures.blocks(u) - c
    cos = [bl[3, i] @ bl[7, i] / np.linalg.norm(bl[3, i]) / np.linalg.norm(bl[7, i]) for i in range(3)]
    assert x[3] @ x[7] == pytest.approx(np.mean(cos), abs=1e-5)
    # a sample whose usage equals the mean is the zero vector, not NaN
    z = signatures.embed(u[:1], signatures.blocks(u[:1])[0])
    assert np.isfinite(z).all() and not z.any()
    with pytest.raises(ValueError, match="centre"):
        signatures.embed(u, c[:2])
    with pytest.raises(ValueError, match="empty"):
        signatures.fit_center(np.zeros((0, 2, L, H)))


def _brute_scores(xq, X, space, mask, L, H):
    """The documented score, written out: mean over chosen blocks of <masked, renormalised query, z'>."""
    d = L * H
    zq = xq.reshape(3, d) * np.sqrt(3)
    Z = X.reshape(len(X), 3, d) * np.sqrt(3)
    m = np.ones(d, bool) if mask is None else mask.reshape(-1)
    chosen = [0, 1, 2] if space == "all" else [signatures.BLOCKS.index(space)]
    total = np.zeros(len(X))
    for b in chosen:
        qb = np.where(m, zq[b], 0.0)
        if np.linalg.norm(qb) > 0:
            total += Z[:, b] @ (qb / np.linalg.norm(qb))
    return total / len(chosen)


@pytest.mark.parametrize("space", signatures.SPACES)
def test_query_vector_scores(space):
    rng = np.random.default_rng(2)
    L, H = 3, 4
    u = _random_usage(rng, 40, L, H)
    X = signatures.embed(u, signatures.fit_center(u))
    mask = rng.random((L, H)) < 0.4
    mask[0, 0] = True
    for m in (None, mask):
        q = signatures.query_vector(X[5], space, m, L=L, H=H)
        np.testing.assert_allclose(X @ q, _brute_scores(X[5], X, space, m, L, H), atol=1e-5)
        dims = signatures.space_mask(space, m, L, H)
        assert not q[~dims].any()  # zeroed query dims: nothing outside the space and heads counts
    # without a mask, a sample scores 1 with itself and nothing scores higher
    s = X @ signatures.query_vector(X[5], space, None, L=L, H=H)
    assert s[5] == pytest.approx(1.0, abs=1e-5) and s.max() <= 1 + 1e-5


def test_query_vector_errors():
    L, H = 2, 3
    x = np.zeros(3 * L * H, np.float32)
    with pytest.raises(ValueError, match="zero in space 'all'"):
        signatures.query_vector(x, "all", None, L=L, H=H)
    x[0] = 1.0
    with pytest.raises(ValueError, match="unknown search space 'both'"):
        signatures.query_vector(x, "both", None, L=L, H=H)
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        signatures.query_vector(x, "all", np.ones((3, 3), bool), L=L, H=H)
    with pytest.raises(ValueError, match="selects no head"):
        signatures.query_vector(x, "all", np.zeros((2, 3), bool), L=L, H=H)
    with pytest.raises(ValueError, match="expected 18"):
        signatures.query_vector(x[:5], "all", None, L=L, H=H)
    # the query is zero on the chosen heads of a block: a clear error, not NaN scores
    with pytest.raises(ValueError, match="zero in space 'fine'"):
        signatures.query_vector(x, "fine", None, L=L, H=H)


def test_parse_and_format_heads():
    L, H = 6, 12
    m = signatures.parse_heads("0:1, 3:5", L, H)
    assert m.sum() == 2 and m[0, 1] and m[3, 5]
    assert signatures.parse_heads("5:*", L, H)[5].all() and signatures.parse_heads("5:*", L, H).sum() == 12
    assert signatures.parse_heads("*:0", L, H)[:, 0].all()
    assert signatures.parse_heads("2-3:0-1", L, H).sum() == 4
    assert signatures.parse_heads([(1, 2), (4, 11)], L, H).sum() == 2
    assert signatures.parse_heads(None, L, H) is None and signatures.parse_heads("  ", L, H) is None
    assert signatures.format_heads(signatures.parse_heads("0:1,3:5", L, H)) == "0:1,3:5"
    assert signatures.format_heads(np.ones((L, H), bool)) == "" and signatures.format_heads(None) == ""
    for spec, msg in (
        ("6:0", "layer 6 out of range 0..5"),
        ("0:12", "head 12 out of range 0..11"),
        ("3", "write layer:head"),
        ("a:1", "bad layer 'a'"),
        ("1:2-x", "bad head range"),
    ):
        with pytest.raises(ValueError, match=msg):
            signatures.parse_heads(spec, L, H)
    with pytest.raises(ValueError, match="out of range"):
        signatures.parse_heads([(9, 0)], L, H)
