"""The index build's batched fast path on attention tensors (index/README.md, benchmarks/README.md P2):
head usage (``signatures.usage_from_attention_tensors``) and per-head change
(``heads.change_from_attention_tensors``) of whole padded batches, against each sample's own
unpadded arrays and against the earlier implementation (same quantities, other order of operations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnflows_panel import heads as head_stats
from attnflows_panel import signatures


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def padded_batch(rng, lengths, L=3, H=4, sharp=3.0):
    """Softmax attentions [B, H, N, N] per layer, as a HF model returns them for a right-padded batch:
    padded keys get exactly zero weight, padded queries attend anywhere among the real keys."""
    B, N = len(lengths), max(lengths)
    layers = []
    for _ in range(L):
        logits = sharp * rng.normal(size=(B, H, N, N))
        mask = np.arange(N)[None, :] < np.asarray(lengths)[:, None]  # [B, N] real keys
        logits = np.where(mask[:, None, None, :], logits, -np.inf)
        layers.append(torch.from_numpy(_softmax(logits).astype(np.float32)))
    return tuple(layers)


def sample_arrays(layers, i, n):
    return np.stack([t[i, :, :n, :n].numpy() for t in layers])


def reference_change(pre, fine, lengths):
    """The build's previous implementation (mask multiplications, float64 sums over [B, H, N, N]): the
    per-element JSD formula, kept here to check the reordered one against."""
    B, H, N, _ = pre[0].shape
    n = torch.as_tensor(list(lengths))
    real = (torch.arange(N)[None, :] < n[:, None]).to(torch.float32)
    mask = real[:, None, :, None] * real[:, None, None, :]
    tiny = 1e-30
    cos_l, js_l = [], []
    for p, q in zip(pre, fine, strict=True):
        p = p.to(torch.float32) * mask
        q = q.to(torch.float32) * mask
        dot = (p * q).sum(dim=(-1, -2), dtype=torch.float64)
        norm = torch.sqrt((p * p).sum(dim=(-1, -2), dtype=torch.float64)
                          * (q * q).sum(dim=(-1, -2), dtype=torch.float64))
        cos = torch.where(norm > 0, dot / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm))
        lm = torch.log2(torch.clamp(0.5 * (p + q), min=tiny))
        t = p * (torch.log2(torch.clamp(p, min=tiny)) - lm) + q * (torch.log2(torch.clamp(q, min=tiny)) - lm)
        rows = 0.5 * t.sum(dim=-1, dtype=torch.float64)
        js = (rows * real[:, None, :].to(torch.float64)).sum(dim=-1) / n[:, None].to(torch.float64)
        cos_l.append(cos.clamp(0.0, 1.0))
        js_l.append(js.clamp(0.0, 1.0))
    return torch.stack(cos_l, dim=1).numpy(), torch.stack(js_l, dim=1).numpy()


@pytest.mark.parametrize("tau", [0.05, 0.2, 0.4])
@pytest.mark.parametrize("root", [0, 2])
def test_batched_usage_equals_each_samples_usage(tau, root):
    rng = np.random.default_rng(int(tau * 100) + root)
    lengths = [9, 4, 12, 12, 3, 7]
    layers = padded_batch(rng, lengths, L=4, H=3)
    got = signatures.usage_from_attention_tensors(layers, tau, root=root)
    assert got.shape == (6, 4, 3) and got.dtype == np.float32
    for i, n in enumerate(lengths):
        want = signatures.usage_from_attentions(sample_arrays(layers, i, n), tau, root=root)
        np.testing.assert_array_equal(got[i], want)
    assert got.any()  # not a vacuous comparison of empty graphs


def test_batched_usage_errors():
    with pytest.raises(ValueError, match="no attentions"):
        signatures.usage_from_attention_tensors((), 0.3)
    with pytest.raises(ValueError, match="root 5 out of range"):
        signatures.usage_from_attention_tensors(padded_batch(np.random.default_rng(0), [3, 2]), 0.3, root=5)


def test_batched_change_equals_each_samples_change():
    rng = np.random.default_rng(4)
    lengths = [11, 5, 16, 2, 9]
    pre = padded_batch(rng, lengths)
    fine = padded_batch(rng, lengths, sharp=2.0)
    cos, js = head_stats.change_from_attention_tensors(pre, fine, lengths, encode_codes=False)
    assert cos.shape == js.shape == (5, 3, 4)
    for i, n in enumerate(lengths):
        c, j = head_stats.sample_change(sample_arrays(pre, i, n), sample_arrays(fine, i, n))
        np.testing.assert_allclose(cos[i], c, atol=2e-6)
        np.testing.assert_allclose(js[i], j, atol=2e-6)
    codes = head_stats.change_from_attention_tensors(pre, fine, lengths)
    np.testing.assert_array_equal(codes, head_stats.encode(cos, js))
    # a model against itself: cosine 1 and JSD 0, exactly as coded
    same = head_stats.change_from_attention_tensors(pre, pre, lengths, encode_codes=False)
    np.testing.assert_allclose(same[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(same[1], 0.0, atol=1e-6)
    assert not head_stats.change_from_attention_tensors(pre, pre, lengths).any()


def test_batched_change_errors():
    rng = np.random.default_rng(0)
    pre = padded_batch(rng, [3, 2])
    with pytest.raises(ValueError, match="3 lengths for a batch of 2"):
        head_stats.change_from_attention_tensors(pre, pre, [3, 2, 1])
    with pytest.raises(ValueError, match="lengths must be in"):
        head_stats.change_from_attention_tensors(pre, pre, [4, 2])
    with pytest.raises(ValueError, match="same number of layers"):
        head_stats.change_from_attention_tensors(pre, pre[:2], [3, 2])


@pytest.fixture(scope="module")
def real_batches(minilm_pair, glue_dir):
    """Both models' attention tensors on real MRPC dev pairs, length-sorted batches of 16, padded."""
    from attnflows_panel.corpus import load_corpus

    ds = load_corpus(str(glue_dir / "MRPC"), task="mrpc", split="dev", limit=64)
    tok = minilm_pair.tokenizer
    enc = tok(list(ds["sentence_a"]), list(ds["sentence_b"]), truncation="longest_first",
              max_length=minilm_pair.max_length)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    out = []
    with torch.inference_mode():
        for s in range(0, len(order), 16):
            chunk = order[s:s + 16]
            batch = tok.pad({k: [enc[k][i] for i in chunk] for k in keys}, return_tensors="pt")
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            pre = minilm_pair.pretrained_model(**batch, output_attentions=True).attentions
            fine = minilm_pair.finetuned_model(**batch, output_attentions=True).attentions
            out.append((pre, fine, lengths))
    assert any(min(lengths) < max(lengths) for _, _, lengths in out)  # padding is really there
    return out


@pytest.mark.real_model
@pytest.mark.glue
def test_real_batches_usage_and_change(real_batches):
    """On real padded MiniLM batches: usage identical to each sample's own; head change within 2e-6 of
    each sample's own and of the previous implementation, the 8-bit codes at most one step apart
    (and all but a handful identical)."""
    differ = total = 0
    for pre, fine, lengths in real_batches:
        for tau in (0.1, 0.3):
            for layers in (pre, fine):
                got = signatures.usage_from_attention_tensors(layers, tau)
                for i, n in enumerate(lengths):
                    want = signatures.usage_from_attentions(sample_arrays(layers, i, n), tau)
                    np.testing.assert_array_equal(got[i], want)
        cos, js = head_stats.change_from_attention_tensors(pre, fine, lengths, encode_codes=False)
        ref_cos, ref_js = reference_change(pre, fine, lengths)
        np.testing.assert_allclose(cos, ref_cos, atol=2e-6)
        np.testing.assert_allclose(js, ref_js, atol=2e-6)
        for i, n in enumerate(lengths[:4]):
            c, j = head_stats.sample_change(sample_arrays(pre, i, n), sample_arrays(fine, i, n))
            np.testing.assert_allclose(cos[i], c, atol=2e-6)
            np.testing.assert_allclose(js[i], j, atol=2e-6)
        codes = head_stats.change_from_attention_tensors(pre, fine, lengths).astype(int)
        ref = head_stats.encode(ref_cos, ref_js).astype(int)
        assert np.abs(codes - ref).max() <= 1
        differ += int((codes != ref).sum())
        total += codes.size
    assert differ <= total // 1000, (differ, total)
    assert (codes > 0).any()


def test_cpu_numpy_row_sums_equal_the_torch_ops(monkeypatch):
    """On the CPU the head change's per-row sums are numpy reductions, chunked and split over threads
    (heads._row_stats_numpy); on other devices torch ops (heads._row_stats_torch). The two agree to
    float32 rounding, and the split over threads changes nothing at all."""
    rng = np.random.default_rng(11)
    lengths = [14, 3, 9, 14, 1, 7, 12]
    pre = padded_batch(rng, lengths, L=3, H=5)
    fine = padded_batch(rng, lengths, L=3, H=5, sharp=1.5)
    one = head_stats._row_stats_numpy(pre, fine, threads=1)
    assert one.shape == (len(head_stats._ROW_STATS), 7, 3, 5, 14) and one.dtype == np.float32
    for threads in (2, 3, 7):
        np.testing.assert_array_equal(head_stats._row_stats_numpy(pre, fine, threads=threads), one)
    np.testing.assert_allclose(one, head_stats._row_stats_torch(pre, fine), rtol=1e-5, atol=1e-6)
    # numpy < 2 has no vecdot: the einsum it falls back to gives the same sums
    monkeypatch.setattr(head_stats, "_vecdot", head_stats._vecdot_einsum)
    np.testing.assert_allclose(head_stats._row_stats_numpy(pre, fine, threads=1), one, rtol=1e-6, atol=1e-7)
    monkeypatch.undo()
    a = head_stats.change_from_attention_tensors(pre, fine, lengths, threads=1)
    b = head_stats.change_from_attention_tensors(pre, fine, lengths, threads=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (7, 2, 3, 5) and a.any()
