"""Preparation of the offline default: fine-tune the packaged MiniLM and index the demo corpus, once.

Called only by the CLI (``attnflows demo``, ``attnflows demo --prepare-only``) and the app's start-up;
everything else reads the configuration in :mod:`attnflows_panel.defaults` (cache folder, paths, τ
rule), which imports nothing from here.

:func:`prepare` builds what is missing, once, with status lines (logger ``attnflows_panel.prepare``;
on stderr as ``[attnflows prepare] ...`` unless logging is configured otherwise). The fine-tuning data
source is, in order of preference:

1. the ``data`` argument (``--data``);
2. the GLUE folder named by ``$ATTNFLOWS_GLUE_DIR`` (its ``MRPC`` subfolder);
3. ``glue/mrpc`` from the Hugging Face hub, when the hub is reachable (:func:`hub_reachable` decides in
   about two seconds; ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` mean "not reachable");
4. the bundled ``demo`` set, which always works.

The source used is logged, returned, and recorded in the model's ``metrics.json`` and in the manifest
``prepared.json`` (:func:`attnflows_panel.defaults.manifest_path`). The manifest is written only after
a step has finished, and each step is checked against it (files present, weights hash unchanged, index
built from these weights), so a half-finished or interrupted preparation is redone rather than trusted.
A rebuild (``force=True``, ``attnflows demo --rebuild``) keeps the old model and its manifest entry
until the new model is complete: the fine-tune writes into a staging folder that replaces the old one
only at the end, so a crash midway leaves the old, still valid, model in use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from attnflows_panel import defaults as config
from attnflows_panel._io import atomic_write_json, file_lock, remove_leftovers, status
from attnflows_panel.defaults import DEFAULT_TASK, DEMO_SETTINGS, HUB_HOST, HUB_TIMEOUT_S, MANIFEST_VERSION

__all__ = [
    "hub_reachable",
    "remove_cache_leftovers",
    "choose_data_source",
    "is_prepared",
    "prepare",
    "prepare_model",
    "prepare_index",
]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


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
    status(log, progress, message)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest() -> dict[str, Any]:
    path = config.manifest_path()
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION}
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return {"version": MANIFEST_VERSION}
    return manifest


def _write_manifest(manifest: dict[str, Any]) -> None:
    path = config.manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)


def _lock():
    """Serialise concurrent preparations of one cache folder (an inter-process file lock)."""
    return file_lock(config.cache_dir() / ".prepare.lock")


def _relative(path: Path) -> str:
    """A path as ``prepared.json`` records it: relative to the cache folder (which may be copied or moved
    as a whole, to another ``ATTNFLOWS_CACHE_DIR``); a path outside it stays absolute."""
    try:
        return Path(path).relative_to(config.cache_dir()).as_posix()
    except ValueError:
        return str(path)


def _absolute(recorded: Any) -> Path | None:
    """A path read from ``prepared.json`` (relative to the cache folder, or absolute as older caches wrote)."""
    if not recorded:
        return None
    path = Path(str(recorded))
    return path if path.is_absolute() else config.cache_dir() / path


def _same_place(recorded: Any, expected: Path) -> bool:
    """Whether a recorded path names ``expected``: relative to the cache folder, or (an older cache,
    perhaps copied from elsewhere) an absolute path that ends as ``expected`` does inside the cache."""
    path = _absolute(recorded)
    if path is None:
        return False
    if path == expected:
        return True
    tail = expected.relative_to(config.cache_dir()).parts
    return Path(str(recorded)).is_absolute() and path.parts[-len(tail):] == tail


def remove_cache_leftovers(task: str = DEFAULT_TASK) -> list[Path]:
    """Remove the staging folders and temporary files of killed runs from the cache folder (the cache
    itself, its models and index folders, the demo index), so that a killed ``demo --rebuild`` does not
    leave hundreds of megabytes behind for every later plain ``demo``. Call it under :func:`_lock`."""
    root = config.cache_dir()
    removed: list[Path] = []
    for folder in (root, root / "models", root / "index", config.index_path("demo"), config.finetuned_path(task)):
        removed += remove_leftovers(folder)
    return removed


_MODEL_FILES = ("config.json", "metrics.json")
_WEIGHT_FILES = ("model.safetensors",)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def _model_complete(entry: dict[str, Any] | None, task: str) -> tuple[bool, str]:
    """Whether the manifest's model entry describes a finished fine-tune that is still on disk."""
    if not entry:
        return False, "not built yet"
    path = config.finetuned_path(task)
    if not _same_place(entry.get("path"), path) or entry.get("task") != task:
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
        _say(progress, f"fine-tuned model: reusing {config.finetuned_path(task)} (built from "
                       f"{entry['data_source']['source']!r})")
        return {**entry, "path": str(config.finetuned_path(task)), "status": "reused"}
    if ok and not force:
        why = f"--data {str(data)!r} differs from the source it was built from ({entry['data_source']['source']!r})"
    elif force:
        why = "forced"

    choice = choose_data_source(data, task)
    _say(progress, f"fine-tuned model: building ({why})")
    if choice["skipped"]:
        _say(progress, f"data source: passed over: {choice['skipped']}")
    _say(progress, f"data source: {choice['source']!r} ({choice['reason']})")

    # the old model (if any) stays registered until the new one is complete: finetune() writes into a
    # staging folder that replaces the old folder only at its end, so a crash leaves the old model intact

    out = config.finetuned_path(task)
    run_kw = dict(max_steps=max_steps, train_limit=train_limit, epochs=epochs)

    def run(source_choice: dict[str, str]) -> dict[str, Any]:
        is_demo = source_choice["source"].strip().lower() == "demo"
        kw = {**(DEMO_SETTINGS if is_demo else {}), **{k: v for k, v in run_kw.items() if v is not None}}
        return finetune(
            config.pretrained_path(),
            source_choice["source"],
            task,
            out,
            overwrite=True,
            progress=progress,
            metadata={"data_source": source_choice, "built_by": "attnflows_panel.prepare.prepare"},
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

    return _record_model(task, key, out, choice, metrics, t0, progress)


def _record_model(task: str, key: str, out: Path, choice: dict[str, Any], metrics: dict[str, Any], t0: float,
                  progress: bool) -> dict[str, Any]:
    """Record a finished fine-tune in ``prepared.json`` (paths relative to the cache; the demo index of
    the old weights dropped) and return its entry with the absolute path and ``"status": "built"``."""
    entry = {
        "task": task,
        "path": _relative(out),
        "base": config.pretrained_path(),
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
    manifest.pop("index_demo", None)  # built on the old weights
    _write_manifest(manifest)
    _say(
        progress,
        f"fine-tuned model: wrote {out} (eval accuracy {metrics['accuracy']:.3f} on {metrics['n_eval']} pairs, "
        f"{entry['seconds']:.0f} s)",
    )
    return {**entry, "path": str(out), "status": "built"}


def _index_complete(
    entry: dict[str, Any] | None, model_entry: dict[str, Any] | None, limit: int | None = None
) -> tuple[bool, str]:
    if not entry:
        return False, "not built yet"
    if entry.get("limit") != limit:
        return False, f"it holds {entry.get('limit') or 'all'} demo pairs, {limit or 'all'} asked for"
    path = config.index_path("demo")
    if not _same_place(entry.get("path"), path) or not path.is_dir() or not any(path.iterdir()):
        return False, f"{path} is missing"
    if not model_entry or entry.get("finetuned_sha256") != model_entry.get("weights_sha256"):
        return False, "it was built from another fine-tuned model"
    return True, "complete"


def _index_trusted(target: Path, progress: bool) -> tuple[bool, str]:
    """Whether the cache's own demo index has a manifest that guards itself. One written before
    manifests carried checksums is upgraded (its files checked against each other first, as
    ``attnflows index upgrade`` does); one that cannot be trusted is built again."""
    from attnflows_panel.index.format import MANIFEST, IndexFileError, read_manifest
    from attnflows_panel.index.verify import upgrade_index

    try:
        read_manifest(target / MANIFEST)
        return True, "complete"
    except IndexFileError as exc:
        if "records no checksum" not in str(exc):
            return False, str(exc)
    _say(progress, "demo index: written before manifests had checksums; checking its files and recording them")
    report = upgrade_index(target)
    if report["problems"]:
        return False, "; ".join(report["problems"])
    return True, "upgraded"


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
    target = config.index_path("demo")
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
        ok, why = _index_trusted(target, progress)
    if ok and not force:
        _say(progress, f"demo index: reusing {target}")
        return {**manifest["index_demo"], "path": str(target), "status": "reused"}

    from attnflows_panel.models import ModelPair

    _say(progress, f"demo index: building ({'forced' if force else why}) into {target}")
    t0 = time.perf_counter()
    pair = ModelPair.load(config.pretrained_path(), str(config.finetuned_path(task)))
    target.parent.mkdir(parents=True, exist_ok=True)
    # build_index keeps its own manifest: an interrupted build of the same pair resumes, a finished one
    # is returned as is. Anything else in our cache folder (an index of an older fine-tune) is replaced.
    try:
        build_index(pair, "demo", None, out=target, tau=tau, limit=limit, progress=progress, overwrite=force)
    except (IndexFileError, IndexMismatchError) as exc:
        _say(progress, f"demo index: replacing the old one ({exc})")
        build_index(pair, "demo", None, out=target, tau=tau, limit=limit, progress=progress, overwrite=True)
    entry = {
        "path": _relative(target),
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
    return {**entry, "path": str(target), "status": "built"}


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
    _say(progress, f"cache folder: {config.cache_dir()}")
    with _lock():
        remove_cache_leftovers(task)
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
    with_index = idx.get("status") in ("built", "reused")
    _say(progress, "ready: the offline default model pair" + (" and demo index" if with_index else ""))
    return {
        "cache_dir": str(config.cache_dir()),
        "task": task,
        "pretrained": config.pretrained_path(),
        "finetuned": model["path"],
        "data_source": model["data_source"],
        "model": model,
        "index": idx,
    }
