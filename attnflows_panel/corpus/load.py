"""The entry point: :func:`load_corpus` reads any source into the corpus schema as a ``datasets.Dataset``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnflows_panel.corpus.demo import load_demo
from attnflows_panel.corpus.glue import is_glue_folder, load_glue_folder
from attnflows_panel.corpus.hub import HUB_NAME, is_hf_data_folder, is_hf_disk_folder, load_hf_folder, load_hub
from attnflows_panel.corpus.label_space import check_labels_for_task, parse_labels
from attnflows_panel.corpus.schema import FILE_SUFFIXES, MalformedRowsWarning, Rows, check_column_map, split_key
from attnflows_panel.corpus.tables import load_file
from attnflows_panel.corpus.tasks import resolve_task

__all__ = ["load_corpus"]


_WARN_SHOW = 10


def _describe(source: str, rows: Rows) -> str:
    tasks = sorted(set(rows.cols["task"]))
    splits = sorted(set(rows.cols["split"]), key=lambda s: (s != "train", s != "dev", s))
    malformed = rows.malformed
    text = (f"attnflows corpus from {source}: {len(rows)} pairs, task={','.join(tasks)}, "
            f"split={','.join(splits)}")
    for t in tasks:
        if t in rows.spaces:
            text += f"\nlabels of {t}: {', '.join(rows.spaces[t].names)}"
    if malformed:
        text += f"\n{len(malformed)} malformed row(s) skipped:\n" + "\n".join(f"  {m}" for m in malformed)
    return text


def _looks_like_path(src: str) -> bool:
    return (Path(src).suffix.lower() in FILE_SUFFIXES or src.startswith((".", "~", "/"))
            or src.count("/") > 2 or (os.sep != "/" and os.sep in src))


def load_corpus(source: str | os.PathLike, task: str | None = None, split: str | None = None, *,
                limit: int | None = None, column_map: Mapping[str, str] | None = None,
                labels: Sequence[str] | str | None = None):
    """Load sentence pairs into one schema (see the module docstring) as a ``datasets.Dataset``.

    source:
        a hub dataset: ``"glue/<task>"`` (``nyu-mll/glue``), ``"snli"``, ``"owner/name"``,
        ``"name/config"`` or ``"owner/name/config"`` (also ``"name:config"``);
        a local GLUE task folder holding the original TSV files (``train.tsv``, ``dev.tsv``; MNLI's
        ``dev_matched.tsv`` / ``dev_mismatched.tsv``); a ``datasets.save_to_disk`` folder or a hub-style
        folder of data files; a ``.csv`` / ``.tsv`` / ``.jsonl`` file; or ``"demo"`` (the bundled set).
    task: a GLUE task (``mrpc``, ``rte``, ``qnli``, ``wnli``, ``qqp``, ``mnli``, ``mnli-mm``) sets the
        label names and their order; any other name names an open task. Never required: hub names and
        GLUE folders imply it (name or header; a header that fits several tasks needs the folder's name
        or ``task``), files without a ``task`` column are one task named after the file. For ``"demo"``
        and files with a task column it selects that task's rows (None = all).
    split: ``"train"`` or ``"dev"`` (``"validation"`` is an alias); None = every split (train first).
        For CSV/JSONL the rows' ``split`` column decides, else the file name (``dev.csv`` → dev), else
        ``"train"``.
    limit: keep only the first ``limit`` valid rows (reading stops there).
    column_map: our field → the source's column, e.g. ``{"sentence_a": "premise", "sentence_b":
        "hypothesis", "label": "gold"}`` (:func:`parse_columns` reads the CLI's ``A,B[,LABEL]``). Fields:
        id, sentence_a, sentence_b, label, label_name, task, split. Unmapped fields are found by their
        usual names (sentence1/sentence2, question/sentence, premise/hypothesis, question1/question2,
        label/gold_label/label_name, id/idx).
    labels: label names in id order for an open task whose labels are integers (``["no", "yes"]`` or
        ``"no,yes"``). A label column of names needs none: its distinct names, sorted, are the labels.

    Returns a ``datasets.Dataset`` with columns :data:`COLUMNS`, plus ``ds.malformed`` (list of
    :class:`MalformedRow`) and a readable report in ``ds.info.description``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    column_map = check_column_map(column_map)
    labels = parse_labels(labels)
    if task is not None:
        task = resolve_task(task)
        check_labels_for_task(task, labels)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a str or path, got {type(source).__name__}")
    rows = Rows(limit, labels)
    label, task, handle = _read_source(os.fspath(source), task, split, column_map, rows)
    _check_rows(rows, label, labels, task, split, handle)
    if rows.malformed:
        shown = "\n".join(f"  {m}" for m in rows.malformed[:_WARN_SHOW])
        more = len(rows.malformed) - _WARN_SHOW
        warnings.warn(
            f"{len(rows.malformed)} malformed row(s) skipped while loading {label}:\n{shown}"
            + (f"\n  ... and {more} more (see ds.malformed)" if more > 0 else ""),
            MalformedRowsWarning,
            stacklevel=2,
        )
    return _to_dataset(rows, label)


def _read_source(src: str, task: str | None, split: str | None, column_map: Mapping[str, str] | None,
                 rows: Rows) -> tuple[str, str | None, Any]:
    """Read ``src`` (the demo, a folder, a file, or a hub name) into ``rows``: (the source as the
    messages name it, the task, a table's record filter or None)."""
    handle = None
    if src.strip().lower() == "demo":
        label = "the bundled demo set"
        task, handle = load_demo(task, split, column_map, rows)
    elif Path(src).expanduser().exists():
        path = Path(src).expanduser()
        label = str(path)
        if path.is_dir():
            if is_glue_folder(path) and not is_hf_disk_folder(path):
                task = load_glue_folder(path, task, split, rows)
            elif is_hf_disk_folder(path) or is_hf_data_folder(path):
                task = load_hf_folder(path, task, split, rows, column_map)
            else:
                load_glue_folder(path, task, split, rows)  # raises: no GLUE files
        else:
            task, handle = load_file(path, task, split, column_map, rows)
    elif _looks_like_path(src.strip()):
        raise FileNotFoundError(
            f"no such file or folder: {src!r} (hub datasets are named like 'glue/mrpc', 'snli' or 'owner/name')"
        )
    elif HUB_NAME.match(src.strip()):
        label = f"the Hugging Face Hub ({src.strip()})"
        task = load_hub(src.strip(), task, split, rows, column_map)
    else:
        raise ValueError(
            f"unknown corpus source {src!r}; expected 'demo', a hub dataset ('glue/mrpc', 'snli', 'owner/name'), "
            "a GLUE task folder (holding train.tsv/dev.tsv), a datasets folder, or a .csv/.jsonl file"
        )
    return label, task, handle


def _check_rows(rows: Rows, label: str, labels: list[str] | None, task: str | None, split: str | None,
                handle: Any) -> None:
    """ValueError when ``labels`` miss labels of the data, or when no valid row is left (saying what was
    asked for and what the file holds)."""
    if rows.uncovered:
        missing = ", ".join(f"{k!r} ({n} rows)" for k, n in sorted(rows.uncovered.items()))
        raise ValueError(f"labels={labels} do not cover the labels of {label}: missing {missing}; give every label "
                         "name in id order (CLI: --labels NAME0,NAME1,…)")
    if len(rows) == 0:
        what = []
        if task:
            what.append(f"task {task!r}")
        if split is not None:
            what.append(f"split {split_key(split)!r}")
        detail = ""
        if handle is not None:
            detail = (f" (the file has task(s) {sorted(handle.seen_tasks) or '-'} and split(s) "
                      f"{sorted(handle.seen_splits) or '-'})")
        if rows.malformed:
            detail += "; malformed rows: " + "; ".join(str(m) for m in rows.malformed[:3])
        raise ValueError(f"{label} has no valid rows" + (f" for {' and '.join(what)}" if what else "") + detail)


def _to_dataset(rows: Rows, label: str):
    """The collected rows as a ``datasets.Dataset`` in the schema, with ``malformed`` and a report."""
    import datasets

    tasks = set(rows.cols["task"])
    label_feature = datasets.Value("int64")
    if len(tasks) == 1:
        only = next(iter(tasks))
        label_feature = datasets.ClassLabel(names=list(rows.space(only).names))
    features = datasets.Features({
        "id": datasets.Value("string"),
        "sentence_a": datasets.Value("string"),
        "sentence_b": datasets.Value("string"),
        "label": label_feature,
        "label_name": datasets.Value("string"),
        "task": datasets.Value("string"),
        "split": datasets.Value("string"),
    })
    info = datasets.DatasetInfo(description=_describe(label, rows), features=features)
    ds = datasets.Dataset.from_dict(rows.cols, features=features, info=info)
    ds.malformed = list(rows.malformed)
    return ds
