"""ModelPair: loading, compatibility checks, tokens/segments/[SEP], truncation, batching, attentions.

Mechanics run on the tiny random BERT pair (``tiny_bert_dirs``: 2 layers x 4 heads, 64 positions);
attention properties that need real weights run on the packaged all-MiniLM-L6-v2 against a copy of it
with a seeded random classification head (so these tests do not depend on fine-tuning).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from attnflows_panel.models import (
    ModelLoadError,
    ModelOutput,
    ModelPair,
    ModelPairError,
    PairResult,
    attentions_to_numpy,
)

A = "The quick brown fox jumps over the lazy dog."
B = "A fast brown fox leaped over a sleepy dog."


@pytest.fixture(scope="module")
def tiny_pair(tiny_bert_dirs):
    pre, fine = tiny_bert_dirs
    return ModelPair.load(str(pre), str(fine), device="cpu")


def _save_tiny(path, tokenizer_src, **overrides):
    """A tiny random BertModel like the fixture's, with some config values changed."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_src)
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64)
    cfg.update(overrides)
    torch.manual_seed(2)
    BertModel(BertConfig(**cfg)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------------
# one pair: tokens, segments, [SEP], shapes, predictions
# --------------------------------------------------------------------------------------------------


def test_run_tokens_segments_and_shapes(tiny_pair):
    r = tiny_pair.run(A, B)
    assert isinstance(r, PairResult)
    tok = tiny_pair.tokenizer
    toks_a, toks_b = tok.tokenize(A), tok.tokenize(B)
    assert r.tokens == ["[CLS]", *toks_a, "[SEP]", *toks_b, "[SEP]"]
    assert r.n == len(r.tokens) == len(toks_a) + len(toks_b) + 3
    assert r.input_ids == tok.convert_tokens_to_ids(r.tokens)
    assert r.sep_positions == [len(toks_a) + 1, r.n - 1]
    assert r.segments == [0] * (len(toks_a) + 2) + [1] * (len(toks_b) + 1)
    assert r.truncated is False
    assert (r.sentence_a, r.sentence_b) == (A, B)
    for out in (r.pretrained, r.finetuned):
        assert isinstance(out, ModelOutput)
        assert out.attentions.dtype == np.float32
        assert out.attentions.shape == (tiny_pair.num_layers, tiny_pair.num_heads, r.n, r.n) == (2, 4, r.n, r.n)
        assert out.attentions.flags.c_contiguous
    # the two random models differ, so their attentions do
    assert not np.allclose(r.pretrained.attentions, r.finetuned.attentions)


def test_finetuned_prediction_and_bare_pretrained(tiny_pair):
    r = tiny_pair.run(A, B)
    # the pre-trained model is a bare BertModel: no head, no prediction
    assert r.pretrained.label is None and r.pretrained.probs is None and r.pretrained.logits is None
    assert tiny_pair.pretrained_labels == []
    assert tiny_pair.labels == ["not_equivalent", "equivalent"]
    probs = r.finetuned.probs
    assert list(probs) == ["not_equivalent", "equivalent"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert r.finetuned.label == max(probs, key=probs.get)
    # probs are the softmax of the logits of the fine-tuned model itself
    import torch

    enc = tiny_pair.tokenizer(A, B, return_tensors="pt")
    with torch.inference_mode():
        logits = tiny_pair.finetuned_model(**enc).logits[0]
    np.testing.assert_allclose(r.finetuned.logits, logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(list(probs.values()), torch.softmax(logits, -1).numpy(), atol=1e-6)


def test_pretrained_with_head_reports_its_prediction(tiny_bert_dirs):
    _, fine = tiny_bert_dirs
    pair = ModelPair.load(fine, fine, device="cpu")  # the same classifier twice
    r = pair.run(A, B)
    assert r.pretrained.label is not None and r.pretrained.probs == pytest.approx(r.finetuned.probs)
    np.testing.assert_array_equal(r.pretrained.attentions, r.finetuned.attentions)


def test_attentions_match_the_models_own_output(tiny_pair):
    """The conversion keeps HF's layer order and the [k, h, query, key] layout."""
    import torch

    r = tiny_pair.run(A, B)
    enc = tiny_pair.tokenizer(A, B, return_tensors="pt")
    with torch.inference_mode():
        hf = tiny_pair.pretrained_model(**enc, output_attentions=True).attentions
    for k in range(tiny_pair.num_layers):
        np.testing.assert_allclose(r.pretrained.attentions[k], hf[k][0].numpy(), atol=1e-6)
    # rows (queries) sum to 1 over keys
    np.testing.assert_allclose(r.pretrained.attentions.sum(-1), 1.0, atol=1e-5)


def test_attentions_to_numpy_slices_padding():
    import torch

    L, B_, H, N = 3, 2, 2, 5
    t = [torch.arange(B_ * H * N * N, dtype=torch.float64).reshape(B_, H, N, N) + 1000 * k for k in range(L)]
    out = attentions_to_numpy(t, [5, 3])
    assert [o.shape for o in out] == [(L, H, 5, 5), (L, H, 3, 3)]
    assert all(o.dtype == np.float32 for o in out)
    np.testing.assert_array_equal(out[1][2], t[2][1, :, :3, :3].numpy().astype(np.float32))
    with pytest.raises(ValueError, match="lengths"):
        attentions_to_numpy(t, [5])
    with pytest.raises(ValueError, match="eager"):
        attentions_to_numpy((), None)


# --------------------------------------------------------------------------------------------------
# truncation, bad input
# --------------------------------------------------------------------------------------------------


def test_truncation_to_model_maximum(tiny_pair):
    assert tiny_pair.max_length == 64  # min(tokenizer 512, max_position_embeddings 64)
    fits = tiny_pair.run("word " * 60, "end")  # 60 + 1 + 3 special tokens = 64
    assert fits.n == 64 and fits.truncated is False
    over = tiny_pair.run("word " * 61, "end")
    assert over.truncated is True and over.n == 64
    long_a = " ".join(f"w{i}" for i in range(300))
    r = tiny_pair.run(long_a, "The short second sentence.")
    assert r.truncated is True
    assert r.n == tiny_pair.max_length
    assert r.pretrained.attentions.shape == (2, 4, 64, 64)
    # longest_first cuts the long sentence and keeps the short one whole
    assert r.tokens[r.sep_positions[0] + 1:-1] == tiny_pair.tokenizer.tokenize("The short second sentence.")
    assert len(r.sep_positions) == 2 and r.tokens[-1] == "[SEP]" and r.tokens[0] == "[CLS]"
    # both sentences long: both are cut, the pair still has its two segments
    r2 = tiny_pair.run(long_a, long_a)
    assert r2.truncated and r2.n == 64 and set(r2.segments) == {0, 1}


@pytest.mark.parametrize("bad", ["", "   ", "\n\t "])
def test_empty_or_whitespace_input_is_an_error(tiny_pair, bad):
    with pytest.raises(ValueError, match="sentence_a is empty or whitespace"):
        tiny_pair.run(bad, B)
    with pytest.raises(ValueError, match="sentence_b is empty or whitespace"):
        tiny_pair.run(A, bad)


def test_other_bad_input(tiny_pair):
    with pytest.raises(TypeError, match="sentence_a must be a str, got int"):
        tiny_pair.run(3, B)
    with pytest.raises(TypeError, match="sentence_b must be a str, got NoneType"):
        tiny_pair.run(A, None)
    # text that is not whitespace to Python but has no tokens (zero-width spaces)
    with pytest.raises(ValueError, match="sentence_b produces no tokens"):
        tiny_pair.run(A, "\u200b\u200b")
    with pytest.raises(ValueError, match="pair 1: sentence_a is empty"):
        tiny_pair.run_batch([(A, B), ("  ", B)])
    with pytest.raises(TypeError, match="pair 0 must be a"):
        tiny_pair.run_batch(["just one string"])
    with pytest.raises(ValueError, match="batch_size"):
        tiny_pair.run_batch([(A, B)], batch_size=0)
    assert tiny_pair.run_batch([]) == []


# --------------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------------


def test_batch_equals_single_runs_in_input_order(tiny_pair):
    pairs = [
        ("Short one.", "Tiny."),
        (A, B),
        ("A somewhat longer first sentence with several more words in it than the others.", "And a reply."),
        ("x", "y"),
        (" ".join(f"w{i}" for i in range(100)), "Truncated in the batch too."),
    ]
    batch = tiny_pair.run_batch(pairs, batch_size=2)  # several padded batches of mixed lengths
    assert len(batch) == len(pairs)
    for (a, b), rb in zip(pairs, batch, strict=False):
        rs = tiny_pair.run(a, b)
        assert (rb.sentence_a, rb.sentence_b) == (a, b)
        assert rb.tokens == rs.tokens and rb.segments == rs.segments and rb.truncated == rs.truncated
        for ob, os_ in ((rb.pretrained, rs.pretrained), (rb.finetuned, rs.finetuned)):
            assert ob.attentions.shape == os_.attentions.shape
            np.testing.assert_allclose(ob.attentions, os_.attentions, atol=1e-5)
        assert rb.finetuned.label == rs.finetuned.label
        np.testing.assert_allclose(list(rb.finetuned.probs.values()), list(rs.finetuned.probs.values()), atol=1e-5)


# --------------------------------------------------------------------------------------------------
# loading and refusing
# --------------------------------------------------------------------------------------------------


def test_mismatched_layers_heads_and_vocab_size_are_refused(tiny_bert_dirs, tmp_path, minilm_path):
    pre, _ = tiny_bert_dirs
    deeper = _save_tiny(tmp_path / "deeper", minilm_path, num_hidden_layers=3)
    with pytest.raises(ModelPairError, match=r"number of layers \(num_hidden_layers\): 2 vs 3"):
        ModelPair.load(pre, deeper)
    wider = _save_tiny(tmp_path / "wider", minilm_path, num_attention_heads=8)
    with pytest.raises(ModelPairError, match=r"number of heads per layer \(num_attention_heads\): 4 vs 8"):
        ModelPair.load(pre, wider)
    bigger_vocab = _save_tiny(tmp_path / "vocab", minilm_path, vocab_size=30600)
    with pytest.raises(ModelPairError, match=r"vocabulary size \(vocab_size\): 30522 vs 30600"):
        ModelPair.load(pre, bigger_vocab)


def test_mismatched_tokenizers_are_refused(tiny_bert_dirs, tmp_path):
    from transformers import AutoTokenizer, BertTokenizer

    pre, fine = tiny_bert_dirs
    vocab = AutoTokenizer.from_pretrained(fine).get_vocab()
    # same size, one token replaced
    other = dict(vocab)
    other.pop("[unused0]")
    other["zzzqx"] = vocab["[unused0]"]
    swapped = tmp_path / "swapped"
    shutil.copytree(fine, swapped)
    BertTokenizer(vocab=other).save_pretrained(swapped)
    with pytest.raises(ModelPairError, match=r"different vocabularies: sizes 30522 vs 30522; 1 tokens only in the "
                                             r"pre-trained one \(e.g. \['\[unused0\]'\]\)"):
        ModelPair.load(pre, swapped)
    # same vocabulary, but a cased tokenizer: "Hello" would become other tokens
    cased = tmp_path / "cased"
    shutil.copytree(fine, cased)
    BertTokenizer(vocab=vocab, do_lower_case=False).save_pretrained(cased)
    with pytest.raises(ModelPairError, match="normalise text differently"):
        ModelPair.load(pre, cased)


def test_missing_and_unreachable_models(tiny_bert_dirs, tmp_path):
    pre, fine = tiny_bert_dirs
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelPair.load(pre, tmp_path / "nope" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        ModelPair.load(tmp_path / "empty", fine)
    # tests run with HF_HUB_OFFLINE=1: a hub name that is not cached fails at once, naming it
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model") as info:
        ModelPair.load("no-such-org/no-such-model", fine)
    assert isinstance(info.value, OSError) and isinstance(info.value, RuntimeError)  # the CLI reports it cleanly
    with pytest.raises(ValueError, match="a fine-tuned model is needed"):
        ModelPair.load(pre, None)


def test_offline_default_without_prepare_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNFLOWS_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match=r"attnflows demo --prepare-only"):
        ModelPair.load()


def test_generic_labels_take_the_glue_task_names(tiny_bert_dirs, tmp_path):
    """Checkpoints like textattack/bert-base-uncased-MRPC keep LABEL_0/1 but set finetuning_task."""
    pre, fine = tiny_bert_dirs
    ta = tmp_path / "textattack-style"
    shutil.copytree(fine, ta)
    cfg = json.loads((ta / "config.json").read_text())
    cfg.pop("id2label"), cfg.pop("label2id")
    cfg["finetuning_task"] = "glue:mrpc"
    (ta / "config.json").write_text(json.dumps(cfg))
    pair = ModelPair.load(pre, ta)
    assert pair.labels == ["not_equivalent", "equivalent"]
    assert set(pair.run(A, B).finetuned.probs) == {"not_equivalent", "equivalent"}


def test_fingerprint_hashes_the_weight_files_once(tiny_pair, tiny_bert_dirs):
    pre, fine = tiny_bert_dirs
    fp = tiny_pair.fingerprint
    assert fp is tiny_pair.fingerprint  # cached on the instance
    assert fp["pretrained"]["name"] == str(pre.resolve())
    assert fp["finetuned"]["name"] == str(fine.resolve())
    for role, d in (("pretrained", pre), ("finetuned", fine)):
        assert fp[role]["weights_sha256"] == hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert fp["pretrained"]["weights_sha256"] != fp["finetuned"]["weights_sha256"]
    assert json.loads(json.dumps(fp)) == fp  # JSON-able for index manifests


# --------------------------------------------------------------------------------------------------
# the real MiniLM
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_head_pair(minilm_path, tmp_path_factory):
    """Packaged MiniLM vs. the same encoder with a seeded random MRPC head (no fine-tuning needed)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("minilm-head")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path, num_labels=2, id2label={0: "not_equivalent", 1: "equivalent"},
        label2id={"not_equivalent": 0, "equivalent": 1},
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return ModelPair.load(minilm_path, out, device="cpu")


@pytest.mark.real_model
def test_minilm_attention_rows_sum_to_one_and_runs_are_deterministic(minilm_head_pair, minilm_path):
    pair = minilm_head_pair
    assert (pair.num_layers, pair.num_heads, pair.max_length) == (6, 12, 512)
    a = "The company said its quarterly profit rose 12 percent on strong demand for cloud services."
    b = "Quarterly profit at the company climbed 12 percent, helped by demand for its cloud services."
    r1, r2 = pair.run(a, b), pair.run(a, b)
    for out in (r1.pretrained, r1.finetuned):
        att = out.attentions
        assert att.shape == (6, 12, r1.n, r1.n) and att.dtype == np.float32
        assert (att >= 0).all()
        np.testing.assert_allclose(att.sum(axis=-1), 1.0, atol=1e-5)
    # eval mode, no dropout: bit-for-bit the same twice
    np.testing.assert_array_equal(r1.pretrained.attentions, r2.pretrained.attentions)
    np.testing.assert_array_equal(r1.finetuned.attentions, r2.finetuned.attentions)
    assert r1.finetuned.probs == r2.finetuned.probs
    # real attention is structured, not uniform: some head puts most of a row on one token
    assert r1.pretrained.attentions.max() > 0.9
    # the head does not touch the encoder: both models attend identically, only one predicts
    np.testing.assert_allclose(r1.pretrained.attentions, r1.finetuned.attentions, atol=1e-6)
    assert r1.pretrained.label is None and r1.finetuned.label in ("not_equivalent", "equivalent")
    # a padded batch (the pair next to a shorter one) gives the same attentions as the single run
    other = ("Where is the Eiffel Tower?", "The Eiffel Tower stands on the Champ de Mars in Paris.")
    rb = pair.run_batch([(a, b), other])[0]
    np.testing.assert_allclose(rb.finetuned.attentions, r1.finetuned.attentions, atol=1e-5)
    assert rb.finetuned.label == r1.finetuned.label
    # the packaged weights file is what the fingerprint names
    sha = hashlib.sha256((minilm_path / "model.safetensors").read_bytes()).hexdigest()
    assert pair.fingerprint["pretrained"]["weights_sha256"] == sha


def test_importing_models_imports_no_preparation():
    """Configuration is apart from preparation: models (and defaults) import nothing that fine-tunes or
    indexes, so there is no import cycle between them (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys, attnflows_panel.models, attnflows_panel.defaults; "
        "print(sorted(m for m in sys.modules if m.startswith('attnflows_panel')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    loaded = eval(out)  # a list literal printed by the child  # noqa: S307
    assert loaded == [
        "attnflows_panel", "attnflows_panel.defaults", "attnflows_panel.model_loading", "attnflows_panel.models"
    ], loaded
    assert "attnflows_panel.prepare" not in loaded and "attnflows_panel.finetune" not in loaded


def test_preparation_lives_only_in_prepare():
    """defaults is configuration only: the preparation names are prepare's, and defaults has none of them."""
    from attnflows_panel import defaults, prepare

    for name in ("prepare", "prepare_model", "prepare_index", "is_prepared", "hub_reachable", "choose_data_source"):
        assert callable(getattr(prepare, name))
        assert not hasattr(defaults, name), name


def test_truncated_weights_give_a_clear_error(tmp_path, tiny_bert_dirs):
    import shutil

    from attnflows_panel.models import ModelLoadError, ModelPair

    broken = tmp_path / "fine"
    shutil.copytree(tiny_bert_dirs[1], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="weights in .* are damaged .*truncated or corrupt"):
        ModelPair.load(str(tiny_bert_dirs[0]), str(broken), device="cpu")


@pytest.mark.parametrize("which", ["sharp", "minilm"])
def test_usage_batch_equals_the_signature_of_each_run(which, sharp_bert_dirs, minilm_path, glue_dir):
    """The index build's fast path (usage counted on the batched attention tensors, padding included)
    gives exactly the stored usage of each sample's own run, and the same predictions."""
    from attnflows_panel.corpus import load_corpus
    from attnflows_panel.index import result_usage
    from attnflows_panel.models import ModelPair

    if which == "sharp":  # peaked attention, 64 positions: long pairs are truncated
        pair, tau = ModelPair.load(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]), device="cpu"), 0.3
    else:  # real weights, diffuse attention
        pair, tau = ModelPair.load(str(minilm_path), str(minilm_path), device="cpu"), 0.1
    ds = load_corpus(str(glue_dir / "MRPC"), task="mrpc", split="dev", limit=20)
    pairs = list(zip(ds["sentence_a"], ds["sentence_b"], strict=False))
    pairs += [("Short.", "Also short."), ("word " * 80, "more " * 40)]
    fast = pair.usage_batch(pairs, tau, batch_size=7)
    runs = pair.run_batch(pairs, batch_size=7)
    expected = np.stack([result_usage(r, tau) for r in runs])
    np.testing.assert_array_equal(fast["usage"], expected)
    assert fast["usage"].shape == (len(pairs), 2, pair.num_layers, pair.num_heads)
    assert fast["pred_pre"] == [r.pretrained.label for r in runs]
    assert fast["pred_fine"] == [r.finetuned.label for r in runs]
    assert fast["n_tokens"].tolist() == [r.n for r in runs]
    assert fast["truncated"].tolist() == [r.truncated for r in runs]
    assert fast["truncated"][-1] == (which == "sharp")
    if which == "sharp":
        probs = [r.finetuned.probs[r.finetuned.label] for r in runs]
        np.testing.assert_allclose(fast["prob_fine"], probs, rtol=1e-6)
        assert np.count_nonzero(expected) > 0  # not a vacuous comparison of empty graphs


def test_encode_pairs_tokenises_once_as_the_truncating_call_does(minilm_path):
    """encode_pairs (what the index build tokenises each shard with) gives the token ids, types and
    truncation flags of a plain truncating tokenizer call, the long pairs included, and names an
    empty sentence by its pair."""
    from attnflows_panel.models import ModelPair

    pair = ModelPair.load(minilm_path, minilm_path, device="cpu")
    long_a = " ".join(["attention"] * 600)
    pairs = [("The cat sat.", "A cat was sitting on the mat."), (long_a, "short one"),
             ("short", " ".join(["flows"] * 700)), (long_a, long_a), ("Hi.", "Ho.")]
    got = pair.encode_pairs(pairs)
    tok = pair.tokenizer
    want = tok([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=pair.max_length)
    assert [g[0] for g in got] == want["input_ids"]
    assert [g[1] for g in got] == want["token_type_ids"]
    assert [g[2] for g in got] == [False, True, True, True, False]
    assert max(len(g[0]) for g in got) == pair.max_length
    # the usage of pre-encoded pairs is the usage of the pairs
    fast = pair.usage_batch(pairs, 0.1, batch_size=2, head_change=True)
    pre = pair.usage_batch(pairs, 0.1, batch_size=2, head_change=True, encoded=got)
    for key in ("usage", "head_change", "n_tokens", "truncated"):
        np.testing.assert_array_equal(fast[key], pre[key])
    with pytest.raises(ValueError, match="pair 1: sentence_b produces no tokens"):
        pair.encode_pairs([("a b", "c d"), ("a b", "\u200b")])
