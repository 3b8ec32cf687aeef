"""The GLUE sentence-pair classification tasks (:data:`TASKS`) and task names.

``task`` is a shortcut for the GLUE tasks (it sets their label names and order) and is never required:
any other name is an open task whose label names come from its data (:func:`resolve_task`). Tasks that
are not sentence-pair classification (STS-B, SST-2, CoLA) are refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["TaskSpec", "TASKS", "NOT_PAIR_TASKS", "REGRESSION_HINT", "TASK_NAME", "known_task", "resolve_task"]


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


def _mnli(name: str, title: str, dev: str, aliases: tuple[str, ...], description: str) -> TaskSpec:
    """MNLI with its ``dev`` ("matched" or "mismatched") dev set: the two tasks differ only there."""
    return TaskSpec(
        name=name,
        title=title,
        labels=["entailment", "neutral", "contradiction"],
        glue_config="mnli",
        hub_columns=("premise", "hypothesis"),
        tsv_header=_MNLI_HEADER,
        tsv_columns=("sentence1", "sentence2", "gold_label", "index"),
        tsv_files={"train": "train.tsv", "dev": f"dev_{dev}.tsv"},
        tsv_exact=False,
        hub_dev_split=f"validation_{dev}",
        aliases=aliases,
        description=description,
    )


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
    "mnli": _mnli("mnli", "MNLI", "matched", aliases=("mnli-m", "mnli_matched", "mnli-matched", "multi_nli"),
                  description="Multi-Genre NLI, matched dev set: entailment, neutral or contradiction?"),
    "mnli-mm": _mnli("mnli-mm", "MNLI-mm", "mismatched", aliases=("mnli_mm", "mnli_mismatched", "mnli-mismatched"),
                     description="Multi-Genre NLI, mismatched dev set (other genres than training)"),
})


#: GLUE tasks that are not sentence-pair classification: refused with this reason
NOT_PAIR_TASKS = {
    "stsb": "STS-B is a regression task (similarity scores 0-5), not a classification task",
    "sts-b": "STS-B is a regression task (similarity scores 0-5), not a classification task",
    "sst2": "SST-2 is a single-sentence task, not a sentence-pair task",
    "sst-2": "SST-2 is a single-sentence task, not a sentence-pair task",
    "cola": "CoLA is a single-sentence task, not a sentence-pair task",
}


REGRESSION_HINT = ("Attention Flows indexes classification tasks (its correctness needs label names): bin the "
                    "scores into named classes yourself (e.g. 'low' < 2.5 <= 'high') and load the result as a CSV "
                    "with a label column")


TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def known_task(task: Any) -> str | None:
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
    known = known_task(task)
    if known is not None:
        return known
    key = task.strip().lower()
    if key in NOT_PAIR_TASKS:
        hint = (REGRESSION_HINT if "regression" in NOT_PAIR_TASKS[key]
                else "Attention Flows compares attention over sentence pairs")
        raise ValueError(f"unknown task {task!r}: {NOT_PAIR_TASKS[key]}. {hint}; the GLUE sentence-pair tasks are "
                         f"{', '.join(TASKS)}, and any other name is an open task with labels from its data")
    if not TASK_NAME.match(key):
        raise ValueError(f"task name {task!r} is not usable (letters, digits, '_', '-', '.'; "
                         f"known GLUE tasks: {', '.join(TASKS)})")
    return key
