"""The local build engine: plan, run every length bucket in this process, write shards, then the index.

:func:`build_index` follows the plan of :func:`~attnflows_panel.index.plan.plan_build`, runs each shard's
length buckets (:mod:`attnflows_panel.index.batches`) through the two models, writes each finished
shard from a background thread while the next one runs, and when all shards exist consolidates them
into the final files (:func:`consolidate_shards`, :func:`~attnflows_panel.index.write.write_index`)
and removes the shards (``keep_shards=True`` keeps them). The Ray Data engine
(:func:`~attnflows_panel.index.build_ray.build_index_ray`) runs the same plan and ends the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel._io import (
    make_readable_like_new_files,
    remove_leftovers,
    remove_stale_staging,
    replace_folder,
    staging_name,
)
from attnflows_panel.index.batches import buckets_by_length, compute_batch, encode_shard, resolve_max_tokens
from attnflows_panel.index.format import (
    MANIFEST,
    SHARD_DIR,
    IndexFileError,
    load_npy,
    load_parquet,
    refuse_other_files,
    shard_name,
)
from attnflows_panel.index.plan import (
    BUILD_LOCK_NAME,
    DEFAULT_SHARD_SIZE,
    BuildPlan,
    ShardWriter,
    build_lock,
    check_build_args,
    plan_build,
)
from attnflows_panel.index.write import DEFAULT_EXACT_LIMIT, write_index

__all__ = ["build_index", "finish_build", "consolidate_shards"]


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
    weights: str = "raw",
) -> Path:
    """Index a corpus: run both models over every sample, write shards, then the FAISS index.

    weights: the edge weights whose head usage the signatures count, ``raw`` attention or ``norm``
        (:mod:`attnflows_panel.weights`), recorded in the manifest as ``weights``.

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

    This is the local engine; :func:`attnflows_panel.index.build_ray.build_index_ray` runs the same plan on
    Ray Data and writes the same files. Returns the index folder.
    """
    check_build_args(tau, batch_size, shard_size, limit)
    max_tokens = resolve_max_tokens(max_tokens, getattr(pair, "device", "cpu"))
    return run_build(lambda plan: _run_local(pair, plan, progress), pair, data, task, out, overwrite=overwrite,
                     exact_limit=exact_limit, factory=factory, keep_shards=keep_shards, split=split, tau=tau,
                     batch_size=batch_size, limit=limit, shard_size=shard_size, label_map=label_map,
                     column_map=column_map, labels=labels, max_tokens=max_tokens, weights=weights)


def run_build(engine: Callable[[BuildPlan], None], pair: Any, data: Any, task: str | None, out: str | os.PathLike,
              *, overwrite: bool, exact_limit: int, factory: str | None, keep_shards: bool, **plan_args: Any) -> Path:
    """What every engine's build does around its own work: hold the folder's lock, build beside an index
    being overwritten, plan (:func:`plan_build`, with ``plan_args``), let ``engine`` write the shards still
    to do, then write the final files. Returns the index folder."""
    out = Path(out)
    with build_lock(out), beside_when_overwriting(out, overwrite) as where:
        plan = plan_build(pair, data, task, where, overwrite=overwrite and where == out, **plan_args)
        if not plan.finished:
            if plan.todo:
                engine(plan)
            finish_build(plan, exact_limit=exact_limit, factory=factory, keep_shards=keep_shards)
    return out


def _holds_files(out: Path) -> bool:
    return out.is_dir() and any(p.name != BUILD_LOCK_NAME for p in out.iterdir())


@contextlib.contextmanager
def beside_when_overwriting(out: Path, overwrite: bool) -> Iterator[Path]:
    """Where a build of ``out`` writes (call it holding :func:`build_lock`). Leftovers of killed runs
    (temporaries, staging folders beside ``out``) are removed first. With ``overwrite`` and an index (or
    anything) in ``out``, the new index is built beside it, in ``.NAME.partial-<pid>-*``, and swapped in
    at the end (:func:`~attnflows_panel._io.replace_folder`): the old one answers queries until then, and
    a build killed midway leaves it whole. Otherwise ``out`` itself (a new build, or a resumed one)."""
    remove_stale_staging(out)
    remove_leftovers(out)
    if not (overwrite and _holds_files(out)):
        yield out
        return
    if not (out / MANIFEST).exists():
        yield out  # not an index: plan_build refuses a folder of other files, or clears a build's leftovers
        return
    refuse_other_files(out)  # an overwrite replaces an index, never a user's files beside it
    staging = staging_name(out)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        make_readable_like_new_files(staging)
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _run_local(pair: Any, plan: BuildPlan, progress: bool) -> None:
    """The local engine: shard after shard, length bucket after length bucket, in this process. Each
    shard is tokenised once (:func:`encode_shard`, under the pair's tokenizer lock, so a pair that
    serves an app meanwhile is safe); each finished shard is written by a background thread while the
    next one runs through the models."""
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
                                        ids=[rows["id"][j] for j in members], encoded=[encoded[j] for j in members],
                                        weights=plan.manifest.get("weights", "raw"))
                    shard.put(members, out)
                    bar.update(len(members))
                if pending is not None:
                    pending.result()  # one shard in flight at most; its errors surface here
                pending = writer.submit(shard.write)
            if pending is not None:
                pending.result()
        finally:
            bar.close()


def finish_build(plan: BuildPlan, *, exact_limit: int = DEFAULT_EXACT_LIMIT, factory: str | None = None,
                 keep_shards: bool = False) -> None:
    """All shards of ``plan`` are written: consolidate them into the final index (:func:`consolidate_shards`)."""
    consolidate_shards(plan.out, plan.manifest, exact_limit=exact_limit, factory=factory, keep_shards=keep_shards)


def consolidate_shards(out: Path, manifest: dict, *, exact_limit: int, factory: str | None, keep_shards: bool) -> None:
    """All shards are written: consolidate them, build the FAISS index, write the manifest last."""
    import pandas as pd

    shard_dir = out / SHARD_DIR
    N, L, H = manifest["count"], manifest["num_layers"], manifest["num_heads"]
    usage16 = np.empty((N, 2, L, H), dtype=np.float16)
    change = np.empty((N, 2, L, H), dtype=np.uint8)
    metas = []
    for i in range(manifest["num_shards"]):
        base = shard_dir / shard_name(i)
        lo = i * manifest["shard_size"]
        part = load_npy(base.with_suffix(".npy"), f"shard {i}")
        usage16[lo:lo + len(part)] = part.astype(np.float16)
        change[lo:lo + len(part)] = load_npy(base.with_suffix(".heads.npy"), f"shard {i} head change")
        metas.append(load_parquet(base.with_suffix(".parquet"), f"shard {i} metadata"))
    meta = pd.concat(metas, ignore_index=True)
    if len(meta) != N:
        raise IndexFileError(f"the shards hold {len(meta)} samples, the manifest expects {N}")
    bad = np.flatnonzero(~np.isfinite(usage16.reshape(N, -1)).all(axis=1))
    if len(bad):
        raise IndexFileError(
            f"{len(bad)} of {N} samples have NaN or infinite signatures (e.g. ids "
            f"{meta['id'].iloc[bad[:3]].tolist()}): the models produce non-finite attention for them; no index was "
            "written (check the models' weights)")
    write_index(out, manifest, usage16, meta, exact_limit=exact_limit, factory=factory, head_change=change)
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
