"""attnflows_panel.heads: per-head cosine, JSD and usage change, checked against hand-computed values
and a brute-force loop written straight from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnflows_panel import heads as HD


def softmax_rows(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_attn(rng, L=3, H=4, n=7, sharp=3.0):
    return softmax_rows(sharp * rng.normal(size=(L, H, n, n))).astype(np.float32)


def brute_cosine(p, q):
    """Flatten each head's n x n map, cosine, with Python loops."""
    L, H, n, _ = p.shape
    out = np.zeros((L, H))
    for k in range(L):
        for h in range(H):
            a = [float(x) for x in p[k, h].ravel()]
            b = [float(x) for x in q[k, h].ravel()]
            dot = sum(x * y for x, y in zip(a, b, strict=False))
            out[k, h] = dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return out


def brute_jsd(p, q):
    """½ KL(P‖M) + ½ KL(Q‖M), base 2, per query row, averaged over rows."""
    L, H, n, _ = p.shape

    def kl(a, m):
        return sum(x * math.log2(x / y) for x, y in zip(a, m, strict=False) if x > 0)

    out = np.zeros((L, H))
    for k in range(L):
        for h in range(H):
            total = 0.0
            for a in range(n):
                P = [float(x) for x in p[k, h, a]]
                Q = [float(x) for x in q[k, h, a]]
                M = [(x + y) / 2 for x, y in zip(P, Q, strict=False)]
                total += 0.5 * kl(P, M) + 0.5 * kl(Q, M)
            out[k, h] = total / n
    return out


def test_identical_maps_are_unchanged():
    rng = np.random.default_rng(0)
    a = random_attn(rng)
    cos, js = HD.sample_change(a, a.copy())
    assert cos.shape == js.shape == (3, 4)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
    np.testing.assert_allclose(js, 0.0, atol=1e-7)


def test_hand_computed_values():
    # one layer, two heads, two tokens
    p = np.zeros((1, 2, 2, 2))
    q = np.zeros((1, 2, 2, 2))
    # head 0: every query attends to key 0 in one model, key 1 in the other -> disjoint
    p[0, 0, :, 0] = 1.0
    q[0, 0, :, 1] = 1.0
    # head 1: rows [1, 0] vs [0.5, 0.5] (both queries)
    p[0, 1, :] = [1.0, 0.0]
    q[0, 1, :] = [0.5, 0.5]
    cos, js = HD.cosine(p, q), HD.jsd(p, q)
    assert cos[0, 0] == pytest.approx(0.0)
    assert js[0, 0] == pytest.approx(1.0)  # base 2: disjoint distributions reach the maximum, 1
    # head 1 cosine: <p, q> = 2 * 0.5 = 1; |p| = sqrt(2), |q| = sqrt(4 * 0.25) = 1
    assert cos[0, 1] == pytest.approx(1 / math.sqrt(2))
    # M = [0.75, 0.25]; KL(P‖M) = log2(4/3); KL(Q‖M) = ½ log2(2/3) + ½ log2(2)
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js[0, 1] == pytest.approx(expected, abs=1e-6)  # float32 logarithms
    assert expected == pytest.approx(0.3112781, abs=1e-6)


def test_matches_brute_force_on_random_attention():
    rng = np.random.default_rng(1)
    p, q = random_attn(rng, n=9), random_attn(rng, n=9)
    cos, js = HD.sample_change(p, q)
    np.testing.assert_allclose(cos, brute_cosine(p, q), atol=1e-6)
    np.testing.assert_allclose(js, brute_jsd(p, q), atol=1e-6)
    assert np.all((js >= 0) & (js <= 1)) and np.all((cos >= 0) & (cos <= 1))
    # symmetric in the two models
    np.testing.assert_allclose(HD.jsd(q, p), js, atol=1e-7)
    np.testing.assert_allclose(HD.cosine(q, p), cos, atol=1e-7)


def test_padding_is_excluded():
    """A padded batch gives the same values as the unpadded samples; padding rows/columns never count."""
    rng = np.random.default_rng(2)
    lengths = [5, 8, 3]
    N = 8
    pre = np.zeros((3, 2, 3, N, N), np.float32)
    fine = np.zeros_like(pre)
    samples = []
    for i, m in enumerate(lengths):
        p, q = random_attn(rng, L=2, H=3, n=m), random_attn(rng, L=2, H=3, n=m)
        samples.append((p, q))
        pre[i, :, :, :m, :m], fine[i, :, :, :m, :m] = p, q
        # garbage in the padding: queries at padded positions attend anywhere
        pre[i, :, :, m:, :] = rng.random((2, 3, N - m, N))
        fine[i, :, :, m:, :] = rng.random((2, 3, N - m, N))
    cos, js = HD.batch_change(pre, fine, lengths)
    for i, (p, q) in enumerate(samples):
        c, j = HD.sample_change(p, q)
        np.testing.assert_allclose(cos[i], c, atol=1e-7)
        np.testing.assert_allclose(js[i], j, atol=1e-7)
        # n= on the padded arrays is the same thing
        c2, j2 = HD.sample_change(pre[i], fine[i], n=lengths[i])
        np.testing.assert_allclose(c2, c, atol=1e-7)


def test_usage_change_and_aggregate():
    rng = np.random.default_rng(3)
    N, L, H = 6, 2, 3
    usage = rng.random((N, 2, L, H)).astype(np.float32)
    uc = HD.usage_change(usage)
    expected = np.mean([np.abs(usage[i, 1] - usage[i, 0]) for i in range(N)], axis=0)
    np.testing.assert_allclose(uc, expected, atol=1e-6)

    cos = rng.random((N, L, H)).astype(np.float32)
    js = rng.random((N, L, H)).astype(np.float32)
    ids = [f"s{i}" for i in range(N)]
    summary = HD.aggregate(cos, js, usage, ids)
    assert summary.n_samples == N and summary.sample_ids == ids
    np.testing.assert_allclose(summary.cosine, cos.mean(0), atol=1e-6)
    # a subset by rows and by mask
    sub = HD.aggregate(cos, js, usage, ids, rows=[1, 4])
    np.testing.assert_allclose(sub.jsd, (js[1] + js[4]) / 2, atol=1e-6)
    np.testing.assert_allclose(sub.usage_change, HD.usage_change(usage[[1, 4]]), atol=1e-6)
    assert sub.sample_ids == ["s1", "s4"] and sub.n_samples == 2
    mask = np.zeros(N, bool)
    mask[[1, 4]] = True
    np.testing.assert_allclose(HD.aggregate(cos, js, rows=mask).cosine, sub.cosine)
    d = summary.to_dict()
    assert (d["layers"], d["heads"], d["n_samples"]) == (L, H, N)
    assert len(d["cosine"]) == L and len(d["cosine"][0]) == H and isinstance(d["cosine"][0][0], float)
    with pytest.raises(ValueError, match="empty subset"):
        HD.aggregate(cos, js, rows=[])
    with pytest.raises(ValueError, match="out of range"):
        HD.aggregate(cos, js, rows=[N])


def test_accumulator_equals_aggregate():
    rng = np.random.default_rng(4)
    acc = HD.HeadChangeAccumulator(2, 3)
    pairs = [(random_attn(rng, 2, 3, n), random_attn(rng, 2, 3, n)) for n in (4, 6, 5)]
    usage = rng.random((3, 2, 2, 3)).astype(np.float32)
    for i, (p, q) in enumerate(pairs):
        acc.add(p, q, usage=usage[i], sample_id=f"x{i}")
    s = acc.summary()
    per = [HD.sample_change(p, q) for p, q in pairs]
    np.testing.assert_allclose(s.cosine, np.mean([c for c, _ in per], 0), atol=1e-6)
    np.testing.assert_allclose(s.jsd, np.mean([j for _, j in per], 0), atol=1e-6)
    np.testing.assert_allclose(s.usage_change, HD.usage_change(usage), atol=1e-6)
    assert s.sample_ids == ["x0", "x1", "x2"]
    with pytest.raises(ValueError, match="expected \\[2, 3\\]"):
        acc.add(random_attn(rng, 3, 3, 4), random_attn(rng, 3, 3, 4))


def test_encode_decode_precision():
    rng = np.random.default_rng(5)
    cos = np.concatenate([rng.random(2000), 1 - rng.random(2000) * 0.01, [0.0, 1.0]]).reshape(-1, 1, 1)
    js = np.concatenate([rng.random(2000), rng.random(2000) * 0.01, [0.0, 1.0]]).reshape(-1, 1, 1)
    codes = HD.encode(cos, js)
    assert codes.dtype == np.uint8 and codes.shape == (4002, 2, 1, 1)
    c, j = HD.decode(codes)
    s_c, s_j = np.sqrt(1 - cos), np.sqrt(js)
    # the documented bound: (2 s + 1/510) / 510
    assert np.all(np.abs(c - cos) <= (2 * s_c + 1 / 510) / 510 + 1e-6)
    assert np.all(np.abs(j - js) <= (2 * s_j + 1 / 510) / 510 + 1e-6)
    assert np.max(np.abs(c - cos)[2000:4000]) < 4e-4  # near-unchanged heads keep their precision
    assert c[-1].item() == 1.0 and j[-2].item() == 0.0
    # BERT-base size: 288 bytes per sample
    assert HD.encode(np.ones((12, 12)), np.zeros((12, 12))).nbytes == 288


def test_most_changed_and_layer_means():
    v = np.array([[0.9, 0.2, 0.5], [0.1, 0.95, 0.3]])
    assert HD.most_changed(v, "cosine", 2) == [(1, 0, 0.1), (0, 1, 0.2)]
    assert HD.most_changed(v, "jsd", 1) == [(1, 1, 0.95)]
    np.testing.assert_allclose(HD.layer_means(v), [1.6 / 3, 1.35 / 3])


@pytest.mark.parametrize(
    "pre, fine, match",
    [
        (np.ones((2, 2, 3, 3)), np.ones((2, 2, 4, 4)), "differ in shape"),
        (np.ones((2, 3, 3)), np.ones((2, 3, 3)), r"\[L, H, n, n\]"),
        (np.ones((1, 1, 3, 4)), np.ones((1, 1, 3, 4)), r"\[L, H, n, n\]"),
    ],
)
def test_bad_input(pre, fine, match):
    with pytest.raises(ValueError, match=match):
        HD.sample_change(pre, fine)


def test_bad_n_and_usage():
    a = np.full((1, 1, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match="real tokens"):
        HD.cosine(a, a, n=4)
    with pytest.raises(ValueError, match=r"\[N, 2, L, H\]"):
        HD.usage_change(np.zeros((3, 3, 2, 2)))
    with pytest.raises(ValueError, match="uint8"):
        HD.decode(np.zeros((2, 1, 1), np.float32))
    with pytest.raises(ValueError, match="unknown metric"):
        HD.most_changed(np.zeros((1, 1)), "nope")


# ----------------------------------------------------------------------------------------------------
# evidence on real data: MRPC dev, the packaged MiniLM and its fine-tune by `attnflows finetune`
# ----------------------------------------------------------------------------------------------------

N_REAL = 64


@pytest.fixture(scope="module")
def mrpc_change(minilm_pair, glue_dir):
    from attnflows_panel.ablation import corpus_change

    return corpus_change(minilm_pair, glue_dir / "MRPC", "mrpc", split="dev", limit=N_REAL, tau=0.15, progress=False)


@pytest.mark.real_model
@pytest.mark.glue
def test_last_two_layers_change_most_on_mrpc(mrpc_change):
    """Kovaleva et al. §4.3 (and Hao et al. with JSD): fine-tuning changes the last two layers most.
    (The calibration run on a full MRPC fine-tune gives per-layer cosine ≈ 0.998 … 0.56; the short
    fine-tune of the fixture moves less, but in the same order.)"""
    s = mrpc_change.summary()
    assert s.n_samples == N_REAL
    cos, js = s.layer_means()["cosine"], s.layer_means()["jsd"]
    L = len(cos)
    assert set(np.argsort(cos)[:2]) == {L - 2, L - 1}, cos
    assert set(np.argsort(js)[-2:]) == {L - 2, L - 1}, js
    assert cos[0] > 0.99 and js[0] < 0.01  # the first layer barely moves
    assert js[-1] > 5 * js[0] and cos[-1] < cos[0] - 0.005


@pytest.mark.real_model
@pytest.mark.glue
def test_real_metrics_match_brute_force(mrpc_change, minilm_pair):
    """Three dev pairs, each run alone (no batching, no padding), cosine and JSD by Python loops."""
    for i in (0, 17, 42):
        a, b = mrpc_change.pairs[i]
        r = minilm_pair.run(a, b)
        p, q = r.pretrained.attentions, r.finetuned.attentions
        layers = [0, 5]  # the loops are slow: the first and the last layer, every head
        np.testing.assert_allclose(mrpc_change.cosine[i][layers], brute_cosine(p[layers], q[layers]), atol=2e-5)
        np.testing.assert_allclose(mrpc_change.jsd[i][layers], brute_jsd(p[layers], q[layers]), atol=2e-5)
        # and the whole sample against the vectorised formula on the unbatched run
        c, j = HD.sample_change(p, q)
        np.testing.assert_allclose(mrpc_change.cosine[i], c, atol=2e-5)
        np.testing.assert_allclose(mrpc_change.jsd[i], j, atol=2e-5)


def _ranks(x):
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


def _spearman(x, y):
    return float(np.corrcoef(_ranks(np.ravel(x)), _ranks(np.ravel(y)))[0, 1])


@pytest.mark.real_model
@pytest.mark.glue
def test_norm_weights_undo_the_special_token_heads_usage(minilm_path, minilm_finetuned_dir, glue_dir, tmp_path):
    """Kobayashi et al. 2020: [CLS] and [SEP] take much attention and contribute little. On real MiniLM and
    MRPC dev, `heads report` on raw attention uses a head in the graph more the more attention it puts on
    [CLS]/[SEP] (rank correlation over all 72 heads about 0.4-0.55); on norm weights that tie is gone (about 0)."""
    import json

    from attnflows_panel.cli import main
    from attnflows_panel.corpus import load_corpus
    from attnflows_panel.models import ModelPair

    n = 24
    reports = {}
    for kind in ("raw", "norm"):
        out = tmp_path / f"{kind}.json"
        assert main(["heads", "report", "--pretrained", str(minilm_path), "--finetuned", str(minilm_finetuned_dir),
                     "--data", str(glue_dir / "MRPC"), "--task", "mrpc", "--split", "dev", "--limit", str(n),
                     "--tau", "0.15", "--weights", kind, "--json", str(out), "--no-progress"]) == 0
        reports[kind] = json.loads(out.read_text())
        assert reports[kind]["weights"] == kind and reports[kind]["n_samples"] == n
    pair = ModelPair.load(str(minilm_path), str(minilm_finetuned_dir), device="cpu")
    ds = load_corpus(str(glue_dir / "MRPC"), task="mrpc", split="dev", limit=n)
    special = np.zeros((2, pair.num_layers, pair.num_heads))  # mean raw attention on [CLS]/[SEP] per head
    for a, b in zip(ds["sentence_a"], ds["sentence_b"], strict=True):
        r = pair.run(a, b)
        sp = np.isin(r.tokens, ["[CLS]", "[SEP]"])
        for i, out in enumerate((r.pretrained, r.finetuned)):
            special[i] += out.attentions[..., sp].sum(-1).mean(-1) / n
    for i, role in enumerate(("pretrained", "finetuned")):
        raw_rho = _spearman(special[i], reports["raw"]["usage"][role])
        norm_rho = _spearman(special[i], reports["norm"]["usage"][role])
        assert raw_rho > 0.3, (role, raw_rho)
        assert norm_rho < 0.2 and norm_rho < raw_rho - 0.25, (role, raw_rho, norm_rho)
    # norm moves the measures themselves, not only the usage
    assert np.abs(np.subtract(reports["norm"]["jsd"], reports["raw"]["jsd"])).max() > 0.01
