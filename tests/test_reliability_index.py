"""Issue 26 for indexes: a manifest that guards itself (its own checksum, the checksums of its files
required, plain file names only, an explicit upgrade for old indexes), ``--overwrite`` that replaces the
old index only when the new one is whole, leftovers of killed builds removed, and signatures or head
changes that hold NaN refused at build and by verify.

The demo index of conftest.py (12 pairs, sharp tiny BERT), copied before any change; each test fails on
the code before the issue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnflows_panel.cli import main
from attnflows_panel.index import SignatureIndex, build_index, record_files
from attnflows_panel.index.format import IndexFileError, ManifestError, write_manifest


def _copy(index: Path, dst: Path) -> Path:
    shutil.copytree(index, dst)
    return dst


def _manifest(p: Path) -> dict:
    return json.loads((p / "manifest.json").read_text())


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1 << 5
    path.write_bytes(bytes(data))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _one_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line.lower() or "damaged" in line]
    assert lines, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# --------------------------------------------------------------------------------------------------
# the manifest guards itself
# --------------------------------------------------------------------------------------------------


def test_an_edited_tau_is_found_by_info_verify_and_open(demo_index, tmp_path, capsys):
    p = _copy(demo_index, tmp_path / "edited")
    m = _manifest(p)
    m["tau"] = 0.2
    (p / "manifest.json").write_text(json.dumps(m, indent=2))
    with pytest.raises(ManifestError, match="changed after the build"):
        SignatureIndex.open(p)
    assert main(["index", "info", "--index", str(p)]) == 1
    _one_line(capsys.readouterr().err, "changed after the build")
    assert main(["index", "verify", "--index", str(p)]) == 1
    _one_line(capsys.readouterr().err, "changed after the build")


def test_removed_checksums_are_an_error_not_a_warning(demo_index, tmp_path, capsys):
    """Without ``checksums`` a flipped byte of usage.npy used to pass with a warning and a query exit 0."""
    p = _copy(demo_index, tmp_path / "stripped")
    m = _manifest(p)
    del m["checksums"]
    (p / "manifest.json").write_text(json.dumps(m, indent=2))
    _flip_bit(p / "usage.npy")
    first = str(SignatureIndex.open(demo_index).metadata["id"][0])
    assert main(["index", "query", "--index", str(p), "--id", first]) == 1
    _one_line(capsys.readouterr().err, "manifest.json")
    # the same, re-sealed as an old build would have written it: the missing checksums are named, with the upgrade
    write_manifest(p / "manifest.json", m)
    with pytest.raises(ManifestError, match=r"records no checksums of the index's files.*attnflows index upgrade"):
        SignatureIndex.open(p)


def test_file_names_in_the_manifest_must_be_plain_names_inside_the_index(demo_index, tmp_path, capsys):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    p = _copy(demo_index, tmp_path / "escape")
    m = _manifest(p)
    name = os.path.relpath(outside, p)  # ../secret.txt
    m["files"][name] = outside.stat().st_size
    m["checksums"]["files"][name] = "0" * 16
    write_manifest(p / "manifest.json", m)
    with pytest.raises(ManifestError, match=r"'\.\./secret\.txt', which is not a plain file name"):
        SignatureIndex.open(p)
    assert main(["index", "verify", "--index", str(p)]) == 1
    err = capsys.readouterr().err
    _one_line(err, "not a plain file name")
    assert "secret.txt is corrupt" not in err and "not yours" not in err  # never read


def test_an_old_index_is_refused_until_upgraded_explicitly(demo_index, tmp_path, capsys):
    p = _copy(demo_index, tmp_path / "old")
    m = _manifest(p)
    for key in ("checksums", "manifest_checksum"):
        m.pop(key, None)
    (p / "manifest.json").write_text(json.dumps(m, indent=2))  # as written before checksums existed
    with pytest.raises(ManifestError, match=r"attnflows index upgrade --index"):
        SignatureIndex.open(p)

    damaged = _copy(p, tmp_path / "old-damaged")
    norms = np.load(damaged / "norms.npy")
    norms[0, 0] += 0.5
    np.save(damaged / "norms.npy", norms)
    m2 = _manifest(damaged)
    m2["files"]["norms.npy"] = (damaged / "norms.npy").stat().st_size
    (damaged / "manifest.json").write_text(json.dumps(m2, indent=2))
    before = (damaged / "manifest.json").read_bytes()
    assert main(["index", "upgrade", "--index", str(damaged)]) == 1  # files that disagree are never trusted
    assert "norms.npy" in capsys.readouterr().err
    assert (damaged / "manifest.json").read_bytes() == before

    assert main(["index", "upgrade", "--index", str(p)]) == 0
    assert "upgraded" in capsys.readouterr().out
    idx = SignatureIndex.open(p)
    assert len(idx) == len(SignatureIndex.open(demo_index))
    assert main(["index", "verify", "--index", str(p)]) == 0


# --------------------------------------------------------------------------------------------------
# --overwrite replaces the old index only when the new one is whole
# --------------------------------------------------------------------------------------------------


def test_overwrite_keeps_the_old_index_until_the_new_one_is_whole(sharp_pair, demo_index, tmp_path, monkeypatch):
    import attnflows_panel.index.build as B

    out = _copy(demo_index, tmp_path / "idx")
    old_tau = SignatureIndex.open(out).tau
    first = str(SignatureIndex.open(out).metadata["id"][0])
    real = B._run_local
    seen = {}

    def killed_midway(pair, plan, progress):
        seen["answers"] = len(SignatureIndex.open(out).query(sample_id=first, k=3))  # the old one still serves
        raise KeyboardInterrupt  # as a user's Ctrl-C midway

    monkeypatch.setattr(B, "_run_local", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        build_index(sharp_pair, "demo", None, out, limit=12, tau=0.25, overwrite=True, progress=False)
    assert seen["answers"] == 3
    assert SignatureIndex.open(out).tau == old_tau  # whole, and still the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no staging folder left

    monkeypatch.setattr(B, "_run_local", real)
    build_index(sharp_pair, "demo", None, out, limit=12, tau=0.25, overwrite=True, progress=False)
    assert SignatureIndex.open(out).tau == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_a_build_removes_leftovers_of_killed_runs(sharp_pair, demo_index, tmp_path):
    out = _copy(demo_index, tmp_path / "idx")
    pid = _dead_pid()
    stale_tmp = out / f".usage.npy.tmp-{pid}-0123abcd"
    stale_tmp.write_bytes(b"\0" * 128)
    stale_staging = tmp_path / f".idx.partial-{pid}-89abcdef"
    stale_staging.mkdir()
    (stale_staging / "usage.npy").write_bytes(b"\0" * 128)
    build_index(sharp_pair, "demo", None, out, limit=12, tau=0.3, progress=False)  # finished: nothing to build
    assert not stale_tmp.exists() and not stale_staging.exists()


# --------------------------------------------------------------------------------------------------
# NaN
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing_fine(sharp_bert_dirs, tmp_path_factory) -> Path:
    """The sharp fine-tuned model with finite but enormous query weights in layer 0: its attention
    overflows to NaN (every weight passes the load check)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("overflowing") / "fine"
    model = AutoModelForSequenceClassification.from_pretrained(sharp_bert_dirs[1])
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.fill_(3e38)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(sharp_bert_dirs[1]).save_pretrained(out)
    return out


def test_a_build_whose_head_change_holds_nan_is_refused(capsys, sharp_bert_dirs, overflowing_fine, tmp_path):
    out = tmp_path / "idx"
    assert main(["index", "build", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(overflowing_fine),
                 "--data", "demo", "--limit", "8", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NaN or infinite" in err
    assert not _manifest(out).get("complete")
    with pytest.raises(IndexFileError, match="incomplete"):
        SignatureIndex.open(out)


def test_verify_refuses_signatures_that_hold_nan(demo_index, tmp_path, capsys):
    """An index with NaN signatures whose checksums were recorded over them (as an older build wrote it)."""
    p = _copy(demo_index, tmp_path / "nan")
    usage = np.load(p / "usage.npy")
    usage[0, 0, 0, 1] = np.nan
    np.save(p / "usage.npy", usage)
    m = _manifest(p)
    record_files(p, m)
    write_manifest(p / "manifest.json", m)
    assert main(["index", "verify", "--index", str(p)]) == 1
    _one_line(capsys.readouterr().err, "NaN or infinite signatures for 1 samples")
