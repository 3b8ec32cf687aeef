"""``GraphComparison.trace_mask`` / ``paths_mask`` (the codes only, what a view marks in bulk) equal the
masks of the full ``trace`` / ``paths`` results, and check their arguments the same way."""

from __future__ import annotations

import numpy as np
import pytest

from attnflows_panel.compare import FINE, PRE, GraphComparison
from attnflows_panel.graph import AttentionGraph


def _softmax(rng, shape, sharp=5):
    x = rng.random(shape) ** sharp
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=range(3))
def comparison(request):
    rng = np.random.default_rng(request.param)
    L, H, n = 4, 3, 14
    pre = AttentionGraph.build(_softmax(rng, (L, H, n, n)), tau=0.12)
    fine = AttentionGraph.build(_softmax(rng, (L, H, n, n)), tau=0.12)
    return GraphComparison(pre, fine)


def test_trace_mask_equals_trace(comparison):
    c = comparison
    checked = 0
    for level, toks in enumerate(c.levels):
        for t in toks.tolist():
            for model in (None, "pre", "fine"):
                np.testing.assert_array_equal(c.trace_mask(level, t, model=model), c.trace(level, t, model=model).mask)
                checked += 1
            if level >= 1:
                for h in range(c.H):
                    np.testing.assert_array_equal(c.trace_mask(level, t, head=(level - 1, h), model=PRE),
                                                  c.trace(level, t, head=(level - 1, h), model=PRE).mask)
        if len(toks) >= 2:
            np.testing.assert_array_equal(c.trace_mask(level, toks[:2]), c.trace(level, toks[:2]).mask)
    assert checked > 10
    assert not c.trace_mask(c.L, c.root).flags.writeable


def test_paths_mask_equals_paths(comparison):
    c = comparison
    lit = 0
    for la in range(c.L + 1):
        for lb in range(la):
            if not len(c.levels[la]) or not len(c.levels[lb]):
                continue
            for ta in c.levels[la][:2].tolist():
                for tb in (c.levels[lb][:1].tolist(), c.levels[lb][:3].tolist()):
                    for model in (None, FINE):
                        got = c.paths_mask(la, ta, lb, tb, model=model)
                        np.testing.assert_array_equal(got, c.paths(la, ta, lb, tb, model=model).mask)
                        lit += bool(got.any())
    assert lit > 0


def test_mask_methods_check_their_arguments(comparison):
    c = comparison
    absent = int(np.flatnonzero(c.membership[0] == 0)[0]) if (c.membership[0] == 0).any() else None
    with pytest.raises(ValueError, match="different levels"):
        c.paths_mask(1, c.levels[1][:1], 1, c.levels[1][:1])
    with pytest.raises(ValueError, match="out of range"):
        c.trace_mask(c.L + 1, 0)
    with pytest.raises(ValueError, match="model must be"):
        c.trace_mask(c.L, c.root, model="both models")
    if absent is not None:
        with pytest.raises(ValueError, match="neither model"):
            c.trace_mask(0, absent)
