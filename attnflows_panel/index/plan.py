"""Build planning and shards: what a build of an index folder still has to do, and how a shard is written.

Samples are cut into shards of ``shard_size`` consecutive corpus rows. :func:`plan_build` checks the
arguments and the folder, loads the corpus, reconciles the labels, writes the incomplete manifest and
lists the shards not finished yet (a :class:`BuildPlan`); both engines follow the plan, and a
:class:`ShardWriter` per shard collects its batches and writes ``shard-NNNNN.npy`` (usage),
``.heads.npy`` (head change) and ``.parquet`` (metadata) to temporaries renamed into place, the parquet
last, so a shard is finished exactly when its parquet exists. An interrupted build, rerun with the same
options, skips finished shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel._io import file_lock
from attnflows_panel.index.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SHARD_DIR,
    IndexFileError,
    IndexMismatchError,
    clear_index_files,
    manifest_differences,
    save_json,
    save_npy,
    save_parquet,
    shard_name,
    utc_now,
    verify_files,
)
from attnflows_panel.index.reconcile import apply_label_reconciliation, is_correct, reconcile_corpus_labels

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "BuildPlan",
    "ShardWriter",
    "build_lock",
    "check_build_args",
    "plan_build",
    "shard_metadata",
]

log = logging.getLogger("attnflows_panel.index")

#: samples per shard (the unit of resumption)
DEFAULT_SHARD_SIZE = 1024


def _with_columns(data: Any, task, split, limit, column_map, labels) -> Any:
    """``data`` as it is, or (a source with ``column_map`` / ``labels``) the loaded corpus."""
    if (column_map is None and labels is None) or hasattr(data, "column_names"):
        return data
    from attnflows_panel.corpus import load_corpus

    return load_corpus(os.fspath(data), task=task, split=split, limit=limit, column_map=column_map, labels=labels)


def _corpus_digest(ids: Sequence[str], a: Sequence[str], b: Sequence[str]) -> str:
    """SHA-256 of the corpus's ids and sentences, in order (a resumed build must index the same corpus)."""
    h = hashlib.sha256()
    for i, x, y in zip(ids, a, b, strict=True):
        h.update(str(i).encode())
        h.update(b"\x1f")
        h.update(str(x).encode())
        h.update(b"\x1f")
        h.update(str(y).encode())
        h.update(b"\x1e")
    return h.hexdigest()


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
    correct_pre = [is_correct(p, gold, name) for p, gold, name in zip(pred_pre, label, label_name, strict=True)]
    correct_fine = [is_correct(p, gold, name) for p, gold, name in zip(pred_fine, label, label_name, strict=True)]
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
            "correct_pre": pd.array(correct_pre, dtype="boolean"),
            "correct_fine": pd.array(correct_fine, dtype="boolean"),
            "n_tokens": np.asarray(out["n_tokens"], dtype=np.int32),
            "truncated": np.asarray(out["truncated"], dtype=bool),
        }
    )


def _shard_complete(shard_dir: Path, i: int, expected: int, L: int, H: int) -> bool:
    """Whether shard ``i`` is written whole (its three files, the expected shapes): resuming skips it."""
    import pyarrow.parquet as pq

    base = shard_dir / shard_name(i)
    npy, parquet = base.with_suffix(".npy"), base.with_suffix(".parquet")
    if not (npy.exists() and parquet.exists() and base.with_suffix(".heads.npy").exists()):
        return False
    try:
        arr = np.load(npy, allow_pickle=False, mmap_mode="r")
        rows = pq.ParquetFile(parquet).metadata.num_rows
    except Exception:  # noqa: BLE001 - a damaged shard is simply redone
        return False
    return arr.shape == (expected, 2, L, H) and arr.dtype == np.float32 and rows == expected


def _source_name(data: Any) -> str:
    """How the manifest names the corpus source."""
    if isinstance(data, str):
        return data
    return "<datasets.Dataset>" if hasattr(data, "column_names") else os.fspath(data)


def _build_identity(pair: Any, ds, task, data, split, limit, tau: float, shard_size: int, digest: str) -> dict:
    """What makes an index the index it is: the manifest's fields that a resumed build must share."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "signature_version": signatures.SIGNATURE_VERSION,
        "signature": "u[k,h] = |E_k,h| / |E_k| per model; blocks pre, fine, diff = fine - pre; "
                     "centred by the corpus mean, unit norm per block, weight 1/sqrt(3)",
        "tau": float(tau),
        "fingerprint": pair.fingerprint,
        "num_layers": int(pair.num_layers),
        "num_heads": int(pair.num_heads),
        "max_length": int(getattr(pair, "max_length", 0) or 0),
        "dims": {
            "blocks": list(signatures.BLOCKS),
            "per_block": int(pair.num_layers * pair.num_heads),
            "total": int(len(signatures.BLOCKS) * pair.num_layers * pair.num_heads),
            "order": "block-major, then layer k (0-based, HF order), then head h: dim = b*L*H + k*H + h",
        },
        "data": _source_name(data),
        "task": task,
        "split": split,
        "limit": limit,
        "count": len(ds),
        "corpus_sha256": digest,
        "shard_size": int(shard_size),
        "num_shards": int(-(-len(ds) // shard_size)),
    }


_IDENTITY_KEYS = ("format", "format_version", "signature_version", "tau", "num_layers", "num_heads", "max_length",
                  "count", "corpus_sha256", "shard_size", "label_map", "weights")


def _identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between an existing manifest and the build asked for (empty = the same index)."""
    diffs = manifest_differences(old, new.get("fingerprint"))
    for key in _IDENTITY_KEYS:
        if key == "signature_version":
            continue  # reported by manifest_differences
        default = "raw" if key == "weights" else None  # an index built before the key existed holds raw weights
        if old.get(key, default) != new.get(key, default):
            what = "corpus (ids or sentences)" if key == "corpus_sha256" else key
            diffs.append(f"{what}: existing {old.get(key, default)!r}, requested {new.get(key, default)!r}")
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
        return list(zip(rows["sentence_a"], rows["sentence_b"], strict=True))

    @property
    def done(self) -> int:
        """Samples in finished shards."""
        return self.count - sum(hi - lo for lo, hi in map(self.shard_range, self.todo))


#: what the models say per sample, besides its usage and head change (:func:`compute_batch`)
_SAMPLE_FIELDS = ("pred_pre", "pred_fine", "prob_fine", "n_tokens", "truncated")


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
        self.fields: dict[str, list] = {k: [None] * n for k in _SAMPLE_FIELDS}
        self.filled = np.zeros(n, dtype=bool)

    def put(self, positions: Sequence[int], out: Mapping[str, Any]) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        self.usage[positions] = out["usage"]
        self.change[positions] = out["head_change"]
        for key, values in self.fields.items():
            for p, v in zip(positions, out[key], strict=True):
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
        base = self.plan.out / SHARD_DIR / shard_name(self.i)
        save_npy(base.with_suffix(".npy"), self.usage)
        save_npy(base.with_suffix(".heads.npy"), self.change)
        save_parquet(base.with_suffix(".parquet"), meta)  # the commit point of the shard


def check_build_args(tau, batch_size, shard_size, limit) -> None:
    """Raise ValueError (one line, naming the argument) for a τ outside (0, 1) or a size that is not a
    positive int."""
    if not (isinstance(tau, (int, float)) and 0.0 < float(tau) < 1.0):
        raise ValueError(f"tau must be in (0, 1), got {tau!r}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")


_LOCK_NAME = ".build.lock"
#: the lock file a build keeps in its index folder (public: the build engines leave it out of "holds files")
BUILD_LOCK_NAME = _LOCK_NAME


def build_lock(out: str | os.PathLike):
    """The lock one build of ``out`` holds (two builds of one folder would overwrite each other's shards)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return file_lock(out / _LOCK_NAME)



def _corpus_columns(ds) -> dict:
    """The corpus as a dict of lists (small next to the forward passes); ValueError on duplicate ids."""
    columns = ds[:]
    ids = [str(x) for x in columns["id"]]
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for x in ids:
            if x in seen and x not in dup:
                dup.append(x)
            seen.add(x)
        raise ValueError(f"the corpus has {len(ids) - len(seen)} duplicate ids (e.g. {dup[:3]}); ids must be unique")
    return columns


def _existing_index(out: Path, identity: Mapping[str, Any], overwrite: bool) -> dict | None:
    """Make ``out`` ready for the build of ``identity``. Returns the existing manifest when ``out``
    already holds this very index, intact (nothing to do); else None, after clearing what a build wrote
    there when ``overwrite`` (or when a finished index was damaged since). Raises IndexFileError for a
    folder that is not an index or a corrupt manifest, IndexMismatchError for an index built with other
    settings (unless ``overwrite``)."""
    manifest_path = out / MANIFEST
    if not (out.exists() and any(p.name != _LOCK_NAME for p in out.iterdir())):
        return None
    if not manifest_path.exists():
        if not overwrite:
            raise IndexFileError(
                f"{out} exists and is not an attnflows index (no {MANIFEST}); choose another --out "
                "or pass overwrite=True"
            )
        clear_index_files(out)
        return None
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
                return old
            overwrite = True  # finished once, damaged since: build it again
    if overwrite:
        clear_index_files(out)
    return None


def _start_manifest(out: Path, identity: Mapping[str, Any], reconciliation: Mapping[str, Any]) -> dict:
    """Write the incomplete manifest of a build (keeping the creation time of a resumed one) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(exist_ok=True)
    for stale in shard_dir.glob(".*.tmp-*"):  # temporaries of a killed build (we hold the build lock)
        stale.unlink()
    manifest_path = out / MANIFEST
    manifest = {**identity, "complete": False, "created": utc_now(), "label_reconciliation": reconciliation}
    if manifest_path.exists():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            manifest["created"] = json.loads(manifest_path.read_text()).get("created", manifest["created"])
    save_json(manifest_path, manifest)
    return manifest


def plan_build(pair: Any, data: Any, task: str | None, out: str | os.PathLike, *, split: str | None = None,
               tau: float = 0.3, batch_size: int = 32, limit: int | None = None,
               shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False, label_map: Any = None,
               column_map: Mapping[str, str] | None = None, labels: Any = None,
               max_tokens: int | None = None, weights: str = "raw") -> BuildPlan:
    """Check the arguments and ``out``, load the corpus, write the (incomplete) manifest and find the
    shards still to do. Call it holding :func:`build_lock`. ``max_tokens``: the token budget of a
    forward batch as :func:`~attnflows_panel.index.batches.resolve_max_tokens` gave it (None = no
    budget; batching does not change what is computed, so it is not part of the index's identity).
    ``finished`` is True when ``out`` already holds this very index, intact (then there is nothing to
    do). The manifest carries the models' and the corpus's label reconciliation
    (:func:`~attnflows_panel.index.reconcile.reconcile_corpus_labels`), which :class:`ShardWriter`
    applies to each shard's correctness."""
    check_build_args(tau, batch_size, shard_size, limit)
    out = Path(out)
    ds = _load_data(_with_columns(data, task, split, limit, column_map, labels), task, split, limit)
    reconciliation = reconcile_corpus_labels(pair, ds, label_map)
    if not reconciliation["matched"]:
        log.warning("index %s: %s", out, reconciliation["message"])
    columns = _corpus_columns(ds)
    digest = _corpus_digest([str(x) for x in columns["id"]], columns["sentence_a"], columns["sentence_b"])
    identity = _build_identity(pair, ds, task, data, split, limit, float(tau), shard_size, digest)
    identity["label_map"] = reconciliation["label_map"]
    if weights not in ("raw", "norm"):
        raise ValueError(f"an index holds raw or norm edge weights (attattr needs gradients per pair); got {weights!r}")
    identity["weights"] = weights  # the edge weights whose head usage the signatures count (attnflows_panel.weights)
    max_length = int(getattr(pair, "max_length", 512) or 512)
    finished = _existing_index(out, identity, overwrite)
    if finished is not None:
        return BuildPlan(out, finished, columns, [], float(tau), batch_size, max_length, finished=True,
                         max_tokens=max_tokens)
    manifest = _start_manifest(out, identity, reconciliation)
    L, H = identity["num_layers"], identity["num_heads"]
    N, shard_dir = len(ds), out / SHARD_DIR
    todo = [i for i in range(identity["num_shards"])
            if not _shard_complete(shard_dir, i, min(shard_size, N - i * shard_size), L, H)]
    return BuildPlan(out, manifest, columns, todo, float(tau), batch_size, max_length, max_tokens=max_tokens)
