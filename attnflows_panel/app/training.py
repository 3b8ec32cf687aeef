"""Which samples of a corpus index the fine-tuned model was trained on (its *training pairs*).

An accuracy over pairs the model was fine-tuned on says little about the model: the bundled demo set's
MRPC part holds 102 pairs, 82 of which the default model was fine-tuned on. :func:`training_mask`
finds them from the ``metrics.json`` that ``attnflows finetune`` writes beside the model (the data it
names, its seed and train limit: the same training split :func:`attnflows_panel.finetune.load_splits`
and :func:`~attnflows_panel.finetune.select_subset` gave the fine-tune), matched to the index's samples
by their sentences (ids differ between sources). :func:`accuracy_split` reports the fine-tuned
model's accuracy on the held-out pairs with the training pairs' figure beside it, and
:func:`accuracy_text` words it, for the corpus browser and ``attnflows index info``.

No model runs here: only the training data is read.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["training_mask", "AccuracySplit", "accuracy_split", "accuracy_text", "finetuned_folder"]

log = logging.getLogger(__name__)


def finetuned_folder(index: Any, pair: Any = None) -> Path | None:
    """The fine-tuned model's folder: the pair's, else the one the index was built with."""
    name = getattr(pair, "finetuned_name", None) if pair is not None else None
    if not name:
        name = ((getattr(index, "manifest", None) or {}).get("fingerprint") or {}).get("finetuned", {}).get("name")
    if not name:
        return None
    folder = Path(str(name))
    return folder if (folder / "metrics.json").is_file() else None


@functools.lru_cache(maxsize=16)
def _training_pairs(metrics_path: str, mtime: float) -> frozenset[tuple[str, str]] | None:
    from attnflows_panel.finetune import load_splits, select_subset

    try:
        metrics = json.loads(Path(metrics_path).read_text())
        settings = metrics.get("settings") or {}
        seed = int(settings.get("seed", 42))
        train, _, _ = load_splits(metrics["data"], metrics.get("task"), seed=seed)
        train = select_subset(train, settings.get("train_limit"), seed)
    except Exception as exc:  # noqa: BLE001 - unknown training data: no pair is marked, said once in the log
        log.info("the training pairs of %s are unknown: %s", metrics_path, exc)
        return None
    return frozenset(zip((str(a) for a in train["sentence_a"]), (str(b) for b in train["sentence_b"]), strict=True))


def training_mask(index: Any, pair: Any = None) -> np.ndarray | None:
    """A boolean per row of ``index``: True where the fine-tuned model was trained on that pair.

    None when it is unknown (no ``metrics.json`` beside the model, or its training data cannot be
    read, e.g. a hub data set offline)."""
    folder = finetuned_folder(index, pair)
    if folder is None:
        return None
    path = folder / "metrics.json"
    pairs = _training_pairs(str(path.resolve()), path.stat().st_mtime)
    if pairs is None:
        return None
    md = index.metadata
    return np.fromiter(((str(a), str(b)) in pairs for a, b in zip(md["sentence_a"], md["sentence_b"], strict=True)),
                       dtype=bool, count=len(md))


@dataclasses.dataclass(frozen=True)
class AccuracySplit:
    """The fine-tuned model's accuracy on the held-out and on the training pairs (None: no such pair
    has a correctness flag)."""

    held_out: float | None
    n_held_out: int
    training: float | None
    n_training: int


def accuracy_split(correct: Any, training: np.ndarray | None, rows: np.ndarray | None = None) -> AccuracySplit:
    """Accuracy from ``correct`` (a per-row correctness column, NA where unscored) over ``rows`` (None:
    all), split by ``training`` (None: every pair counts as held out)."""
    import pandas as pd

    flags = pd.Series(correct).reset_index(drop=True)
    keep = np.arange(len(flags)) if rows is None else np.asarray(rows, dtype=np.int64)
    train = np.zeros(len(flags), dtype=bool) if training is None else np.asarray(training, dtype=bool)

    def part(sel: np.ndarray) -> tuple[float | None, int]:
        scored = flags.iloc[sel].dropna()
        return (float(scored.astype(bool).mean()) if len(scored) else None), int(len(scored))

    held, n_held = part(keep[~train[keep]])
    tr, n_tr = part(keep[train[keep]])
    return AccuracySplit(held, n_held, tr, n_tr)


def accuracy_text(acc: AccuracySplit) -> str:
    """``fine-tuned accuracy 0.850 on 20 held-out pairs (0.988 on the 82 training pairs it was
    fine-tuned on)``; '' when no pair is scored."""
    parts = []
    if acc.held_out is not None:
        parts.append(f"fine-tuned accuracy {acc.held_out:.3f} on {acc.n_held_out} held-out pairs")
    if acc.training is not None:
        train = f"{acc.training:.3f} on the {acc.n_training} training pairs it was fine-tuned on"
        parts.append(f"({train})" if parts else f"fine-tuned accuracy {train}")
    return " ".join(parts)
