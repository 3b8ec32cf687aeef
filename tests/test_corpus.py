"""load_corpus: every source into one schema, malformed rows reported with file and line, clear errors."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from attnflows_panel.corpus import (
    COLUMNS,
    TASKS,
    HubUnavailableError,
    MalformedRow,
    MalformedRowsWarning,
    demo_path,
    load_corpus,
)

SCHEMA = {"id": "string", "sentence_a": "string", "sentence_b": "string", "label": "int64",
          "label_name": "string", "task": "string", "split": "string"}


def _check_schema(ds):
    assert tuple(ds.column_names) == COLUMNS
    assert {k: v.dtype for k, v in ds.features.items()} == SCHEMA
    assert len(set(ds["id"])) == len(ds), "ids must be unique"
    for row in ds:
        assert TASKS[row["task"]].labels[row["label"]] == row["label_name"]
        assert row["sentence_a"].strip() and row["sentence_b"].strip()


def test_tasks_contract():
    assert TASKS["mrpc"].labels == ["not_equivalent", "equivalent"]
    assert TASKS["rte"].labels == TASKS["qnli"].labels == ["entailment", "not_entailment"]
    with pytest.raises(TypeError):
        TASKS["sst2"] = TASKS["rte"]  # read-only


# --------------------------------------------------------------------------------------------------
# GLUE task folders (real files)
# --------------------------------------------------------------------------------------------------


@pytest.mark.glue
def test_mrpc_folder_original_format(glue_dir):
    ds = load_corpus(glue_dir / "MRPC", split="dev")
    _check_schema(ds)
    assert len(ds) == 408 and set(ds["split"]) == {"dev"} and set(ds["task"]) == {"mrpc"}
    assert ds.malformed == []
    first = (glue_dir / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").split("\n")[1].split("\t")
    row = ds[0]
    assert row["id"] == "mrpc-dev-0"
    assert row["label"] == int(first[0]) and row["label_name"] == TASKS["mrpc"].labels[int(first[0])]
    assert (row["sentence_a"], row["sentence_b"]) == (first[3], first[4])
    # quote characters are text, not CSV quoting: the sentence keeps its leading '"'
    assert any(s.startswith('"') for s in ds["sentence_b"][:5])
    assert not any("\ufeff" in s for s in ds["sentence_a"])  # the BOM is not in the data
    assert Counter(ds["label_name"]) == {"equivalent": 279, "not_equivalent": 129}


@pytest.mark.glue
def test_rte_and_qnli_folders(glue_dir):
    rte = load_corpus(str(glue_dir / "RTE"), split="validation", limit=25)  # alias of dev
    _check_schema(rte)
    assert len(rte) == 25 and set(rte["split"]) == {"dev"} and rte[0]["id"] == "rte-dev-0"
    assert rte.info.description.startswith(f"attnflows corpus from {glue_dir / 'RTE'}: 25 pairs, task=rte")
    both = load_corpus(glue_dir / "RTE", limit=30)  # split None: train first
    assert set(both["split"]) == {"train"} and both[0]["id"] == "rte-train-0"
    qnli = load_corpus(glue_dir / "QNLI", limit=20)  # only dev.tsv exists
    _check_schema(qnli)
    assert set(qnli["split"]) == {"dev"} and qnli[0]["sentence_a"].endswith("?")
    with pytest.raises(FileNotFoundError, match=r"QNLI has no train split \(train.tsv missing; it has: dev.tsv\)"):
        load_corpus(glue_dir / "QNLI", split="train")


@pytest.mark.glue
def test_task_comes_from_the_header_when_the_folder_is_renamed(glue_dir, tmp_path):
    renamed = tmp_path / "my-paraphrases"
    renamed.mkdir()
    (renamed / "dev.tsv").write_bytes((glue_dir / "MRPC" / "dev.tsv").read_bytes())
    ds = load_corpus(renamed, limit=5)
    assert set(ds["task"]) == {"mrpc"} and len(ds) == 5
    with pytest.raises(ValueError, match="holds MRPC data .* not task 'rte'"):
        load_corpus(glue_dir / "MRPC", task="rte", limit=5)
    single = load_corpus(glue_dir / "RTE" / "dev.tsv", limit=3)  # one original file
    assert set(single["split"]) == {"dev"} and set(single["task"]) == {"rte"}


def test_malformed_glue_rows_are_reported_with_file_and_line(tmp_path):
    folder = tmp_path / "MRPC"
    folder.mkdir()
    lines = [
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        '1\t1\t2\tHe said " the deal is done .\tThe deal is done , he said .',  # unbalanced quote: fine
        "0\t3\t4\tOnly four columns here .",  # line 3: wrong column count
        "1\t5\t6\t   \tAn empty first sentence .",  # line 4: empty sentence
        "2\t7\t8\tA label that MRPC does not have .\tSecond sentence .",  # line 5: unknown label
        "",  # blank lines are skipped silently
        "0\t9\t10\tThe last good row .\tIt is good .",
    ]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / "train.tsv"
    with pytest.warns(MalformedRowsWarning, match=re.escape(f"{path}:3: expected 5 tab-separated columns, found 4")):
        ds = load_corpus(folder)
    assert len(ds) == 2
    assert ds[0]["sentence_a"] == 'He said " the deal is done .'
    assert ds["id"] == ["mrpc-train-0", "mrpc-train-5"]  # ids count data rows, malformed ones included
    assert [(m.file, m.line) for m in ds.malformed] == [(str(path), 3), (str(path), 4), (str(path), 5)]
    assert all(isinstance(m, MalformedRow) for m in ds.malformed)
    assert "empty sentence_a" in ds.malformed[1].reason
    assert "unknown label '2'" in ds.malformed[2].reason
    assert f"{path}:5: unknown label" in ds.info.description


# --------------------------------------------------------------------------------------------------
# CSV / JSONL
# --------------------------------------------------------------------------------------------------


def test_csv_with_column_map_and_label_names_or_ids(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "gold,premise,hypothesis,source\n"
        'entailment,"A man, who was tired, slept on the sofa.",A man slept.,x\n'
        '1,"A long premise that spans\ntwo lines of the file.",It spans one line.,y\n'
        "Not_Entailment,A woman is reading.,A woman is asleep.,z\n"
        "maybe,A dog barks.,An animal makes a sound.,w\n"  # line 6: unknown label
        "0,Too,few\n"  # line 7: wrong column count
        "0,Rain fell all day.,It rained.,v\n",
        encoding="utf-8",
    )
    with pytest.warns(MalformedRowsWarning):
        ds = load_corpus(path, task="rte", column_map={"sentence_a": "premise", "sentence_b": "hypothesis",
                                                       "label": "gold"})
    _check_schema(ds)
    assert ds["label_name"] == ["entailment", "not_entailment", "not_entailment", "entailment"]
    assert ds["label"] == [0, 1, 1, 0]
    assert ds[0]["sentence_a"] == "A man, who was tired, slept on the sofa."
    assert ds[1]["sentence_a"] == "A long premise that spans\ntwo lines of the file."
    assert set(ds["split"]) == {"train"} and ds["id"][0] == "rte-train-0"
    assert [(m.line, m.reason.split(" (")[0]) for m in ds.malformed] == [
        (6, "unknown label 'maybe' for rte"), (7, "expected 4 columns, found 3")]
    # no split column: every row is "train"; asking for dev is a clear error that names the split
    with pytest.raises(ValueError, match=r"no valid rows for task 'rte' and split 'dev'"):
        load_corpus(path, task="rte", split="dev", column_map={"sentence_a": "premise",
                                                             "sentence_b": "hypothesis", "label": "gold"})


def test_csv_unbalanced_quote_is_reported_with_its_span(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text('premise,hypothesis,label\nA.,B.,0\n"Unbalanced start,C.,1\nD.,E.,0\nF.,G.,1\n',
                    encoding="utf-8")
    with pytest.warns(MalformedRowsWarning, match=re.escape(f"{path}:3: expected 3 columns, found 1 (the row runs "
                                                            "from line 3 to 5: an unbalanced quote?)")):
        ds = load_corpus(path, task="rte")
    assert ds["sentence_a"] == ["A."]


def test_csv_named_dev_is_the_dev_split_and_usual_names_are_found(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("question,sentence,label\nWho wrote it?,It was written by Ann.,entailment\n", encoding="utf-8")
    ds = load_corpus(path, task="qnli")
    assert ds[0]["split"] == "dev" and ds[0]["sentence_a"] == "Who wrote it?" and ds[0]["label"] == 0


def test_jsonl_with_mapping_and_malformed_lines(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        json.dumps({"uid": "p1", "s1": "The cat sat on the mat.", "s2": "A cat was on the mat.", "y": 1}),
        "{not json",  # line 2
        "",  # blank: skipped
        json.dumps(["a", "list"]),  # line 4
        json.dumps({"uid": "p2", "s1": "It rained.", "y": 0}),  # line 5: s2 missing
        json.dumps({"uid": "p1", "s1": "Again p1.", "s2": "Duplicate id.", "y": 0}),  # line 6
        json.dumps({"uid": "p3", "s1": "He left early.", "s2": "He departed before the end.",
                    "y": "equivalent", "split": "validation"}),
        json.dumps({"uid": "p4", "s1": "  ", "s2": "Empty first.", "y": 0}),  # line 8
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.warns(MalformedRowsWarning, match=re.escape(f"{path}:2: bad JSON")):
        ds = load_corpus(path, task="mrpc", column_map={"id": "uid", "sentence_a": "s1", "sentence_b": "s2",
                                                        "label": "y"})
    assert ds["id"] == ["p1", "p3"]
    assert ds["label_name"] == ["equivalent", "equivalent"]
    assert ds["split"] == ["train", "dev"]
    got = {(m.line, m.reason.split(":")[0]) for m in ds.malformed}
    assert got == {(2, "bad JSON"), (4, "expected a JSON object, found list"), (5, "missing field(s) 's2'"),
                   (6, "duplicate id 'p1'"), (8, "empty sentence_a")}
    assert all(m.file == str(path) for m in ds.malformed)
    with pytest.warns(MalformedRowsWarning, match="pairs.jsonl:2: bad JSON"):  # unreadable: of no known split
        dev = load_corpus(path, task="mrpc", split="dev", column_map={"id": "uid", "sentence_a": "s1",
                                                                      "sentence_b": "s2", "label": "y"})
    assert dev["id"] == ["p3"]


def test_column_map_and_argument_errors(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("premise,hypothesis,gold\nA.,B.,0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"column_map has unknown keys \['premise'\]"):
        load_corpus(path, task="rte", column_map={"premise": "premise"})
    with pytest.raises(ValueError, match=r"maps 'label' to 'lbl', but .* has no such column \(columns: premise, "
                                         r"hypothesis, gold\)"):
        load_corpus(path, task="rte", column_map={"label": "lbl"})
    with pytest.raises(ValueError, match="has no label column"):
        load_corpus(path, task="rte")
    # no task and integer labels: the names are needed (tasks are open, but labels must be named)
    with pytest.raises(ValueError, match=r"labels of task 'pairs' are numbers \[0\] with no names.*--labels"):
        load_corpus(path, column_map={"label": "gold"})
    with pytest.raises(ValueError, match="unknown task 'sst2': SST-2 is a single-sentence task"):
        load_corpus(path, task="sst2")
    with pytest.raises(ValueError, match="limit must be a positive int"):
        load_corpus("demo", limit=0)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_corpus(tmp_path / "missing.csv", task="rte")
    with pytest.raises(ValueError, match="unknown corpus source 'not a source!'"):
        load_corpus("not a source!")
    with pytest.raises(ValueError, match="GLUE test splits have no labels"):
        load_corpus(tmp_path, split="test")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no GLUE task files"):
        load_corpus(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"has no valid rows.*bad.jsonl:1: bad JSON"):
        load_corpus(bad, task="rte")


# --------------------------------------------------------------------------------------------------
# the hub (offline in tests)
# --------------------------------------------------------------------------------------------------


def test_hub_offline_fails_fast_with_a_clear_error():
    with pytest.raises(HubUnavailableError, match=r"glue/mrpc.*load_corpus\('demo'\)") as info:
        load_corpus("glue/mrpc", split="dev")
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, RuntimeError)
    with pytest.raises(ValueError, match="is the qnli task, but task='rte'"):
        load_corpus("glue/qnli", task="rte")
    with pytest.raises(ValueError, match="CoLA is a single-sentence task"):
        load_corpus("glue/cola")


def test_hub_rows_are_converted_like_the_files():
    """The conversion of a downloaded nyu-mll/glue split (its real features), without the network."""
    import datasets

    from attnflows_panel.corpus.hub import rows_from_hub_dataset
    from attnflows_panel.corpus.schema import Rows

    features = datasets.Features({"question": datasets.Value("string"), "sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                                  "idx": datasets.Value("int32")})
    d = datasets.Dataset.from_dict({"question": ["Who?", "What?"], "sentence": ["Ann did.", "Nothing here."],
                                    "label": [0, 1], "idx": [7, 8]}, features=features)
    rows = Rows(None)
    rows_from_hub_dataset(d, "qnli", "dev", rows, "nyu-mll/glue/qnli/validation")
    assert rows.cols["id"] == ["qnli-dev-7", "qnli-dev-8"]
    assert rows.cols["label_name"] == ["entailment", "not_entailment"]
    assert rows.cols["sentence_a"] == ["Who?", "What?"]


# --------------------------------------------------------------------------------------------------
# the bundled demo set
# --------------------------------------------------------------------------------------------------


def test_demo_set_size_balance_and_schema():
    assert demo_path().is_file()
    ds = load_corpus("demo")
    _check_schema(ds)
    assert len(ds) >= 300 and ds.malformed == []
    per_task = Counter(ds["task"])
    assert set(per_task) == {"mrpc", "rte", "qnli"}
    assert max(per_task.values()) - min(per_task.values()) <= 3  # a third each
    for task in per_task:
        sub = ds.filter(lambda r, t=task: r["task"] == t)
        labels = Counter(sub["label_name"])
        assert set(labels) == set(TASKS[task].labels)
        assert min(labels.values()) / max(labels.values()) >= 0.8  # roughly balanced
        splits = Counter(sub["split"])
        assert 0.15 <= splits["dev"] / len(sub) <= 0.25 and splits["train"] + splits["dev"] == len(sub)
        dev_labels = Counter(sub.filter(lambda r: r["split"] == "dev")["label_name"])
        assert len(dev_labels) == 2  # both labels in dev, so accuracy on it means something
    texts = list(zip(ds["sentence_a"], ds["sentence_b"], strict=True))
    assert len(set(texts)) == len(texts)


def test_demo_texts_look_like_their_tasks():
    def words(s):
        return len(s.split())

    mrpc = load_corpus("demo", task="mrpc")
    assert set(mrpc["task"]) == {"mrpc"}
    assert all(10 <= words(s) <= 35 for s in list(mrpc["sentence_a"]) + list(mrpc["sentence_b"]))
    rte = load_corpus("demo", task="rte")
    assert all(words(h) < words(p) for p, h in zip(rte["sentence_a"], rte["sentence_b"], strict=True))
    assert all(1 <= p.count(". ") + 1 <= 3 for p in rte["sentence_a"])
    qnli = load_corpus("demo", task="qnli", split="validation")
    assert set(qnli["split"]) == {"dev"}
    pairs = zip(qnli["sentence_a"], qnli["sentence_b"], strict=True)
    assert all(q.endswith("?") and not s.endswith("?") for q, s in pairs)
    assert all(words(s) >= 10 for s in qnli["sentence_b"])


def test_demo_limit_and_ids():
    ds = load_corpus("demo", task="rte", split="train", limit=7)
    assert len(ds) == 7 and set(ds["task"]) == {"rte"} and set(ds["split"]) == {"train"}
    assert all(i.startswith("demo-rte-") for i in ds["id"])
