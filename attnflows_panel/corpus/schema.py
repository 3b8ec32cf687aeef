"""The corpus schema and what every source shares: columns, malformed rows, text files, splits.

Every source is read into one :class:`Rows` collector (valid rows in :data:`COLUMNS`, malformed ones as
:class:`MalformedRow`, ids unique, stopping at ``limit``), which :func:`attnflows_panel.corpus.load_corpus`
turns into a ``datasets.Dataset``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnflows_panel.corpus.label_space import LabelSpace
from attnflows_panel.corpus.tasks import TASKS

__all__ = [
    "COLUMNS",
    "COLUMN_ALIASES",
    "SPLIT_ALIASES",
    "GLUE_SPLITS",
    "FILE_SUFFIXES",
    "MalformedRowsWarning",
    "HubUnavailableError",
    "MalformedRow",
    "Rows",
    "parse_columns",
    "read_text",
    "read_lines",
    "split_key",
    "glue_split",
    "resolve_columns",
    "check_column_map",
    "iter_pairs",
]

log = logging.getLogger("attnflows_panel.corpus")


#: the output schema, in column order
COLUMNS = ("id", "sentence_a", "sentence_b", "label", "label_name", "task", "split")


# usual column names of CSV/JSONL files and hub datasets, tried in order when column_map does not name one
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "idx", "index", "pair_id", "pairID"),
    "sentence_a": ("sentence_a", "sentence1", "question", "premise", "question1", "text_a", "#1 String"),
    "sentence_b": ("sentence_b", "sentence2", "hypothesis", "sentence", "question2", "text_b", "#2 String"),
    "label": ("label", "gold_label", "is_duplicate", "Quality"),
    "label_name": ("label_name",),
    "task": ("task",),
    "split": ("split",),
}


SPLIT_ALIASES = {"dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "train": "train",
                  "training": "train", "dev_matched": "dev", "dev_mismatched": "dev",
                  "validation_matched": "dev", "validation_mismatched": "dev"}


GLUE_SPLITS = ("train", "dev")


FILE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


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


def parse_columns(value: Any) -> dict[str, str] | None:
    """``"A,B[,LABEL]"`` (the CLI's ``--columns``) → ``{"sentence_a": A, "sentence_b": B[, "label": LABEL]}``."""
    if value is None:
        return None
    parts = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    if len(parts) not in (2, 3) or any(not p for p in parts):
        raise ValueError(f"columns must be 'SENTENCE_A,SENTENCE_B' or 'SENTENCE_A,SENTENCE_B,LABEL', got {value!r}")
    return dict(zip(("sentence_a", "sentence_b", "label"), parts, strict=False))  # 2 or 3 parts


def _clip(text: str, n: int = 120) -> str:
    text = text.replace("\t", " ").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


class Rows:
    """Collects valid rows and malformed ones, stops at ``limit``, keeps ids unique."""

    def __init__(self, limit: int | None, labels: list[str] | None = None):
        self.limit = limit
        self.cols: dict[str, list] = {c: [] for c in COLUMNS}
        self.ids: set[str] = set()
        self.malformed: list[MalformedRow] = []
        self.labels = labels  # the user's label names (open tasks)
        self.spaces: dict[str, LabelSpace] = {}
        self.uncovered: dict[str, int] = {}  # labels of the data that the user's label names lack: rows

    def __len__(self) -> int:
        return len(self.cols["id"])

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self) >= self.limit

    def space(self, task: str) -> LabelSpace:
        """The label space of ``task``: GLUE's names, the user's ``labels``, or one found earlier."""
        sp = self.spaces.get(task)
        if sp is None:
            if task in TASKS:
                sp = LabelSpace(task, TASKS[task].labels)
            elif self.labels is not None:
                sp = LabelSpace(task, self.labels)
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
        for col, value in zip(COLUMNS, (id, a.strip(), b.strip(), lid, lname, task, split), strict=True):
            self.cols[col].append(value)
        return True


def read_text(path: Path) -> str:
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


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (BOM dropped); split on ``\\n`` only, so a stray ``\\r`` inside a
    sentence does not break a row."""
    text = read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def split_key(split: Any) -> str:
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"split must be a non-empty string such as 'train' or 'dev', got {split!r}")
    key = split.strip().lower()
    return SPLIT_ALIASES.get(key, key)


def glue_split(split: str | None) -> list[str]:
    if split is None:
        return list(GLUE_SPLITS)
    key = split_key(split)
    if key not in GLUE_SPLITS:
        hint = " (GLUE test splits have no labels)" if key == "test" else ""
        raise ValueError(f"unknown split {split!r}{hint}; expected 'train' or 'dev' (alias 'validation')")
    return [key]


def resolve_columns(available: list[str], column_map: Mapping[str, str] | None, where: str) -> dict[str, str]:
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
    for field_name, names in COLUMN_ALIASES.items():
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


def check_column_map(column_map: Any) -> dict[str, str] | None:
    if column_map is None:
        return None
    if not isinstance(column_map, Mapping):
        raise TypeError("column_map must be a dict such as {'sentence_a': 'premise'}, got "
                        f"{type(column_map).__name__}")
    unknown = [k for k in column_map if k not in COLUMNS]
    if unknown:
        raise ValueError(f"column_map has unknown keys {unknown}; allowed keys: {', '.join(COLUMNS)}")
    bad = {k: v for k, v in column_map.items() if not isinstance(v, str) or not v}
    if bad:
        raise ValueError(f"column_map values must be column names (strings), got {bad}")
    return dict(column_map)


def iter_pairs(ds) -> Iterator[tuple[str, str]]:
    """``(sentence_a, sentence_b)`` of every row, in order (what :meth:`ModelPair.run_batch` takes)."""
    return zip(ds["sentence_a"], ds["sentence_b"], strict=True)
