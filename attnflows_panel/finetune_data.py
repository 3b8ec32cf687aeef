"""The data of a fine-tune (:mod:`attnflows_panel.finetune`): a source's train and eval parts, with one
label space.

:func:`load_splits` reads a source's ``"train"`` and ``"dev"`` splits through
:func:`attnflows_panel.corpus.load_corpus`; a source with one split only (the shared QNLI folder has only
``dev.tsv``) is split deterministically, seeded and label-stratified (:data:`DEV_TRAIN_FRACTION` for
training). :func:`select_subset` takes a seeded random subset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEV_TRAIN_FRACTION", "load_splits", "select_subset", "one_label_space", "task_spec"]

#: share of a dev-only source used for training when no "train" split exists
DEV_TRAIN_FRACTION = 0.8


def task_spec(task: str | None):
    """(task name, its TaskSpec or None for an open task); None stays (None, None): the data decides."""
    from attnflows_panel.corpus import TASKS, resolve_task

    if task is None:
        return None, None
    key = resolve_task(task)
    return key, TASKS.get(key)


def _labelled(ds, n_labels: int | None = None):
    """Drop unlabelled rows (hub test splits carry label -1)."""
    if n_labels is None:
        from attnflows_panel.corpus import label_names

        n_labels = len(label_names(ds) or ()) or 1 << 30
    if len(ds) and "label" in ds.column_names:
        labels = np.asarray(ds["label"])
        keep = np.flatnonzero((labels >= 0) & (labels < n_labels))
        if len(keep) < len(ds):
            ds = ds.select(keep.tolist())
    return ds


def _try_split(data, task, split, column_map, labels=None):
    """``load_corpus(data, task, split)``, or None when the source has no such split."""
    from attnflows_panel.corpus import load_corpus

    try:
        ds = load_corpus(data, task=task, split=split, column_map=column_map, labels=labels)
    except (FileNotFoundError, ValueError) as exc:
        # load_corpus names the split when that split is what is missing ("has no dev split",
        # "no valid rows for ... split 'dev'"); anything else (no such file, a bad header, an unknown
        # source) is a real problem with the data and goes to the caller as it is
        if split is not None and "split" in str(exc).lower():
            return None, exc
        raise
    return _labelled(ds), None


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of row indices into (train, eval), keeping each label's share in both."""
    rng = np.random.default_rng(seed)
    train, evaluation = [], []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        rng.shuffle(rows)
        cut = int(round(len(rows) * fraction))
        if len(rows) >= 2:
            cut = min(max(cut, 1), len(rows) - 1)
        train.append(rows[:cut])
        evaluation.append(rows[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(evaluation))


def select_subset(ds, limit: int | None, seed: int):
    """A seeded random subset of ``limit`` rows (all rows when limit is None or >= len)."""
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise ValueError(f"limits must be >= 1, got {limit}")
    rows = np.random.default_rng(seed).permutation(len(ds))[:limit]
    return ds.select(np.sort(rows).tolist())


def one_label_space(parts, data) -> list[str]:
    """The label names shared by the loaded parts of ``data`` (one task, the same names in each)."""
    from attnflows_panel.corpus import label_names

    names = None
    for ds in parts:
        if ds is None or not len(ds):
            continue
        tasks = sorted(set(ds["task"]))
        if len(tasks) > 1:
            raise ValueError(f"{data!r} mixes the tasks {tasks}; pass the task to train on (CLI: --task)")
        got = label_names(ds)
        if got is None:
            raise ValueError(f"the label names of {data!r} are unknown; name them with labels=[...] (CLI: --labels)")
        if names is not None and got != names:
            raise ValueError(f"the splits of {data!r} have different label names ({names} vs {got}); give them "
                             "in id order with labels=[...] (CLI: --labels)")
        names = got
    return names or []


def load_splits(data, task: str | None = None, *, seed: int = 42, column_map: dict | None = None,
                labels: Sequence[str] | str | None = None):
    """(train, eval, split_info) for ``data``: its "train" and "dev" splits, or a split of what it has.

    ``task`` None: the data says which task it is (a GLUE folder's name or header, a hub name, a file's
    name) and what its labels are (:func:`attnflows_panel.corpus.load_corpus`; ``labels`` names integer
    labels). Both parts have the same label names (``corpus.label_names``), which the classifier's
    ``id2label`` takes.

    ``split_info`` says where each part came from, e.g. ``{"train": "train", "eval": "dev"}`` or, for a
    dev-only folder, ``{"train": "dev (seeded 80% stratified, seed 42)", "eval": "dev (other 20%)"}``.
    """
    key, _ = task_spec(task)
    data = str(data)
    train, train_err = _try_split(data, key, "train", column_map, labels)
    dev, dev_err = _try_split(data, key, "dev", column_map, labels)
    one_label_space((train, dev), data)
    if key is None:
        for part in (train, dev):
            if part is not None and len(part):
                key = part[0]["task"]
                break
    if train is not None and len(train) and dev is not None and len(dev):
        return train, dev, {"train": "train", "eval": "dev"}

    # one split only (or a source without splits): split it deterministically
    pool, pool_name = None, None
    for candidate, name in ((dev, "dev"), (train, "train")):
        if candidate is not None and len(candidate):
            pool, pool_name = candidate, name
            break
    if pool is None:
        whole, whole_err = _try_split(data, key, None, column_map, labels)
        one_label_space((whole,), data)
        if whole is not None and len(whole):
            pool, pool_name = whole, "all rows"
            key = key or whole[0]["task"]
    if pool is None or len(pool) == 0:
        reasons = "; ".join(str(e) for e in (train_err, dev_err) if e)
        raise ValueError(
            f"no labelled {(key or 'pair').upper()} examples in {data!r}" + (f" ({reasons})" if reasons else "")
        )
    if len(pool) < 4:
        raise ValueError(f"only {len(pool)} labelled {(key or 'pair').upper()} example(s) in {data!r}; need at least 4 "
                         "to train and evaluate")
    train_rows, eval_rows = _stratified_split(np.asarray(pool["label"]), DEV_TRAIN_FRACTION, seed)
    pct = int(round(DEV_TRAIN_FRACTION * 100))
    info = {
        "train": f"{pool_name} (seeded {pct}% label-stratified, seed {seed})",
        "eval": f"{pool_name} (the other {100 - pct}%)",
        "note": f"{data!r} has no separate train/dev splits for {key}; split {pool_name} deterministically",
    }
    return pool.select(train_rows.tolist()), pool.select(eval_rows.tolist()), info
