"""Edge weights of the Attention Graph beyond raw attention, and attention rollout.

Every kind is a float32 array ``[L, H, n, n]`` in the package's layer convention (HF order, 0-based:
``w[k, h, a, b]`` from query ``a`` to key ``b`` through layer ``k``'s head ``h``), every row non-negative
and summing to 1 (or all 0), so that the Attention Graph, τ and everything built on them take it unchanged:

``raw``
    The attention weights ``A_h`` themselves (the paper's graph).
``norm``
    Kobayashi et al. 2020, "Attention is Not Only a Weight" (§3): head ``h`` moves ``α_ij · f_h(x_j)`` from
    token ``j`` to token ``i``, with ``f_h(x) = (x W_V^h + b_V^h) W_O^h`` (``W_O^h`` the head's slice of the
    output projection); the edge weight is ``‖α_ij · f_h(x_j)‖ = α_ij ‖f_h(x_j)‖``, each row then divided by
    its sum so that τ keeps its meaning. ``f_h(x_j)`` comes from the value projection's output, caught by a
    forward hook in the same forward pass that gives the attention (no second forward).
``attattr``
    Hao et al. 2021, "Self-Attention Attribution" (eq. 2-3): for a model with a classification head,
    ``A_h ⊙ (1/m) Σ_{k=1..m} ∂F(k/m · A)/∂A_h``, with F the probability of the class predicted for the
    input and ``A`` the attention of one layer, scaled while every other layer runs as usual (one layer
    at a time, the m scaled copies in one batch); negatives clipped to 0, rows divided by their sums. A bare
    encoder has no F: :class:`WeightsUnavailableError` says so.

Model families: the hooks need a layer's value projection, its self-attention module and its output
projection. :data:`FAMILIES` maps a ``config.model_type`` to the function that finds them; BERT's layout
(``encoder.layer[k].attention.self.value``, ``.attention.output.dense``) is registered for BERT (MiniLM is
a BERT) and the families that share it. Hooks act only in the thread that installed them and are removed
afterwards, so a model shared with other sessions is never changed for them.

``rollout`` (Abnar & Zuidema 2020) turns any such weights into token relevance per level.

The module imports numpy only; torch is imported inside the functions that run a model.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "WEIGHT_KINDS",
    "FAMILIES",
    "LayerParts",
    "WeightsUnavailableError",
    "ForwardWeights",
    "ModelWeights",
    "PairWeights",
    "check_kind",
    "encode",
    "capture",
    "forward_weights",
    "attention_attribution",
    "attattr_weights",
    "normalise_rows",
    "rollout",
    "pair_weights",
    "with_attattr",
]

WEIGHT_KINDS = ("raw", "norm", "attattr")


class WeightsUnavailableError(ValueError):
    """These edge weights cannot be computed for this model (e.g. ``attattr`` of a bare encoder)."""


def check_kind(kind: Any) -> str:
    """``kind`` if it names edge weights (``raw``, ``norm``, ``attattr``); ValueError otherwise."""
    if not isinstance(kind, str) or kind not in WEIGHT_KINDS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_KINDS)}; got {kind!r}")
    return kind


# --------------------------------------------------------------------------------------------------
# model families
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerParts:
    """What the hooks need of one transformer layer.

    attention: the module returning ``(attn_output [B, N, H·d], attn_weights [B, H, N, N])``;
    value: the value projection (its output ``[B, N, H·d]`` is ``x W_V + b_V``, head-major);
    out_weight: the output projection's weight ``[hidden, H·d]`` (``torch.nn.Linear`` layout);
    num_heads, head_size: H and d.
    """

    attention: Any
    value: Any
    out_weight: Any
    num_heads: int
    head_size: int


def _bert_layers(model) -> list[LayerParts]:
    """BERT's layout (also RoBERTa's, ELECTRA's, ...): ``encoder.layer[k].attention.{self, output.dense}``."""
    layers = model.base_model.encoder.layer
    out = []
    for layer in layers:
        sa = layer.attention.self
        out.append(LayerParts(attention=sa, value=sa.value, out_weight=layer.attention.output.dense.weight,
                              num_heads=int(sa.num_attention_heads), head_size=int(sa.attention_head_size)))
    return out


#: ``config.model_type`` -> function returning the model's :class:`LayerParts`, one per layer.
FAMILIES: dict[str, Callable[[Any], list[LayerParts]]] = {
    "bert": _bert_layers,
    "roberta": _bert_layers,
    "xlm-roberta": _bert_layers,
    "camembert": _bert_layers,
    "electra": _bert_layers,
}


def _layers(model, kind: str) -> list[LayerParts]:
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    finder = FAMILIES.get(mtype)
    if finder is None:
        raise WeightsUnavailableError(
            f"{kind} weights are not available for model type {mtype!r} yet (known: {', '.join(sorted(FAMILIES))}); "
            "use raw"
        )
    try:
        return finder(model)
    except AttributeError as exc:
        raise WeightsUnavailableError(
            f"{kind} weights: the {mtype!r} model does not have the expected layer layout ({exc}); use raw"
        ) from exc


def _has_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


@contextmanager
def _hooks(pairs: Sequence[tuple[Any, Callable]]):
    """Forward hooks ``(module, fn)`` that act only in this thread; removed on exit."""
    me = threading.get_ident()

    def guarded(fn):
        def hook(module, args, output):
            if threading.get_ident() == me:
                return fn(module, args, output)
            return None

        return hook

    handles = [module.register_forward_hook(guarded(fn)) for module, fn in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def encode(pair, sentence_a: str, sentence_b: str) -> tuple[dict[str, Any], list[int], bool]:
    """``[CLS] a [SEP] b [SEP]`` as the pair tokenises it (:meth:`ModelPair.encode_pairs`, truncation
    included) → ``(inputs for the models, input_ids, truncated)``, the inputs a batch of one on the pair's
    device."""
    import torch

    (ids, types, truncated), = pair.encode_pairs([(sentence_a, sentence_b)])
    names = set(getattr(pair.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones((1, len(ids)), dtype=torch.long)}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = torch.tensor([types if types is not None else [0] * len(ids)])
    return {k: v.to(pair.device) for k, v in inputs.items()}, list(ids), bool(truncated)


# --------------------------------------------------------------------------------------------------
# raw and norm: one forward pass
# --------------------------------------------------------------------------------------------------


def normalise_rows(w: np.ndarray) -> np.ndarray:
    """Each row (last axis) divided by its sum; a row summing to 0 stays 0. Returns float32."""
    w = np.asarray(w, dtype=np.float32)
    s = w.sum(axis=-1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0)


@dataclass(frozen=True, eq=False)
class ForwardWeights:
    """One forward pass of one model on one input.

    raw: float32 ``[L, H, n, n]``, the attention; norm: float32 ``[L, H, n, n]`` or None (not asked for);
    logits: float32 ``[num_labels]`` or None (no classification head).
    """

    raw: np.ndarray
    norm: np.ndarray | None
    logits: np.ndarray | None


# self-attention module -> (its output weight's id and version, G [H, d, d]); modules hash by identity
_GRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _gram(parts: LayerParts):
    """``G_h = W_O^h W_O^hᵀ`` for every head, ``[H, d, d]``; kept per layer while the model exists and its output
    weight is the same tensor, unchanged in place (torch's version counter), so it is computed once per model."""
    import torch

    w = parts.out_weight
    key = (id(w), getattr(w, "_version", None))
    hit = _GRAMS.get(parts.attention)
    if hit is not None and key[1] is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        w_o = w.detach().reshape(-1, parts.num_heads, parts.head_size).permute(1, 2, 0)  # [H, d, hidden]: W_O^h
        gram = torch.bmm(w_o, w_o.transpose(1, 2))
    _GRAMS[parts.attention] = (key, gram)
    return gram


def _norm_layer(attn, value_out, parts: LayerParts):
    """``α_ij ‖f_h(x_j)‖`` for one layer, before the rows are normalised: ``[B, H, N, N]`` (torch).

    ``f_h(x_j) = v_j^h W_O^h`` with ``v_j^h = x_j W_V^h + b_V^h`` (the value projection's output) and no output
    bias (Kobayashi et al. eq. 7); its norm is ``sqrt(v_j^h G_h v_j^hᵀ)`` with ``G_h = W_O^h W_O^hᵀ`` (``d × d``),
    which costs ``H·d²`` per token instead of ``H·d·hidden`` for ``f`` itself.
    """
    import torch

    B, N, _ = value_out.shape
    H, d = parts.num_heads, parts.head_size
    v = value_out.reshape(B, N, H, d).permute(2, 0, 1, 3).reshape(H, B * N, d)  # [H, B·N, d]
    gram = _gram(parts)
    sq = (torch.bmm(v, gram) * v).sum(-1).clamp_min_(0)  # ‖f_h(x)‖² per head and token: [H, B·N]
    fnorm = sq.sqrt_().reshape(H, B, N).transpose(0, 1)  # [B, H, N]
    return attn * fnorm[:, :, None, :]


def _keep(store: dict, key, module, args, out) -> None:
    """A forward hook's body: remember ``out`` under ``key``."""
    store[key] = out


@contextmanager
def capture(model, kind: str = "raw"):
    """Make ``model``'s forward passes in this block (this thread only) yield edge weights of ``kind``.

    Yields ``convert``: called on the attentions a pass returned (HF's tuple of L tensors ``[B, H, N, N]``,
    ``output_attentions=True``), it returns that tuple for ``raw`` and, for ``norm``, a tuple of the norm
    weights of the same shapes, rows divided by their sums, from the value vectors caught during that same
    pass (call it after each pass, before the next). Padding keys keep weight 0. ``attattr`` needs a
    gradient per input and is refused here (:func:`attattr_weights`, :func:`pair_weights`).
    """
    kind = check_kind(kind)
    if kind == "attattr":
        raise ValueError("attattr weights need gradients for each input and cannot come from a plain forward pass "
                         "(a batch or an index build); compute them per pair (attnflows_panel.weights.pair_weights)")
    if kind == "raw":
        yield lambda attentions: tuple(attentions)
        return
    parts = _layers(model, kind)
    values: dict[int, Any] = {}

    def convert(attentions):
        if len(attentions) != len(parts) or len(values) != len(parts):
            raise RuntimeError(f"expected {len(parts)} layers of attentions and value vectors from one pass; "
                               f"got {len(attentions)} and {len(values)}")
        out = []
        for k, a in enumerate(attentions):
            w = _norm_layer(a, values.pop(k), parts[k])
            s = w.sum(-1, keepdim=True)
            out.append(w.div_(s.masked_fill_(s == 0, 1)))  # in place: w is a new tensor
        return tuple(out)

    with _hooks([(p.value, functools.partial(_keep, values, k)) for k, p in enumerate(parts)]):
        yield convert


def forward_weights(model, inputs: dict[str, Any], norm: bool = True) -> ForwardWeights:
    """Run ``model`` once on a batch of one; the raw attention and (``norm``) Kobayashi's norm weights.

    The model must return attentions (``attn_implementation="eager"``). The norm weights are computed from
    the value projection's output, caught by a forward hook during this same pass (:func:`capture`).
    """
    import torch

    from attnflows_panel.models import attentions_to_numpy

    if inputs["input_ids"].shape[0] != 1:
        raise ValueError(f"forward_weights takes a batch of one input; got {inputs['input_ids'].shape[0]}")
    with torch.inference_mode(), capture(model, "norm" if norm else "raw") as convert:
        res = model(**inputs, output_attentions=True, return_dict=True)
        normed = attentions_to_numpy(convert(res.attentions))[0] if norm else None
    (raw,) = attentions_to_numpy(res.attentions)
    logits = getattr(res, "logits", None) if _has_classifier(model) else None
    return ForwardWeights(
        raw=raw,
        norm=normed,
        logits=None if logits is None else logits[0].detach().to("cpu", torch.float32).numpy(),
    )


# --------------------------------------------------------------------------------------------------
# attattr: integrated gradients over one layer's attention at a time
# --------------------------------------------------------------------------------------------------


def _unavailable_attattr(model) -> WeightsUnavailableError:
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return WeightsUnavailableError(
        f"attattr is unavailable for this model ({name!s}): it is a bare encoder without a classification head, "
        "so there is no predicted-class probability F to attribute (Hao et al. 2021); use raw or norm for it"
    )


def _replace_attention(parts: LayerParts, probs_of: Callable[[], Any]):
    """Hooks that make ``parts.attention`` output ``P @ V`` for ``P = probs_of()`` (``[B, H, N, N]``)."""
    caught: dict[str, Any] = {}

    def keep_value(module, args, out):
        caught["v"] = out

    def replace(module, args, out):
        v = caught.pop("v")
        b, N, _ = v.shape
        v = v.reshape(b, N, parts.num_heads, parts.head_size).transpose(1, 2)  # [b, H, N, d]
        p = probs_of()
        # a batch of one below this layer broadcasts to P's batch here, and the layers above run on that batch
        ctx = (p @ v).transpose(1, 2).reshape(p.shape[0], N, parts.num_heads * parts.head_size)
        return (ctx, p) if isinstance(out, tuple) else ctx

    return [(parts.value, keep_value), (parts.attention, replace)]


def attention_attribution(model, inputs: dict[str, Any], steps: int = 20, batch_size: int | None = None,
                          target: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Hao et al.'s attribution (eq. 2-3), before clipping: ``(attr [L, H, n, n] float32, attention
    [L, H, n, n] float32, target class)``.

    ``attr[l] = A_l ⊙ (1/m) Σ_{k=1..m} ∂F(k/m · A_l)/∂A_l`` with ``m = steps``, F the softmax probability of
    class ``target`` (default: the class the model predicts for the input), ``A_l`` the attention of layer
    ``l`` on the input; layer ``l``'s attention is replaced by ``k/m · A_l`` (all heads together) while the
    other layers run as usual. The m scaled copies run as one batch (``batch_size`` at a time) from layer
    ``l`` up; the layers below, which the scaling does not reach, run once on the input, so the cost is about
    ``Σ_l (l + (L - l)·m) / L`` forward passes (and the backward passes to ``A_l`` of the layers above it).
    """
    import torch

    if not _has_classifier(model):
        raise _unavailable_attattr(model)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (m) must be a positive int; got {steps!r}")
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError(f"attention_attribution takes a batch of one input; got {inputs['input_ids'].shape[0]}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    chunk = steps if batch_size is None else batch_size
    parts = _layers(model, "attattr")
    with torch.inference_mode():
        res = model(**inputs, output_attentions=True, return_dict=True)
    attn = [a.detach().clone() for a in res.attentions]  # each [1, H, N, N]
    classes = int(res.logits.shape[-1])
    if classes < 2:
        raise WeightsUnavailableError(
            "attattr is unavailable for this model: its head has a single output (regression), so there is no "
            "predicted-class probability F to attribute; use raw or norm")
    if target is None:
        target = int(res.logits[0].argmax())
    elif not 0 <= int(target) < classes:
        raise ValueError(f"target class {target} is out of range for {classes} classes")
    attr = []
    for layer, parts_l in enumerate(parts):
        a = attn[layer]
        grad_sum = torch.zeros_like(a[0])
        for start in range(1, steps + 1, chunk):
            ks = torch.arange(start, min(start + chunk, steps + 1), dtype=a.dtype, device=a.device)
            scaled = (ks[:, None, None, None] / steps * a).requires_grad_(True)  # [b, H, N, N], a leaf
            # the input runs as a batch of one up to this layer; from its attention on, as the batch of copies
            with torch.enable_grad(), _hooks(_replace_attention(parts_l, lambda s=scaled: s)):
                logits = model(**inputs, return_dict=True).logits
                prob = torch.softmax(logits.float(), dim=-1)[:, target].sum()
                (g,) = torch.autograd.grad(prob, scaled)
            grad_sum += g.sum(dim=0)
        attr.append((a[0] * grad_sum / steps).to("cpu", torch.float32))
    out = torch.stack(attr).numpy()
    raw = torch.stack([a[0] for a in attn]).to("cpu", torch.float32).numpy()
    return out, raw, target


def attattr_weights(model, inputs: dict[str, Any], steps: int = 20, batch_size: int | None = None) -> np.ndarray:
    """The ``attattr`` edge weights: :func:`attention_attribution` with negatives clipped to 0 and each
    row divided by its sum (float32 ``[L, H, n, n]``)."""
    attr, _, _ = attention_attribution(model, inputs, steps=steps, batch_size=batch_size)
    return normalise_rows(np.maximum(attr, 0))


# --------------------------------------------------------------------------------------------------
# rollout
# --------------------------------------------------------------------------------------------------


def rollout(weights, root: int = 0) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) from the root down: float64 ``[L + 1, n]``.

    Per layer ``k``: ``Â_k = 0.5 · mean_h w[k] + 0.5 · I`` (the residual connection), rows renormalised.
    ``rollout[L]`` is the root's one-hot row; ``rollout[k] = rollout[k + 1] @ Â_k``, i.e. the root's row of
    ``Â_{L-1} ⋯ Â_k``: how much of the root's representation at level L comes from each token at level k
    (``rollout[0]``: from each input token). Each row sums to 1 for row-stochastic weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3] or 0 in w.shape:
        raise ValueError(f"weights must be a non-empty array [L, H, n, n]; got shape {w.shape}")
    L, _, n, _ = w.shape
    if not 0 <= int(root) < n:
        raise ValueError(f"root {root} is out of range for n = {n} tokens")
    out = np.zeros((L + 1, n))
    out[L, int(root)] = 1.0
    eye = np.eye(n)
    for k in range(L - 1, -1, -1):
        a = 0.5 * w[k].mean(axis=0) + 0.5 * eye
        a /= a.sum(axis=1, keepdims=True)
        out[k] = out[k + 1] @ a
    return out


# --------------------------------------------------------------------------------------------------
# a model pair
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelWeights:
    """One model's edge weights for one pair.

    kind: the kind of ``weights`` (the one asked for, or the fallback where it was unavailable);
    weights: float32 ``[L, H, n, n]``; attentions: the raw attention, float32 ``[L, H, n, n]``;
    logits: float32 or None; note: why ``kind`` differs from the one asked for, else None.
    """

    kind: str
    weights: np.ndarray
    attentions: np.ndarray
    logits: np.ndarray | None
    note: str | None = None


@dataclass(frozen=True, eq=False)
class PairWeights:
    """Both models' edge weights for ``[CLS] a [SEP] b [SEP]``; ``kind`` is the kind asked for."""

    kind: str
    tokens: list[str]
    input_ids: list[int]
    truncated: bool
    pretrained: ModelWeights
    finetuned: ModelWeights


def _model_weights(model, inputs, kind: str, steps: int, fallback: str | None) -> ModelWeights:
    if kind == "attattr" and not _has_classifier(model):
        if fallback is None:
            raise _unavailable_attattr(model)
        note = f"{_unavailable_attattr(model)}; {fallback} weights are given instead"
        return dataclasses.replace(_model_weights(model, inputs, fallback, steps, None), note=note)
    fw = forward_weights(model, inputs, norm=(kind == "norm"))
    if kind == "raw":
        w = fw.raw
    elif kind == "norm":
        w = fw.norm
    else:
        w = attattr_weights(model, inputs, steps=steps)
    return ModelWeights(kind=kind, weights=w, attentions=fw.raw, logits=fw.logits)


def pair_weights(pair, sentence_a: str, sentence_b: str, kind: str = "raw", *, steps: int = 20,
                 fallback: str | None = "norm") -> PairWeights:
    """Edge weights of ``kind`` for both models of a :class:`~attnflows_panel.models.ModelPair`.

    Where ``attattr`` is unavailable (a bare pre-trained encoder), ``fallback`` weights are given instead and
    the model's ``note`` says so; ``fallback=None`` raises :class:`WeightsUnavailableError` instead.
    """
    kind = check_kind(kind)
    if fallback is not None and check_kind(fallback) == "attattr":
        raise ValueError("the fallback for attattr must be raw or norm")
    inputs, ids, truncated = encode(pair, sentence_a, sentence_b)
    roles = {}
    for role, model in (("pretrained", pair.pretrained_model), ("finetuned", pair.finetuned_model)):
        roles[role] = _model_weights(model, inputs, kind, steps, fallback)
    return PairWeights(kind=kind, tokens=pair.tokenizer.convert_ids_to_tokens(ids), input_ids=ids,
                       truncated=truncated, **roles)


def with_attattr(pair, result, steps: int = 20):
    """``result`` (a :class:`~attnflows_panel.models.PairResult` of ``pair``) with the ``attattr`` weights of
    each model that has a classification head in place of its ``attentions`` (``weights="attattr"``); a model
    without one keeps what it has (``ModelPair.run(..., weights="attattr")`` runs with ``norm`` first)."""
    inputs, ids, _ = encode(pair, result.sentence_a, result.sentence_b)
    if ids != list(result.input_ids):
        raise ValueError("the result's tokens are not those of its sentences for this pair (another tokenizer?)")
    changes = {}
    for role, model in (("pretrained", pair.pretrained_model), ("finetuned", pair.finetuned_model)):
        if _has_classifier(model):
            w = attattr_weights(model, inputs, steps=steps)
            changes[role] = dataclasses.replace(getattr(result, role), attentions=w, weights="attattr")
    return dataclasses.replace(result, **changes)
