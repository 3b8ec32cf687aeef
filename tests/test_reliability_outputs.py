"""Issue 26, "outputs checked after the work" and "replace only when the new is whole": a fine-tune whose
weights turn non-finite keeps nothing, a write that fails (a full disk, here a file-size limit) says so and
leaves the good copy, and finetune's swap never leaves the only good copy where the next run deletes it.

Tiny random BERT of conftest.py; each test fails on the code before the issue.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnflows_panel._io import remove_leftovers, remove_stale_staging, replace_folder
from attnflows_panel.finetune import TrainingDivergedError, finetune

REPO = Path(__file__).resolve().parents[1]
QUICK = {"max_steps": 2, "train_limit": 16, "eval_limit": 8, "batch_size": 8, "progress": False}


def _dead_pid() -> int:
    """The id of a process that has ended (a staging name of a killed run carries such an id)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _limited_file_size(limit: int):
    """For a child process: files may not grow beyond ``limit`` bytes (as on a disk that is full)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _cli(*args: str, limit: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    limited = None if limit is None else _limited_file_size(limit)
    return subprocess.run([sys.executable, "-m", "attnflows_panel", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd, preexec_fn=limited)


# --------------------------------------------------------------------------------------------------
# a fine-tune that diverges
# --------------------------------------------------------------------------------------------------


def test_weights_turning_non_finite_stop_the_run_and_keep_the_old_model(tiny_bert_dirs, tmp_path, monkeypatch):
    """The weights are checked after the last step: a model with an infinity in it is never saved, and the
    model that was in ``out`` stays as it was (a last optimizer step that overflows, made by a step hook)."""
    import attnflows_panel.finetune as ft

    out = tmp_path / "out"
    finetune(str(tiny_bert_dirs[0]), "demo", "mrpc", out, **QUICK)
    before = (out / "model.safetensors").read_bytes()

    real = ft._optimizer

    def overflowing(model, settings, total_steps):
        optimizer, scheduler, warmup = real(model, settings, total_steps)
        weight = model.classifier.weight

        def overflow(opt, args, kwargs):
            weight.data[0, 0] = float("inf")

        optimizer.register_step_post_hook(overflow)
        return optimizer, scheduler, warmup

    monkeypatch.setattr(ft, "_optimizer", overflowing)  # our own function, wrapped: no dependency is patched
    with pytest.raises(TrainingDivergedError, match=r"classifier\.weight.*nothing was written"):
        finetune(str(tiny_bert_dirs[0]), "demo", "mrpc", out, overwrite=True, seed=3, **{**QUICK, "max_steps": 1})
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --------------------------------------------------------------------------------------------------
# full disks
# --------------------------------------------------------------------------------------------------


def test_a_failed_model_write_is_reported_as_a_write_not_as_damaged_weights(tiny_bert_dirs, tmp_path):
    out = tmp_path / "out"
    proc = _cli("finetune", "--base", str(tiny_bert_dirs[0]), "--data", "demo", "--task", "mrpc", "--max-steps", "1",
                "--train-limit", "8", "--eval-limit", "4", "--out", str(out), "--quiet", limit=1 << 20)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("attnflows finetune: error: could not write the model to"), line
    assert "File too large" in line and "damaged" not in line
    assert list(tmp_path.iterdir()) == []  # no half-written model, no staging folder


def test_heads_report_json_survives_a_full_disk(tiny_bert_dirs, tmp_path):
    report = tmp_path / "report.json"
    args = ["heads", "report", "--pretrained", str(tiny_bert_dirs[0]), "--finetuned", str(tiny_bert_dirs[1]),
            "--data", "demo", "--limit", "4", "--no-progress", "--json", str(report)]
    from attnflows_panel.cli import main

    assert main(args) == 0  # the good report, written in this process
    good = report.read_bytes()
    assert json.loads(good)["n_samples"] == 4
    proc = _cli(*args[:-3], "--limit", "6", "--json", str(report), limit=len(good) // 2)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert report.read_bytes() == good  # the old report, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left


# --------------------------------------------------------------------------------------------------
# the swap of finetune's output folder
# --------------------------------------------------------------------------------------------------


def test_a_moved_aside_model_of_a_killed_run_is_put_back_not_deleted(tiny_bert_dirs, tmp_path):
    """A run killed between its two renames (the old system's swap) leaves the only good copy as
    ``.out.old-<pid>-*``: the next run puts it back and refuses to overwrite it without --overwrite."""
    out = tmp_path / "out"
    finetune(str(tiny_bert_dirs[0]), "demo", "mrpc", out, **QUICK)
    good = (out / "model.safetensors").read_bytes()
    aside = tmp_path / f".out.old-{_dead_pid()}-0123abcd"
    os.replace(out, aside)

    with pytest.raises(FileExistsError, match="not empty"):
        finetune(str(tiny_bert_dirs[0]), "demo", "mrpc", out, **QUICK)
    assert (out / "model.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staging_of_a_live_process_stays_and_of_a_dead_one_goes(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    dead = tmp_path / f".model.partial-{_dead_pid()}-0123abcd"
    live = tmp_path / f".model.partial-{os.getppid()}-0123abcd"
    tmp_file = tmp_path / f".metrics.json.tmp-{_dead_pid()}-89abcdef"
    for folder in (dead, live):
        folder.mkdir()
    tmp_file.write_text("{")
    assert set(remove_leftovers(tmp_path)) == {dead, tmp_file}
    assert live.exists() and target.exists()
    assert remove_stale_staging(target) == []


def test_replace_folder_always_leaves_a_whole_folder(tmp_path):
    target, new = tmp_path / "out", tmp_path / ".out.partial-1-00000000"
    target.mkdir()
    (target / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    replace_folder(new, target)
    assert (target / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert np.array_equal(sorted(os.listdir(target)), ["a"])
