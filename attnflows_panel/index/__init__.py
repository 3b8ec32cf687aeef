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
padded only to its longest pair, and on the CPU within :data:`DEFAULT_MAX_TOKENS` tokens) and run
through :meth:`ModelPair.usage_batch` (:func:`compute_batch`), which counts the signatures on the
attention tensors where the models computed them. The plan (:func:`plan_build`), the per-bucket step
and the shard writer (:class:`ShardWriter`) are shared by the local engine (:func:`build_index`) and
the Ray Data engine (:func:`build_index_ray`), so both write the same files. A shard's files are
written to temporaries and renamed, the parquet last, so a shard is finished exactly when its parquet
exists; an interrupted build, rerun with the same options, skips finished shards. When all shards
exist they are consolidated, the FAISS index is built and the shards are removed (``keep_shards=True``
keeps them).

Index kinds. Up to ``exact_limit`` samples (default 100 000) the index is exhaustive: FAISS
``"SQfp16"`` with inner product compares the query with every stored vector (stored as float16, a
relative rounding of 5e-4 on unit vectors, which halves the bytes per sample). Above it,
``APPROX_FACTORY`` (an HNSW graph over float16 vectors, searched with ``efSearch`` from the manifest,
widened for queries that keep few dims: :meth:`SignatureIndex.search_effort`) keeps single queries in
milliseconds at a million samples; ``factory=`` picks any other ``faiss.index_factory`` string.
benchmarks/bench_index.py measures latency, recall and bytes.

The package, by job (each name below is re-exported here):

    format.py      the on-disk format: file names, errors, manifest, sizes and checksums (integrity)
    reconcile.py   label reconciliation: the models' label names against the corpus's, correctness
    batches.py     tokenising a shard once, length buckets, running one bucket (both engines)
    plan.py        build planning (:func:`plan_build`, :class:`BuildPlan`) and shards (:class:`ShardWriter`)
    build.py       the local engine (:func:`build_index`) and consolidating the shards
    build_ray.py   the Ray Data engine (:func:`build_index_ray`)
    write.py       the FAISS index and the final files (:func:`write_index`)
    search.py      :class:`SignatureIndex`: open, query, filters, the map, the stored head change
    verify.py      :func:`verify_index`: the files against the manifest and against each other
"""

from __future__ import annotations

from attnflows_panel.index.batches import (
    DEFAULT_MAX_TOKENS,
    buckets_by_length,
    compute_batch,
    encode_shard,
    length_buckets,
    resolve_max_tokens,
    result_usage,
)
from attnflows_panel.index.build import (
    build_index,
    consolidate_shards,
    finish_build,
)
from attnflows_panel.index.build_ray import (
    build_index_ray,
    require_ray,
)
from attnflows_panel.index.format import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_COLUMNS,
    IndexFileError,
    IndexMismatchError,
    LabelMismatchError,
    UnknownSampleError,
    manifest_differences,
    record_files,
    verify_files,
)
from attnflows_panel.index.plan import (
    DEFAULT_SHARD_SIZE,
    BuildPlan,
    ShardWriter,
    build_lock,
    plan_build,
    shard_metadata,
)
from attnflows_panel.index.reconcile import (
    apply_label_reconciliation,
    reconcile_corpus_labels,
)
from attnflows_panel.index.search import (
    EXACT_COLUMNS,
    SignatureIndex,
)
from attnflows_panel.index.verify import (
    verify_index,
)
from attnflows_panel.index.write import (
    APPROX_FACTORY,
    DEFAULT_EXACT_LIMIT,
    EXACT_FACTORY,
    choose_factory,
    make_faiss_index,
    write_index,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "buckets_by_length",
    "compute_batch",
    "encode_shard",
    "length_buckets",
    "resolve_max_tokens",
    "result_usage",
    "build_index",
    "consolidate_shards",
    "finish_build",
    "build_index_ray",
    "require_ray",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_COLUMNS",
    "IndexFileError",
    "IndexMismatchError",
    "LabelMismatchError",
    "UnknownSampleError",
    "manifest_differences",
    "record_files",
    "verify_files",
    "DEFAULT_SHARD_SIZE",
    "BuildPlan",
    "ShardWriter",
    "build_lock",
    "plan_build",
    "shard_metadata",
    "apply_label_reconciliation",
    "reconcile_corpus_labels",
    "EXACT_COLUMNS",
    "SignatureIndex",
    "verify_index",
    "APPROX_FACTORY",
    "DEFAULT_EXACT_LIMIT",
    "EXACT_FACTORY",
    "choose_factory",
    "make_faiss_index",
    "write_index",
]
