"""The FAISS signature index (attnflows_panel.index) and `attnflows index build|query|info`.

Real behaviour on a real MiniLM pair over real MRPC dev pairs (own signature = top hit, masked queries
== brute-force numpy, new pairs); mechanics (resume, manifest checks, corrupt files, CLI) on a tiny BERT
whose query/key weights are scaled up so that its attention is peaked and its graphs are not empty.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from attnflows_panel import signatures
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.index import (
    IndexFileError,
    IndexMismatchError,
    SignatureIndex,
    UnknownSampleError,
    build_index,
)
from attnflows_panel.index.format import write_manifest

MRPC_N = 48
REAL_TAU = 0.1  # MiniLM's [CLS] attention is diffuse: at τ = 0.3 most of its graphs are empty


# ----------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mrpc(glue_dir):
    from attnflows_panel.corpus import load_corpus

    return load_corpus(str(glue_dir / "MRPC"), task="mrpc", split="dev", limit=MRPC_N)


@pytest.fixture(scope="module")
def real_index(minilm_pair, mrpc, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-index") / "mrpc"
    build_index(minilm_pair, mrpc, "mrpc", out, tau=REAL_TAU, shard_size=16, progress=False)
    return SignatureIndex.open(out, pair=minilm_pair)


@pytest.fixture(scope="module")
def tiny_index(sharp_pair, mrpc, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-index") / "idx"
    build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, limit=40, shard_size=8, progress=False)
    return out


class Recorder:
    """Wraps pair.usage_batch (what the build runs): records the pairs it runs; raises after
    ``fail_after`` calls when set."""

    def __init__(self, pair, fail_after=None):
        self.pair, self.fail_after, self.seen, self.calls = pair, fail_after, [], 0
        self.original = type(pair).usage_batch.__get__(pair)  # the real method, not an earlier wrapper

    def __call__(self, pairs, tau, batch_size=32, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.seen.extend(pairs)
        return self.original(pairs, tau, batch_size=batch_size, **kwargs)


# ----------------------------------------------------------------------------------------------------
# real MiniLM build
# ----------------------------------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.glue
def test_real_build_manifest_and_metadata(real_index, minilm_pair, mrpc):
    idx = real_index
    m = idx.manifest
    assert m["complete"] and m["count"] == MRPC_N == len(idx) == len(idx.metadata)
    assert m["fingerprint"] == minilm_pair.fingerprint
    assert m["tau"] == REAL_TAU and m["signature_version"] == signatures.SIGNATURE_VERSION
    L, H = minilm_pair.num_layers, minilm_pair.num_heads
    assert (m["num_layers"], m["num_heads"]) == (L, H) == (6, 12)
    assert m["dims"] == {**m["dims"], "per_block": L * H, "total": 3 * L * H}
    assert m["index"]["kind"] == "exact" and m["created"] and m["num_shards"] == 3
    assert idx.index.ntotal == MRPC_N and idx.index.d == 3 * L * H
    assert not (idx.path / "shards").exists()  # consolidated, then removed
    md = idx.metadata
    assert list(md["id"]) == list(mrpc["id"])
    assert list(md["sentence_a"]) == list(mrpc["sentence_a"]) and list(md["label"]) == list(mrpc["label"])
    for col in ("label_name", "pred_pre", "pred_fine", "prob_fine", "correct_pre", "correct_fine", "n_tokens",
                "truncated"):
        assert col in md.columns
    assert md["pred_pre"].isna().all() and md["correct_pre"].isna().all()  # a bare encoder has no prediction
    assert set(md["pred_fine"]) <= {"equivalent", "not_equivalent"}
    np.testing.assert_array_equal(md["correct_fine"].to_numpy(bool),
                                  (md["pred_fine"] == md["label_name"]).to_numpy(bool))

    # a sample's stored row agrees with a fresh run through the pair and the graph module's definition
    i = 5
    r = minilm_pair.run(mrpc[i]["sentence_a"], mrpc[i]["sentence_b"])
    assert md["n_tokens"].iloc[i] == r.n and md["pred_fine"].iloc[i] == r.finetuned.label
    expected = np.stack([signatures.head_usage(AttentionGraph.build(r.pretrained.attentions, tau=REAL_TAU)),
                         signatures.head_usage(AttentionGraph.build(r.finetuned.attentions, tau=REAL_TAU))])
    np.testing.assert_allclose(idx.usage([i])[0], expected, atol=2e-3)  # stored as float16
    assert idx.usage().any(axis=(1, 2, 3)).all()  # at τ = 0.1 every sample has a graph


@pytest.mark.real_model
@pytest.mark.glue
def test_real_head_change_is_the_per_sample_metric_of_each_pair(real_index, minilm_pair, mrpc):
    """head_change.npy, computed in the build's batched forward pass on padded tensors, holds the codes
    of attnflows_panel.heads.sample_change on each pair's own (unpadded) attentions."""
    from attnflows_panel import heads as head_stats

    assert real_index.has_head_change
    rows = [0, 5, 17, 30, 47]
    cos, js = real_index.head_change(rows)
    codes = head_stats.encode(cos, js)
    for k, row in enumerate(rows):
        r = minilm_pair.run(mrpc[row]["sentence_a"], mrpc[row]["sentence_b"])
        want = head_stats.encode(*head_stats.sample_change(r.pretrained.attentions, r.finetuned.attentions))
        assert np.abs(codes[k].astype(int) - want.astype(int)).max() <= 1  # one 8-bit step at most
    assert (codes > 0).any()  # the two models differ: not a trivial all-unchanged code


@pytest.mark.real_model
@pytest.mark.glue
@pytest.mark.parametrize("space", ["all", "pre", "fine", "diff"])
def test_real_own_signature_is_top_hit(real_index, space):
    idx = real_index
    X = idx.vectors()
    for sid in idx.metadata["id"]:
        df = idx.query(sample_id=sid, space=space, k=3)
        own = df[df["id"] == sid]
        assert len(own) == 1, f"{sid} not among its own top hits in space {space}"
        # the top hit is the sample itself, or a sample with the very same vector in this space
        assert df["score"].iloc[0] == pytest.approx(own["score"].iloc[0], abs=1e-6)
        assert own["score"].iloc[0] == pytest.approx(1.0, abs=2e-3)
    # signatures differ between samples: the map is not a single point
    assert np.linalg.matrix_rank(X) > 10


def _brute_force(X, xq, space, mask, L, H, k, allowed=None):
    """Exact masked search in numpy over the stored vectors, without signatures.query_vector."""
    d = L * H
    Z = X.reshape(len(X), 3, d)
    q = xq.reshape(3, d)
    m = np.ones(d, bool) if mask is None else mask.reshape(-1)
    blocks = [0, 1, 2] if space == "all" else [signatures.BLOCKS.index(space)]
    scores = np.zeros(len(X))
    for b in blocks:
        qb = np.where(m, q[b], 0.0)
        scores += Z[:, b] @ qb / np.linalg.norm(qb) * np.sqrt(3)
    scores /= len(blocks)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    top = np.lexsort((np.arange(len(X)), -scores))[:k]
    return scores[top], top


@pytest.mark.real_model
@pytest.mark.glue
def test_real_head_mask_queries_match_brute_force(real_index):
    idx = real_index
    L, H = idx.num_layers, idx.num_heads
    X = idx.vectors()  # what FAISS stores
    rng = np.random.default_rng(0)
    masks = [None, idx.heads_mask("5:*"), idx.heads_mask("0:1,3:5,4:7"), rng.random((L, H)) < 0.25]
    for space in signatures.SPACES:
        for mask in masks:
            for sid in ("mrpc-dev-0", "mrpc-dev-17", "mrpc-dev-40"):
                row = idx.row_of(sid)
                df = idx.query(sample_id=sid, space=space, heads=mask, k=8)
                # the query vector is the sample's own stored vector, before float16 rounding
                xq = idx.embed_usage(idx.usage([row]))[0]
                want_s, want_rows = _brute_force(X, xq, space, mask, L, H, 8)
                want_s = np.clip(want_s, -1.0, 1.0)  # scores are cosines: float16 rounding past ±1 is clipped
                np.testing.assert_allclose(df["score"].to_numpy(), want_s, atol=1e-5)
                # same rows up to the order of (near-)ties
                assert set(df["row"]) == set(want_rows) or np.allclose(np.sort(df["score"]), np.sort(want_s), atol=1e-5)
                assert df["row"].iloc[0] == want_rows[0] or abs(df["score"].iloc[0] - want_s[0]) < 1e-5
    # a filter restricts the brute force the same way
    allowed = (idx.metadata["label"] == 0).to_numpy()
    df = idx.query(sample_id="mrpc-dev-3", space="diff", heads="4:*", k=5, filters={"label": 0})
    query = idx.embed_usage(idx.usage([3]))[0]
    want_s, want_rows = _brute_force(X, query, "diff", idx.heads_mask("4:*"), L, H, 5, allowed)
    want_s = np.clip(want_s, -1.0, 1.0)
    np.testing.assert_allclose(df["score"].to_numpy(), want_s, atol=1e-5)
    assert (df["label"] == 0).all()


@pytest.mark.real_model
@pytest.mark.glue
def test_real_query_by_new_pair(real_index, minilm_pair, mrpc):
    idx = real_index
    i = 11
    r = minilm_pair.run(mrpc[i]["sentence_a"], mrpc[i]["sentence_b"])
    for space in ("all", "diff"):
        df = idx.query(result=r, space=space, k=3)
        assert df["id"].iloc[0] == mrpc[i]["id"] and df["score"].iloc[0] == pytest.approx(1.0, abs=2e-3)
    # sentences instead of a PairResult: run through the pair the index was opened with
    df = idx.query(result=(mrpc[i]["sentence_a"], mrpc[i]["sentence_b"]), k=1)
    assert df["id"].iloc[0] == mrpc[i]["id"]
    # a genuinely new pair gets neighbours with scores below 1
    df = idx.query(result=minilm_pair.run("The cat sat on the mat.", "A cat was sitting on a mat."), k=5)
    assert len(df) == 5 and (df["score"] < 0.999).all() and df["score"].is_monotonic_decreasing


@pytest.mark.real_model
@pytest.mark.glue
def test_real_filters_and_exclude_self(real_index):
    idx = real_index
    md = idx.metadata
    label_name = md["label_name"].iloc[0]
    for filters, check in (
        ({"label": label_name}, lambda d: (d["label_name"] == label_name).all()),
        ({"label": int(md["label"].iloc[0])}, lambda d: (d["label"] == md["label"].iloc[0]).all()),
        ({"correct": False}, lambda d: (~d["correct_fine"].astype(bool)).all()),
        ({"correct": True}, lambda d: d["correct_fine"].astype(bool).all()),
        ({"prediction": "equivalent"}, lambda d: (d["pred_fine"] == "equivalent").all()),
        ({"text": "the"}, lambda d: all("the" in a.lower() or "the" in b.lower()
                                        for a, b in zip(d["sentence_a"], d["sentence_b"], strict=True))),
    ):
        mask = idx.select(filters)
        df = idx.query(sample_id="mrpc-dev-2", k=50, filters=filters)
        assert len(df) == min(50, int(mask.sum())) and check(df)
    df = idx.query(sample_id="mrpc-dev-2", k=5, exclude_self=True)
    assert "mrpc-dev-2" not in set(df["id"]) and len(df) == 5
    # a filter nothing passes: an empty result, not an error
    assert idx.query(sample_id="mrpc-dev-2", k=5, filters={"text": "zzz-no-such-text"}).empty
    with pytest.raises(ValueError, match="unknown label 'paraphrase'"):
        idx.select({"label": "paraphrase"})
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        idx.select({"colour": "red"})


# ----------------------------------------------------------------------------------------------------
# mechanics on the tiny pair
# ----------------------------------------------------------------------------------------------------


def test_approximate_index_above_exact_limit(sharp_pair, mrpc, tiny_index, tmp_path):
    out = build_index(sharp_pair, mrpc, "mrpc", tmp_path / "approx", tau=0.3, limit=40, shard_size=8,
                      exact_limit=10, progress=False)
    approx, exact = SignatureIndex.open(out), SignatureIndex.open(tiny_index)
    assert approx.manifest["index"]["kind"] == "approximate" and "HNSW" in approx.manifest["index"]["factory"]
    assert exact.manifest["index"]["kind"] == "exact"
    np.testing.assert_array_equal(approx.usage(), exact.usage())
    for sid in ("mrpc-dev-1", "mrpc-dev-20"):
        for space, heads in (("all", None), ("diff", "1:*")):
            a = approx.query(sample_id=sid, space=space, heads=heads, k=5)
            e = exact.query(sample_id=sid, space=space, heads=heads, k=5)
            # "diff 1:*" needs 8 usage columns: ranked from them in float32, not from the float16 vectors
            np.testing.assert_allclose(a["score"].to_numpy(), e["score"].to_numpy(),
                                       atol=1e-5 if heads is None else 2e-3)
    # masked queries search harder: efSearch grows as max((1/f)^0.9, (1/(3 f))^1.5), f = the share of
    # dims the query keeps
    x = approx.embed_usage(approx.usage([1]))[0]
    base = approx.manifest["index"]["search"]["efSearch"]
    assert approx.search_effort(signatures.query_vector(x, "all", None, L=2, H=4)) == {"efSearch": base}
    diff = signatures.query_vector(x, "diff", None, L=2, H=4)
    assert approx.search_effort(diff) == {"efSearch": round(base * 3 ** 0.9)}
    one_head = approx.heads_mask("1:2")
    diff_one_head = signatures.query_vector(x, "diff", one_head, L=2, H=4)
    assert approx.search_effort(diff_one_head) == {"efSearch": round(base * 8 ** 1.5)}
    assert exact.search_effort(signatures.query_vector(x, "diff", one_head, L=2, H=4)) == {}
    # ... and a narrow head mask (few usage columns) is ranked exactly from the head-major usage
    q = signatures.query_vector(x, "diff", one_head, L=2, H=4)
    assert approx.usage_columns(q) == [(0, 6), (1, 6)]  # u_pre and u_fine of head 1:2
    Xf = approx.embed_usage(approx.usage())  # every sample's float32 vector
    for allowed in (None, (approx.metadata["label"] == 1).to_numpy()):
        scores, rows = approx.search_vector(q, 6, allowed)
        want = np.where(allowed, Xf @ q, -np.inf) if allowed is not None else Xf @ q
        top = np.lexsort((np.arange(len(want)), -want))[:6]
        np.testing.assert_allclose(scores, want[top], atol=1e-5)
        assert list(rows) == list(top) or np.allclose(np.sort(want[rows]), np.sort(want[top]), atol=1e-5)
    e = exact.query(sample_id="mrpc-dev-1", space="diff", heads="1:2", k=6)
    a = approx.query(sample_id="mrpc-dev-1", space="diff", heads="1:2", k=6)
    np.testing.assert_allclose(a["score"].to_numpy(), e["score"].to_numpy(), atol=2e-3)  # float16 storage
    # a narrow filter on an approximate index is ranked exactly
    a = approx.query(sample_id="mrpc-dev-1", k=3, filters={"ids": ["mrpc-dev-5", "mrpc-dev-7", "mrpc-dev-9"]})
    assert sorted(a["id"]) == ["mrpc-dev-5", "mrpc-dev-7", "mrpc-dev-9"]
    # a custom factory string
    out = build_index(sharp_pair, mrpc, "mrpc", tmp_path / "ivf", tau=0.3, limit=40, shard_size=8,
                      factory="IVF2,Flat", progress=False)
    ivf = SignatureIndex.open(out)
    assert ivf.manifest["index"]["kind"] == "custom" and ivf.manifest["index"]["search"] == {"nprobe": 32}
    assert ivf.query(sample_id="mrpc-dev-3", k=1)["id"].iloc[0] == "mrpc-dev-3"
    with pytest.raises(ValueError, match="factory string 'Nonsense42'"):
        build_index(sharp_pair, mrpc, "mrpc", tmp_path / "bad", tau=0.3, limit=40, factory="Nonsense42", progress=False)


def test_resume_after_interruption(sharp_pair, mrpc, tiny_index, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    rec = Recorder(sharp_pair, fail_after=2)
    monkeypatch.setattr(sharp_pair, "usage_batch", rec)
    with pytest.raises(KeyboardInterrupt):
        build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, limit=40, shard_size=8, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["num_shards"] == 5
    done = sorted(p.name for p in (out / "shards").iterdir())
    assert done == ["shard-00000.heads.npy", "shard-00000.npy", "shard-00000.parquet",
                    "shard-00001.heads.npy", "shard-00001.npy", "shard-00001.parquet"]
    with pytest.raises(IndexFileError, match="incomplete.*2 of 5 shards.*resume"):
        SignatureIndex.open(out)
    # a crash while writing shard 2: its .npy written, its parquet (the commit point) not, plus a temp file
    shutil.copy(out / "shards" / "shard-00000.npy", out / "shards" / "shard-00002.npy")
    (out / "shards" / ".shard-00002.parquet.tmp-1").write_bytes(b"partial")

    rec2 = Recorder(sharp_pair)
    monkeypatch.setattr(sharp_pair, "usage_batch", rec2)
    build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, limit=40, shard_size=8, progress=False)
    ran = [tuple(p) for p in rec2.seen]
    rest = mrpc[16:40]
    expected = list(zip(rest["sentence_a"], rest["sentence_b"], strict=True))
    assert sorted(ran) == sorted(expected) and len(ran) == 24, (
        "finished shards were run again, or unfinished ones skipped")
    resumed, fresh = SignatureIndex.open(out), SignatureIndex.open(tiny_index)
    np.testing.assert_array_equal(resumed.usage(), fresh.usage())
    np.testing.assert_array_equal(resumed.vectors(), fresh.vectors())
    assert resumed.metadata.equals(fresh.metadata)
    assert not (out / "shards").exists()

    # a complete index with the same settings is returned as it is, without running anything
    rec3 = Recorder(sharp_pair)
    monkeypatch.setattr(sharp_pair, "usage_batch", rec3)
    build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, limit=40, shard_size=8, progress=False)
    assert rec3.calls == 0


def test_build_refuses_other_settings_in_out(sharp_pair, mrpc, tiny_index, tmp_path):
    out = tmp_path / "idx"
    shutil.copytree(tiny_index, out)
    with pytest.raises(IndexMismatchError, match=r"--overwrite.*tau: existing 0\.3, requested 0\.2"):
        build_index(sharp_pair, mrpc, "mrpc", out, tau=0.2, limit=40, shard_size=8, progress=False)
    with pytest.raises(IndexMismatchError, match=r"corpus \(ids or sentences\)"):
        build_index(sharp_pair, mrpc, "mrpc", out, tau=0.3, limit=39, shard_size=8, progress=False)
    build_index(sharp_pair, mrpc, "mrpc", out, tau=0.2, limit=40, shard_size=8, progress=False, overwrite=True)
    assert SignatureIndex.open(out).tau == 0.2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(IndexFileError, match="not an attnflows index"):
        build_index(sharp_pair, mrpc, "mrpc", other, limit=8, progress=False)
    with pytest.raises(IndexFileError, match=r"holds other files \(\['notes.txt'\]\)"):
        build_index(sharp_pair, mrpc, "mrpc", other, limit=8, progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_build_input_errors(sharp_pair, mrpc, tmp_path):
    for kwargs, msg in (
        ({"tau": 1.5}, r"tau must be in \(0, 1\)"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"shard_size": 0}, "shard_size must be a positive int"),
        ({"limit": 0}, "limit must be a positive int"),
    ):
        with pytest.raises(ValueError, match=msg):
            build_index(sharp_pair, mrpc, "mrpc", tmp_path / "x", progress=False, **kwargs)
    dup = mrpc.select([0, 1, 1])
    with pytest.raises(ValueError, match=r"1 duplicate ids \(e.g. \['mrpc-dev-1'\]\)"):
        build_index(sharp_pair, dup, "mrpc", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="lacks the column"):
        build_index(sharp_pair, mrpc.remove_columns(["sentence_b"]), "mrpc", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="empty"):
        build_index(sharp_pair, mrpc.select([]), "mrpc", tmp_path / "x", progress=False)


def test_length_buckets_within_a_token_budget():
    """buckets_by_length: length-sorted (stable), at most batch_size pairs and, with max_tokens, at most
    that many padded tokens (pairs x longest) per batch; a pair longer than the budget runs alone."""
    from attnflows_panel.index import buckets_by_length

    rng = np.random.default_rng(3)
    lengths = np.concatenate([rng.integers(8, 40, 70), rng.integers(100, 300, 30), [700, 20, 20]])
    plain = buckets_by_length(lengths, 32)
    assert [len(b) for b in plain] == [32, 32, 32, 7]
    for budget in (2048, 512, 100):
        buckets = buckets_by_length(lengths, 32, budget)
        order = np.concatenate(buckets)
        np.testing.assert_array_equal(order, np.argsort(lengths, kind="stable"))  # every pair once, in order
        for b in buckets:
            assert 1 <= len(b) <= 32
            assert len(b) == 1 or len(b) * lengths[b].max() <= budget
        # greedy: no batch could have taken the next pair
        for b, nxt in itertools.pairwise(buckets):
            assert len(b) == 32 or (len(b) + 1) * lengths[nxt[0]] > budget
        if budget < 700:  # longer than the budget: alone
            assert [len(b) for b in buckets if lengths[b].max() >= 700] == [1]
    assert len(buckets_by_length(lengths, 32, 2048)) > len(plain)  # the long pairs are cut smaller
    assert [len(b) for b in buckets_by_length(lengths[:70], 32, 2048)] == [32, 32, 6]  # short pairs: unchanged
    assert buckets_by_length([], 32, 2048) == []
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="max_tokens must be a positive int or None"):
            buckets_by_length(lengths, 32, bad)


def test_resolve_max_tokens():
    from attnflows_panel.index import DEFAULT_MAX_TOKENS, resolve_max_tokens

    assert resolve_max_tokens(None, "cpu") == DEFAULT_MAX_TOKENS == 2048
    assert resolve_max_tokens(None, None) == DEFAULT_MAX_TOKENS
    assert resolve_max_tokens(None, "cuda:0") is None  # a GPU wants full batches
    assert resolve_max_tokens(0, "cpu") is None
    assert resolve_max_tokens(512, "cuda") == 512
    for bad in (-1, 2.5, True, "many"):
        with pytest.raises(ValueError, match=r"max_tokens must be a positive int, 0 \(no budget\)"):
            resolve_max_tokens(bad, "cpu")


def test_a_token_budget_changes_the_batches_not_the_index(sharp_pair, mrpc, tiny_index, tmp_path, monkeypatch):
    """The same corpus indexed in batches within 64 tokens (many small batches) and with no budget gives
    the same usage, head change and metadata as the default build (tiny_index, 2048 tokens)."""

    ref = SignatureIndex.open(tiny_index)
    for budget, expect_more in ((64, True), (0, False)):
        rec = Recorder(sharp_pair)
        monkeypatch.setattr(sharp_pair, "usage_batch", rec)
        out = build_index(sharp_pair, mrpc, "mrpc", tmp_path / f"b{budget}", tau=0.3, limit=40, shard_size=8,
                          progress=False, max_tokens=budget)
        monkeypatch.undo()
        got = SignatureIndex.open(out)
        np.testing.assert_array_equal(got.usage(), ref.usage())
        np.testing.assert_array_equal(np.load(out / "head_change.npy"), np.load(tiny_index / "head_change.npy"))
        cols = ["id", "pred_pre", "pred_fine", "n_tokens", "truncated"]
        assert got.metadata[cols].equals(ref.metadata[cols])
        assert (rec.calls > 5) == expect_more  # 40 pairs in shards of 8: 5 batches without a small budget
    with pytest.raises(ValueError, match="max_tokens must be a positive int, 0"):
        build_index(sharp_pair, mrpc, "mrpc", tmp_path / "bad", limit=8, progress=False, max_tokens=-3)
    assert not (tmp_path / "bad").exists()


def test_manifest_checks_against_the_loaded_pair(tiny_index, sharp_pair, sharp_bert_dirs, tiny_bert_dirs):
    from attnflows_panel.models import ModelPair

    SignatureIndex.open(tiny_index, pair=sharp_pair)  # the same models: accepted
    other_fine = ModelPair.load(str(sharp_bert_dirs[0]), str(tiny_bert_dirs[1]))
    with pytest.raises(IndexMismatchError, match="fine-tuned model weights") as err:
        SignatureIndex.open(tiny_index, pair=other_fine)
    assert "pre-trained" not in str(err.value)
    both = ModelPair.load(str(tiny_bert_dirs[0]), str(tiny_bert_dirs[1]))
    with pytest.raises(IndexMismatchError, match="pre-trained model weights.*fine-tuned model weights"):
        SignatureIndex.open(tiny_index, pair=both)
    idx = SignatureIndex.open(tiny_index)
    with pytest.raises(IndexMismatchError, match="fine-tuned model weights"):
        idx.check_pair(other_fine)
    # shapes: a pair with the same fingerprint but other [layers, heads]
    fake = SimpleNamespace(fingerprint=sharp_pair.fingerprint, num_layers=12, num_heads=4)
    with pytest.raises(IndexMismatchError, match="num layers: index has 2, loaded models have 12"):
        idx.check_pair(fake)
    # no weights hash on either side: the names decide
    fp = {r: {"name": v["name"], "weights_sha256": None} for r, v in sharp_pair.fingerprint.items()}
    fp["finetuned"]["name"] = "someone/else"
    with pytest.raises(IndexMismatchError, match="fine-tuned model: index built from .* loaded 'someone/else'"):
        idx.check_pair(SimpleNamespace(fingerprint=fp, num_layers=2, num_heads=4))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(path: Path, **changes) -> None:
    m = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            m.pop(key, None)
        else:
            m[key] = value
    write_manifest(path / "manifest.json", m)  # as a build writes it (its own checksum matches)


def test_corrupt_and_missing_files(tiny_index, tmp_path):
    with pytest.raises(FileNotFoundError, match="no index folder"):
        SignatureIndex.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        SignatureIndex.open(tmp_path / "empty")

    p = _copy(tiny_index, tmp_path / "a")
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFileError, match="manifest.json is corrupt"):
        SignatureIndex.open(p)

    p = _copy(tiny_index, tmp_path / "b")
    data = (p / "signatures.faiss").read_bytes()
    (p / "signatures.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"signatures.faiss is corrupt: \d+ bytes, the manifest recorded"):
        SignatureIndex.open(p)

    p = _copy(tiny_index, tmp_path / "c")
    (p / "signatures.faiss").write_bytes(b"\x00" * len(data))  # right size, garbage: the checksum says so
    with pytest.raises(IndexFileError, match="signatures.faiss is corrupt: its checksum is .* the manifest recorded"):
        SignatureIndex.open(p)
    _edit_manifest(p, checksums={})  # an index without checksums, opened unverified: the reader refuses the garbage
    with pytest.raises(IndexFileError, match="signatures.faiss is corrupt or not a FAISS index"):
        SignatureIndex.open(p, verify=False)

    p = _copy(tiny_index, tmp_path / "d")
    size = (p / "metadata.parquet").stat().st_size
    (p / "metadata.parquet").write_bytes(b"x" * size)
    with pytest.raises(IndexFileError, match="metadata.parquet is corrupt: its checksum"):
        SignatureIndex.open(p)
    _edit_manifest(p, checksums={})
    with pytest.raises(IndexFileError, match="metadata file .* is corrupt or not parquet"):
        SignatureIndex.open(p, verify=False)

    p = _copy(tiny_index, tmp_path / "e")
    (p / "usage.npy").unlink()
    with pytest.raises(IndexFileError, match="missing usage.npy"):
        SignatureIndex.open(p)

    # no pickle: an object array in usage.npy is refused, never unpickled
    p = _copy(tiny_index, tmp_path / "f")
    np.save(p / "usage.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _edit_manifest(p, files={}, checksums={})
    with pytest.raises(IndexFileError, match="usage file .* is corrupt or not a .npy array"):
        SignatureIndex.open(p, verify=False)

    # files that parse but disagree with each other
    p = _copy(tiny_index, tmp_path / "g")
    np.save(p / "usage.npy", np.zeros((3, 2, 2, 4), np.float16))  # should be [2, L, H, N] = [2, 2, 4, 40]
    _edit_manifest(p, files={}, checksums={})
    with pytest.raises(IndexFileError, match=r"inconsistent: usage shape \(3, 2, 2, 4\)"):
        SignatureIndex.open(p, verify=False)

    p = _copy(tiny_index, tmp_path / "h")
    _edit_manifest(p, signature_version=0)
    with pytest.raises(IndexMismatchError, match="signature version: index has 0"):
        SignatureIndex.open(p)

    p = _copy(tiny_index, tmp_path / "i")
    _edit_manifest(p, format="something-else")
    with pytest.raises(IndexFileError, match="not an attnflows signature index"):
        SignatureIndex.open(p)


def _flip_bit(path: Path, offset: int | None = None, bit: int = 6) -> None:
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["signatures.faiss", "usage.npy", "norms.npy", "metadata.parquet", "id_map.parquet"])
def test_a_bit_flip_is_found_on_open_and_named(tiny_index, tmp_path, name):
    """Same-size corruption, which sizes cannot see: the manifest's checksums find it, naming the file."""
    m = json.loads((tiny_index / "manifest.json").read_text())
    assert m["checksums"]["algorithm"] == "xxh3_64"
    assert set(m["checksums"]["files"]) == set(m["files"]) >= {
        "signatures.faiss", "usage.npy", "norms.npy", "center.npy", "metadata.parquet", "id_map.parquet"}
    p = _copy(tiny_index, tmp_path / "x")
    size = (p / name).stat().st_size
    _flip_bit(p / name)
    assert (p / name).stat().st_size == size
    with pytest.raises(IndexFileError, match=rf"{name} is corrupt: its checksum is [0-9a-f]+, the manifest recorded"):
        SignatureIndex.open(p)
    report = __import__("attnflows_panel.index", fromlist=["verify_index"]).verify_index(p)
    assert len(report["problems"]) == 1 and name in report["problems"][0]


def test_verify_checks_contents_and_the_cli_reports_it(tiny_index, tmp_path, capsys):
    from attnflows_panel.cli import main
    from attnflows_panel.index import record_files, verify_index

    report = verify_index(tiny_index)
    assert report["problems"] == [] and report["count"] == 40
    assert "FAISS vectors = embedded usage" in report["checked"]
    assert main(["index", "verify", "--index", str(tiny_index)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "40 samples" in out and "signatures.faiss" in out

    # files that were re-recorded after an edit pass the checksums, but not the content checks
    p = _copy(tiny_index, tmp_path / "edited")
    norms = np.load(p / "norms.npy")
    norms[0, 3] += 0.5
    np.save(p / "norms.npy", norms)
    m = json.loads((p / "manifest.json").read_text())
    record_files(p, m)
    write_manifest(p / "manifest.json", m)
    SignatureIndex.open(p)  # the checksums match what is there now
    problems = verify_index(p)["problems"]
    assert len(problems) == 1 and "norms.npy differs from the norms of" in problems[0]
    assert main(["index", "verify", "--index", str(p)]) == 1
    err = capsys.readouterr().err
    assert "norms.npy" in err and "Traceback" not in err

    p = _copy(tiny_index, tmp_path / "flipped")
    _flip_bit(p / "usage.npy")
    assert main(["index", "verify", "--index", str(p)]) == 1
    assert "usage.npy is corrupt: its checksum" in capsys.readouterr().err


def test_checksums_cover_every_file_the_manifest_lists(tiny_index, tmp_path):
    """A file another part of the build adds (and lists in the manifest) is checked like the others."""
    from attnflows_panel.index import record_files

    p = _copy(tiny_index, tmp_path / "extra")
    np.save(p / "head_change.npy", np.arange(40, dtype=np.float32))
    m = json.loads((p / "manifest.json").read_text())
    m["files"]["head_change.npy"] = 0  # listed by its writer
    record_files(p, m)
    assert "head_change.npy" in m["checksums"]["files"]
    write_manifest(p / "manifest.json", m)
    SignatureIndex.open(p)
    _flip_bit(p / "head_change.npy", offset=(p / "head_change.npy").stat().st_size - 3)
    with pytest.raises(IndexFileError, match="head_change.npy is corrupt: its checksum"):
        SignatureIndex.open(p)
    (p / "head_change.npy").unlink()
    with pytest.raises(IndexFileError, match="missing head_change.npy"):
        SignatureIndex.open(p)


def test_a_score_outside_minus_one_one_is_an_error(tiny_index, tmp_path):
    """Damage that slips past the checksums (an index from before them, opened without verification)
    still never answers with a cosine above 1: scores up to 831.8 came back before."""
    import faiss

    from attnflows_panel.index import make_faiss_index

    p = _copy(tiny_index, tmp_path / "scaled")
    idx = SignatureIndex.open(p)
    vectors = idx.vectors() * 800.0
    faiss.write_index(make_faiss_index(vectors, "SQfp16"), str(p / "signatures.faiss"))
    _edit_manifest(p, files={}, checksums={})
    idx = SignatureIndex.open(p, verify=False)
    damaged = r"similarity score of .* scores are cosines in \[-1, 1\].*attnflows index verify"
    with pytest.raises(IndexFileError, match=damaged):
        idx.query(sample_id="mrpc-dev-3")
    # an intact index: every score lies in [-1, 1]
    good = SignatureIndex.open(tiny_index)
    for space in ("pre", "fine", "diff", "all"):
        scores = good.query(sample_id="mrpc-dev-3", space=space, k=40)["score"].to_numpy()
        assert np.all(scores <= 1.0) and np.all(scores >= -1.0)


def test_unknown_ids_and_bad_queries(tiny_index):
    idx = SignatureIndex.open(tiny_index)
    with pytest.raises(UnknownSampleError, match=r"unknown sample id 'mrpc-dev-999'.*40 samples"):
        idx.query(sample_id="mrpc-dev-999")
    with pytest.raises(UnknownSampleError, match="unknown sample id 'nope'"):
        idx.rows_of(["mrpc-dev-1", "nope"])
    np.testing.assert_array_equal(idx.rows_of(["mrpc-dev-7", "mrpc-dev-0", "mrpc-dev-31"]), [7, 0, 31])
    with pytest.raises(ValueError, match="exactly one of sample_id"):
        idx.query()
    with pytest.raises(ValueError, match="unknown search space 'both'"):
        idx.query(sample_id="mrpc-dev-1", space="both")
    with pytest.raises(ValueError, match="layer 2 out of range 0..1"):
        idx.query(sample_id="mrpc-dev-1", heads="2:0")
    with pytest.raises(ValueError, match="k must be a positive int"):
        idx.query(sample_id="mrpc-dev-1", k=0)
    with pytest.raises(ValueError, match="needs the models"):
        idx.query(result=("a b", "c d"))
    with pytest.raises(TypeError, match="PairResult"):
        idx.query(result=42)
    # the id map is the persisted one: rows_of never scans the metadata
    assert (tiny_index / "id_map.parquet").exists()


def test_pca_map_and_head_usage(tiny_index):
    idx = SignatureIndex.open(tiny_index)
    coords, ratio = idx.pca()
    assert coords.shape == (len(idx), 2) and np.isfinite(coords).all()
    assert 0 < ratio[1] <= ratio[0] <= 1
    # the map is the projection of the vectors: projecting a stored sample lands on its point
    row = 13
    np.testing.assert_allclose(idx.pca_project(idx.embed_usage(idx.usage([row]))), coords[[row]], atol=1e-5)
    diff = idx.head_usage([1, 2, 3], block="diff")
    u = idx.usage([1, 2, 3])
    np.testing.assert_allclose(diff, (u[:, 1] - u[:, 0]).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(idx.head_usage(block="pre"), idx.usage()[:, 0].mean(axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="unknown block"):
        idx.head_usage(block="both")


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------


def test_cli_build_query_info(sharp_bert_dirs, glue_dir, tmp_path, capsys):
    from attnflows_panel.cli import main

    out = tmp_path / "cli-index"
    rc = main(["index", "build", "--pretrained", str(sharp_bert_dirs[0]), "--finetuned", str(sharp_bert_dirs[1]),
               "--data", str(glue_dir / "MRPC"), "--task", "mrpc", "--split", "dev", "--limit", "24",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "indexed 24 samples" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["tau"] == 0.3  # no --tau, not the default pair: the paper's

    assert main(["index", "query", "--index", str(out), "--id", "mrpc-dev-4", "--k", "3", "--space", "diff",
                 "--heads", "2:*"]) == 0
    text = capsys.readouterr().out
    assert "3 results for sample 'mrpc-dev-4', space=diff, heads=2:*" in text  # heads counted from 1, as in the app
    lines = text.splitlines()
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("----")) + 1:]
    assert len(rows) == 3 and "mrpc-dev-4" in rows[0]
    # the same heads as the Python API's 0-based spec "1:*" (the second layer)
    want = SignatureIndex.open(out).query(sample_id="mrpc-dev-4", k=3, space="diff", heads="1:*")
    assert [row.split()[2] for row in rows] == want["id"].tolist()

    assert main(["index", "query", "--index", str(out), "--id", "mrpc-dev-4", "--k", "2", "--json",
                 "--correct", "no"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(recs) <= 2 and all(r["correct_fine"] is False for r in recs)

    # a new pair: the models come from the manifest
    argv = ["index", "query", "--index", str(out), "--a", "The cat sat.", "--b", "A cat was sitting.", "--k", "2"]
    assert main(argv) == 0
    assert "2 results for new pair" in capsys.readouterr().out

    assert main(["index", "info", "--index", str(out)]) == 0
    info = capsys.readouterr().out
    assert "24" in info and "2 layers x 4 heads" in info

    for argv, msg in (
        (["--id", "nope"], "unknown sample id 'nope'"),
        (["--id", "mrpc-dev-1", "--heads", "7:1"], "layer 7 is out of range"),
        (["--id", "mrpc-dev-1", "--heads", "1:0"], "heads count from 1 to 4"),
        (["--a", "only one"], "--a needs --b"),
    ):
        assert main(["index", "query", "--index", str(out), *argv]) == 1
        assert msg in capsys.readouterr().err
    assert main(["index", "query", "--index", str(tmp_path / "missing"), "--id", "x"]) == 1
    assert "no index folder" in capsys.readouterr().err
