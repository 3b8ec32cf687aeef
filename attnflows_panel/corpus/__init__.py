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

The package, by source (each public name is re-exported here):

    tasks.py        the GLUE sentence-pair tasks (:data:`TASKS`) and task names
    schema.py       the schema and what every source shares: columns, malformed rows, text files, splits
    label_space.py  label names: GLUE's, found in the data, or given; read back from a loaded corpus
    glue.py         GLUE task folders and files (original TSV formats)
    tables.py       CSV / TSV / JSON-lines files
    hub.py          Hugging Face datasets: the hub, save_to_disk folders, hub-style folders
    demo.py         the bundled demo set
    load.py         :func:`load_corpus`, the entry point
"""

from __future__ import annotations

from attnflows_panel.corpus.demo import demo_path
from attnflows_panel.corpus.label_space import label_names, label_spaces, parse_labels
from attnflows_panel.corpus.load import load_corpus
from attnflows_panel.corpus.schema import (
    COLUMNS,
    HubUnavailableError,
    MalformedRow,
    MalformedRowsWarning,
    iter_pairs,
    parse_columns,
)
from attnflows_panel.corpus.tasks import TASKS, TaskSpec, resolve_task

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
