"""Label reconciliation: whether the models' label names are the corpus's, and the correctness it allows.

A fine-tuned model predicts label names (``equivalent``, ``LABEL_1``); a corpus holds label ints and
names. :func:`reconcile_corpus_labels` matches them once per task of the corpus
(:func:`attnflows_panel.labels.reconcile`) and the manifest keeps the outcome; each shard's
``correct_pre`` / ``correct_fine`` then come from it (:func:`apply_label_reconciliation`): True or
False where the task's label sets match, None where they differ (never a wrong correctness).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from attnflows_panel.corpus import label_spaces
from attnflows_panel.labels import LabelMatch, parse_label_map, reconcile

__all__ = ["is_correct", "reconcile_corpus_labels", "label_matches", "apply_label_reconciliation"]


def is_correct(pred: str | None, label: int, label_name: str | None) -> bool | None:
    """Whether a predicted label name matches the gold label (None when the model has no head)."""
    if pred is None:
        return None
    if label_name is not None and str(pred).lower() == str(label_name).lower():
        return True
    m = re.fullmatch(r"(?i)label_(\d+)", str(pred))
    if m is not None and label is not None and int(label) >= 0:
        return int(m.group(1)) == int(label)
    return False


def reconcile_corpus_labels(pair: Any, ds, label_map: Any = None) -> dict[str, Any]:
    """Match the models' label names with the corpus's, once per task of the corpus (README.md, "Tasks,
    labels and fine-tuning"; :func:`attnflows_panel.labels.reconcile`).

    Returns the manifest's ``label_reconciliation``: ``{"finetuned": {task: LabelMatch dict},
    "pretrained": {...}, "label_map": ..., "matched": bool (every task matched), "scored_tasks": [...],
    "message": str}``. A task whose label sets differ gets no correctness (None), never a wrong one.
    """
    label_map = parse_label_map(label_map)
    spaces = label_spaces(ds)
    fine, pre = {}, {}
    for t, names in spaces.items():
        key = "" if t is None else str(t)
        fine[key] = reconcile(list(getattr(pair, "labels", []) or []), names, label_map, task=t or None)
        pre_labels = list(getattr(pair, "pretrained_labels", []) or [])
        try:
            pre[key] = reconcile(pre_labels, names, label_map, task=t or None, who="the pre-trained model")
        except ValueError:  # the label map is the fine-tuned model's
            pre[key] = reconcile(pre_labels, names, None, task=t or None, who="the pre-trained model")
    scored = [k for k, m in fine.items() if m.matched]
    failed = [m for m in fine.values() if not m.matched]
    if not failed:
        message = "; ".join(dict.fromkeys(m.message for m in fine.values()))
    else:
        message = "; ".join(m.message for m in failed)
        if scored:
            message += f" (correctness is computed for {', '.join(scored)} only)"
    return {
        "finetuned": {k: m.to_dict() for k, m in fine.items()},
        "pretrained": {k: m.to_dict() for k, m in pre.items()},
        "label_map": label_map,
        "matched": not failed,
        "scored_tasks": scored,
        "message": message,
    }


def label_matches(reconciliation: Mapping[str, Any] | None, role: str) -> dict[str, LabelMatch]:
    """The manifest's ``label_reconciliation`` for one ``role`` ("finetuned" or "pretrained") as
    ``{task: LabelMatch}`` (empty for an index built before reconciliation)."""
    return {k: LabelMatch.from_dict(v) for k, v in ((reconciliation or {}).get(role) or {}).items()}


def _row_correct(matches: Mapping[str, Any], task: Any, pred: Any, label_name: Any) -> bool | None:
    m = matches.get("" if task is None else str(task))
    if m is None and len(matches) == 1:
        m = next(iter(matches.values()))
    return None if m is None else m.correct(pred, label_name)


def apply_label_reconciliation(meta, rows: Mapping[str, Sequence[Any]], reconciliation: Mapping[str, Any] | None):
    """Set a shard's ``correct_pre`` / ``correct_fine`` from :func:`reconcile_corpus_labels`: scored
    (True/False) where the row's task matched, None where its label sets differ. Returns ``meta``."""
    import pandas as pd

    if reconciliation is None:
        return meta
    n = len(meta)
    tasks = list(rows.get("task", [None] * n))
    names = list(meta["label_name"].astype(object).where(meta["label_name"].notna(), None))
    for col, pred_col, role in (("correct_fine", "pred_fine", "finetuned"), ("correct_pre", "pred_pre", "pretrained")):
        matches = label_matches(reconciliation, role)
        preds = list(meta[pred_col].astype(object).where(meta[pred_col].notna(), None))
        correct = [_row_correct(matches, t, p, g) for t, p, g in zip(tasks, preds, names, strict=True)]
        meta[col] = pd.array(correct, dtype="boolean")
    return meta
