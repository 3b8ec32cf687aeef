"""Any sentence-pair task: GLUE tasks by name, open tasks with labels from the data, label reconciliation.

README.md, "Data formats and tasks" and "Tasks, labels and fine-tuning".
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from attnflows_panel.corpus import (
    TASKS,
    HubUnavailableError,
    MalformedRowsWarning,
    label_names,
    label_spaces,
    load_corpus,
    parse_columns,
    parse_labels,
    resolve_task,
)
from attnflows_panel.labels import LabelMatch, parse_label_map, reconcile

NLI = ["entailment", "neutral", "contradiction"]
PAIRS = [
    ("A man is playing a guitar on stage.", "A man is performing music.", "entailment"),
    ("A woman reads a book in the park.", "A woman is sleeping at home.", "contradiction"),
    ("Two dogs run across a field.", "The dogs are chasing a ball.", "neutral"),
    ("A child eats an apple.", "A kid is eating fruit.", "entailment"),
    ("The train leaves at noon.", "The train has been cancelled for good.", "contradiction"),
    ("A chef cooks pasta.", "The chef is cooking for a wedding.", "neutral"),
]


def _write_nli_csv(path, n_repeat=2, with_split=True):
    lines = ["premise,hypothesis,gold_label" + (",split" if with_split else "")]
    for r in range(n_repeat):
        for i, (a, b, lab) in enumerate(PAIRS):
            split = "dev" if (i + r) % 3 == 0 else "train"
            lines.append(f'"{a} ({r})","{b}",{lab}' + (f",{split}" if with_split else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# the GLUE task table
# --------------------------------------------------------------------------------------------------


def test_every_glue_pair_task_has_its_real_label_order():
    assert set(TASKS) == {"mrpc", "rte", "qnli", "wnli", "qqp", "mnli", "mnli-mm"}
    assert TASKS["wnli"].labels == ["not_entailment", "entailment"]  # 1 = entailment, unlike RTE
    assert TASKS["rte"].labels == ["entailment", "not_entailment"]
    assert TASKS["qqp"].labels == ["not_duplicate", "duplicate"]
    assert TASKS["mnli"].labels == TASKS["mnli-mm"].labels == NLI
    assert TASKS["mnli"].tsv_files["dev"] == "dev_matched.tsv"
    assert TASKS["mnli-mm"].tsv_files["dev"] == "dev_mismatched.tsv"
    assert resolve_task("MNLI_mismatched") == "mnli-mm" and resolve_task("mnli_matched") == "mnli"
    assert resolve_task("SNLI") == "snli"  # an open task
    for name, why in (("stsb", "regression"), ("STS-B", "regression"), ("sst2", "single-sentence"),
                      ("cola", "single-sentence")):
        with pytest.raises(ValueError, match=why):
            resolve_task(name)
    with pytest.raises(ValueError, match="not usable"):
        resolve_task("no spaces please")


def test_cli_style_parsers():
    assert parse_columns("premise,hypothesis") == {"sentence_a": "premise", "sentence_b": "hypothesis"}
    assert parse_columns("q1, q2, is_dup") == {"sentence_a": "q1", "sentence_b": "q2", "label": "is_dup"}
    with pytest.raises(ValueError, match="SENTENCE_A,SENTENCE_B"):
        parse_columns("only_one")
    assert parse_labels("no, yes") == ["no", "yes"]
    with pytest.raises(ValueError, match="twice"):
        parse_labels("yes,Yes")
    with pytest.raises(ValueError, match="at least two"):
        parse_labels("solo")
    assert parse_label_map("index") == "index"
    assert parse_label_map("LABEL_0=entailment, LABEL_1=not_entailment") == {"LABEL_0": "entailment",
                                                                             "LABEL_1": "not_entailment"}
    with pytest.raises(ValueError, match="MODEL_LABEL=CORPUS_LABEL"):
        parse_label_map("LABEL_0:entailment")


# --------------------------------------------------------------------------------------------------
# GLUE TSV detection
# --------------------------------------------------------------------------------------------------


@pytest.mark.glue
def test_wnli_shaped_folder_is_read_by_name_or_task_and_refused_otherwise(glue_dir, tmp_path):
    rte_dev = (glue_dir / "RTE" / "dev.tsv").read_bytes()
    wnli = tmp_path / "WNLI"
    wnli.mkdir()
    header = "index\tsentence1\tsentence2\tlabel\n"
    body = ("0\tThe trophy doesn't fit into the suitcase because it is too large.\tThe trophy is too large.\t1\n"
            "1\tThe trophy doesn't fit into the suitcase because it is too large.\tThe suitcase is too large.\t0\n")
    (wnli / "dev.tsv").write_text(header + body, encoding="utf-8")
    ds = load_corpus(wnli)
    assert set(ds["task"]) == {"wnli"} and ds["label"] == [1, 0]
    assert ds["label_name"] == ["entailment", "not_entailment"]  # 1 = entailment in WNLI
    assert label_names(ds) == ["not_entailment", "entailment"]

    # the same header, a folder that names no task: refused with both candidates named ...
    anon = tmp_path / "pairs-from-somewhere"
    anon.mkdir()
    (anon / "dev.tsv").write_text(header + body, encoding="utf-8")
    with pytest.raises(ValueError, match=r"fits several GLUE tasks: RTE \(task='rte'\), WNLI \(task='wnli'\)"):
        load_corpus(anon)
    with pytest.raises(ValueError, match="fits several GLUE tasks"):
        load_corpus(anon / "dev.tsv")  # a single file too
    # ... and read as asked with task=
    as_wnli = load_corpus(anon, task="wnli")
    assert as_wnli["label_name"] == ["entailment", "not_entailment"]
    # real RTE: named folder, integer-free labels; under another name it needs task= as well
    renamed = tmp_path / "renamed-rte"
    renamed.mkdir()
    (renamed / "dev.tsv").write_bytes(rte_dev)
    with pytest.raises(ValueError, match="fits several GLUE tasks"):
        load_corpus(renamed)
    rte = load_corpus(renamed, task="rte", limit=10)
    assert set(rte["task"]) == {"rte"} and set(rte["label_name"]) <= {"entailment", "not_entailment"}
    assert load_corpus(glue_dir / "RTE", limit=3)["task"] == ["rte"] * 3  # the folder's name decides
    # an MRPC file is not RTE or WNLI whatever task= says
    with pytest.raises(ValueError, match="holds MRPC data"):
        load_corpus(glue_dir / "MRPC", task="wnli")


def test_mnli_qqp_folders_and_stsb_refused(tmp_path):
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    head = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    train_rows = [head + ["label1", "gold_label"]]
    dev_rows = [head + [f"label{i}" for i in range(1, 6)] + ["gold_label"]]
    for i, (a, b, lab) in enumerate(PAIRS):
        base = [str(i), "1", f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b]
        train_rows.append(base + [lab, lab])
        dev_rows.append(base + [lab] * 5 + [lab])
    for name, data in (("train.tsv", train_rows), ("dev_matched.tsv", dev_rows), ("dev_mismatched.tsv", dev_rows[:3])):
        (mnli / name).write_text("\n".join("\t".join(r) for r in data) + "\n", encoding="utf-8")
    ds = load_corpus(mnli, split="dev")
    assert set(ds["task"]) == {"mnli"} and len(ds) == 6
    assert ds.features["label"].names == NLI
    assert ds["label_name"] == [p[2] for p in PAIRS] and ds["label"] == [NLI.index(p[2]) for p in PAIRS]
    mm = load_corpus(mnli, task="mnli-mm", split="dev")
    assert set(mm["task"]) == {"mnli-mm"} and len(mm) == 2
    assert len(load_corpus(mnli / "dev_mismatched.tsv")) == 2  # the file name picks mismatched

    qqp = tmp_path / "QQP"
    qqp.mkdir()
    (qqp / "dev.tsv").write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                 "7\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n"
                                 "8\t3\t4\tWhy is the sky blue?\tHow tall is Everest?\t0\n", encoding="utf-8")
    q = load_corpus(qqp)
    assert q["id"] == ["qqp-dev-7", "qqp-dev-8"] and q["label_name"] == ["duplicate", "not_duplicate"]

    sts = tmp_path / "STS-B"
    sts.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    row = "0\tmain\tx\t2012\t1\tnone\tnone\tA man plays.\tA man is playing.\t4.8\n"
    (sts / "dev.tsv").write_text(header + row, encoding="utf-8")
    with pytest.raises(ValueError, match="STS-B is a regression task.*bin the scores"):
        load_corpus(sts)
    with pytest.raises(ValueError, match="regression"):
        load_corpus("glue/stsb")


# --------------------------------------------------------------------------------------------------
# open tasks: CSV / JSONL
# --------------------------------------------------------------------------------------------------


def test_three_label_csv_takes_its_label_names_from_the_data(tmp_path):
    path = _write_nli_csv(tmp_path / "my_nli.csv")
    ds = load_corpus(path)
    assert set(ds["task"]) == {"my_nli"}  # named after the file
    names = sorted(NLI)  # names from the data, sorted: the same ids whatever split or limit is read
    assert label_names(ds) == names and ds.features["label"].names == names
    assert all(names[i] == n for i, n in zip(ds["label"], ds["label_name"], strict=True))
    dev = load_corpus(path, split="dev", limit=2)
    assert label_names(dev) == names  # label space from the whole file, not the rows kept
    # a GLUE task name sets GLUE's order instead
    as_mnli = load_corpus(path, task="mnli")
    assert label_names(as_mnli) == NLI and as_mnli["label"][:3] == [0, 2, 1]
    # labels= for the same names in another order
    custom = load_corpus(path, labels="contradiction,neutral,entailment")
    assert label_names(custom) == ["contradiction", "neutral", "entailment"] and custom["label"][0] == 2
    with pytest.raises(ValueError, match=r"task 'rte' has the labels"):
        load_corpus(path, task="rte", labels="a,b")


def test_three_label_jsonl_with_integer_labels_needs_names(tmp_path):
    path = tmp_path / "nli.jsonl"
    recs = [{"s1": a, "s2": b, "y": NLI.index(lab)} for a, b, lab in PAIRS]
    recs.append({"s1": "Odd one.", "s2": "Out of range.", "y": 5})
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    cols = parse_columns("s1,s2,y")
    with pytest.raises(ValueError, match=r"numbers \[0, 1, 2, 5\] with no names.*--labels NAME0,NAME1"):
        load_corpus(path, column_map=cols)
    # labels= must cover every label of the data: the out-of-range 5 is named, not dropped as malformed
    with pytest.raises(ValueError, match=r"do not cover the labels of .*nli\.jsonl: missing '5' \(1 rows\)"):
        load_corpus(path, column_map=cols, labels=NLI)
    path.write_text("\n".join(json.dumps(r) for r in recs[:-1]) + "\n", encoding="utf-8")
    ds = load_corpus(path, column_map=cols, labels=NLI)
    assert len(ds) == 6 and label_names(ds) == NLI
    assert ds["label_name"] == [p[2] for p in PAIRS]
    # labels with names and ids side by side fix the order without labels=
    path2 = tmp_path / "paired.jsonl"
    path2.write_text("\n".join(json.dumps({"premise": a, "hypothesis": b, "label": NLI.index(lab), "label_name": lab})
                               for a, b, lab in PAIRS) + "\n", encoding="utf-8")
    assert label_names(load_corpus(path2)) == NLI


def test_float_written_integer_labels_are_ids(tmp_path):
    path = tmp_path / "floats.csv"  # pandas writes integer labels of a float column as 0.0, 1.0
    path.write_text("sentence1,sentence2,label\nA.,B.,1.0\nC.,D.,0.0\n", encoding="utf-8")
    ds = load_corpus(path, labels="no,yes")
    assert ds["label"] == [1, 0] and ds["label_name"] == ["yes", "no"]


def test_regression_labels_in_a_file_are_refused(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,label\nA man plays.,A man is playing.,4.8\nA cat.,A dog.,0.5\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match="real-valued scores.*regression.*bin the scores"):
        load_corpus(path)


def test_mixed_task_file_keeps_per_task_label_spaces(tmp_path):
    path = tmp_path / "mixed.jsonl"
    recs = [{"sentence1": a, "sentence2": b, "label": lab, "task": "snli"} for a, b, lab in PAIRS]
    recs += [{"sentence1": "He left.", "sentence2": "He went away.", "label": "equivalent", "task": "mrpc"}]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    ds = load_corpus(path)
    assert Counter(ds["task"]) == {"snli": 6, "mrpc": 1}
    assert label_names(ds) is None  # two tasks
    assert label_spaces(ds) == {"snli": sorted(NLI), "mrpc": ["not_equivalent", "equivalent"]}
    assert label_names(load_corpus(path, task="snli")) == sorted(NLI)
    demo = load_corpus("demo")  # the bundled mixed set still loads, GLUE label orders per task
    assert label_spaces(demo) == {t: TASKS[t].labels for t in ("mrpc", "rte", "qnli")}


# --------------------------------------------------------------------------------------------------
# datasets with ClassLabel features (local stand-ins for hub datasets: no network in tests)
# --------------------------------------------------------------------------------------------------


def _snli_like():
    import datasets

    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=NLI)})
    cols = {"premise": [p[0] for p in PAIRS], "hypothesis": [p[1] for p in PAIRS],
            "label": [NLI.index(p[2]) for p in PAIRS]}
    train = datasets.Dataset.from_dict(cols, features=features)
    dev = datasets.Dataset.from_dict({"premise": ["A dog sleeps.", "Unlabelled pair."],
                                      "hypothesis": ["An animal rests.", "No gold."], "label": [0, -1]},
                                     features=features)
    return datasets.DatasetDict({"train": train, "validation": dev})


def test_save_to_disk_folder_with_classlabel(tmp_path):
    folder = tmp_path / "snli_local"
    _snli_like().save_to_disk(str(folder))
    with pytest.warns(MalformedRowsWarning, match=r"snli_local\[dev\]:2: no gold label \(-1\)"):
        ds = load_corpus(folder)
    assert set(ds["task"]) == {"snli_local"} and label_names(ds) == NLI
    assert Counter(ds["split"]) == {"train": 6, "dev": 1}
    assert [m.reason for m in ds.malformed] == ["no gold label (-1)"]  # SNLI's -1: skipped and reported
    with pytest.warns(MalformedRowsWarning):
        dev = load_corpus(folder, task="snli", split="validation")
    assert dev["task"] == ["snli"] and dev["label_name"] == ["entailment"] and dev["id"] == ["snli-dev-0"]
    # explicit columns (--columns A,B[,LABEL]) and a wrong one
    swapped = load_corpus(folder, split="train", column_map=parse_columns("hypothesis,premise,label"), limit=1)
    assert swapped[0]["sentence_a"] == PAIRS[0][1]
    with pytest.raises(ValueError, match="maps 'sentence_a' to 'nope'"):
        load_corpus(folder, column_map={"sentence_a": "nope"})


def test_hub_style_folder_with_classlabel_in_its_card(tmp_path):
    """A dataset repository as the hub holds it (parquet + README card with ClassLabel), read offline."""
    import datasets

    folder = tmp_path / "paws-like"
    (folder / "data").mkdir(parents=True)
    features = datasets.Features({"id": datasets.Value("int32"), "sentence1": datasets.Value("string"),
                                  "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["0", "1"])})
    d = datasets.Dataset.from_dict({"id": [1, 2], "sentence1": ["Flights from A to B.", "He ate."],
                                    "sentence2": ["Flights from B to A.", "He has eaten."], "label": [0, 1]},
                                   features=features)
    d.to_parquet(str(folder / "data" / "test-00000.parquet"))
    d.to_parquet(str(folder / "data" / "train-00000.parquet"))
    (folder / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: id\n    dtype: int32\n  - name: sentence1\n    dtype: string\n"
        "  - name: sentence2\n    dtype: string\n  - name: label\n    dtype:\n      class_label:\n        names:\n"
        "          '0': '0'\n          '1': '1'\n---\n# paws-like\n", encoding="utf-8")
    ds = load_corpus(folder)
    assert label_names(ds) == ["0", "1"] and ds["id"] == ["paws-like-train-1", "paws-like-train-2"]
    assert set(ds["split"]) == {"train"}  # the test split is left out (usually unlabelled)


def test_folder_that_is_no_dataset_is_refused_clearly(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("# just notes\n", encoding="utf-8")
    with pytest.raises(ValueError, match="neither a GLUE task folder .* nor a folder the datasets library can read"):
        load_corpus(folder)


def test_hub_names_are_hub_sources_offline(monkeypatch):
    for name in ("snli", "paws/labeled_final", "stanfordnlp/snli", "glue/mnli", "glue/wnli"):
        with pytest.raises(HubUnavailableError, match=re.escape(name)):
            load_corpus(name, split="dev")


def test_hub_path_conversion_with_classlabel_names_and_open_task(monkeypatch):
    """The real hub code path with ``datasets.load_dataset`` answered locally (no network)."""
    import datasets

    from attnflows_panel.corpus import hub

    calls = []
    dd = _snli_like()

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        base = split.split("[")[0]
        if base not in dd:
            raise ValueError(f'Unknown split "{base}". Should be one of {list(dd)}.')
        return dd[base]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    with pytest.warns(MalformedRowsWarning, match="no gold label"):
        ds = load_corpus("stanfordnlp/snli", split="dev")
    assert calls[0] == ("stanfordnlp/snli", None, "validation")
    assert set(ds["task"]) == {"snli"} and label_names(ds) == NLI
    calls.clear()
    with pytest.warns(MalformedRowsWarning):
        glue = load_corpus("glue/mnli", split="dev", limit=3)
    assert calls[0] == ("nyu-mll/glue", "mnli", "validation_matched[:3]")
    assert set(glue["task"]) == {"mnli"} and label_names(glue) == NLI
    calls.clear()
    with pytest.warns(MalformedRowsWarning):
        load_corpus("glue/mnli_mismatched", split="dev")
    assert calls[0] == ("nyu-mll/glue", "mnli", "validation_mismatched")


# --------------------------------------------------------------------------------------------------
# label reconciliation
# --------------------------------------------------------------------------------------------------


def test_reconcile_by_name_subset_and_mismatch():
    m = reconcile(["entailment", "neutral", "contradiction"], ["Contradiction", "entailment", "neutral"], task="snli")
    assert m.matched and m.how == "names" and m.mapping["contradiction"] == "Contradiction"
    assert m.correct("neutral", "neutral") is True and m.correct("neutral", "entailment") is False
    # the model knows more labels than the corpus: matched, the extra one is never correct
    sub = reconcile(NLI, ["entailment", "contradiction"])
    assert sub.matched and sub.only_model == ("neutral",) and sub.correct("neutral", "entailment") is False
    assert "also predicts [neutral]" in sub.message
    bad = reconcile(["not_equivalent", "equivalent"], ["entailment", "not_entailment"], task="rte")
    assert not bad.matched and bad.how == "mismatch"
    assert bad.only_corpus == ("entailment", "not_entailment") and bad.only_model == ("not_equivalent", "equivalent")
    assert "label sets differ: task 'rte' has [entailment, not_entailment]" in bad.message
    assert bad.correct("equivalent", "entailment") is None  # never scored
    assert LabelMatch.from_dict(json.loads(json.dumps(bad.to_dict()))) == bad
    assert reconcile([], NLI).how == "no_head" and not reconcile([], NLI).matched
    assert reconcile(NLI, None).how == "no_corpus_labels"


def test_reconcile_generic_labels_only_with_a_label_map():
    generic = ["LABEL_0", "LABEL_1"]
    plain = reconcile(generic, ["entailment", "not_entailment"])
    assert not plain.matched and "--label-map index" in plain.message
    byindex = reconcile(generic, ["entailment", "not_entailment"], label_map="index")
    assert byindex.matched and byindex.how == "index" and byindex.correct("LABEL_1", "not_entailment") is True
    counts = reconcile(generic, NLI, label_map="index")
    assert not counts.matched and "label counts differ" in counts.message
    with pytest.raises(ValueError, match="matched by name"):
        reconcile(["no", "yes"], ["no", "yes"], label_map="index")
    mapped = reconcile(generic, ["no", "yes"], label_map="LABEL_0=yes,LABEL_1=no")
    assert mapped.matched and mapped.how == "label_map" and mapped.correct("LABEL_0", "yes") is True
    with pytest.raises(ValueError, match="not a label of the fine-tuned model"):
        reconcile(generic, ["no", "yes"], label_map={"LABEL_7": "no"})
    with pytest.raises(ValueError, match="not a label of the corpus"):
        reconcile(generic, ["no", "yes"], label_map={"LABEL_0": "maybe"})


# --------------------------------------------------------------------------------------------------
# end to end: a task the project has never heard of, fine-tuned, indexed; and with another task's model
# --------------------------------------------------------------------------------------------------


def _nli_corpus(folder, n_repeat=4):
    """A three-label corpus of an unknown task ("tri_nli") as CSV and as JSONL with integer labels."""
    csv_path = _write_nli_csv(folder / "tri_nli.csv", n_repeat=n_repeat)
    jsonl = folder / "tri_nli.jsonl"
    with jsonl.open("w", encoding="utf-8") as fh:
        for r in range(n_repeat):
            for i, (a, b, lab) in enumerate(PAIRS):
                fh.write(json.dumps({"s1": f"{a} [{r}]", "s2": b, "y": NLI.index(lab),
                                     "split": "dev" if (i + r) % 3 == 0 else "train"}) + "\n")
    return csv_path, jsonl


@pytest.fixture(scope="module")
def tri_nli(tmp_path_factory, tiny_bert_dirs):
    """The CSV corpus and a tiny BERT fine-tuned on it by attnflows finetune (a few steps: mechanics)."""
    from attnflows_panel.finetune import finetune

    root = tmp_path_factory.mktemp("tri-nli")
    csv_path, jsonl = _nli_corpus(root)
    out = root / "tiny-tri-nli"
    metrics = finetune(str(tiny_bert_dirs[0]), str(csv_path), out=str(out), max_steps=3, batch_size=4,
                       learning_rate=1e-3, seed=0, progress=False)
    return csv_path, jsonl, out, metrics


def test_finetune_writes_the_corpus_label_names(tri_nli):
    from transformers import AutoConfig

    _, _, out, metrics = tri_nli
    names = sorted(NLI)
    assert metrics["task"] == "tri_nli" and metrics["labels"] == names
    assert metrics["f1_label"] == "macro" and len(metrics["confusion"]["labels"]) == 3
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == dict(enumerate(names))
    assert config.label2id == {n: i for i, n in enumerate(names)}


def test_unknown_task_indexed_with_its_own_model_and_with_another_tasks_model(tri_nli, tiny_bert_dirs, tmp_path):
    from attnflows_panel.index import LabelMismatchError, SignatureIndex, build_index
    from attnflows_panel.models import ModelPair

    csv_path, _, fine_dir, _ = tri_nli
    pre_dir, mrpc_dir = tiny_bert_dirs
    own = ModelPair.load(str(pre_dir), str(fine_dir))
    r = own.run(PAIRS[0][0], PAIRS[0][1])
    assert set(r.finetuned.probs) == set(NLI) and abs(sum(r.finetuned.probs.values()) - 1) < 1e-5  # the card's probs

    # its own fine-tune: label names and correctness
    path = build_index(own, str(csv_path), None, tmp_path / "own", tau=0.3, progress=False)
    idx = SignatureIndex.open(path)
    assert idx.labels_match and idx.label_mismatch is None and idx.has_correctness
    md = idx.metadata
    assert set(md["label_name"]) == set(NLI) and md["correct_fine"].notna().all()
    assert list(md["correct_fine"]) == list(md["pred_fine"] == md["label_name"])
    assert idx.accuracy() == pytest.approx(float((md["pred_fine"] == md["label_name"]).mean()))
    rec = idx.manifest["label_reconciliation"]
    assert rec["matched"] and rec["finetuned"]["tri_nli"]["how"] == "names"
    # the browser's filters, index side: label, prediction, correct, all three labels present
    for name in NLI:
        assert idx.select({"label": name}).sum() == (md["label_name"] == name).sum() > 0
    some_pred = md["pred_fine"].iloc[0]
    assert idx.select({"prediction": some_pred}).sum() == (md["pred_fine"] == some_pred).sum()
    assert idx.select({"correct": True}).sum() + idx.select({"correct": False}).sum() == len(idx)

    # the MRPC model on the same corpus: nothing scored, the mismatch named everywhere
    other = ModelPair.load(str(pre_dir), str(mrpc_dir))
    path2 = build_index(other, str(csv_path), None, tmp_path / "other", tau=0.3, progress=False)
    idx2 = SignatureIndex.open(path2)
    assert not idx2.labels_match and not idx2.has_correctness and idx2.accuracy() is None
    assert idx2.metadata["correct_fine"].isna().all()
    assert set(idx2.metadata["pred_fine"]) <= {"equivalent", "not_equivalent"}  # predictions are kept
    msg = idx2.label_mismatch
    assert "label sets differ: task 'tri_nli' has [contradiction, entailment, neutral]" in msg
    assert "predicts [not_equivalent, equivalent]" in msg
    rec2 = idx2.manifest["label_reconciliation"]
    assert not rec2["matched"] and rec2["message"] == msg and rec2["scored_tasks"] == []
    with pytest.raises(LabelMismatchError, match="cannot filter by correctness.*label sets differ"):
        idx2.select({"correct": True})
    assert idx2.select({"label": "neutral"}).sum() > 0  # the other filters still work


def test_cli_three_label_jsonl_finetune_and_index(tri_nli, tiny_bert_dirs, tmp_path, capsys):
    from attnflows_panel.cli import main
    from attnflows_panel.index import SignatureIndex

    _, jsonl, _, _ = tri_nli
    pre_dir, mrpc_dir = tiny_bert_dirs
    out = tmp_path / "jsonl-model"
    base = ["--data", str(jsonl), "--columns", "s1,s2,y"]
    # integer labels without names: refused, with what to do
    assert main(["finetune", "--base", str(pre_dir), *base, "--out", str(out), "--quiet", "--max-steps", "1"]) == 1
    assert "--labels NAME0,NAME1" in capsys.readouterr().err
    assert main(["finetune", "--base", str(pre_dir), *base, "--labels", ",".join(NLI), "--out", str(out),
                 "--quiet", "--max-steps", "2", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "tri_nli (3 labels: entailment, neutral, contradiction)" in printed
    labels = ["--labels", ",".join(NLI)]
    assert main(["index", "build", "--pretrained", str(pre_dir), "--finetuned", str(out), *base, *labels,
                 "--out", str(tmp_path / "i1"), "--tau", "0.3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned accuracy" in printed and "labels:" not in printed
    assert SignatureIndex.open(tmp_path / "i1").labels_match
    # another task's model: no accuracy, the mismatch printed
    assert main(["index", "build", "--pretrained", str(pre_dir), "--finetuned", str(mrpc_dir), *base, *labels,
                 "--out", str(tmp_path / "i2"), "--tau", "0.3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned accuracy" not in printed and "labels: label sets differ" in printed
    assert main(["index", "info", "--index", str(tmp_path / "i2")]) == 0
    assert "labels     label sets differ" in capsys.readouterr().out
    assert main(["index", "query", "--index", str(tmp_path / "i2"), "--id", "tri_nli-train-1", "--correct", "yes"]) == 1
    assert "cannot filter by correctness" in capsys.readouterr().err


def test_generic_label_model_needs_label_map(tiny_bert_dirs, tmp_path, capsys):
    """A classifier that kept LABEL_0..2: by index only when asked, and only with equal counts."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from attnflows_panel.index import SignatureIndex, build_index
    from attnflows_panel.models import ModelPair

    pre_dir, _ = tiny_bert_dirs
    cfg = BertConfig.from_pretrained(pre_dir)
    cfg.num_labels = 3
    cfg.id2label = {i: f"LABEL_{i}" for i in range(3)}
    cfg.label2id = {f"LABEL_{i}": i for i in range(3)}
    cfg.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(3)
    generic = tmp_path / "generic"
    BertForSequenceClassification(cfg).save_pretrained(generic)
    AutoTokenizer.from_pretrained(pre_dir).save_pretrained(generic)
    csv_path, _ = _nli_corpus(tmp_path, n_repeat=1)
    pair = ModelPair.load(str(pre_dir), str(generic))
    assert pair.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    plain = SignatureIndex.open(build_index(pair, str(csv_path), "mnli", tmp_path / "plain", tau=0.3, progress=False))
    assert not plain.labels_match and "--label-map index" in plain.label_mismatch
    byindex = SignatureIndex.open(build_index(pair, str(csv_path), "mnli", tmp_path / "byindex", tau=0.3,
                                              progress=False, label_map="index"))
    assert byindex.labels_match and byindex.metadata["correct_fine"].notna().all()
    md = byindex.metadata
    expected = [NLI[int(p.split("_")[1])] == g for p, g in zip(md["pred_fine"], md["label_name"], strict=True)]
    assert list(md["correct_fine"]) == expected
    assert byindex.manifest["label_map"] == "index"
    # RTE's two labels against three generic ones: counts differ, nothing scored
    rte_csv = tmp_path / "rte.csv"
    rte_csv.write_text("premise,hypothesis,label\nA.,B.,entailment\nC.,D.,not_entailment\n", encoding="utf-8")
    counts = SignatureIndex.open(build_index(pair, str(rte_csv), "rte", tmp_path / "counts", tau=0.3,
                                             progress=False, label_map="index"))
    assert not counts.has_correctness and "label counts differ" in counts.label_mismatch


def test_mixed_demo_scores_only_the_matching_task(tiny_bert_dirs, tmp_path):
    """The bundled demo (MRPC, RTE, QNLI rows) with an MRPC model: MRPC rows scored, the others not."""
    from attnflows_panel.index import SignatureIndex, build_index
    from attnflows_panel.models import ModelPair

    demo = load_corpus("demo", split="dev")
    pair = ModelPair.load(str(tiny_bert_dirs[0]), str(tiny_bert_dirs[1]))
    idx = SignatureIndex.open(build_index(pair, demo, None, tmp_path / "demo", tau=0.3, progress=False))
    md = idx.metadata
    is_mrpc = md["id"].str.startswith("demo-mrpc").to_numpy(bool)
    assert md["correct_fine"][is_mrpc].notna().all() and md["correct_fine"][~is_mrpc].isna().all()
    assert idx.has_correctness and not idx.labels_match
    assert "correctness is computed for mrpc only" in idx.label_mismatch
    assert idx.manifest["label_reconciliation"]["scored_tasks"] == ["mrpc"]


@pytest.mark.glue
def test_real_glue_rte_with_an_mrpc_model_reports_no_accuracy(glue_dir, tiny_bert_dirs, tmp_path, capsys):
    """The issue's case: RTE indexed with an MRPC fine-tune once said "fine-tuned accuracy 0.000"."""
    from attnflows_panel.cli import main
    from attnflows_panel.index import SignatureIndex

    pre, mrpc_model = (str(d) for d in tiny_bert_dirs)
    common = ["index", "build", "--pretrained", pre, "--finetuned", mrpc_model, "--split", "dev", "--limit", "12",
              "--tau", "0.3", "--no-progress"]
    assert main([*common, "--data", str(glue_dir / "RTE"), "--out", str(tmp_path / "rte")]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned accuracy" not in printed
    assert ("labels: label sets differ: task 'rte' has [entailment, not_entailment], the fine-tuned model predicts "
            "[not_equivalent, equivalent]") in printed
    rte = SignatureIndex.open(tmp_path / "rte")
    assert rte.accuracy() is None and rte.metadata["correct_fine"].isna().all()
    # the same model on MRPC and on QNLI (real folders): MRPC scored, QNLI not
    assert main([*common, "--data", str(glue_dir / "MRPC"), "--out", str(tmp_path / "mrpc")]) == 0
    assert "fine-tuned accuracy" in capsys.readouterr().out
    mrpc = SignatureIndex.open(tmp_path / "mrpc")
    assert mrpc.labels_match and mrpc.metadata["correct_fine"].notna().all()
    assert main([*common, "--data", str(glue_dir / "QNLI"), "--out", str(tmp_path / "qnli")]) == 0
    assert "labels: label sets differ: task 'qnli'" in capsys.readouterr().out


def test_hub_legacy_name_config_and_missing_train_split(monkeypatch):
    """``paws/labeled_final``: not a dataset ``paws/labeled_final``, so the dataset ``paws``, config
    ``labeled_final``; a dataset without a train split loads its dev split alone."""
    import datasets

    from attnflows_panel.corpus import hub

    dd = _snli_like()
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if (name, config) != ("paws", "labeled_final"):
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")
        base = split.split("[")[0]
        if base != "validation":
            raise ValueError(f'Unknown split "{base}". Should be one of [\'validation\'].')
        return dd["validation"]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: None)
    with pytest.warns(MalformedRowsWarning):
        ds = load_corpus("paws/labeled_final")
    assert set(ds["task"]) == {"paws-labeled_final"} and set(ds["split"]) == {"dev"} and label_names(ds) == NLI
    assert calls[:2] == [("paws/labeled_final", None, "train"), ("paws", "labeled_final", "train")]
    with pytest.raises(HubUnavailableError, match=r"could not load paws/labeled_final \(train split\)"):
        load_corpus("paws/labeled_final", split="train")
