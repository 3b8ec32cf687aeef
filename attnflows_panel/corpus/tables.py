"""Tables: CSV, TSV and JSON-lines files of sentence pairs, with their columns found or mapped.

Columns are found by their usual names or by ``column_map`` (:func:`~attnflows_panel.corpus.schema.resolve_columns`);
a file without a ``task`` column is one open task named after the file, and its label names come from
all its rows, whatever ``split`` and ``limit`` keep. A single original GLUE TSV file is read as GLUE
(:mod:`attnflows_panel.corpus.glue`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnflows_panel.corpus.glue import first_line, pick_task, read_glue_tsv, tsv_candidates
from attnflows_panel.corpus.label_space import discover_labels
from attnflows_panel.corpus.schema import (
    COLUMN_ALIASES,
    FILE_SUFFIXES,
    SPLIT_ALIASES,
    Rows,
    read_lines,
    read_text,
    resolve_columns,
    split_key,
)
from attnflows_panel.corpus.tasks import TASK_NAME, TASKS, known_task, resolve_task

__all__ = ["load_file"]


def _default_task_name(path: Path) -> str:
    """An open task's name from a file: its stem, or its folder's name for ``train.csv``/``dev.csv``."""
    stem = path.stem.lower()
    name = path.parent.name.lower() if stem in SPLIT_ALIASES or stem in ("test", "data", "all") else stem
    name = re.sub(r"[^a-z0-9_.-]+", "-", name).strip("-.") or "pairs"
    return name if TASK_NAME.match(name) else "pairs"


class _RecordFilter:
    """Turns one record (a dict of the file's columns) into a row, applying the task/split filters.

    The records of a file are first collected (:meth:`collect`), so that an open task's label names come
    from all of its rows, whatever ``split`` and ``limit`` keep; then :meth:`replay` adds them in order.
    """

    def __init__(self, path: Path, mapping: dict[str, str], task: str | None, split: str | None, rows: Rows,
                 *, per_record: bool = False):
        self.path, self.mapping, self.task, self.split, self.rows = path, mapping, task, split, rows
        # JSON objects need not all have the same keys: optional fields are looked up in each record
        self.per_record = per_record
        self.used = set(mapping.values())
        stem = SPLIT_ALIASES.get(path.stem.lower())
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
            col = next((c for c in COLUMN_ALIASES[field_name] if c in record and c not in self.used), None)
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
                self.rows.spaces[t] = discover_labels(t, labs, names, str(self.path))

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
        row_split = split_key(row_split) if isinstance(row_split, str) and row_split.strip() else self.default_split
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


def _read_csv(path: Path, delimiter: str, column_map, task, split, rows: Rows) -> _RecordFilter:
    text = read_text(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path} is empty; expected a header line with column names") from None
    except csv.Error as exc:
        raise ValueError(f"{path}:1: cannot read the header: {exc}") from exc
    header = [h.strip() for h in header]
    mapping = resolve_columns(header, column_map, str(path))
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
        handle.collect(dict(zip(header, cols, strict=True)), start, raw)
    handle.replay()
    return handle


def _read_jsonl(path: Path, column_map, task, split, rows: Rows) -> _RecordFilter | None:
    handle: _RecordFilter | None = None
    early: list[tuple] = []  # malformed lines before the first object
    for number, line in enumerate(read_lines(path)):
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
            mapping = resolve_columns(list(record), column_map, where)
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


def load_file(path: Path, task, split, column_map, rows: Rows) -> tuple[str | None, _RecordFilter | None]:
    """Read a .csv, .tsv or .jsonl file into ``rows``: (its task, its record filter; None for an original
    GLUE TSV file, read as GLUE)."""
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"unsupported file type {path.suffix!r} ({path}); expected .csv, .tsv or .jsonl")
    wanted_split = split_key(split) if split is not None else None
    if kind == "tsv" and column_map is None:
        header = first_line(path)
        candidates = tsv_candidates(header) if header else []
        if candidates:  # a single original GLUE file, e.g. MRPC/dev.tsv
            if task is not None and known_task(task) is None:
                raise ValueError(f"{path} is a GLUE TSV file; task {task!r} is not a GLUE task "
                                 f"(one of {', '.join(TASKS)})")
            task = pick_task(candidates, known_task(task) if task else None, path.parent.name, path.name, path)
            file_split = SPLIT_ALIASES.get(path.stem.lower(), path.stem.lower())
            if wanted_split is not None and wanted_split != file_split:
                raise ValueError(f"{path} is the {file_split!r} split; split={split!r} was asked for")
            read_glue_tsv(path, task, file_split, rows)
            return task, None
    if kind == "jsonl":
        handle = _read_jsonl(path, column_map, task, wanted_split, rows)
    else:
        handle = _read_csv(path, "," if kind == "csv" else "\t", column_map, task, wanted_split, rows)
    return task, handle
