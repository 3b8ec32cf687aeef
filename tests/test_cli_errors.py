"""`attnflows` never prints a traceback for a user's mistake: one line naming what to do, a non-zero exit.

Each case runs the real command, in this process (``main([...])``, stderr captured) or as a real
process where the case needs one (closed pipes, permissions: as root, the child runs without the
capabilities that let root read and write anything, through util-linux's ``setpriv``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attnflows_panel.cli import main

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(err: str, *fragments: str) -> str:
    """The one line of stderr that reports the failure (progress lines may come before it)."""
    lines = [line for line in err.splitlines() if "error" in line.lower() or "closed" in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _cli(*args: str, drop_root_powers: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m attnflows_panel ARGS`` as a separate process."""
    cmd = [sys.executable, "-m", "attnflows_panel", *args]
    if drop_root_powers and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux's setpriv: permissions cannot be taken away")
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kwargs)


@pytest.fixture(scope="module")
def tiny_index(sharp_bert_dirs, glue_dir, tmp_path_factory):
    from attnflows_panel.index import build_index
    from attnflows_panel.models import ModelPair

    pair = ModelPair.load(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]), device="cpu")
    out = tmp_path_factory.mktemp("cli-errors") / "idx"
    build_index(pair, str(glue_dir / "MRPC"), "mrpc", out, split="dev", limit=24, tau=0.3, shard_size=8, progress=False)
    return out


@pytest.fixture
def csv_file(tmp_path) -> Path:
    p = tmp_path / "pairs.csv"
    p.write_text("sentence_a,sentence_b,label\nThe cat sat.,A cat was sitting.,1\nIt rains.,The sun shines.,0\n")
    return p


# --------------------------------------------------------------------------------------------------
# permissions
# --------------------------------------------------------------------------------------------------


def test_unreadable_data(csv_file, tmp_path, sharp_bert_dirs):
    csv_file.chmod(0)
    try:
        proc = _cli("index", "build", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
                    "--data", str(csv_file), "--task", "mrpc", "--out", str(tmp_path / "idx"), drop_root_powers=True)
    finally:
        csv_file.chmod(0o644)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, "attnflows index build: error: permission denied", str(csv_file))


def test_unwritable_out(tmp_path, sharp_bert_dirs):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = _cli("finetune", "--base", str(sharp_bert_dirs[0]), "--data", "demo", "--task", "mrpc",
                    "--out", str(locked / "model"), "--max-steps", "1", drop_root_powers=True)
        proc2 = _cli("index", "build", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
                     "--data", "demo", "--out", str(locked / "idx"), drop_root_powers=True)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr, "attnflows finetune: error:", "is not writable", str(locked))
    assert "loading" not in proc.stderr  # refused before any data or model was loaded
    assert proc2.returncode == 1
    _one_error_line(proc2.stderr, "attnflows index build: error:", "--out", "is not writable")
    assert line


# --------------------------------------------------------------------------------------------------
# missing and damaged files
# --------------------------------------------------------------------------------------------------


def test_missing_files(tmp_path, capsys, sharp_bert_dirs):
    assert main(["index", "query", "--index", str(tmp_path / "nope"), "--id", "x"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows index query: error: no index folder at")
    assert main(["finetune", "--base", str(sharp_bert_dirs[0]), "--data", str(tmp_path / "missing.csv"),
                 "--task", "mrpc", "--out", str(tmp_path / "m")]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows finetune: error:", "missing.csv")
    assert main(["index", "build", "--pretrained", str(tmp_path / "no-model"), "--finetuned", str(sharp_bert_dirs[1]),
                 "--data", "demo", "--out", str(tmp_path / "i")]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows index build: error:", "no-model")


def test_corrupt_index(tiny_index, tmp_path, capsys):
    p = tmp_path / "flipped"
    shutil.copytree(tiny_index, p)
    data = bytearray((p / "signatures.faiss").read_bytes())
    data[len(data) // 2] ^= 0x40
    (p / "signatures.faiss").write_bytes(bytes(data))
    assert main(["index", "query", "--index", str(p), "--id", "mrpc-dev-1"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows index query: error:", "signatures.faiss is corrupt")
    (p / "manifest.json").write_text("{")
    assert main(["index", "info", "--index", str(p)]) == 1
    _one_error_line(capsys.readouterr().err, "manifest.json is corrupt")


def test_truncated_weights(tmp_path, sharp_bert_dirs, capsys):
    broken = tmp_path / "fine"
    shutil.copytree(sharp_bert_dirs[1], broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    assert main(["index", "build", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(broken),
                 "--data", "demo", "--out", str(tmp_path / "idx")]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows index build: error:", "weights", "damaged", str(broken))
    assert main(["finetune", "--base", str(broken), "--data", "demo", "--task", "mrpc", "--out", str(tmp_path / "m"),
                 "--max-steps", "1", "--quiet"]) == 1
    _one_error_line(capsys.readouterr().err, "attnflows finetune: error:", "damaged")


# --------------------------------------------------------------------------------------------------
# ports, checked before the models load
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything loads models or prepares the offline default."""
    from attnflows_panel import prepare
    from attnflows_panel.models import ModelPair

    def refuse(*a, **k):
        raise AssertionError("models were loaded before the port was checked")

    monkeypatch.setattr(ModelPair, "load", classmethod(lambda cls, *a, **k: refuse()))
    monkeypatch.setattr(prepare, "prepare", refuse)


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_bad_port(command, capsys, no_model_loading):
    assert main([command, "--port", "99999"]) == 1
    _one_error_line(capsys.readouterr().err, f"attnflows {command}: error: --port must be a number from 0 to 65535")


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_port_in_use(command, capsys, no_model_loading):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main([command, "--port", str(port), "--address", "127.0.0.1"]) == 1
    _one_error_line(capsys.readouterr().err, f"port {port} on 127.0.0.1 is already in use", "--port 0")


def test_check_port_helper():
    from attnflows_panel._io import PortError, check_port

    check_port("127.0.0.1", 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.listen(1)
        with pytest.raises(PortError, match="already in use"):
            check_port("127.0.0.1", port)
    with pytest.raises(PortError, match="not an address of this machine"):
        check_port("203.0.113.7", 8080)  # TEST-NET-3: never a local address


# --------------------------------------------------------------------------------------------------
# closed pipes
# --------------------------------------------------------------------------------------------------


def test_closed_pipe(tiny_index):
    """`attnflows index query ... | head`: the reader goes away; one line, exit 141, no traceback."""
    cmd = [sys.executable, "-m", "attnflows_panel", "index", "query", "--index", str(tiny_index), "--id", "mrpc-dev-1",
           "--k", "20"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    _one_error_line(err, "attnflows index query: the output was closed")
    # and through a shell pipe, as a user types it
    shell = subprocess.run(" ".join(map(repr, cmd)).replace("'", '"') + " | head -n 1", shell=True, capture_output=True,
                           text=True, env=env, timeout=300)
    assert len(shell.stdout.splitlines()) == 1 and "Traceback" not in shell.stderr


# --------------------------------------------------------------------------------------------------
# text that is not UTF-8, binary files
# --------------------------------------------------------------------------------------------------


def test_non_utf8_input_is_refused_with_the_lines_named(tmp_path, capsys, sharp_bert_dirs):
    p = tmp_path / "latin1.csv"
    p.write_bytes("sentence_a,sentence_b,label\nA café.,Un café.,1\nOK.,Fine.,0\nNaïve.,Naïf.,1\n".encode("latin-1"))
    assert main(["finetune", "--base", str(sharp_bert_dirs[0]), "--data", str(p), "--task", "mrpc",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 1
    _one_error_line(capsys.readouterr().err, "is not UTF-8 text: lines 2, 4 hold bytes that are not UTF-8", "iconv")


def test_binary_input_gets_a_short_message(tmp_path, capsys, sharp_bert_dirs):
    p = tmp_path / "data.tsv"
    p.write_bytes(bytes(range(256)) * 60)  # 15 KB of binary named .tsv
    assert main(["index", "build", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
                 "--data", str(p), "--task", "mrpc", "--out", str(tmp_path / "idx")]) == 1
    line = _one_error_line(capsys.readouterr().err, "is a binary file, not text")
    assert len(line) < 300


# --------------------------------------------------------------------------------------------------
# --debug
# --------------------------------------------------------------------------------------------------


def test_debug_shows_the_traceback(tmp_path):
    plain = _cli("index", "query", "--index", str(tmp_path / "nope"), "--id", "x")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and "no index folder" in plain.stderr
    for argv in (["--debug", "index", "query"], ["index", "query", "--debug"]):
        debug = _cli(*argv, "--index", str(tmp_path / "nope"), "--id", "x")
        assert debug.returncode == 1
        assert "Traceback (most recent call last)" in debug.stderr
        assert "FileNotFoundError: no index folder" in debug.stderr


def test_engine_ray_without_ray_says_how_to_install_it(monkeypatch, tmp_path, capsys, no_model_loading):
    """The local engine needs no Ray; asking for the Ray engine without it is one line, before any model loads."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as if not installed
    assert main(["index", "build", "--engine", "ray", "--data", "demo", "--out", str(tmp_path / "idx")]) == 1
    _one_error_line(capsys.readouterr().err, "--engine ray needs Ray Data: pip install 'attnflows-panel[ray]'")


def test_bad_batch_sizes_are_said_before_the_models_load(tmp_path, capsys, no_model_loading):
    for argv, msg in ((["--max-tokens", "-1"], "--max-tokens must be >= 0 (0 = no budget), got -1"),
                      (["--batch-size", "0"], "--batch-size must be >= 1, got 0")):
        assert main(["index", "build", "--data", "demo", "--out", str(tmp_path / "idx"), *argv]) == 1
        _one_error_line(capsys.readouterr().err, msg)
    assert not (tmp_path / "idx").exists()
