"""``attnflows heads report`` on the tiny BERT pair and the bundled demo corpus: the JSON keys and
shapes, the numbers against an independent recomputation, the --index path (stored 8-bit codes), an
old index without them, truncation, ablation, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnflows_panel import ablation as AB
from attnflows_panel import heads as HD
from attnflows_panel.cli import main

KEYS = {"layers", "heads", "n_samples", "cosine", "jsd", "usage_change", "sample_ids"}


@pytest.fixture(scope="module")
def demo_index(sharp_pair, tmp_path_factory):
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("heads-index") / "demo"
    build_index(sharp_pair, "demo", "mrpc", out, tau=0.3, limit=12, shard_size=5, batch_size=4, progress=False)
    return out


def _report(tmp_path, *args):
    out = tmp_path / "report.json"
    rc = main(["heads", "report", *args, "--json", str(out), "--no-progress"])
    assert rc == 0
    return json.loads(out.read_text())


def _recompute(pair, ids_pairs, max_length=None, run=None):
    """cosine / jsd per sample from single runs (no batching), the metric written out with numpy;
    ``run(a, b)``: the PairResult whose edge weights are compared (default ``pair.run``, raw attention)."""
    if max_length is not None:
        pair.max_length, old = max_length, pair.max_length
    try:
        cos, js = [], []
        for a, b in ids_pairs:
            r = (run or pair.run)(a, b)
            p = r.pretrained.attentions.astype(np.float64)
            q = r.finetuned.attentions.astype(np.float64)
            L, H, n, _ = p.shape
            dot = (p * q).sum(axis=(2, 3))
            cos.append(dot / np.sqrt((p * p).sum(axis=(2, 3)) * (q * q).sum(axis=(2, 3))))
            m = (p + q) / 2
            def kl(x, m=m):  # x log2(x / m) where x > 0 (there m > 0 too), 0 elsewhere: no 0/0 computed
                on = x > 0
                return np.where(on, x * np.log2(np.where(on, x, 1) / np.where(on, m, 1)), 0).sum(-1)

            js.append((0.5 * kl(p) + 0.5 * kl(q)).mean(-1))
        return np.mean(cos, 0), np.mean(js, 0)
    finally:
        if max_length is not None:
            pair.max_length = old


def test_report_over_a_corpus(tmp_path, sharp_bert_dirs, sharp_pair, capsys):
    from attnflows_panel.corpus import load_corpus

    pre, fine = map(str, sharp_bert_dirs)
    rep = _report(tmp_path, "--pretrained", pre, "--finetuned", fine, "--data", "demo", "--task", "mrpc",
                  "--limit", "7", "--tau", "0.3", "--ablate", "--batch-size", "3")
    assert KEYS | {"ablation_accuracy_delta", "importance"} <= set(rep)
    assert (rep["layers"], rep["heads"], rep["n_samples"]) == (2, 4, 7)
    for key in ("cosine", "jsd", "usage_change", "ablation_accuracy_delta", "importance"):
        arr = np.asarray(rep[key])
        assert arr.shape == (2, 4) and np.isfinite(arr).all(), key
    ds = load_corpus("demo", task="mrpc", limit=7)
    assert rep["sample_ids"] == list(ds["id"])
    pairs = list(zip(ds["sentence_a"], ds["sentence_b"], strict=False))
    cos, js = _recompute(sharp_pair, pairs)
    np.testing.assert_allclose(rep["cosine"], cos, atol=2e-5)
    np.testing.assert_allclose(rep["jsd"], js, atol=2e-5)
    assert np.asarray(rep["jsd"]).min() > 0  # the two random models really differ
    # usage change from the index's own definition
    from attnflows_panel.index import result_usage

    usage = np.stack([result_usage(sharp_pair.run(a, b), 0.3) for a, b in pairs])
    np.testing.assert_allclose(rep["usage_change"], HD.usage_change(usage), atol=1e-6)
    # ablation: the same numbers as the library
    gold = AB.gold_indices(sharp_pair.labels, ds["label"], ds["label_name"])
    abl = AB.corpus_ablation(sharp_pair, pairs, gold, "mask", progress=False)
    np.testing.assert_allclose(rep["ablation_accuracy_delta"], abl.delta, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(rep["importance"], axis=1), 1.0, atol=1e-9)
    text = capsys.readouterr().out
    assert "layer" in text and "cosine" in text and "most changed by JSD" in text and "base accuracy" in text
    # one row per layer, counted from 1 as the app counts them (heads too: "(4)" is the fourth of 4)
    assert len([line for line in text.splitlines() if line.strip().startswith(("1 ", "2 "))]) == 2
    assert not [line for line in text.splitlines() if line.strip().startswith("0 ")]


def test_max_length_truncates_like_the_tokenizer(tmp_path, sharp_bert_dirs, sharp_pair):
    from attnflows_panel.corpus import load_corpus

    pre, fine = map(str, sharp_bert_dirs)
    rep = _report(tmp_path, "--pretrained", pre, "--finetuned", fine, "--data", "demo", "--task", "mrpc",
                  "--limit", "4", "--max-length", "16")
    ds = load_corpus("demo", task="mrpc", limit=4)
    pairs = list(zip(ds["sentence_a"], ds["sentence_b"], strict=False))
    tok = sharp_pair.tokenizer
    assert all(len(tok(a, b, truncation=True, max_length=16)["input_ids"]) == 16 for a, b in pairs)
    cos, js = _recompute(sharp_pair, pairs, max_length=16)
    np.testing.assert_allclose(rep["cosine"], cos, atol=2e-5)
    np.testing.assert_allclose(rep["jsd"], js, atol=2e-5)
    assert rep["source"]["max_length"] == 16


def test_report_over_an_index(tmp_path, demo_index, sharp_pair, sharp_bert_dirs):
    from attnflows_panel.corpus import load_corpus
    from attnflows_panel.index import SignatureIndex

    idx = SignatureIndex.open(demo_index)
    assert idx.has_head_change and "head_change.npy" in idx.manifest["files"]
    assert (demo_index / "head_change.npy").stat().st_size - 128 == 12 * 2 * 2 * 4  # npy header + 1 byte a value
    rep = _report(tmp_path, "--index", str(demo_index))
    assert set(rep) >= KEYS and "ablation_accuracy_delta" not in rep and rep["n_samples"] == 12
    ds = load_corpus("demo", task="mrpc", limit=12)
    pairs = list(zip(ds["sentence_a"], ds["sentence_b"], strict=False))
    cos, js = _recompute(sharp_pair, pairs)
    # within the 8-bit code's bound ((2 s + 1/510) / 510 <= 3.9e-3 per value)
    np.testing.assert_allclose(rep["cosine"], cos, atol=4e-3)
    np.testing.assert_allclose(rep["jsd"], js, atol=4e-3)
    # a subset by ids
    ids = [ds["id"][1], ds["id"][5]]
    sub = _report(tmp_path, "--index", str(demo_index), "--ids", ",".join(ids))
    assert sub["sample_ids"] == ids and sub["n_samples"] == 2
    cos2, _ = _recompute(sharp_pair, [pairs[1], pairs[5]])
    np.testing.assert_allclose(sub["cosine"], cos2, atol=4e-3)
    np.testing.assert_allclose(sub["usage_change"], HD.usage_change(idx.usage(idx.rows_of(ids))), atol=1e-6)
    # --ablate with --index runs the manifest's models on the index's sentences
    rep2 = _report(tmp_path, "--index", str(demo_index), "--ablate", "--ablation-mode", "uniform")
    assert rep2["ablation_mode"] == "uniform" and np.asarray(rep2["importance"]).shape == (2, 4)


def test_old_index_without_head_change(tmp_path, demo_index, capsys):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(demo_index, old)
    (old / "head_change.npy").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"]["head_change.npy"]
    del manifest["checksums"]["files"]["head_change.npy"]  # an index from before head change never listed it
    manifest.pop("head_change", None)
    from attnflows_panel.index.format import write_manifest

    write_manifest(old / "manifest.json", manifest)  # as such a build wrote it
    rc = main(["heads", "report", "--index", str(old)])
    err = capsys.readouterr().err
    assert rc == 1 and "no per-head change" in err and "rebuild" in err


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "--data SOURCE"),
        (["--index", "x", "--data", "demo"], "cannot be combined with --index"),
        (["--data", "demo", "--ids", "a"], "--ids works with --index"),
        (["--data", "demo", "--tau", "1.5"], "--tau must be in"),
        (["--index", "/nonexistent/idx"], "no index folder"),
        (["--index", "x", "--weights", "attattr"], "an index holds raw or norm edge weights"),
        (["--data", "demo", "--steps", "4"], "--steps sets the Riemann steps of --weights attattr"),
        (["--data", "demo", "--weights", "norm", "--steps", "4"], "no meaning for norm weights"),
    ],
)
def test_bad_arguments(args, match, capsys):
    rc = main(["heads", "report", *args])
    assert rc == 1
    assert match in capsys.readouterr().err


def test_max_length_too_long(sharp_bert_dirs, capsys):
    pre, fine = map(str, sharp_bert_dirs)
    rc = main(["heads", "report", "--pretrained", pre, "--finetuned", fine, "--data", "demo", "--max-length", "500"])
    assert rc == 1 and "exceeds the models' maximum of 64" in capsys.readouterr().err


@pytest.mark.parametrize("given, task", [("RTE", "rte"), ("qqp", "qqp"), ("MNLI", "mnli")])
def test_task_takes_every_glue_task_like_the_other_commands(given, task):
    """``--task`` of ``heads report`` accepts what ``index build`` and ``finetune`` accept, in any case."""
    from attnflows_panel.cli import build_parser

    args = build_parser().parse_args(["heads", "report", "--data", "some/folder", "--task", given])
    assert args.task == task
    build = build_parser().parse_args(["index", "build", "--data", "some/folder", "--out", "x", "--task", given])
    assert build.task == task


def test_an_unknown_task_is_named(capsys):
    from attnflows_panel.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["heads", "report", "--data", "some/folder", "--task", "sst9"])
    assert exc.value.code == 2
    assert "--task" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# --weights: the same report on norm (Kobayashi et al. 2020) and attattr (Hao et al. 2021) edge weights
# ----------------------------------------------------------------------------------------------------


def _demo_pairs(limit):
    from attnflows_panel.corpus import load_corpus

    ds = load_corpus("demo", task="mrpc", limit=limit)
    return list(zip(ds["sentence_a"], ds["sentence_b"], strict=True))


def test_report_on_norm_weights(tmp_path, sharp_bert_dirs, sharp_pair, capsys):
    from attnflows_panel.index import result_usage

    pre, fine = map(str, sharp_bert_dirs)
    args = ["--pretrained", pre, "--finetuned", fine, "--data", "demo", "--task", "mrpc", "--limit", "5",
            "--tau", "0.2", "--batch-size", "2"]
    raw = _report(tmp_path, *args)
    norm = _report(tmp_path, *args, "--weights", "norm")
    assert raw["weights"] == "raw" and norm["weights"] == "norm"
    assert "on norm edge weights (Kobayashi et al. 2020)" in capsys.readouterr().out
    pairs = _demo_pairs(5)
    runs = [sharp_pair.run(a, b, weights="norm") for a, b in pairs]
    assert {r.pretrained.weights for r in runs} == {"norm"}
    cos, js = _recompute(sharp_pair, pairs, run=lambda a, b: sharp_pair.run(a, b, weights="norm"))
    np.testing.assert_allclose(norm["cosine"], cos, atol=2e-5)
    np.testing.assert_allclose(norm["jsd"], js, atol=2e-5)
    usage = np.stack([result_usage(r, 0.2) for r in runs])
    np.testing.assert_allclose(norm["usage_change"], HD.usage_change(usage), atol=1e-6)
    np.testing.assert_allclose(norm["usage"]["pretrained"], usage[:, 0].mean(0), atol=1e-6)
    np.testing.assert_allclose(norm["usage"]["finetuned"], usage[:, 1].mean(0), atol=1e-6)
    # the weights really are others: every measure moves
    for key in ("cosine", "jsd", "usage_change"):
        assert np.abs(np.subtract(norm[key], raw[key])).max() > 1e-3, key


@pytest.fixture(scope="module")
def two_classifier_dirs(sharp_bert_dirs, tmp_path_factory):
    """The sharp tiny pair with a (random) classification head on the pre-trained side too, so that
    attattr exists for both models."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = tmp_path_factory.mktemp("two-heads") / "pre-cls"
    torch.manual_seed(3)
    model = BertForSequenceClassification.from_pretrained(
        sharp_bert_dirs[0], id2label={0: "not_equivalent", 1: "equivalent"},
        label2id={"not_equivalent": 0, "equivalent": 1})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(sharp_bert_dirs[0]).save_pretrained(out)
    return out, sharp_bert_dirs[1]


def test_report_on_attattr_weights(tmp_path, two_classifier_dirs, capsys):
    from attnflows_panel.models import ModelPair
    from attnflows_panel.weights import with_attattr

    pre, fine = map(str, two_classifier_dirs)
    rep = _report(tmp_path, "--pretrained", pre, "--finetuned", fine, "--data", "demo", "--task", "mrpc",
                  "--limit", "3", "--tau", "0.2", "--weights", "attattr", "--steps", "3")
    assert rep["weights"] == "attattr" and rep["source"]["steps"] == 3
    assert "on attattr edge weights (Hao et al. 2021)" in capsys.readouterr().out
    pair = ModelPair.load(pre, fine, device="cpu")
    pairs = _demo_pairs(3)
    runs = [with_attattr(pair, pair.run(a, b), steps=3) for a, b in pairs]
    assert {(r.pretrained.weights, r.finetuned.weights) for r in runs} == {("attattr", "attattr")}
    cos, js = _recompute(pair, pairs, run=lambda a, b: with_attattr(pair, pair.run(a, b), steps=3))
    np.testing.assert_allclose(rep["cosine"], cos, atol=2e-5)
    np.testing.assert_allclose(rep["jsd"], js, atol=2e-5)
    raw_cos, _ = _recompute(pair, pairs)
    assert np.abs(np.asarray(rep["cosine"]) - raw_cos).max() > 1e-2  # attribution is not attention


def test_attattr_of_a_bare_encoder_is_refused(sharp_bert_dirs, capsys):
    pre, fine = map(str, sharp_bert_dirs)
    rc = main(["heads", "report", "--pretrained", pre, "--finetuned", fine, "--data", "demo", "--limit", "2",
               "--weights", "attattr", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]  # (the loading bars aside)
    assert len(lines) == 1, err
    err = lines[0]
    assert "needs a classification head on both models" in err and "pre-trained model" in err
    assert "is a bare encoder" in err and "--weights norm or raw" in err


def test_report_over_a_norm_index(tmp_path, sharp_pair, capsys):
    from attnflows_panel.index import build_index

    out = build_index(sharp_pair, "demo", "mrpc", tmp_path / "norm", tau=0.2, limit=5, batch_size=2,
                      progress=False, weights="norm")
    rep = _report(tmp_path, "--index", str(out))
    assert rep["weights"] == "norm"
    assert _report(tmp_path, "--index", str(out), "--weights", "norm")["cosine"] == rep["cosine"]
    cos, js = _recompute(sharp_pair, _demo_pairs(5), run=lambda a, b: sharp_pair.run(a, b, weights="norm"))
    np.testing.assert_allclose(rep["cosine"], cos, atol=4e-3)  # the index's 8-bit codes
    np.testing.assert_allclose(rep["jsd"], js, atol=4e-3)
    capsys.readouterr()
    rc = main(["heads", "report", "--index", str(out), "--weights", "raw"])
    err = capsys.readouterr().err
    assert rc == 1 and "counts norm edge weights, not raw" in err and "Traceback" not in err
