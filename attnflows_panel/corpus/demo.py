"""The bundled demo set: MRPC, RTE and QNLI pairs shipped with the package (offline)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from attnflows_panel.corpus.schema import Rows
from attnflows_panel.corpus.tables import load_file

__all__ = ["demo_path", "load_demo"]


def demo_path() -> Path:
    """The bundled demo set (JSON lines: id, sentence_a, sentence_b, label_name, task, split)."""
    return Path(str(resources.files("attnflows_panel") / "data" / "demo.jsonl"))


def load_demo(task: str | None, split: str | None, column_map: Mapping[str, str] | None, rows: Rows):
    """Read the demo set into ``rows`` (a JSON-lines file with a task column: ``task`` selects its rows).
    Returns (task, the file's record filter) as :func:`~attnflows_panel.corpus.tables.load_file` does."""
    return load_file(demo_path(), task, split, column_map, rows)
