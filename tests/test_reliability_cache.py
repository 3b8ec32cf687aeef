"""Issue 26, "leftovers": a prepared cache copied to another ``ATTNFLOWS_CACHE_DIR`` is recognised
(``prepared.json`` records paths relative to the cache), and every preparation removes the staging folders
and temporary files that killed runs left in the cache, not only the command that made them.

The tiny random BERT of conftest.py stands in for the packaged MiniLM (``defaults.pretrained_path``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnflows_panel import defaults
from attnflows_panel import prepare as prep


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory, tiny_bert_dirs) -> Path:
    """A cache prepared once (a one-step fine-tune of the tiny BERT); tests work on copies of it."""
    root = tmp_path_factory.mktemp("built-cache") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNFLOWS_CACHE_DIR", str(root))
        mp.setattr(defaults, "pretrained_path", lambda: str(tiny_bert_dirs[0]))
        assert prep.prepare(data="demo", max_steps=1, index=False, progress=False)["model"]["status"] == "built"
    return root


@pytest.fixture
def prepared_cache(built_cache, tmp_path, tiny_bert_dirs, monkeypatch) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(built_cache, root)
    monkeypatch.setenv("ATTNFLOWS_CACHE_DIR", str(root))
    monkeypatch.setattr(defaults, "pretrained_path", lambda: str(tiny_bert_dirs[0]))
    return root


def _no_training(*args, **kwargs):
    raise AssertionError("prepare() fine-tuned again although a complete model is in the cache")


def test_a_copied_cache_is_recognised(prepared_cache, tmp_path, monkeypatch):
    import attnflows_panel.finetune as ft

    manifest = json.loads((prepared_cache / "prepared.json").read_text())
    assert manifest["model_mrpc"]["path"] == "models/all-MiniLM-L6-v2-mrpc"  # relative to the cache
    copy = tmp_path / "elsewhere" / "cache"
    shutil.copytree(prepared_cache, copy)
    shutil.rmtree(prepared_cache)
    monkeypatch.setenv("ATTNFLOWS_CACHE_DIR", str(copy))
    assert prep.is_prepared()
    monkeypatch.setattr(ft, "finetune", _no_training)
    r = prep.prepare(index=False, progress=False)
    assert r["model"]["status"] == "reused"
    assert Path(r["finetuned"]) == copy / "models" / "all-MiniLM-L6-v2-mrpc"


def test_a_plain_run_removes_what_killed_runs_left(prepared_cache, monkeypatch):
    import attnflows_panel.finetune as ft

    models = prepared_cache / "models"
    stale = models / f".all-MiniLM-L6-v2-mrpc.partial-{_dead_pid()}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)  # a killed `demo --rebuild`'s staging folder
    stale_tmp = prepared_cache / f".prepared.json.tmp-{_dead_pid()}-89abcdef"
    stale_tmp.write_text("{")
    live = models / f".all-MiniLM-L6-v2-mrpc.partial-{os.getppid()}-0123abcd"  # a live process: kept
    live.mkdir()

    monkeypatch.setattr(ft, "finetune", _no_training)
    assert prep.prepare(index=False, progress=False)["model"]["status"] == "reused"
    assert not stale.exists() and not stale_tmp.exists()
    assert live.exists()
