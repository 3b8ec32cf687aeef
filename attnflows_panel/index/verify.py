"""Verify an index fully (``attnflows index verify``): its files against the manifest, then against each other.

Opening an index (:meth:`~attnflows_panel.index.search.SignatureIndex.open`) checks each file's size and
checksum; :func:`verify_index` also checks that the files agree: the FAISS vectors are the embedding
of the stored usage, the norms and the centre are the usage's, the id map is the metadata's ids, and
a probe of samples finds each sample first among its own neighbours.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel.index.format import (
    CENTER_FILE,
    IDMAP_FILE,
    INDEX_FILE,
    MANIFEST,
    METADATA_FILE,
    NORMS_FILE,
    USAGE_FILE,
    IndexFileError,
    IndexMismatchError,
    listed_files,
    read_manifest,
    verify_files,
)
from attnflows_panel.index.search import SignatureIndex

__all__ = ["verify_index", "upgrade_index"]

#: how far a stored vector may lie from the embedding of the stored usage: float16 storage of unit
#: vectors (SQfp16) rounds each value by 5e-4 relative
VECTOR_TOLERANCE = 4e-3


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
        manifest = read_manifest(path / MANIFEST)
    except IndexFileError as exc:
        problems.append(str(exc))
        return report
    report["count"] = manifest.get("count")
    report["files"] = listed_files(manifest)
    problems += verify_files(path, manifest)
    report["checked"].append("sizes and checksums")
    if problems:
        return report
    try:
        idx = SignatureIndex.open(path, verify=False)
    except (IndexFileError, IndexMismatchError) as exc:
        problems.append(str(exc))
        return report
    problems += _check_arrays(idx, chunk)
    report["checked"] += ["centre = mean usage", "FAISS vectors = embedded usage", "norms of the usage blocks"]
    problems += _check_ids(idx)
    report["checked"].append("id map = metadata ids")
    problems += _check_self_search(idx)
    report["checked"].append("every probed sample finds itself first")
    return report


def _check_arrays(idx: SignatureIndex, chunk: int) -> list[str]:
    """The centre, the FAISS vectors and the block norms against the stored usage."""
    path, problems = idx.path, []
    n = len(idx)
    bad = _non_finite_rows(idx, chunk)
    if len(bad):
        ids = idx.metadata["id"].astype(str).to_numpy()[bad[:3]].tolist()
        problems.append(f"{path / USAGE_FILE} holds NaN or infinite signatures for {len(bad)} samples (e.g. ids "
                        f"{ids}): the models that built it produce non-finite attention; rebuild with intact models")
        return problems
    if not (np.isfinite(idx.center).all() and np.isfinite(np.asarray(idx.norms)).all()):
        problems.append(f"{path / CENTER_FILE} or {path / NORMS_FILE} holds NaN or infinite values; rebuild the index")
        return problems
    center = signatures.fit_center(np.moveaxis(idx.usage_head_major, -1, 0)) if n else idx.center
    if not np.allclose(center, idx.center, atol=1e-5):
        problems.append(f"{path / CENTER_FILE} does not hold the corpus mean of {path / USAGE_FILE}")
    worst_vec = worst_norm = 0.0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        usage = idx.usage(rows)
        want = idx.embed_usage(usage)
        got = idx.vectors(rows)
        worst_vec = max(worst_vec, float(np.abs(got - want).max(initial=0.0)))
        rounded = usage.astype(np.float16).astype(np.float32)
        norms = np.linalg.norm(signatures.blocks(rounded) - idx.center[None], axis=2).T
        worst_norm = max(worst_norm, float(np.abs(norms - np.asarray(idx.norms[:, rows])).max(initial=0.0)))
    if worst_vec > VECTOR_TOLERANCE:
        problems.append(f"{path / INDEX_FILE} holds vectors that differ from the embedding of {path / USAGE_FILE} "
                        f"by up to {worst_vec:.3g}")
    if worst_norm > 1e-3:
        problems.append(f"{path / NORMS_FILE} differs from the norms of {path / USAGE_FILE} by up to {worst_norm:.3g}")
    return problems


def _non_finite_rows(idx: SignatureIndex, chunk: int) -> np.ndarray:
    """Rows whose stored usage holds a NaN or an infinity."""
    bad = []
    for start in range(0, len(idx), chunk):
        rows = np.arange(start, min(len(idx), start + chunk))
        usage = np.asarray(idx.usage(rows))
        bad.append(rows[~np.isfinite(usage.reshape(len(rows), -1)).all(axis=1)])
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def upgrade_index(path: str | os.PathLike) -> dict[str, Any]:
    """Give an index written before manifests carried checksums the checksums of its files and of its
    manifest (``attnflows index upgrade``), explicitly, after checking its files against each other as
    :func:`verify_index` does; the manifest is left as it was when a check fails. Returns the report of
    :func:`verify_index` (``"upgraded"``: True when the manifest was rewritten)."""
    from attnflows_panel.index.format import check_manifest, record_files, write_manifest

    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.exists():
        raise FileNotFoundError(f"no attnflows index at {path}: {MANIFEST} is missing")
    manifest = read_manifest(mpath, trusted=False)
    if not manifest.get("complete"):
        raise IndexFileError(f"the index at {path} is incomplete; finish its build first (`attnflows index build`)")
    try:
        check_manifest(mpath, manifest)
        report = verify_index(path)
        report["upgraded"] = False
        return report  # nothing to upgrade
    except IndexFileError as exc:
        if "records no checksum" not in str(exc):
            raise
    problems = list(verify_files(path, manifest, checksums=False))
    original = mpath.read_bytes()
    record_files(path, manifest, listed_files(manifest))
    write_manifest(mpath, manifest)
    report = verify_index(path)
    problems += report["problems"]
    if problems:
        from attnflows_panel._io import atomic_write

        atomic_write(mpath, original)  # never trust an index whose files disagree
        report["problems"] = problems
        report["upgraded"] = False
        return report
    report["upgraded"] = True
    return report


def _check_ids(idx: SignatureIndex) -> list[str]:
    """Unique ids, and the id map is the metadata's ids sorted, with their rows."""
    path, problems = idx.path, []
    ids = idx.metadata["id"].astype(str).to_numpy(dtype=object)
    if len(set(ids)) != len(ids):
        problems.append(f"{path / METADATA_FILE} holds duplicate ids")
    try:
        sorted_ids, map_rows = idx.id_map()
        if not np.array_equal(ids[map_rows], sorted_ids):
            problems.append(f"{path / IDMAP_FILE} does not map the ids of {path / METADATA_FILE} to their rows")
    except IndexFileError as exc:
        problems.append(str(exc))
    return problems


def _check_self_search(idx: SignatureIndex, probes: int = 16) -> list[str]:
    """Up to ``probes`` samples, spread over the rows, each find themselves first."""
    n = len(idx)
    probe = np.unique(np.linspace(0, n - 1, num=min(n, probes)).astype(np.int64)) if n else np.zeros(0, np.int64)
    for row in probe:
        q = idx.vectors([row])[0]
        try:
            scores, _ = idx.search_vector(q, k=1)
        except IndexFileError as exc:
            return [str(exc)]
        self_score = float(q @ q)  # 1, or less for a sample whose blocks are all at the corpus mean
        if not len(scores) or float(scores[0]) < self_score - 2e-2:
            best = float(scores[0]) if len(scores) else None
            return [f"{idx.path / INDEX_FILE}: sample row {row} does not find itself (self-similarity "
                    f"{self_score:.3f}, best {best})"]
    return []
