"""A FAISS index of head-usage signatures: find sentence pairs whose attention behaves alike.

The paper's future work ("querying sentence pairs that contain similar patterns in self-attention"):
every sample of a corpus is run through both models, its two Attention Graphs (§4.1) at threshold τ
give its head usage (:mod:`attnflows_panel.signatures`), and the derived vectors go into one
inner-product index that answers queries by example, in the space of the pre-trained block, the
fine-tuned block, their difference or all three, restricted to chosen heads by masking the query.

```python
from attnflows_panel.index import build_index, SignatureIndex
path = build_index(pair, "glue/mrpc", "mrpc", "index/mrpc-dev", split="validation", tau=0.3)
idx = SignatureIndex.open(path, pair=pair)          # refuses an index built from other models
idx.query(sample_id="1355540", space="diff", heads="4:*,5:3", k=10, filters={"correct": False})
idx.query(result=pair.run("A man plays.", "Someone is playing."), space="fine")
```

Layout of an index folder (no pickle anywhere; FAISS's own format, parquet, JSON, ``.npy``):

    manifest.json       fingerprints of both models, τ, signature version, dims, count, creation time,
                        index kind/factory, the size and XXH3-64 checksum of every file (checked when
                        the index opens; :func:`verify_index` checks the files against each other too), and
                        ``label_reconciliation``: per corpus task, whether the fine-tuned model's labels
                        match the corpus's (README.md, "Tasks, labels and fine-tuning")
    signatures.faiss    the search vectors (:func:`attnflows_panel.signatures.embed`), FAISS format
    usage.npy           float16 [2, L, H, N]: head usage u_pre, u_fine per sample (what vectors derive from),
                        head-major so that one head's values over the corpus are contiguous
    norms.npy           float32 [3, N]: ||s_b - μ_b|| per block and sample (the vectors' normalisers)
    center.npy          float32 [3, L*H]: the corpus means μ_b used to centre the blocks
    metadata.parquet    one row per sample, row i = FAISS id i: id, sentences, label, both predictions,
                        correct flags (None where the label sets differ), token count, truncation flag
    id_map.parquet      the persisted id → row map (ids sorted, with their rows; binary search, no scan)
    head_change.npy     uint8 [N, 2, L, H]: per-sample cosine and JSD between the two models' attention of
                        each head (:mod:`attnflows_panel.heads`, 8-bit square-root codes), computed in the
                        same forward pass; indexes built before it lack the file (rebuild for it)
    shards/             while building: shard-NNNNN.npy (float32 usage) + shard-NNNNN.heads.npy (uint8 head
                        change) + shard-NNNNN.parquet (metadata)

Build. Samples are cut into shards of ``shard_size`` consecutive corpus rows. Within a shard, pairs are
tokenised once (:func:`encode_shard`), cut into length buckets (:func:`buckets_by_length`: each batch
padded only to its longest pair, and on the CPU within :data:`DEFAULT_MAX_TOKENS` tokens) and run through :meth:`ModelPair.usage_batch` (:func:`compute_batch`), which counts the signatures on the
attention tensors where the models computed them. The plan (:func:`plan_build`), the per-bucket step
and the shard writer (:class:`ShardWriter`) are shared by the local engine (:func:`build_index`) and
the Ray Data engine (:func:`attnflows_panel.index_ray.build_index_ray`), so both write the same files. A shard's two files are written to temporaries and renamed, the parquet last, so a shard
is finished exactly when its parquet exists; an interrupted build, rerun with the same options, skips
finished shards. When all shards exist they are consolidated, the FAISS index is built and the shards
are removed (``keep_shards=True`` keeps them).

Index kinds. Up to ``exact_limit`` samples (default 100 000) the index is exhaustive: FAISS
``"SQfp16"`` with inner product compares the query with every stored vector (stored as float16, a
relative rounding of 5e-4 on unit vectors, which halves the bytes per sample). Above it,
``APPROX_FACTORY`` (an HNSW graph over float16 vectors, searched with ``efSearch`` from the manifest,
widened for queries that keep few dims: :meth:`SignatureIndex.search_effort`) keeps single queries in
milliseconds at a million samples; ``factory=`` picks any other ``faiss.index_factory`` string.
benchmarks/bench_index.py measures latency, recall and bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from attnflows_panel import heads as HD
from attnflows_panel import signatures as S
from attnflows_panel._io import CHECKSUM_ALGORITHM, atomic_path, atomic_write, file_checksum, file_lock, status


__all__ = [
    "build_index",
    "plan_build",
    "finish_build",
    "compute_batch",
    "length_buckets",
    "buckets_by_length",
    "encode_shard",
    "BuildPlan",
    "ShardWriter",
    "build_lock",
    "verify_files",
    "verify_index",
    "record_files",
    "SignatureIndex",
    "IndexFileError",
    "IndexMismatchError",
    "UnknownSampleError",
    "LabelMismatchError",
    "reconcile_corpus_labels",
    "FORMAT",
    "FORMAT_VERSION",
    "EXACT_FACTORY",
    "APPROX_FACTORY",
    "DEFAULT_EXACT_LIMIT",
    "DEFAULT_SHARD_SIZE",
    "manifest_differences",
    "write_index",
    "choose_factory",
    "make_faiss_index",
    "result_usage",
]

log = logging.getLogger(__name__)

FORMAT = "attnflows-signature-index"
FORMAT_VERSION = 1
#: exhaustive inner-product search over float16 vectors
EXACT_FACTORY = "SQfp16"
#: approximate search above ``exact_limit`` (see benchmarks/bench_index.py for the measured trade-off)
APPROX_FACTORY = "HNSW32,SQfp16"
APPROX_SEARCH = {"efSearch": 96}
APPROX_BUILD = {"efConstruction": 40}
DEFAULT_EXACT_LIMIT = 100_000
DEFAULT_SHARD_SIZE = 1024
#: The CPU's token budget of one forward batch (:func:`buckets_by_length`): pairs x longest pair at most
#: this many tokens, so a batch of long pairs is cut smaller. A layer's attention weights grow with
#: batch x tokens², and once they outgrow the CPU's cache every pass over them (softmax, the weighted
#: sum, the signatures, the head change) waits on memory: on RTE dev (median 53 tokens, up to 253) the
#: two MiniLM forward passes alone take 5.1-5.2 s in batches of 32 within 2,048 tokens against 6.2-6.3 s
#: in plain batches of 32 (2 cores; benchmarks/README.md, P2), and on MRPC dev (up to 86 tokens) they are
#: the same. GPUs want full batches: there the default is no budget (:func:`resolve_max_tokens`).
DEFAULT_MAX_TOKENS = 2048

MANIFEST = "manifest.json"
INDEX_FILE = "signatures.faiss"
USAGE_FILE = "usage.npy"
NORMS_FILE = "norms.npy"
CENTER_FILE = "center.npy"
METADATA_FILE = "metadata.parquet"
IDMAP_FILE = "id_map.parquet"
SHARD_DIR = "shards"
#: per-sample head change (cosine, JSD), uint8 [N, 2, L, H]; optional (older indexes lack it)
HEAD_CHANGE_FILE = "head_change.npy"
_DATA_FILES = (INDEX_FILE, USAGE_FILE, NORMS_FILE, CENTER_FILE, METADATA_FILE, IDMAP_FILE)
#: approximate indexes rank a query that needs at most this many usage columns (model, layer, head)
#: exactly, from the head-major usage, instead of through the graph (see SignatureIndex.search_vector)
EXACT_COLUMNS = 8

#: how far past ±1 a score may lie from float16 rounding before it counts as damage (see SignatureIndex._checked)
SCORE_TOLERANCE = 1e-2

#: metadata columns, in order (metadata.parquet)
METADATA_COLUMNS = (
    "id", "sentence_a", "sentence_b", "label", "label_name", "pred_pre", "pred_fine",
    "prob_fine", "correct_pre", "correct_fine", "n_tokens", "truncated",
)

_FILTER_ALIASES = {
    "prediction": "pred_fine",
    "pred": "pred_fine",
    "correct": "correct_fine",
}


class IndexFileError(ValueError):
    """A missing piece, a corrupt file, or an incomplete build in an index folder."""


class IndexMismatchError(ValueError):
    """The index was built from other models (or another signature definition) than the ones loaded."""


class UnknownSampleError(ValueError):
    """A sample id that the index does not hold."""


class LabelMismatchError(ValueError):
    """Correctness was asked for, but the model's labels and the corpus's labels do not match."""


# ----------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _faiss():
    import faiss

    return faiss


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))


def _save_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())


def _save_parquet(path: Path, df) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write(path, lambda fh: pq.write_table(table, fh, compression="zstd"))


def _load_npy(path: Path, what: str, mmap: bool = False) -> np.ndarray:
    if not path.exists():
        raise IndexFileError(f"{what} file {path} is missing")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a damaged file
        raise IndexFileError(f"{what} file {path} is corrupt or not a .npy array: {exc}") from exc


def _load_parquet(path: Path, what: str, columns: Sequence[str] | None = None):
    import pandas as pd

    if not path.exists():
        raise IndexFileError(f"{what} file {path} is missing")
    try:
        return pd.read_parquet(path, columns=list(columns) if columns else None)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise IndexFileError(f"{what} file {path} is corrupt or not parquet: {exc}") from exc


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def _is_correct(pred: str | None, label: int, label_name: str | None) -> bool | None:
    """Whether a predicted label name matches the gold label (None when the model has no head)."""
    if pred is None:
        return None
    if label_name is not None and str(pred).lower() == str(label_name).lower():
        return True
    m = re.fullmatch(r"(?i)label_(\d+)", str(pred))
    if m is not None and label is not None and int(label) >= 0:
        return int(m.group(1)) == int(label)
    return False


def reconcile_corpus_labels(pair: Any, ds, label_map: Any = None) -> dict[str, Any]:
    """Match the models' label names with the corpus's, once per task of the corpus (README.md, "Tasks,
    labels and fine-tuning"; :func:`attnflows_panel.labels.reconcile`).

    Returns the manifest's ``label_reconciliation``: ``{"finetuned": {task: LabelMatch dict},
    "pretrained": {...}, "label_map": ..., "matched": bool (every task matched), "scored_tasks": [...],
    "message": str}``. A task whose label sets differ gets no correctness (None), never a wrong one.
    """
    from attnflows_panel.corpus import label_spaces
    from attnflows_panel.labels import parse_label_map, reconcile

    label_map = parse_label_map(label_map)
    spaces = label_spaces(ds)
    fine, pre = {}, {}
    for t, names in spaces.items():
        key = "" if t is None else str(t)
        fine[key] = reconcile(list(getattr(pair, "labels", []) or []), names, label_map, task=t or None)
        pre_labels = list(getattr(pair, "pretrained_labels", []) or [])
        try:
            pre[key] = reconcile(pre_labels, names, label_map, task=t or None, who="the pre-trained model")
        except ValueError:  # the label map is the fine-tuned model's
            pre[key] = reconcile(pre_labels, names, None, task=t or None, who="the pre-trained model")
    scored = [k for k, m in fine.items() if m.matched]
    failed = [m for m in fine.values() if not m.matched]
    if not failed:
        message = "; ".join(dict.fromkeys(m.message for m in fine.values()))
    else:
        message = "; ".join(m.message for m in failed)
        if scored:
            message += f" (correctness is computed for {', '.join(scored)} only)"
    return {
        "finetuned": {k: m.to_dict() for k, m in fine.items()},
        "pretrained": {k: m.to_dict() for k, m in pre.items()},
        "label_map": label_map,
        "matched": not failed,
        "scored_tasks": scored,
        "message": message,
    }


def _matches(reconciliation: Mapping[str, Any] | None, role: str) -> dict[str, Any]:
    from attnflows_panel.labels import LabelMatch

    return {k: LabelMatch.from_dict(v) for k, v in ((reconciliation or {}).get(role) or {}).items()}


def _row_correct(matches: Mapping[str, Any], task: Any, pred: Any, label_name: Any) -> bool | None:
    m = matches.get("" if task is None else str(task))
    if m is None and len(matches) == 1:
        m = next(iter(matches.values()))
    return None if m is None else m.correct(pred, label_name)


def apply_label_reconciliation(meta, rows: Mapping[str, Sequence[Any]], reconciliation: Mapping[str, Any] | None):
    """Set a shard's ``correct_pre`` / ``correct_fine`` from :func:`reconcile_corpus_labels`: scored
    (True/False) where the row's task matched, None where its label sets differ. Returns ``meta``."""
    import pandas as pd

    if reconciliation is None:
        return meta
    n = len(meta)
    tasks = list(rows.get("task", [None] * n))
    names = list(meta["label_name"].astype(object).where(meta["label_name"].notna(), None))
    for col, pred_col, role in (("correct_fine", "pred_fine", "finetuned"), ("correct_pre", "pred_pre", "pretrained")):
        matches = _matches(reconciliation, role)
        preds = list(meta[pred_col].astype(object).where(meta[pred_col].notna(), None))
        meta[col] = pd.array([_row_correct(matches, t, p, g) for t, p, g in zip(tasks, preds, names)], dtype="boolean")
    return meta


def _with_columns(data: Any, task, split, limit, column_map, labels) -> Any:
    """``data`` as it is, or (a source with ``column_map`` / ``labels``) the loaded corpus."""
    if (column_map is None and labels is None) or hasattr(data, "column_names"):
        return data
    from attnflows_panel.corpus import load_corpus

    return load_corpus(os.fspath(data), task=task, split=split, limit=limit, column_map=column_map, labels=labels)


def _corpus_digest(ids: Sequence[str], a: Sequence[str], b: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, x, y in zip(ids, a, b):
        h.update(str(i).encode())
        h.update(b"\x1f")
        h.update(str(x).encode())
        h.update(b"\x1f")
        h.update(str(y).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def manifest_differences(manifest: Mapping[str, Any], fingerprint: Mapping[str, Any] | None = None, *,
                         num_layers: int | None = None, num_heads: int | None = None) -> list[str]:
    """What differs between an index's manifest and a loaded model pair (empty list = they match).

    A model's entry matches when its weights hash matches (the name may differ: a copied folder holds
    the same weights); without hashes on both sides the names must match.
    """
    diffs: list[str] = []
    version = manifest.get("signature_version")
    if version != S.SIGNATURE_VERSION:
        diffs.append(
            f"signature version: index has {version}, this attnflows_panel computes version "
            f"{S.SIGNATURE_VERSION} (rebuild the index)"
        )
    built = manifest.get("fingerprint") or {}
    for role, label in (("pretrained", "pre-trained"), ("finetuned", "fine-tuned")):
        if fingerprint is None:
            break
        a, b = dict(built.get(role) or {}), dict(fingerprint.get(role) or {})
        ha, hb = a.get("weights_sha256"), b.get("weights_sha256")
        if ha and hb:
            if ha != hb:
                diffs.append(
                    f"{label} model weights: index built from {a.get('name')!r} (sha256 {str(ha)[:12]}…), "
                    f"loaded {b.get('name')!r} (sha256 {str(hb)[:12]}…)"
                )
        elif a.get("name") != b.get("name"):
            diffs.append(f"{label} model: index built from {a.get('name')!r}, loaded {b.get('name')!r}")
    for key, value in (("num_layers", num_layers), ("num_heads", num_heads)):
        if value is not None and manifest.get(key) != value:
            diffs.append(f"{key.replace('_', ' ')}: index has {manifest.get(key)}, loaded models have {value}")
    return diffs


# ----------------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------------


def _load_data(data: Any, task: str | None, split: str | None, limit: int | None):
    """A ``datasets.Dataset`` in the corpus schema from a source (see corpus.load_corpus) or a Dataset."""
    if hasattr(data, "column_names") and hasattr(data, "select"):
        ds = data
        if limit is not None:
            ds = ds.select(range(min(int(limit), len(ds))))
    else:
        from attnflows_panel.corpus import load_corpus

        ds = load_corpus(os.fspath(data), task=task, split=split, limit=limit)
    missing = [c for c in ("id", "sentence_a", "sentence_b", "label") if c not in ds.column_names]
    if missing:
        raise ValueError(f"the corpus lacks the column(s) {missing}; it has {ds.column_names}")
    if len(ds) == 0:
        raise ValueError("the corpus is empty: nothing to index")
    return ds


def shard_metadata(rows: Mapping[str, Sequence[Any]], out: Mapping[str, Any]):
    """A shard's metadata DataFrame from its corpus rows and what the models said (:func:`compute_batch`'s
    per-sample fields, in row order)."""
    import pandas as pd

    n = len(out["n_tokens"])
    label = [int(x) if x is not None else -1 for x in rows["label"]]
    label_name = [None if x is None else str(x) for x in rows.get("label_name", [None] * n)]
    pred_pre = [None if p is None else str(p) for p in out["pred_pre"]]
    pred_fine = [None if p is None else str(p) for p in out["pred_fine"]]
    return pd.DataFrame(
        {
            "id": pd.array([str(x) for x in rows["id"]], dtype="string"),
            "sentence_a": pd.array([str(x) for x in rows["sentence_a"]], dtype="string"),
            "sentence_b": pd.array([str(x) for x in rows["sentence_b"]], dtype="string"),
            "label": np.asarray(label, dtype=np.int16),
            "label_name": pd.array(label_name, dtype="string"),
            "pred_pre": pd.array(pred_pre, dtype="string"),
            "pred_fine": pd.array(pred_fine, dtype="string"),
            "prob_fine": np.asarray(out["prob_fine"], dtype=np.float32),
            "correct_pre": pd.array([_is_correct(p, l, ln) for p, l, ln in zip(pred_pre, label, label_name)], dtype="boolean"),
            "correct_fine": pd.array([_is_correct(p, l, ln) for p, l, ln in zip(pred_fine, label, label_name)], dtype="boolean"),
            "n_tokens": np.asarray(out["n_tokens"], dtype=np.int32),
            "truncated": np.asarray(out["truncated"], dtype=bool),
        }
    )


def result_usage(result: Any, tau: float) -> np.ndarray:
    """A PairResult's stored usage float32 [2, L, H] (u_pre, u_fine) at threshold τ, root [CLS]."""
    root = int(getattr(result, "cls_position", 0))
    return np.stack(
        [
            S.usage_from_attentions(result.pretrained.attentions, tau, root=root),
            S.usage_from_attentions(result.finetuned.attentions, tau, root=root),
        ]
    )


def compute_batch(pair: Any, pairs: Sequence[tuple[str, str]], tau: float, batch_size: int,
                  ids: Sequence[str] | None = None, encoded: Sequence[tuple] | None = None) -> dict[str, Any]:
    """Run one length bucket through both models and keep what the index stores: ``usage`` float32
    [m, 2, L, H], and per sample ``pred_pre``, ``pred_fine``, ``prob_fine``, ``n_tokens``, ``truncated``
    (:meth:`attnflows_panel.models.ModelPair.usage_batch`: the usage is counted on the attention tensors
    where the models computed them, so no attention matrix is copied out, which matters most on a GPU).
    ``encoded``: the bucket's pairs as :func:`encode_shard` tokenised them (None = tokenise here).
    The one step both engines run (locally, or in a Ray worker: :mod:`attnflows_panel.index_ray`)."""
    try:
        kwargs = {} if encoded is None else {"encoded": encoded}
        return pair.usage_batch(list(pairs), tau, batch_size=batch_size, head_change=True, **kwargs)
    except (ValueError, TypeError) as exc:  # e.g. an empty sentence: say which samples
        raise _naming_samples(exc, ids if ids is not None else range(len(pairs))) from exc


def _naming_samples(exc: Exception, ids: Iterable[Any]) -> Exception:
    batch_ids = [str(x) for x in ids]
    return type(exc)(f"cannot run the batch with samples {batch_ids[:8]}{' …' if len(batch_ids) > 8 else ''}: {exc}")


def encode_shard(pair: Any, pairs: Sequence[tuple[str, str]], ids: Sequence[Any] | None = None) -> list[tuple]:
    """A shard's pairs tokenised once (:meth:`attnflows_panel.models.ModelPair.encode_pairs`): their
    lengths cut the length buckets (:func:`buckets_by_length`) and the same token ids run through the
    models (:func:`compute_batch`'s ``encoded``). A pair that cannot run (an empty sentence) raises
    the error naming its sample id."""
    try:
        return pair.encode_pairs(list(pairs))
    except (ValueError, TypeError) as exc:
        m = re.match(r"pair (\d+): ", str(exc))
        which = [ids[int(m.group(1))]] if (m and ids is not None) else (ids if ids is not None else range(len(pairs)))
        raise _naming_samples(exc, which) from exc


def buckets_by_length(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Positions cut into batches of similar token length: a stable sort by ``lengths`` (token counts,
    truncation included), then ``batch_size`` at a time. Each batch is padded only to its longest pair.
    On MRPC dev at batch 32 this pads 4% of the tokens, against 22% when sorting by characters and 31%
    unsorted. With ``max_tokens``, a batch also holds at most that many padded tokens (pairs x its
    longest pair; a single pair longer than that runs alone): long pairs run in smaller batches
    (:data:`DEFAULT_MAX_TOKENS`)."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
    if not len(lengths):
        return []
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    if max_tokens is None:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    out, start = [], 0
    for end in range(1, len(order) + 1):
        # order is ascending, so the pair at `end` would be the batch's longest
        if end == len(order) or end - start >= batch_size or (end - start + 1) * int(sizes[order[end]]) > max_tokens:
            out.append(order[start:end])
            start = end
    return out


def resolve_max_tokens(max_tokens: int | None, device: Any) -> int | None:
    """The token budget a build uses: ``None`` = the default for ``device`` (:data:`DEFAULT_MAX_TOKENS`
    on the CPU, no budget elsewhere), ``0`` = no budget, else the positive int given."""
    if max_tokens is None:
        return DEFAULT_MAX_TOKENS if str(device or "cpu").startswith("cpu") else None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a positive int, 0 (no budget) or None (the device's default), "
                         f"got {max_tokens!r}")
    return max_tokens or None


def length_buckets(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int, batch_size: int,
                   max_tokens: int | None = None) -> list[np.ndarray]:
    """The positions of ``pairs`` cut into batches of similar token length (:func:`buckets_by_length` on
    the pairs' token counts after ``longest_first`` truncation to ``max_length``, within ``max_tokens``
    padded tokens per batch when given). The builds tokenise once instead (:func:`encode_shard`) and cut
    the same buckets from those lengths."""
    if not len(pairs):
        return []
    enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=max_length)
    return buckets_by_length([len(x) for x in enc["input_ids"]], batch_size, max_tokens)


def _shard_complete(shard_dir: Path, i: int, expected: int, L: int, H: int) -> bool:
    import pyarrow.parquet as pq

    base = shard_dir / _shard_name(i)
    npy, parquet = base.with_suffix(".npy"), base.with_suffix(".parquet")
    if not (npy.exists() and parquet.exists() and base.with_suffix(".heads.npy").exists()):
        return False
    try:
        arr = np.load(npy, allow_pickle=False, mmap_mode="r")
        rows = pq.ParquetFile(parquet).metadata.num_rows
    except Exception:  # noqa: BLE001 - a damaged shard is simply redone
        return False
    return arr.shape == (expected, 2, L, H) and arr.dtype == np.float32 and rows == expected


def _build_identity(pair: Any, ds, task, data, split, limit, tau: float, shard_size: int, digest: str) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "signature_version": S.SIGNATURE_VERSION,
        "signature": "u[k,h] = |E_k,h| / |E_k| per model; blocks pre, fine, diff = fine - pre; "
                     "centred by the corpus mean, unit norm per block, weight 1/sqrt(3)",
        "tau": float(tau),
        "fingerprint": pair.fingerprint,
        "num_layers": int(pair.num_layers),
        "num_heads": int(pair.num_heads),
        "max_length": int(getattr(pair, "max_length", 0) or 0),
        "dims": {
            "blocks": list(S.BLOCKS),
            "per_block": int(pair.num_layers * pair.num_heads),
            "total": int(len(S.BLOCKS) * pair.num_layers * pair.num_heads),
            "order": "block-major, then layer k (0-based, HF order), then head h: dim = b*L*H + k*H + h",
        },
        "data": data if isinstance(data, str) else ("<datasets.Dataset>" if hasattr(data, "column_names") else os.fspath(data)),
        "task": task,
        "split": split,
        "limit": limit,
        "count": len(ds),
        "corpus_sha256": digest,
        "shard_size": int(shard_size),
        "num_shards": int(-(-len(ds) // shard_size)),
    }


_IDENTITY_KEYS = ("format", "format_version", "signature_version", "tau", "num_layers", "num_heads", "max_length",
                  "count", "corpus_sha256", "shard_size", "label_map")


def _identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    diffs = manifest_differences(old, new.get("fingerprint"))
    for key in _IDENTITY_KEYS:
        if key == "signature_version":
            continue  # reported by manifest_differences
        if old.get(key) != new.get(key):
            what = "corpus (ids or sentences)" if key == "corpus_sha256" else key
            diffs.append(f"{what}: existing {old.get(key)!r}, requested {new.get(key)!r}")
    return diffs


@dataclasses.dataclass
class BuildPlan:
    """What a build still has to do (:func:`plan_build`): the corpus columns, the manifest being
    written, and the shards not finished yet. Both engines follow it, so they write the same files."""

    out: Path
    manifest: dict
    columns: dict
    todo: list
    tau: float
    batch_size: int
    max_length: int
    finished: bool = False
    max_tokens: int | None = None  # the token budget of a forward batch (:func:`buckets_by_length`)

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.manifest["num_layers"]), int(self.manifest["num_heads"])

    def shard_range(self, i: int) -> tuple[int, int]:
        return i * self.shard_size, min(self.count, (i + 1) * self.shard_size)

    def shard_rows(self, i: int) -> dict[str, list]:
        lo, hi = self.shard_range(i)
        return {key: values[lo:hi] for key, values in self.columns.items()}

    def shard_pairs(self, i: int) -> list[tuple[str, str]]:
        rows = self.shard_rows(i)
        return list(zip(rows["sentence_a"], rows["sentence_b"]))

    @property
    def done(self) -> int:
        """Samples in finished shards."""
        return self.count - sum(hi - lo for lo, hi in map(self.shard_range, self.todo))


class ShardWriter:
    """Collects one shard's computed batches (in any order) and writes the shard when all its samples
    are in: usage ``shard-NNNNN.npy`` first, metadata ``shard-NNNNN.parquet`` last (the commit point)."""

    def __init__(self, plan: BuildPlan, i: int):
        self.plan, self.i = plan, i
        lo, hi = plan.shard_range(i)
        n = hi - lo
        L, H = plan.shape
        self.usage = np.empty((n, 2, L, H), dtype=np.float32)
        self.change = np.empty((n, 2, L, H), dtype=np.uint8)  # head change codes (attnflows_panel.heads)
        self.fields: dict[str, list] = {k: [None] * n for k in ("pred_pre", "pred_fine", "prob_fine", "n_tokens", "truncated")}
        self.filled = np.zeros(n, dtype=bool)

    def put(self, positions: Sequence[int], out: Mapping[str, Any]) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        self.usage[positions] = out["usage"]
        self.change[positions] = out["head_change"]
        for key, values in self.fields.items():
            for p, v in zip(positions, out[key]):
                values[p] = v
        self.filled[positions] = True

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    def write(self) -> None:
        if not self.complete:
            raise RuntimeError(f"shard {self.i} is missing {int((~self.filled).sum())} samples")
        rows = self.plan.shard_rows(self.i)
        meta = apply_label_reconciliation(shard_metadata(rows, self.fields), rows,
                                          self.plan.manifest.get("label_reconciliation"))
        base = self.plan.out / SHARD_DIR / _shard_name(self.i)
        _save_npy(base.with_suffix(".npy"), self.usage)
        _save_npy(base.with_suffix(".heads.npy"), self.change)
        _save_parquet(base.with_suffix(".parquet"), meta)  # the commit point of the shard


def _check_build_args(tau, batch_size, shard_size, limit) -> None:
    if not (isinstance(tau, (int, float)) and 0.0 < float(tau) < 1.0):
        raise ValueError(f"tau must be in (0, 1), got {tau!r}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")


_LOCK_NAME = ".build.lock"


def build_lock(out: str | os.PathLike):
    """The lock one build of ``out`` holds (two builds of one folder would overwrite each other's shards)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return file_lock(out / _LOCK_NAME)


def plan_build(pair: Any, data: Any, task: str | None, out: str | os.PathLike, *, split: str | None = None,
               tau: float = 0.3, batch_size: int = 32, limit: int | None = None,
               shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False, label_map: Any = None,
               column_map: Mapping[str, str] | None = None, labels: Any = None,
               max_tokens: int | None = None) -> BuildPlan:
    """Check the arguments and ``out``, load the corpus, write the (incomplete) manifest and find the
    shards still to do. Call it holding :func:`build_lock`. ``max_tokens``: the token budget of a
    forward batch as :func:`resolve_max_tokens` gave it (None = no budget; batching does not change what
    is computed, so it is not part of the index's identity). ``finished`` is True when ``out`` already
    holds this very index, intact (then there is nothing to do). The manifest carries the models' and
    the corpus's label reconciliation (:func:`reconcile_corpus_labels`), which :class:`ShardWriter`
    applies to each shard's correctness."""
    _check_build_args(tau, batch_size, shard_size, limit)
    out = Path(out)
    ds = _load_data(_with_columns(data, task, split, limit, column_map, labels), task, split, limit)
    reconciliation = reconcile_corpus_labels(pair, ds, label_map)
    if not reconciliation["matched"]:
        log.warning("index %s: %s", out, reconciliation["message"])
    columns = ds[:]  # dict of lists; small next to the forward passes
    ids = [str(x) for x in columns["id"]]
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for x in ids:
            if x in seen and x not in dup:
                dup.append(x)
            seen.add(x)
        raise ValueError(f"the corpus has {len(ids) - len(seen)} duplicate ids (e.g. {dup[:3]}); ids must be unique")
    digest = _corpus_digest(ids, columns["sentence_a"], columns["sentence_b"])
    identity = _build_identity(pair, ds, task, data, split, limit, float(tau), shard_size, digest)
    identity["label_map"] = reconciliation["label_map"]
    L, H = identity["num_layers"], identity["num_heads"]
    max_length = int(getattr(pair, "max_length", 512) or 512)

    manifest_path = out / MANIFEST
    if out.exists() and any(p.name != _LOCK_NAME for p in out.iterdir()):
        if not manifest_path.exists():
            if not overwrite:
                raise IndexFileError(
                    f"{out} exists and is not an attnflows index (no {MANIFEST}); choose another --out "
                    "or pass overwrite=True"
                )
            _clear(out)
        else:
            try:
                old = json.loads(manifest_path.read_text())
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                if not overwrite:
                    raise IndexFileError(f"{manifest_path} is corrupt ({exc}); pass overwrite=True to rebuild") from exc
                old = None
            if old is not None:
                diffs = _identity_differences(old, identity)
                if diffs and not overwrite:
                    raise IndexMismatchError(
                        f"{out} holds an index built with other settings; pass overwrite=True (CLI: --overwrite) "
                        "or choose another --out. Differences: " + "; ".join(diffs)
                    )
                if not diffs and old.get("complete") and not overwrite:
                    if not verify_files(out, old):
                        return BuildPlan(out, old, columns, [], float(tau), batch_size, max_length, finished=True,
                                         max_tokens=max_tokens)
                    overwrite = True  # finished once, damaged since: build it again
            if overwrite:
                _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(exist_ok=True)
    for stale in shard_dir.glob(".*.tmp-*"):  # temporaries of a killed build (we hold the build lock)
        stale.unlink()
    manifest = {**identity, "complete": False, "created": _now(), "label_reconciliation": reconciliation}
    if manifest_path.exists():
        try:
            manifest["created"] = json.loads(manifest_path.read_text()).get("created", manifest["created"])
        except (OSError, ValueError, AttributeError):
            pass
    _save_json(manifest_path, manifest)
    N, num_shards = len(ds), identity["num_shards"]
    todo = [i for i in range(num_shards) if not _shard_complete(shard_dir, i, min(shard_size, N - i * shard_size), L, H)]
    return BuildPlan(out, manifest, columns, todo, float(tau), batch_size, max_length, max_tokens=max_tokens)


def build_index(
    pair: Any,
    data: Any,
    task: str | None,
    out: str | os.PathLike,
    *,
    split: str | None = None,
    tau: float = 0.3,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    factory: str | None = None,
    keep_shards: bool = False,
    overwrite: bool = False,
    label_map: Any = None,
    column_map: Mapping[str, str] | None = None,
    labels: Any = None,
    max_tokens: int | None = None,
) -> Path:
    """Index a corpus: run both models over every sample, write shards, then the FAISS index.

    pair: a :class:`~attnflows_panel.models.ModelPair`.
    data, task, split, limit: a corpus source as for :func:`attnflows_panel.corpus.load_corpus` ("glue/mrpc",
        a GLUE folder, a .csv/.jsonl file, "demo"), or a ``datasets.Dataset`` in that schema.
    out: the index folder. If it holds an unfinished build with the same models, τ, corpus and shard
        size, the build resumes and skips finished shards; a finished one is returned as it is. Other
        contents are refused unless ``overwrite=True``.
    tau: the Attention Graph threshold τ (§4.1), in (0, 1).
    shard_size: samples per shard (the unit of resumption).
    exact_limit: up to this many samples the index is exhaustive (``EXACT_FACTORY``), above it
        approximate (``APPROX_FACTORY``); ``factory`` overrides both with any ``faiss.index_factory`` string.
    label_map: how the fine-tuned model's labels meet the corpus's (:func:`reconcile_corpus_labels`):
        None = by name, ``"index"`` = generic ``LABEL_i`` by position, or a ``{model: corpus}`` map.
        Correctness (and so accuracy) is computed only for the tasks whose label sets match; the
        manifest's ``label_reconciliation`` records the outcome, and a mismatch is logged.
    column_map, labels: passed to ``load_corpus`` (CSV/JSONL/hub columns, integer label names).
    batch_size, max_tokens: pairs of similar token length run ``batch_size`` at a time, and with a token
        budget at most ``max_tokens`` padded tokens at a time (None = the default of the pair's device:
        :data:`DEFAULT_MAX_TOKENS` on the CPU, no budget on a GPU; 0 = no budget). Neither changes the
        index.

    This is the local engine; :func:`attnflows_panel.index_ray.build_index_ray` runs the same plan on
    Ray Data and writes the same files. Returns the index folder.
    """
    _check_build_args(tau, batch_size, shard_size, limit)
    max_tokens = resolve_max_tokens(max_tokens, getattr(pair, "device", "cpu"))
    with build_lock(out):
        plan = plan_build(pair, data, task, out, split=split, tau=tau, batch_size=batch_size, limit=limit,
                          shard_size=shard_size, overwrite=overwrite, label_map=label_map, column_map=column_map,
                          labels=labels, max_tokens=max_tokens)
        if plan.finished:
            return plan.out
        _run_local(pair, plan, progress)
        finish_build(plan, exact_limit=exact_limit, factory=factory, keep_shards=keep_shards)
    return plan.out


def _run_local(pair: Any, plan: BuildPlan, progress: bool) -> None:
    """The local engine: shard after shard, length bucket after length bucket, in this process. Each
    shard is tokenised once (:func:`encode_shard`, under the pair's tokenizer lock, so a pair that
    serves an app meanwhile is safe); each finished shard is written by a background thread while the
    next one runs through the models."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    bar = tqdm(total=plan.count, initial=plan.done, desc=f"indexing {plan.out.name}", unit="pair",
               disable=not progress, smoothing=0.1)
    pending = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnflows-shard-writer") as writer:
        try:
            for i in plan.todo:
                rows, pairs = plan.shard_rows(i), plan.shard_pairs(i)
                encoded = encode_shard(pair, pairs, rows["id"])
                shard = ShardWriter(plan, i)
                for members in buckets_by_length([len(e[0]) for e in encoded], plan.batch_size, plan.max_tokens):
                    out = compute_batch(pair, [pairs[j] for j in members], plan.tau, plan.batch_size,
                                        ids=[rows["id"][j] for j in members], encoded=[encoded[j] for j in members])
                    shard.put(members, out)
                    bar.update(len(members))
                if pending is not None:
                    pending.result()  # one shard in flight at most; its errors surface here
                pending = writer.submit(shard.write)
            if pending is not None:
                pending.result()
        finally:
            bar.close()


def _listed_files(manifest: Mapping[str, Any]) -> list[str]:
    """Every data file an index's manifest lists (sizes and checksums), plus the ones every index has."""
    names = list(_DATA_FILES)
    for key in ("files",):
        names += [n for n in (manifest.get(key) or {}) if n not in names]
    names += [n for n in ((manifest.get("checksums") or {}).get("files") or {}) if n not in names]
    return names


def record_files(out: Path, manifest: dict, names: Iterable[str] | None = None) -> None:
    """Record the size and checksum (:data:`~attnflows_panel._io.CHECKSUM_ALGORITHM`) of each data
    file in ``manifest`` (``names``: all the files an index has, plus any other listed in its
    ``files``). Call it after the files are written and before the manifest."""
    names = list(names) if names is not None else _listed_files(manifest)
    manifest["files"] = {name: (out / name).stat().st_size for name in names}
    manifest["checksums"] = {"algorithm": CHECKSUM_ALGORITHM,
                             "files": {name: file_checksum(out / name) for name in names}}


def verify_files(path: str | os.PathLike, manifest: Mapping[str, Any] | None = None, *,
                 checksums: bool = True) -> list[str]:
    """What is wrong with the data files of the index at ``path`` against its manifest: one message
    per file that is missing, has another size, or (``checksums``) another checksum than recorded.
    An empty list means every listed file is intact."""
    path = Path(path)
    if manifest is None:
        manifest = json.loads((path / MANIFEST).read_text())
    sizes = manifest.get("files") or {}
    recorded = manifest.get("checksums") or {}
    sums = recorded.get("files") or {}
    if checksums and sums and recorded.get("algorithm") != CHECKSUM_ALGORITHM:
        return [f"{path / MANIFEST} records checksums of an unknown kind ({recorded.get('algorithm')!r}); rebuild the index"]
    problems = []
    for name in _listed_files(manifest):
        f = path / name
        if not f.exists():
            problems.append(f"the index at {path} is missing {name}; rebuild it with `attnflows index build`")
            continue
        size = f.stat().st_size
        if name in sizes and size != sizes[name]:
            problems.append(f"{f} is corrupt: {size} bytes, the manifest recorded {sizes[name]} (truncated or "
                            "overwritten); rebuild the index")
            continue
        if checksums and name in sums:
            got = file_checksum(f)
            if got != sums[name]:
                problems.append(f"{f} is corrupt: its checksum is {got}, the manifest recorded {sums[name]} "
                                "(the file was changed after the build: bit flips or an edit); rebuild the index")
    return problems


def _clear(out: Path) -> None:
    """Remove what an index build writes (only those names: never a user's other files)."""
    ours = {MANIFEST, SHARD_DIR, HEAD_CHANGE_FILE, *_DATA_FILES}
    others = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith(".")) if out.exists() else []
    if others:
        raise IndexFileError(f"{out} holds other files ({others[:5]}); choose another --out")
    for stale in out.glob(".*.tmp*"):
        stale.unlink()
    for name in (MANIFEST, HEAD_CHANGE_FILE, *_DATA_FILES):
        p = out / name
        if p.exists():
            p.unlink()
    if (out / SHARD_DIR).is_dir():
        shutil.rmtree(out / SHARD_DIR)


def choose_factory(count: int, exact_limit: int = DEFAULT_EXACT_LIMIT, factory: str | None = None) -> tuple[str, str]:
    """(kind, factory string): exhaustive up to ``exact_limit`` samples, approximate above."""
    if factory:
        return ("custom", factory)
    if count <= exact_limit:
        return ("exact", EXACT_FACTORY)
    return ("approximate", APPROX_FACTORY)


def make_faiss_index(vectors: np.ndarray, factory: str, *, train_size: int = 200_000, seed: int = 0,
                     build_params: Mapping[str, Any] | None = None):
    """A FAISS inner-product index over ``vectors`` (float32 [N, d]) from a factory string."""
    faiss = _faiss()
    d = vectors.shape[1]
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"faiss cannot build the index factory string {factory!r}: {exc}") from exc
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efConstruction = int((build_params or APPROX_BUILD).get("efConstruction", APPROX_BUILD["efConstruction"]))
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors if len(vectors) <= train_size else vectors[np.sort(rng.choice(len(vectors), train_size, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for start in range(0, len(vectors), 65536):
        index.add(np.ascontiguousarray(vectors[start:start + 65536], dtype=np.float32))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # reconstruct() for query-by-id and filtered brute force
    return index


def finish_build(plan: BuildPlan, *, exact_limit: int = DEFAULT_EXACT_LIMIT, factory: str | None = None,
                 keep_shards: bool = False) -> None:
    """All shards of ``plan`` are written: consolidate them into the final index (:func:`_finalise`)."""
    _finalise(plan.out, plan.manifest, exact_limit=exact_limit, factory=factory, keep_shards=keep_shards)


def _finalise(out: Path, manifest: dict, *, exact_limit: int, factory: str | None, keep_shards: bool) -> None:
    """All shards are written: consolidate them, build the FAISS index, write the manifest last."""
    import pandas as pd

    shard_dir = out / SHARD_DIR
    N, L, H = manifest["count"], manifest["num_layers"], manifest["num_heads"]
    usage16 = np.empty((N, 2, L, H), dtype=np.float16)
    change = np.empty((N, 2, L, H), dtype=np.uint8)
    metas = []
    for i in range(manifest["num_shards"]):
        base = shard_dir / _shard_name(i)
        lo = i * manifest["shard_size"]
        part = _load_npy(base.with_suffix(".npy"), f"shard {i}")
        usage16[lo:lo + len(part)] = part.astype(np.float16)
        change[lo:lo + len(part)] = _load_npy(base.with_suffix(".heads.npy"), f"shard {i} head change")
        metas.append(_load_parquet(base.with_suffix(".parquet"), f"shard {i} metadata"))
    meta = pd.concat(metas, ignore_index=True)
    if len(meta) != N:
        raise IndexFileError(f"the shards hold {len(meta)} samples, the manifest expects {N}")
    write_index(out, manifest, usage16, meta, exact_limit=exact_limit, factory=factory, head_change=change)
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)


def write_index(out: Path, manifest: dict, usage16: np.ndarray, meta, *, exact_limit: int = DEFAULT_EXACT_LIMIT,
                factory: str | None = None, extra_files: Sequence[str] = (),
                head_change: np.ndarray | None = None) -> None:
    """Write the final files of an index from its usage (float16 [N, 2, L, H]) and metadata (one row per
    sample, in row order): centring, search vectors, FAISS index, id map; the manifest last, marked
    complete, with the size and checksum of every file (and of ``extra_files``, other files already
    written into ``out`` that belong to the index). (build_index calls it on the consolidated shards;
    benchmarks call it on synthetic data.)
    head_change: optional uint8 codes [N, 2, L, H] (:func:`attnflows_panel.heads.encode`)."""
    import pandas as pd

    faiss = _faiss()
    N, L, H = manifest["count"], manifest["num_layers"], manifest["num_heads"]
    if usage16.shape != (N, 2, L, H) or len(meta) != N:
        raise ValueError(f"usage {usage16.shape} / metadata {len(meta)} rows do not fit count {N} and [{L}, {H}]")
    usage16 = np.asarray(usage16, dtype=np.float16)

    # vectors derive from the stored (float16) usage, so queries by id reproduce them exactly
    center = S.fit_center(usage16)
    vectors = np.empty((N, len(S.BLOCKS) * L * H), dtype=np.float32)
    norms = np.empty((len(S.BLOCKS), N), dtype=np.float32)
    for start in range(0, N, 65536):
        part = usage16[start:start + 65536]
        vectors[start:start + 65536] = S.embed(part, center)
        norms[:, start:start + 65536] = np.linalg.norm(S.blocks(part) - center[None], axis=2).T
    kind, fac = choose_factory(N, exact_limit, factory)
    index = make_faiss_index(vectors, fac)
    search = dict(APPROX_SEARCH) if "HNSW" in fac else ({"nprobe": 32} if "IVF" in fac else {})

    order = np.argsort(meta["id"].to_numpy(dtype=object).astype(str), kind="stable")
    id_map = pd.DataFrame({"id": meta["id"].to_numpy()[order], "row": order.astype(np.int64)})
    id_map["id"] = id_map["id"].astype("string")

    with atomic_path(out / INDEX_FILE) as tmp_index:
        faiss.write_index(index, str(tmp_index))
    _save_npy(out / USAGE_FILE, np.moveaxis(usage16, 0, -1))  # head-major [2, L, H, N]
    _save_npy(out / NORMS_FILE, norms)
    _save_npy(out / CENTER_FILE, center)
    _save_parquet(out / METADATA_FILE, meta)
    _save_parquet(out / IDMAP_FILE, id_map)
    files = list(_DATA_FILES)
    if head_change is not None:
        if head_change.shape != (N, 2, L, H) or head_change.dtype != np.uint8:
            raise ValueError(f"head change {head_change.dtype} {head_change.shape}, expected uint8 {(N, 2, L, H)}")
        _save_npy(out / HEAD_CHANGE_FILE, head_change)
        files.append(HEAD_CHANGE_FILE)
        manifest["head_change"] = {
            "file": HEAD_CHANGE_FILE,
            "shape": "[N, 2, L, H]: cosine, jsd",
            "encoding": "uint8 codes: cos = 1 - (c/255)^2, jsd = (c/255)^2 (attnflows_panel.heads)",
        }
    labels = sorted({(int(l), str(n)) for l, n in zip(meta["label"], meta["label_name"].fillna(""))})
    manifest.update(
        complete=True,
        completed=_now(),
        index={"kind": kind, "factory": fac, "metric": "inner_product", "search": search,
               "exact_limit": int(exact_limit)},
        labels={str(l): n for l, n in labels},
        library={"attnflows_panel": _version(), "faiss": getattr(faiss, "__version__", "?")},
    )
    record_files(out, manifest, [*files, *[n for n in extra_files if n not in files]])
    _save_json(out / MANIFEST, manifest)  # written last: a complete manifest means a complete index


def _version() -> str:
    from attnflows_panel import __version__

    return __version__


# ----------------------------------------------------------------------------------------------------
# open + query
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_thread(faiss):
    """Run one query on one OpenMP thread: fanning a single query out costs more than it saves (on a busy
    2-core machine, 12 ms instead of 0.3 ms for 20k exhaustive). OpenMP's thread count is per calling
    thread (libgomp ICV), so this touches no other thread, and it is restored afterwards."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class SignatureIndex:
    """A built index, opened read-only. Safe to share between threads (queries do not mutate it).

    Attributes: ``path``, ``manifest``, ``metadata`` (DataFrame, row i = FAISS id i), ``tau``,
    ``num_layers``, ``num_heads``, ``index`` (the FAISS index), ``center``.
    """

    def __init__(self, path: Path, manifest: dict, index: Any, usage: np.ndarray, center: np.ndarray, metadata,
                 pair: Any = None, norms: np.ndarray | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.index = index
        self._usage_hm = usage  # float16 [2, L, H, N]
        self._norms = norms  # float32 [3, N]
        self._inv_norms: np.ndarray | None = None  # built on the first exact column search
        self.center = center
        self.metadata = metadata
        self.pair = pair
        self._sorted_ids: np.ndarray | None = None
        self._sorted_rows: np.ndarray | None = None
        self._pca: dict[str, Any] | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike, pair: Any = None, *, verify: bool = True) -> "SignatureIndex":
        """Open an index folder. With ``pair``, refuse it when it was built from other models.

        ``verify`` (default) checks every data file against the size and checksum the manifest records
        (XXH3-64: about 0.2 s per GB read from the page cache; index/README.md, "Integrity"), so a file
        changed since the build (bit flips, an edit, a bad copy) is refused, named, instead of answering
        queries with wrong neighbours. ``verify=False`` checks sizes only. :func:`verify_index` (CLI:
        ``attnflows index verify``) checks more: the files' contents against each other.

        Raises FileNotFoundError (no such folder / no manifest), IndexFileError (incomplete build,
        missing or corrupt file), IndexMismatchError (other models or signature version).
        """
        import pandas as pd

        faiss = _faiss()
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no index folder at {path} (build one with `attnflows index build --out {path}`)")
        mpath = path / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(f"{path} is not an attnflows index: {MANIFEST} is missing")
        try:
            manifest = json.loads(mpath.read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"{mpath} is corrupt: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise IndexFileError(f"{mpath} is not an attnflows signature index manifest (format {manifest.get('format')!r})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"index format version {manifest.get('format_version')} is not supported (this version reads "
                f"{FORMAT_VERSION}); rebuild the index"
            )
        if not manifest.get("complete"):
            shard_dir = path / SHARD_DIR
            have = len(list(shard_dir.glob("shard-*.parquet"))) if shard_dir.is_dir() else 0
            raise IndexFileError(
                f"the index at {path} is incomplete (the build stopped after {have} of "
                f"{manifest.get('num_shards', '?')} shards); rerun `attnflows index build` with the same "
                "options to resume it"
            )
        diffs = manifest_differences(manifest)
        if pair is not None:
            diffs = manifest_differences(manifest, pair.fingerprint, num_layers=pair.num_layers, num_heads=pair.num_heads)
        if diffs:
            who = "the loaded model pair" if pair is not None else "this version of attnflows_panel"
            raise IndexMismatchError(f"the index at {path} does not match {who}: " + "; ".join(diffs))

        problems = verify_files(path, manifest, checksums=verify)
        if problems:
            raise IndexFileError("; ".join(problems))
        if verify and not (manifest.get("checksums") or {}).get("files"):
            log.warning("the index at %s records no checksums (built before they were added): its files cannot "
                        "be checked for bit flips; rebuild it to add them", path)
        try:
            index = faiss.read_index(str(path / INDEX_FILE))
        except RuntimeError as exc:
            raise IndexFileError(f"{path / INDEX_FILE} is corrupt or not a FAISS index: {str(exc).splitlines()[0]}") from exc
        usage = _load_npy(path / USAGE_FILE, "usage")
        norms = _load_npy(path / NORMS_FILE, "norms")
        center = _load_npy(path / CENTER_FILE, "centre")
        metadata = _load_parquet(path / METADATA_FILE, "metadata")
        for col in metadata.columns:  # python-backed strings: taking k result rows is 40x faster than from arrow
            if isinstance(metadata[col].dtype, pd.StringDtype):
                metadata[col] = metadata[col].astype(pd.StringDtype("python"))
        N, L, H = manifest["count"], manifest["num_layers"], manifest["num_heads"]
        checks = [
            ("FAISS vectors", index.ntotal, N),
            ("FAISS dimensions", index.d, len(S.BLOCKS) * L * H),
            ("metadata rows", len(metadata), N),
            ("usage shape", usage.shape, (2, L, H, N)),
            ("norms shape", norms.shape, (len(S.BLOCKS), N)),
            ("centre shape", center.shape, (len(S.BLOCKS), L * H)),
        ]
        for what, got, want in checks:
            if got != want:
                raise IndexFileError(f"the index at {path} is inconsistent: {what} {got}, expected {want}; rebuild it")
        if getattr(index, "metric_type", None) != faiss.METRIC_INNER_PRODUCT:
            raise IndexFileError(f"{path / INDEX_FILE} does not use inner product; rebuild the index")
        return cls(path, manifest, index, usage, center.astype(np.float32), metadata, pair=pair, norms=norms)

    def check_pair(self, pair: Any) -> None:
        """Raise IndexMismatchError (naming what differs) unless ``pair`` is the pair the index was built from."""
        diffs = manifest_differences(self.manifest, pair.fingerprint, num_layers=pair.num_layers, num_heads=pair.num_heads)
        if diffs:
            raise IndexMismatchError(f"the index at {self.path} does not match the loaded model pair: " + "; ".join(diffs))

    # ------------------------------------------------------------------ basic facts

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def __repr__(self) -> str:
        fp = self.manifest.get("fingerprint", {})
        return (
            f"SignatureIndex({str(self.path)!r}, count={len(self)}, tau={self.tau}, L={self.num_layers}, "
            f"H={self.num_heads}, kind={self.manifest.get('index', {}).get('kind')!r}, "
            f"finetuned={fp.get('finetuned', {}).get('name')!r})"
        )

    @property
    def tau(self) -> float:
        return float(self.manifest["tau"])

    @property
    def num_layers(self) -> int:
        return int(self.manifest["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.manifest["num_heads"])

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in (self.manifest.get("labels") or {}).items()}

    # ------------------------------------------------------------------ labels: model vs corpus

    @property
    def label_reconciliation(self) -> dict[str, Any]:
        """Per task of the corpus, how the fine-tuned model's labels matched its labels:
        ``{task: attnflows_panel.labels.LabelMatch}`` (empty for an index built before reconciliation)."""
        return _matches(self.manifest.get("label_reconciliation"), "finetuned")

    @property
    def has_correctness(self) -> bool:
        """Whether any sample has a fine-tuned correctness flag (the "correct" filter can work)."""
        return bool(self.metadata["correct_fine"].notna().any())

    @property
    def labels_match(self) -> bool:
        """True when the fine-tuned model's labels match the corpus's for every task of the corpus, so
        correctness and accuracy cover all samples. (Indexes built before reconciliation: whether they
        hold any correctness.)"""
        rec = self.manifest.get("label_reconciliation")
        if rec is None:
            return self.has_correctness
        return bool(rec.get("matched"))

    @property
    def label_mismatch(self) -> str | None:
        """Which label sets differ and what was left out (one sentence for the CLI and the app), or None
        when the labels match."""
        if self.labels_match:
            return None
        rec = self.manifest.get("label_reconciliation")
        if rec is None:
            return "this index holds no correctness (built before label reconciliation, or without labels)"
        return str(rec.get("message") or "the model's and the corpus's label sets differ")

    def accuracy(self) -> float | None:
        """The fine-tuned model's accuracy over the samples that have correctness; None when none has
        (never an accuracy from mismatched label spaces)."""
        scored = self.metadata["correct_fine"].dropna()
        return float(scored.astype(bool).mean()) if len(scored) else None

    # ------------------------------------------------------------------ ids and rows

    def _id_map(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted_ids is None:
            df = _load_parquet(self.path / IDMAP_FILE, "id map")
            ids = df["id"].to_numpy(dtype=object)
            rows = df["row"].to_numpy(dtype=np.int64)
            if len(ids) != len(self) or (len(ids) > 1 and not np.all(ids[1:] >= ids[:-1])):
                raise IndexFileError(f"{self.path / IDMAP_FILE} is corrupt (unsorted or wrong length); rebuild the index")
            self._sorted_rows, self._sorted_ids = rows, ids  # ids last: the flag other threads read
        return self._sorted_ids, self._sorted_rows  # type: ignore[return-value]

    def rows_of(self, ids: str | Iterable[str]) -> np.ndarray:
        """Rows (= FAISS ids) of sample ids, by binary search in the persisted id map.

        Raises UnknownSampleError naming the first unknown id."""
        single = isinstance(ids, str)
        wanted = np.asarray([ids] if single else [str(x) for x in ids], dtype=object)
        sorted_ids, rows = self._id_map()
        if len(wanted) == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(sorted_ids, wanted)
        pos = np.minimum(pos, len(sorted_ids) - 1)
        found = sorted_ids[pos] == wanted
        if not np.all(found):
            bad = wanted[~found][0]
            examples = ", ".join(repr(x) for x in self.metadata["id"].iloc[:3])
            raise UnknownSampleError(
                f"unknown sample id {bad!r}: the index at {self.path} holds {len(self)} samples (ids like {examples})"
            )
        return rows[pos]

    def row_of(self, sample_id: str) -> int:
        return int(self.rows_of(str(sample_id))[0])

    def sample(self, sample_id: str) -> dict[str, Any]:
        """The metadata row of a sample as a dict."""
        return self.metadata.iloc[self.row_of(sample_id)].to_dict()

    # ------------------------------------------------------------------ signatures

    def usage(self, rows: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """Head usage float32 [m, 2, L, H] (u_pre, u_fine) of the given rows (all when None)."""
        if rows is None:
            rows = slice(None)
        elif not isinstance(rows, slice):
            rows = np.asarray(rows, dtype=np.int64)
        return np.moveaxis(self._usage_hm[..., rows], -1, 0).astype(np.float32)

    def head_usage(self, rows: Sequence[int] | np.ndarray | None = None, block: str = "diff") -> np.ndarray:
        """Mean head usage float32 [L, H] over ``rows`` (all when None) for a block: pre, fine, or diff
        (= mean of u_fine - u_pre: > 0 where fine-tuning made a head carry more of the graph)."""
        if block not in S.BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(S.BLOCKS)}")
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        L, H = self.num_layers, self.num_heads
        if len(rows) == 0:
            return np.zeros((L, H), dtype=np.float32)
        total = np.zeros((2, L, H), dtype=np.float64)
        for start in range(0, len(rows), 65536):
            total += self.usage(np.sort(rows[start:start + 65536])).sum(axis=0, dtype=np.float64)
        mean = total / len(rows)
        out = {"pre": mean[0], "fine": mean[1], "diff": mean[1] - mean[0]}[block]
        return out.astype(np.float32)

    # ------------------------------------------------------------------ head change (attnflows_panel.heads)

    @property
    def has_head_change(self) -> bool:
        """Whether the index stores per-sample head change (built by a version that computes it)."""
        return (self.path / HEAD_CHANGE_FILE).exists() and HEAD_CHANGE_FILE in (self.manifest.get("files") or {})

    def head_change(self, rows: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample (cosine, jsd), each float32 [m, L, H], of ``rows`` (all when None), decoded from the
        8-bit codes. Raises IndexFileError for an index built before the codes were stored."""
        f = self.path / HEAD_CHANGE_FILE
        if not self.has_head_change:
            raise IndexFileError(
                f"the index at {self.path} has no per-head change ({HEAD_CHANGE_FILE}): it was built by an older "
                "version; rebuild it with `attnflows index build ... --overwrite`, or run `attnflows heads report` "
                "with --data and the models instead of --index"
            )
        size = (self.manifest.get("files") or {}).get(HEAD_CHANGE_FILE)
        if size is not None and f.stat().st_size != size:
            raise IndexFileError(f"{f} is corrupt: {f.stat().st_size} bytes, the manifest recorded {size}; rebuild the index")
        codes = _load_npy(f, "head change", mmap=True)
        if codes.shape != (len(self), 2, self.num_layers, self.num_heads) or codes.dtype != np.uint8:
            raise IndexFileError(f"{f} holds {codes.dtype} {codes.shape}, expected uint8 "
                                 f"{(len(self), 2, self.num_layers, self.num_heads)}; rebuild the index")
        part = codes if rows is None else codes[np.asarray(rows, dtype=np.int64)]
        return HD.decode(np.asarray(part))

    def head_change_summary(self, rows: Sequence[int] | np.ndarray | None = None) -> "HD.HeadChange":
        """Corpus means (cosine, jsd, usage_change) over ``rows`` (all when None): a
        :class:`attnflows_panel.heads.HeadChange`, with the rows' sample ids."""
        rows_arr = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        cos, js = self.head_change(rows_arr)
        ids = self.metadata["id"].to_numpy(dtype=object)[rows_arr]
        return HD.aggregate(cos, js, self.usage(rows_arr), ids)

    def vectors(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The search vectors float32 [m, 3*L*H] as FAISS stores them (reconstructed from the index)."""
        if rows is None:
            return self.index.reconstruct_n(0, self.index.ntotal)
        rows = np.asarray(rows, dtype=np.int64)
        return self.index.reconstruct_batch(rows) if len(rows) else np.zeros((0, self.index.d), np.float32)

    def embed_usage(self, usage: np.ndarray) -> np.ndarray:
        """Search vectors [m, 3*L*H] for usage [m, 2, L, H] with this index's centring."""
        usage = np.asarray(usage, dtype=np.float32)
        expected = (2, self.num_layers, self.num_heads)
        if usage.shape[-3:] != expected:
            raise ValueError(f"usage has shape {usage.shape}, this index needs [..., {', '.join(map(str, expected))}]")
        # the same float16 rounding the stored samples went through
        return S.embed(usage.astype(np.float16).astype(np.float32), self.center)

    def heads_mask(self, heads: Any) -> np.ndarray | None:
        """A head mask bool [L, H] from a spec (``"0:1,3:5"``, (layer, head) pairs, a bool array, None)."""
        return S.parse_heads(heads, self.num_layers, self.num_heads)

    def query_vector(self, sample_id: str | None = None, result: Any = None, *, space: str = "all",
                     heads: Any = None) -> np.ndarray:
        """The masked, re-normalised query (signatures.query_vector) for a sample id or a new pair."""
        if (sample_id is None) == (result is None):
            raise ValueError("give exactly one of sample_id (a sample in the index) or result (a new pair)")
        if sample_id is not None:
            x = self.embed_usage(self.usage([self.row_of(sample_id)]))[0]
        else:
            x = self.embed_usage(self._result_usage(result)[None])[0]
        return S.query_vector(x, space, self.heads_mask(heads), L=self.num_layers, H=self.num_heads)

    def _result_usage(self, result: Any) -> np.ndarray:
        if isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(s, str) for s in result):
            if self.pair is None:
                raise ValueError(
                    "a sentence pair needs the models: open the index with SignatureIndex.open(path, pair=pair) "
                    "or pass a PairResult from pair.run(a, b)"
                )
            result = self.pair.run(result[0], result[1])
        if not hasattr(result, "pretrained") or not hasattr(result, "finetuned"):
            raise TypeError(f"result must be a PairResult or a (sentence_a, sentence_b) tuple, got {type(result).__name__}")
        attn = np.asarray(result.pretrained.attentions)
        if attn.shape[:2] != (self.num_layers, self.num_heads):
            raise IndexMismatchError(
                f"the pair was run through models with [layers, heads] = {list(attn.shape[:2])}, the index has "
                f"[{self.num_layers}, {self.num_heads}]"
            )
        return result_usage(result, self.tau)

    # ------------------------------------------------------------------ filters

    def select(self, filters: Mapping[str, Any] | None = None) -> np.ndarray | None:
        """Rows allowed by ``filters`` as a bool mask [N] (None = no filter).

        Keys: ``label`` (int or label name, or a list), ``prediction``/``pred_fine`` and ``pred_pre``
        (label names), ``correct``/``correct_fine`` and ``correct_pre`` (bool), ``text`` (case-insensitive
        substring of either sentence), ``ids`` (sample ids), ``rows`` (row numbers or a bool mask), or any
        other metadata column (value or list of values). Values None are ignored.
        """
        if not filters:
            return None
        md = self.metadata
        mask = np.ones(len(md), dtype=bool)
        for key, value in filters.items():
            if value is None:
                continue
            col = _FILTER_ALIASES.get(key, key)
            values = list(value) if isinstance(value, (list, tuple, set, np.ndarray)) and col not in ("rows",) else [value]
            if col == "label":
                ints = [int(v) for v in values if isinstance(v, (int, np.integer)) and not isinstance(v, bool)]
                names = [str(v).lower() for v in values if isinstance(v, str)]
                if len(ints) + len(names) != len(values):
                    raise ValueError(f"label filter must be label ints or names, got {value!r}")
                known = {n.lower() for n in md["label_name"].dropna().unique()}
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise ValueError(f"unknown label {unknown[0]!r}; this index has labels {sorted(known)}")
                m = md["label"].isin(ints).to_numpy()
                if names:
                    m = m | md["label_name"].str.lower().isin(names).fillna(False).to_numpy(dtype=bool)
            elif col == "text":
                needle = str(value).lower()
                m = (
                    md["sentence_a"].str.lower().str.contains(needle, regex=False).fillna(False).to_numpy(dtype=bool)
                    | md["sentence_b"].str.lower().str.contains(needle, regex=False).fillna(False).to_numpy(dtype=bool)
                )
            elif col == "ids":
                m = np.zeros(len(md), dtype=bool)
                m[self.rows_of([str(v) for v in values])] = True
            elif col == "rows":
                arr = np.asarray(value)
                if arr.dtype == bool:
                    if arr.shape != (len(md),):
                        raise ValueError(f"rows mask has shape {arr.shape}, expected ({len(md)},)")
                    m = arr
                else:
                    m = np.zeros(len(md), dtype=bool)
                    m[arr.astype(np.int64)] = True
            elif col in md.columns:
                if col == "correct_fine" and not self.has_correctness:
                    raise LabelMismatchError(
                        f"cannot filter by correctness: the index at {self.path} has none ({self.label_mismatch})"
                    )
                if col.startswith("correct") or col == "truncated":
                    values = [bool(v) for v in values]
                m = md[col].isin(values).fillna(False).to_numpy(dtype=bool)
            else:
                allowed = ["label", "prediction", "pred_pre", "correct", "correct_pre", "text", "ids", "rows",
                           *[c for c in md.columns if c not in ("label", "id")]]
                raise ValueError(f"unknown filter {key!r}; use one of {', '.join(dict.fromkeys(allowed))}")
            mask &= m
        return mask

    # ------------------------------------------------------------------ search

    def _usage_columns(self, q: np.ndarray) -> list[tuple[int, int]]:
        """The (model, layer*H + head) usage columns that the score of query ``q`` depends on."""
        d = self.num_layers * self.num_heads
        nz = np.asarray(q).reshape(len(S.BLOCKS), d) != 0
        cols = set()
        for b, model in ((0, (0,)), (1, (1,)), (2, (0, 1))):
            for j in np.flatnonzero(nz[b]):
                cols.update((m, int(j)) for m in model)
        return sorted(cols)

    def _search_columns(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k for query ``q`` from the head-major usage: the same score as the stored vectors,
        score(n) = Σ_b Σ_d q_{b,d} (s_{b,d}(n) - μ_{b,d}) / (sqrt(3) ||s_b(n) - μ_b||)."""
        L, H = self.num_layers, self.num_heads
        d = L * H
        qb = np.asarray(q, dtype=np.float32).reshape(len(S.BLOCKS), d)
        flat = self._usage_hm.reshape(2, d, -1)
        N = flat.shape[-1]
        if self._inv_norms is None:  # 1 / (sqrt(3) ||s_b(n) - μ_b||), 0 where the block is empty
            norms = np.asarray(self._norms, dtype=np.float32) * np.float32(np.sqrt(len(S.BLOCKS)))
            self._inv_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > S.EPS)
        scores = np.zeros(N, dtype=np.float32)
        for b in range(len(S.BLOCKS)):
            dims = np.flatnonzero(qb[b])
            if not len(dims):
                continue
            num = np.zeros(N, dtype=np.float32)
            for j in dims:  # one pass over the float16 column(s), computed in float32
                w = np.float32(qb[b, j])
                if b == 2:
                    term = np.subtract(flat[1, j], flat[0, j], dtype=np.float32)
                    term *= w
                else:
                    term = np.multiply(flat[b, j], w, dtype=np.float32)
                num += term
            num -= np.float32(qb[b, dims] @ self.center[b, dims])
            num *= self._inv_norms[b]
            scores += num
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
            k = min(k, int(np.count_nonzero(allowed)))
        k = min(k, N)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        top = np.argpartition(scores, N - k)[N - k:] if k < N else np.arange(N)
        order = np.lexsort((top, -scores[top]))
        rows = top[order].astype(np.int64)
        return scores[rows].astype(np.float32), rows

    def search_effort(self, q: np.ndarray) -> dict[str, int]:
        """Search parameters for query ``q`` on an approximate index: the manifest's ``efSearch`` /
        ``nprobe``, widened when the query keeps only part of the dims (a space, a head mask).

        The HNSW graph (or IVF partition) is built for the full vector, so a masked query navigates it
        less well: at 1M BERT-base-size signatures, a 24-head mask in the diff block found 46% of the
        true top 10 with the base efSearch, and a whole block (space pre) 94%. The effort grows as
        max((1/f)^0.9, (1/(3·f))^1.5), f = the fraction of dims the query keeps, up to 32x: all three
        blocks (f = 1) keep the base, one block (f = 1/3) searches 2.7x harder (pre: recall 0.99 at
        0.9 ms), a 24-head diff mask (f = 1/18) 14.7x (0.945 at 5.2 ms; benchmarks/bench_index.py). Masks
        narrow enough to need at most ``EXACT_COLUMNS`` usage columns skip the graph altogether
        (:meth:`search_vector`)."""
        search = dict((self.manifest.get("index") or {}).get("search") or {})
        kept = max(np.count_nonzero(q) / max(1, q.size), 1e-9)
        scale = float(np.clip(max((1.0 / kept) ** 0.9, (1.0 / (3.0 * kept)) ** 1.5), 1.0, 32.0))
        if "efSearch" in search:
            search["efSearch"] = int(round(search["efSearch"] * scale))
        if "nprobe" in search:
            search["nprobe"] = int(round(search["nprobe"] * scale))
        return search

    def _search_params(self, q: np.ndarray, selector: Any = None):
        faiss = _faiss()
        search = self.search_effort(q)
        if "efSearch" in search:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=search["efSearch"])
        if "nprobe" in search:
            return faiss.SearchParametersIVF(sel=selector, nprobe=search["nprobe"])
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def search_vector(self, q: np.ndarray, k: int = 10, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top ``k`` stored vectors for query ``q`` by inner product, best first
        (ties in row order), among ``allowed`` rows (bool mask, None = all).

        Exhaustive indexes search FAISS. Approximate ones search FAISS too (with :meth:`search_effort`),
        except (a) a query that needs at most ``EXACT_COLUMNS`` usage columns (a few heads), ranked
        exactly from the head-major usage and the stored block norms, and (b) a filter that leaves few
        candidates, ranked exactly over their vectors."""
        faiss = _faiss()
        q = np.ascontiguousarray(np.asarray(q, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self.index.d:
            raise ValueError(f"query has {q.shape[1]} dims, the index {self.index.d}")
        kind = (self.manifest.get("index") or {}).get("kind")
        if kind != "exact" and self._norms is not None and len(self._usage_columns(q[0])) <= EXACT_COLUMNS:
            # a narrow head mask: a graph built for the full vector finds its neighbours poorly, while
            # ranking all samples exactly on a few contiguous columns costs a few ms per column at 1M
            return self._checked(*self._search_columns(q[0], k, allowed))
        if allowed is not None:
            candidates = np.flatnonzero(allowed)
            if len(candidates) == 0 or k <= 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            if kind != "exact" and len(candidates) <= max(20_000, 4 * k):
                # an approximate index loses recall under a narrow filter: rank the few candidates exactly
                scores = self.vectors(candidates) @ q[0]
                top = np.lexsort((candidates, -scores))[:k]
                return self._checked(scores[top].astype(np.float32), candidates[top])
            selector = faiss.IDSelectorBatch(candidates.astype(np.int64))
            with _one_thread(faiss):
                D, I = self.index.search(q, int(min(k, len(candidates))), params=self._search_params(q, selector))
        else:
            with _one_thread(faiss):
                D, I = self.index.search(q, int(min(k, self.index.ntotal)), params=self._search_params(q))
        keep = I[0] >= 0
        scores, rows = D[0][keep], I[0][keep].astype(np.int64)
        order = np.lexsort((rows, -scores))  # best first; ties in row order, whatever the index kind
        return self._checked(scores[order], rows[order])

    def _checked(self, scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores are cosines: anything outside [-1, 1] (beyond float16 rounding) or not finite means
        damaged files, and is an error, never an answer. Rounding just past ±1 is clipped."""
        scores = np.asarray(scores, dtype=np.float32)
        bad = ~np.isfinite(scores) | (np.abs(scores) > 1.0 + SCORE_TOLERANCE)
        if bad.any():
            raise IndexFileError(
                f"the index at {self.path} gave a similarity score of {float(scores[bad][0]):.4g} for row "
                f"{int(rows[bad][0])}, but scores are cosines in [-1, 1]: its files are damaged. Check them with "
                f"`attnflows index verify --index {self.path}` and rebuild the index"
            )
        return np.clip(scores, -1.0, 1.0), rows

    def query(
        self,
        sample_id: str | None = None,
        result: Any = None,
        *,
        space: str = "all",
        heads: Any = None,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        exclude_self: bool = False,
    ):
        """Samples whose signatures are most similar to a sample's (by id) or a new pair's.

        sample_id: a sample in the index; result: a PairResult (or a (sentence_a, sentence_b) tuple when the
        index was opened with a pair), run through the same models.
        space: "pre", "fine", "diff" or "all" (see :mod:`attnflows_panel.signatures`).
        heads: restrict to these heads: a bool [L, H] mask, a spec "layer:head,..." (0-based, e.g. "0:1,3:5",
            "5:*"), or (layer, head) pairs; None = all heads.
        filters: see :meth:`select` (label, prediction, correctness, text, ...).
        exclude_self: leave the query sample out of its own results.

        Returns a DataFrame sorted by score (best first): rank, id, score, row, then the metadata columns.
        The score is the mean over the chosen blocks of the masked cosine (1 = identical on those heads).
        """
        import pandas as pd

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        allowed = self.select(filters)  # bad filters (e.g. correctness without matching labels) fail first
        q = self.query_vector(sample_id, result, space=space, heads=heads)
        self_row = self.row_of(sample_id) if sample_id is not None else None
        if exclude_self and self_row is not None:
            allowed = np.ones(len(self), dtype=bool) if allowed is None else allowed.copy()
            allowed[self_row] = False
        scores, rows = self.search_vector(q, int(k), allowed)
        df = self.metadata.iloc[rows].reset_index(drop=True)
        df.insert(0, "row", rows)
        df.insert(0, "score", scores.astype(np.float32))
        df.insert(0, "id", df.pop("id"))
        df.insert(0, "rank", np.arange(1, len(df) + 1))
        df.attrs.update(space=space, heads=S.format_heads(self.heads_mask(heads)), k=int(k),
                        query=sample_id if sample_id is not None else "new pair")
        return df

    # ------------------------------------------------------------------ map

    def pca(self, max_fit: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """2-D PCA of all "all"-space vectors (numpy SVD): (coords float32 [N, 2], explained variance ratio [2]).

        Fitted on at most ``max_fit`` rows (a random subset), applied to all; computed once per opened index."""
        if self._pca is None:
            N = len(self)
            rng = np.random.default_rng(seed)
            fit_rows = np.arange(N) if N <= max_fit else np.sort(rng.choice(N, max_fit, replace=False))
            X = self.embed_usage(self.usage(fit_rows))
            mean = X.mean(axis=0)
            _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
            comps = vt[:2]
            if comps.shape[0] < 2:  # a corpus of one sample
                comps = np.vstack([comps, np.zeros((2 - comps.shape[0], comps.shape[1]), comps.dtype)])
            total = float((s ** 2).sum()) or 1.0
            ratio = np.pad(s[:2] ** 2 / total, (0, max(0, 2 - len(s)))).astype(np.float32)
            coords = np.empty((N, 2), dtype=np.float32)
            for start in range(0, N, 65536):
                chunk = self.embed_usage(self.usage(slice(start, start + 65536)))
                coords[start:start + len(chunk)] = (chunk - mean) @ comps.T
            self._pca = {"coords": coords, "ratio": ratio, "mean": mean, "components": comps}
        return self._pca["coords"], self._pca["ratio"]

    def pca_project(self, vectors: np.ndarray) -> np.ndarray:
        """Project search vectors [m, 3*L*H] onto the PCA map of :meth:`pca`."""
        self.pca()
        p = self._pca
        return ((np.asarray(vectors, dtype=np.float32) - p["mean"]) @ p["components"].T).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------------


def verify_index(path: str | os.PathLike, *, chunk: int = 65536) -> dict[str, Any]:
    """Check an index fully (``attnflows index verify``): every listed file against its recorded size
    and checksum, then the contents against each other: the FAISS vectors are the embedding of the
    stored usage (within float16 rounding), the block norms and the centre are those of the usage, the
    id map is the metadata's ids sorted, ids are unique, every sample's score with itself is 1.

    Returns ``{"path", "count", "files" (names checked), "checked" (what was compared), "problems"
    (one message per finding, naming the file; empty = intact)}``. Raises nothing for a damaged index,
    only FileNotFoundError when there is no index at ``path``."""
    path = Path(path)
    report: dict[str, Any] = {"path": str(path), "count": None, "files": [], "checked": [], "problems": []}
    problems = report["problems"]
    if not (path / MANIFEST).exists():
        raise FileNotFoundError(f"no attnflows index at {path}: {MANIFEST} is missing")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        problems.append(f"{path / MANIFEST} is corrupt: {exc}")
        return report
    report["count"] = manifest.get("count")
    report["files"] = _listed_files(manifest)
    problems += verify_files(path, manifest)
    if not (manifest.get("checksums") or {}).get("files"):
        problems.append(f"{path / MANIFEST} records no checksums (built before they were added): rebuild the index")
    report["checked"].append("sizes and checksums")
    if problems:
        return report
    try:
        idx = SignatureIndex.open(path, verify=False)
    except (IndexFileError, IndexMismatchError) as exc:
        problems.append(str(exc))
        return report
    N, L, H = len(idx), idx.num_layers, idx.num_heads
    tol = 4e-3  # float16 storage of unit vectors (SQfp16): relative rounding 5e-4 per value

    usage_all = idx._usage_hm
    center = S.fit_center(np.moveaxis(usage_all, -1, 0)) if N else idx.center
    if not np.allclose(center, idx.center, atol=1e-5):
        problems.append(f"{path / CENTER_FILE} does not hold the corpus mean of {path / USAGE_FILE}")
    report["checked"].append("centre = mean usage")
    worst_vec = worst_norm = 0.0
    for start in range(0, N, chunk):
        rows = np.arange(start, min(N, start + chunk))
        usage = idx.usage(rows)
        want = idx.embed_usage(usage)
        got = idx.vectors(rows)
        worst_vec = max(worst_vec, float(np.abs(got - want).max(initial=0.0)))
        norms = np.linalg.norm(S.blocks(usage.astype(np.float16).astype(np.float32)) - idx.center[None], axis=2).T
        worst_norm = max(worst_norm, float(np.abs(norms - np.asarray(idx._norms[:, rows])).max(initial=0.0)))
    if worst_vec > tol:
        problems.append(f"{path / INDEX_FILE} holds vectors that differ from the embedding of {path / USAGE_FILE} "
                        f"by up to {worst_vec:.3g}")
    if worst_norm > 1e-3:
        problems.append(f"{path / NORMS_FILE} differs from the norms of {path / USAGE_FILE} by up to {worst_norm:.3g}")
    report["checked"] += ["FAISS vectors = embedded usage", "norms of the usage blocks"]

    ids = idx.metadata["id"].astype(str).to_numpy(dtype=object)
    if len(set(ids)) != len(ids):
        problems.append(f"{path / METADATA_FILE} holds duplicate ids")
    try:
        sorted_ids, map_rows = idx._id_map()
        if not np.array_equal(ids[map_rows], sorted_ids):
            problems.append(f"{path / IDMAP_FILE} does not map the ids of {path / METADATA_FILE} to their rows")
    except IndexFileError as exc:
        problems.append(str(exc))
    report["checked"].append("id map = metadata ids")

    probe = np.unique(np.linspace(0, N - 1, num=min(N, 16)).astype(np.int64)) if N else np.zeros(0, np.int64)
    for row in probe:
        q = idx.vectors([row])[0]
        try:
            scores, rows = idx.search_vector(q, k=1)
        except IndexFileError as exc:
            problems.append(str(exc))
            break
        self_score = float(q @ q)  # 1, or less for a sample whose blocks are all at the corpus mean
        if not len(scores) or float(scores[0]) < self_score - 2e-2:
            problems.append(f"{path / INDEX_FILE}: sample row {row} does not find itself (self-similarity "
                            f"{self_score:.3f}, best {float(scores[0]) if len(scores) else None})")
            break
    report["checked"].append("every probed sample finds itself first")
    return report
