"""Hugging Face datasets: the hub, ``datasets.save_to_disk`` folders, and hub-style local folders.

``glue/<task>`` is ``nyu-mll/glue`` with the task's config; other names are tried as datasets and
configs (:func:`_hub_target`). Label names come from the ``ClassLabel`` feature (GLUE's for a GLUE
task). An unreachable hub is said at once (:func:`hub_unreachable`), as :class:`HubUnavailableError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from attnflows_panel.corpus.label_space import LabelSpace, discover_labels
from attnflows_panel.corpus.schema import (
    SPLIT_ALIASES,
    HubUnavailableError,
    Rows,
    glue_split,
    resolve_columns,
    split_key,
)
from attnflows_panel.corpus.tasks import REGRESSION_HINT, TASKS, known_task, resolve_task
from attnflows_panel.labels import normalise

__all__ = [
    "HUB_NAME",
    "rows_from_hub_dataset",
    "hub_unreachable",
    "load_hub",
    "is_hf_disk_folder",
    "is_hf_data_folder",
    "load_hf_folder",
]


_HUB_GLUE = re.compile(r"^(?:nyu-mll/)?glue/(?P<task>[A-Za-z0-9_-]+)$", re.IGNORECASE)


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+){0,2}(?::[\w.-]+)?$")


def _hf_label_space(d, task: str, label_col: str, rows: Rows, where: str) -> None:
    """Set ``task``'s label space from a ``datasets`` split: its ClassLabel names, GLUE's, or ``labels``."""
    import datasets

    feature = d.features.get(label_col)
    names = list(getattr(feature, "names", None) or []) if isinstance(feature, datasets.ClassLabel) else []
    if task in TASKS:
        spec = TASKS[task]
        if names and [normalise(n) for n in names] != [normalise(n) for n in spec.labels]:
            raise ValueError(f"{where}: its label feature names {names}, task {task!r} has {spec.labels}; "
                             "leave out task= to use the dataset's own names")
        rows.space(task)
        return
    if names:
        if rows.labels is not None and [normalise(n) for n in names] != [normalise(n) for n in rows.labels]:
            raise ValueError(f"{where}: its label feature names {names}; labels={rows.labels} differs")
        rows.spaces.setdefault(task, LabelSpace(task, names))
        return
    dtype = getattr(feature, "dtype", None)
    if dtype in ("float16", "float32", "float64"):
        raise ValueError(f"{where}: the label column {label_col!r} holds real values ({dtype}): a regression "
                         f"task such as STS-B. {REGRESSION_HINT}")
    if rows.labels is not None:
        rows.space(task)
        return
    if dtype == "string":
        values = list(d[label_col])
        rows.spaces.setdefault(task, discover_labels(task, values, [None] * len(values), where))
        return
    raise ValueError(
        f"{where}: the label column {label_col!r} is {dtype or type(feature).__name__} without names (no ClassLabel); "
        "name the labels in id order with labels=[...] (CLI: --labels NAME0,NAME1,…)"
    )


def rows_from_hub_dataset(d, task: str, split: str, rows: Rows, source: str,
                           column_map: Mapping[str, str] | None = None) -> None:
    """Convert one split of a ``datasets.Dataset`` (hub or local) into rows.

    Text columns: ``column_map``, else a GLUE task's hub columns, else the usual names (premise /
    hypothesis, sentence1 / sentence2, question1 / question2, …). Label names: the ``ClassLabel`` feature
    (GLUE's for a GLUE task). Labels of -1 (no gold label, e.g. in SNLI or a test split) are skipped as
    malformed.
    """
    available = list(d.column_names)
    cmap = dict(column_map or {})
    spec = TASKS.get(task)
    if spec is not None and all(c in available for c in spec.hub_columns):
        cmap.setdefault("sentence_a", spec.hub_columns[0])
        cmap.setdefault("sentence_b", spec.hub_columns[1])
    mapping = resolve_columns(available, cmap, source)
    label_col = mapping.get("label") or mapping["label_name"]
    _hf_label_space(d, task, label_col, rows, source)
    id_col = mapping.get("id")
    idxs = d[id_col] if id_col else range(len(d))
    columns = zip(idxs, d[mapping["sentence_a"]], d[mapping["sentence_b"]], d[label_col], strict=True)
    for i, (idx, a, b, lab) in enumerate(columns):
        if rows.full:
            return
        if isinstance(lab, int) and lab < 0:
            rows.bad(source, i + 1, f"no gold label ({lab})", f"{a}\t{b}")
            continue
        rows.add(source, i + 1, id=f"{task}-{split}-{idx}", a=a, b=b, label=lab, task=task, split=split,
                 raw=f"{a}\t{b}")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (DNS / TCP connect within ``timeout`` s), or None if it may be.

    ``datasets`` retries an unreachable hub for half a minute before failing; this probe answers in
    well under a second when there is no network. It is skipped (None) in offline mode, where
    ``datasets`` answers from its cache at once, and behind a proxy, which the probe cannot see through.
    """
    import socket
    from urllib.parse import urlparse

    import datasets
    from huggingface_hub import constants

    if datasets.config.HF_DATASETS_OFFLINE or constants.HF_HUB_OFFLINE:
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc})"


def _task_from_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.") or "hub"


def _hub_target(src: str, task: str | None) -> tuple[list[tuple[str, str | None, str]], str | None, str | None]:
    """(candidate (dataset, config, task name) triples, the task if known, the dev split to try first).

    ``glue/<task>`` is ``nyu-mll/glue`` with the task's config. Otherwise ``owner/name/config``,
    ``name:config`` and ``owner/name:config`` are unambiguous; ``a/b`` is tried as the dataset ``a/b``,
    then as the dataset ``a`` with config ``b`` (legacy names such as ``paws/labeled_final``). An open
    task is named after what loaded: ``snli``, ``paws-labeled_final``.
    """
    m = _HUB_GLUE.match(src)
    if m is not None:
        name = m.group("task")
        key = known_task(name)
        if key is None:
            resolve_task(name)  # STS-B / SST-2 / CoLA: a clear refusal
            raise ValueError(f"unknown task {name!r}; the GLUE sentence-pair tasks are {', '.join(TASKS)}")
        if task is not None and known_task(task) != key:
            raise ValueError(f"source {src!r} is the {key} task, but task={task!r} was given")
        spec = TASKS[key]
        return [("nyu-mll/glue", spec.glue_config, key)], key, spec.hub_dev_split
    name, _, config = src.partition(":")
    parts = name.split("/")
    if len(parts) == 3:
        cands = [("/".join(parts[:2]), parts[2], f"{parts[1]}-{parts[2]}")]
    elif len(parts) == 2 and not config:
        cands = [(name, None, parts[1]), (parts[0], parts[1], f"{parts[0]}-{parts[1]}")]
    else:
        cands = [(name, config or None, f"{parts[-1]}-{config}" if config else parts[-1])]
    stsb = ("stsb", "sts_b")
    if normalise(parts[-1]) in stsb or any(normalise(c[2].split("-")[0]) in stsb for c in cands):
        resolve_task("stsb")  # a clear refusal, before any download
    return [(n, c, _task_from_name(t)) for n, c, t in cands], task, None


def _hf_split_names(split: str, dev_first: str | None) -> list[str]:
    if split == "train":
        return ["train"]
    if split == "dev":
        order = [dev_first] if dev_first else []
        return order + [s for s in ("validation", "validation_matched", "dev", "valid", "val") if s not in order]
    return [split]


def load_hub(src: str, task: str | None, split: str | None, rows: Rows,
              column_map: Mapping[str, str] | None) -> str:
    import datasets

    candidates, task, dev_first = _hub_target(src, task)
    wanted = glue_split(split) if split is not None else ["train", "dev"]
    offline_hint = (
        "Use a local folder (a GLUE task folder, a datasets.save_to_disk folder) or a CSV/JSONL file, or the "
        "bundled set (load_corpus('demo'))."
    )
    reason = hub_unreachable()
    if reason is not None:
        raise HubUnavailableError(
            f"cannot load {src} from the Hugging Face Hub: {reason}. {offline_hint} If it was "
            "downloaded before, set HF_DATASETS_OFFLINE=1 to load it from the cache."
        )
    loaded_any = False
    for s in wanted:
        if rows.full:
            break
        d, errors, hf_split, no_such_split = None, [], None, False
        for name, config, default_task in candidates:
            split_errors = 0
            names = _hf_split_names(s, dev_first)
            for hf_split in names:
                spec_split = hf_split + (f"[:{rows.limit - len(rows)}]" if rows.limit is not None else "")
                try:
                    d = datasets.load_dataset(name, config, split=spec_split)
                    break
                except ValueError as exc:  # an unknown split name: try the next one
                    errors.append(f"{name}{'/' + config if config else ''} [{hf_split}]: {exc}")
                    if "split" not in str(exc).lower():
                        break
                    split_errors += 1
                except Exception as exc:  # noqa: BLE001 - offline, unreachable, no such dataset: one clear error
                    errors.append(f"{name}{'/' + config if config else ''}: {exc}")
                    break
            if d is not None:
                candidates = [(name, config, default_task)]  # the other splits come from the same dataset
                break
            if split_errors == len(names):  # the dataset exists, without this split
                no_such_split = True
                candidates = [(name, config, default_task)]
                break
        if d is None:
            if split is None and no_such_split and (s == "train" or loaded_any):
                continue  # only some of train/dev exist: load what there is
            raise HubUnavailableError(f"could not load {src} ({s} split) from the Hugging Face Hub: "
                                      + "; ".join(errors[-3:]) + f". {offline_hint}")
        loaded_any = True
        if task is None:
            task = resolve_task(default_task)
        where = f"{name}/{config or ''}/{hf_split}".replace("//", "/")
        if isinstance(d, datasets.DatasetDict):  # pragma: no cover - split= always gives a Dataset
            d = d[hf_split]
        rows_from_hub_dataset(d, task, s, rows, where, column_map)
    return task


def is_hf_disk_folder(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def is_hf_data_folder(folder: Path) -> bool:
    """A hub-style local folder (a dataset repository's files): data files ``datasets`` can read."""
    exts = ("*.parquet", "*.arrow", "*.csv", "*.jsonl", "*.json")
    return (folder / "README.md").is_file() or any(any(folder.glob(e)) or any(folder.glob(f"*/{e}")) for e in exts[:2])


def load_hf_folder(folder: Path, task: str | None, split: str | None, rows: Rows,
                    column_map: Mapping[str, str] | None) -> str:
    """A ``datasets`` folder: ``save_to_disk`` output (Dataset or DatasetDict) or a hub-style folder."""
    import datasets

    try:
        obj = datasets.load_from_disk(str(folder)) if is_hf_disk_folder(folder) else datasets.load_dataset(str(folder))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a folder it cannot read
        raise ValueError(
            f"{folder} is neither a GLUE task folder (train.tsv / dev.tsv) nor a folder the datasets library "
            f"can read (save_to_disk output, or data files with a README card): {exc}"
        ) from exc
    if isinstance(obj, datasets.Dataset):
        parts = {"train" if split is None else split_key(split): obj}
    else:
        parts = {}
        for name in obj:
            key = SPLIT_ALIASES.get(name.lower(), name.lower())
            parts.setdefault(key, obj[name])
    if task is None:
        task = resolve_task(re.sub(r"[^a-z0-9_.-]+", "-", folder.name.lower()).strip("-.") or "pairs")
    if split is not None:
        key = split_key(split)
        if key not in parts:
            raise ValueError(f"{folder} has no {split!r} split (it has: {', '.join(parts)})")
        parts = {key: parts[key]}
    else:
        order = sorted(parts, key=lambda s: (s != "train", s != "dev", s))
        if "test" in parts and len(parts) > 1:
            order.remove("test")  # test splits usually have no labels
        parts = {s: parts[s] for s in order}
    for s, d in parts.items():
        if rows.full:
            break
        rows_from_hub_dataset(d, task, s, rows, f"{folder}[{s}]", column_map)
    return task
