"""Fine-tune a pre-trained encoder into a sentence-pair classifier (the paper's fine-tuned model).

Attention Flows compares the attention of a pre-trained model with that of the same model after
fine-tuning on a sentence-pair task (MRPC, RTE, QNLI in the paper, §4). This module produces the second
model of such a pair from the first:

```python
from attnflows_panel.finetune import finetune
metrics = finetune("bert-base-uncased", "glue/mrpc", "mrpc", "models/bert-mrpc")
```

The result is a normal Hugging Face model folder (``save_pretrained`` for the model *and* the
tokenizer, ``id2label`` / ``label2id`` set from the task's label names) plus ``metrics.json``, so it loads
with ``AutoModelForSequenceClassification.from_pretrained(out)`` and with
:meth:`attnflows_panel.models.ModelPair.load` next to its base.

Training is a plain PyTorch loop rather than ``transformers.Trainer``: AdamW with decoupled weight decay
(none on biases and LayerNorm weights), linear warm-up then linear decay, gradient clipping at 1.0,
dynamic padding, and length-grouped batches (examples shuffled, then sorted by length inside chunks of
50 batches, and the batches shuffled again), which on a CPU cuts the padding, and the time, by about
half. It needs no ``accelerate`` and is fully seeded (``random``, ``numpy``, ``torch``): the same
arguments on the same machine give the same weights.

Defaults depend on the task (:data:`TASK_DEFAULTS`); every argument left ``None`` takes the task's
value. They were chosen on real GLUE from the packaged all-MiniLM-L6-v2 (see ``benchmarks/README.md``
for the measured dev accuracies).

Data comes through :func:`attnflows_panel.corpus.load_corpus`, so any source it accepts works: a hub
name (``glue/mrpc``), a local GLUE task folder, a CSV/JSONL file, or ``"demo"``. The training split is
``"train"`` and the evaluation split ``"dev"``. A source without a training split (the shared QNLI
folder has only ``dev.tsv``) is split deterministically: a seeded, label-stratified 80/20 split of its
dev split, recorded in ``metrics.json`` under ``"split"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel._io import (
    atomic_write,
    atomic_write_json,
    check_writable,
    make_readable_like_new_files,
    quiet_transformers,
    remove_stale_staging,
    replace_folder,
    staging_name,
    status,
)
from attnflows_panel.finetune_data import (
    load_splits,
    one_label_space,
    select_subset,
    task_spec,
)

__all__ = [
    "TASK_DEFAULTS",
    "POSITIVE_LABEL",
    "TrainingDefaults",
    "OutputExistsError",
    "TrainingDivergedError",
    "finetune",
    "load_splits",
    "select_subset",
    "classification_metrics",
    "resolve_settings",
]

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class TrainingDefaults:
    """Hyper-parameters of one task's default run."""

    epochs: float
    learning_rate: float
    batch_size: int
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128


#: Per-task defaults (every ``None`` argument of :func:`finetune` takes these), chosen from the
#: packaged all-MiniLM-L6-v2 on the real GLUE dev sets (``benchmarks/bench_finetune.py``; numbers in
#: ``benchmarks/README.md``). One recipe, AdamW at 1e-4 with batch 32 and 10% warm-up, trained for
#: longer the smaller the task. RTE (2490 pairs) is the unstable one: 3-5 epochs at 5e-5..1e-4 ended
#: at 0.54-0.55 dev accuracy (curves peaking near 0.57, then falling), while 10 epochs at 1e-4 with
#: batch 32 kept improving after the training loss neared 0 (0.58-0.635 from epoch 3 on, 0.621 at the
#: end), as Mosbach et al. (2021) found for BERT on small GLUE tasks: train longer, not harder. On MRPC
#: (3667 pairs) the recipe gave 0.799 after 2 epochs and 0.794 after 5 (3 epochs at 5e-5 with batch
#: 16: 0.787), so 2 it is: the offline default (:func:`attnflows_panel.prepare.prepare`) trains it on
#: the app's first start. QNLI (4371 pairs from its dev split): 3 epochs, 0.810.
TASK_DEFAULTS: dict[str, TrainingDefaults] = {
    "mrpc": TrainingDefaults(epochs=2, learning_rate=1e-4, batch_size=32),
    "rte": TrainingDefaults(epochs=10, learning_rate=1e-4, batch_size=32),
    "qnli": TrainingDefaults(epochs=3, learning_rate=1e-4, batch_size=32),
}

#: Defaults for any task without its own entry (other GLUE tasks, open tasks): the same recipe, 3 epochs.
OPEN_TASK_DEFAULTS = TrainingDefaults(epochs=3, learning_rate=1e-4, batch_size=32)

#: The class whose F1 ``metrics.json`` reports as ``"f1"``: MRPC's "equivalent" (label index 1, the
#: GLUE convention) and, for the entailment tasks, "entailment" (label index 0). Other two-label tasks
#: report label index 1 (the usual "1 = positive"); tasks with more labels report the macro F1
#: (``f1_label`` = ``"macro"``).
POSITIVE_LABEL: dict[str, str] = {"mrpc": "equivalent", "rte": "entailment", "qnli": "entailment",
                                  "wnli": "entailment", "qqp": "duplicate"}


class OutputExistsError(FileExistsError, ValueError):
    """The output folder exists and is not empty (pass ``overwrite=True`` to replace it)."""


# --------------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------------


def _positive_label(task: str, label_names: Sequence[str]) -> str | None:
    """The class whose F1 is reported as "f1" (see POSITIVE_LABEL); None = macro F1."""
    if POSITIVE_LABEL.get(task) in label_names:
        return POSITIVE_LABEL[task]
    return label_names[1] if len(label_names) == 2 else None


def resolve_settings(task: str | None, **overrides: Any) -> dict[str, Any]:
    """The run settings for ``task``: its :data:`TASK_DEFAULTS` with the non-``None`` overrides applied.

    >>> resolve_settings("mrpc", learning_rate=1e-4)["learning_rate"]
    0.0001
    """
    key = str(task).lower() if task is not None else None
    if key is not None and key not in TASK_DEFAULTS:
        key, _ = task_spec(key)  # refuses STS-B & co; any other task takes OPEN_TASK_DEFAULTS
    settings = dataclasses.asdict(TASK_DEFAULTS.get(key, OPEN_TASK_DEFAULTS))
    for name, value in overrides.items():
        if name not in settings:
            raise TypeError(f"unknown training setting {name!r}")
        if value is not None:
            settings[name] = value
    _check_settings(settings)
    settings["batch_size"] = int(settings["batch_size"])
    settings["max_length"] = int(settings["max_length"])
    return settings


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


#: the most epochs a run may ask for (far beyond any fine-tune; a larger number is a typo)
MAX_EPOCHS = 1000


def _check_settings(settings: dict[str, Any]) -> None:
    """Every setting finite and in range, before any work (CLI names in brackets)."""
    if not 0 < _finite("epochs (--epochs)", settings["epochs"]) <= MAX_EPOCHS:
        raise ValueError(f"epochs (--epochs) must be > 0 and at most {MAX_EPOCHS}, got {settings['epochs']}")
    if not 0 < _finite("learning_rate (--lr)", settings["learning_rate"]) < 1:
        raise ValueError(f"learning_rate (--lr) must be > 0 and < 1, got {settings['learning_rate']}")
    if not 0 <= _finite("weight_decay (--weight-decay)", settings["weight_decay"]) < 1:
        raise ValueError(f"weight_decay (--weight-decay) must be >= 0 and < 1, got {settings['weight_decay']}")
    if not 0 <= _finite("warmup_ratio (--warmup-ratio)", settings["warmup_ratio"]) < 1:
        raise ValueError(f"warmup_ratio (--warmup-ratio) must be in [0, 1), got {settings['warmup_ratio']}")
    for name, least in (("batch_size", 1), ("max_length", 8)):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < least:
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a whole number >= {least}, got {value!r}")


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(progress: bool, message: str) -> None:
    status(log, progress, message)


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    """A string meant as a local folder rather than a hub id (``org/name`` is a hub id)."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
    )


def _check_base(base: str | os.PathLike) -> str:
    base = str(base)
    path = Path(base).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"base model {base!r} is a file; expected a model folder or a hub name")
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"base model folder {base!r} has no config.json (not a Hugging Face model folder)")
        return str(path)
    if _looks_like_path(base) or not base.strip():
        raise FileNotFoundError(f"base model folder not found: {base!r}")
    return base  # a hub name; from_pretrained reports a missing one


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out).expanduser()
    check_writable(out.parent, "output folder")  # before training, not after
    remove_stale_staging(out)  # a killed run's leftovers; its moved-aside old model is put back first
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"output {str(out)!r} exists and is a file")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"output folder {str(out)!r} exists and is not empty; choose another folder or pass "
                "overwrite=True (--overwrite)"
            )
    return out


# --------------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------------


def _encode(tokenizer, ds, max_length: int) -> tuple[list[dict[str, list[int]]], np.ndarray]:
    enc = tokenizer(
        list(ds["sentence_a"]),
        list(ds["sentence_b"]),
        truncation=True,
        max_length=max_length,
    )
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(ds))]
    return features, np.asarray(ds["label"], dtype=np.int64)


def _count_truncated(tokenizer, ds, lengths: np.ndarray, max_length: int) -> int:
    """How many pairs lost tokens to ``max_length`` (only the pairs that reached it are re-measured)."""
    full = np.flatnonzero(lengths >= max_length)
    if not len(full):
        return 0
    sub = ds.select(full.tolist())
    enc = tokenizer(list(sub["sentence_a"]), list(sub["sentence_b"]), truncation=False, verbose=False)
    return int(sum(len(ids) > max_length for ids in enc["input_ids"]))


def _collate(tokenizer, features: Sequence[dict], labels: np.ndarray | None = None, device=None) -> dict:
    import torch

    batch = tokenizer.pad(list(features), padding="longest", return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long, device=device)
    return batch


def _pick_device(device):
    import torch

    if device is not None:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {device!r}: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available in this torch build/machine")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches: shuffle, sort by length inside chunks of 50 batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------


def classification_metrics(labels: np.ndarray, preds: np.ndarray, label_names: Sequence[str],
                           positive: str | None) -> dict:
    """Accuracy, the positive class's F1 (eq. F1 = 2PR/(P+R)), macro F1 and the confusion matrix.

    ``positive`` None (tasks with more than two labels): ``f1`` is the macro F1, ``f1_label`` "macro"."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    k = len(label_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    f1s = []
    for c in range(k):
        tp = confusion[c, c]
        fp = confusion[:, c].sum() - tp
        fn = confusion[c, :].sum() - tp
        f1s.append(0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn)))
    counts = np.bincount(labels, minlength=k)
    return {
        "accuracy": float((labels == preds).mean()) if len(labels) else float("nan"),
        "f1": f1s[list(label_names).index(positive)] if positive is not None else float(np.mean(f1s)),
        "f1_label": positive if positive is not None else "macro",
        "macro_f1": float(np.mean(f1s)),
        "f1_per_label": dict(zip(label_names, f1s, strict=True)),
        "majority_accuracy": float(counts.max() / counts.sum()) if counts.sum() else float("nan"),
        "confusion": {"labels": list(label_names), "rows_true_cols_pred": confusion.tolist()},
    }


def _predict(model, tokenizer, features, batch_size: int, progress: bool) -> np.ndarray:
    import torch

    lengths = np.array([len(f["input_ids"]) for f in features])
    order = np.argsort(-lengths, kind="stable")
    preds = np.empty(len(features), dtype=np.int64)
    model.eval()
    bar = _bar(total=len(features), desc="evaluate", unit="pair", progress=progress)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            batch = _collate(tokenizer, [features[r] for r in rows], device=model.device)
            logits = model(**batch).logits
            preds[rows] = logits.argmax(-1).cpu().numpy()
            bar.update(len(rows))
    bar.close()
    return preds


def _bar(*, total: int, desc: str, unit: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True, leave=True)


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _staging_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """A staging folder beside ``out`` (``.NAME.partial-<pid>-<random>``), renamed onto ``out`` on
    success and removed on failure. Staging folders that killed runs left beside ``out`` are removed
    first. The folder is made with the process's usual permissions (umask), not 0700, so a server
    running as another user can read the model like any Hugging Face model folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    tmp = staging_name(out)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # re-check: something may have appeared in `out` while we trained
    try:
        make_readable_like_new_files(tmp)
        _check_out(out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _model_card(metrics: dict) -> str:
    s, split = metrics["settings"], metrics["split"]
    data = (f"`{metrics['data']}` (train: {split['train']}, {metrics['n_train']} pairs; eval: {split['eval']}, "
            f"{metrics['n_eval']} pairs)")
    settings = (f"{s['epochs']} epochs, lr {s['learning_rate']}, batch {s['batch_size']}, warm-up {s['warmup_ratio']}, "
                f"weight decay {s['weight_decay']}, max length {s['max_length']}, seed {s['seed']}, "
                f"{metrics['steps']} steps")
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [attnflows, {metrics['task']}]
---

# {metrics['task'].upper()} fine-tune of `{metrics['base']}`

Written by `attnflows finetune` (attnflows_panel {metrics['attnflows_version']}).

| | |
|---|---|
| data | {data} |
| eval accuracy | {metrics['accuracy']:.4f} (majority class: {metrics['majority_accuracy']:.4f}) |
| eval F1 ({metrics['f1_label']}) | {metrics['f1']:.4f} |
| settings | {settings} |

Labels: {metrics['labels']}. Full settings and timings are in `metrics.json`.
"""


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


def finetune(
    base: str | os.PathLike,
    data: str | os.PathLike,
    task: str | None = None,
    out: str | os.PathLike | None = None,
    *,
    labels: Sequence[str] | str | None = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    max_steps: int | None = None,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    seed: int = 42,
    max_length: int | None = None,
    warmup_ratio: float | None = None,
    weight_decay: float | None = None,
    column_map: dict[str, str] | None = None,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
    eval_each_epoch: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``task`` pairs from ``data`` and save a classifier folder to ``out``.

    Parameters
    ----------
    base: a model folder or hub name (a plain encoder such as ``bert-base-uncased`` or the packaged
        MiniLM; a classifier head is added, or replaced when its label count differs).
    data: any source of :func:`attnflows_panel.corpus.load_corpus` (hub name, GLUE task folder, CSV or
        JSONL file, ``"demo"``).
    task: a GLUE task (``"mrpc"``, ``"rte"``, ``"qnli"``, ``"wnli"``, ``"qqp"``, ``"mnli"``, ``"mnli-mm"``:
        GLUE's label names and order), an open task's name, or None: the data says (README.md, "Tasks,
        labels and fine-tuning"). Either way ``id2label`` / ``label2id`` get the corpus's label names
        (``corpus.label_names``), any number of them, so that the index and the app match them by name.
    labels: label names in id order for a CSV/JSONL file with integer labels (``"no,yes"``).
    out: the folder to write (required) (created; must be absent or empty unless ``overwrite``). Written to a
        staging folder beside it and swapped in atomically at the end (:func:`attnflows_panel._io.replace_folder`),
        so a failed or killed run leaves the old model whole and nothing half-written.
    epochs, learning_rate, batch_size, max_length, warmup_ratio, weight_decay: ``None`` takes the
        task's :data:`TASK_DEFAULTS`. Fractional epochs are allowed. Every number must be finite and in
        range (ValueError before any work); a run whose loss, gradient or weights turn NaN or infinite
        raises :class:`TrainingDivergedError` and writes nothing.
    max_steps: stop after this many optimizer steps (the schedule is sized for it).
    train_limit, eval_limit: seeded random subsets of the train / eval splits.
    seed: seeds ``random``, ``numpy`` and ``torch``, the subsets, the dev-only split and the batches.
    column_map: passed to ``load_corpus`` for CSV/JSONL sources.
    overwrite: replace a non-empty ``out`` (otherwise :class:`OutputExistsError`).
    metadata: JSON-serialisable facts recorded as-is under ``"metadata"`` in ``metrics.json`` (e.g.
        :func:`attnflows_panel.prepare.prepare` records which data source it chose and why).
    eval_each_epoch: also evaluate after every full epoch (not the last, which is the final
        evaluation) and record ``{"epoch", "step", "train_loss", "accuracy"}`` rows under ``"history"``.
        The model saved is always the one after the last step (no best-epoch selection, which would
        choose on the data it reports on).
    device: a torch device ("cpu", "cuda", "cuda:1", ...); None = CUDA when available, else CPU.
    progress: a tqdm bar for training and evaluation, and one-line status messages on stderr.

    Returns the metrics also written to ``out/metrics.json``: ``accuracy``, ``f1`` (of ``f1_label``:
    "equivalent" for MRPC, "entailment" for RTE/QNLI), ``macro_f1``, ``majority_accuracy``, the
    confusion matrix, ``n_train``, ``n_eval``, ``split``, ``settings`` and the run's timings and versions.
    """
    from attnflows_panel.models import hub_load_kwargs

    t_start = time.perf_counter()
    if out is None:
        raise ValueError("finetune needs out= (the folder to write)")
    key, _ = task_spec(task)
    overrides = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "max_length": max_length,
                 "warmup_ratio": warmup_ratio, "weight_decay": weight_decay}
    settings = resolve_settings(key, **overrides)
    _check_counts(max_steps=max_steps, train_limit=train_limit, eval_limit=eval_limit)
    base_id = _check_base(base)
    hub_kwargs = hub_load_kwargs(base_id, "base")  # an unreachable hub fails now, in seconds, not after the data
    out_path = _check_out(out, overwrite)
    dev = _pick_device(device)

    data_run = _load_data(data, key, seed, column_map, labels, train_limit, eval_limit, progress)
    if key is None:  # the data named the task: its defaults for every setting left None
        key = data_run.task
        settings = resolve_settings(key, **overrides)
    model, tokenizer, new_params = _load_base(base_id, data_run.label_names, seed, progress, hub_kwargs)
    model.to(dev)
    model_max = getattr(model.config, "max_position_embeddings", None) or settings["max_length"]
    settings["max_length"] = min(settings["max_length"], int(model_max))

    run = _train(model, tokenizer, data_run, settings, max_steps=max_steps, seed=seed, eval_each_epoch=eval_each_epoch,
                 progress=progress)
    scores, eval_seconds = _evaluate(model, tokenizer, data_run, run, settings, eval_each_epoch, progress)
    metrics = _metrics(scores, data_run, run, settings, new_params, base=base, data=data, seed=seed,
                       limits={"max_steps": max_steps, "train_limit": train_limit, "eval_limit": eval_limit},
                       eval_seconds=eval_seconds, device=dev, eval_each_epoch=eval_each_epoch)
    if metadata:
        metrics["metadata"] = json.loads(json.dumps(metadata))  # a JSON-clean copy
    _save(model, tokenizer, metrics, out_path, overwrite, t_start, progress)
    return metrics


def _check_counts(**counts: int | None) -> None:
    """max_steps, train_limit, eval_limit: None or a whole number >= 1."""
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


@dataclasses.dataclass
class _Data:
    """The run's data: task, label names, the two parts (datasets) and where they came from."""

    task: str
    label_names: list[str]
    train: Any
    eval: Any
    split_info: dict[str, str]
    train_feats: list = dataclasses.field(default_factory=list)
    train_labels: Any = None
    eval_feats: list = dataclasses.field(default_factory=list)
    eval_labels: Any = None
    lengths: Any = None
    n_truncated: int = 0


def _load_data(data, key, seed, column_map, labels, train_limit, eval_limit, progress) -> _Data:
    _log(progress, f"loading {(key or 'sentence').upper()} pairs from {str(data)!r}")
    train_ds, eval_ds, split_info = load_splits(data, key, seed=seed, column_map=column_map, labels=labels)
    label_names = one_label_space((train_ds, eval_ds), data)
    task = key if key is not None else train_ds[0]["task"]
    _log(progress, f"task {task}: labels {', '.join(label_names)}")
    train_ds = select_subset(train_ds, train_limit, seed)
    eval_ds = select_subset(eval_ds, eval_limit, seed + 1)
    _log(progress, f"train: {len(train_ds)} pairs ({split_info['train']}); eval: {len(eval_ds)} pairs "
                   f"({split_info['eval']})")
    return _Data(task, label_names, train_ds, eval_ds, split_info)


def _load_base(base_id: str, label_names: list[str], seed: int, progress: bool, hub_kwargs: dict[str, Any]):
    """(model with a fresh classifier head for ``label_names``, tokenizer, names of the new parameters).

    Seeded first, so that the new head is initialised the same way every run. The base's own weights
    must be finite (a NaN or an infinity is named and refused)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from attnflows_panel.model_loading import damaged_weights
    from attnflows_panel.models import check_finite_weights, is_weights_error

    _seed_everything(seed)
    _log(progress, f"loading base model {base_id!r}")
    try:
        with quiet_transformers(bars=progress):
            tokenizer = AutoTokenizer.from_pretrained(base_id, **hub_kwargs)
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                base_id,
                num_labels=len(label_names),
                id2label=dict(enumerate(label_names)),
                label2id={name: i for i, name in enumerate(label_names)},
                attn_implementation="eager",
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                **hub_kwargs,
            )
    except OSError as exc:
        raise FileNotFoundError(f"could not load base model {base_id!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError derives from Exception only
        if not is_weights_error(exc):
            raise
        raise damaged_weights(exc, "the base model", base_id) from exc
    mismatched = {k[0] if isinstance(k, tuple) else k for k in loading.get("mismatched_keys", ())}
    new_params = sorted(set(loading.get("missing_keys", ())) | mismatched)
    check_finite_weights(model, f"the base model {base_id!r}", skip=new_params)
    if new_params:
        _log(progress, f"newly initialised (seed {seed}): {', '.join(new_params)}")
    return model, tokenizer, new_params


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite: nothing is written."""


def _optimizer(model, settings: dict[str, Any], total_steps: int):
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": settings["weight_decay"]},
        {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=settings["learning_rate"])
    warmup_steps = int(round(settings["warmup_ratio"] * total_steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps), warmup_steps


def _train(model, tokenizer, d: _Data, settings: dict[str, Any], *, max_steps, seed, eval_each_epoch,
           progress) -> dict[str, Any]:
    """The training loop. Returns {"step", "losses", "history", "steps_per_epoch", "train_seconds"}.

    Raises :class:`TrainingDivergedError` as soon as the loss or the gradient is not finite, and after the
    last step when any weight is not (the model is then never saved)."""
    import torch

    d.train_feats, d.train_labels = _encode(tokenizer, d.train, settings["max_length"])
    d.eval_feats, d.eval_labels = _encode(tokenizer, d.eval, settings["max_length"])
    d.lengths = np.array([len(f["input_ids"]) for f in d.train_feats])
    d.n_truncated = _count_truncated(tokenizer, d.train, d.lengths, settings["max_length"])
    if d.n_truncated:
        _log(progress, f"{d.n_truncated} of {len(d.lengths)} training pairs are longer than {settings['max_length']} "
                       "tokens and were truncated")
    bs = settings["batch_size"]
    steps_per_epoch = math.ceil(len(d.train_feats) / bs)
    total_steps = int(max_steps) if max_steps is not None else max(1, math.ceil(settings["epochs"] * steps_per_epoch))
    optimizer, scheduler, warmup_steps = _optimizer(model, settings, total_steps)
    _log(progress, f"training {total_steps} steps ({steps_per_epoch} per epoch, batch {bs}, lr "
                   f"{settings['learning_rate']}, warm-up {warmup_steps})")
    rng = np.random.default_rng(seed)
    model.train()
    step, losses, history, epoch, t_train = 0, [], [], 0, time.perf_counter()
    bar = _bar(total=total_steps, desc=f"fine-tune {d.task}", unit="step", progress=progress)
    hint = "; nothing was written: try a lower learning rate (--lr) or weight decay"
    while step < total_steps:
        for rows in _length_grouped_batches(d.lengths, bs, rng):
            batch = _collate(tokenizer, [d.train_feats[r] for r in rows], d.train_labels[rows], device=model.device)
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"training diverged at step {step + 1} (loss {loss.item()}){hint}")
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if not torch.isfinite(norm):
                raise TrainingDivergedError(f"training diverged at step {step + 1} (gradient norm {norm.item()}){hint}")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.item()))
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == total_steps:
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-50:]):.4f}",
                                lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if step >= total_steps:
                break
        epoch += 1
        if eval_each_epoch and step < total_steps:
            preds = _predict(model, tokenizer, d.eval_feats, max(bs, 32), False)
            history.append({"epoch": epoch, "step": step, "train_loss": float(np.mean(losses[-steps_per_epoch:])),
                            "accuracy": float((preds == d.eval_labels).mean())})
            _log(progress, f"epoch {epoch}: eval accuracy {history[-1]['accuracy']:.4f}")
            model.train()
    bar.close()
    _check_trained_weights(model, step, hint)
    return {"step": step, "losses": losses, "history": history, "steps_per_epoch": steps_per_epoch,
            "train_seconds": time.perf_counter() - t_train}


def _check_trained_weights(model, step: int, hint: str) -> None:
    from attnflows_panel.models import NonFiniteWeightsError, check_finite_weights

    try:
        check_finite_weights(model, f"the model after {step} training steps")
    except NonFiniteWeightsError as exc:
        raise TrainingDivergedError(f"training diverged: {str(exc).split(';')[0]}{hint}") from None


def _evaluate(model, tokenizer, d: _Data, run: dict[str, Any], settings, eval_each_epoch, progress):
    t_eval = time.perf_counter()
    preds = _predict(model, tokenizer, d.eval_feats, max(settings["batch_size"], 32), progress)
    eval_seconds = time.perf_counter() - t_eval
    scores = classification_metrics(d.eval_labels, preds, d.label_names, _positive_label(d.task, d.label_names))
    step, spe = run["step"], run["steps_per_epoch"]
    if eval_each_epoch:
        run["history"].append({"epoch": round(step / spe, 3), "step": step,
                               "train_loss": float(np.mean(run["losses"][-spe:])), "accuracy": scores["accuracy"]})
    _log(progress, f"eval accuracy {scores['accuracy']:.4f}, F1({scores['f1_label']}) {scores['f1']:.4f} on "
                   f"{len(d.eval_feats)} pairs")
    return scores, eval_seconds


def _metrics(scores, d: _Data, run, settings, new_params, *, base, data, seed, limits, eval_seconds, device,
             eval_each_epoch) -> dict[str, Any]:
    import torch
    import transformers

    import attnflows_panel

    losses = run["losses"]
    return {
        "task": d.task,
        "labels": d.label_names,
        **scores,
        "n_train": len(d.train_feats),
        "n_eval": len(d.eval_feats),
        "n_train_truncated": d.n_truncated,
        "new_parameters": new_params,
        "eval_split": d.split_info["eval"],
        "split": d.split_info,
        "base": str(base),
        "data": str(data),
        "settings": {**settings, "seed": seed, **limits, "optimizer": "AdamW",
                     "schedule": "linear warm-up, linear decay", "grad_clip": 1.0},
        "steps": run["step"],
        "epochs_run": round(run["step"] / run["steps_per_epoch"], 3),
        "final_train_loss": float(np.mean(losses[-50:])) if losses else None,
        "history": run["history"] if eval_each_epoch else None,
        "train_seconds": round(run["train_seconds"], 2),
        "eval_seconds": round(eval_seconds, 2),
        "duration_seconds": None,  # filled when saved
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "attnflows_version": attnflows_panel.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _save(model, tokenizer, metrics: dict[str, Any], out_path: Path, overwrite: bool, t_start: float,
          progress: bool) -> None:
    """Model, tokenizer, metrics.json and README.md into a staging folder, swapped onto ``out_path``
    (:func:`_staging_dir`). A write that fails (a full disk) says so, naming the folder: it is no
    damaged input."""
    from attnflows_panel.models import is_weights_error

    with _staging_dir(out_path, overwrite) as tmp, quiet_transformers(bars=progress):
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError derives from Exception only
            if not (isinstance(exc, OSError) or is_weights_error(exc)):
                raise
            raise _write_error(exc, out_path) from exc
        metrics["duration_seconds"] = round(time.perf_counter() - t_start, 2)
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write(tmp / "README.md", _model_card(metrics))
    _log(progress, f"wrote {out_path} in {metrics['duration_seconds']:.0f} s")


def _write_error(exc: BaseException, out_path: Path) -> OSError:
    """An OSError for a model write that failed, with the operating system's reason in one line."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code is None:
        for number, marker in ((errno.ENOSPC, "No space left"), (errno.ENOSPC, "StorageFull"),
                               (errno.EFBIG, "File too large"), (errno.EDQUOT, "quota")):
            if marker in text:
                code = number
                break
    reason = os.strerror(code) if code else text.splitlines()[0][:300]
    hint = "; free some space or choose another --out" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return OSError(code or errno.EIO, f"could not write the model to {str(out_path)!r}: {reason}{hint} "
                                      "(nothing was written)", str(out_path))
