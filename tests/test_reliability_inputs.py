"""Issue 26, "validate before any work": bad numbers, damaged weights, a model of another family, labels that
do not cover the data and an unreachable hub are refused in one line, before any training or indexing.

Each case runs the real command (``main([...])`` in this process, or a real process where the environment
must differ) on the tiny random BERT of conftest.py, and fails on the code before the issue.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnflows_panel.cli import main

REPO = Path(__file__).resolve().parents[1]


def _error_line(err: str, *fragments: str) -> str:
    """The single error line of stderr (no traceback, no flood of per-row lines)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refuses an option's value
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def nan_fine(tiny_bert_dirs, tmp_path_factory) -> Path:
    """The tiny fine-tuned model with one NaN and one infinity in its weights."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("nan-fine") / "fine"
    shutil.copytree(tiny_bert_dirs[1], out)
    weights = load_file(str(out / "model.safetensors"))
    weights["bert.encoder.layer.1.attention.self.query.weight"][0, 0] = float("nan")
    weights["classifier.weight"][0, 0] = float("inf")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    assert not torch.isfinite(load_file(str(out / "model.safetensors"))["classifier.weight"]).all()
    return out


@pytest.fixture(scope="module")
def gpt2_dir(tiny_bert_dirs, tmp_path_factory) -> Path:
    """A GPT-2 of exactly the tiny BERT's shape (2 layers, 4 heads, the same vocabulary) and tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    tok = AutoTokenizer.from_pretrained(tiny_bert_dirs[0])
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gpt2") / "gpt2"
    GPT2Model(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value", [
    ("--lr", "inf"), ("--lr", "nan"), ("--weight-decay", "nan"), ("--weight-decay", "inf"), ("--epochs", "inf"),
    ("--epochs", "nan"), ("--warmup-ratio", "nan"), ("--warmup-ratio", "inf"),
])
def test_finetune_refuses_non_finite_numbers(capsys, tiny_bert_dirs, tmp_path, option, value):
    out = tmp_path / "out"
    code, err = _run(capsys, "finetune", "--base", str(tiny_bert_dirs[0]), "--data", "demo", "--out", str(out),
                     "--max-steps", "1", option, value)
    assert code == 2
    _error_line(err, option, "finite")
    assert not out.exists()


@pytest.mark.parametrize("setting, value, fragment", [
    ("learning_rate", float("inf"), "learning_rate (--lr) must be a finite number"),
    ("learning_rate", 5.0, "learning_rate (--lr) must be > 0 and < 1"),
    ("weight_decay", float("nan"), "weight_decay (--weight-decay) must be a finite number"),
    ("weight_decay", -0.1, "weight_decay (--weight-decay) must be >= 0"),
    ("epochs", float("inf"), "epochs (--epochs) must be a finite number"),
    ("epochs", 1e9, "at most 1000"),
    ("warmup_ratio", float("nan"), "warmup_ratio (--warmup-ratio) must be a finite number"),
])
def test_finetune_api_refuses_bad_numbers_before_any_work(tiny_bert_dirs, tmp_path, setting, value, fragment):
    from attnflows_panel.finetune import finetune

    t0 = time.perf_counter()
    with pytest.raises(ValueError) as err:
        finetune(str(tiny_bert_dirs[0]), "demo", "mrpc", tmp_path / "out", max_steps=1, progress=False,
                 **{setting: value})
    assert fragment in str(err.value)
    assert time.perf_counter() - t0 < 5  # refused before the data or the model is loaded
    assert not (tmp_path / "out").exists()


def test_epochs_beyond_the_limit_is_one_line_not_an_overflow(capsys, tiny_bert_dirs, tmp_path):
    code, err = _run(capsys, "finetune", "--base", str(tiny_bert_dirs[0]), "--data", "demo", "--out",
                     str(tmp_path / "o"), "--epochs", "1e300")
    assert code == 1
    line = _error_line(err, "attnflows finetune: error: epochs (--epochs) must be > 0 and at most 1000")
    assert "unexpected" not in line and "OverflowError" not in line


def test_heads_report_refuses_a_non_finite_tau(capsys, tiny_bert_dirs):
    code, err = _run(capsys, "heads", "report", "--pretrained", str(tiny_bert_dirs[0]), "--finetuned",
                     str(tiny_bert_dirs[1]), "--data", "demo", "--limit", "4", "--tau", "nan")
    assert code == 2
    _error_line(err, "--tau", "finite")


# --------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------


def test_non_finite_weights_are_refused_at_load_naming_the_tensor(nan_fine, tiny_bert_dirs):
    from attnflows_panel.models import ModelPair, NonFiniteWeightsError

    with pytest.raises(NonFiniteWeightsError) as err:
        ModelPair.load(str(tiny_bert_dirs[0]), str(nan_fine), device="cpu")
    assert "'bert.encoder.layer.1.attention.self.query.weight'" in str(err.value)
    assert "and 1 more" in str(err.value)


@pytest.mark.parametrize("command", ["index", "heads", "finetune"])
def test_every_command_refuses_non_finite_weights(capsys, nan_fine, tiny_bert_dirs, tmp_path, command):
    if command == "index":
        argv = ["index", "build", "--pretrained", str(tiny_bert_dirs[0]), "--finetuned", str(nan_fine),
                "--data", "demo", "--limit", "4", "--out", str(tmp_path / "idx")]
    elif command == "heads":
        argv = ["heads", "report", "--pretrained", str(tiny_bert_dirs[0]), "--finetuned", str(nan_fine),
                "--data", "demo", "--limit", "4", "--json", str(tmp_path / "r.json")]
    else:  # fine-tuning a base with damaged weights
        argv = ["finetune", "--base", str(nan_fine), "--data", "demo", "--task", "mrpc", "--max-steps", "1",
                "--train-limit", "8", "--eval-limit", "4", "--out", str(tmp_path / "ft"), "--quiet"]
    code, err = _run(capsys, *argv)
    assert code == 1
    _error_line(err, "NaN or infinite weights", "bert.encoder.layer.1.attention.self.query.weight")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------------------------------
# a model of another family
# --------------------------------------------------------------------------------------------------


def test_a_gpt2_of_the_same_shape_is_no_counterpart_of_a_bert(capsys, gpt2_dir, tiny_bert_dirs, tmp_path):
    from attnflows_panel.models import ModelPair, ModelPairError

    with pytest.raises(ModelPairError, match=r"model_type 'bert' vs 'gpt2'"):
        ModelPair.load(str(tiny_bert_dirs[0]), str(gpt2_dir), device="cpu")
    for argv in (["heads", "report", "--data", "demo", "--limit", "4", "--json", str(tmp_path / "r.json")],
                 ["index", "build", "--data", "demo", "--limit", "4", "--out", str(tmp_path / "idx")]):
        code, err = _run(capsys, *argv[:2], "--pretrained", str(tiny_bert_dirs[0]), "--finetuned", str(gpt2_dir),
                         *argv[2:])
        assert code == 1
        _error_line(err, "different families", "'bert' vs 'gpt2'")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# --labels must cover the data's labels
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def three_label_csv(tmp_path) -> Path:
    path = tmp_path / "nli.csv"
    names = ("entailment", "neutral", "contradiction")
    rows = [f"The man {i} walks.,A person {i} moves.,{names[i % 3]}" for i in range(60)]
    path.write_text("sentence_a,sentence_b,label\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("labels, missing", [
    ("entailment,neutral", "missing 'contradiction' (20 rows)"),
    ("x,y", "missing 'contradiction' (20 rows), 'entailment' (20 rows), 'neutral' (20 rows)"),
])
def test_labels_that_do_not_cover_the_data_are_refused_in_one_line(capsys, tiny_bert_dirs, three_label_csv,
                                                                   tmp_path, labels, missing):
    out = tmp_path / "out"
    code, err = _run(capsys, "finetune", "--base", str(tiny_bert_dirs[0]), "--data", str(three_label_csv),
                     "--labels", labels, "--out", str(out), "--max-steps", "1", "--quiet")
    assert code == 1
    _error_line(err, "do not cover the labels of", missing)
    assert "malformed" not in err
    assert len(err.strip().splitlines()) <= 3, err  # no row-by-row flood
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# an unreachable hub
# --------------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("what", ["ModelPair.load", "finetune"])
def test_hub_names_fail_fast_without_network_with_the_offline_hint(tiny_bert_dirs, tmp_path, what):
    """A hub that does not answer (here: a loopback port where nothing listens) costs a few seconds and
    says to set HF_HUB_OFFLINE=1; transformers' own retries take about half a minute."""
    if what == "ModelPair.load":
        call = f"from attnflows_panel.models import ModelPair; ModelPair.load({str(tiny_bert_dirs[0])!r}, 'org/none')"
    else:
        call = ("from attnflows_panel.finetune import finetune; "
                f"finetune('org/none', 'demo', 'mrpc', {str(tmp_path / 'out')!r}, max_steps=1, progress=False)")
    code = ("import time, sys\n"
            "t0 = time.perf_counter()\n"
            "try:\n"
            f"    {call}\n"
            "except OSError as exc:\n"
            "    print(f'{time.perf_counter() - t0:.1f}'); print(exc); sys.exit(0)\n"
            "sys.exit('no error')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp_path / "hf-home"),
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, message = proc.stdout.strip().splitlines()[:2]
    assert float(seconds) < 10, (seconds, message)
    assert "HF_HUB_OFFLINE=1" in message and "'org/none'" in message
