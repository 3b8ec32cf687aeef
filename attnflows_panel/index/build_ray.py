"""The Ray Data engine of ``attnflows index build --engine ray``: the same build, across machines.

The local engine (:func:`attnflows_panel.index.build.build_index`) runs every length bucket through the two
models in one process. Here the same plan (:func:`attnflows_panel.index.plan.plan_build`: corpus, manifest,
unfinished shards) runs on Ray Data:

- the corpus becomes a Ray dataset of **length buckets** (one row per batch of similar token length,
  cut exactly as the local engine cuts them, shard by shard: :func:`attnflows_panel.index.batches.buckets_by_length`,
  token budget included; a few rows per Ray Data block, :func:`buckets_per_block`);
- an **actor pool** of model-pair workers (:class:`PairWorker`; ``num_gpus=1`` each with
  ``device="cuda"``, CPU otherwise) loads the pair once per actor and computes each bucket's
  signatures in the worker (:func:`attnflows_panel.index.batches.compute_batch`), so only the small head-usage
  arrays travel back, never attentions;
- the driver streams the results, writes each shard when its last bucket is in (the same
  ``shard-NNNNN.npy`` / ``.parquet`` files), then builds the same final index.

So both engines give the same index from the same corpus, and resuming works the same way: finished
shards are skipped (their rows never enter the dataset). Workers load the models by the names the
driver's pair was loaded from (hub names, or folders that must exist at the same path on every node);
their fingerprints are checked against the driver's.

Run it on a cluster (index/README.md, "On a Ray cluster")::

    ray start --head                                    # on the head node
    ray start --address HEAD_IP:6379                    # on each worker node
    attnflows index build --engine ray --ray-address auto --device cuda --data ... --out ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel._io import status
from attnflows_panel.index.batches import buckets_by_length, compute_batch, encode_shard, resolve_max_tokens
from attnflows_panel.index.build import run_build
from attnflows_panel.index.format import manifest_differences
from attnflows_panel.index.plan import (
    DEFAULT_SHARD_SIZE,
    BuildPlan,
    ShardWriter,
    check_build_args,
)
from attnflows_panel.index.write import DEFAULT_EXACT_LIMIT

__all__ = ["build_index_ray", "PairWorker", "require_ray", "bucket_rows", "buckets_per_block", "MAX_BUCKETS_PER_BLOCK"]

log = logging.getLogger("attnflows_panel.index")

_OUT_FIELDS = ("pred_pre", "pred_fine", "prob_fine", "n_tokens", "truncated")


def require_ray():
    """The ``ray`` module, or a RuntimeError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "--engine ray needs Ray Data: pip install 'attnflows-panel[ray]' (or pip install 'ray[data]')"
        ) from exc
    return ray


class PairWorker:
    """A Ray Data actor: one loaded model pair, turning length buckets into head usage and predictions.

    Each input row is one bucket (``shard``, ``positions``, ``a``, ``b``, ``ids``); the output has one row
    per sample: ``shard``, ``position`` (in the shard), ``usage`` (float32 [2, L, H] as bytes) and the
    per-sample fields of :func:`attnflows_panel.index.batches.compute_batch` (``head_change``, uint8
    [2, L, H], as bytes too)."""

    def __init__(self, pretrained: str, finetuned: str, device: str | None, tau: float, batch_size: int,
                 fingerprint: dict | None = None, threads: int | None = None, weights: str = "raw"):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from attnflows_panel.models import ModelPair

        self.pair = ModelPair.load(pretrained, finetuned, device=device)
        if fingerprint is not None:
            driver = {"signature_version": signatures.SIGNATURE_VERSION, "fingerprint": fingerprint}
            diffs = manifest_differences(driver, self.pair.fingerprint)
            if diffs:
                raise RuntimeError("a Ray worker loaded other models than the driver: " + "; ".join(diffs)
                                   + " (use hub names, or folders at the same path on every node)")
        self.tau, self.batch_size = float(tau), int(batch_size)
        self.weights = str(weights)  # the manifest's edge weights (raw or norm), as the local engine counts them

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, positions, out_usage, out_change = [], [], [], []
        fields: dict[str, list] = {k: [] for k in _OUT_FIELDS}
        for shard, pos, a, b, ids, tokens, types, truncated in zip(
                batch["shard"], batch["positions"], batch["a"], batch["b"], batch["ids"], batch["input_ids"],
                batch["token_type_ids"], batch["truncated"], strict=True):
            pairs = list(zip((str(x) for x in a), (str(x) for x in b), strict=True))
            # the driver's token ids (it tokenised the shard to cut the buckets): no second tokenising here
            encoded = [(np.asarray(x).tolist(), np.asarray(y).tolist() if len(y) else None, bool(z))
                       for x, y, z in zip(tokens, types, truncated, strict=True)]
            out = compute_batch(self.pair, pairs, self.tau, self.batch_size, ids=[str(x) for x in ids],
                                encoded=encoded, weights=self.weights)
            shards += [int(shard)] * len(pairs)
            positions += [int(p) for p in pos]
            out_usage += [u.tobytes() for u in out["usage"]]
            out_change += [c.tobytes() for c in out["head_change"]]
            for key in _OUT_FIELDS:
                fields[key] += list(out[key])
        return {
            "shard": np.asarray(shards, dtype=np.int64),
            "position": np.asarray(positions, dtype=np.int64),
            "usage": np.asarray(out_usage, dtype=object),
            "head_change": np.asarray(out_change, dtype=object),
            "pred_pre": np.asarray(["" if x is None else str(x) for x in fields["pred_pre"]], dtype=object),
            "has_pred_pre": np.asarray([x is not None for x in fields["pred_pre"]], dtype=bool),
            "pred_fine": np.asarray(["" if x is None else str(x) for x in fields["pred_fine"]], dtype=object),
            "has_pred_fine": np.asarray([x is not None for x in fields["pred_fine"]], dtype=bool),
            "prob_fine": np.asarray(fields["prob_fine"], dtype=np.float32),
            "n_tokens": np.asarray(fields["n_tokens"], dtype=np.int32),
            "truncated": np.asarray(fields["truncated"], dtype=bool),
        }


def bucket_rows(plan: BuildPlan, pair: Any) -> list[dict[str, Any]]:
    """One row per length bucket, cut as the local engine cuts them (:func:`attnflows_panel.index.batches.encode_shard`,
    :func:`attnflows_panel.index.batches.buckets_by_length`), carrying the bucket's token ids to the worker.
    Shard after shard (so shards finish, and a stopped build keeps them, in order); within a shard the
    longest buckets first, so that the pipeline ends on short ones and no worker waits long for the
    last."""
    rows = []
    for i in plan.todo:
        shard_rows, pairs = plan.shard_rows(i), plan.shard_pairs(i)
        encoded = encode_shard(pair, pairs, shard_rows["id"])
        buckets = buckets_by_length([len(e[0]) for e in encoded], plan.batch_size, plan.max_tokens)
        for members in reversed(buckets):
            rows.append({
                "shard": int(i),
                "positions": [int(j) for j in members],
                "a": [pairs[j][0] for j in members],
                "b": [pairs[j][1] for j in members],
                "ids": [str(shard_rows["id"][j]) for j in members],
                "input_ids": [encoded[j][0] for j in members],
                "token_type_ids": [encoded[j][1] or [] for j in members],
                "truncated": [bool(encoded[j][2]) for j in members],
            })
    return rows


#: at most this many length buckets per Ray Data block
MAX_BUCKETS_PER_BLOCK = 4


def buckets_per_block(n_rows: int, workers: int) -> int:
    """Length buckets per Ray Data block: up to :data:`MAX_BUCKETS_PER_BLOCK`, while every worker still
    gets 8 blocks or more."""
    return max(1, min(MAX_BUCKETS_PER_BLOCK, n_rows // (8 * max(1, workers))))


def build_index_ray(
    pair: Any,
    data: Any,
    task: str | None,
    out: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int | None = None,
    device: str | None = None,
    cpus_per_worker: float | None = None,
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
    stats: dict | None = None,
    label_map: Any = None,
    column_map: dict | None = None,
    labels: Any = None,
    max_tokens: int | None = None,
    weights: str = "raw",
) -> Path:
    """:func:`attnflows_panel.index.build.build_index` on Ray Data (same arguments, same files; the
    default token budget ``max_tokens`` is the workers' ``device``'s; ``weights``, ``raw`` or ``norm``, is
    recorded in the manifest and counted by every worker as the local engine counts it), plus:

    address: the Ray cluster to join (``"auto"``, ``"ray://head:10001"``, ``"HEAD_IP:6379"``); None
        joins ``$RAY_ADDRESS`` or an already initialised Ray, else starts a local Ray on this machine.
    workers: model-pair actors (default: the cluster's GPUs with ``device="cuda"``, else 2).
    device: the workers' torch device; ``"cuda"`` gives each actor one GPU (``num_gpus=1``).
    cpus_per_worker: CPUs reserved per actor (default 1; torch uses that many threads in it).
    stats: a dict to fill with timings (seconds since the call): ``ray_start`` (Ray joined), ``planned``
        (corpus read, tokenised and cut into buckets), ``first_result``, ``last_result``, and ``computed``
        (samples run through the workers), ``first_computed`` (samples in the first result), ``workers``
        (benchmarks).
    """
    t0 = time.perf_counter()
    stats = {} if stats is None else stats
    ray = require_ray()
    check_build_args(tau, batch_size, shard_size, limit)
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target and not ray.is_initialized():
        check_ray_address(target)  # a dead address fails now, in seconds, before the corpus is read
    max_tokens = resolve_max_tokens(max_tokens, device or "cpu")
    engine = lambda plan: _run_ray(ray, address, pair, plan, (workers, device, cpus_per_worker),  # noqa: E731
                                   progress, stats, t0)
    return run_build(engine, pair, data, task, out, overwrite=overwrite, exact_limit=exact_limit, factory=factory,
                     keep_shards=keep_shards, split=split, tau=tau, batch_size=batch_size, limit=limit,
                     shard_size=shard_size, label_map=label_map, column_map=column_map, labels=labels,
                     max_tokens=max_tokens, weights=weights)


def _run_ray(ray: Any, address, pair, plan: BuildPlan, worker_args: tuple, progress: bool, stats: dict,
             t0: float) -> None:
    """Start or join Ray and run the plan's shards; SIGINT or SIGTERM stop it cleanly: the workers are
    shut down with the Ray this build started, and the shards written so far stay for a resume."""
    started = False
    try:
        with _terminate_as_interrupt():  # while Ray starts
            started = _start_ray(ray, address)
        stats["ray_start"] = time.perf_counter() - t0
        # again once Ray runs: its core worker installs its own SIGTERM handler in the driver, which
        # aborts the process (exit -6) and leaves the raylet and the workers without their shutdown
        with _terminate_as_interrupt():
            results = _pipeline(ray, pair, plan, *worker_args, progress, stats, t0)
            _write_results(results, plan, progress, stats, t0)
    except KeyboardInterrupt:
        log.warning("index build stopped: the finished shards are kept; rerun the same command to resume")
        if started:
            ray.shutdown()
        raise


#: seconds to wait for one TCP connection to a Ray cluster's address before calling it dead
RAY_PROBE_TIMEOUT_S = 5.0


def check_ray_address(target: str, timeout: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Raise ConnectionError (one line) unless something listens at the Ray cluster address ``target``
    (``HOST:PORT`` or ``ray://HOST:PORT``; ``"auto"`` and ``"local"`` are Ray's own to resolve), within
    ``timeout`` seconds: ``ray.init`` retries a dead address for minutes. A ``ray://`` address needs
    Ray's client, which the ``[ray]`` extra installs (``ray[client]``)."""
    from urllib.parse import urlparse

    from attnflows_panel._io import tcp_unreachable

    if target in ("auto", "local"):
        return
    if target.startswith("ray://"):
        try:
            import grpc  # noqa: F401
            import ray.util.client  # noqa: F401
        except ImportError:
            raise RuntimeError(f"--ray-address {target}: a ray:// address needs Ray's client: pip install "
                               "'attnflows-panel[ray]' (or pip install 'ray[client]')") from None
    parsed = urlparse(target if "://" in target else f"ray://{target}")
    host, port = parsed.hostname, parsed.port or (10001 if target.startswith("ray://") else 6379)
    if not host:
        raise ValueError(f"--ray-address {target!r} is not HOST:PORT or ray://HOST:PORT")
    why = tcp_unreachable(host, port, timeout, "attnflows-ray-probe")
    if why is not None:
        raise ConnectionError(f"no Ray cluster answers at --ray-address {target} ({host}:{port}: {why}); start it "
                              "(`ray start --head`) or leave --ray-address out to use a local Ray")


def _start_ray(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray, unless Ray runs.
    A local Ray listens on the loopback interface only (its node IP is 127.0.0.1; no dashboard), so the
    cluster of one build is not reachable from other machines. Returns whether this call started or
    joined Ray (and so should shut it down at the end)."""
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        check_ray_address(target)
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(logging_level=logging.WARNING, log_to_driver=True, include_dashboard=False,
                 _node_ip_address="127.0.0.1")
    return True


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the block as Ctrl-C does (KeyboardInterrupt), so that a stopped Ray build shuts its
    workers down and keeps its finished shards for a resume, instead of dying with them running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:  # a handler installed outside Python (None) cannot be put back: the default then
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def _pipeline(ray: Any, pair: Any, plan: BuildPlan, workers: int | None, device: str | None,
              cpus_per_worker: float | None, progress: bool, stats: dict, t0: float) -> Any:
    """The Ray dataset of the plan's length buckets mapped through an actor pool of :class:`PairWorker`."""
    cuda = str(device or "").startswith("cuda")
    if workers is None:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if cuda else 0
        workers = max(1, gpus) if cuda else 2
    cpus = float(cpus_per_worker or 1)
    rows = bucket_rows(plan, pair)
    stats["planned"] = time.perf_counter() - t0
    stats["workers"] = int(workers)
    status(log, progress, f"Ray Data: {len(rows)} length buckets of {plan.count - plan.done} samples "
                          f"({len(plan.todo)} shards to do, {plan.done} samples already done) on "
                          f"{workers} worker(s), {'1 GPU' if cuda else f'{cpus:g} CPU'} each")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours (below) counts samples and shards; Ray's count blocks
    ctx.print_on_execution_start = False
    # a few length buckets per block (each block is one call of a worker, which runs its buckets
    # one forward batch each): every block costs Ray Data scheduling and transfers (~7 ms with
    # a worker that does nothing, on 2 cores; on 11,620 pairs, 105 blocks instead of 420 made
    # the build 8 s shorter), and 8 blocks per worker at least keep the workers evenly busy
    per_block = buckets_per_block(len(rows), int(workers))
    ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // per_block))
    return ds.map_batches(
        PairWorker,
        fn_constructor_kwargs={
            "pretrained": pair.pretrained_name, "finetuned": pair.finetuned_name,
            "device": device if cuda else "cpu", "tau": plan.tau, "batch_size": plan.batch_size,
            "fingerprint": pair.fingerprint, "threads": max(1, int(cpus)),
            "weights": plan.manifest.get("weights", "raw"),
        },
        batch_size=per_block,  # one block per call
        compute=ray.data.ActorPoolStrategy(size=int(workers)),
        num_gpus=1 if cuda else 0,
        num_cpus=cpus,
    )


def _unpack(batch: dict[str, np.ndarray], sel: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
    """The rows ``sel`` of a worker's output batch as :class:`~attnflows_panel.index.plan.ShardWriter` takes them."""
    L, H = shape
    return {
        "usage": np.stack([np.frombuffer(bytes(batch["usage"][k]), dtype=np.float32).reshape(2, L, H) for k in sel]),
        "head_change": np.stack([np.frombuffer(bytes(batch["head_change"][k]), dtype=np.uint8).reshape(2, L, H)
                                 for k in sel]),
        "pred_pre": [str(batch["pred_pre"][k]) if batch["has_pred_pre"][k] else None for k in sel],
        "pred_fine": [str(batch["pred_fine"][k]) if batch["has_pred_fine"][k] else None for k in sel],
        "prob_fine": [float(batch["prob_fine"][k]) for k in sel],
        "n_tokens": [int(batch["n_tokens"][k]) for k in sel],
        "truncated": [bool(batch["truncated"][k]) for k in sel],
    }


def _write_results(results: Any, plan: BuildPlan, progress: bool, stats: dict, t0: float) -> None:
    """Stream the workers' results into the shards' writers; write each shard when its last sample is in."""
    from tqdm.auto import tqdm

    writers = {i: ShardWriter(plan, i) for i in plan.todo}
    bar = tqdm(total=plan.count, initial=plan.done, desc=f"indexing {plan.out.name} (ray)", unit="pair",
               disable=not progress, smoothing=0.1)
    try:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            shard_col = np.asarray(batch["shard"], dtype=np.int64)
            for i in np.unique(shard_col):
                sel = np.flatnonzero(shard_col == i)
                w = writers[int(i)]
                w.put(np.asarray(batch["position"], dtype=np.int64)[sel], _unpack(batch, sel, plan.shape))
                if w.complete:
                    w.write()
                    del writers[int(i)]
            bar.update(len(shard_col))
            stats["computed"] = stats.get("computed", 0) + len(shard_col)
            if "first_result" not in stats:
                stats["first_result"], stats["first_computed"] = time.perf_counter() - t0, stats["computed"]
            stats["last_result"] = time.perf_counter() - t0
    finally:
        bar.close()
    if writers:
        raise RuntimeError(f"the Ray run ended with shards {sorted(writers)} incomplete; rerun to resume")
