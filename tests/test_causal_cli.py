"""``attnflows causal inspect``: a decoder pair from the loopback hub, and bad input.

The hub run is a real process with ``HF_ENDPOINT`` at tests/hub_server.py's loopback hub and a fresh
``HF_HOME``: transformers downloads a tiny Qwen2 base and its few-step "instruct" fine-tune, and the
written graph equals the one computed in this process from the folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnflows_panel.causal import CausalPair
from attnflows_panel.causal_view import analysis_dict
from attnflows_panel.cli import main
from causal_models import instruct_from, write_family
from hub_server import LoopbackHub

REPO = Path(__file__).resolve().parents[1]
PRE, FINE = "org/tiny-qwen2", "org/tiny-qwen2-instruct"
CHAT = json.dumps([{"role": "system", "content": "You are helpful."},
                   {"role": "user", "content": "What is the capital of France?"}])


@pytest.fixture(scope="module")
def qwen_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_cli")
    base = write_family("qwen2", root / "base")
    return base, instruct_from(base, root / "instruct")


def _env(hf_home: Path, endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _inspect(env: dict, out: Path) -> str:
    cmd = [sys.executable, "-m", "attnflows_panel", "causal", "inspect", "--pretrained", PRE, "--finetuned", FINE,
           "--chat", CHAT, "--generate", "3", "--tau", "0.1", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_inspect_a_pair_from_the_hub(qwen_dirs, tmp_path):
    hub = LoopbackHub()
    hub.add_model(PRE, qwen_dirs[0])
    hub.add_model(FINE, qwen_dirs[1])
    with hub:
        stdout = _inspect(_env(tmp_path / "hf", hub.url), tmp_path / "online.json")
        fetched = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
    assert any(p.endswith("model.safetensors") and PRE in p for p in fetched)
    assert any(p.endswith("model.safetensors") and FINE in p for p in fetched)
    assert "KL(finetuned || pretrained)" in stdout and "root: token" in stdout

    pair = CausalPair.load(*qwen_dirs)
    enc = pair.generate(pair.encode(chat=CHAT), 3)
    want = analysis_dict(enc, pair.analyse(enc, tau_min=0.1), 0.1)
    got = json.loads((tmp_path / "online.json").read_text())
    assert got["tokens"] == want["tokens"] and got["segments"] == want["segments"]
    assert [s["label"] for s in got["segments"]] == ["system", "user", "assistant", "continuation"]
    assert got["root"] == want["root"] == got["prompt_len"] - 1
    assert got["kl_finetuned_pretrained"] == pytest.approx(want["kl_finetuned_pretrained"], rel=1e-4, abs=1e-7)
    assert got["kl_finetuned_pretrained"] > 1e-3
    for which in ("pretrained", "finetuned"):
        g, w = got["models"][which], want["models"][which]
        assert g["name"] == (PRE if which == "pretrained" else FINE)
        assert g["levels"] == w["levels"] and g["edges"] == w["edges"] and len(g["top"]) == 5
        assert [t["id"] for t in g["top"]] == [t["id"] for t in w["top"]]
        assert g["levels"][-1] == [got["root"]] and sum(map(len, g["edges"])) > 0
    assert got["models"]["pretrained"]["edges"] != got["models"]["finetuned"]["edges"]


def _one_error_line(err: str, *parts: str) -> None:
    lines = [x for x in err.splitlines() if x.strip() and "Loading weights" not in x]
    assert len(lines) == 1, err
    for p in parts:
        assert p in lines[0], lines[0]


def test_inspect_bad_input_is_one_line(qwen_dirs, tmp_path, capsys):
    base, fine = (str(p) for p in qwen_dirs)
    args = ["causal", "inspect", "--pretrained", base, "--finetuned", fine]
    assert main([*args, "--chat", "[{"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows causal: error:", "not valid JSON")
    assert main([*args, "--text", "hello", "--tau", "1.5"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows causal: error:", "--tau must lie in [0, 1)")
    assert main([*args, "--text", "hello", "--root", "999"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows causal: error:", "root 999 is out of range")
    other = write_family("llama", tmp_path / "llama")
    capsys.readouterr()
    assert main(["causal", "inspect", "--pretrained", str(other), "--finetuned", fine, "--text", "hi"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows causal: error:", "differ in model type")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*args, "--text", "hello", "--out", str(blocker / "g.json")]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows causal: error:", "is a file, not a folder")
    assert not (tmp_path / "g.json").exists()
    assert main([*args, "--text", "The cat sat", "--continuation", " on the mat", "--root", "-1",
                 "--out", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "segments: prompt 0-" in out and "continuation" in out
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["root"] == len(data["tokens"]) - 1
