"""attnflows_panel.ablation on a tiny random BERT: the hooks against a forward pass written by hand
(masking and uniform attention, with padding in the batch), the gate gradients against finite
differences, and the corpus ablation against per-head predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from attnflows_panel import ablation as AB  # noqa: E402

PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("Stocks fell sharply today.", "Markets rose."),
    ("He said the plan would work in the end, after all the delays.", "The plan worked."),
    ("Rain is expected tomorrow.", "Tomorrow it will probably rain, forecasters said on Monday."),
]


@pytest.fixture(scope="module")
def tiny(sharp_bert_dirs):
    """The tiny BERT classifier with peaked attention (a random BERT's is nearly uniform)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    fine = sharp_bert_dirs[1]
    model = AutoModelForSequenceClassification.from_pretrained(fine, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(fine)
    return model, tok


def _inputs(tok, pairs):
    return tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")


def reference_logits(model, inputs, disabled=(), mode="mask"):
    return reference_forward(model, inputs, disabled, mode)[1]


def reference_forward(model, inputs, disabled=(), mode="mask"):
    """BERT's forward pass written out with plain tensor operations; ``disabled`` heads [(k, h)] are
    zeroed (mask) or given uniform attention over the real tokens (uniform)."""
    bert = model.bert
    mask = inputs["attention_mask"].float()
    x = bert.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
    B, N, _ = x.shape
    additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    for k, layer in enumerate(bert.encoder.layer):
        sa = layer.attention.self
        H, d = sa.num_attention_heads, sa.attention_head_size

        def split(t, H=H, d=d):
            return t.view(B, N, H, d).transpose(1, 2)

        q, kk, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
        p = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(d) + additive, dim=-1)
        for (kl, h) in disabled:
            if kl == k and mode == "uniform":
                p = p.clone()
                p[:, h] = (mask / mask.sum(dim=1, keepdim=True))[:, None, :].expand(B, N, N)
        ctx = p @ v  # [B, H, N, d]
        for (kl, h) in disabled:
            if kl == k and mode == "mask":
                ctx = ctx.clone()
                ctx[:, h] = 0.0
        ctx = ctx.transpose(1, 2).reshape(B, N, H * d)
        a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
        x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
    return x, model.classifier(bert.pooler(x))


def test_attention_modules_found(tiny):
    model, _ = tiny
    mods = AB.attention_modules(model)
    assert len(mods) == 2 and all(m.num_attention_heads == 4 for m in mods)
    assert mods[0] is model.bert.encoder.layer[0].attention.self


def test_reference_matches_the_model_without_ablation(tiny):
    model, tok = tiny
    inputs = _inputs(tok, PAIRS)
    with torch.no_grad():
        np.testing.assert_allclose(reference_logits(model, inputs).numpy(), model(**inputs).logits.numpy(), atol=1e-5)


@pytest.mark.parametrize("mode", AB.MODES)
@pytest.mark.parametrize("heads", [[(0, 1)], [(1, 3)], [(0, 0), (0, 2), (1, 1)], [(0, h) for h in range(4)]])
def test_hooks_match_the_hand_written_forward(tiny, mode, heads):
    model, tok = tiny
    inputs = _inputs(tok, PAIRS)  # padded: the pairs differ in length
    assert (inputs["attention_mask"] == 0).any()
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        plain = model(**inputs, output_hidden_states=True)
        with AB.disabled_heads(model, heads, mode):
            hooked = model(**inputs, output_hidden_states=True)
        hidden, logits = reference_forward(model, inputs, heads, mode)
    np.testing.assert_allclose(hooked.hidden_states[-1][real].numpy(), hidden[real].numpy(), atol=2e-5)
    np.testing.assert_allclose(hooked.logits.numpy(), logits.numpy(), atol=1e-5)
    # the ablation did something
    assert float((hooked.hidden_states[-1][real] - plain.hidden_states[-1][real]).abs().max()) > 1e-3
    # the hooks are gone after the block
    with torch.no_grad():
        np.testing.assert_allclose(model(**inputs).logits.numpy(), plain.logits.numpy(), atol=0)


def test_uniform_is_the_identity_on_an_already_uniform_head(sharp_bert_dirs):
    """Hand-computed case: with zero query weights every score is equal, so the head's softmax is
    already uniform over the real tokens (padding masked); Kovaleva's ablation must change nothing,
    while Michel's masking must."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(sharp_bert_dirs[1], attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(sharp_bert_dirs[1])
    sa = model.bert.encoder.layer[1].attention.self
    d = sa.attention_head_size
    with torch.no_grad():
        sa.query.weight[2 * d:3 * d] = 0.0
        sa.query.bias[2 * d:3 * d] = 0.0
    inputs = _inputs(tok, PAIRS)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        plain = model.bert(**inputs).last_hidden_state  # the encoder called directly: hooks still apply
        with AB.disabled_heads(model, [(1, 2)], "uniform"):
            uniform = model.bert(**inputs).last_hidden_state
        with AB.disabled_heads(model, [(1, 2)], "mask"):
            masked = model.bert(**inputs).last_hidden_state
    np.testing.assert_allclose(uniform[real].numpy(), plain[real].numpy(), atol=1e-5)
    assert float((masked[real] - plain[real]).abs().max()) > 1e-3


def test_gate_gradients_match_finite_differences(tiny):
    """Per-sample ∂L_b/∂ξ_h from one backward pass equals (L_b(1+ε) − L_b(1−ε)) / 2ε; float64."""
    import copy

    model, tok = tiny
    model = copy.deepcopy(model).double()
    inputs = _inputs(tok, PAIRS)
    gold = torch.tensor([1, 0, 0, 1])
    B, L, H = len(PAIRS), 2, 4

    def losses(gates):
        with AB.head_gates(model, gates):
            logits = model(**inputs).logits
        return torch.nn.functional.cross_entropy(logits, gold, reduction="none")

    gates = torch.ones((B, L, H), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(losses(gates).sum(), gates)
    eps = 1e-5
    with torch.no_grad():
        for k in range(L):
            for h in range(H):
                up = torch.ones((L, H), dtype=torch.float64)
                down = up.clone()
                up[k, h] += eps
                down[k, h] -= eps
                fd = (losses(up) - losses(down)) / (2 * eps)
                np.testing.assert_allclose(grad[:, k, h].numpy(), fd.numpy(), rtol=1e-4, atol=1e-8)

    # head_importance is the mean of |∂L_b/∂ξ_h| (raw), then per-layer unit ℓ2 norm
    raw = AB.head_importance(model, PAIRS, gold.numpy(), tokenizer=tok, normalize=False, progress=False, batch_size=3)
    np.testing.assert_allclose(raw, grad.abs().mean(0).numpy(), rtol=1e-6)
    imp = AB.head_importance(model, PAIRS, gold.numpy(), tokenizer=tok, progress=False)
    np.testing.assert_allclose(np.linalg.norm(imp, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(imp, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # gradients went to the gates only


def test_gate_zero_equals_masking(tiny):
    model, tok = tiny
    inputs = _inputs(tok, PAIRS)
    gates = torch.ones(2, 4)
    gates[0, 3] = 0
    with torch.no_grad():
        with AB.head_gates(model, gates):
            a = model(**inputs).logits
        with AB.disabled_heads(model, [(0, 3)]):
            b = model(**inputs).logits
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7)


def test_ablate_sample(tiny):
    model, tok = tiny
    res = AB.ablate_sample(model, *PAIRS[0], heads="0:*", mode="mask", tokenizer=tok)
    assert res.heads == [(0, 0), (0, 1), (0, 2), (0, 3)] and res.labels == ["not_equivalent", "equivalent"]
    inputs = _inputs(tok, PAIRS[:1])
    with torch.no_grad():
        before = torch.softmax(model(**inputs).logits, -1)[0].numpy()
        after = torch.softmax(reference_logits(model, inputs, res.heads, "mask"), -1)[0].numpy()
    assert res.probs_before["equivalent"] == pytest.approx(before[1], abs=1e-6)
    assert res.probs_after["equivalent"] == pytest.approx(after[1], abs=1e-6)
    assert sum(res.delta.values()) == pytest.approx(0.0, abs=1e-6)
    assert "0:0, 0:1, 0:2, 0:3 disabled (mask)" in res.summary()


def test_corpus_ablation_matches_per_head_predictions(tiny):
    model, tok = tiny
    pairs = PAIRS * 3
    base_pred = AB.predict_probs(model, pairs, tokenizer=tok).argmax(1)
    gold = base_pred.copy()
    gold[:5] = 1 - gold[:5]  # base accuracy 7/12
    gold[6] = -1  # unlabelled: left out
    rep = AB.corpus_ablation(model, pairs, gold, "uniform", tokenizer=tok, batch_size=5, progress=False)
    keep = gold >= 0
    assert rep.n_samples == 11
    assert rep.base_accuracy == pytest.approx(np.mean(base_pred[keep] == gold[keep]))
    for k, h in [(0, 0), (1, 2)]:
        pred = AB.predict_probs(model, pairs, [(k, h)], "uniform", tokenizer=tok).argmax(1)
        assert rep.accuracy[k, h] == pytest.approx(np.mean(pred[keep] == gold[keep]))
    np.testing.assert_allclose(rep.delta, rep.accuracy - rep.base_accuracy)
    top = rep.top(3)
    assert len(top) == 3 and abs(top[0][2]) == np.abs(rep.delta).max()


def test_gold_indices():
    gold = AB.gold_indices(["not_equivalent", "equivalent"], [0, 1, -1], ["not_equivalent", "Equivalent", None])
    assert gold.tolist() == [0, 1, -1]
    # names first: a model with the labels in another order
    assert AB.gold_indices(["b", "a"], [0, 1], ["a", "b"]).tolist() == [1, 0]
    with pytest.raises(AB.AblationError, match="out of range"):
        AB.gold_indices(["x", "y"], [2], None)


def test_bad_input(tiny, tiny_bert_dirs):
    from transformers import AutoModel

    model, tok = tiny
    with pytest.raises(AB.AblationError, match="unknown ablation mode"):
        AB.ablate_sample(model, "a b", "c d", "0:0", mode="zero", tokenizer=tok)
    with pytest.raises(AB.AblationError, match="out of range"):
        AB.ablate_sample(model, "a b", "c d", [(5, 0)], tokenizer=tok)
    with pytest.raises(AB.AblationError, match="layer:head"):
        AB.ablate_sample(model, "a b", "c d", "7", tokenizer=tok)
    with pytest.raises(ValueError, match="non-empty"):
        AB.ablate_sample(model, " ", "c d", "0:0", tokenizer=tok)
    with pytest.raises(AB.AblationError, match="classifier"):
        AB.ablate_sample(AutoModel.from_pretrained(tiny_bert_dirs[0]), "a b", "c d", "0:0", tokenizer=tok)
    with pytest.raises(AB.AblationError, match="tokenizer"):
        AB.ablate_sample(model, "a b", "c d", "0:0")
    with pytest.raises(AB.AblationError, match="no BERT-style"):
        AB.attention_modules(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no labelled"):
        AB.corpus_ablation(model, PAIRS, [-1] * 4, tokenizer=tok, progress=False)
    with pytest.raises(AB.AblationError, match="gates must be"), AB.head_gates(model, torch.ones(3, 4)):
        pass
