"""Search: :class:`SignatureIndex`, a built index opened read-only, queried by example.

The paper's future work ("querying sentence pairs that contain similar patterns in self-attention"):
a query is a sample of the index (by id) or a new pair run through the same models; its signature,
in the space of the pre-trained block, the fine-tuned block, their difference or all three, and
restricted to chosen heads by masking the query (:func:`attnflows_panel.signatures.query_vector`), is
compared by inner product with every stored vector (exhaustive indexes) or through the approximate
index, widened for masked queries (:meth:`SignatureIndex.search_effort`). Filters (label, prediction,
correctness, text) restrict the candidates (:meth:`SignatureIndex.select`). The index also serves the
corpus map (:meth:`SignatureIndex.pca`) and the stored per-head change (:meth:`SignatureIndex.head_change`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel.heads import HeadChange
from attnflows_panel.heads import aggregate as aggregate_head_change
from attnflows_panel.heads import decode as decode_head_change
from attnflows_panel.index.batches import result_usage
from attnflows_panel.index.format import (
    CENTER_FILE,
    FORMAT,
    FORMAT_VERSION,
    HEAD_CHANGE_FILE,
    IDMAP_FILE,
    INDEX_FILE,
    MANIFEST,
    METADATA_FILE,
    NORMS_FILE,
    SHARD_DIR,
    USAGE_FILE,
    IndexFileError,
    IndexMismatchError,
    LabelMismatchError,
    UnknownSampleError,
    import_faiss,
    load_npy,
    load_parquet,
    manifest_differences,
    read_manifest,
    verify_files,
)
from attnflows_panel.index.reconcile import label_matches

__all__ = ["SignatureIndex", "EXACT_COLUMNS", "SCORE_TOLERANCE"]

log = logging.getLogger("attnflows_panel.index")

#: approximate indexes rank a query that needs at most this many usage columns (model, layer, head)
#: exactly, from the head-major usage, instead of through the graph (see SignatureIndex.search_vector)
EXACT_COLUMNS = 8

#: how far past ±1 a score may lie from float16 rounding before it counts as damage (see SignatureIndex._checked)
SCORE_TOLERANCE = 1e-2


_FILTER_ALIASES = {
    "prediction": "pred_fine",
    "pred": "pred_fine",
    "correct": "correct_fine",
}


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


def _open_manifest(path: Path, pair: Any, verify: bool = True) -> dict:
    """The manifest of the index at ``path``, checked: an attnflows index of this format version,
    complete, built with this signature version (and from ``pair``'s models, when given)."""
    if not path.is_dir():
        raise FileNotFoundError(f"no index folder at {path} (build one with `attnflows index build --out {path}`)")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise FileNotFoundError(f"{path} is not an attnflows index: {MANIFEST} is missing")
    manifest = read_manifest(mpath, trusted=verify)  # verify=False: the caller trusts the manifest as it is
    if manifest.get("format") != FORMAT:
        raise IndexFileError(
            f"{mpath} is not an attnflows signature index manifest (format {manifest.get('format')!r})")
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
    return manifest


def _load_files(path: Path, manifest: Mapping[str, Any]) -> tuple:
    """(FAISS index, usage, norms, centre, metadata) of the index at ``path``, their shapes checked
    against the manifest (IndexFileError naming what is inconsistent)."""
    import pandas as pd

    faiss = import_faiss()
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise IndexFileError(f"{path / INDEX_FILE} is corrupt or not a FAISS index: {first}") from exc
    usage = load_npy(path / USAGE_FILE, "usage")
    norms = load_npy(path / NORMS_FILE, "norms")
    center = load_npy(path / CENTER_FILE, "centre")
    metadata = load_parquet(path / METADATA_FILE, "metadata")
    for col in metadata.columns:  # python-backed strings: taking k result rows is 40x faster than from arrow
        if isinstance(metadata[col].dtype, pd.StringDtype):
            metadata[col] = metadata[col].astype(pd.StringDtype("python"))
    N, L, H = manifest["count"], manifest["num_layers"], manifest["num_heads"]
    blocks = len(signatures.BLOCKS)
    checks = [
        ("FAISS vectors", index.ntotal, N),
        ("FAISS dimensions", index.d, blocks * L * H),
        ("metadata rows", len(metadata), N),
        ("usage shape", usage.shape, (2, L, H, N)),
        ("norms shape", norms.shape, (blocks, N)),
        ("centre shape", center.shape, (blocks, L * H)),
    ]
    for what, got, want in checks:
        if got != want:
            raise IndexFileError(f"the index at {path} is inconsistent: {what} {got}, expected {want}; rebuild it")
    if getattr(index, "metric_type", None) != faiss.METRIC_INNER_PRODUCT:
        raise IndexFileError(f"{path / INDEX_FILE} does not use inner product; rebuild the index")
    return index, usage, norms, center, metadata


class SignatureIndex:
    """A built index, opened read-only. Safe to share between threads (queries do not mutate it).

    Attributes: ``path``, ``manifest``, ``metadata`` (DataFrame, row i = FAISS id i), ``tau``,
    ``num_layers``, ``num_heads``, ``index`` (the FAISS index), ``center``, ``usage_head_major`` (the
    stored usage, float16 [2, L, H, N]), ``norms`` (the block norms, float32 [3, N]).
    """

    def __init__(self, path: Path, manifest: dict, index: Any, usage: np.ndarray, center: np.ndarray, metadata,
                 pair: Any = None, norms: np.ndarray | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.index = index
        self.usage_head_major = usage  # float16 [2, L, H, N]
        self.norms = norms  # float32 [3, N]
        self._inv_norms: np.ndarray | None = None  # built on the first exact column search
        self.center = center
        self.metadata = metadata
        self.pair = pair
        self._sorted_ids: np.ndarray | None = None
        self._sorted_rows: np.ndarray | None = None
        self._pca: dict[str, Any] | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike, pair: Any = None, *, verify: bool = True) -> SignatureIndex:
        """Open an index folder. With ``pair``, refuse it when it was built from other models.

        ``verify`` (default) checks every data file against the size and checksum the manifest records
        (XXH3-64: about 0.2 s per GB read from the page cache; index/README.md, "Integrity"), so a file
        changed since the build (bit flips, an edit, a bad copy) is refused, named, instead of answering
        queries with wrong neighbours. ``verify=False`` checks sizes only.
        :func:`~attnflows_panel.index.verify.verify_index` (CLI: ``attnflows index verify``) checks more:
        the files' contents against each other.

        Raises FileNotFoundError (no such folder / no manifest), IndexFileError (incomplete build,
        missing or corrupt file), IndexMismatchError (other models or signature version).
        """
        path = Path(path)
        manifest = _open_manifest(path, pair, verify)
        problems = verify_files(path, manifest, checksums=verify)
        if problems:
            raise IndexFileError("; ".join(problems))
        if verify and not (manifest.get("checksums") or {}).get("files"):
            log.warning("the index at %s records no checksums (built before they were added): its files cannot "
                        "be checked for bit flips; rebuild it to add them", path)
        index, usage, norms, center, metadata = _load_files(path, manifest)
        return cls(path, manifest, index, usage, center.astype(np.float32), metadata, pair=pair, norms=norms)

    def check_pair(self, pair: Any) -> None:
        """Raise IndexMismatchError (naming what differs) unless ``pair`` is the pair the index was built from."""
        diffs = manifest_differences(self.manifest, pair.fingerprint, num_layers=pair.num_layers,
                                     num_heads=pair.num_heads)
        if diffs:
            raise IndexMismatchError(
                f"the index at {self.path} does not match the loaded model pair: " + "; ".join(diffs))

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
    def weights(self) -> str:
        """The edge weights the signatures count (``raw`` for an index built before the key existed)."""
        return str(self.manifest.get("weights", "raw"))

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
        return label_matches(self.manifest.get("label_reconciliation"), "finetuned")

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

    def id_map(self) -> tuple[np.ndarray, np.ndarray]:
        """The persisted id map (sorted ids, their rows), read on first use."""
        if self._sorted_ids is None:
            df = load_parquet(self.path / IDMAP_FILE, "id map")
            ids = df["id"].to_numpy(dtype=object)
            rows = df["row"].to_numpy(dtype=np.int64)
            if len(ids) != len(self) or (len(ids) > 1 and not np.all(ids[1:] >= ids[:-1])):
                raise IndexFileError(f"{self.path / IDMAP_FILE} is corrupt (unsorted or wrong length); "
                                     "rebuild the index")
            self._sorted_rows, self._sorted_ids = rows, ids  # ids last: the flag other threads read
        return self._sorted_ids, self._sorted_rows  # type: ignore[return-value]

    def rows_of(self, ids: str | Iterable[str]) -> np.ndarray:
        """Rows (= FAISS ids) of sample ids, by binary search in the persisted id map.

        Raises UnknownSampleError naming the first unknown id."""
        single = isinstance(ids, str)
        wanted = np.asarray([ids] if single else [str(x) for x in ids], dtype=object)
        sorted_ids, rows = self.id_map()
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
        return np.moveaxis(self.usage_head_major[..., rows], -1, 0).astype(np.float32)

    def head_usage(self, rows: Sequence[int] | np.ndarray | None = None, block: str = "diff") -> np.ndarray:
        """Mean head usage float32 [L, H] over ``rows`` (all when None) for a block: pre, fine, or diff
        (= mean of u_fine - u_pre: > 0 where fine-tuning made a head carry more of the graph)."""
        if block not in signatures.BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(signatures.BLOCKS)}")
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
            raise IndexFileError(f"{f} is corrupt: {f.stat().st_size} bytes, the manifest recorded {size}; "
                                 "rebuild the index")
        codes = load_npy(f, "head change", mmap=True)
        if codes.shape != (len(self), 2, self.num_layers, self.num_heads) or codes.dtype != np.uint8:
            raise IndexFileError(f"{f} holds {codes.dtype} {codes.shape}, expected uint8 "
                                 f"{(len(self), 2, self.num_layers, self.num_heads)}; rebuild the index")
        part = codes if rows is None else codes[np.asarray(rows, dtype=np.int64)]
        return decode_head_change(np.asarray(part))

    def head_change_summary(self, rows: Sequence[int] | np.ndarray | None = None) -> HeadChange:
        """Corpus means (cosine, jsd, usage_change) over ``rows`` (all when None): a
        :class:`attnflows_panel.heads.HeadChange`, with the rows' sample ids."""
        rows_arr = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        cos, js = self.head_change(rows_arr)
        ids = self.metadata["id"].to_numpy(dtype=object)[rows_arr]
        return aggregate_head_change(cos, js, self.usage(rows_arr), ids)

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
        return signatures.embed(usage.astype(np.float16).astype(np.float32), self.center)

    def heads_mask(self, heads: Any) -> np.ndarray | None:
        """A head mask bool [L, H] from a spec (``"0:1,3:5"``, (layer, head) pairs, a bool array, None)."""
        return signatures.parse_heads(heads, self.num_layers, self.num_heads)

    def query_vector(self, sample_id: str | None = None, result: Any = None, *, space: str = "all",
                     heads: Any = None) -> np.ndarray:
        """The masked, re-normalised query (signatures.query_vector) for a sample id or a new pair."""
        if (sample_id is None) == (result is None):
            raise ValueError("give exactly one of sample_id (a sample in the index) or result (a new pair)")
        if sample_id is not None:
            x = self.embed_usage(self.usage([self.row_of(sample_id)]))[0]
        else:
            x = self.embed_usage(self._result_usage(result)[None])[0]
        return signatures.query_vector(x, space, self.heads_mask(heads), L=self.num_layers, H=self.num_heads)

    def _result_usage(self, result: Any) -> np.ndarray:
        if isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(s, str) for s in result):
            if self.pair is None:
                raise ValueError(
                    "a sentence pair needs the models: open the index with SignatureIndex.open(path, pair=pair) "
                    "or pass a PairResult from pair.run(a, b)"
                )
            result = self.pair.run(result[0], result[1], weights=self.weights)
        if not hasattr(result, "pretrained") or not hasattr(result, "finetuned"):
            raise TypeError("result must be a PairResult or a (sentence_a, sentence_b) tuple, got "
                            f"{type(result).__name__}")
        kinds = {getattr(out, "weights", "raw") for out in (result.pretrained, result.finetuned)}
        if kinds != {self.weights}:
            raise IndexMismatchError(
                f"the query pair was run with {'/'.join(sorted(kinds))} edge weights, but the index at {self.path} "
                f"counts {self.weights} weights: run it with pair.run(a, b, weights={self.weights!r})"
            )
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
            many = isinstance(value, (list, tuple, set, np.ndarray)) and col != "rows"
            values = list(value) if many else [value]
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

    def usage_columns(self, q: np.ndarray) -> list[tuple[int, int]]:
        """The (model, layer*H + head) usage columns that the score of query ``q`` depends on."""
        d = self.num_layers * self.num_heads
        nz = np.asarray(q).reshape(len(signatures.BLOCKS), d) != 0
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
        qb = np.asarray(q, dtype=np.float32).reshape(len(signatures.BLOCKS), d)
        flat = self.usage_head_major.reshape(2, d, -1)
        N = flat.shape[-1]
        if self._inv_norms is None:  # 1 / (sqrt(3) ||s_b(n) - μ_b||), 0 where the block is empty
            norms = np.asarray(self.norms, dtype=np.float32) * np.float32(np.sqrt(len(signatures.BLOCKS)))
            self._inv_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > signatures.EPS)
        scores = np.zeros(N, dtype=np.float32)
        for b in range(len(signatures.BLOCKS)):
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
        (:meth:`search_vector`). The lost recall of a 24-head mask is the graph's, not the float16 storage's:
        asking FAISS for 4x the results and re-ranking them by exact float32 scores gained 0.0006 recall
        (0.9452 -> 0.9458) for 6% more CPU time at 1M (2026-12-07, load 2.5-3.4), so the search does not
        re-rank."""
        search = dict((self.manifest.get("index") or {}).get("search") or {})
        kept = max(np.count_nonzero(q) / max(1, q.size), 1e-9)
        scale = float(np.clip(max((1.0 / kept) ** 0.9, (1.0 / (3.0 * kept)) ** 1.5), 1.0, 32.0))
        if "efSearch" in search:
            search["efSearch"] = int(round(search["efSearch"] * scale))
        if "nprobe" in search:
            search["nprobe"] = int(round(search["nprobe"] * scale))
        return search

    def _search_params(self, q: np.ndarray, selector: Any = None):
        faiss = import_faiss()
        search = self.search_effort(q)
        if "efSearch" in search:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=search["efSearch"])
        if "nprobe" in search:
            return faiss.SearchParametersIVF(sel=selector, nprobe=search["nprobe"])
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def search_vector(self, q: np.ndarray, k: int = 10,
                      allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top ``k`` stored vectors for query ``q`` by inner product, best first
        (ties in row order), among ``allowed`` rows (bool mask, None = all).

        Exhaustive indexes search FAISS. Approximate ones search FAISS too (with :meth:`search_effort`),
        except (a) a query that needs at most ``EXACT_COLUMNS`` usage columns (a few heads), ranked
        exactly from the head-major usage and the stored block norms, and (b) a filter that leaves few
        candidates, ranked exactly over their vectors."""
        faiss = import_faiss()
        q = np.ascontiguousarray(np.asarray(q, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self.index.d:
            raise ValueError(f"query has {q.shape[1]} dims, the index {self.index.d}")
        kind = (self.manifest.get("index") or {}).get("kind")
        if kind != "exact" and self.norms is not None and len(self.usage_columns(q[0])) <= EXACT_COLUMNS:
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
                params = self._search_params(q, selector)
                dist, found = self.index.search(q, int(min(k, len(candidates))), params=params)
        else:
            with _one_thread(faiss):
                dist, found = self.index.search(q, int(min(k, self.index.ntotal)), params=self._search_params(q))
        keep = found[0] >= 0
        scores, rows = dist[0][keep], found[0][keep].astype(np.int64)
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
        df.attrs.update(space=space, heads=signatures.format_heads(self.heads_mask(heads)), k=int(k),
                        query=sample_id if sample_id is not None else "new pair")
        return df

    # ------------------------------------------------------------------ map

    def pca(self, max_fit: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """2-D PCA of all "all"-space vectors (numpy SVD): (coords float32 [N, 2], explained variance ratio [2]).

        Fitted on at most ``max_fit`` rows (a random subset), applied to all; computed once per opened index."""
        if self._pca is None:
            N = len(self)
            rng = np.random.default_rng(seed)
            fit_rows = np.arange(N) if max_fit >= N else np.sort(rng.choice(N, max_fit, replace=False))
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
