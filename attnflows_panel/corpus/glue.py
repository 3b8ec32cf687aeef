"""GLUE task folders and files in their original TSV formats (``train.tsv``, ``dev.tsv``, MNLI's
``dev_matched.tsv`` / ``dev_mismatched.tsv``).

A file's header says which task it holds; a header that fits several tasks (RTE and WNLI share one)
is decided by ``task``, the folder's name or the file's name (:func:`pick_task`), and otherwise
refused with the candidates named.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnflows_panel.corpus.schema import GLUE_SPLITS, Rows, glue_split, read_lines
from attnflows_panel.corpus.tasks import NOT_PAIR_TASKS, REGRESSION_HINT, TASKS, known_task
from attnflows_panel.labels import normalise

__all__ = ["tsv_candidates", "pick_task", "read_glue_tsv", "first_line", "is_glue_folder", "load_glue_folder"]


_STSB_HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                "score")


def tsv_candidates(header: Sequence[str]) -> list[str]:
    """The GLUE tasks whose original TSV header this is (several for RTE / WNLI, MNLI / MNLI-mm)."""
    cols = tuple(c.strip() for c in header)
    if cols == _STSB_HEADER:
        raise ValueError(f"this is an STS-B file: {NOT_PAIR_TASKS['stsb']}. {REGRESSION_HINT}")
    out = []
    for key, spec in TASKS.items():
        if spec.tsv_exact:
            if cols == spec.tsv_header:
                out.append(key)
        elif cols[: len(spec.tsv_header)] == spec.tsv_header and all(c in cols for c in spec.tsv_columns if c):
            out.append(key)
    return out


def pick_task(candidates: list[str], task: str | None, folder_name: str, file_name: str, where: Any) -> str:
    """Decide the task of a GLUE TSV from its header's candidates, ``task``, the folder's and file's names."""
    if task is not None:
        if task in candidates:
            return task
        holds = " or ".join(TASKS[c].title for c in candidates)
        raise ValueError(f"{where} holds {holds} data (its header says so), not task {task!r}")
    if len(candidates) == 1:
        return candidates[0]
    by_folder = known_task(folder_name)
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


def read_glue_tsv(path: Path, task: str, split: str, rows: Rows) -> None:
    """One original GLUE TSV file: tab-separated, quote characters are text (no CSV quoting).

    MRPC: ``Quality  #1 ID  #2 ID  #1 String  #2 String`` (Quality 1 = equivalent), UTF-8 BOM.
    RTE / WNLI / QNLI: ``index  sentence1|question  sentence2|sentence  label`` (names or ids).
    QQP: ``id  qid1  qid2  question1  question2  is_duplicate``. MNLI: ``index … sentence1  sentence2 …
    gold_label``.
    """
    lines = read_lines(path)
    if not lines:
        raise ValueError(f"{path} is empty; expected a GLUE TSV file with a header line")
    header = [h.strip() for h in lines[0].split("\t")]
    candidates = tsv_candidates(header)
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


def first_line(path: Path) -> list[str]:
    first = read_lines(path)[:1]
    return first[0].split("\t") if first else []


def is_glue_folder(folder: Path) -> bool:
    return any((folder / n).is_file() for n in _TSV_NAMES)


def load_glue_folder(folder: Path, task: str | None, split: str | None, rows: Rows) -> str:
    requested = glue_split(split) if split is not None else None  # a bad split name fails first
    present_files = [n for n in _TSV_NAMES if (folder / n).is_file()]
    if not present_files:
        raise FileNotFoundError(
            f"{folder} holds no GLUE task files (train.tsv / dev.tsv); expected a folder such as glue/MRPC"
        )
    if normalise(folder.name) in ("sts_b", "stsb"):
        raise ValueError(f"{folder}: {NOT_PAIR_TASKS['stsb']}. {REGRESSION_HINT}")
    known = known_task(task) if task is not None else None
    if task is not None and known is None:
        raise ValueError(f"{folder} is a GLUE task folder; task {task!r} is not a GLUE task (one of "
                         f"{', '.join(TASKS)}), and a GLUE folder's labels are its task's")
    candidates = tsv_candidates(first_line(folder / present_files[0]))
    if not candidates:
        if known is not None:
            candidates = [known]  # the header check in read_glue_tsv names the problem
        else:
            raise ValueError(
                f"cannot tell the task of {folder} (neither its name nor the header of {present_files[0]} is a "
                f"GLUE task's); pass task= one of {', '.join(TASKS)} (CLI: --task)"
            )
    # a folder named after a task whose header fits (MNLI: either MNLI task; the folder name picks matched)
    task = pick_task(candidates, known, folder.name, present_files[0], folder)
    files = {s: folder / TASKS[task].tsv_files[s] for s in GLUE_SPLITS}
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
        read_glue_tsv(files[s], task, s, rows)
    return task
