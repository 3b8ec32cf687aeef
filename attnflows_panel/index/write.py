"""Writing the FAISS index and the final files of a signature index.

Up to ``exact_limit`` samples (default 100 000) the index is exhaustive: FAISS ``"SQfp16"`` with inner
product compares the query with every stored vector (stored as float16, a relative rounding of 5e-4 on
unit vectors, which halves the bytes per sample). Above it, :data:`APPROX_FACTORY` (an HNSW graph over
float16 vectors, searched with ``efSearch`` from the manifest) keeps single queries in milliseconds at a
million samples; ``factory=`` picks any other ``faiss.index_factory`` string. :func:`write_index` writes
the files from the consolidated usage and metadata, the manifest last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel._io import atomic_path
from attnflows_panel.index.format import (
    CENTER_FILE,
    DATA_FILES,
    HEAD_CHANGE_FILE,
    IDMAP_FILE,
    INDEX_FILE,
    MANIFEST,
    METADATA_FILE,
    NORMS_FILE,
    USAGE_FILE,
    import_faiss,
    record_files,
    save_npy,
    save_parquet,
    utc_now,
    write_manifest,
)

__all__ = [
    "EXACT_FACTORY",
    "APPROX_FACTORY",
    "APPROX_SEARCH",
    "APPROX_BUILD",
    "DEFAULT_EXACT_LIMIT",
    "choose_factory",
    "make_faiss_index",
    "write_index",
]


#: exhaustive inner-product search over float16 vectors
EXACT_FACTORY = "SQfp16"
#: approximate search above ``exact_limit`` (see benchmarks/bench_index.py for the measured trade-off)
APPROX_FACTORY = "HNSW32,SQfp16"
APPROX_SEARCH = {"efSearch": 96}
APPROX_BUILD = {"efConstruction": 40}
#: up to this many samples an index is exhaustive (``EXACT_FACTORY``), above it approximate
DEFAULT_EXACT_LIMIT = 100_000


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
    faiss = import_faiss()
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
        if len(vectors) <= train_size:
            sample = vectors
        else:
            sample = vectors[np.sort(rng.choice(len(vectors), train_size, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for start in range(0, len(vectors), 65536):
        index.add(np.ascontiguousarray(vectors[start:start + 65536], dtype=np.float32))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # reconstruct() for query-by-id and filtered brute force
    return index


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

    faiss = import_faiss()
    N, L, H = manifest["count"], manifest["num_layers"], manifest["num_heads"]
    if usage16.shape != (N, 2, L, H) or len(meta) != N:
        raise ValueError(f"usage {usage16.shape} / metadata {len(meta)} rows do not fit count {N} and [{L}, {H}]")
    usage16 = np.asarray(usage16, dtype=np.float16)

    # vectors derive from the stored (float16) usage, so queries by id reproduce them exactly
    center = signatures.fit_center(usage16)
    vectors = np.empty((N, len(signatures.BLOCKS) * L * H), dtype=np.float32)
    norms = np.empty((len(signatures.BLOCKS), N), dtype=np.float32)
    for start in range(0, N, 65536):
        part = usage16[start:start + 65536]
        vectors[start:start + 65536] = signatures.embed(part, center)
        norms[:, start:start + 65536] = np.linalg.norm(signatures.blocks(part) - center[None], axis=2).T
    kind, fac = choose_factory(N, exact_limit, factory)
    index = make_faiss_index(vectors, fac)
    search = dict(APPROX_SEARCH) if "HNSW" in fac else ({"nprobe": 32} if "IVF" in fac else {})

    order = np.argsort(meta["id"].to_numpy(dtype=object).astype(str), kind="stable")
    id_map = pd.DataFrame({"id": meta["id"].to_numpy()[order], "row": order.astype(np.int64)})
    id_map["id"] = id_map["id"].astype("string")

    with atomic_path(out / INDEX_FILE) as tmp_index:
        faiss.write_index(index, str(tmp_index))
    save_npy(out / USAGE_FILE, np.moveaxis(usage16, 0, -1))  # head-major [2, L, H, N]
    save_npy(out / NORMS_FILE, norms)
    save_npy(out / CENTER_FILE, center)
    save_parquet(out / METADATA_FILE, meta)
    save_parquet(out / IDMAP_FILE, id_map)
    files = list(DATA_FILES)
    if head_change is not None:
        if head_change.shape != (N, 2, L, H) or head_change.dtype != np.uint8:
            raise ValueError(f"head change {head_change.dtype} {head_change.shape}, expected uint8 {(N, 2, L, H)}")
        save_npy(out / HEAD_CHANGE_FILE, head_change)
        files.append(HEAD_CHANGE_FILE)
        manifest["head_change"] = {
            "file": HEAD_CHANGE_FILE,
            "shape": "[N, 2, L, H]: cosine, jsd",
            "encoding": "uint8 codes: cos = 1 - (c/255)^2, jsd = (c/255)^2 (attnflows_panel.heads)",
        }
    pairs = zip(meta["label"], meta["label_name"].fillna(""), strict=True)
    labels = sorted({(int(label), str(name)) for label, name in pairs})
    manifest.update(
        complete=True,
        completed=utc_now(),
        index={"kind": kind, "factory": fac, "metric": "inner_product", "search": search,
               "exact_limit": int(exact_limit)},
        labels={str(label): name for label, name in labels},
        library={"attnflows_panel": _version(), "faiss": getattr(faiss, "__version__", "?")},
    )
    record_files(out, manifest, [*files, *[n for n in extra_files if n not in files]])
    write_manifest(out / MANIFEST, manifest)  # written last: a complete manifest means a complete index


def _version() -> str:
    from attnflows_panel import __version__  # the package imports this one: not at the top

    return __version__
