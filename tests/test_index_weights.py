"""An index of norm edge weights (issue #27): recorded in the manifest, its signatures counted on the norm
weights, and a query of another kind refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnflows_panel.cli import main
from attnflows_panel.index import IndexMismatchError, SignatureIndex, build_index, result_usage

TAU = 0.1


@pytest.fixture(scope="module")
def norm_index(sharp_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("norm-index") / "demo-norm"
    return build_index(sharp_pair, "demo", None, out, limit=6, tau=TAU, progress=False, weights="norm")


def test_manifest_and_signatures(norm_index, sharp_pair):
    manifest = json.loads((norm_index / "manifest.json").read_text())
    assert manifest["weights"] == "norm"
    idx = SignatureIndex.open(norm_index, pair=sharp_pair)
    assert idx.weights == "norm"
    row = idx.metadata.iloc[2]
    stored = idx.usage([2])[0]
    norm = result_usage(sharp_pair.run(row["sentence_a"], row["sentence_b"], weights="norm"), TAU)
    raw = result_usage(sharp_pair.run(row["sentence_a"], row["sentence_b"]), TAU)
    np.testing.assert_allclose(stored, norm, atol=2e-3)  # stored as float16
    assert np.abs(stored - raw).max() > 0.01


def test_query_of_another_kind_is_refused(norm_index, sharp_pair):
    idx = SignatureIndex.open(norm_index, pair=sharp_pair)
    a, b = "The cat sat on the mat.", "A cat was sitting on the mat."
    with pytest.raises(IndexMismatchError, match="run with raw edge weights, but the index .* counts norm"):
        idx.query(result=sharp_pair.run(a, b), k=3)
    df = idx.query(result=(a, b), k=3)  # a sentence pair runs with the index's weights
    assert len(df) == 3
    same = idx.query(result=sharp_pair.run(a, b, weights="norm"), k=3)
    assert df["id"].tolist() == same["id"].tolist()


def test_a_build_of_another_kind_is_another_index(norm_index, sharp_pair):
    with pytest.raises(Exception, match="weights: existing 'norm', requested 'raw'"):
        build_index(sharp_pair, "demo", None, norm_index, limit=6, tau=TAU, progress=False)


def test_an_index_without_the_key_holds_raw(norm_index, sharp_pair):
    idx = SignatureIndex.open(norm_index, pair=sharp_pair)
    idx.manifest.pop("weights")
    assert idx.weights == "raw"
    with pytest.raises(ValueError, match="raw or norm"):
        build_index(sharp_pair, "demo", None, norm_index.parent / "x", limit=2, tau=TAU, progress=False,
                    weights="attattr")


def test_cli(norm_index, sharp_bert_dirs, tmp_path, capsys):
    pre, fine = (str(d) for d in sharp_bert_dirs)
    code = main(["index", "query", "--index", str(norm_index), "--id", "demo-mrpc-001", "--weights", "raw"])
    err = capsys.readouterr().err
    assert code == 1 and "counts norm edge weights, not raw" in err and "Traceback" not in err
    assert main(["index", "query", "--index", str(norm_index), "--a", "A cat.", "--b", "A dog.", "--k", "2",
                 "--pretrained", pre, "--finetuned", fine]) == 0
    assert "2 results" in capsys.readouterr().out
    out = tmp_path / "cli-norm"
    assert main(["index", "build", "--pretrained", pre, "--finetuned", fine, "--data", "demo", "--limit", "3",
                 "--tau", "0.1", "--weights", "norm", "--no-progress", "--out", str(out)]) == 0
    assert "norm weights" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["weights"] == "norm"
    assert main(["index", "info", "--index", str(out)]) == 0
    assert "norm edge weights" in capsys.readouterr().out
