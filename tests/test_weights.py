"""Edge weights (attnflows_panel.weights) against independent re-implementations written here from the papers.

- ``norm`` (Kobayashi et al. 2020, §3) against a BERT written by hand below in float64 from the model's own
  weights: ``‖α_ij f_h(x_j)‖``, ``f_h(x) = (x W_V^h + b_V^h) W_O^h``, rows divided by their sums;
- ``attattr`` (Hao et al. 2021, eq. 2-3) against the Riemann sum of central finite differences of F, the
  predicted class's probability, computed with the hand-written BERT whose layer l takes a given attention;
- rollout (Abnar & Zuidema 2020) by hand on small cases and as a matrix product on MiniLM.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from attnflows_panel import weights as W
from attnflows_panel.models import ModelPair

# --------------------------------------------------------------------------------------------------
# a BERT by hand (float64), from the weights of a transformers model
# --------------------------------------------------------------------------------------------------


class HandBert:
    """BERT's forward pass written from the paper's equations (Devlin et al. 2019), float64."""

    def __init__(self, model):
        self.sd = {k: v.detach().double() for k, v in model.state_dict().items()}
        cfg = model.config
        self.L, self.H = cfg.num_hidden_layers, cfg.num_attention_heads
        self.d = cfg.hidden_size // self.H
        self.eps = cfg.layer_norm_eps
        self.prefix = "bert." if any(k.startswith("bert.") for k in self.sd) else ""
        self.has_head = "classifier.weight" in self.sd

    def p(self, name):
        return self.sd[self.prefix + name]

    def ln(self, x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.p(name + ".weight") + self.p(name + ".bias")

    def lin(self, x, name):
        return x @ self.p(name + ".weight").T + self.p(name + ".bias")

    def embed(self, ids, types):
        n = len(ids)
        x = (self.p("embeddings.word_embeddings.weight")[ids] + self.p("embeddings.position_embeddings.weight")[:n]
             + self.p("embeddings.token_type_embeddings.weight")[types])
        return self.ln(x, "embeddings.LayerNorm")

    def layer(self, x, k, probs=None):
        """One layer; ``probs`` [H, n, n] replaces the layer's attention when given. Returns
        (output, attention [H, n, n], value vectors x W_V + b_V [n, H, d])."""
        pre = f"encoder.layer.{k}."
        n = x.shape[0]
        q = self.lin(x, pre + "attention.self.query").view(n, self.H, self.d).transpose(0, 1)
        kk = self.lin(x, pre + "attention.self.key").view(n, self.H, self.d).transpose(0, 1)
        v = self.lin(x, pre + "attention.self.value").view(n, self.H, self.d)
        scores = q @ kk.transpose(1, 2) / math.sqrt(self.d)
        attn = torch.exp(scores - scores.max(-1, keepdim=True).values)
        attn = attn / attn.sum(-1, keepdim=True)
        use = attn if probs is None else probs
        ctx = torch.einsum("hij,jhd->ihd", use, v).reshape(n, -1)
        h = self.ln(self.lin(ctx, pre + "attention.output.dense") + x, pre + "attention.output.LayerNorm")
        inner = self.lin(h, pre + "intermediate.dense")
        inner = 0.5 * inner * (1 + torch.erf(inner / math.sqrt(2)))  # gelu
        out = self.ln(self.lin(inner, pre + "output.dense") + h, pre + "output.LayerNorm")
        return out, attn, v

    def forward(self, ids, types, replace=None):
        """(attentions [L, H, n, n], values per layer, class probabilities or None); ``replace`` = (l, P)."""
        x = self.embed(ids, types)
        attns, values = [], []
        for k in range(self.L):
            probs = replace[1] if replace is not None and replace[0] == k else None
            x, a, v = self.layer(x, k, probs)
            attns.append(a)
            values.append(v)
        prob = None
        if self.has_head:
            pooled = torch.tanh(self.lin(x[0], "pooler.dense"))
            logits = pooled @ self.sd["classifier.weight"].T + self.sd["classifier.bias"]
            prob = torch.softmax(logits, -1)
        return torch.stack(attns), values, prob

    def norm_weights(self, ids, types):
        """Kobayashi et al.'s ‖α_ij f_h(x_j)‖ per head, each row divided by its sum: [L, H, n, n]."""
        attns, values, _ = self.forward(ids, types)
        out = []
        for k in range(self.L):
            w_o = self.p(f"encoder.layer.{k}.attention.output.dense.weight")  # [hidden, H*d]
            per_head = []
            for h in range(self.H):
                f = values[k][:, h, :] @ w_o[:, h * self.d:(h + 1) * self.d].T  # f_h(x_j) for every j: [n, hidden]
                per_head.append(attns[k, h] * torch.linalg.vector_norm(f, dim=-1)[None, :])
            w = torch.stack(per_head)
            out.append(w / w.sum(-1, keepdim=True))
        return torch.stack(out).numpy()


def _inputs(pair, a, b):
    inputs, ids, _ = W.encode(pair, a, b)
    types = inputs.get("token_type_ids", torch.zeros_like(inputs["input_ids"]))[0]
    return inputs, torch.tensor(ids), types


def _mrpc_pairs(glue_dir, count):
    with open(glue_dir / "MRPC" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    h = rows[0]
    return [(r[h.index("#1 String")], r[h.index("#2 String")]) for r in rows[1:1 + count]]


@pytest.fixture(scope="module")
def tiny_pair(sharp_bert_dirs):
    return ModelPair.load(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]), device="cpu")


@pytest.fixture(scope="module")
def minilm_self_pair(minilm_path):
    """MiniLM as both models (norm and raw need no classification head)."""
    return ModelPair.load(str(minilm_path), str(minilm_path), device="cpu")


A, B = "The cat sat on the mat.", "A cat was sitting on the mat, purring."


# --------------------------------------------------------------------------------------------------
# raw and norm
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["pretrained_model", "finetuned_model"])
def test_hand_bert_reproduces_the_model(tiny_pair, role):
    """The re-implementation is BERT: same attention and class probabilities as transformers."""
    model = getattr(tiny_pair, role)
    inputs, ids, types = _inputs(tiny_pair, A, B)
    fw = W.forward_weights(model, inputs)
    hand = HandBert(model)
    attns, _, prob = hand.forward(ids, types)
    np.testing.assert_allclose(fw.raw, attns.numpy(), atol=2e-5)
    if role == "finetuned_model":
        np.testing.assert_allclose(torch.softmax(torch.tensor(fw.logits, dtype=torch.float64), -1), prob, atol=1e-5)
    else:
        assert fw.logits is None


@pytest.mark.parametrize("role", ["pretrained_model", "finetuned_model"])
def test_norm_matches_a_hand_written_bert_layer_tiny(tiny_pair, role):
    model = getattr(tiny_pair, role)
    inputs, ids, types = _inputs(tiny_pair, A, B)
    fw = W.forward_weights(model, inputs)
    expected = HandBert(model).norm_weights(ids, types)
    assert fw.norm.dtype == np.float32 and fw.norm.shape == fw.raw.shape
    np.testing.assert_allclose(fw.norm, expected, atol=2e-5)
    assert np.abs(fw.norm - fw.raw).max() > 1e-3  # norm is not the attention


def test_norm_follows_a_changed_output_projection(tiny_pair):
    """The per-layer W_O^h W_O^hᵀ kept between inputs is recomputed when the weight changes in place."""
    import copy

    model = copy.deepcopy(tiny_pair.pretrained_model)
    inputs, ids, types = _inputs(tiny_pair, A, B)
    before = W.forward_weights(model, inputs).norm
    with torch.no_grad():
        dense = model.encoder.layer[0].attention.output.dense.weight
        # half the outputs of head 0's slice of W_O (a whole slice scaled would cancel in the row sums)
        dense[: dense.shape[0] // 2, : dense.shape[1] // 4] *= 5.0
    after = W.forward_weights(model, inputs).norm
    np.testing.assert_allclose(after, HandBert(model).norm_weights(ids, types), atol=2e-5)
    assert np.abs(after[0] - before[0]).max() > 1e-3


@pytest.mark.real_model
def test_norm_matches_a_hand_written_bert_layer_minilm(minilm_self_pair, glue_dir):
    (a, b), = _mrpc_pairs(glue_dir, 1)
    inputs, ids, types = _inputs(minilm_self_pair, a, b)
    fw = W.forward_weights(minilm_self_pair.pretrained_model, inputs)
    expected = HandBert(minilm_self_pair.pretrained_model).norm_weights(ids, types)
    np.testing.assert_allclose(fw.norm, expected, atol=5e-5)
    np.testing.assert_allclose(fw.norm.sum(-1), 1.0, atol=1e-5)


@pytest.mark.real_model
@pytest.mark.glue
def test_norm_takes_weight_off_cls_and_sep_minilm(minilm_self_pair, glue_dir):
    """Kobayashi et al.'s finding: [CLS] and [SEP] take much attention and contribute little."""
    for a, b in _mrpc_pairs(glue_dir, 4):
        pw = W.pair_weights(minilm_self_pair, a, b, "norm")
        special = [i for i, t in enumerate(pw.tokens) if t in ("[CLS]", "[SEP]")]
        raw_share = pw.pretrained.attentions[..., special].sum(-1).mean()
        norm_share = pw.pretrained.weights[..., special].sum(-1).mean()
        assert pw.pretrained.kind == "norm" and raw_share > 0.2
        assert norm_share < 0.5 * raw_share, (raw_share, norm_share)


def test_capture_in_a_padded_batch_equals_each_pair_alone(tiny_pair):
    """capture("norm") on a padded batch: each sample's weights, sliced to its length, as if run alone."""
    from attnflows_panel.models import attentions_to_numpy

    pairs = [(A, B), ("Short one.", "Another short sentence here, with a few more words in it.")]
    singles = [_inputs(tiny_pair, a, b)[0] for a, b in pairs]
    lengths = [x["input_ids"].shape[1] for x in singles]
    N = max(lengths)
    batch = {k: torch.zeros((2, N), dtype=torch.long) for k in singles[0]}
    for i, x in enumerate(singles):
        for k, v in x.items():
            batch[k][i, : lengths[i]] = v[0]
    model = tiny_pair.finetuned_model
    with torch.inference_mode(), W.capture(model, "norm") as convert:
        res = model(**batch, output_attentions=True, return_dict=True)
        normed = attentions_to_numpy(convert(res.attentions), lengths)
    assert lengths[0] != lengths[1]
    for i, x in enumerate(singles):
        np.testing.assert_allclose(normed[i], W.forward_weights(model, x).norm, atol=2e-6)
    with pytest.raises(ValueError, match="attattr weights need gradients"), W.capture(model, "attattr"):
        pass


def test_raw_is_the_pairs_attention(tiny_pair):
    pw = W.pair_weights(tiny_pair, A, B, "raw")
    r = tiny_pair.run(A, B)
    assert pw.tokens == r.tokens
    for role in ("pretrained", "finetuned"):
        assert getattr(pw, role).kind == "raw"
        np.testing.assert_array_equal(getattr(pw, role).weights, getattr(r, role).attentions)


def test_hooks_are_removed(tiny_pair):
    model = tiny_pair.finetuned_model
    before = {name: len(m._forward_hooks) for name, m in model.named_modules()}
    inputs, _, _ = _inputs(tiny_pair, A, B)
    W.forward_weights(model, inputs)
    W.attention_attribution(model, inputs, steps=2)
    assert {name: len(m._forward_hooks) for name, m in model.named_modules()} == before


def test_unknown_family_is_named():
    from transformers import DistilBertConfig, DistilBertModel

    model = DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32)).eval()
    model.set_attn_implementation("eager")
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones((1, 3), dtype=torch.long)}
    with pytest.raises(W.WeightsUnavailableError, match="not available for model type 'distilbert'"):
        W.forward_weights(model, inputs)
    assert W.forward_weights(model, inputs, norm=False).norm is None  # raw needs no family


def test_check_kind():
    assert W.check_kind("norm") == "norm"
    with pytest.raises(ValueError, match="raw, norm, attattr"):
        W.check_kind("grad")


# --------------------------------------------------------------------------------------------------
# attattr
# --------------------------------------------------------------------------------------------------


def _fd_attribution(hand, ids, types, attn, layer, h, i, j, target, steps, eps=1e-5):
    """A_hij · (1/m) Σ_k ∂F(k/m · A)/∂A_hij, each derivative a central finite difference (float64)."""
    a = attn[layer]
    total = 0.0
    for k in range(1, steps + 1):
        base = k / steps * a
        plus, minus = base.clone(), base.clone()
        plus[h, i, j] += eps
        minus[h, i, j] -= eps
        fp = hand.forward(ids, types, replace=(layer, plus))[2][target]
        fm = hand.forward(ids, types, replace=(layer, minus))[2][target]
        total += float(fp - fm) / (2 * eps)
    return float(a[h, i, j]) * total / steps


def test_attattr_matches_finite_differences(tiny_pair):
    model = tiny_pair.finetuned_model
    inputs, ids, types = _inputs(tiny_pair, A, B)
    steps = 4
    attr, raw, target = W.attention_attribution(model, inputs, steps=steps)
    hand = HandBert(model)
    attn, _, prob = hand.forward(ids, types)
    assert target == int(prob.argmax())
    np.testing.assert_allclose(raw, attn.numpy(), atol=2e-5)
    for layer in range(attr.shape[0]):
        h, i, j = np.unravel_index(np.abs(attr[layer]).argmax(), attr[layer].shape)  # the largest entry
        expected = _fd_attribution(hand, ids, types, attn, layer, h, i, j, target, steps)
        assert abs(expected) > 1e-6
        # rel 1e-4: a single gradient at α = 1 (no integral) is off by ~2e-3 here, the float32 autograd by ~1e-6
        assert attr[layer, h, i, j] == pytest.approx(expected, rel=1e-4, abs=1e-11), (layer, h, i, j)
    # a small entry of the other sign too, in layer 0
    neg = np.argwhere(np.sign(attr[0]) == -np.sign(attr[0].flat[np.abs(attr[0]).argmax()]))
    if len(neg):
        h, i, j = neg[0]
        expected = _fd_attribution(hand, ids, types, attn, 0, h, i, j, target, steps)
        assert attr[0, h, i, j] == pytest.approx(expected, rel=1e-3, abs=1e-11)


def test_attattr_batches_agree(tiny_pair):
    inputs, _, _ = _inputs(tiny_pair, A, B)
    one, _, _ = W.attention_attribution(tiny_pair.finetuned_model, inputs, steps=5)
    chunked, _, _ = W.attention_attribution(tiny_pair.finetuned_model, inputs, steps=5, batch_size=2)
    np.testing.assert_allclose(one, chunked, rtol=1e-4, atol=1e-8)


def test_attattr_weights_are_clipped_and_normalised(tiny_pair):
    inputs, _, _ = _inputs(tiny_pair, A, B)
    attr, _, _ = W.attention_attribution(tiny_pair.finetuned_model, inputs, steps=3)
    w = W.attattr_weights(tiny_pair.finetuned_model, inputs, steps=3)
    assert w.dtype == np.float32 and (w >= 0).all() and (attr < 0).any()
    sums = w.sum(-1)
    assert np.all(np.isclose(sums, 1, atol=1e-5) | (sums == 0))
    clipped = np.maximum(attr, 0)
    rows = clipped.sum(-1) > 0
    np.testing.assert_allclose(w[rows], (clipped / np.where(rows, clipped.sum(-1), 1)[..., None])[rows], rtol=1e-5)
    np.testing.assert_array_equal(w[~rows], 0)


def test_attattr_unavailable_for_a_bare_encoder(tiny_pair):
    inputs, _, _ = _inputs(tiny_pair, A, B)
    with pytest.raises(W.WeightsUnavailableError, match="bare encoder without a classification head"):
        W.attattr_weights(tiny_pair.pretrained_model, inputs)
    with pytest.raises(W.WeightsUnavailableError, match="unavailable for this model"):
        W.pair_weights(tiny_pair, A, B, "attattr", steps=2, fallback=None)
    pw = W.pair_weights(tiny_pair, A, B, "attattr", steps=2)
    assert pw.kind == "attattr" and pw.finetuned.kind == "attattr" and pw.finetuned.note is None
    assert pw.pretrained.kind == "norm" and "unavailable" in pw.pretrained.note
    np.testing.assert_array_equal(pw.pretrained.weights, W.forward_weights(tiny_pair.pretrained_model, inputs).norm)


def test_attattr_unavailable_for_a_regression_head(tiny_bert_dirs):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig.from_pretrained(tiny_bert_dirs[1])
    cfg.num_labels = 1  # a regression head
    model = BertForSequenceClassification(cfg).eval()
    model.set_attn_implementation("eager")
    inputs = {"input_ids": torch.tensor([[101, 2009, 102]]), "attention_mask": torch.ones((1, 3), dtype=torch.long)}
    with pytest.raises(W.WeightsUnavailableError, match="single output"):
        W.attention_attribution(model, inputs, steps=2)


def test_attattr_bad_steps(tiny_pair):
    inputs, _, _ = _inputs(tiny_pair, A, B)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            W.attention_attribution(tiny_pair.finetuned_model, inputs, steps=bad)
        with pytest.raises(ValueError, match="batch_size"):
            W.attention_attribution(tiny_pair.finetuned_model, inputs, steps=2, batch_size=bad)


# --------------------------------------------------------------------------------------------------
# rollout
# --------------------------------------------------------------------------------------------------


def test_rollout_by_hand():
    swap = [[0.0, 1.0], [1.0, 0.0]]
    w = np.array([
        [swap, swap],  # layer 0: mean = swap, 0.5·swap + 0.5·I = [[.5, .5], [.5, .5]]
        # layer 1: mean [[.5, .5], [0, 1]] -> [[.75, .25], [0, 1]]
        [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]],
    ])
    r = W.rollout(w)
    np.testing.assert_allclose(r, [[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    np.testing.assert_allclose(W.rollout(w, root=1), [[0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])


def test_rollout_renormalises_rows():
    """Rows that do not sum to 1: 0.5·mean + 0.5·I is renormalised (a zero row passes relevance on unchanged)."""
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0] = [0.0, 2.0, 2.0]  # 0.5·[0, 2, 2] + 0.5·[1, 0, 0] = [.5, 1, 1] -> [.2, .4, .4]
    np.testing.assert_allclose(W.rollout(w), [[0.2, 0.4, 0.4], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(W.rollout(np.zeros((2, 2, 3, 3)), root=2), [[0, 0, 1]] * 3)


@pytest.mark.real_model
def test_rollout_is_the_product_of_the_layers_minilm(minilm_self_pair):
    pw = W.pair_weights(minilm_self_pair, A, B, "raw")
    attn = pw.pretrained.weights.astype(np.float64)
    L, _, n, _ = attn.shape
    mats = []
    for k in range(L):
        a = 0.5 * attn[k].mean(0) + 0.5 * np.eye(n)
        mats.append(a / a.sum(1, keepdims=True))
    r = W.rollout(attn)
    for k in range(L):
        prod = np.linalg.multi_dot(mats[k:][::-1]) if L - k > 1 else mats[k]  # Â_{L-1} ⋯ Â_k
        np.testing.assert_allclose(r[k], prod[0], atol=1e-12)
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-12)


def test_rollout_bad_input():
    with pytest.raises(ValueError, match=r"\[L, H, n, n\]"):
        W.rollout(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="root 5"):
        W.rollout(np.zeros((1, 1, 3, 3)), root=5)


# --------------------------------------------------------------------------------------------------
# ModelPair.run(..., weights=...)
# --------------------------------------------------------------------------------------------------


def test_pair_run_with_weights(tiny_pair):
    raw = tiny_pair.run(A, B)
    assert raw.pretrained.weights == raw.finetuned.weights == "raw"
    norm = tiny_pair.run(A, B, weights="norm")
    pw = W.pair_weights(tiny_pair, A, B, "norm")
    for role in ("pretrained", "finetuned"):
        out = getattr(norm, role)
        assert out.weights == "norm"
        np.testing.assert_allclose(out.attentions, getattr(pw, role).weights, atol=1e-6)
    assert norm.finetuned.label == raw.finetuned.label and norm.tokens == raw.tokens
    att = tiny_pair.run(A, B, weights="attattr")
    assert att.pretrained.weights == "norm" and att.finetuned.weights == "attattr"
    np.testing.assert_array_equal(att.pretrained.attentions, norm.pretrained.attentions)
    inputs, _, _ = _inputs(tiny_pair, A, B)
    expected = W.attattr_weights(tiny_pair.finetuned_model, inputs)
    np.testing.assert_allclose(att.finetuned.attentions, expected, atol=1e-6)
    with pytest.raises(ValueError, match="raw, norm, attattr"):
        tiny_pair.run(A, B, weights="grad")
    with pytest.raises(ValueError, match="attattr weights need gradients"):
        tiny_pair.run_batch([(A, B)], weights="attattr")


def test_usage_batch_counts_the_weights_asked_for(tiny_pair):
    from attnflows_panel.index import result_usage

    tau = 0.1
    got = tiny_pair.usage_batch([(A, B), ("Short.", "Another one.")], tau, weights="norm")
    for i, (a, b) in enumerate([(A, B), ("Short.", "Another one.")]):
        np.testing.assert_allclose(got["usage"][i], result_usage(tiny_pair.run(a, b, weights="norm"), tau), atol=1e-6)
    raw = tiny_pair.usage_batch([(A, B)], tau)
    assert not np.array_equal(raw["usage"][0], got["usage"][0])
