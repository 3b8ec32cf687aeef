"""Issue 26, "label-correct ablation": ``heads report --ablate`` over a corpus that mixes tasks scores only
the samples whose labels are the model's (as the index reconciles them), says how many, and explains in
one line when the fine-tuned model has no classifier.

The sharp tiny BERT of conftest.py (an MRPC-style classifier: not_equivalent / equivalent) over 6 MRPC,
6 RTE and 6 QNLI pairs of the bundled demo set; each test fails on the code before the issue.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnflows_panel import ablation as AB
from attnflows_panel.cli import main

N_EACH = 6


@pytest.fixture(scope="module")
def mixed_jsonl(tmp_path_factory) -> Path:
    from attnflows_panel.corpus import demo_path

    rows = [json.loads(line) for line in Path(demo_path()).read_text().splitlines() if line.strip()]
    picked = []
    for task in ("mrpc", "rte", "qnli"):
        picked += [r for r in rows if r["task"] == task][:N_EACH]
    path = tmp_path_factory.mktemp("mixed") / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in picked) + "\n")
    return path


@pytest.fixture(scope="module")
def mixed_index(sharp_pair, mixed_jsonl, tmp_path_factory) -> Path:
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("mixed-index") / "idx"
    build_index(sharp_pair, str(mixed_jsonl), None, out, tau=0.3, progress=False)
    return out


def _report(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["heads", "report", *argv, "--no-progress", "--json", "-"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_ablation_over_an_index_scores_only_the_tasks_it_scores(capsys, mixed_index, sharp_bert_dirs):
    code, report, err = _report(capsys, "--index", str(mixed_index), "--ablate")
    assert code == 0, err
    assert report["n_samples"] == 3 * N_EACH
    assert report["n_labelled"] == N_EACH  # the MRPC pairs only, not RTE's and QNLI's entailment labels
    scope = report["ablation_scored"]
    assert scope["n_scored"] == N_EACH and scope["tasks"] == ["mrpc"] and set(scope["left_out"]) == {"rte", "qnli"}
    assert f"scored {N_EACH} of {3 * N_EACH} samples" in scope["message"]
    # the base accuracy is the index's own accuracy on the samples it scores
    from attnflows_panel.index import SignatureIndex

    idx = SignatureIndex.open(mixed_index)
    scored = idx.metadata["correct_fine"].dropna()
    assert len(scored) == N_EACH
    assert report["base_accuracy"] == pytest.approx(float(scored.astype(bool).mean()))


def test_ablation_over_a_corpus_reconciles_labels_per_task(capsys, mixed_jsonl, sharp_bert_dirs):
    code, report, err = _report(capsys, "--pretrained", str(sharp_bert_dirs[0]), "--finetuned",
                                str(sharp_bert_dirs[1]), "--data", str(mixed_jsonl), "--ablate")
    assert code == 0, err
    assert report["n_labelled"] == N_EACH and report["ablation_scored"]["tasks"] == ["mrpc"]
    text = main(["heads", "report", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
                 "--data", str(mixed_jsonl), "--ablate", "--no-progress"])
    assert text == 0
    out = capsys.readouterr().out
    assert "base accuracy" in out and f"on {N_EACH} labelled samples" in out
    assert f"scored {N_EACH} of {3 * N_EACH} samples" in out and "rte [entailment, not_entailment]" in out


def test_ablation_without_a_classifier_says_so_plainly(capsys, mixed_jsonl, sharp_bert_dirs):
    code, _, err = _report(capsys, "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[0]),
                           "--data", str(mixed_jsonl), "--ablate")
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    assert "has no classification head" in lines[0] and "out of range" not in lines[0]


def test_label_correct_gold_maps_names_and_leaves_other_tasks_out():
    scored = AB.label_correct_gold(["not_equivalent", "equivalent"],
                                   ["equivalent", "not_equivalent", "entailment", "equivalent"],
                                   ["mrpc", "mrpc", "rte", "mrpc"],
                                   {"mrpc": ["not_equivalent", "equivalent"], "rte": ["entailment", "not_entailment"]})
    assert scored.gold.tolist() == [1, 0, -1, 1]
    assert scored.n_scored == 3 and scored.scored_tasks == ["mrpc"] and list(scored.skipped) == ["rte"]
    with pytest.raises(AB.AblationError, match="no sample's labels are the model's"):
        AB.label_correct_gold(["a", "b"], ["entailment"], ["rte"])
    with pytest.raises(AB.AblationError, match="no classification head"):
        AB.label_correct_gold([], ["equivalent"], ["mrpc"])
    with pytest.raises(AB.AblationError, match="no classification head"):
        AB.gold_indices([], np.array([1]), ["equivalent"])
    # another task's label name is never scored by its number (entailment = 0 is no not_equivalent)
    assert AB.gold_indices(["not_equivalent", "equivalent"], [0, 1, 0],
                           ["not_equivalent", "equivalent", "entailment"]).tolist() == [0, 1, -1]
    assert AB.gold_indices(["LABEL_0", "LABEL_1"], [1, 0], ["yes", "no"]).tolist() == [1, 0]  # generic: by number
