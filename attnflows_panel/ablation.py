"""Does a head matter for the prediction? Head ablation and gradient importance of the fine-tuned model.

transformers 5 removed ``head_mask``; heads are switched off here by forward hooks on the models'
self-attention modules (BERT-style: ``BertSelfAttention`` and its RoBERTa/ELECTRA/MiniLM kin, which
return the heads' outputs concatenated, ``[B, n, H·d]``, before the output projection). Two ways to
disable head ``(k, h)`` (0-based layer ``k`` in HF order, as everywhere in the package; README.md):

``"mask"`` (Michel et al. 2019, "Are Sixteen Heads Really Better than One?")
    the head's output ``Att_h(x) = A_h V_h`` is zeroed before the output projection ``W_O``: the
    layer then sees only the other heads (plus the residual connection).
``"uniform"`` (Kovaleva et al. 2019)
    the head's attention is replaced by a uniform distribution over the sample's real tokens
    (padding excluded): every query's output becomes the mean of the real tokens' value vectors.

A **gate** ξ_h multiplies the head's output (``ξ_h · Att_h(x)``, ξ = 1 leaves the model as it is).
Michel's importance of a head is the expected absolute gradient of the loss with respect to its gate,

    I_h = E_x | ∂L(x)/∂ξ_h |  =  E_x | Att_h(x)ᵀ ∂L(x)/∂Att_h(x) |

(L = cross-entropy with the gold label), computed for every head with one backward pass per batch:
the gates are per sample (``[B, L, H]``), so the absolute value is taken per sample, as the formula
says, not of a batch sum. Scores are then normalised per layer by their ℓ2 norm (as Michel et al. do),
so that ``||I[k]||_2 = 1`` for every layer k.

```python
from attnflows_panel.models import ModelPair
from attnflows_panel import ablation
pair = ModelPair.load(...)
one = ablation.ablate_sample(pair, "The cat sat.", "A cat was sitting.", heads=[(5, 3)], mode="uniform")
one.probs_before, one.probs_after, one.delta        # per label name
rep = ablation.corpus_ablation(pair, pairs, gold, mode="mask")      # accuracy with each head off in turn
rep.delta                                                           # [L, H]: accuracy(off) − accuracy
imp = ablation.head_importance(pair, pairs, gold)                   # [L, H], each layer of unit ℓ2 norm
```
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnflows_panel.signatures import parse_heads

__all__ = [
    "MODES",
    "AblationError",
    "HeadHooks",
    "attention_modules",
    "disabled_heads",
    "head_gates",
    "heads_mask",
    "SampleAblation",
    "ablate_sample",
    "CorpusAblation",
    "corpus_ablation",
    "head_importance",
    "gold_indices",
    "ScoredLabels",
    "label_correct_gold",
    "index_gold",
    "predict_probs",
]

log = logging.getLogger(__name__)

#: ways to disable a head: Michel's masking (output zeroed) and Kovaleva's uniform attention
MODES = ("mask", "uniform")


class AblationError(ValueError):
    """A model whose attention modules the hooks cannot reach, or a bad head / mode / label."""


# ----------------------------------------------------------------------------------------------------
# the hooks
# ----------------------------------------------------------------------------------------------------


def attention_modules(model: Any) -> list[Any]:
    """The self-attention module of every layer, in layer order (HF order, 0-based).

    A module counts when it has ``num_attention_heads``, ``attention_head_size`` and a ``value``
    projection, and returns the heads' outputs concatenated (BERT, RoBERTa, ELECTRA, MiniLM, ...).
    Raises :class:`AblationError` for other architectures or when the count is not the config's
    ``num_hidden_layers``.
    """
    found = []
    for name, module in model.named_modules():
        if "crossattention" in name.lower():
            continue
        if all(hasattr(module, a) for a in ("num_attention_heads", "attention_head_size", "value")):
            found.append(module)
    L = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not found:
        raise AblationError(
            f"{type(model).__name__} has no BERT-style self-attention modules (num_attention_heads, "
            "attention_head_size, value); head ablation supports BERT, RoBERTa, ELECTRA and MiniLM models"
        )
    if L is not None and len(found) != int(L):
        raise AblationError(f"found {len(found)} self-attention modules in {type(model).__name__}, expected {L} layers")
    return found


def heads_mask(heads: Any, num_layers: int, num_heads: int) -> np.ndarray:
    """Heads to disable as bool [L, H]: a spec ``"0:1,5:*"``, ``(layer, head)`` pairs, a bool array.

    None or an empty list means no head."""
    if heads is None:
        return np.zeros((num_layers, num_heads), dtype=bool)
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, (int, np.integer)) for x in heads):
        heads = [heads]
    if isinstance(heads, (list, tuple)) and len(heads) == 0:
        return np.zeros((num_layers, num_heads), dtype=bool)
    if isinstance(heads, np.ndarray) and heads.shape == (num_layers, num_heads) and not heads.astype(bool).any():
        return np.zeros((num_layers, num_heads), dtype=bool)
    try:
        mask = parse_heads(heads, num_layers, num_heads)
    except (ValueError, TypeError) as exc:
        raise AblationError(str(exc)) from exc
    return np.zeros((num_layers, num_heads), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


class HeadHooks:
    """Forward hooks that disable heads and/or gate them, on one model, while installed.

    Use :func:`disabled_heads` / :func:`head_gates` rather than this class directly. State:

    disabled: bool [L, H], the heads to disable; mode: "mask" or "uniform";
    gates: None, or a float tensor ``[L, H]`` or ``[B, L, H]`` multiplying each head's output
        (applied after disabling; gradients flow to it).

    Only the heads' outputs change: attention weights returned with ``output_attentions=True`` are
    the model's own. The real-token mask for ``"uniform"`` comes from the ``attention_mask`` the model's encoder
    (``model.base_model``) is called with (none = every token is real).
    """

    def __init__(self, model: Any, disabled: np.ndarray | None = None, mode: str = "mask", gates: Any = None):
        if mode not in MODES:
            raise AblationError(f"unknown ablation mode {mode!r}; choose one of {', '.join(MODES)}")
        self.model = model
        self.modules = attention_modules(model)
        self.num_layers = len(self.modules)
        self.num_heads = int(self.modules[0].num_attention_heads)
        self.head_size = int(self.modules[0].attention_head_size)
        shape = (self.num_layers, self.num_heads)
        self.disabled = np.zeros(shape, bool) if disabled is None else np.asarray(disabled, bool)
        if self.disabled.shape != (self.num_layers, self.num_heads):
            raise AblationError(f"head mask {self.disabled.shape}, the model has [{self.num_layers}, {self.num_heads}]")
        self.mode = mode
        self.gates = gates
        self._token_mask = None
        self._handles: list[Any] = []

    # -- install / remove
    def install(self) -> HeadHooks:
        if self._handles:
            return self
        # the encoder (base model) is what every head of the model runs under, whether the classifier
        # or the encoder itself is called: its attention_mask says which tokens are real
        base = getattr(self.model, "base_model", None) or self.model
        self._handles.append(base.register_forward_pre_hook(self._capture_mask, with_kwargs=True))
        for k, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._make_hook(k), with_kwargs=True))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._token_mask = None

    def __enter__(self) -> HeadHooks:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- the hooks
    def _capture_mask(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        self._token_mask = mask
        return None

    def _make_hook(self, k: int):
        def hook(module, args, kwargs, output):
            return self._apply(k, module, args, kwargs, output)

        return hook

    def _apply(self, k: int, module, args, kwargs, output):
        import torch

        if isinstance(output, tuple):
            out, rest = output[0], list(output[1:])
        else:
            out, rest = output, None
        off = np.flatnonzero(self.disabled[k])
        gates = self.gates
        if len(off) == 0 and gates is None:
            return None
        H, d = self.num_heads, self.head_size
        B, N = out.shape[0], out.shape[1]
        if len(off):
            keep = torch.ones(H, dtype=out.dtype, device=out.device)
            keep[torch.as_tensor(off, device=out.device)] = 0
            keep_cols = keep.repeat_interleave(d)  # [H*d]
            if self.mode == "mask":
                out = out * keep_cols
            else:  # uniform attention over the real tokens: the mean of their value vectors
                real = self._real(B, N, out)  # [B, N] float, 1 for real tokens
                hidden = args[0] if args else kwargs["hidden_states"]
                value = module.value(hidden)  # [B, N, H*d]
                mean = (value * real[..., None]).sum(dim=1) / real.sum(dim=1, keepdim=True).clamp_min(1)
                out = out * keep_cols + mean[:, None, :] * (1 - keep_cols)
        if gates is not None:
            g = gates[..., k, :] if gates.dim() == 3 else gates[k][None]  # [B or 1, H]
            out = out * g.to(out.dtype).repeat_interleave(d, dim=-1)[:, None, :]
        return out if rest is None else (out, *rest)

    def _real(self, B: int, N: int, like):
        import torch

        m = self._token_mask
        if m is None or m.dim() != 2 or tuple(m.shape) != (B, N):
            if m is not None and (m.dim() != 2 or tuple(m.shape) != (B, N)):
                log.debug("attention_mask of shape %s not [B, N]; treating every token as real", tuple(m.shape))
            return torch.ones((B, N), dtype=like.dtype, device=like.device)
        return m.to(like.dtype)


@contextlib.contextmanager
def disabled_heads(model: Any, heads: Any, mode: str = "mask") -> Iterator[HeadHooks]:
    """Within the block, ``model`` runs with ``heads`` disabled (``mode`` "mask" or "uniform").

    heads: ``"5:3,4:*"``, a list of ``(layer, head)`` pairs, or a bool array [L, H]; 0-based."""
    mods = attention_modules(model)
    mask = heads_mask(heads, len(mods), int(mods[0].num_attention_heads))
    with HeadHooks(model, mask, mode) as hooks:
        yield hooks


@contextlib.contextmanager
def head_gates(model: Any, gates: Any, disabled: Any = None, mode: str = "mask") -> Iterator[HeadHooks]:
    """Within the block, each head's output is multiplied by its gate: ``gates`` a tensor [L, H] or
    [B, L, H] (gradients flow to it). ``disabled``/``mode`` may disable heads as well."""
    mods = attention_modules(model)
    L, H = len(mods), int(mods[0].num_attention_heads)
    if tuple(gates.shape[-2:]) != (L, H) or gates.dim() not in (2, 3):
        raise AblationError(f"gates must be [L, H] or [B, L, H] with [L, H] = [{L}, {H}], got {tuple(gates.shape)}")
    with HeadHooks(model, heads_mask(disabled, L, H), mode, gates=gates) as hooks:
        yield hooks


# ----------------------------------------------------------------------------------------------------
# running a classifier
# ----------------------------------------------------------------------------------------------------


def _parts(model_or_pair: Any, tokenizer: Any = None, labels: Sequence[str] | None = None,
           max_length: int | None = None) -> tuple[Any, Any, list[str], int]:
    """(model, tokenizer, label names, max_length) of the fine-tuned classifier."""
    if hasattr(model_or_pair, "finetuned_model"):
        pair = model_or_pair
        model, tok = pair.finetuned_model, tokenizer or pair.tokenizer
        names = list(labels or pair.labels)
        max_length = int(max_length or pair.max_length)
    else:
        model, tok = model_or_pair, tokenizer
        if tok is None:
            raise AblationError("a bare model needs its tokenizer: pass tokenizer=")
        id2label = getattr(model.config, "id2label", None) or {}
        names = list(labels or [str(id2label[i]) for i in sorted(id2label)])
        max_length = int(max_length or min(getattr(tok, "model_max_length", 512) or 512,
                                           getattr(model.config, "max_position_embeddings", 512)))
    if not type(model).__name__.endswith("ForSequenceClassification") or getattr(model, "classifier", None) is None:
        raise AblationError(
            "ablation needs the fine-tuned classifier (a ...ForSequenceClassification model); got "
            f"{type(model).__name__}"
        )
    return model, tok, names, max_length


def _batches(tok: Any, pairs: Sequence[tuple[str, str]], batch_size: int,
             max_length: int) -> list[tuple[np.ndarray, dict]]:
    """Length-sorted, per-batch padded inputs: [(rows, tensors)], tokenised once."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not pairs:
        raise ValueError("no sentence pairs to run")
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    enc = tok(a, b, truncation="longest_first", max_length=max_length)
    lengths = np.asarray([len(x) for x in enc["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        feats = [{k: enc[k][i] for k in enc} for i in rows]
        out.append((rows, tok.pad(feats, return_tensors="pt")))
    return out


def _logits(model: Any, inputs: dict):
    dev = next(model.parameters()).device
    return model(**{k: v.to(dev) for k, v in inputs.items()}, return_dict=True).logits


def predict_probs(model_or_pair: Any, pairs: Sequence[tuple[str, str]], heads: Any = None, mode: str = "mask", *,
                  tokenizer: Any = None, batch_size: int = 32, max_length: int | None = None,
                  _batched: list | None = None) -> np.ndarray:
    """Class probabilities float64 [N, C] of the fine-tuned classifier with ``heads`` disabled."""
    import torch

    model, tok, _, max_length = _parts(model_or_pair, tokenizer, None, max_length)
    batched = _batched if _batched is not None else _batches(tok, list(pairs), batch_size, max_length)
    n = sum(len(r) for r, _ in batched)
    probs = None
    with torch.inference_mode(), disabled_heads(model, heads, mode):
        for rows, inputs in batched:
            p = torch.softmax(_logits(model, inputs).float(), dim=-1).cpu().numpy().astype(np.float64)
            if probs is None:
                probs = np.zeros((n, p.shape[1]))
            probs[rows] = p
    return probs


@dataclass
class SampleAblation:
    """What disabling ``heads`` does to one sample's prediction (fine-tuned model).

    heads: the disabled heads ``[(layer, head), ...]`` (0-based); mode: "mask" or "uniform";
    labels: label names; probs_before / probs_after: probability per label name; label_before /
    label_after: the argmax labels.
    """

    heads: list[tuple[int, int]]
    mode: str
    labels: list[str]
    probs_before: dict[str, float]
    probs_after: dict[str, float]

    @property
    def label_before(self) -> str:
        return max(self.probs_before, key=self.probs_before.get)

    @property
    def label_after(self) -> str:
        return max(self.probs_after, key=self.probs_after.get)

    @property
    def delta(self) -> dict[str, float]:
        """probs_after − probs_before per label."""
        return {k: self.probs_after[k] - self.probs_before[k] for k in self.labels}

    @property
    def flipped(self) -> bool:
        return self.label_before != self.label_after

    def summary(self) -> str:
        heads = ", ".join(f"{k}:{h}" for k, h in self.heads) or "none"
        parts = ", ".join(f"{k} {self.probs_before[k]:.3f} → {self.probs_after[k]:.3f}" for k in self.labels)
        flip = f" (prediction flips: {self.label_before} → {self.label_after})" if self.flipped else ""
        return f"heads {heads} disabled ({self.mode}): {parts}{flip}"


def ablate_sample(model_or_pair: Any, sentence_a: str, sentence_b: str, heads: Any, mode: str = "mask", *,
                  tokenizer: Any = None, max_length: int | None = None) -> SampleAblation:
    """Disable ``heads`` (a head, a set, a spec string) on one pair and compare the fine-tuned model's
    probabilities before and after."""
    if mode not in MODES:
        raise AblationError(f"unknown ablation mode {mode!r}; choose one of {', '.join(MODES)}")
    for name, text in (("sentence_a", sentence_a), ("sentence_b", sentence_b)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} must be a non-empty string")
    model, tok, names, max_length = _parts(model_or_pair, tokenizer, None, max_length)
    mods = attention_modules(model)
    mask = heads_mask(heads, len(mods), int(mods[0].num_attention_heads))
    batched = _batches(tok, [(sentence_a, sentence_b)], 1, max_length)
    before = predict_probs(model, [], None, mode, tokenizer=tok, _batched=batched)[0]
    after = predict_probs(model, [], mask, mode, tokenizer=tok, _batched=batched)[0]
    names = names if len(names) == len(before) else [f"LABEL_{i}" for i in range(len(before))]
    return SampleAblation(
        heads=[(int(k), int(h)) for k, h in zip(*np.nonzero(mask), strict=True)],
        mode=mode,
        labels=names,
        probs_before={n: float(p) for n, p in zip(names, before, strict=True)},
        probs_after={n: float(p) for n, p in zip(names, after, strict=True)},
    )


def gold_indices(model_labels: Sequence[str], labels: Sequence[Any],
                 label_names: Sequence[Any] | None = None) -> np.ndarray:
    """Gold labels as the classifier's output indices (int64 [N]; -1 = unlabelled).

    A corpus label name that matches one of the model's label names (case-insensitive) maps to that
    index. A name the model does not predict (another task's label) is left out (-1), never scored by
    its number, unless the model kept generic names (``LABEL_0``, …): then, as for a sample without a
    name, the corpus' integer label is used (GLUE order, which ``attnflows finetune`` keeps). For a
    corpus of several tasks, :func:`label_correct_gold` reconciles task by task and says what it left out.
    """
    from attnflows_panel.labels import is_generic

    if not model_labels:
        raise AblationError(_no_head_message("the fine-tuned model"))
    lookup = {str(n).lower(): i for i, n in enumerate(model_labels)}
    generic = is_generic([str(n) for n in model_labels])
    out = np.full(len(labels), -1, dtype=np.int64)
    for i, lab in enumerate(labels):
        name = None if label_names is None else label_names[i]
        named = name is not None and not (isinstance(name, float) and np.isnan(name))
        if named and str(name).lower() in lookup:
            out[i] = lookup[str(name).lower()]
        elif named and not generic:
            continue  # a label the model does not predict: not scored
        elif lab is not None and int(lab) >= 0:
            if int(lab) >= len(model_labels):
                raise AblationError(f"label {lab} of sample {i} is out of range for the model's "
                                    f"{len(model_labels)} labels")
            out[i] = int(lab)
    return out


@dataclass
class ScoredLabels:
    """Which samples of a corpus a classifier can be scored on, task by task, and their gold indices.

    gold: int64 [N], the model's output index of each sample's gold label, -1 where the sample is not
        scored (unlabelled, or its task's labels are not the model's); n_total / n_scored: samples;
    scored_tasks: the tasks whose label sets match the model's; skipped: task → why it is left out
        (:func:`attnflows_panel.labels.reconcile`'s message); message: one sentence saying all of it.
    """

    gold: np.ndarray
    n_total: int
    n_scored: int
    scored_tasks: list[str]
    skipped: dict[str, str]
    message: str


def _fmt_labels(names: Sequence[Any]) -> str:
    return "[" + ", ".join(str(x) for x in names) + "]"


def _left_out(skipped: dict[str, str], model_labels: Sequence[str]) -> str:
    if not skipped:
        return ""
    tasks = ", ".join(f"{t} {labels}" for t, labels in skipped.items())
    return f"; left out, as their labels are not the model's {_fmt_labels(model_labels)}: {tasks}"


def _no_head_message(who: str) -> str:
    return (f"--ablate measures how disabling a head changes the fine-tuned model's accuracy, but {who} has no "
            "classification head (it is a bare encoder, not a ...ForSequenceClassification model): there are no "
            "predictions to score; pass a fine-tuned classifier (--finetuned) or leave out --ablate")


def label_correct_gold(model_labels: Sequence[str], label_names: Sequence[Any], tasks: Sequence[Any] | None = None,
                       corpus_labels: dict[str, Sequence[str]] | None = None, *,
                       who: str = "the fine-tuned model") -> ScoredLabels:
    """Gold labels as the classifier's output indices, reconciled as the index reconciles them
    (:func:`attnflows_panel.labels.reconcile`, once per task): a sample is scored only when its task's
    label set matches the model's labels (by name); the others get -1 and are named in the message.

    label_names: each sample's gold label name; tasks: each sample's task (None: one task);
    corpus_labels: task → the corpus's label names (default: the names the samples of that task carry).
    Raises :class:`AblationError` when the model has no classifier, or when no sample can be scored."""
    from attnflows_panel.labels import normalise, reconcile

    model_labels = [str(x) for x in (model_labels or ())]
    if not model_labels:
        raise AblationError(_no_head_message(who))
    n = len(label_names)
    tasks = [None] * n if tasks is None else list(tasks)
    names = [None if x is None or (isinstance(x, float) and np.isnan(x)) else str(x) for x in label_names]
    keys = ["" if t is None else str(t) for t in tasks]
    spaces: dict[str, list[str]] = {}
    for key, name in zip(keys, names, strict=True):
        if name is not None:
            spaces.setdefault(key, [])
            if name not in spaces[key]:
                spaces[key].append(name)
    for key, given in (corpus_labels or {}).items():
        if key in spaces and given:
            spaces[key] = [str(x) for x in given]
    gold = np.full(n, -1, dtype=np.int64)
    scored, skipped = [], {}
    for key, corpus in spaces.items():
        match = reconcile(model_labels, corpus, task=key or None, who=who)
        if not match.matched:
            skipped[key or "the corpus"] = _fmt_labels(match.corpus_labels)
            continue
        scored.append(key or "the corpus")
        index_of = {normalise(c): model_labels.index(m) for m, c in match.mapping.items()}
        for i in np.flatnonzero([k == key for k in keys]):
            if names[i] is not None and normalise(names[i]) in index_of:
                gold[i] = index_of[normalise(names[i])]
    n_scored = int((gold >= 0).sum())
    message = f"scored {n_scored} of {n} samples" + _left_out(skipped, model_labels)
    if n_scored == 0:
        raise AblationError(f"no sample's labels are the model's labels, so no accuracy can be measured: {message}")
    return ScoredLabels(gold, n, n_scored, scored, skipped, message)


def index_gold(model_labels: Sequence[str], label_names: Sequence[Any], scorable: Sequence[Any],
               reconciliation: dict[str, Any] | None, *, who: str = "the fine-tuned model") -> ScoredLabels:
    """:func:`label_correct_gold` for the samples of a built index: exactly those the index scored
    (``scorable``: its ``correct_fine`` column is set, i.e. the sample's task matched the model's labels
    when the index reconciled them), with the index's label mapping (``reconciliation``: its manifest's
    ``label_reconciliation``; None for an index built before it: labels matched by name)."""
    from attnflows_panel.labels import normalise

    model_labels = [str(x) for x in (model_labels or ())]
    if not model_labels:
        raise AblationError(_no_head_message(who))
    index_of = {normalise(m): i for i, m in enumerate(model_labels)}
    skipped: dict[str, str] = {}
    scored_tasks: list[str] = []
    for task, match in ((reconciliation or {}).get("finetuned") or {}).items():
        if match.get("matched"):
            scored_tasks.append(task or "the corpus")
            index_of.update({normalise(c): model_labels.index(m) for m, c in (match.get("mapping") or {}).items()
                             if m in model_labels})
        else:
            skipped[task or "the corpus"] = _fmt_labels(match.get("corpus_labels") or ())
    n = len(label_names)
    gold = np.full(n, -1, dtype=np.int64)
    for i, (name, ok) in enumerate(zip(label_names, scorable, strict=True)):
        if name is None or (isinstance(name, float) and np.isnan(name)) or ok is None:
            continue
        gold[i] = index_of.get(normalise(name), -1)
    n_scored = int((gold >= 0).sum())
    message = f"scored {n_scored} of {n} samples (as the index scores them)" + _left_out(skipped, model_labels)
    if n_scored == 0:
        raise AblationError(f"no sample's labels are the model's labels, so no accuracy can be measured: {message}")
    return ScoredLabels(gold, n, n_scored, scored_tasks, skipped, message)


def _labelled(pairs, gold) -> tuple[list, np.ndarray]:
    gold = np.asarray(gold, dtype=np.int64)
    if len(gold) != len(pairs):
        raise ValueError(f"{len(gold)} gold labels for {len(pairs)} pairs")
    keep = np.flatnonzero(gold >= 0)
    if len(keep) == 0:
        raise ValueError("no labelled samples: accuracy and importance need gold labels")
    return [pairs[i] for i in keep], gold[keep]


@dataclass
class CorpusAblation:
    """Accuracy of the fine-tuned classifier with each head disabled in turn.

    base_accuracy: with every head on; accuracy: float64 [L, H], with head (k, h) off;
    delta = accuracy − base_accuracy ([L, H]; > 0 where disabling the head helps); n_samples; mode.
    """

    base_accuracy: float
    accuracy: np.ndarray
    mode: str
    n_samples: int

    @property
    def delta(self) -> np.ndarray:
        return self.accuracy - self.base_accuracy

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        """The k heads whose disabling changes accuracy most (largest |delta|): [(layer, head, delta)]."""
        d = self.delta
        order = np.argsort(-np.abs(d).ravel(), kind="stable")[:k]
        H = d.shape[1]
        return [(int(i // H), int(i % H), float(d.ravel()[i])) for i in order]


def corpus_ablation(model_or_pair: Any, pairs: Sequence[tuple[str, str]], gold: Sequence[int], mode: str = "mask", *,
                    tokenizer: Any = None, batch_size: int = 32, max_length: int | None = None,
                    progress: bool = True) -> CorpusAblation:
    """Disable each head in turn (``mode`` "mask" or "uniform") and measure the accuracy over ``pairs``.

    gold: the classifier's output index of each pair's label (:func:`gold_indices`); -1 (unlabelled)
    samples are left out. Runs ``L·H + 1`` passes over the corpus; tqdm shows the progress per head.
    """
    import torch
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise AblationError(f"unknown ablation mode {mode!r}; choose one of {', '.join(MODES)}")
    model, tok, _, max_length = _parts(model_or_pair, tokenizer, None, max_length)
    pairs, gold = _labelled(list(pairs), gold)
    mods = attention_modules(model)
    L, H = len(mods), int(mods[0].num_attention_heads)
    batched = _batches(tok, pairs, batch_size, max_length)
    gold_t = [torch.as_tensor(gold[rows]) for rows, _ in batched]

    hooks = HeadHooks(model, None, mode)

    def accuracy() -> float:
        correct = 0
        for (_, inputs), g in zip(batched, gold_t, strict=True):
            correct += int((_logits(model, inputs).argmax(-1).cpu() == g).sum())
        return correct / len(gold)

    acc = np.zeros((L, H))
    bar = tqdm(total=L * H + 1, desc=f"ablation ({mode})", unit="head", disable=not progress)
    try:
        with torch.inference_mode(), hooks:
            base = accuracy()
            bar.update(1)
            for k in range(L):
                for h in range(H):
                    hooks.disabled[:] = False
                    hooks.disabled[k, h] = True
                    acc[k, h] = accuracy()
                    bar.update(1)
    finally:
        bar.close()
    return CorpusAblation(base_accuracy=base, accuracy=acc, mode=mode, n_samples=len(gold))


def head_importance(model_or_pair: Any, pairs: Sequence[tuple[str, str]], gold: Sequence[int], *,
                    tokenizer: Any = None, batch_size: int = 32, max_length: int | None = None,
                    normalize: bool = True, progress: bool = True) -> np.ndarray:
    """Michel's gradient importance I_h = E_x |∂L/∂ξ_h| (see the module docstring): float64 [L, H].

    normalize: divide each layer by its ℓ2 norm (Michel et al.); False gives the raw expectation.
    Gradients go only to the gates (``torch.autograd.grad``): the model's parameters get no ``.grad``.
    """
    import torch
    from tqdm.auto import tqdm

    model, tok, _, max_length = _parts(model_or_pair, tokenizer, None, max_length)
    pairs, gold = _labelled(list(pairs), gold)
    mods = attention_modules(model)
    L, H = len(mods), int(mods[0].num_attention_heads)
    batched = _batches(tok, pairs, batch_size, max_length)
    dev = next(model.parameters()).device
    total = torch.zeros((L, H), dtype=torch.float64)
    bar = tqdm(total=len(gold), desc="head importance", unit="pair", disable=not progress)
    was_training = model.training
    model.eval()
    try:
        for rows, inputs in batched:
            gates = torch.ones((len(rows), L, H), device=dev, requires_grad=True)
            with torch.enable_grad(), head_gates(model, gates):
                logits = _logits(model, inputs)
                loss = torch.nn.functional.cross_entropy(
                    logits.float(), torch.as_tensor(gold[rows], device=dev), reduction="sum"
                )
                (grad,) = torch.autograd.grad(loss, gates)
            total += grad.detach().abs().sum(dim=0).to("cpu", torch.float64)
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    imp = (total / len(gold)).numpy()
    if normalize:
        norms = np.linalg.norm(imp, axis=1, keepdims=True)
        imp = np.divide(imp, norms, out=np.zeros_like(imp), where=norms > 0)
    return imp


# ----------------------------------------------------------------------------------------------------
# the change metrics over a corpus (runs both models once)
# ----------------------------------------------------------------------------------------------------


@dataclass
class CorpusChange:
    """Per-sample change of a corpus run through both models (what ``attnflows heads report`` and an
    index build compute): ids, cosine / jsd float32 [N, L, H], usage float32 [N, 2, L, H], the gold
    labels and label names, the sentence pairs, and the fine-tuned predictions (label names)."""

    ids: list[str]
    cosine: np.ndarray
    jsd: np.ndarray
    usage: np.ndarray
    pairs: list[tuple[str, str]]
    labels: list[int]
    label_names: list[Any]
    predictions: list[Any]
    tasks: list[Any] | None = None

    def __repr__(self) -> str:
        return f"CorpusChange(n_samples={len(self.ids)}, shape={list(self.cosine.shape[1:])}, ids={self.ids[:3]}…)"

    def summary(self, rows: Any = None):
        """The corpus means (:class:`attnflows_panel.heads.HeadChange`), over ``rows`` or all samples."""
        from attnflows_panel.heads import aggregate

        return aggregate(self.cosine, self.jsd, self.usage, self.ids, rows=rows)


def corpus_change(pair: Any, data: Any, task: str | None = None, *, split: str | None = None,
                  limit: int | None = None, tau: float | None = None, batch_size: int = 32,
                  progress: bool = True, weights: str = "raw", steps: int = 20) -> CorpusChange:
    """Run a corpus through both models of ``pair`` once and compute every sample's cosine, JSD
    (:mod:`attnflows_panel.heads`) and head usage at ``tau`` (None: the pair's default τ), all on the edge
    weights ``weights`` (:mod:`attnflows_panel.weights`: ``raw``, ``norm``, or ``attattr`` with ``steps``
    Riemann steps, each model that has a classification head; the caller checks both have one).

    data: a corpus source as for :func:`attnflows_panel.corpus.load_corpus` or a ``datasets.Dataset``
    in its schema. Pairs are sorted by token length and run ``batch_size`` at a time (as the index
    build does); only one batch of attention arrays is held at a time.
    """
    from tqdm.auto import tqdm

    from attnflows_panel import heads as HD
    from attnflows_panel import signatures as S

    if tau is None:
        from attnflows_panel.defaults import initial_tau

        tau = initial_tau(pair.pretrained_name, pair.finetuned_name)
    if not 0.0 < float(tau) < 1.0:
        raise ValueError(f"tau must be in (0, 1), got {tau!r}")
    if hasattr(data, "column_names") and hasattr(data, "select"):
        ds = data if limit is None else data.select(range(min(int(limit), len(data))))
    else:
        import os

        from attnflows_panel.corpus import load_corpus

        ds = load_corpus(os.fspath(data), task=task, split=split, limit=limit)
    if len(ds) == 0:
        raise ValueError("the corpus is empty")
    cols = ds[:]
    ids = [str(x) for x in cols["id"]]
    pairs = list(zip(cols["sentence_a"], cols["sentence_b"], strict=True))
    N, L, H = len(pairs), pair.num_layers, pair.num_heads
    cos = np.empty((N, L, H), np.float32)
    js = np.empty((N, L, H), np.float32)
    usage = np.empty((N, 2, L, H), np.float32)
    preds: list[Any] = [None] * N
    with pair._tokenizer_lock:
        enc = pair.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first",
                             max_length=pair.max_length)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    bar = tqdm(total=N, desc="head change", unit="pair", disable=not progress)
    try:
        for start in range(0, N, batch_size):
            members = order[start:start + batch_size]
            results = pair.run_batch([pairs[j] for j in members], batch_size=batch_size,
                                     weights="raw" if weights == "attattr" else weights)
            if weights == "attattr":
                from attnflows_panel.weights import with_attattr

                results = [with_attattr(pair, r, steps=steps) for r in results]
            for j, r in zip(members, results, strict=True):
                pre, fine = r.pretrained.attentions, r.finetuned.attentions
                cos[j], js[j] = HD.sample_change(pre, fine)
                usage[j, 0] = S.usage_from_attentions(pre, tau, root=r.cls_position)
                usage[j, 1] = S.usage_from_attentions(fine, tau, root=r.cls_position)
                preds[j] = r.finetuned.label
            bar.update(len(members))
    finally:
        bar.close()
    return CorpusChange(
        ids=ids, cosine=cos, jsd=js, usage=usage, pairs=pairs,
        labels=[-1 if x is None else int(x) for x in cols["label"]],
        label_names=list(cols.get("label_name", [None] * N)),
        predictions=preds,
        tasks=list(cols.get("task", [None] * N)),
    )
