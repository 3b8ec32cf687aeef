"""``attnflows inspect``: what the .npz holds, and one clear line (nothing written) for each bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest

from attnflows_panel.bottleneck import bottleneck
from attnflows_panel.cli import main
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.weights import rollout

A, B = "The cat sat on the mat.", "A cat was sitting on the mat."


@pytest.fixture(scope="module")
def dirs(sharp_bert_dirs):
    return [str(d) for d in sharp_bert_dirs]


def _run(dirs, *extra):
    return main(["inspect", "--pretrained", dirs[0], "--finetuned", dirs[1], "--a", A, "--b", B, *extra])


def _error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_norm_npz(dirs, tmp_path, capsys):
    out = tmp_path / "pair.npz"
    assert _run(dirs, "--weights", "norm", "--tau", "0.3", "--out", str(out)) == 0
    assert "wrote" in capsys.readouterr().out
    z = np.load(out)  # no pickle needed
    tokens = z["tokens"].tolist()
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and str(z["weights_kind"]) == "norm"
    n = len(tokens)
    for role in ("pretrained", "finetuned"):
        w = z[f"{role}/weights"]
        assert w.dtype == np.float32 and w.shape == (2, 4, n, n) and str(z[f"{role}/kind"]) == "norm"
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        assert z[f"{role}/tokens"].tolist() == tokens
        b = z[f"{role}/bottleneck"]
        assert b.shape == (3, n) and b[2, 0] == np.inf and (b[2, 1:] == 0).all()
        np.testing.assert_array_equal(b, bottleneck(w).node)
        np.testing.assert_array_equal(z[f"{role}/member"], AttentionGraph(w, 0.3).member)
        np.testing.assert_allclose(z[f"{role}/rollout"], rollout(w))
        np.testing.assert_allclose(z[f"{role}/rollout"].sum(1), 1.0)
        assert len(z[f"{role}/breakpoints"]) > 0
    assert "finetuned/logits" in z and "pretrained/logits" not in z
    assert not [p for p in tmp_path.iterdir() if p.name != "pair.npz"]  # no temporary file left


def test_heads_subset(dirs, tmp_path):
    out = tmp_path / "pair.npz"
    assert _run(dirs, "--weights", "norm", "--heads", "2:1-2,1:*", "--tau", "0.2", "--out", str(out)) == 0
    z = np.load(out)
    heads = z["heads"]
    assert heads.tolist() == [[True] * 4, [True, True, False, False]]
    w = z["finetuned/weights"]
    np.testing.assert_array_equal(z["finetuned/bottleneck"], bottleneck(w, heads).node)
    np.testing.assert_array_equal(z["finetuned/member"], AttentionGraph(w, 0.2, heads).member)
    assert not np.array_equal(z["finetuned/bottleneck"], bottleneck(w).node)


def test_attattr_npz(dirs, tmp_path, capsys):
    out = tmp_path / "pair.npz"
    assert _run(dirs, "--weights", "attattr", "--steps", "3", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "pretrained: attattr is unavailable for this model" in err and "norm weights are given instead" in err
    z = np.load(out)
    assert str(z["finetuned/kind"]) == "attattr" and str(z["pretrained/kind"]) == "norm"
    assert "unavailable" in str(z["pretrained/note"]) and "finetuned/note" not in z
    assert "member" not in " ".join(z.files) and int(z["steps"]) == 3
    w = z["finetuned/weights"]
    sums = w.sum(-1)
    assert (w >= 0).all() and np.all(np.isclose(sums, 1, atol=1e-5) | (sums == 0))


def test_raw_is_the_default(dirs, tmp_path):
    from attnflows_panel.models import ModelPair

    out = tmp_path / "pair.npz"
    assert _run(dirs, "--out", str(out)) == 0
    z = np.load(out)
    r = ModelPair.load(dirs[0], dirs[1], device="cpu").run(A, B)
    np.testing.assert_array_equal(z["pretrained/weights"], r.pretrained.attentions)
    np.testing.assert_array_equal(z["finetuned/weights"], r.finetuned.attentions)
    assert str(z["weights_kind"]) == "raw" and "tau" not in z


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ({"--a": "   "}, ["--a is empty"]),
        ({"--tau": "1.5"}, ["--tau must lie in [0, 1)", "1.5"]),
        ({"--tau": "nan"}, ["--tau must lie in [0, 1)"]),
        ({"--tau": "-0.1"}, ["--tau must lie in [0, 1)"]),
        ({"--out": "{tmp}/pair.txt"}, ["--out must name an .npz file"]),
        ({"--out": "{tmp}/missing/pair.npz"}, ["does not exist"]),
        ({"--out": "{tmp}/folder.npz"}, ["is a folder"]),
        ({"--pretrained": "{tmp}/no-such-model"}, ["does not exist"]),
        ({"--b": "\u200b"}, ["sentence_b produces no tokens"]),
        ({"--heads": "3"}, ["write layer:head"]),
        ({"--heads": "7:1"}, ["layer 7", "out of range"]),
        ({"--heads": "1:0"}, ["heads count from 1"]),
    ],
)
def test_bad_input_one_line_nothing_written(dirs, tmp_path, capsys, override, fragments):
    (tmp_path / "folder.npz").mkdir()
    opts = {"--pretrained": dirs[0], "--finetuned": dirs[1], "--a": A, "--b": B, "--out": str(tmp_path / "pair.npz")}
    opts.update({k: v.replace("{tmp}", str(tmp_path)) for k, v in override.items()})
    code = main(["inspect", *[x for kv in opts.items() for x in kv]])
    assert code != 0
    _error_line(capsys.readouterr().err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.npz"]  # nothing written, no temporary file


def test_bad_choice_is_refused_by_argparse(dirs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(dirs, "--weights", "grad", "--out", str(tmp_path / "x.npz"))
    assert exc.value.code == 2
    assert "invalid choice: 'grad'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_failure_keeps_an_existing_file(dirs, tmp_path, capsys):
    out = tmp_path / "pair.npz"
    out.write_bytes(b"keep me")
    code = main(["inspect", "--pretrained", dirs[0], "--finetuned", str(tmp_path / "nope"), "--a", A, "--b", B,
                 "--out", str(out)])
    assert code == 1
    _error_line(capsys.readouterr().err, "does not exist")
    assert out.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["pair.npz"]


def test_unwritable_folder(dirs, tmp_path):
    """As root, the child runs without the capabilities that let root write anywhere (util-linux's setpriv)."""
    import shutil
    import subprocess
    import sys

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cmd = [sys.executable, "-m", "attnflows_panel", "inspect", "--pretrained", dirs[0], "--finetuned", dirs[1],
           "--a", A, "--b", B, "--out", str(ro / "x.npz")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "running as root needs util-linux's setpriv to take write permission away"
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        ro.chmod(0o700)
    assert proc.returncode == 1
    _error_line(proc.stderr, "not writable")
    assert not list(ro.iterdir())
