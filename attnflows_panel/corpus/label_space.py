"""The label names of a corpus: GLUE's for GLUE tasks, else found in the data or given by the user.

A :class:`LabelSpace` looks a row's label up by id or by (normalised) name. An open task's names come
from its rows (:func:`discover_labels`: names sorted, or ids paired with names) or from ``labels=[...]``
(:func:`parse_labels`); :func:`label_spaces` reads them back from a loaded corpus.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from attnflows_panel.corpus.tasks import REGRESSION_HINT, TASKS
from attnflows_panel.labels import normalise

__all__ = [
    "LabelSpace",
    "discover_labels",
    "check_labels_for_task",
    "parse_labels",
    "label_spaces",
    "label_names",
]

log = logging.getLogger("attnflows_panel.corpus")


class LabelSpace:
    """A task's label names in id order; looks labels up by id or by (normalised) name."""

    def __init__(self, task: str, names: Sequence[str], ints: bool = True):
        self.task, self.names, self.ints = task, list(names), ints
        self.by_name = {normalise(n): i for i, n in enumerate(self.names)}

    def _error(self, value: Any) -> ValueError:
        k = len(self.names)
        ids = f" or 0..{k - 1}" if self.ints else ""
        return ValueError(f"unknown label {value!r} for {self.task} (expected one of {self.names}{ids})")

    def lookup(self, value: Any) -> tuple[int, str]:
        """(label id, label name) of a label given as an int, an int string, or a name."""
        if isinstance(value, bool):
            raise self._error(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            if self.ints and 0 <= value < len(self.names):
                return value, self.names[value]
        elif isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"[+-]?\d+(?:\.0+)?", text):
                i = int(float(text))
                if self.ints and 0 <= i < len(self.names):
                    return i, self.names[i]
            else:
                i = self.by_name.get(normalise(text))
                if i is not None:
                    return i, self.names[i]
        raise self._error(value)


def _int_like(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(?:\.0+)?\s*", value):  # "2" or "2.0" (pandas)
        return int(float(value))
    return None


def _real_valued(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return not value.is_integer()
    if isinstance(value, str):
        try:
            return not float(value).is_integer() and bool(re.fullmatch(r"\s*[+-]?\d*\.\d+\s*", value))
        except ValueError:
            return False
    return False


def discover_labels(task: str, label_values: list, name_values: list, where: str) -> LabelSpace:
    """An open task's label space from its rows: names (sorted), or ids paired with names."""
    ints, names, pairs = set(), {}, {}
    for lab, nm in zip(label_values, name_values, strict=True):
        if isinstance(lab, bool):  # true/false is no label: such rows are reported as malformed
            continue
        i = _int_like(lab) if lab not in (None, "") else None
        if lab not in (None, "") and i is None:
            if _real_valued(lab):
                raise ValueError(
                    f"{where}: the labels of task {task!r} are real-valued scores (e.g. {lab!r}): a regression "
                    f"task such as STS-B. {REGRESSION_HINT}"
                )
            names.setdefault(normalise(lab), str(lab).strip())
        elif i is not None:
            ints.add(i)
        if nm not in (None, "") and isinstance(nm, str):
            names.setdefault(normalise(nm), nm.strip())
            if i is not None:
                pairs.setdefault(i, set()).add(normalise(nm))
    if pairs and len(pairs) == len(ints):
        clash = {i: v for i, v in pairs.items() if len(v) > 1}
        if clash:
            i, v = next(iter(clash.items()))
            raise ValueError(f"{where}: label {i} of task {task!r} has several names {sorted(v)}")
        k = max(pairs) + 1
        if set(pairs) != set(range(k)) or len({next(iter(v)) for v in pairs.values()}) != k:
            raise ValueError(f"{where}: the label ids of task {task!r} ({sorted(pairs)}) are not 0..{k - 1} "
                             "with one name each; name them with labels=[...] (CLI: --labels NAME0,NAME1,…)")
        return LabelSpace(task, [names[next(iter(pairs[i]))] for i in range(k)], ints=True)
    if names:
        ordered = [names[k] for k in sorted(names)]
        if len(ordered) < 2:
            log.warning("%s: task %r has a single label name %r in the data", where, task, ordered[0])
        return LabelSpace(task, ordered, ints=False)
    if ints:
        raise ValueError(
            f"{where}: the labels of task {task!r} are numbers {sorted(ints)[:10]} with no names; name them in id "
            f"order with labels=[...] (CLI: --labels NAME0,NAME1,…), or pass a known task ({', '.join(TASKS)})"
        )
    raise ValueError(f"{where}: task {task!r} has no labels")


def check_labels_for_task(task: str, labels: list[str] | None) -> None:
    spec = TASKS.get(task)
    if spec is None or labels is None:
        return
    if [normalise(x) for x in labels] != [normalise(x) for x in spec.labels]:
        raise ValueError(f"task {task!r} has the labels {spec.labels} (in this order); labels={labels} differs "
                         "(leave labels out for a GLUE task, or give the task another name)")


def parse_labels(value: Any) -> list[str] | None:
    """Label names from ``"A,B,C"`` or a sequence (id order); None stays None. ValueError for an empty or
    repeated name."""
    if value is None:
        return None
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    if len(names) < 2:
        raise ValueError(f"labels needs at least two names in id order (e.g. 'no,yes'), got {value!r}")
    if any(not n for n in names):
        raise ValueError(f"labels has an empty name: {value!r}")
    seen = [normalise(n) for n in names]
    if len(set(seen)) != len(seen):
        raise ValueError(f"labels names a label twice: {value!r}")
    return names


def label_spaces(ds) -> dict[str, list[str] | None]:
    """Each task's label names (id order) in a corpus-schema dataset: the ``ClassLabel`` names when the
    dataset holds one task, :data:`TASKS`' for GLUE tasks, else what the rows' (label, label_name)
    pairs say (None for a task whose ids do not run 0..k-1 with one name each)."""
    import datasets

    feature = ds.features.get("label")
    tasks = list(dict.fromkeys(ds["task"])) if "task" in ds.column_names else [None]
    if isinstance(feature, datasets.ClassLabel) and len(tasks) == 1:
        return {tasks[0]: list(feature.names)}
    out: dict[str, list[str] | None] = {}
    rows = None
    for t in tasks:
        if t in TASKS:
            out[t] = list(TASKS[t].labels)
            continue
        if rows is None:
            n = len(ds)
            columns = (ds[c] if c in ds.column_names else [None] * n for c in ("task", "label", "label_name"))
            rows = list(zip(*columns, strict=True))
        pairs: dict[int, set[str]] = {}
        for rt, lab, name in rows:
            if rt == t and lab is not None and lab >= 0 and name is not None:
                pairs.setdefault(int(lab), set()).add(str(name))
        k = max(pairs) + 1 if pairs else 0
        ok = k > 0 and set(pairs) == set(range(k)) and all(len(v) == 1 for v in pairs.values())
        out[t] = [next(iter(pairs[i])) for i in range(k)] if ok else None
    return out


def label_names(ds) -> list[str] | None:
    """The label names (id order) of a corpus holding one task; None when it mixes tasks or they are unknown."""
    spaces = label_spaces(ds)
    return next(iter(spaces.values())) if len(spaces) == 1 else None
