"""Sentence-pair corpora in one schema: the samples that Attention Flows inspects and indexes.

The paper studies BERT fine-tuned on three GLUE sentence-pair tasks (§4): MRPC (paraphrase), RTE
(entailment) and QNLI (question / answer sentence). Nothing in the models or the signatures depends on
the task, so any sentence-pair classification corpus works: every GLUE pair task by name (MRPC, RTE,
QNLI, WNLI, QQP, MNLI matched and mismatched, :data:`TASKS`), and any other corpus whose label names
come from the data (README.md, "Data formats and tasks"). :func:`load_corpus` reads pairs from any of
these sources into one ``datasets.Dataset`` with the columns

=============  ========  =====================================================================
id             str       unique within the dataset, e.g. ``"mrpc-dev-17"``
sentence_a     str       sentence 1 / premise / question (segment A of ``[CLS] A [SEP] B [SEP]``)
sentence_b     str       sentence 2 / hypothesis / answer sentence (segment B)
label          int       index into the task's label names (GLUE's order for GLUE tasks)
label_name     str       the label's name
task           str       ``"mrpc"``, ``"mnli"``, … or the name of an open task (``"snli"``, ``"pairs"``)
split          str       ``"train"`` or ``"dev"`` (GLUE's ``validation``), or a file's own split name
=============  ========  =====================================================================

When the rows hold one task, ``label`` is a ``datasets.ClassLabel`` carrying the label names in id
order (:func:`label_names`); a file mixing tasks (the bundled demo set) keeps a plain int column and
each task's names (:func:`label_spaces`).

Sources::

    load_corpus("glue/mnli")                      # Hugging Face Hub (nyu-mll/glue); needs internet once
    load_corpus("snli", split="dev")              # any hub dataset: labels from its ClassLabel feature
    load_corpus("paws/labeled_final")             # dataset "paws", config "labeled_final"
    load_corpus("../shared/data/glue/MRPC", split="dev")   # a GLUE task folder (train.tsv / dev.tsv)
    load_corpus("my_dataset_dir")                 # a datasets.save_to_disk folder or a hub-style folder
    load_corpus("pairs.csv", column_map={"sentence_a": "premise", "sentence_b": "hypothesis",
                                         "label": "gold"})         # label names from the label column
    load_corpus("pairs.jsonl", labels=["no", "yes"])   # integer labels, named
    load_corpus("demo", task="mrpc")              # the bundled demo set (offline)

**Tasks.** ``task`` is a shortcut for the GLUE tasks (it sets their label names and order) and is never
required: without it a file's label names come from its label column (names, sorted) or from
``labels=[NAME0, NAME1, …]`` for integer labels, and a hub dataset's from its ``ClassLabel`` feature.
Any other ``task`` name (e.g. ``"snli"``) names an open task. A GLUE TSV header that fits several tasks
(RTE and WNLI share one) is read by the folder's name or ``task``, and otherwise refused with the
candidates named. Regression tasks (STS-B, real-valued labels) are refused: bin the scores into named
classes yourself and load the result as a CSV.

**Malformed rows** (wrong column count, empty sentence, unknown label, bad JSON, duplicate id) are
skipped, never fatal. Each is logged, one :class:`MalformedRowsWarning` summarises them with file and
line, and the returned dataset carries them:

- ``ds.malformed``: a list of :class:`MalformedRow` (``file``, ``line``, ``reason``, ``text``); an
  attribute of the returned object, so it does not survive ``select``/``map``/``filter``;
- ``ds.info.description``: the same report as readable text (this one is kept by most transforms).

A missing file or folder, a task that is not a sentence-pair classification task, a bad argument, or a
source with no valid row for the requested task/split raises a clear error (FileNotFoundError or
ValueError; a hub that cannot be reached raises :class:`HubUnavailableError`, which is both a
ConnectionError and a RuntimeError).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attnflows_panel.labels import normalise

__all__ = [
    "TASKS",
    "TaskSpec",
    "COLUMNS",
    "MalformedRow",
    "MalformedRowsWarning",
    "HubUnavailableError",
    "load_corpus",
    "demo_path",
    "iter_pairs",
    "label_names",
    "label_spaces",
    "resolve_task",
    "parse_columns",
    "parse_labels",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """A GLUE sentence-pair classification task.

    name: the key in :data:`TASKS` (``"mrpc"``, ``"mnli-mm"``, …).
    labels: label names in GLUE's order (the label id is the index; the hub's ``ClassLabel`` order).
    glue_config: the config name on the hub (``nyu-mll/glue``); hub_dev_split: its dev split there.
    hub_columns: the two text columns of the hub dataset.
    tsv_header: the header of the task's original TSV files (the first columns, when not ``tsv_exact``).
    tsv_columns: the header names of (sentence A, sentence B, label, id or None) in those files.
    tsv_files: split → file name in the task's GLUE folder.
    """

    name: str
    title: str
    labels: list[str]
    glue_config: str
    hub_columns: tuple[str, str]
    tsv_header: tuple[str, ...]
    description: str
    tsv_columns: tuple[str, str, str, str | None] = ("sentence1", "sentence2", "label", "index")
    tsv_files: Mapping[str, str] = field(default_factory=lambda: {"train": "train.tsv", "dev": "dev.tsv"})
    tsv_exact: bool = True
    hub_dev_split: str = "validation"
    aliases: tuple[str, ...] = ()


_MNLI_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")

TASKS: Mapping[str, TaskSpec] = MappingProxyType({
    "mrpc": TaskSpec(
        name="mrpc",
        title="MRPC",
        labels=["not_equivalent", "equivalent"],
        glue_config="mrpc",
        hub_columns=("sentence1", "sentence2"),
        tsv_header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        tsv_columns=("#1 String", "#2 String", "Quality", None),
        description="Microsoft Research Paraphrase Corpus: are the two sentences paraphrases?",
    ),
    "rte": TaskSpec(
        name="rte",
        title="RTE",
        labels=["entailment", "not_entailment"],
        glue_config="rte",
        hub_columns=("sentence1", "sentence2"),
        tsv_header=("index", "sentence1", "sentence2", "label"),
        description="Recognizing Textual Entailment: does the premise entail the hypothesis?",
    ),
    "qnli": TaskSpec(
        name="qnli",
        title="QNLI",
        labels=["entailment", "not_entailment"],
        glue_config="qnli",
        hub_columns=("question", "sentence"),
        tsv_header=("index", "question", "sentence", "label"),
        tsv_columns=("question", "sentence", "label", "index"),
        description="Question NLI: does the sentence answer the question?",
    ),
    "wnli": TaskSpec(
        name="wnli",
        title="WNLI",
        labels=["not_entailment", "entailment"],  # GLUE: 1 = entailment (not RTE's order)
        glue_config="wnli",
        hub_columns=("sentence1", "sentence2"),
        tsv_header=("index", "sentence1", "sentence2", "label"),  # the same header as RTE
        description="Winograd NLI: is the sentence with the pronoun replaced entailed by the original?",
    ),
    "qqp": TaskSpec(
        name="qqp",
        title="QQP",
        labels=["not_duplicate", "duplicate"],
        glue_config="qqp",
        hub_columns=("question1", "question2"),
        tsv_header=("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        tsv_columns=("question1", "question2", "is_duplicate", "id"),
        description="Quora Question Pairs: do the two questions ask the same thing?",
    ),
    "mnli": TaskSpec(
        name="mnli",
        title="MNLI",
        labels=["entailment", "neutral", "contradiction"],
        glue_config="mnli",
        hub_columns=("premise", "hypothesis"),
        tsv_header=_MNLI_HEADER,
        tsv_columns=("sentence1", "sentence2", "gold_label", "index"),
        tsv_files={"train": "train.tsv", "dev": "dev_matched.tsv"},
        tsv_exact=False,
        hub_dev_split="validation_matched",
        aliases=("mnli-m", "mnli_matched", "mnli-matched", "multi_nli"),
        description="Multi-Genre NLI, matched dev set: entailment, neutral or contradiction?",
    ),
    "mnli-mm": TaskSpec(
        name="mnli-mm",
        title="MNLI-mm",
        labels=["entailment", "neutral", "contradiction"],
        glue_config="mnli",
        hub_columns=("premise", "hypothesis"),
        tsv_header=_MNLI_HEADER,
        tsv_columns=("sentence1", "sentence2", "gold_label", "index"),
        tsv_files={"train": "train.tsv", "dev": "dev_mismatched.tsv"},
        tsv_exact=False,
        hub_dev_split="validation_mismatched",
        aliases=("mnli_mm", "mnli_mismatched", "mnli-mismatched"),
        description="Multi-Genre NLI, mismatched dev set (other genres than training)",
    ),
})

#: GLUE tasks that are not sentence-pair classification: refused with this reason
_NOT_PAIR_TASKS = {
    "stsb": "STS-B is a regression task (similarity scores 0-5), not a classification task",
    "sts-b": "STS-B is a regression task (similarity scores 0-5), not a classification task",
    "sst2": "SST-2 is a single-sentence task, not a sentence-pair task",
    "sst-2": "SST-2 is a single-sentence task, not a sentence-pair task",
    "cola": "CoLA is a single-sentence task, not a sentence-pair task",
}
_REGRESSION_HINT = ("Attention Flows indexes classification tasks (its correctness needs label names): bin the "
                    "scores into named classes yourself (e.g. 'low' < 2.5 <= 'high') and load the result as a CSV "
                    "with a label column")
_STSB_HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                "score")

#: the output schema, in column order
COLUMNS = ("id", "sentence_a", "sentence_b", "label", "label_name", "task", "split")

# usual column names of CSV/JSONL files and hub datasets, tried in order when column_map does not name one
_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "idx", "index", "pair_id", "pairID"),
    "sentence_a": ("sentence_a", "sentence1", "question", "premise", "question1", "text_a", "#1 String"),
    "sentence_b": ("sentence_b", "sentence2", "hypothesis", "sentence", "question2", "text_b", "#2 String"),
    "label": ("label", "gold_label", "is_duplicate", "Quality"),
    "label_name": ("label_name",),
    "task": ("task",),
    "split": ("split",),
}
_SPLIT_ALIASES = {"dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "train": "train",
                  "training": "train", "dev_matched": "dev", "dev_mismatched": "dev",
                  "validation_matched": "dev", "validation_mismatched": "dev"}
_GLUE_SPLITS = ("train", "dev")
_HUB_GLUE = re.compile(r"^(?:nyu-mll/)?glue/(?P<task>[A-Za-z0-9_-]+)$", re.IGNORECASE)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+){0,2}(?::[\w.-]+)?$")
_FILE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_WARN_SHOW = 10


class MalformedRowsWarning(UserWarning):
    """Some rows of a corpus file were skipped (see ``ds.malformed``)."""


class HubUnavailableError(ConnectionError, RuntimeError):
    """A hub source could not be loaded from the Hugging Face Hub (offline, unreachable, no such dataset)."""


@dataclass(frozen=True)
class MalformedRow:
    """A skipped row: ``file`` and 1-based ``line`` where it starts, why, and (the start of) its text."""

    file: str
    line: int
    reason: str
    text: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


# --------------------------------------------------------------------------------------------------
# tasks and labels
# --------------------------------------------------------------------------------------------------


def _known_task(task: Any) -> str | None:
    """The :data:`TASKS` key of a GLUE task name or alias (case-insensitive), else None."""
    key = str(task).strip().lower().replace(" ", "")
    if key in TASKS:
        return key
    for k, spec in TASKS.items():
        if key in spec.aliases or key == spec.title.lower():
            return k
    return None


def resolve_task(task: Any) -> str:
    """A task name as used in the ``task`` column: a :data:`TASKS` key for GLUE tasks (aliases such as
    ``"mnli_mismatched"`` accepted), else the name itself, lower case, for an open task.

    Raises ValueError for a task that is not a sentence-pair classification task (STS-B, SST-2, CoLA)
    or a name that cannot be a task name.
    """
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"task must be a non-empty name such as 'mrpc' or 'snli', got {task!r}")
    known = _known_task(task)
    if known is not None:
        return known
    key = task.strip().lower()
    if key in _NOT_PAIR_TASKS:
        hint = _REGRESSION_HINT if "regression" in _NOT_PAIR_TASKS[key] else "Attention Flows compares attention over sentence pairs"
        raise ValueError(f"unknown task {task!r}: {_NOT_PAIR_TASKS[key]}. {hint}; the GLUE sentence-pair tasks are "
                         f"{', '.join(TASKS)}, and any other name is an open task with labels from its data")
    if not _TASK_NAME.match(key):
        raise ValueError(f"task name {task!r} is not usable (letters, digits, '_', '-', '.'; known GLUE tasks: "
                         f"{', '.join(TASKS)})")
    return key


# kept for callers of the old helper: the TASKS key of a known task, ValueError otherwise
def _task_key(task: Any) -> str:
    key = _known_task(task)
    if key is None:
        resolve_task(task)  # a clear error for STS-B & co
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return key


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


def parse_columns(value: Any) -> dict[str, str] | None:
    """``"A,B[,LABEL]"`` (the CLI's ``--columns``) → ``{"sentence_a": A, "sentence_b": B[, "label": LABEL]}``."""
    if value is None:
        return None
    parts = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    if len(parts) not in (2, 3) or any(not p for p in parts):
        raise ValueError(f"columns must be 'SENTENCE_A,SENTENCE_B' or 'SENTENCE_A,SENTENCE_B,LABEL', got {value!r}")
    return dict(zip(("sentence_a", "sentence_b", "label"), parts))


class _LabelSpace:
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


def _discover_labels(task: str, label_values: list, name_values: list, where: str) -> _LabelSpace:
    """An open task's label space from its rows: names (sorted), or ids paired with names."""
    ints, names, pairs = set(), {}, {}
    for lab, nm in zip(label_values, name_values):
        if isinstance(lab, bool):  # true/false is no label: such rows are reported as malformed
            continue
        i = _int_like(lab) if lab not in (None, "") else None
        if lab not in (None, "") and i is None:
            if _real_valued(lab):
                raise ValueError(
                    f"{where}: the labels of task {task!r} are real-valued scores (e.g. {lab!r}): a regression "
                    f"task such as STS-B. {_REGRESSION_HINT}"
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
            raise ValueError(f"{where}: the label ids of task {task!r} ({sorted(pairs)}) are not 0..{k - 1} with one name "
                             f"each; name them with labels=[...] (CLI: --labels NAME0,NAME1,…)")
        return _LabelSpace(task, [names[next(iter(pairs[i]))] for i in range(k)], ints=True)
    if names:
        ordered = [names[k] for k in sorted(names)]
        if len(ordered) < 2:
            log.warning("%s: task %r has a single label name %r in the data", where, task, ordered[0])
        return _LabelSpace(task, ordered, ints=False)
    if ints:
        raise ValueError(
            f"{where}: the labels of task {task!r} are numbers {sorted(ints)[:10]} with no names; name them in id "
            f"order with labels=[...] (CLI: --labels NAME0,NAME1,…), or pass a known task ({', '.join(TASKS)})"
        )
    raise ValueError(f"{where}: task {task!r} has no labels")


def _check_labels_for_task(task: str, labels: list[str] | None) -> None:
    spec = TASKS.get(task)
    if spec is not None and labels is not None and [normalise(x) for x in labels] != [normalise(x) for x in spec.labels]:
        raise ValueError(f"task {task!r} has the labels {spec.labels} (in this order); labels={labels} differs "
                         "(leave labels out for a GLUE task, or give the task another name)")


def _clip(text: str, n: int = 120) -> str:
    text = text.replace("\t", " ").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


class _Rows:
    """Collects valid rows and malformed ones, stops at ``limit``, keeps ids unique."""

    def __init__(self, limit: int | None, labels: list[str] | None = None):
        self.limit = limit
        self.cols: dict[str, list] = {c: [] for c in COLUMNS}
        self.ids: set[str] = set()
        self.malformed: list[MalformedRow] = []
        self.labels = labels  # the user's label names (open tasks)
        self.spaces: dict[str, _LabelSpace] = {}
        self.uncovered: dict[str, int] = {}  # labels of the data that the user's label names lack: rows

    def __len__(self) -> int:
        return len(self.cols["id"])

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self) >= self.limit

    def space(self, task: str) -> _LabelSpace:
        """The label space of ``task``: GLUE's names, the user's ``labels``, or one found earlier."""
        sp = self.spaces.get(task)
        if sp is None:
            if task in TASKS:
                sp = _LabelSpace(task, TASKS[task].labels)
            elif self.labels is not None:
                sp = _LabelSpace(task, self.labels)
            else:
                raise ValueError(
                    f"the label names of task {task!r} are unknown; give them with labels=[...] "
                    "(CLI: --labels NAME0,NAME1,…)"
                )
            self.spaces[task] = sp
        return sp

    def bad(self, file: Any, line: int, reason: str, text: str = "") -> None:
        row = MalformedRow(str(file), int(line), reason, _clip(text))
        self.malformed.append(row)
        log.warning("skipped malformed row %s", row)

    def add(self, file: Any, line: int, *, id: str, a: Any, b: Any, label: Any, task: str, split: str,
            label_name: Any = None, raw: str = "") -> bool:
        """Validate and append one row; a problem is recorded as malformed. Returns True if added."""
        if not isinstance(a, str) or not a.strip():
            self.bad(file, line, "empty sentence_a" if isinstance(a, str) or a is None
                     else f"sentence_a is not text ({type(a).__name__})", raw)
            return False
        if not isinstance(b, str) or not b.strip():
            self.bad(file, line, "empty sentence_b" if isinstance(b, str) or b is None
                     else f"sentence_b is not text ({type(b).__name__})", raw)
            return False
        has_label, has_name = label not in (None, ""), label_name not in (None, "")
        if not has_label and not has_name:
            self.bad(file, line, "missing label", raw)
            return False
        space = self.space(task)
        try:
            lid, lname = space.lookup(label if has_label else label_name)
            if has_label and has_name and space.lookup(label_name)[0] != lid:
                self.bad(file, line, f"label {label!r} and label_name {label_name!r} disagree", raw)
                return False
        except ValueError as exc:
            if self.labels is not None and task not in TASKS:  # labels=[...] misses a label: one error at the end
                key = str(label if has_label else label_name).strip()
                self.uncovered[key] = self.uncovered.get(key, 0) + 1
                return False
            self.bad(file, line, str(exc), raw)
            return False
        if id in self.ids:
            self.bad(file, line, f"duplicate id {id!r}", raw)
            return False
        self.ids.add(id)
        for col, value in zip(COLUMNS, (id, a.strip(), b.strip(), lid, lname, task, split)):
            self.cols[col].append(value)
        return True


def _read_text(path: Path) -> str:
    """A text file's contents, strictly UTF-8 (BOM dropped). A binary file is refused in one short
    line; text that is not UTF-8 is refused naming the lines that hold the bad bytes (it used to be
    altered silently, with replacement characters)."""
    data = path.read_bytes()
    head = data[:8192]
    if b"\x00" in head or (head and sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 100):
        raise ValueError(f"{path} is a binary file, not text; expected a UTF-8 .csv, .tsv or .jsonl file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    bad = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(number)
    shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    raise ValueError(
        f"{path} is not UTF-8 text: line{'s' if len(bad) > 1 else ''} {shown} hold{'' if len(bad) > 1 else 's'} "
        "bytes that are not UTF-8 (Latin-1 or Windows-1252, perhaps); save the file as UTF-8, e.g. "
        f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`"
    )


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (BOM dropped); split on ``\\n`` only, so a stray ``\\r`` inside a
    sentence does not break a row."""
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _split_key(split: Any) -> str:
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"split must be a non-empty string such as 'train' or 'dev', got {split!r}")
    key = split.strip().lower()
    return _SPLIT_ALIASES.get(key, key)


def _glue_split(split: str | None) -> list[str]:
    if split is None:
        return list(_GLUE_SPLITS)
    key = _split_key(split)
    if key not in _GLUE_SPLITS:
        hint = " (GLUE test splits have no labels)" if key == "test" else ""
        raise ValueError(f"unknown split {split!r}{hint}; expected 'train' or 'dev' (alias 'validation')")
    return [key]


def _default_task_name(path: Path) -> str:
    """An open task's name from a file: its stem, or its folder's name for ``train.csv``/``dev.csv``."""
    stem = path.stem.lower()
    name = path.parent.name.lower() if stem in _SPLIT_ALIASES or stem in ("test", "data", "all") else stem
    name = re.sub(r"[^a-z0-9_.-]+", "-", name).strip("-.") or "pairs"
    return name if _TASK_NAME.match(name) else "pairs"


# --------------------------------------------------------------------------------------------------
# GLUE task folders (original TSV formats)
# --------------------------------------------------------------------------------------------------


def _tsv_candidates(header: Sequence[str]) -> list[str]:
    """The GLUE tasks whose original TSV header this is (several for RTE / WNLI, MNLI / MNLI-mm)."""
    cols = tuple(c.strip() for c in header)
    if cols == _STSB_HEADER:
        raise ValueError(f"this is an STS-B file: {_NOT_PAIR_TASKS['stsb']}. {_REGRESSION_HINT}")
    out = []
    for key, spec in TASKS.items():
        if spec.tsv_exact:
            if cols == spec.tsv_header:
                out.append(key)
        elif cols[: len(spec.tsv_header)] == spec.tsv_header and all(c in cols for c in spec.tsv_columns if c):
            out.append(key)
    return out


def _tsv_format(header: list[str]) -> str | None:
    """The one task whose original TSV header this is, or None (unknown or ambiguous)."""
    found = _tsv_candidates(header)
    return found[0] if len(found) == 1 else None


def _pick_task(candidates: list[str], task: str | None, folder_name: str, file_name: str, where: Any) -> str:
    """Decide the task of a GLUE TSV from its header's candidates, ``task``, the folder's and file's names."""
    if task is not None:
        if task in candidates:
            return task
        holds = " or ".join(TASKS[c].title for c in candidates)
        raise ValueError(f"{where} holds {holds} data (its header says so), not task {task!r}")
    if len(candidates) == 1:
        return candidates[0]
    by_folder = _known_task(folder_name)
    if by_folder in candidates:
        return by_folder
    by_file = [c for c in candidates if file_name in TASKS[c].tsv_files.values()]
    if len(by_file) == 1:
        return by_file[0]
    names = ", ".join(f"{TASKS[c].title} (task={c!r})" for c in candidates)
    raise ValueError(
        f"the header of {where} fits several GLUE tasks: {names}; they differ in their labels, so pass the task "
        f"(CLI: --task) or name the folder after it (e.g. {TASKS[candidates[0]].title}/)"
    )


def _read_glue_tsv(path: Path, task: str, split: str, rows: _Rows) -> None:
    """One original GLUE TSV file: tab-separated, quote characters are text (no CSV quoting).

    MRPC: ``Quality  #1 ID  #2 ID  #1 String  #2 String`` (Quality 1 = equivalent), UTF-8 BOM.
    RTE / WNLI / QNLI: ``index  sentence1|question  sentence2|sentence  label`` (names or ids).
    QQP: ``id  qid1  qid2  question1  question2  is_duplicate``. MNLI: ``index … sentence1  sentence2 …
    gold_label``.
    """
    lines = _read_lines(path)
    if not lines:
        raise ValueError(f"{path} is empty; expected a GLUE TSV file with a header line")
    header = [h.strip() for h in lines[0].split("\t")]
    candidates = _tsv_candidates(header)
    if not candidates:
        raise ValueError(
            f"{path}:1: unrecognised header {header!r}; expected the original GLUE header of "
            + " or ".join(f"{s.title} ({chr(9).join(s.tsv_header)!r})" for s in TASKS.values() if s.tsv_exact)
            + " or MNLI"
        )
    if task not in candidates:
        holds = " or ".join(TASKS[c].title for c in candidates)
        raise ValueError(f"{path} holds {holds} data (its header says so), not task {task!r}")
    spec = TASKS[task]
    a_col, b_col, l_col, id_col = (header.index(c) if c else None for c in spec.tsv_columns)
    width = len(header)
    for number, line in enumerate(lines[1:]):
        if rows.full:
            return
        lineno = number + 2
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != width:
            rows.bad(path, lineno, f"expected {width} tab-separated columns, found {len(cols)}", line)
            continue
        index = cols[id_col].strip() if id_col is not None else ""
        rid = f"{task}-{split}-{index if index.isdigit() else number}"
        rows.add(path, lineno, id=rid, a=cols[a_col], b=cols[b_col], label=cols[l_col], task=task, split=split,
                 raw=line)


_TSV_NAMES = ("train.tsv", "dev.tsv", "dev_matched.tsv", "dev_mismatched.tsv")


def _first_line(path: Path) -> list[str]:
    first = _read_lines(path)[:1]
    return first[0].split("\t") if first else []


def _is_glue_folder(folder: Path) -> bool:
    return any((folder / n).is_file() for n in _TSV_NAMES)


def _load_glue_folder(folder: Path, task: str | None, split: str | None, rows: _Rows) -> str:
    requested = _glue_split(split) if split is not None else None  # a bad split name fails first
    present_files = [n for n in _TSV_NAMES if (folder / n).is_file()]
    if not present_files:
        raise FileNotFoundError(
            f"{folder} holds no GLUE task files (train.tsv / dev.tsv); expected a folder such as glue/MRPC"
        )
    if normalise(folder.name) in ("sts_b", "stsb"):
        raise ValueError(f"{folder}: {_NOT_PAIR_TASKS['stsb']}. {_REGRESSION_HINT}")
    known = _known_task(task) if task is not None else None
    if task is not None and known is None:
        raise ValueError(f"{folder} is a GLUE task folder; task {task!r} is not a GLUE task (one of "
                         f"{', '.join(TASKS)}), and a GLUE folder's labels are its task's")
    candidates = _tsv_candidates(_first_line(folder / present_files[0]))
    if not candidates:
        if known is not None:
            candidates = [known]  # the header check in _read_glue_tsv names the problem
        else:
            raise ValueError(
                f"cannot tell the task of {folder} (neither its name nor the header of {present_files[0]} is a "
                f"GLUE task's); pass task= one of {', '.join(TASKS)} (CLI: --task)"
            )
    # a folder named after a task whose header fits (MNLI: either MNLI task; the folder name picks matched)
    task = _pick_task(candidates, known, folder.name, present_files[0], folder)
    files = {s: folder / TASKS[task].tsv_files[s] for s in _GLUE_SPLITS}
    present = [s for s, p in files.items() if p.is_file()]
    if not present:
        raise FileNotFoundError(f"{folder} has none of the {TASKS[task].title} files "
                                f"({', '.join(TASKS[task].tsv_files.values())})")
    wanted = requested if requested is not None else present
    for s in wanted:
        if not files[s].is_file():
            raise FileNotFoundError(
                f"{folder} has no {s} split ({files[s].name} missing; it has: "
                f"{', '.join(files[p].name for p in present)})"
            )
    for s in wanted:
        _read_glue_tsv(files[s], task, s, rows)
    return task


# --------------------------------------------------------------------------------------------------
# CSV / JSONL files
# --------------------------------------------------------------------------------------------------


def _resolve_columns(available: list[str], column_map: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """Our field -> the file's column, from column_map first, then the usual names."""
    mapping: dict[str, str] = {}
    for field_name, col in (column_map or {}).items():
        if col not in available:
            raise ValueError(
                f"column_map maps {field_name!r} to {col!r}, but {where} has no such column "
                f"(columns: {', '.join(available)})"
            )
        mapping[field_name] = col
    taken = set(mapping.values())
    for field_name, names in _ALIASES.items():
        if field_name in mapping:
            continue
        for name in names:
            if name in available and name not in taken:
                mapping[field_name] = name
                taken.add(name)
                break
    for needed in ("sentence_a", "sentence_b"):
        if needed not in mapping:
            raise ValueError(
                f"{where} has no column for {needed} (columns: {', '.join(available)}); "
                f"name one with column_map={{{needed!r}: '<column>'}} (CLI: --columns A,B[,LABEL])"
            )
    if "label" not in mapping and "label_name" not in mapping:
        raise ValueError(
            f"{where} has no label column (columns: {', '.join(available)}); "
            "name one with column_map={'label': '<column>'} (CLI: --columns A,B,LABEL)"
        )
    return mapping


def _check_column_map(column_map: Any) -> dict[str, str] | None:
    if column_map is None:
        return None
    if not isinstance(column_map, Mapping):
        raise TypeError(f"column_map must be a dict such as {{'sentence_a': 'premise'}}, got {type(column_map).__name__}")
    unknown = [k for k in column_map if k not in COLUMNS]
    if unknown:
        raise ValueError(f"column_map has unknown keys {unknown}; allowed keys: {', '.join(COLUMNS)}")
    bad = {k: v for k, v in column_map.items() if not isinstance(v, str) or not v}
    if bad:
        raise ValueError(f"column_map values must be column names (strings), got {bad}")
    return dict(column_map)


class _RecordFilter:
    """Turns one record (a dict of the file's columns) into a row, applying the task/split filters.

    The records of a file are first collected (:meth:`collect`), so that an open task's label names come
    from all of its rows, whatever ``split`` and ``limit`` keep; then :meth:`replay` adds them in order.
    """

    def __init__(self, path: Path, mapping: dict[str, str], task: str | None, split: str | None, rows: _Rows,
                 *, per_record: bool = False):
        self.path, self.mapping, self.task, self.split, self.rows = path, mapping, task, split, rows
        # JSON objects need not all have the same keys: optional fields are looked up in each record
        self.per_record = per_record
        self.used = set(mapping.values())
        stem = _SPLIT_ALIASES.get(path.stem.lower())
        self.default_split = stem or "train"  # e.g. dev.csv -> "dev"
        # without a task column or task=..., the file is one open task named after it
        self.default_task = task if task is not None else _default_task_name(path)
        # fields every record must have (label or, without a label column, label_name)
        self.required = ("sentence_a", "sentence_b", "label" if "label" in mapping else "label_name")
        self.seen_tasks: set[str] = set()
        self.seen_splits: set[str] = set()
        self.count = 0
        self.events: list[tuple] = []

    def get(self, record: Mapping[str, Any], field_name: str) -> Any:
        col = self.mapping.get(field_name)
        if col is None and self.per_record:
            col = next((c for c in _ALIASES[field_name] if c in record and c not in self.used), None)
        return None if col is None else record.get(col)

    # ---- pass 1: collect
    def bad(self, lineno: int, reason: str, raw: str) -> None:
        self.events.append(("bad", lineno, reason, raw))

    def collect(self, record: Mapping[str, Any], lineno: int, raw: str) -> None:
        self.events.append(("rec", record, lineno, raw))

    def _row_task(self, record) -> tuple[str | None, str | None]:
        """(task of the record, or None; why it is unusable, or None)."""
        row_task = self.get(record, "task")
        if row_task not in (None, ""):
            try:
                return resolve_task(str(row_task)), None
            except ValueError as exc:
                return None, str(exc)
        return self.default_task, None

    def label_spaces(self) -> None:
        """Find the label names of every open task in the file (from all its records)."""
        values: dict[str, tuple[list, list]] = {}
        for ev in self.events:
            if ev[0] != "rec":
                continue
            t, _ = self._row_task(ev[1])
            if t is None or t in TASKS or t in self.rows.spaces or (self.task is not None and t != self.task):
                continue
            labs, names = values.setdefault(t, ([], []))
            labs.append(self.get(ev[1], "label"))
            names.append(self.get(ev[1], "label_name"))
        for t, (labs, names) in values.items():
            if self.rows.labels is not None:
                self.rows.space(t)
            else:
                self.rows.spaces[t] = _discover_labels(t, labs, names, str(self.path))

    # ---- pass 2: replay in file order
    def replay(self) -> None:
        self.label_spaces()
        for ev in self.events:
            if self.rows.full:
                break
            if ev[0] == "bad":
                self.rows.bad(self.path, ev[1], ev[2], ev[3])
            else:
                self(ev[1], ev[2], ev[3])

    def __call__(self, record: Mapping[str, Any], lineno: int, raw: str) -> None:
        number = self.count
        self.count += 1
        row_task, why = self._row_task(record)
        if row_task is None:
            self.rows.bad(self.path, lineno, why or "no task", raw)
            return
        self.seen_tasks.add(row_task)
        if self.task is not None and row_task != self.task:
            return
        row_split = self.get(record, "split")
        row_split = _split_key(row_split) if isinstance(row_split, str) and row_split.strip() else self.default_split
        self.seen_splits.add(row_split)
        if self.split is not None and row_split != self.split:
            return
        rid = self.get(record, "id")
        rid = f"{row_task}-{row_split}-{number}" if rid in (None, "") else str(rid).strip()
        self.rows.add(
            self.path, lineno, id=rid, a=self.get(record, "sentence_a"), b=self.get(record, "sentence_b"),
            label=self.get(record, "label"), label_name=self.get(record, "label_name"),
            task=row_task, split=row_split, raw=raw,
        )


def _read_csv(path: Path, delimiter: str, column_map, task, split, rows: _Rows) -> _RecordFilter:
    text = _read_text(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path} is empty; expected a header line with column names") from None
    except csv.Error as exc:
        raise ValueError(f"{path}:1: cannot read the header: {exc}") from exc
    header = [h.strip() for h in header]
    mapping = _resolve_columns(header, column_map, str(path))
    handle = _RecordFilter(path, mapping, task, split, rows)
    previous_end = reader.line_num
    lines = text.split("\n")
    while True:
        start = previous_end + 1
        try:
            cols = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            handle.bad(start, f"unreadable CSV row: {exc}", lines[start - 1] if start <= len(lines) else "")
            previous_end = reader.line_num
            continue
        previous_end = reader.line_num
        raw = delimiter.join(cols)
        if not cols or all(not c.strip() for c in cols):
            continue
        if len(cols) != len(header):
            end = reader.line_num
            span = f" (the row runs from line {start} to {end}: an unbalanced quote?)" if end > start else ""
            handle.bad(start, f"expected {len(header)} columns, found {len(cols)}{span}", raw)
            continue
        handle.collect(dict(zip(header, cols)), start, raw)
    handle.replay()
    return handle


def _read_jsonl(path: Path, column_map, task, split, rows: _Rows) -> _RecordFilter | None:
    handle: _RecordFilter | None = None
    early: list[tuple] = []  # malformed lines before the first object
    for number, line in enumerate(_read_lines(path)):
        lineno = number + 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            ev = ("bad", lineno, f"bad JSON: {exc.msg} (column {exc.colno})", line)
            (handle.events if handle is not None else early).append(ev)
            continue
        if not isinstance(record, dict):
            ev = ("bad", lineno, f"expected a JSON object, found {type(record).__name__}", line)
            (handle.events if handle is not None else early).append(ev)
            continue
        if handle is None:  # the first object decides the columns
            where = f"{path} (first object, line {lineno})"
            mapping = _resolve_columns(list(record), column_map, where)
            # fixed: the texts, the label and whatever column_map names; the rest is looked up per object
            keep = {"sentence_a", "sentence_b", "label" if "label" in mapping else "label_name", *(column_map or {})}
            fixed = {f: c for f, c in mapping.items() if f in keep}
            handle = _RecordFilter(path, fixed, task, split, rows, per_record=True)
            handle.events.extend(early)
        missing = [handle.mapping[f] for f in handle.required if handle.mapping[f] not in record]
        if missing:
            handle.bad(lineno, f"missing field(s) {', '.join(map(repr, missing))}", line)
            continue
        handle.collect(record, lineno, line)
    if handle is None:
        for ev in early:
            rows.bad(path, ev[1], ev[2], ev[3])
        return None
    handle.replay()
    return handle


def _load_file(path: Path, task, split, column_map, rows: _Rows) -> tuple[str | None, _RecordFilter | None]:
    kind = _FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"unsupported file type {path.suffix!r} ({path}); expected .csv, .tsv or .jsonl")
    split_key = _split_key(split) if split is not None else None
    if kind == "tsv" and column_map is None:
        header = _first_line(path)
        candidates = _tsv_candidates(header) if header else []
        if candidates:  # a single original GLUE file, e.g. MRPC/dev.tsv
            if task is not None and _known_task(task) is None:
                raise ValueError(f"{path} is a GLUE TSV file; task {task!r} is not a GLUE task (one of {', '.join(TASKS)})")
            task = _pick_task(candidates, _known_task(task) if task else None, path.parent.name, path.name, path)
            file_split = _SPLIT_ALIASES.get(path.stem.lower(), path.stem.lower())
            if split_key is not None and split_key != file_split:
                raise ValueError(f"{path} is the {file_split!r} split; split={split!r} was asked for")
            _read_glue_tsv(path, task, file_split, rows)
            return task, None
    if kind == "jsonl":
        handle = _read_jsonl(path, column_map, task, split_key, rows)
    else:
        handle = _read_csv(path, "," if kind == "csv" else "\t", column_map, task, split_key, rows)
    return task, handle


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets: the hub, save_to_disk folders, hub-style local folders
# --------------------------------------------------------------------------------------------------


def _hf_label_space(d, task: str, label_col: str, rows: _Rows, where: str) -> None:
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
        rows.spaces.setdefault(task, _LabelSpace(task, names))
        return
    dtype = getattr(feature, "dtype", None)
    if dtype in ("float16", "float32", "float64"):
        raise ValueError(f"{where}: the label column {label_col!r} holds real values ({dtype}): a regression "
                         f"task such as STS-B. {_REGRESSION_HINT}")
    if rows.labels is not None:
        rows.space(task)
        return
    if dtype == "string":
        values = list(d[label_col])
        rows.spaces.setdefault(task, _discover_labels(task, values, [None] * len(values), where))
        return
    raise ValueError(
        f"{where}: the label column {label_col!r} is {dtype or type(feature).__name__} without names (no ClassLabel); "
        "name the labels in id order with labels=[...] (CLI: --labels NAME0,NAME1,…)"
    )


def _rows_from_hub_dataset(d, task: str, split: str, rows: _Rows, source: str,
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
    mapping = _resolve_columns(available, cmap, source)
    label_col = mapping.get("label") or mapping["label_name"]
    _hf_label_space(d, task, label_col, rows, source)
    id_col = mapping.get("id")
    idxs = d[id_col] if id_col else range(len(d))
    for i, (idx, a, b, lab) in enumerate(zip(idxs, d[mapping["sentence_a"]], d[mapping["sentence_b"]], d[label_col])):
        if rows.full:
            return
        if isinstance(lab, int) and lab < 0:
            rows.bad(source, i + 1, f"no gold label ({lab})", f"{a}\t{b}")
            continue
        rows.add(source, i + 1, id=f"{task}-{split}-{idx}", a=a, b=b, label=lab, task=task, split=split,
                 raw=f"{a}\t{b}")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
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
        key = _known_task(name)
        if key is None:
            resolve_task(name)  # STS-B / SST-2 / CoLA: a clear refusal
            raise ValueError(f"unknown task {name!r}; the GLUE sentence-pair tasks are {', '.join(TASKS)}")
        if task is not None and _known_task(task) != key:
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
    if any(normalise(c[2].split("-")[0]) in ("stsb", "sts_b") or normalise(parts[-1]) in ("stsb", "sts_b") for c in cands):
        resolve_task("stsb")  # a clear refusal, before any download
    return [(n, c, _task_from_name(t)) for n, c, t in cands], task, None


def _hf_split_names(split: str, dev_first: str | None) -> list[str]:
    if split == "train":
        return ["train"]
    if split == "dev":
        order = [dev_first] if dev_first else []
        return order + [s for s in ("validation", "validation_matched", "dev", "valid", "val") if s not in order]
    return [split]


def _load_hub(src: str, task: str | None, split: str | None, rows: _Rows,
              column_map: Mapping[str, str] | None) -> str:
    import datasets

    candidates, task, dev_first = _hub_target(src, task)
    wanted = _glue_split(split) if split is not None else ["train", "dev"]
    offline_hint = (
        "Use a local folder (a GLUE task folder, a datasets.save_to_disk folder) or a CSV/JSONL file, or the "
        "bundled set (load_corpus('demo'))."
    )
    reason = _hub_unreachable()
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
        _rows_from_hub_dataset(d, task, s, rows, where, column_map)
    return task


def _is_hf_disk_folder(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _is_hf_data_folder(folder: Path) -> bool:
    """A hub-style local folder (a dataset repository's files): data files ``datasets`` can read."""
    exts = ("*.parquet", "*.arrow", "*.csv", "*.jsonl", "*.json")
    return (folder / "README.md").is_file() or any(any(folder.glob(e)) or any(folder.glob(f"*/{e}")) for e in exts[:2])


def _load_hf_folder(folder: Path, task: str | None, split: str | None, rows: _Rows,
                    column_map: Mapping[str, str] | None) -> str:
    """A ``datasets`` folder: ``save_to_disk`` output (Dataset or DatasetDict) or a hub-style folder."""
    import datasets

    try:
        if _is_hf_disk_folder(folder):
            obj = datasets.load_from_disk(str(folder))
        else:
            obj = datasets.load_dataset(str(folder))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a folder it cannot read
        raise ValueError(
            f"{folder} is neither a GLUE task folder (train.tsv / dev.tsv) nor a folder the datasets library "
            f"can read (save_to_disk output, or data files with a README card): {exc}"
        ) from exc
    if isinstance(obj, datasets.Dataset):
        parts = {"train" if split is None else _split_key(split): obj}
    else:
        parts = {}
        for name in obj:
            key = _SPLIT_ALIASES.get(name.lower(), name.lower())
            parts.setdefault(key, obj[name])
    if task is None:
        task = resolve_task(re.sub(r"[^a-z0-9_.-]+", "-", folder.name.lower()).strip("-.") or "pairs")
    if split is not None:
        key = _split_key(split)
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
        _rows_from_hub_dataset(d, task, s, rows, f"{folder}[{s}]", column_map)
    return task


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------


def demo_path() -> Path:
    """The bundled demo set (JSON lines: id, sentence_a, sentence_b, label_name, task, split)."""
    return Path(str(resources.files("attnflows_panel") / "data" / "demo.jsonl"))


def _describe(source: str, rows: _Rows) -> str:
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
    return (Path(src).suffix.lower() in _FILE_SUFFIXES or src.startswith((".", "~", "/"))
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
    import datasets

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    column_map = _check_column_map(column_map)
    labels = parse_labels(labels)
    if task is not None:
        task = resolve_task(task)
        _check_labels_for_task(task, labels)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a str or path, got {type(source).__name__}")
    src = os.fspath(source)
    rows = _Rows(limit, labels)
    handle = None

    if src.strip().lower() == "demo":
        label = "the bundled demo set"
        task, handle = _load_file(demo_path(), task, split, column_map, rows)
    elif Path(src).expanduser().exists():
        path = Path(src).expanduser()
        label = str(path)
        if path.is_dir():
            if _is_glue_folder(path) and not _is_hf_disk_folder(path):
                task = _load_glue_folder(path, task, split, rows)
            elif _is_hf_disk_folder(path) or _is_hf_data_folder(path):
                task = _load_hf_folder(path, task, split, rows, column_map)
            else:
                _load_glue_folder(path, task, split, rows)  # raises: no GLUE files
        else:
            task, handle = _load_file(path, task, split, column_map, rows)
    elif _looks_like_path(src.strip()):
        raise FileNotFoundError(
            f"no such file or folder: {src!r} (hub datasets are named like 'glue/mrpc', 'snli' or 'owner/name')"
        )
    elif _HUB_NAME.match(src.strip()):
        label = f"the Hugging Face Hub ({src.strip()})"
        task = _load_hub(src.strip(), task, split, rows, column_map)
    else:
        raise ValueError(
            f"unknown corpus source {src!r}; expected 'demo', a hub dataset ('glue/mrpc', 'snli', 'owner/name'), "
            "a GLUE task folder (holding train.tsv/dev.tsv), a datasets folder, or a .csv/.jsonl file"
        )

    if rows.uncovered:
        missing = ", ".join(f"{k!r} ({n} rows)" for k, n in sorted(rows.uncovered.items()))
        raise ValueError(f"labels={labels} do not cover the labels of {label}: missing {missing}; give every label "
                         "name in id order (CLI: --labels NAME0,NAME1,…)")
    if len(rows) == 0:
        what = []
        if task:
            what.append(f"task {task!r}")
        if split is not None:
            what.append(f"split {_split_key(split)!r}")
        detail = ""
        if handle is not None:
            detail = (f" (the file has task(s) {sorted(handle.seen_tasks) or '-'} and split(s) "
                      f"{sorted(handle.seen_splits) or '-'})")
        if rows.malformed:
            detail += "; malformed rows: " + "; ".join(str(m) for m in rows.malformed[:3])
        raise ValueError(f"{label} has no valid rows" + (f" for {' and '.join(what)}" if what else "") + detail)

    if rows.malformed:
        shown = "\n".join(f"  {m}" for m in rows.malformed[:_WARN_SHOW])
        more = len(rows.malformed) - _WARN_SHOW
        warnings.warn(
            f"{len(rows.malformed)} malformed row(s) skipped while loading {label}:\n{shown}"
            + (f"\n  ... and {more} more (see ds.malformed)" if more > 0 else ""),
            MalformedRowsWarning,
            stacklevel=2,
        )

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
            rows = list(zip(*(ds[c] if c in ds.column_names else [None] * n for c in ("task", "label", "label_name"))))
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


def iter_pairs(ds) -> Iterator[tuple[str, str]]:
    """``(sentence_a, sentence_b)`` of every row, in order (what :meth:`ModelPair.run_batch` takes)."""
    return zip(ds["sentence_a"], ds["sentence_b"])
