"""A Ray build (`attnflows index build --engine ray`) stopped by Ctrl-C (SIGINT) or by `kill` (SIGTERM)
ends cleanly (issue 26): the command exits 130 with one line saying how to resume, every process of the
local Ray it started (GCS server, raylet, workers) is gone, the shards finished before the signal are
kept, and the folder is not taken for a finished index.

Each case runs the real CLI in its own process on the sharp tiny BERT pair over real MRPC train pairs,
and signals it once its first shard is on disk (the build is then well inside the Ray Data pipeline).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from attnflows_panel.index import IndexFileError, SignatureIndex

pytest.importorskip("ray", reason="the Ray engine needs the 'ray' extra (part of the test extras)")
psutil = pytest.importorskip("psutil", reason="psutil comes with Ray")

LIMIT = 600  # 75 shards of 8: far more work than the time between the first shard and the signal
SHARD = 8


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the build ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{out}\n{err}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_ray_build_cleanly(signum, sharp_bert_dirs, glue_dir, tmp_path):
    out = tmp_path / "idx"
    argv = [sys.executable, "-m", "attnflows_panel", "index", "build", "--engine", "ray", "--workers", "1",
            "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
            "--data", str(glue_dir / "MRPC"), "--task", "mrpc", "--split", "train", "--limit", str(LIMIT),
            "--tau", "0.3", "--shard-size", str(SHARD), "--batch-size", "4", "--device", "cpu",
            "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        shards = out / "shards"
        _wait(lambda: list(shards.glob("shard-*.parquet")), 180, "the first finished shard", proc)
        ray_procs = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(sorted({p.name() for p in ray_procs if p.is_running()}))
        assert "raylet" in names and "gcs_server" in names, f"no local Ray under the build: {names}"
        proc.send_signal(signum)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"the build did not stop within 60 s of {signum.name}:\n{stderr}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "the finished shards are kept; rerun the same command to resume" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    # every process of the Ray this build started has ended (Ray's shutdown waits for them)
    gone, alive = psutil.wait_procs(ray_procs, timeout=30)
    assert not alive, f"left running after {signum.name}: {[(p.pid, p.name()) for p in alive]}"
    # the shards finished before the signal are kept for the resume; the folder is no finished index
    finished = sorted(p.name for p in shards.glob("shard-*.parquet"))
    assert finished and len(finished) < -(-LIMIT // SHARD), finished
    with pytest.raises(IndexFileError, match="incomplete"):
        SignatureIndex.open(out)
