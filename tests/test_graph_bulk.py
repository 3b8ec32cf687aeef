"""The graph's bulk helpers (P1) against direct computations: head counts, adjacency, the packed OR-AND
product, ancestor blocks, byte counting and the cached influence."""

from __future__ import annotations

import numpy as np
import pytest

from attnflows_panel.graph import AttentionGraph, or_and
from attnflows_panel.graph_arrays import count_true, row_counts


def _softmax(rng, shape, sharp=6):
    x = rng.random(shape) ** sharp
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def reference_build(attn, tau, heads=None, root=0):
    """The Attention Graph level by level, written the plain way (§4.1)."""
    L, H, n, _ = attn.shape
    allowed = np.ones((L, H), bool) if heads is None else heads
    member = np.zeros((L + 1, n), bool)
    member[L, root] = True
    active = np.zeros((L, H, n, n), bool)
    for k in range(L - 1, -1, -1):
        for a in np.flatnonzero(member[k + 1]):
            for h in range(H):
                if allowed[k, h]:
                    active[k, h, a] = attn[k, h, a] > tau
        member[k] = active[k].any(axis=(0, 1))
    return member, active


@pytest.mark.parametrize("seed", range(6))
def test_build_matches_plain_construction(seed):
    rng = np.random.default_rng(seed)
    L, H, n = 4, 3 + seed, 9 + 4 * seed
    attn = _softmax(rng, (L, H, n, n), sharp=3 + seed)
    heads = rng.random((L, H)) > 0.3 if seed % 2 else None
    tau = [0.05, 0.1, 0.2][seed % 3]
    g = AttentionGraph.build(attn, tau=tau, heads=heads)
    member, active = reference_build(attn, tau, heads)
    assert g.num_nodes > L + 1  # not only the root
    np.testing.assert_array_equal(g.member, member)
    np.testing.assert_array_equal(g.active, active)
    np.testing.assert_array_equal(g.head_counts, active.sum(axis=1))
    np.testing.assert_array_equal(g.adjacency, active.any(axis=1))
    np.testing.assert_array_equal(g.counts, active.sum(axis=(1, 2)))  # eq. 3
    for k in range(1, L + 1):
        np.testing.assert_array_equal(g.glyphs(k), active[k - 1].sum(axis=2).T)
    assert g.head_counts.dtype == np.int32 and not g.head_counts.flags.writeable
    assert not g.adjacency.flags.writeable


def test_build_when_every_token_is_in_a_level():
    """A level holding every token is read without a gather; the result is the same."""
    rng = np.random.default_rng(3)
    attn = _softmax(rng, (3, 4, 10, 10), sharp=1)
    g = AttentionGraph.build(attn, tau=0.01)
    member, active = reference_build(attn, 0.01)
    assert member[:-1].all()
    np.testing.assert_array_equal(g.active, active)


@pytest.mark.parametrize("seed", range(4))
def test_build_matches_plain_construction_when_n_is_a_multiple_of_8(seed):
    """n % 8 == 0: the out-degrees are counted eight bools per machine word (``row_counts``), the large
    levels compared in one reused buffer; the per-head edges and head counts come on first use."""
    rng = np.random.default_rng(10 + seed)
    L, H, n = 5, 4 + seed, 16 * (seed + 1)
    attn = _softmax(rng, (L, H, n, n), sharp=2 + seed)
    heads = rng.random((L, H)) > 0.3 if seed % 2 else None
    g = AttentionGraph.build(attn, tau=0.05, heads=heads)
    member, active = reference_build(attn, 0.05, heads)
    assert g.num_nodes > 2 * L
    np.testing.assert_array_equal(g.member, member)
    np.testing.assert_array_equal(g.out_degree, active.sum(axis=3).transpose(0, 2, 1))
    np.testing.assert_array_equal(g.counts, active.sum(axis=(1, 2)))
    np.testing.assert_array_equal(g.adjacency, active.any(axis=1))
    np.testing.assert_array_equal(g.active, active)
    np.testing.assert_array_equal(g.head_counts, active.sum(axis=1))
    assert not g.active.flags.writeable and g.active is g.active  # computed once


@pytest.mark.parametrize("n", [8, 64, 128, 1024, 2040, 2048])
def test_row_counts_match_sum(n):
    rng = np.random.default_rng(n)
    m = rng.random((3, 5, n)) > 0.3
    m[0, 0] = True  # a full row: the count reaches n (every byte lane at its largest)
    m[0, 1] = False
    np.testing.assert_array_equal(row_counts(m), m.sum(axis=-1))
    np.testing.assert_array_equal(row_counts(m[:, 1:]), m[:, 1:].sum(axis=-1))  # not contiguous: the plain path


@pytest.mark.parametrize("seed", range(3))
def test_trace_mask_is_the_trace_mask(seed):
    rng = np.random.default_rng(20 + seed)
    g = AttentionGraph.build(_softmax(rng, (4, 4, 16, 16), sharp=3), tau=0.08)
    for level in range(g.L + 1):
        lv = g.levels[level].tolist()
        for sel in ([lv[0]], lv[:2], lv[-1:]) if lv else ():
            for head in (None, (max(level - 1, 0), int(rng.integers(4))), (min(level, g.L - 1), 0)):
                got = g.trace_mask(level, sel, head)
                np.testing.assert_array_equal(got, g.trace(level, sel, head).mask)
    with pytest.raises(ValueError, match="not in level"):
        g.trace_mask(g.L, [g.root + 1])  # the root's level holds the root alone
    with pytest.raises(ValueError, match="out of range"):
        g.trace_mask(0, [g.n])


@pytest.mark.parametrize("size", [3, 255, 256, 300])
def test_count_true_matches_sum(size):
    rng = np.random.default_rng(size)
    m = rng.random((2, size, 3)) > 0.2
    m[0, :, 0] = True  # a full column: the count reaches ``size``
    for axis in (0, 1, 2):
        got = count_true(m, axis)
        np.testing.assert_array_equal(got, m.sum(axis=axis))
        assert got.dtype == np.int32


@pytest.mark.parametrize("seed", range(5))
def test_or_and_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    r, m, W = 1 + seed * 7, 2 + seed * 5, 1 + seed % 3
    sel = rng.random((r, m)) > 0.7
    sel[0] = False  # a row with no edge stays empty
    sets = rng.integers(0, 2**63, size=(m, W), dtype=np.uint64)
    expect = np.zeros((r, W), dtype=np.uint64)
    for i in range(r):
        for j in range(m):
            if sel[i, j]:
                expect[i] |= sets[j]
    np.testing.assert_array_equal(or_and(sel, sets), expect)
    sets_r = np.resize(sets, (r, W))  # a transposed (non-contiguous) selection, as the upward pass uses
    np.testing.assert_array_equal(or_and(sel.T, sets_r), _brute(sel.T, sets_r))
    assert or_and(np.zeros((0, m), bool), sets).shape == (0, W)


def _brute(sel, sets):
    out = np.zeros((sel.shape[0], sets.shape[1]), dtype=np.uint64)
    for i, j in zip(*np.nonzero(sel), strict=True):
        out[i] |= sets[j]
    return out


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.2])
def test_ancestor_blocks_are_the_ancestor_matrix(tau):
    rng = np.random.default_rng(7)
    g = AttentionGraph.build(_softmax(rng, (5, 4, 24, 24), sharp=5), tau=tau)
    flat, A = g.ancestor_matrix()
    flat2, off, blocks = g.ancestor_blocks()
    np.testing.assert_array_equal(flat, flat2)
    assert off[-1] == flat.size == g.num_nodes
    assert A.any()
    for lev, blk in enumerate(blocks):
        np.testing.assert_array_equal(blk, A[off[lev] : off[lev + 1], : off[lev]])
        assert not A[off[lev] : off[lev + 1], off[lev] :].any()  # ancestors lie on lower levels only
    # and each row is the trace's ancestor mask
    traces = g.all_traces()
    for i, f in enumerate(flat.tolist()):
        t = traces[(f // g.n, f % g.n)]
        np.testing.assert_array_equal(np.flatnonzero(t.ancestor_mask), np.sort(flat[A[i]]))


def test_influence_is_cached_but_callers_get_their_own_copy():
    rng = np.random.default_rng(0)
    g = AttentionGraph.build(_softmax(rng, (4, 3, 12, 12), sharp=4), tau=0.1)
    first = g.influence(0.5)
    ratings = [g.ratings(k) for k in range(g.L)]
    first[:] = 99.0  # a caller scribbling on its array changes nothing in the graph
    np.testing.assert_array_equal(g.influence(0.5), g.influence(0.5))
    assert not np.array_equal(g.influence(0.5), first)
    for k in range(g.L):
        np.testing.assert_array_equal(g.ratings(k), ratings[k])
    assert not np.array_equal(g.influence(0.25), g.influence(0.5))


def test_weights_are_checked_in_every_layer_with_the_usual_errors():
    """Weights are validated layer by layer during the build; the errors (and which one wins) are the
    ones a check of the whole array gives."""
    rng = np.random.default_rng(1)
    good = _softmax(rng, (3, 2, 6, 6), sharp=2)
    bad = good.copy()
    bad[0, 1, 4, 2] = 1.5  # out of range in the first layer only (the build reaches it last)
    with pytest.raises(ValueError, match=r"got values in \[.*, 1\.5\]"):
        AttentionGraph.build(bad, tau=0.01)
    neg = good.copy()
    neg[2, 0, 0, 0] = -0.25
    with pytest.raises(ValueError, match=r"got values in \[-0\.25, "):
        AttentionGraph.build(neg, tau=0.9)  # τ so high that the graph is the root alone
    both = bad.copy()
    both[2, 0, 0, 0] = np.nan  # NaN in the last layer, a value above 1 in the first: NaN is reported
    with pytest.raises(ValueError, match="NaN"):
        AttentionGraph.build(both, tau=0.01)
    with pytest.raises(ValueError, match="NaN"):  # a bad weight is reported before a bad τ
        AttentionGraph.build(both, tau=2.0)
    with pytest.raises(ValueError, match="got values in"):
        AttentionGraph.build(bad, tau=0.5, root=99)
    with pytest.raises(ValueError, match="tau must lie"):  # good weights: the τ error
        AttentionGraph.build(good, tau=2.0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_weight_check_matches_the_plain_comparisons(dtype):
    from attnflows_panel.graph_arrays import MAX_WEIGHT, weights_ok

    base = np.array([0.0, 0.25, 1.0], dtype=dtype)
    for v in [0.0, -0.0, 1.0, 1.0005, MAX_WEIGHT, 1.0011, 1.01, 2.0, -1e-30, -0.5, np.inf, -np.inf, np.nan,
              np.finfo(dtype).tiny, np.nextafter(dtype(MAX_WEIGHT), dtype(2))]:
        a = np.append(base, dtype(v))
        with np.errstate(invalid="ignore"):
            expect = bool(a.min() >= 0 and a.max() <= MAX_WEIGHT)
        assert weights_ok(a) == expect, (dtype, v)
        assert weights_ok(a[::-1]) == expect  # not contiguous: the plain path


@pytest.mark.parametrize("seed", range(3))
def test_ancestor_sets_are_the_ancestor_matrix_renumbered(seed):
    rng = np.random.default_rng(seed)
    g = AttentionGraph.build(_softmax(rng, (5, 3, 20, 20), sharp=5), tau=0.08)
    flat, A = g.ancestor_matrix()
    np.testing.assert_array_equal(g.levels_flat, flat)
    N = flat.size
    bit = np.sort(rng.choice(3 * N, N, replace=False))  # a sparser, ascending numbering
    width = int(bit[-1]) + 1 + int(rng.integers(0, 70))
    sets = g.ancestor_sets(bit, width)
    rows = np.concatenate([np.unpackbits(s.view(np.uint8), axis=1, count=width, bitorder="little") for s in sets])
    expect = np.zeros((N, width), dtype=np.uint8)
    expect[:, bit] = A
    assert A.any()
    np.testing.assert_array_equal(rows, expect)
    with pytest.raises(ValueError, match="ascend"):
        g.ancestor_sets(bit[::-1], width)
    with pytest.raises(ValueError, match="position in"):
        g.ancestor_sets(bit, int(bit[-1]))


def test_out_degree_is_the_glyph_data():
    rng = np.random.default_rng(5)
    g = AttentionGraph.build(_softmax(rng, (4, 5, 16, 16), sharp=4), tau=0.1)
    assert g.out_degree.shape == (4, 16, 5) and not g.out_degree.flags.writeable
    for k in range(1, g.L + 1):
        np.testing.assert_array_equal(g.out_degree[k - 1], g.glyphs(k))
        np.testing.assert_array_equal(g.out_degree[k - 1], g.active[k - 1].sum(axis=2).T)
