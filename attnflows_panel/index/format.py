"""The on-disk format of a signature index: file names, the manifest, errors, and integrity.

An index folder holds the files named here (index/README.md and :mod:`attnflows_panel.index` describe
each); ``manifest.json`` is written last, so a complete manifest means a complete index. It records the
size and checksum (:data:`~attnflows_panel._io.CHECKSUM_ALGORITHM`) of every data file
(:func:`record_files`), which :func:`verify_files` checks when an index opens. Arrays are ``.npy``
without pickle, tables parquet, the manifest JSON; every file is written to a temporary and renamed
(:func:`attnflows_panel._io.atomic_write`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel._io import CHECKSUM_ALGORITHM, atomic_write, file_checksum

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "INDEX_FILE",
    "USAGE_FILE",
    "NORMS_FILE",
    "CENTER_FILE",
    "METADATA_FILE",
    "IDMAP_FILE",
    "SHARD_DIR",
    "HEAD_CHANGE_FILE",
    "DATA_FILES",
    "METADATA_COLUMNS",
    "IndexFileError",
    "IndexMismatchError",
    "UnknownSampleError",
    "LabelMismatchError",
    "utc_now",
    "import_faiss",
    "save_npy",
    "save_json",
    "save_parquet",
    "load_npy",
    "load_parquet",
    "shard_name",
    "read_manifest",
    "write_manifest",
    "manifest_checksum",
    "ManifestError",
    "UPGRADE_HINT",
    "manifest_differences",
    "listed_files",
    "record_files",
    "verify_files",
    "clear_index_files",
    "refuse_other_files",
]

FORMAT = "attnflows-signature-index"
FORMAT_VERSION = 1

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
#: the files every complete index has
DATA_FILES = (INDEX_FILE, USAGE_FILE, NORMS_FILE, CENTER_FILE, METADATA_FILE, IDMAP_FILE)


#: metadata columns, in order (metadata.parquet)
METADATA_COLUMNS = (
    "id", "sentence_a", "sentence_b", "label", "label_name", "pred_pre", "pred_fine",
    "prob_fine", "correct_pre", "correct_fine", "n_tokens", "truncated",
)


class IndexFileError(ValueError):
    """A missing piece, a corrupt file, or an incomplete build in an index folder."""


class ManifestError(IndexFileError):
    """A manifest that cannot be trusted: edited or damaged since it was written (its own checksum
    differs), without the checksums of its files, or naming a file outside the index."""


#: what to run for an index written before manifests carried checksums (see :func:`read_manifest`)
UPGRADE_HINT = ("`attnflows index upgrade --index {path}` checks its files against each other and records their "
                "checksums (or rebuild it with `attnflows index build ... --overwrite`)")


class IndexMismatchError(ValueError):
    """The index was built from other models (or another signature definition) than the ones loaded."""


class UnknownSampleError(ValueError):
    """A sample id that the index does not hold."""


class LabelMismatchError(ValueError):
    """Correctness was asked for, but the model's labels and the corpus's labels do not match."""


# ----------------------------------------------------------------------------------------------------
# reading and writing the files
# ----------------------------------------------------------------------------------------------------


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601), as the manifest records it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def import_faiss():
    """The ``faiss`` module (imported on first use: opening the package stays light)."""
    import faiss

    return faiss


def save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))


def save_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())


def save_parquet(path: Path, df) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write(path, lambda fh: pq.write_table(table, fh, compression="zstd"))


def load_npy(path: Path, what: str, mmap: bool = False) -> np.ndarray:
    if not path.exists():
        raise IndexFileError(f"{what} file {path} is missing")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a damaged file
        raise IndexFileError(f"{what} file {path} is corrupt or not a .npy array: {exc}") from exc


def load_parquet(path: Path, what: str, columns: Sequence[str] | None = None):
    import pandas as pd

    if not path.exists():
        raise IndexFileError(f"{what} file {path} is missing")
    try:
        return pd.read_parquet(path, columns=list(columns) if columns else None)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise IndexFileError(f"{what} file {path} is corrupt or not parquet: {exc}") from exc


def shard_name(i: int) -> str:
    """The file stem of shard ``i`` in ``shards/`` (``shard-NNNNN``)."""
    return f"shard-{i:05d}"


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """The checksum (:data:`~attnflows_panel._io.CHECKSUM_ALGORITHM`) of a manifest's own content: its
    canonical JSON (keys sorted, no spaces) without the ``manifest_checksum`` entry that records it."""
    import xxhash

    body = {k: v for k, v in manifest.items() if k != "manifest_checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return xxhash.xxh3_64(text.encode()).hexdigest()


def write_manifest(path: Path, manifest: dict) -> None:
    """Write ``manifest`` to ``path`` atomically, with the checksum of its own content
    (``manifest_checksum``), so that an edit after the build (τ changed by hand, the checksums of the
    files removed) is found by :func:`read_manifest`."""
    manifest.pop("manifest_checksum", None)
    manifest["manifest_checksum"] = {"algorithm": CHECKSUM_ALGORITHM, "value": manifest_checksum(manifest)}
    save_json(path, manifest)


def read_manifest(path: Path, *, trusted: bool = True) -> dict:
    """The manifest at ``path`` (a ``manifest.json``) as a dict; IndexFileError when it is not JSON, not
    an object, or cannot be read.

    ``trusted`` (the default, for an index that is opened, queried or verified) also requires of a
    complete index's manifest: its own checksum, equal to the checksum of its content (else it was
    edited or damaged after the build); the checksums of its files; and file names that are plain names
    inside the index. An index written before manifests had checksums raises :class:`ManifestError`
    with the upgrade command (:data:`UPGRADE_HINT`); it is never trusted silently."""
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path} is corrupt: {exc}") from exc
    if trusted and manifest.get("complete"):
        check_manifest(path, manifest)
    return manifest


def check_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` unless the complete manifest at ``path`` guards itself and its files
    (see :func:`read_manifest`)."""
    folder = path.parent
    recorded = manifest.get("manifest_checksum")
    if not isinstance(recorded, Mapping) or not recorded.get("value"):
        raise ManifestError(f"{path} records no checksum of its own (written before manifests had one), so an edit "
                            f"of it cannot be found: {UPGRADE_HINT.format(path=folder)}")
    if recorded.get("algorithm") != CHECKSUM_ALGORITHM or recorded.get("value") != manifest_checksum(manifest):
        raise ManifestError(f"{path} was changed after the build (its content no longer matches its own checksum): "
                            "an edit or damage; rebuild the index with `attnflows index build ... --overwrite`")
    sums = manifest.get("checksums")
    if not isinstance(sums, Mapping) or not sums.get("files"):
        raise ManifestError(f"{path} records no checksums of the index's files, so damaged files cannot be found: "
                            f"{UPGRADE_HINT.format(path=folder)}")
    listed_files(manifest)  # plain names only


# ----------------------------------------------------------------------------------------------------
# the manifest against the models, and the files against the manifest
# ----------------------------------------------------------------------------------------------------


def manifest_differences(manifest: Mapping[str, Any], fingerprint: Mapping[str, Any] | None = None, *,
                         num_layers: int | None = None, num_heads: int | None = None) -> list[str]:
    """What differs between an index's manifest and a loaded model pair (empty list = they match).

    A model's entry matches when its weights hash matches (the name may differ: a copied folder holds
    the same weights); without hashes on both sides the names must match.
    """
    diffs: list[str] = []
    version = manifest.get("signature_version")
    if version != signatures.SIGNATURE_VERSION:
        diffs.append(
            f"signature version: index has {version}, this attnflows_panel computes version "
            f"{signatures.SIGNATURE_VERSION} (rebuild the index)"
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


def _plain_name(name: Any) -> str:
    """``name`` when it is a plain file name inside the index folder; ManifestError otherwise (a path,
    ``..``, a hidden or absolute name: a manifest must never make us read a file outside the index)."""
    text = str(name)
    if (not isinstance(name, str) or not text or text in (".", "..") or text.startswith(".") or "/" in text
            or "\\" in text or "\0" in text or os.path.isabs(text) or Path(text).name != text):
        raise ManifestError(f"the manifest names the file {text!r}, which is not a plain file name inside the index; "
                            "the manifest was edited or damaged: rebuild the index")
    return text


def listed_files(manifest: Mapping[str, Any]) -> list[str]:
    """Every data file an index's manifest lists (sizes and checksums), plus the ones every index has.
    Raises :class:`ManifestError` for a name that is not a plain file name inside the index."""
    names = list(DATA_FILES)
    for key in ("files",):
        names += [_plain_name(n) for n in (manifest.get(key) or {}) if n not in names]
    names += [_plain_name(n) for n in ((manifest.get("checksums") or {}).get("files") or {}) if n not in names]
    return names


def record_files(out: Path, manifest: dict, names: Iterable[str] | None = None) -> None:
    """Record the size and checksum (:data:`~attnflows_panel._io.CHECKSUM_ALGORITHM`) of each data
    file in ``manifest`` (``names``: all the files an index has, plus any other listed in its
    ``files``). Call it after the files are written and before the manifest."""
    names = list(names) if names is not None else listed_files(manifest)
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
    try:
        names = listed_files(manifest)
    except ManifestError as exc:
        return [str(exc)]
    sizes = manifest.get("files") or {}
    recorded = manifest.get("checksums") or {}
    sums = recorded.get("files") or {}
    if checksums and sums and recorded.get("algorithm") != CHECKSUM_ALGORITHM:
        return [f"{path / MANIFEST} records checksums of an unknown kind ({recorded.get('algorithm')!r}); rebuild the "
                "index"]
    problems = []
    for name in names:
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


def refuse_other_files(out: Path) -> None:
    """IndexFileError when ``out`` holds files an index build does not write (a user's own): an
    overwrite must never remove them."""
    ours = {MANIFEST, SHARD_DIR, HEAD_CHANGE_FILE, *DATA_FILES}
    present = list(out.iterdir()) if out.exists() else []
    others = sorted(p.name for p in present if p.name not in ours and not p.name.startswith("."))
    if others:
        raise IndexFileError(f"{out} holds other files ({others[:5]}); choose another --out")


def clear_index_files(out: Path) -> None:
    """Remove what an index build writes (only those names: never a user's other files)."""
    refuse_other_files(out)
    for stale in out.glob(".*.tmp*"):
        stale.unlink()
    for name in (MANIFEST, HEAD_CHANGE_FILE, *DATA_FILES):
        p = out / name
        if p.exists():
            p.unlink()
    if (out / SHARD_DIR).is_dir():
        shutil.rmtree(out / SHARD_DIR)
