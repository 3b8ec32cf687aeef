"""Fine-tuning (attnflows_panel.finetune), its CLI, and the offline default (attnflows_panel.defaults
for its configuration, attnflows_panel.prepare for building it).

Mechanics run on the tiny random BERT (`tiny_bert_dirs`, instant); behaviour (a real short fine-tune,
actual learning, the prepared offline default) on the packaged MiniLM with a handful of steps.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from attnflows_panel import defaults
from attnflows_panel import prepare as prep
from attnflows_panel.finetune import (
    POSITIVE_LABEL,
    TASK_DEFAULTS,
    OutputExistsError,
    classification_metrics,
    finetune,
    load_splits,
    select_subset,
)

SETTINGS_KEYS = {
    "epochs",
    "learning_rate",
    "batch_size",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "seed",
    "max_steps",
    "train_limit",
    "eval_limit",
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Train single-threaded here: on a few shared cores, two torch threads per process spin against
    each other (a tiny-BERT step measured 6x slower with 2 threads than with 1 under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(tiny_bert_dirs) -> str:
    return str(tiny_bert_dirs[0])


def _quick(**kw):
    """Arguments of a run that takes about a second on the tiny BERT."""
    return {"max_steps": 2, "train_limit": 16, "eval_limit": 8, "batch_size": 8, "progress": False, **kw}


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _write_csv(path: Path, rows: list[tuple[str, str, int]], header=("premise", "hypothesis", "gold")) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------------
# a real short fine-tune
# --------------------------------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.glue
def test_short_minilm_finetune_on_glue_mrpc_writes_loadable_folder(minilm_path, glue_dir, tmp_path):
    """A few steps on an MRPC subset: a normal HF folder whose saved weights give metrics.json's numbers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "minilm-mrpc"
    metrics = finetune(
        str(minilm_path), str(glue_dir / "MRPC"), "mrpc", str(out),
        max_steps=2, train_limit=32, eval_limit=24, batch_size=8, seed=3, progress=False,
    )
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "tokenizer.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    assert metrics["task"] == "mrpc" and metrics["data"] == str(glue_dir / "MRPC")
    assert metrics["base"] == str(minilm_path)
    assert metrics["n_train"] == 32 and metrics["n_eval"] == 24 and metrics["steps"] == 2
    assert metrics["split"]["train"] == "train" and metrics["split"]["eval"] == "dev"
    assert metrics["f1_label"] == "equivalent" == POSITIVE_LABEL["mrpc"]
    assert set(metrics["settings"]) >= SETTINGS_KEYS
    assert metrics["settings"]["seed"] == 3 and metrics["settings"]["max_steps"] == 2
    assert metrics["settings"]["learning_rate"] == TASK_DEFAULTS["mrpc"].learning_rate  # default kept
    assert metrics["torch_version"] == torch.__version__ and metrics["duration_seconds"] > 0

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager").eval()
    assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    assert model.config.label2id == {"not_equivalent": 0, "equivalent": 1}

    # the saved model reproduces the reported accuracy on the same (seeded) eval subset
    _, dev, _ = load_splits(str(glue_dir / "MRPC"), "mrpc", seed=3)
    dev = select_subset(dev, 24, 3 + 1)
    enc = tok(list(dev["sentence_a"]), list(dev["sentence_b"]), truncation=True, max_length=128, padding=True,
              return_tensors="pt")
    with torch.inference_mode():
        preds = model(**enc).logits.argmax(-1).numpy()
    labels = np.asarray(dev["label"])
    assert (preds == labels).mean() == pytest.approx(metrics["accuracy"])
    assert metrics["confusion"]["rows_true_cols_pred"] == [
        [int(((labels == t) & (preds == p)).sum()) for p in (0, 1)] for t in (0, 1)
    ]


@pytest.mark.real_model
def test_finetune_learns_a_learnable_task(minilm_path, tmp_path):
    """From a CSV with a column map: pairs that repeat a sentence vs pairs whose second sentence is
    about something else entirely are told apart after 15 steps (data seeds 0, 1, 2 gave 1.0, 0.85,
    1.0 eval accuracy; chance is 0.5)."""
    rng = np.random.default_rng(0)
    people = ["The cat", "A young doctor", "My neighbour", "Our team", "A tall man", "Her brother", "The baker"]
    acts = ["visits", "paints", "repairs", "watches", "sells", "follows", "builds"]
    things = ["the window", "a blue house", "the old bridge", "the harbour", "a red bicycle", "the garden"]
    weather = ["Heavy rain", "Cold wind", "Thick fog", "Bright sunshine", "Light snow", "A storm"]
    when = ["is expected tomorrow", "fell overnight", "covered the coast", "returns on Monday", "ended at noon"]

    rows = []
    for i in range(96):
        a = f"{rng.choice(people)} {rng.choice(acts)} {rng.choice(things)}."
        if i % 2:
            rows.append((a, a, "entailment"))
        else:
            rows.append((a, f"{rng.choice(weather)} {rng.choice(when)}.", "not_entailment"))
    train = _write_csv(tmp_path / "train.csv", rows)
    metrics = finetune(
        str(minilm_path), str(train), "rte", tmp_path / "out",
        column_map={"sentence_a": "premise", "sentence_b": "hypothesis", "label": "gold"},
        epochs=3, batch_size=16, learning_rate=1e-4, seed=0, progress=False,
    )
    # a file without splits is split 80/20 (seeded); all 96 rows are used
    assert metrics["n_train"] + metrics["n_eval"] == 96 and "80%" in metrics["split"]["train"]
    assert metrics["steps"] == 15
    assert metrics["accuracy"] >= 0.8, metrics
    assert metrics["f1_label"] == "entailment" and metrics["f1"] >= 0.8


# --------------------------------------------------------------------------------------------------
# data sources and splits
# --------------------------------------------------------------------------------------------------


@pytest.mark.glue
def test_qnli_dev_only_folder_is_split_deterministically(glue_dir):
    tr, ev, info = load_splits(str(glue_dir / "QNLI"), "qnli", seed=7)
    assert "dev" in info["train"] and "seed 7" in info["train"] and "dev" in info["eval"]
    assert len(tr) + len(ev) == 5463 and abs(len(tr) / 5463 - 0.8) < 0.01
    assert not set(tr["id"]) & set(ev["id"])
    # stratified: each part keeps the label balance
    share = lambda ds: np.mean(np.asarray(ds["label"]) == 0)  # noqa: E731
    assert abs(share(tr) - share(ev)) < 0.02
    tr2, ev2, _ = load_splits(str(glue_dir / "QNLI"), "qnli", seed=7)
    assert tr2["id"] == tr["id"] and ev2["id"] == ev["id"]
    tr3, _, _ = load_splits(str(glue_dir / "QNLI"), "qnli", seed=8)
    assert tr3["id"] != tr["id"]


@pytest.mark.glue
def test_finetune_on_dev_only_qnli_records_the_split(tiny_bert_dirs, glue_dir, tmp_path):
    m = finetune(_tiny(tiny_bert_dirs), str(glue_dir / "QNLI"), "qnli", tmp_path / "q", **_quick())
    assert m["n_train"] == 16 and m["n_eval"] == 8
    assert "80%" in m["split"]["train"] and "no separate train/dev" in m["split"]["note"]
    assert m["f1_label"] == "entailment"
    assert json.loads((tmp_path / "q" / "metrics.json").read_text())["split"] == m["split"]


def test_finetune_on_demo_writes_loadable_folder(tiny_bert_dirs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from attnflows_panel.corpus import load_corpus

    m = finetune(_tiny(tiny_bert_dirs), "demo", "qnli", tmp_path / "demo", **_quick(train_limit=None, eval_limit=None))
    n_demo = len(load_corpus("demo", task="qnli"))
    assert m["data"] == "demo" and m["n_train"] + m["n_eval"] == n_demo and m["n_eval"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "demo")
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert m["settings"]["max_length"] == 64  # capped at the tiny model's positions


def test_progress_bar_and_status_lines(tiny_bert_dirs, tmp_path, capsys, caplog):
    """Status lines go through logging (logger attnflows_panel.finetune), the bar to stderr."""
    caplog.set_level(logging.DEBUG, logger="attnflows_panel")
    finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "p", **_quick(progress=True))
    err = capsys.readouterr().err
    assert "fine-tune mrpc" in err and "2/2" in err  # the tqdm training bar
    info = [r.getMessage() for r in caplog.records
            if r.name == "attnflows_panel.finetune" and r.levelno == logging.INFO]
    assert "train: 16 pairs (train); eval: 8 pairs (dev)" in info
    assert "newly initialised (seed 42): classifier.bias, classifier.weight" in info
    assert any("eval accuracy" in m for m in info) and any(str(tmp_path / "p") in m for m in info)
    caplog.clear()
    finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "q", **_quick())
    assert capsys.readouterr().err == ""  # progress=False: no bar, and status lines only at DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_status_lines_reach_stderr_without_logging_configured(tiny_bert_dirs, tmp_path):
    """A plain Python process (no logging set up) that asks for progress sees the status lines."""
    import subprocess
    import sys

    code = (
        "from attnflows_panel.finetune import finetune; import sys; "
        f"finetune({_tiny(tiny_bert_dirs)!r}, 'demo', 'mrpc', {str(tmp_path / 'p')!r}, max_steps=1, "
        "train_limit=8, eval_limit=4, progress=True)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[attnflows finetune] train: 8 pairs (train); eval: 4 pairs (dev)" in proc.stderr


def test_same_seed_same_weights_other_seed_other_weights(tiny_bert_dirs, tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        runs[name] = finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / name, seed=seed, **_quick())
    wa, wb, wc = (_weights(tmp_path / n) for n in "abc")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert runs["a"]["accuracy"] == runs["b"]["accuracy"]
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)


def test_eval_each_epoch_records_history_without_changing_training(tiny_bert_dirs, tmp_path):
    kw = _quick(max_steps=None, epochs=3, train_limit=24, eval_limit=8, seed=1)
    plain = finetune(_tiny(tiny_bert_dirs), "demo", "rte", tmp_path / "plain", **kw)
    watched = finetune(_tiny(tiny_bert_dirs), "demo", "rte", tmp_path / "watched", eval_each_epoch=True, **kw)
    assert plain["history"] is None
    assert [h["epoch"] for h in watched["history"]] == [1, 2, 3]
    assert [h["step"] for h in watched["history"]] == [3, 6, 9]
    assert watched["history"][-1]["accuracy"] == watched["accuracy"] == plain["accuracy"]
    wp, ww = _weights(tmp_path / "plain"), _weights(tmp_path / "watched")
    assert all(np.array_equal(wp[k], ww[k]) for k in wp)


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(labels, preds, ["entailment", "not_entailment"], "entailment")
    # entailment: tp 1, fp 1, fn 1 -> F1 0.5; not_entailment: tp 2, fp 1, fn 1 -> 4/6
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(0.5) and m["f1_per_label"]["not_entailment"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["majority_accuracy"] == pytest.approx(0.6)
    assert m["confusion"]["rows_true_cols_pred"] == [[1, 1], [1, 2]]


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def test_unknown_task(tiny_bert_dirs, tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'sst2'.*mrpc"):
        finetune(_tiny(tiny_bert_dirs), "demo", "sst2", tmp_path / "o", **_quick())
    assert not (tmp_path / "o").exists()


def test_missing_base_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="base model folder not found"):
        finetune(str(tmp_path / "no-such-model"), "demo", "mrpc", tmp_path / "o", **_quick())
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        finetune(str(tmp_path / "empty-model"), "demo", "mrpc", tmp_path / "o", **_quick())


def test_hub_base_that_is_not_available_offline(tmp_path):
    # HF_HUB_OFFLINE is set for the test session: the hub path fails fast with a clear message
    with pytest.raises(FileNotFoundError, match="could not load base model 'attnflows-no-such-org/no-such-model'"):
        finetune("attnflows-no-such-org/no-such-model", "demo", "mrpc", tmp_path / "o", **_quick())


def test_empty_dataset(tiny_bert_dirs, tmp_path):
    plain = ("sentence1", "sentence2", "label")
    header_only = _write_csv(tmp_path / "empty.csv", [], header=plain)
    with pytest.raises(ValueError, match="no valid rows|no labelled"):
        finetune(_tiny(tiny_bert_dirs), str(header_only), "rte", tmp_path / "o", **_quick())
    too_few = _write_csv(tmp_path / "three.csv", [("a b", "a b", 0), ("c d", "e f", 1), ("g", "g", 0)], header=plain)
    with pytest.raises(ValueError, match="only 3 labelled RTE example"):
        finetune(_tiny(tiny_bert_dirs), str(too_few), "rte", tmp_path / "o", **_quick())
    assert not (tmp_path / "o").exists()


def test_missing_or_unknown_data_source(tiny_bert_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        finetune(_tiny(tiny_bert_dirs), str(tmp_path / "nope.csv"), "mrpc", tmp_path / "o", **_quick())
    with pytest.raises(ValueError, match="unknown corpus source"):
        finetune(_tiny(tiny_bert_dirs), "glue mrpc please", "mrpc", tmp_path / "o", **_quick())
    assert not (tmp_path / "o").exists()


def test_bad_settings(tiny_bert_dirs, tmp_path):
    with pytest.raises(ValueError, match=r"learning_rate \(--lr\) must be > 0"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "o", **_quick(learning_rate=0))
    with pytest.raises(ValueError, match="max_steps must be a whole number >= 1"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "o", **_quick(max_steps=0))
    with pytest.raises(ValueError, match="train_limit must be a whole number >= 1"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "o", **_quick(train_limit=-4))
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "o", device="gpu0", **_quick())


def test_refuses_non_empty_out_unless_overwrite(tiny_bert_dirs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty.*overwrite") as err:
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", out, **_quick())
    assert isinstance(err.value, FileExistsError)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "file", **_quick())

    finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", out, overwrite=True, **_quick())
    assert not (out / "notes.txt").exists() and (out / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]  # no staging/backup left


def test_failure_leaves_no_half_written_folder(tiny_bert_dirs, tmp_path, monkeypatch):
    import attnflows_panel.finetune as ft

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(ft, "classification_metrics", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "out", **_quick())
    assert list(tmp_path.iterdir()) == []

    # a failure while saving: the staging folder is removed and an existing model is kept as it was
    monkeypatch.undo()
    finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "out", **_quick())
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    monkeypatch.setattr(ft, "_model_card", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "out", overwrite=True, seed=9, **_quick())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


@pytest.mark.glue
def test_cli_finetune(tiny_bert_dirs, glue_dir, tmp_path, capsys):
    from attnflows_panel.cli import main

    out = tmp_path / "cli-rte"
    argv = [
        "finetune", "--base", _tiny(tiny_bert_dirs), "--data", str(glue_dir / "RTE"), "--task", "RTE",
        "--out", str(out), "--epochs", "2", "--lr", "3e-4", "--batch-size", "4", "--max-steps", "3",
        "--train-limit", "12", "--eval-limit", "6", "--seed", "11", "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "eval accuracy" in printed and "F1(entailment)" in printed
    m = json.loads((out / "metrics.json").read_text())
    s = m["settings"]
    assert (m["task"], m["n_train"], m["n_eval"], m["steps"]) == ("rte", 12, 6, 3)
    assert (s["epochs"], s["learning_rate"], s["batch_size"], s["seed"], s["max_steps"]) == (2, 3e-4, 4, 11, 3)

    # non-empty output: a one-line error and status 1; --overwrite replaces it
    assert main(argv) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cli_bad_input(tmp_path, capsys):
    from attnflows_panel.cli import main

    assert main(["finetune", "--data", "demo", "--task", "mrpc"]) == 1
    assert "missing --out" in capsys.readouterr().err
    assert main(["finetune", "--base", str(tmp_path / "nope"), "--data", "demo", "--task", "mrpc",
                 "--out", str(tmp_path / "o")]) == 1
    assert "base model folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "--data", "demo", "--task", "sst2", "--out", str(tmp_path / "o")])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "--data", "demo", "--task", "mrpc", "--out", str(tmp_path / "o"), "--lr", "-1"])
    assert "expected a number > 0" in capsys.readouterr().err
    assert main(["finetune", "--show-defaults"]) == 0
    shown = capsys.readouterr().out
    assert all(f"{t}: epochs {TASK_DEFAULTS[t].epochs}" in shown for t in TASK_DEFAULTS)


# --------------------------------------------------------------------------------------------------
# defaults: cache folder, data source order, hub reachability
# --------------------------------------------------------------------------------------------------


def test_cache_dir(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv("ATTNFLOWS_CACHE_DIR", str(tmp_path / "c"))
    assert defaults.cache_dir() == tmp_path / "c"
    assert defaults.finetuned_path() == tmp_path / "c" / "models" / "all-MiniLM-L6-v2-mrpc"
    assert defaults.index_path() == tmp_path / "c" / "index" / "demo"
    monkeypatch.delenv("ATTNFLOWS_CACHE_DIR")
    assert defaults.cache_dir() == Path(platformdirs.user_cache_dir("attnflows_panel"))
    assert (Path(defaults.pretrained_path()) / "config.json").exists()


class _Connections:
    """Stands in for the socket connect: records each call and fails or succeeds on demand."""

    def __init__(self, ok: bool):
        self.ok, self.calls = ok, []

    def __call__(self, host, port, timeout):
        self.calls.append((host, port, timeout))
        if not self.ok:
            raise TimeoutError("timed out")


def test_data_source_order(monkeypatch, tmp_path, glue_dir):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    up = _Connections(ok=True)
    monkeypatch.setattr(prep, "_connect", up)
    monkeypatch.setenv("ATTNFLOWS_GLUE_DIR", str(glue_dir))

    # 1. --data wins over everything
    c = prep.choose_data_source("some.csv")
    assert (c["source"], c["kind"]) == ("some.csv", "argument")
    # 2. then the GLUE folder named by the environment (its MRPC subfolder)
    c = prep.choose_data_source()
    assert (c["source"], c["kind"]) == (str(glue_dir / "MRPC"), "glue_env")
    assert up.calls == []  # the hub is not even probed
    # 3. then the hub, when reachable
    monkeypatch.setenv("ATTNFLOWS_GLUE_DIR", str(tmp_path))  # no MRPC folder there
    c = prep.choose_data_source()
    assert (c["source"], c["kind"]) == ("glue/mrpc", "hub")
    assert "has no MRPC folder" in c["skipped"]
    assert up.calls == [("huggingface.co", 443, defaults.HUB_TIMEOUT_S)]
    # 4. else the bundled demo set
    monkeypatch.delenv("ATTNFLOWS_GLUE_DIR")
    monkeypatch.setattr(prep, "_connect", _Connections(ok=False))
    c = prep.choose_data_source()
    assert (c["source"], c["kind"]) == ("demo", "demo")
    assert "not reachable" in c["skipped"]


def test_offline_env_skips_the_hub_without_traffic(monkeypatch):
    calls = _Connections(ok=True)
    monkeypatch.setattr(prep, "_connect", calls)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.setenv(var, "1")
        assert prep.hub_reachable() is False
    assert calls.calls == []


def test_unreachable_hub_is_decided_in_seconds(monkeypatch):
    """The probe is a single connect with a ~2 s timeout; a timeout means 'unreachable', at once."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    seen = []

    def fake_create_connection(address, timeout=None, *args, **kwargs):
        seen.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", fake_create_connection)
    t0 = time.perf_counter()
    assert prep.hub_reachable() is False
    assert time.perf_counter() - t0 < 1.0
    assert seen == [(("huggingface.co", 443), defaults.HUB_TIMEOUT_S)]
    assert 0 < defaults.HUB_TIMEOUT_S <= 3


def test_hub_probe_against_local_endpoints(monkeypatch):
    """Real sockets, localhost only: a listening HF_ENDPOINT is reachable, a closed port is not."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepter = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
    accepter.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert prep.hub_reachable() is True
    accepter.join(5)
    server.close()  # the port is closed now: connection refused
    assert prep.hub_reachable() is False


# --------------------------------------------------------------------------------------------------
# prepare.prepare
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ATTNFLOWS_CACHE_DIR", str(root))
    return root


def test_prepare_builds_once_then_reuses(cache, tiny_bert_dirs, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="attnflows_panel")
    monkeypatch.setattr(defaults, "pretrained_path", lambda: _tiny(tiny_bert_dirs))
    r = prep.prepare(data="demo", max_steps=2, index=False)
    assert r["model"]["status"] == "built"
    assert r["data_source"]["kind"] == "argument" and r["data_source"]["source"] == "demo"
    assert "data source: 'demo' (given with --data)" in caplog.messages
    caplog.clear()
    fine = defaults.finetuned_path()
    assert Path(r["finetuned"]) == fine and (fine / "model.safetensors").exists()
    m = json.loads((fine / "metrics.json").read_text())
    assert m["metadata"]["data_source"]["source"] == "demo" and m["steps"] == 2
    assert m["settings"]["epochs"] == defaults.DEMO_SETTINGS["epochs"]  # the small demo set trains longer
    assert m["settings"]["learning_rate"] == defaults.DEMO_SETTINGS["learning_rate"]
    assert m["settings"]["batch_size"] == defaults.DEMO_SETTINGS["batch_size"]
    assert prep.is_prepared()
    manifest = json.loads(defaults.manifest_path().read_text())
    assert manifest["model_mrpc"]["data_source"]["kind"] == "argument"

    # second call: reused, no training
    import attnflows_panel.finetune as ft

    def no_training(*a, **k):
        raise AssertionError("prepare() fine-tuned again although the model was complete")

    monkeypatch.setattr(ft, "finetune", no_training)
    r2 = prep.prepare(max_steps=2, index=False)
    assert r2["model"]["status"] == "reused" and r2["finetuned"] == r["finetuned"]
    assert any("reusing" in m for m in caplog.messages)


def test_prepare_redoes_a_half_finished_preparation(cache, tiny_bert_dirs, monkeypatch):
    monkeypatch.setattr(defaults, "pretrained_path", lambda: _tiny(tiny_bert_dirs))
    # a model folder without a manifest entry (e.g. interrupted before the manifest was written)
    prep.prepare(data="demo", max_steps=1, index=False, progress=False)
    defaults.manifest_path().unlink()
    assert not prep.is_prepared()
    assert prep.prepare(data="demo", max_steps=1, index=False, progress=False)["model"]["status"] == "built"
    # weights changed or missing behind the manifest's back
    (defaults.finetuned_path() / "model.safetensors").unlink()
    assert not prep.is_prepared()
    assert prep.prepare(data="demo", max_steps=1, index=False, progress=False)["model"]["status"] == "built"
    # a corrupt manifest is not trusted either
    defaults.manifest_path().write_text("{not json")
    assert prep.prepare(data="demo", max_steps=1, index=False, progress=False)["model"]["status"] == "built"
    assert prep.is_prepared()


def test_prepare_rebuilds_when_explicit_data_differs(cache, tiny_bert_dirs, monkeypatch, glue_dir):
    monkeypatch.setattr(defaults, "pretrained_path", lambda: _tiny(tiny_bert_dirs))
    prep.prepare(data="demo", max_steps=1, index=False, progress=False)
    r = prep.prepare(data=str(glue_dir / "MRPC"), max_steps=1, train_limit=16, index=False, progress=False)
    assert r["model"]["status"] == "built" and r["data_source"]["source"] == str(glue_dir / "MRPC")
    settings = json.loads((defaults.finetuned_path() / "metrics.json").read_text())["settings"]
    assert settings["epochs"] == TASK_DEFAULTS["mrpc"].epochs  # GLUE data: the CLI's defaults
    assert settings["learning_rate"] == TASK_DEFAULTS["mrpc"].learning_rate
    # no --data: whatever was built is reused, even though another source would be chosen now
    assert prep.prepare(max_steps=1, index=False, progress=False)["model"]["status"] == "reused"


def test_prepare_falls_back_to_demo_when_the_hub_fails(cache, tiny_bert_dirs, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="attnflows_panel")
    monkeypatch.setattr(defaults, "pretrained_path", lambda: _tiny(tiny_bert_dirs))
    monkeypatch.delenv("ATTNFLOWS_GLUE_DIR", raising=False)
    monkeypatch.setattr(prep, "hub_reachable", lambda timeout=defaults.HUB_TIMEOUT_S: True)
    # HF_DATASETS_OFFLINE stays set, so loading glue/mrpc fails offline: the fallback must catch it
    r = prep.prepare(max_steps=1, index=False)
    assert r["data_source"]["kind"] == "demo" and "fallback" in r["data_source"]["reason"]
    assert any("using the demo set" in m for m in caplog.messages)
    m = json.loads((defaults.finetuned_path() / "metrics.json").read_text())
    assert m["data"] == "demo" and m["metadata"]["data_source"]["kind"] == "demo"


def test_prepare_unknown_task(cache):
    with pytest.raises(ValueError, match="unknown task 'cola'"):
        prep.prepare(task="cola", progress=False)
    assert not defaults.manifest_path().exists()


@pytest.mark.real_model
def test_the_offline_default_fine_tune_learns_the_demo_task(cache):
    """What `attnflows demo` shows first: the packaged MiniLM fine-tuned on the bundled demo set with
    DEMO_SETTINGS, in full (about 40 s). Measured 0.85 on the 20 MRPC-style dev pairs (chance: 0.5);
    with GLUE's batch 32 it was 0.55, so this guards the settings, not just the wiring."""
    r = prep.prepare(data="demo", index=False, progress=False)
    metrics = json.loads((defaults.finetuned_path() / "metrics.json").read_text())
    assert r["model"]["status"] == "built" and metrics["n_eval"] == 20
    assert metrics["accuracy"] >= 0.75, metrics["history"]
    assert metrics["steps"] == 15 * 6  # 82 pairs in batches of 16: 6 steps per epoch


def test_prepare_real_minilm_on_demo_with_index(cache):
    """The offline default end to end on the packaged MiniLM (2 steps) and a demo index; then reuse."""
    from attnflows_panel.index import SignatureIndex
    from attnflows_panel.models import ModelPair

    r = prep.prepare(data="demo", max_steps=2, index_limit=24, progress=False)
    assert r["model"]["status"] == "built" and r["pretrained"] == defaults.pretrained_path()
    assert r["index"]["status"] == "built" and Path(r["index"]["path"]) == defaults.index_path("demo")
    assert prep.is_prepared(with_index=True)
    pair = ModelPair.load()  # both omitted: the offline default just prepared
    out = pair.run("The cat sat on the mat.", "A cat was sitting on the mat.")
    assert out.finetuned.label in {"not_equivalent", "equivalent"}
    idx = SignatureIndex.open(defaults.index_path("demo"), pair=pair)  # checked against the pair
    assert len(idx.metadata) == 24

    r2 = prep.prepare(index_limit=24, progress=False)
    assert (r2["model"]["status"], r2["index"]["status"]) == ("reused", "reused")
    # the index follows the model: a rebuilt model makes the old index stale
    manifest = json.loads(defaults.manifest_path().read_text())
    manifest["index_demo"]["finetuned_sha256"] = "0" * 64
    defaults.manifest_path().write_text(json.dumps(manifest))
    assert not prep.is_prepared(with_index=True)


# --------------------------------------------------------------------------------------------------
# tidy writes: staging folders of killed runs, permissions, a rebuild that fails midway
# --------------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_folders_of_killed_runs_are_removed(tiny_bert_dirs, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "model"
    out.mkdir()  # a model is in place: a dead run's moved-aside copy of an older one can go (if `out` were
    (out / "model.safetensors").write_bytes(b"previous")  # missing, that copy would be put back instead)
    dead = tmp_path / f".model.partial-{_dead_pid()}-0badf00d"
    old_style = tmp_path / ".model.partial-k3j4h5g6"  # tempfile.mkdtemp's names, before pids were recorded
    old_copy = tmp_path / f".model.old-{_dead_pid()}-12345678"
    for d in (dead, old_style, old_copy):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half written")
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = tmp_path / f".model.partial-{live_proc.pid}-abcdef12"  # a run still writing: left alone
        live.mkdir()
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", out, overwrite=True, **_quick())
        assert not dead.exists() and not old_style.exists() and not old_copy.exists()
        assert live.exists()
        assert (out / "model.safetensors").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name])
    finally:
        live_proc.kill()
        live_proc.wait()


def test_model_folder_is_readable_by_other_users(tiny_bert_dirs, tmp_path):
    import os
    import stat

    before = os.umask(0o022)
    try:
        finetune(_tiny(tiny_bert_dirs), "demo", "mrpc", tmp_path / "m", **_quick())
    finally:
        os.umask(before)
    mode = stat.S_IMODE((tmp_path / "m").stat().st_mode)
    assert mode == 0o755, oct(mode)  # what mkdir gives under umask 022, like any HF model folder (not 0700)
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, (f.name, oct(f.stat().st_mode))


def test_rebuild_keeps_the_old_model_registered_until_the_new_one_is_complete(cache, tiny_bert_dirs, monkeypatch):
    """`attnflows demo --rebuild` that crashes midway: the old model is still registered and reused."""
    import attnflows_panel.finetune as ft

    monkeypatch.setattr(defaults, "pretrained_path", lambda: _tiny(tiny_bert_dirs))
    first = prep.prepare(data="demo", max_steps=1, index=False, progress=False)
    weights = (defaults.finetuned_path() / "model.safetensors").read_bytes()
    real = ft.finetune

    with pytest.MonkeyPatch.context() as mp:

        def crash(*args, **kwargs):
            # the real fine-tune runs into its staging folder, then the machine "dies" before it finishes
            def dying(*a, **k):
                raise KeyboardInterrupt("killed")

            mp.setattr(ft, "_model_card", dying)
            return real(*args, **kwargs)

        mp.setattr(ft, "finetune", crash)
        with pytest.raises(KeyboardInterrupt):
            prep.prepare(data="demo", max_steps=1, index=False, progress=False, force=True)
    assert prep.is_prepared()  # still registered, weights intact
    assert (defaults.finetuned_path() / "model.safetensors").read_bytes() == weights
    manifest = json.loads(defaults.manifest_path().read_text())
    assert manifest["model_mrpc"]["weights_sha256"] == first["model"]["weights_sha256"]
    assert prep.prepare(max_steps=1, index=False, progress=False)["model"]["status"] == "reused"
    assert not list(defaults.finetuned_path().parent.glob(".*partial*"))  # the staging folder went too


def test_prepare_serialises_concurrent_runs_with_a_file_lock(cache):
    """The lock is filelock's (no hand-written fcntl): a second holder waits, with a timeout it gives up."""
    from filelock import Timeout

    with prep._lock(), pytest.raises(Timeout), prep._lock().__class__(str(cache / ".prepare.lock"), timeout=0.2):
        pass
