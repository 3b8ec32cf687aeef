"""The hub path, exercised for real against a loopback Hugging Face hub (tests/hub_server.py).

The hub on 127.0.0.1 holds the packaged all-MiniLM-L6-v2 as ``org/minilm``, a MiniLM with an MRPC
classifier head as ``org/minilm-mrpc`` and a GLUE-style dataset repository ``nyu-mll/glue`` (MRPC
config: parquet files per split, the label names in the README's ``dataset_info``), the layout
``datasets`` reads from the real hub. Every command runs as a user runs it, in its own process with
``HF_ENDPOINT`` pointing at the loopback hub and a fresh ``HF_HOME``: the real download code of
``huggingface_hub``, ``transformers`` and ``datasets`` fetches, caches, and the same commands work
again offline afterwards (``HF_HUB_OFFLINE=1``, the hub's port closed), without a single request.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import LoopbackHub

REPO = Path(__file__).resolve().parents[1]
PRE, FINE = "org/minilm", "org/minilm-mrpc"

_README = b"""---
configs:
- config_name: mrpc
  data_files:
  - split: train
    path: mrpc/train-*
  - split: validation
    path: mrpc/validation-*
  - split: test
    path: mrpc/test-*
dataset_info:
- config_name: mrpc
  features:
  - name: sentence1
    dtype: string
  - name: sentence2
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': not_equivalent
          '1': equivalent
  - name: idx
    dtype: int32
---
# GLUE, MRPC only (a loopback copy for tests)
"""


def _glue_repo(glue_dir: Path) -> dict[str, bytes]:
    """nyu-mll/glue's layout for the MRPC config, from real MRPC dev pairs."""
    import datasets
    from datasets import ClassLabel, Features, Value

    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["not_equivalent", "equivalent"]), "idx": Value("int32")})
    lines = (glue_dir / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    rows = [line.split("\t") for line in lines]
    files = {"README.md": _README}
    for split, part, labelled in (("train", rows[:48], True), ("validation", rows[48:72], True),
                                  ("test", rows[72:80], False)):
        d = datasets.Dataset.from_dict(
            {"sentence1": [r[3] for r in part], "sentence2": [r[4] for r in part],
             "label": [int(r[0]) if labelled else -1 for r in part], "idx": list(range(len(part)))},
            features=features)
        buf = io.BytesIO()
        d.to_parquet(buf)
        files[f"mrpc/{split}-00000-of-00001.parquet"] = buf.getvalue()
    return files


@pytest.fixture(scope="module")
def hub(minilm_path, glue_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    fine = tmp_path_factory.mktemp("hub-models") / "minilm-mrpc"
    labels = ["not_equivalent", "equivalent"]
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path, num_labels=2, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model.save_pretrained(fine)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(fine)
    server = LoopbackHub()
    server.add_model(PRE, minilm_path)
    server.add_model(FINE, fine)
    server.add_dataset("nyu-mll/glue", _glue_repo(glue_dir))
    with server:
        yield server


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(hub: LoopbackHub, hf_home: Path, *, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
               TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_TELEMETRY="1")
    if offline:  # the hub is gone: offline mode, and its address no longer answers
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    else:
        env["HF_ENDPOINT"] = hub.url
    return env


def _run(env: dict, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "attnflows_panel", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _fetched(hub: LoopbackHub, since: int) -> list[str]:
    return [path for method, path in hub.requests[since:] if method == "GET" and "/resolve/" in path]


def test_model_pair_from_hub_names_then_offline(hub, hf_home):
    code = (
        "import json; from attnflows_panel.models import ModelPair; "
        f"pair = ModelPair.load({PRE!r}, {FINE!r}, device='cpu'); "
        "r = pair.run('The cat sat on the mat.', 'A cat was sitting on the mat.'); "
        "print(json.dumps({'fp': pair.fingerprint, 'label': r.finetuned.label, 'L': pair.num_layers}))"
    )
    start = len(hub.requests)
    online = json.loads(_run(_env(hub, hf_home), code=code).stdout.splitlines()[-1])
    fetched = _fetched(hub, start)
    assert any(p.startswith(f"/{PRE}/resolve/") and p.endswith("/model.safetensors") for p in fetched), fetched
    assert any(p.startswith(f"/{FINE}/resolve/") and p.endswith("/model.safetensors") for p in fetched), fetched
    assert any(p.endswith("/tokenizer.json") for p in fetched)
    assert online["L"] == 6 and online["label"] in ("not_equivalent", "equivalent")
    assert online["fp"]["pretrained"]["name"] == PRE and online["fp"]["finetuned"]["name"] == FINE
    snapshots = list((hf_home / "hub").glob("models--org--minilm/snapshots/*/model.safetensors"))
    assert len(snapshots) == 1  # cached where the hub library caches

    start = len(hub.requests)
    offline = json.loads(_run(_env(hub, hf_home, offline=True), code=code).stdout.splitlines()[-1])
    assert hub.requests[start:] == []  # not one request
    assert offline == online  # same weights (fingerprints hash the cached files), same prediction


def test_finetune_on_hub_data_from_a_hub_base_then_offline(hub, hf_home, tmp_path):
    args = ["finetune", "--base", PRE, "--data", "glue/mrpc", "--task", "mrpc", "--max-steps", "2",
            "--train-limit", "16", "--eval-limit", "8", "--quiet"]
    start = len(hub.requests)
    _run(_env(hub, hf_home), *args, "--out", str(tmp_path / "online"))
    fetched = _fetched(hub, start)
    assert any(p.startswith("/datasets/nyu-mll/glue/resolve/") and p.endswith("mrpc/train-00000-of-00001.parquet")
               for p in fetched), fetched
    metrics = json.loads((tmp_path / "online" / "metrics.json").read_text())
    assert metrics["n_train"] == 16 and metrics["n_eval"] == 8 and metrics["base"] == PRE
    assert metrics["split"]["eval"] in ("dev", "validation")

    start = len(hub.requests)
    _run(_env(hub, hf_home, offline=True), *args, "--out", str(tmp_path / "offline"))
    assert hub.requests[start:] == []
    again = json.loads((tmp_path / "offline" / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"] and again["final_train_loss"] == metrics["final_train_loss"]


def test_index_build_and_query_with_hub_names_then_offline(hub, hf_home, tmp_path):
    out = tmp_path / "idx"
    start = len(hub.requests)
    _run(_env(hub, hf_home), "index", "build", "--pretrained", PRE, "--finetuned", FINE, "--data", "glue/mrpc",
         "--task", "mrpc", "--split", "dev", "--limit", "12", "--tau", "0.15", "--shard-size", "8", "--out", str(out),
         "--no-progress")
    assert any("/datasets/nyu-mll/glue/" in p for p in _fetched(hub, start)) or any(
        "/datasets/nyu-mll/glue/" in p for _, p in hub.requests[start:])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"]["pretrained"]["name"] == PRE and manifest["count"] == 12
    assert manifest["data"] == "glue/mrpc"

    start = len(hub.requests)
    env = _env(hub, hf_home, offline=True)
    # a new pair needs the models the index names: loaded by hub name, from the cache
    proc = _run(env, "index", "query", "--index", str(out), "--a", "The cat sat.", "--b", "A cat was sitting.",
                "--k", "3", "--json")
    assert len(proc.stdout.splitlines()) == 3
    _run(env, "index", "verify", "--index", str(out))
    # and the same build, offline, from the cached dataset and models
    _run(env, "index", "build", "--pretrained", PRE, "--finetuned", FINE, "--data", "glue/mrpc", "--task", "mrpc",
         "--split", "dev", "--limit", "12", "--tau", "0.15", "--shard-size", "8", "--out", str(tmp_path / "idx2"),
         "--no-progress")
    assert hub.requests[start:] == []
    import numpy as np

    np.testing.assert_array_equal(np.load(out / "usage.npy"), np.load(tmp_path / "idx2" / "usage.npy"))

    # `attnflows serve` with hub names on that index, offline: the models come from the hub cache
    _serve_and_fetch(env, ["serve", "--pretrained", PRE, "--finetuned", FINE, "--index", str(out),
                           "--address", "127.0.0.1"], tmp_path / "serve.log")
    assert hub.requests[start:] == []


def _serve_and_fetch(env: dict, args: list[str], log: Path) -> None:
    """Start `attnflows ARGS --port P`, wait until the page answers 200, stop it."""
    import signal
    import time
    import urllib.error
    import urllib.request

    port = _closed_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "attnflows_panel", *args, "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=dict(env, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as resp:
                    assert resp.status == 200
                    assert "Attention Flows" in resp.read().decode()
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]
