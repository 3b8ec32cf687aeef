"""Sentence-pair corpora in one schema: the samples that Attention Flows inspects and indexes.

The paper studies BERT fine-tuned on three GLUE sentence-pair tasks (§4): MRPC (paraphrase), RTE
(entailment) and QNLI (question / answer sentence). :func:`load_corpus` reads such pairs from any of
four sources into one ``datasets.Dataset`` with the columns

=============  ========  =====================================================================
id             str       unique within the dataset, e.g. ``"mrpc-dev-17"``
sentence_a     str       sentence 1 / premise / question (segment A of ``[CLS] A [SEP] B [SEP]``)
sentence_b     str       sentence 2 / hypothesis / answer sentence (segment B)
label          int       index into ``TASKS[task].labels`` (GLUE's order)
label_name     str       ``TASKS[task].labels[label]``
task           str       ``"mrpc"``, ``"rte"`` or ``"qnli"``
split          str       ``"train"`` or ``"dev"`` (GLUE's ``validation``), or a file's own split name
=============  ========  =====================================================================

Sources::

    load_corpus("glue/mrpc")                      # Hugging Face Hub (nyu-mll/glue); needs internet once
    load_corpus("../shared/data/glue/MRPC", split="dev")   # a GLUE task folder (train.tsv / dev.tsv)
    load_corpus("pairs.csv", task="rte", column_map={"sentence_a": "premise",
                                                     "sentence_b": "hypothesis", "label": "gold"})
    load_corpus("pairs.jsonl", task="qnli")       # columns found by their usual names
    load_corpus("demo", task="mrpc")              # the bundled demo set (offline)

**Malformed rows** (wrong column count, empty sentence, unknown label, bad JSON, duplicate id) are
skipped, never fatal. Each is logged, one :class:`MalformedRowsWarning` summarises them with file and
line, and the returned dataset carries them:

- ``ds.malformed``: a list of :class:`MalformedRow` (``file``, ``line``, ``reason``, ``text``); an
  attribute of the returned object, so it does not survive ``select``/``map``/``filter``;
- ``ds.info.description``: the same report as readable text (this one is kept by most transforms).

A missing file or folder, an unknown task, a bad argument, or a source with no valid row for the
requested task/split raises a clear error (FileNotFoundError or ValueError; a hub that cannot be
reached raises :class:`HubUnavailableError`, which is both a ConnectionError and a RuntimeError).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

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
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """A GLUE sentence-pair task.

    name: ``"mrpc"`` / ``"rte"`` / ``"qnli"``.
    labels: label names in GLUE's order (the label id is the index).
    glue_config: the config name on the hub (``nyu-mll/glue``).
    hub_columns: the two text columns of the hub dataset.
    tsv_header: the header of the task's original TSV files.
    """

    name: str
    title: str
    labels: list[str]
    glue_config: str
    hub_columns: tuple[str, str]
    tsv_header: tuple[str, ...]
    description: str


TASKS: Mapping[str, TaskSpec] = MappingProxyType({
    "mrpc": TaskSpec(
        name="mrpc",
        title="MRPC",
        labels=["not_equivalent", "equivalent"],
        glue_config="mrpc",
        hub_columns=("sentence1", "sentence2"),
        tsv_header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
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
        description="Question NLI: does the sentence answer the question?",
    ),
})

#: the output schema, in column order
COLUMNS = ("id", "sentence_a", "sentence_b", "label", "label_name", "task", "split")

# usual column names of CSV/JSONL files, tried in order when column_map does not name one
_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "idx", "index", "pair_id"),
    "sentence_a": ("sentence_a", "sentence1", "question", "premise", "text_a", "#1 String"),
    "sentence_b": ("sentence_b", "sentence2", "hypothesis", "sentence", "text_b", "#2 String"),
    "label": ("label", "gold_label", "Quality"),
    "label_name": ("label_name",),
    "task": ("task",),
    "split": ("split",),
}
_SPLIT_ALIASES = {"dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "train": "train",
                  "training": "train"}
_GLUE_SPLITS = ("train", "dev")
_HUB = re.compile(r"^(?:nyu-mll/)?glue/(?P<task>[A-Za-z0-9_-]+)$", re.IGNORECASE)
_FILE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_WARN_SHOW = 10


class MalformedRowsWarning(UserWarning):
    """Some rows of a corpus file were skipped (see ``ds.malformed``)."""


class HubUnavailableError(ConnectionError, RuntimeError):
    """A ``glue/<task>`` source could not be loaded from the Hugging Face Hub (offline, unreachable)."""


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
# small helpers
# --------------------------------------------------------------------------------------------------


def _task_key(task: Any) -> str:
    key = str(task).strip().lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(sorted(TASKS))}")
    return key


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


def _label(task: str, value: Any) -> tuple[int, str]:
    """(label id, label name) of a label given as an int, an int string, or a name; ValueError if unknown."""
    labels = TASKS[task].labels
    if isinstance(value, bool):
        raise ValueError(f"unknown label {value!r} for {task} (expected one of {labels} or 0..{len(labels) - 1})")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if 0 <= value < len(labels):
            return value, labels[value]
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            i = int(text)
            if 0 <= i < len(labels):
                return i, labels[i]
        lowered = text.lower().replace("-", "_").replace(" ", "_")
        for i, name in enumerate(labels):
            if lowered == name:
                return i, name
    raise ValueError(f"unknown label {value!r} for {task} (expected one of {labels} or 0..{len(labels) - 1})")


def _clip(text: str, n: int = 120) -> str:
    text = text.replace("\t", " ").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


class _Rows:
    """Collects valid rows and malformed ones, stops at ``limit``, keeps ids unique."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.cols: dict[str, list] = {c: [] for c in COLUMNS}
        self.ids: set[str] = set()
        self.malformed: list[MalformedRow] = []

    def __len__(self) -> int:
        return len(self.cols["id"])

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self) >= self.limit

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
        try:
            lid, lname = _label(task, label if has_label else label_name)
            if has_label and has_name and _label(task, label_name)[0] != lid:
                self.bad(file, line, f"label {label!r} and label_name {label_name!r} disagree", raw)
                return False
        except ValueError as exc:
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


# --------------------------------------------------------------------------------------------------
# GLUE task folders (original TSV formats)
# --------------------------------------------------------------------------------------------------


def _tsv_format(header: list[str]) -> str | None:
    """The task whose original TSV header this is (MRPC / RTE / QNLI), or None."""
    cols = tuple(c.strip() for c in header)
    for key, spec in TASKS.items():
        if cols == spec.tsv_header:
            return key
    return None


def _read_glue_tsv(path: Path, task: str, split: str, rows: _Rows) -> None:
    """One original GLUE TSV file: tab-separated, quote characters are text (no CSV quoting).

    MRPC: ``Quality  #1 ID  #2 ID  #1 String  #2 String`` (Quality 1 = equivalent), UTF-8 BOM.
    RTE / QNLI: ``index  sentence1|question  sentence2|sentence  label`` (label names).
    """
    lines = _read_lines(path)
    if not lines:
        raise ValueError(f"{path} is empty; expected a GLUE TSV file with a header line")
    header = lines[0].split("\t")
    fmt = _tsv_format(header)
    if fmt is None:
        raise ValueError(
            f"{path}:1: unrecognised header {header!r}; expected the original GLUE header of "
            + " or ".join(f"{s.title} ({chr(9).join(s.tsv_header)!r})" for s in TASKS.values())
        )
    if fmt != task:
        raise ValueError(f"{path} holds {TASKS[fmt].title} data (its header says so), not task {task!r}")
    width = len(TASKS[task].tsv_header)
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
        if task == "mrpc":
            label, a, b = cols[0], cols[3], cols[4]
            rid = f"{task}-{split}-{number}"
        else:
            index, a, b, label = cols
            rid = f"{task}-{split}-{index.strip() if index.strip().isdigit() else number}"
        rows.add(path, lineno, id=rid, a=a, b=b, label=label, task=task, split=split, raw=line)


def _load_glue_folder(folder: Path, task: str | None, split: str | None, rows: _Rows) -> str:
    requested = _glue_split(split) if split is not None else None  # a bad split name fails first
    files = {s: folder / f"{s}.tsv" for s in _GLUE_SPLITS}
    present = [s for s, p in files.items() if p.is_file()]
    if not present:
        raise FileNotFoundError(
            f"{folder} holds no GLUE task files (train.tsv / dev.tsv); expected a folder such as glue/MRPC"
        )
    if task is None:
        named = folder.name.strip().lower()
        if named in TASKS:
            task = named
        else:  # the folder was renamed: the header says which task it is
            first = _read_lines(files[present[0]])[:1]
            task = _tsv_format(first[0].split("\t")) if first else None
            if task is None:
                raise ValueError(
                    f"cannot tell the task of {folder} (neither its name nor the header of "
                    f"{files[present[0]].name} is MRPC/RTE/QNLI); pass task='mrpc'|'rte'|'qnli'"
                )
    else:
        task = _task_key(task)
    wanted = requested if requested is not None else present
    for s in wanted:
        if not files[s].is_file():
            raise FileNotFoundError(
                f"{folder} has no {s} split ({s}.tsv missing; it has: {', '.join(p + '.tsv' for p in present)})"
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
                f"name one with column_map={{{needed!r}: '<column>'}}"
            )
    if "label" not in mapping and "label_name" not in mapping:
        raise ValueError(
            f"{where} has no label column (columns: {', '.join(available)}); "
            "name one with column_map={'label': '<column>'}"
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
    """Turns one record (a dict of the file's columns) into a row, applying the task/split filters."""

    def __init__(self, path: Path, mapping: dict[str, str], task: str | None, split: str | None, rows: _Rows,
                 *, per_record: bool = False):
        self.path, self.mapping, self.task, self.split, self.rows = path, mapping, task, split, rows
        # JSON objects need not all have the same keys: optional fields are looked up in each record
        self.per_record = per_record
        self.used = set(mapping.values())
        if task is None and "task" not in mapping and not per_record:
            raise ValueError(
                f"which task is {path.name}? pass task='mrpc'|'rte'|'qnli' or give the file a 'task' column"
            )
        stem = _SPLIT_ALIASES.get(path.stem.lower())
        self.default_split = stem or "train"  # e.g. dev.csv -> "dev"
        # fields every record must have (label or, without a label column, label_name)
        self.required = ("sentence_a", "sentence_b", "label" if "label" in mapping else "label_name")
        self.seen_tasks: set[str] = set()
        self.seen_splits: set[str] = set()
        self.count = 0

    def get(self, record: Mapping[str, Any], field_name: str) -> Any:
        col = self.mapping.get(field_name)
        if col is None and self.per_record:
            col = next((c for c in _ALIASES[field_name] if c in record and c not in self.used), None)
        return None if col is None else record.get(col)

    def __call__(self, record: Mapping[str, Any], lineno: int, raw: str) -> None:
        number = self.count
        self.count += 1
        row_task = self.get(record, "task")
        if row_task not in (None, ""):
            try:
                row_task = _task_key(row_task)
            except ValueError as exc:
                self.rows.bad(self.path, lineno, str(exc), raw)
                return
            self.seen_tasks.add(row_task)
            if self.task is not None and row_task != self.task:
                return
        elif self.task is None:
            self.rows.bad(self.path, lineno, "no task (empty task column; pass task=...)", raw)
            return
        else:
            row_task = self.task
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
    while not rows.full:
        start = previous_end + 1
        try:
            cols = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.bad(path, start, f"unreadable CSV row: {exc}", lines[start - 1] if start <= len(lines) else "")
            previous_end = reader.line_num
            continue
        previous_end = reader.line_num
        raw = delimiter.join(cols)
        if not cols or all(not c.strip() for c in cols):
            continue
        if len(cols) != len(header):
            end = reader.line_num
            span = f" (the row runs from line {start} to {end}: an unbalanced quote?)" if end > start else ""
            rows.bad(path, start, f"expected {len(header)} columns, found {len(cols)}{span}", raw)
            continue
        handle(dict(zip(header, cols)), start, raw)
    return handle


def _read_jsonl(path: Path, column_map, task, split, rows: _Rows) -> _RecordFilter | None:
    handle: _RecordFilter | None = None
    for number, line in enumerate(_read_lines(path)):
        if rows.full:
            break
        lineno = number + 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.bad(path, lineno, f"bad JSON: {exc.msg} (column {exc.colno})", line)
            continue
        if not isinstance(record, dict):
            rows.bad(path, lineno, f"expected a JSON object, found {type(record).__name__}", line)
            continue
        if handle is None:  # the first object decides the columns
            where = f"{path} (first object, line {lineno})"
            mapping = _resolve_columns(list(record), column_map, where)
            if task is None and "task" not in mapping:
                raise ValueError(
                    f"which task is {path.name}? pass task='mrpc'|'rte'|'qnli' or give its objects a 'task' field"
                )
            # fixed: the texts, the label and whatever column_map names; the rest is looked up per object
            keep = {"sentence_a", "sentence_b", "label" if "label" in mapping else "label_name", *(column_map or {})}
            fixed = {f: c for f, c in mapping.items() if f in keep}
            handle = _RecordFilter(path, fixed, task, split, rows, per_record=True)
        missing = [handle.mapping[f] for f in handle.required if handle.mapping[f] not in record]
        if missing:
            rows.bad(path, lineno, f"missing field(s) {', '.join(map(repr, missing))}", line)
            continue
        handle(record, lineno, line)
    return handle


def _load_file(path: Path, task, split, column_map, rows: _Rows) -> tuple[str | None, _RecordFilter | None]:
    kind = _FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"unsupported file type {path.suffix!r} ({path}); expected .csv, .tsv or .jsonl")
    task = _task_key(task) if task is not None else None
    split_key = _split_key(split) if split is not None else None
    if kind == "tsv" and column_map is None:
        first = _read_lines(path)[:1]
        fmt = _tsv_format(first[0].split("\t")) if first else None
        if fmt is not None:  # a single original GLUE file, e.g. MRPC/dev.tsv
            task = task or fmt
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
# the hub
# --------------------------------------------------------------------------------------------------


def _rows_from_hub_dataset(d, task: str, split: str, rows: _Rows, source: str) -> None:
    """Convert one split of ``nyu-mll/glue/<task>`` (columns idx, label and the two texts)."""
    spec = TASKS[task]
    a_col, b_col = spec.hub_columns
    feature = d.features.get("label")
    names = list(getattr(feature, "names", None) or spec.labels)
    idxs = d["idx"] if "idx" in d.column_names else range(len(d))
    for i, (idx, a, b, lab) in enumerate(zip(idxs, d[a_col], d[b_col], d["label"])):
        if rows.full:
            return
        name = names[lab] if isinstance(lab, int) and 0 <= lab < len(names) else lab
        rows.add(source, i + 1, id=f"{task}-{split}-{idx}", a=a, b=b, label=name, task=task, split=split,
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


def _load_hub(task: str, split: str | None, rows: _Rows) -> None:
    import datasets

    spec = TASKS[task]
    wanted = _glue_split(split)
    offline_hint = (
        f"Use a local GLUE task folder (load_corpus('path/to/{spec.title}')) or the bundled set "
        f"(load_corpus('demo', task={task!r}))."
    )
    reason = _hub_unreachable()
    if reason is not None:
        raise HubUnavailableError(
            f"cannot load glue/{task} from the Hugging Face Hub: {reason}. {offline_hint} If it was "
            "downloaded before, set HF_DATASETS_OFFLINE=1 to load it from the cache."
        )
    for s in wanted:
        if rows.full:
            break
        hf_split = "validation" if s == "dev" else s
        if rows.limit is not None:
            hf_split += f"[:{rows.limit - len(rows)}]"
        try:
            d = datasets.load_dataset("nyu-mll/glue", spec.glue_config, split=hf_split)
        except Exception as exc:  # noqa: BLE001 - offline, unreachable, rate-limited...: one clear error
            raise HubUnavailableError(
                f"could not load glue/{task} ({hf_split}) from the Hugging Face Hub: {exc}. {offline_hint}"
            ) from exc
        _rows_from_hub_dataset(d, task, s, rows, f"nyu-mll/glue/{spec.glue_config}/{hf_split}")


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
    if malformed:
        text += f"\n{len(malformed)} malformed row(s) skipped:\n" + "\n".join(f"  {m}" for m in malformed)
    return text


def load_corpus(source: str | os.PathLike, task: str | None = None, split: str | None = None, *,
                limit: int | None = None, column_map: Mapping[str, str] | None = None):
    """Load sentence pairs into one schema (see the module docstring) as a ``datasets.Dataset``.

    source:
        ``"glue/mrpc"``, ``"glue/rte"``, ``"glue/qnli"`` (Hugging Face Hub, ``nyu-mll/glue``);
        a local GLUE task folder holding ``train.tsv`` / ``dev.tsv`` in the original formats;
        a ``.csv`` / ``.tsv`` / ``.jsonl`` file; or ``"demo"`` (the bundled set, offline).
    task: ``"mrpc"`` | ``"rte"`` | ``"qnli"``. Hub names and GLUE folders imply it (the folder's name or
        its header); for CSV/JSONL give it or a ``task`` column; for ``"demo"`` and files with a task
        column it selects that task's rows (None = all).
    split: ``"train"`` or ``"dev"`` (``"validation"`` is an alias); None = every split (train first).
        For CSV/JSONL the rows' ``split`` column decides, else the file name (``dev.csv`` → dev), else
        ``"train"``.
    limit: keep only the first ``limit`` valid rows (reading stops there).
    column_map: for CSV/JSONL, our field → the file's column, e.g. ``{"sentence_a": "premise",
        "sentence_b": "hypothesis", "label": "gold"}``. Fields: id, sentence_a, sentence_b, label,
        label_name, task, split. Unmapped fields are found by their usual names (sentence1/sentence2,
        question/sentence, premise/hypothesis, label/label_name, id/idx). Labels may be ids or names.

    Returns a ``datasets.Dataset`` with columns :data:`COLUMNS`, plus ``ds.malformed`` (list of
    :class:`MalformedRow`) and a readable report in ``ds.info.description``.
    """
    import datasets

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    column_map = _check_column_map(column_map)
    if task is not None:
        task = _task_key(task)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a str or path, got {type(source).__name__}")
    src = os.fspath(source)
    rows = _Rows(limit)
    handle = None

    if src.strip().lower() == "demo":
        label = "the bundled demo set"
        task, handle = _load_file(demo_path(), task, split, column_map, rows)
    elif Path(src).expanduser().exists():
        path = Path(src).expanduser()
        label = str(path)
        if path.is_dir():
            task = _load_glue_folder(path, task, split, rows)
        else:
            task, handle = _load_file(path, task, split, column_map, rows)
    elif (m := _HUB.match(src.strip())) is not None:
        hub_task = _task_key(m.group("task"))
        if task is not None and task != hub_task:
            raise ValueError(f"source {src!r} is the {hub_task} task, but task={task!r} was given")
        task = hub_task
        label = f"nyu-mll/glue ({task})"
        _load_hub(task, split, rows)
    elif Path(src).suffix.lower() in _FILE_SUFFIXES or os.sep in src or src.startswith((".", "~")):
        raise FileNotFoundError(
            f"no such file or folder: {src!r} (the hub sources are 'glue/mrpc', 'glue/rte' and 'glue/qnli')"
        )
    else:
        raise ValueError(
            f"unknown corpus source {src!r}; expected 'demo', 'glue/mrpc', 'glue/rte', 'glue/qnli', a GLUE "
            "task folder (holding train.tsv/dev.tsv), or a .csv/.jsonl file"
        )

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

    features = datasets.Features({
        "id": datasets.Value("string"),
        "sentence_a": datasets.Value("string"),
        "sentence_b": datasets.Value("string"),
        "label": datasets.Value("int64"),
        "label_name": datasets.Value("string"),
        "task": datasets.Value("string"),
        "split": datasets.Value("string"),
    })
    info = datasets.DatasetInfo(description=_describe(label, rows),
                                features=features)
    ds = datasets.Dataset.from_dict(rows.cols, features=features, info=info)
    ds.malformed = list(rows.malformed)
    return ds


def iter_pairs(ds) -> Iterator[tuple[str, str]]:
    """``(sentence_a, sentence_b)`` of every row, in order (what :meth:`ModelPair.run_batch` takes)."""
    return zip(ds["sentence_a"], ds["sentence_b"])
