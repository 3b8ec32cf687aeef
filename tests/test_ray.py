"""The Ray Data engine (attnflows_panel.index.build_ray, `attnflows index build --engine ray`) on a local Ray
cluster started by the test (2 CPUs): the same corpus gives the same index as the local engine, and an
interrupted build resumes without redoing finished shards.

The tiny BERT pair with peaked attention (``sharp_bert_dirs``) over real MRPC dev pairs: small enough
that Ray's start-up dominates, real enough that the usage arrays are not all alike.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from attnflows_panel.index import SignatureIndex, build_index, build_index_ray  # imports no Ray

ray = pytest.importorskip("ray", reason="the Ray engine needs the 'ray' extra (part of the test extras)")

N = 40
SHARD = 8
BATCH = 3  # several length buckets per shard, the last one short


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mrpc(glue_dir):
    from attnflows_panel.corpus import load_corpus

    return load_corpus(str(glue_dir / "MRPC"), task="mrpc", split="dev", limit=N)


@pytest.fixture(scope="module")
def local_index(sharp_pair, mrpc, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "idx"
    build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, shard_size=SHARD, batch_size=BATCH, progress=False)
    return out


def _same_index(a, b) -> None:
    ia, ib = SignatureIndex.open(a), SignatureIndex.open(b)
    np.testing.assert_array_equal(ia.usage(), ib.usage())
    np.testing.assert_array_equal(np.load(a / "usage.npy"), np.load(b / "usage.npy"))
    same_shape = ia.metadata.shape == ib.metadata.shape
    assert ia.metadata.equals(ib.metadata), (ia.metadata.compare(ib.metadata) if same_shape else "")
    np.testing.assert_array_equal(ia.vectors(), ib.vectors())
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for key in ("count", "tau", "fingerprint", "corpus_sha256", "num_shards", "labels", "index", "checksums"):
        assert ma[key] == mb[key], key


def test_ray_engine_builds_the_same_index_as_the_local_engine(local_ray, sharp_pair, mrpc, local_index, tmp_path,
                                                               caplog):
    caplog.set_level(logging.INFO, logger="attnflows_panel")
    out = build_index_ray(sharp_pair, mrpc, "mrpc", tmp_path / "ray", workers=2, tau=0.3, shard_size=SHARD,
                          batch_size=BATCH, progress=True)
    assert out == tmp_path / "ray"
    _same_index(local_index, out)
    assert any("Ray Data: 15 length buckets of 40 samples (5 shards to do, 0 samples already done) on 2 worker(s)"
               in m for m in caplog.messages), caplog.messages
    # a finished index with the same settings is returned as it is: nothing goes to Ray
    caplog.clear()
    build_index_ray(sharp_pair, mrpc, "mrpc", out, workers=2, tau=0.3, shard_size=SHARD, batch_size=BATCH,
                    progress=True)
    assert not any("Ray Data:" in m for m in caplog.messages)


def test_ray_buckets_are_the_local_engines_within_the_token_budget(sharp_pair, mrpc, tmp_path):
    """The rows the Ray dataset is made of (one per length bucket) are cut as the local engine cuts its
    batches, token budget included (no Ray needed to plan them)."""
    from attnflows_panel.index import buckets_by_length, build_lock, encode_shard, length_buckets, plan_build
    from attnflows_panel.index.build_ray import bucket_rows

    counts = {}
    for budget in (None, 64):
        with build_lock(tmp_path / str(budget)):
            plan = plan_build(sharp_pair, mrpc, "mrpc", tmp_path / str(budget), tau=0.3, shard_size=SHARD,
                              batch_size=BATCH, max_tokens=budget)
        rows = bucket_rows(plan, sharp_pair)
        expected = []
        for i in plan.todo:
            encoded = encode_shard(sharp_pair, plan.shard_pairs(i))
            buckets = buckets_by_length([len(e[0]) for e in encoded], BATCH, budget)
            # length_buckets (tokenising on its own) cuts the same ones
            assert [list(b) for b in length_buckets(sharp_pair.tokenizer, plan.shard_pairs(i), plan.max_length,
                                                    BATCH, budget)] == [list(b) for b in buckets]
            # shard after shard, the longest buckets of each first
            expected += [(i, [int(j) for j in b]) for b in reversed(buckets)]
        assert [(r["shard"], r["positions"]) for r in rows] == expected
        assert all(budget is None or len(r["positions"]) == 1
                   or len(r["positions"]) * max(map(len, r["input_ids"])) <= budget for r in rows)
        counts[budget] = len(rows)
    assert counts == {None: 15, 64: counts[64]} and counts[64] > 15


def test_ray_engine_resumes_and_skips_finished_shards(local_ray, sharp_pair, mrpc, local_index, tmp_path, monkeypatch,
                                                       caplog):
    """The local engine stops after two shards (a crash); the Ray engine finishes the build and leaves
    the finished shards alone (same files, same inodes, same modification times)."""
    out = tmp_path / "resume"
    original = type(sharp_pair).usage_batch.__get__(sharp_pair)
    calls = {"n": 0}

    def crash_after_two_shards(pairs, tau, batch_size=32, **kwargs):
        if calls["n"] >= 2 * -(-SHARD // BATCH):  # buckets of the first two shards
            raise KeyboardInterrupt("simulated crash")
        calls["n"] += 1
        return original(pairs, tau, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(sharp_pair, "usage_batch", crash_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, shard_size=SHARD, batch_size=BATCH, progress=False)
    monkeypatch.undo()
    finished = sorted((out / "shards").glob("shard-*.parquet"))
    assert [p.name for p in finished] == ["shard-00000.parquet", "shard-00001.parquet"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "shards").iterdir()}

    caplog.set_level(logging.INFO, logger="attnflows_panel")
    build_index_ray(sharp_pair, mrpc, "mrpc", out, workers=2, tau=0.3, shard_size=SHARD, batch_size=BATCH,
                    keep_shards=True, progress=True)
    assert any("(3 shards to do, 16 samples already done)" in m for m in caplog.messages), caplog.messages
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "shards").iterdir()}
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was written again"
    _same_index(local_index, out)


def test_buckets_per_block():
    from attnflows_panel.index.build_ray import MAX_BUCKETS_PER_BLOCK, buckets_per_block

    assert buckets_per_block(15, 2) == 1  # few buckets: one per block, every worker busy
    assert buckets_per_block(48, 2) == 3
    assert buckets_per_block(420, 2) == MAX_BUCKETS_PER_BLOCK == 4  # glue-mix: 105 blocks, not 420
    assert buckets_per_block(420, 64) == 1
    assert buckets_per_block(0, 2) == 1


def test_cli_engine_ray(local_ray, sharp_bert_dirs, glue_dir, local_index, tmp_path, capsys, monkeypatch):
    """The CLI on Ray, with three length buckets per Ray Data block (a worker runs a block's buckets
    one forward batch each): the same index as the local engine."""
    from attnflows_panel.cli import main
    from attnflows_panel.index import build_ray

    asked = []
    monkeypatch.setattr(build_ray, "buckets_per_block", lambda n_rows, workers: asked.append(n_rows) or 3)

    out = tmp_path / "cli"
    argv = ["index", "build", "--engine", "ray", "--workers", "2", "--pretrained", str(sharp_bert_dirs[0]),
            "--finetuned", str(sharp_bert_dirs[1]), "--data", str(glue_dir / "MRPC"), "--task", "mrpc",
            "--split", "dev", "--limit", str(N), "--tau", "0.3", "--shard-size", str(SHARD), "--batch-size",
            str(BATCH), "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert f"indexed {N} samples into {out}" in capsys.readouterr().out
    assert asked == [15]  # 15 buckets, in 5 blocks of 3
    ia, ib = SignatureIndex.open(local_index), SignatureIndex.open(out)
    np.testing.assert_array_equal(ia.usage(), ib.usage())
    assert main(["index", "build", "--ray-address", "auto", "--data", "demo", "--out", str(tmp_path / "x")]) == 1
    assert "--ray-address and --workers go with --engine ray" in capsys.readouterr().err


def test_ray_engine_builds_the_same_norm_index_as_the_local_engine(local_ray, sharp_pair, sharp_bert_dirs, glue_dir,
                                                                   mrpc, local_index, tmp_path, capsys):
    """`index build --engine ray --weights norm`: the workers count the head usage of the norm edge weights
    (Kobayashi et al. 2020) as the local engine does: the same signatures, head change and manifest."""
    from attnflows_panel.cli import main

    n = 16
    local = build_index(sharp_pair, mrpc.select(range(n)), "mrpc", tmp_path / "local-norm", tau=0.3,
                        shard_size=SHARD, batch_size=BATCH, progress=False, weights="norm")
    out = tmp_path / "ray-norm"
    argv = ["index", "build", "--engine", "ray", "--workers", "2", "--pretrained", str(sharp_bert_dirs[0]),
            "--finetuned", str(sharp_bert_dirs[1]), "--data", str(glue_dir / "MRPC"), "--task", "mrpc",
            "--split", "dev", "--limit", str(n), "--tau", "0.3", "--shard-size", str(SHARD), "--batch-size",
            str(BATCH), "--weights", "norm", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "norm weights" in capsys.readouterr().out
    _same_index(local, out)
    ia, ib = SignatureIndex.open(local), SignatureIndex.open(out)
    assert ia.weights == ib.weights == "norm"
    np.testing.assert_array_equal(np.load(local / "head_change.npy"), np.load(out / "head_change.npy"))
    # and they are norm signatures, not raw ones: the raw index of the same pairs differs
    raw = SignatureIndex.open(local_index)
    assert np.abs(raw.usage(np.arange(n)) - ib.usage()).max() > 0.05
