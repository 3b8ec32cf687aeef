"""Decoder (causal LM) pairs: a base model and its fine-tuned ("instruct") counterpart, compared at a root.

:class:`CausalPair` loads two ``AutoModelForCausalLM`` models that share a tokenizer and a shape (GPT-2,
Llama, Qwen2, Mistral, Gemma and the other families whose attention goes through transformers'
attention interface), encodes a text or a chat, lets the fine-tuned model continue it greedily, and
analyses one root token: each model's next-token prediction there (top 5, and the KL divergence between
the two) and the Attention Graph from the root (:mod:`attnflows_panel.causal_graph`).

Never the full weights
----------------------
transformers returns attention weights only through eager attention, and at prompt lengths the full
weights do not fit (24 × 14 × 4,096² × 4 B ≈ 22 GB per model). The models therefore run with SDPA, their
fast attention, through one attention function registered under :data:`ATTN_IMPLEMENTATION` with
``AttentionInterface.register`` (transformers' public extension point; no library code is replaced). The
function calls transformers' own ``sdpa_attention_forward`` and, while a :func:`recording` is active,
keeps each layer's queries and keys as the model hands them to attention: after the rotary embeddings
(and Gemma-3 / Qwen-3 style q/k norms), one key per key-value head (grouped-query attention), with the
module's scaling (Gemma's ``query_pre_attn_scalar``, GPT-2's inverse-layer scaling), soft-capping and
the model's attention mask (causal, sliding windows). :meth:`LayerQK.rows` then computes only the rows
the graph asks for, ``softmax(scaling · q_a · Kᵀ)`` masked as the model masks it, a chunk of query
tokens at a time; only weights above the smallest τ offered are kept.

``trust_remote_code`` stays False.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from attnflows_panel.causal_graph import CausalAttentionGraph, RowEdges, trace_rows
from attnflows_panel.models import ModelLoadError, ModelPairError

__all__ = [
    "ATTN_IMPLEMENTATION",
    "CausalPair",
    "CausalInputError",
    "Encoded",
    "LayerQK",
    "ModelRun",
    "Prediction",
    "RootAnalysis",
    "recording",
    "heads_off",
    "is_causal_lm",
    "text_config",
    "parse_chat",
]

#: The attention implementation name the models are loaded with: SDPA, recording q and k when asked. (The name
#: avoids "sdpa": transformers would then refuse it for families whose soft-capped scores SDPA cannot compute,
#: such as Gemma-2, which this function computes itself.)
ATTN_IMPLEMENTATION = "attnflows_qk"

#: Config attributes that must agree between the two models.
_SHAPE_ATTRS = (
    ("model_type", "model type"),
    ("num_hidden_layers", "number of layers"),
    ("num_attention_heads", "number of attention heads"),
    ("num_key_value_heads", "number of key-value heads"),
    ("hidden_size", "hidden size"),
    ("head_dim", "head size"),
    ("vocab_size", "vocabulary size"),
)

#: Bytes of scores one chunk of attention rows may take ([H, chunk, n] float32), and rows per chunk at most.
_ROW_BLOCK_BYTES = 32 * 2**20
_ROW_CHUNK = 128

_RECORDER: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar("attnflows_causal_recorder",
                                                                              default=None)


class CausalInputError(ValueError):
    """A text, chat, root or generation request that cannot be analysed."""


# --------------------------------------------------------------------------------------------------
# recording attention: q and k per layer, through transformers' attention interface
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LayerQK:
    """One layer's queries and keys, as the model's attention sees them (batch of one).

    ``q`` float ``[Hq, n, d]``, ``k`` float ``[Hkv, n, d]`` (query head ``h`` reads key head ``h // (Hq //
    Hkv)``, as ``repeat_kv`` pairs them); ``scaling`` multiplies ``q · k``; ``softcap``, when set, caps the
    scores as ``softcap · tanh(s / softcap)``; ``mask`` is the model's mask ``[n, n]`` (bool: True = may
    attend, or float: added to the scores), or None for the plain causal mask.
    """

    q: torch.Tensor
    k: torch.Tensor
    scaling: float
    softcap: float | None
    mask: torch.Tensor | None

    @property
    def n(self) -> int:
        return int(self.q.shape[1])

    @property
    def heads(self) -> int:
        return int(self.q.shape[0])

    def rows(self, positions: Sequence[int] | np.ndarray, pad: bool = True) -> torch.Tensor:
        """float32 ``[Hq, m, n]``: the attention weights of the query tokens ``positions`` on every key.

        Equal to the model's eager attention on those rows: scores ``scaling · q k`` (soft-capped where the
        model caps them), the model's mask, softmax in float32. Keys after the last query are masked by
        causality and are not computed; with ``pad=False`` they are left out too (``[Hq, m, max + 1]``).
        """
        pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        m, n, hq, hkv, d = pos.numel(), self.n, self.heads, int(self.k.shape[0]), int(self.q.shape[2])
        width = int(pos.max()) + 1  # a causal model attends to no later key
        q = self.q.index_select(1, pos).reshape(hkv, hq // hkv, m, d)
        k = self.k[:, :width]
        scores = torch.matmul(q, k.transpose(-1, -2).unsqueeze(1)).reshape(hq, m, width).float()
        scores.mul_(self.scaling)
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if self.mask is None:
            if int(pos.min()) < width - 1:  # some row must not see the last keys
                blocked = torch.arange(width)[None, :] > pos[:, None]
                scores.masked_fill_(blocked[None], float("-inf"))
        elif self.mask.dtype == torch.bool:
            scores.masked_fill_(~self.mask.index_select(0, pos)[None, :, :width], float("-inf"))
        else:
            scores += self.mask.index_select(0, pos)[None, :, :width].float()
        weights = torch.softmax(scores, dim=-1)
        if width == n or not pad:
            return weights
        out = weights.new_zeros((hq, m, n))
        out[:, :, :width] = weights
        return out


class _Recorder:
    """Keeps each layer's q and k. With ``num_layers`` given, they are copied into two buffers allocated at the
    first layer for every layer (``[L, Hq, n, d]`` and ``[L, Hkv, n, d]``, the model's dtype): the model's own
    q/k tensors are then freed layer by layer as in a plain forward pass, instead of staying scattered among
    the pass's freed temporaries (whose pages the allocator cannot hand back while a kept tensor sits between
    them: at 1,024 tokens on a 12-layer model that fragmentation cost as much again as the q/k themselves)."""

    def __init__(self, num_layers: int | None = None) -> None:
        self.layers: dict[int, LayerQK] = {}
        self.noncausal: list[str] = []
        self.num_layers = num_layers
        self._q: torch.Tensor | None = None
        self._k: torch.Tensor | None = None

    def _stored(self, idx: int, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k = query.detach()[0], key.detach()[0]
        if self.num_layers is None or not 0 <= idx < self.num_layers:
            return q, k
        if self._q is None:
            self._q = torch.empty((self.num_layers, *q.shape), dtype=q.dtype)
            self._k = torch.empty((self.num_layers, *k.shape), dtype=k.dtype)
        if self._q.shape[1:] != q.shape or self._k.shape[1:] != k.shape or self._q.dtype != q.dtype:
            return q.clone(), k.clone()  # a layer of another shape (none of the supported families has one)
        self._q[idx].copy_(q)
        self._k[idx].copy_(k)
        return self._q[idx], self._k[idx]

    def keep(self, module, query, key, attention_mask, scaling, softcap) -> None:
        if query.shape[0] != 1:
            raise ValueError("recording runs one sequence at a time (batch of 1)")
        idx = getattr(module, "layer_idx", None)
        idx = len(self.layers) if idx is None else int(idx)
        if not getattr(module, "is_causal", True):
            self.noncausal.append(type(module).__name__)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.detach()[0, 0]
            mask = mask[:, -key.shape[2]:]
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        q, k = self._stored(idx, query, key)
        self.layers[idx] = LayerQK(q, k, float(scaling), None if softcap is None else float(softcap), mask)


def _capped_attention(module, query, key, value, attention_mask, scaling, softcap):
    """Attention with soft-capped scores (Gemma-2), which SDPA cannot do: computed a chunk of queries at a
    time, so that no ``[H, n, n]`` score array is held."""
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n_q, n_k = query.shape[2], key.shape[2]
    step = max(1, _ROW_BLOCK_BYTES // max(1, 4 * query.shape[1] * n_k))
    out = []
    for s in range(0, n_q, step):
        scores = torch.matmul(query[:, :, s:s + step], key.transpose(2, 3)) * scaling
        scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is not None:
            m = attention_mask[:, :, s:s + step, :n_k]
            scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
        else:
            qi = torch.arange(s, min(s + step, n_q))[:, None] + (n_k - n_q)
            scores = scores.masked_fill(torch.arange(n_k)[None, :] > qi, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out.append(torch.matmul(probs, value))
    return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None


def _recording_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """SDPA attention (transformers' own), keeping q and k for the active :func:`recording`, and with the
    heads of an active :func:`heads_off` switched off."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    softcap = kwargs.get("softcap")
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.keep(module, query, key, attention_mask, scaling, softcap)
    if softcap is not None:
        out, weights = _capped_attention(module, query, key, value, attention_mask, scaling, softcap)
    else:
        out, weights = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                              scaling=scaling, **kwargs)
    off = _HEADS_OFF.get()
    if off is not None:
        idx = getattr(module, "layer_idx", None)
        if idx is None:
            raise ModelPairError(f"{type(module).__name__} has no layer index: its heads cannot be switched off")
        keep = torch.as_tensor(~off[:, int(idx)], dtype=out.dtype)  # [B, H]: 0 for a head switched off
        if keep.shape[0] not in (1, out.shape[0]) or keep.shape[1] != out.shape[2]:
            raise ValueError(f"heads_off holds {tuple(off.shape)} for a batch of {out.shape[0]} and {out.shape[2]} "
                             "heads")
        out = out * keep[:, None, :, None]  # out is [B, n, H, d]: each head's output before the output projection
    return out, weights


_HEADS_OFF: contextvars.ContextVar[np.ndarray | None] = contextvars.ContextVar("attnflows_heads_off", default=None)


@contextlib.contextmanager
def heads_off(mask) -> Iterator[None]:
    """Within the block, models loaded with :data:`ATTN_IMPLEMENTATION` run with some heads switched off:
    their output is zeroed before the output projection (the head contributes nothing to the residual
    stream). ``mask``: bool ``[L, H]`` (every sequence of a batch) or ``[B, L, H]`` (one mask per sequence,
    so that a batch of copies of one sequence ablates a different head in each)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"heads_off needs a bool mask [L, H] or [B, L, H]; got shape {mask.shape}")
    token = _HEADS_OFF.set(mask)
    try:
        yield
    finally:
        _HEADS_OFF.reset(token)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, _recording_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


_register()


@contextlib.contextmanager
def recording(num_layers: int | None = None) -> Iterator[dict[int, LayerQK]]:
    """Within the block, every forward pass of a model loaded with :data:`ATTN_IMPLEMENTATION` stores its
    layers' q and k in the yielded dict (layer index -> :class:`LayerQK`). Per thread / context. With
    ``num_layers`` (the model's), one forward pass's q/k are copied into buffers allocated once for all
    layers (see :class:`_Recorder`), else the model's own tensors are kept."""
    rec = _Recorder(num_layers)
    token = _RECORDER.set(rec)
    try:
        yield rec.layers
    finally:
        _RECORDER.reset(token)
    if rec.noncausal:
        raise ModelPairError(
            f"{rec.noncausal[0]} is not causal attention: this is not a decoder language model"
        )


# --------------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One sequence: ``ids`` (int list), ``tokens`` (their strings), ``segments`` (``(label, start, end)``
    spans covering the tokens in order: the chat roles, or ``prompt`` and ``continuation``) and
    ``prompt_len`` (tokens of the prompt; the rest is the continuation)."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    segments: tuple[tuple[str, int, int], ...]
    prompt_len: int

    @property
    def n(self) -> int:
        return len(self.ids)

    def segment_of(self) -> list[str]:
        """The segment label of every token."""
        out = [""] * self.n
        for label, s, e in self.segments:
            out[s:e] = [label] * (e - s)
        return out


_ROLES = ("system", "user", "assistant")


def parse_chat(chat) -> list[dict[str, str]]:
    """A chat as a list of ``{"role", "content"}`` messages, from that list or its JSON text (or a file)."""
    if isinstance(chat, (str, os.PathLike)):
        text = str(chat)
        if not text.lstrip().startswith("[") and Path(text).is_file():
            text = Path(text).read_text(encoding="utf-8")
        try:
            chat = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CausalInputError(f"the chat is not valid JSON ({exc.msg} at line {exc.lineno}); expected a "
                                   'list of {"role": ..., "content": ...} messages') from None
    if not isinstance(chat, list) or not chat:
        raise CausalInputError('a chat must be a non-empty JSON list of {"role": ..., "content": ...} messages')
    out = []
    for i, msg in enumerate(chat):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(
                msg.get("content"), str):
            raise CausalInputError(f"chat message {i} must be an object with string 'role' and 'content'")
        if msg["role"] not in _ROLES:
            raise CausalInputError(f"chat message {i} has role {msg['role']!r}; roles are {', '.join(_ROLES)}")
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelRun:
    """One model's pass over a sequence: q/k per layer and the final hidden states ``[n, hidden]``."""

    layers: tuple[LayerQK, ...]
    hidden: torch.Tensor

    @property
    def L(self) -> int:
        return len(self.layers)

    @property
    def H(self) -> int:
        return self.layers[0].heads

    def rows(self, k: int, positions: np.ndarray) -> np.ndarray:
        """float32 ``[H, m, w]`` numpy: layer ``k``'s attention rows for ``positions`` on the keys
        ``0 .. w-1``, ``w = max(positions) + 1`` (later keys are masked: causal attention)."""
        with torch.inference_mode():
            return self.layers[k].rows(positions, pad=False).numpy()

    def trace(self, root: int, tau_min: float, chunk: int | None = None) -> RowEdges:
        """The rows of the Attention Graph from ``root`` at ``tau_min`` (:func:`causal_graph.trace_rows`).

        Rows go ``chunk`` query tokens at a time (default: 128, fewer when ``[H, chunk, n]`` float32 scores
        would pass 32 MiB); small chunks of ascending positions also skip most of the masked upper triangle."""
        n = self.layers[0].n
        if chunk is None:
            chunk = max(1, min(_ROW_CHUNK, _ROW_BLOCK_BYTES // (4 * self.H * n)))
        return trace_rows(self.rows, self.L, self.H, n, root, tau_min, chunk=chunk)


@dataclass(frozen=True)
class Prediction:
    """A model's next-token distribution at the root: the top tokens (string, id, probability)."""

    top: tuple[tuple[str, int, float], ...]


@dataclass(frozen=True, eq=False)
class RootAnalysis:
    """Both models at one root: predictions, ``kl`` = KL(fine-tuned ‖ pre-trained) of their next-token
    distributions in nats (``kl_reverse`` the other way), and the two graphs' rows above ``tau_min``."""

    root: int
    pretrained: Prediction
    finetuned: Prediction
    kl: float
    kl_reverse: float
    edges: dict[str, RowEdges] = field(repr=False)

    def graph(self, which: str, tau: float | None = None, heads=None) -> CausalAttentionGraph:
        """The Attention Graph of ``"pretrained"`` or ``"finetuned"`` at ``tau`` (>= ``tau_min``)."""
        return CausalAttentionGraph(self.edges[which], tau=tau, heads=heads)


# --------------------------------------------------------------------------------------------------
# the pair
# --------------------------------------------------------------------------------------------------


def _is_local(ref: str) -> bool:
    return Path(ref).expanduser().exists() or os.path.isabs(ref) or ref.startswith((".", "~")) or ref.count("/") > 1


def is_causal_lm(ref: str | os.PathLike | None) -> bool:
    """Whether ``ref`` (a hub name or a folder) names a decoder-only causal language model (GPT-2, Llama,
    Qwen2, ... : what :class:`CausalPair` loads), judged by its config alone: its architectures (``…ForCausalLM``,
    ``…LMHeadModel``), else its model type has a causal LM class and no masked LM class (BERT has both).
    False for None, for an encoder(-decoder) and for a config that cannot be read (the loader then says why)."""
    if ref is None:
        return False
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = AutoConfig.from_pretrained(str(ref), trust_remote_code=False)
    except (OSError, ValueError):
        return False
    if getattr(config, "is_encoder_decoder", False):
        return False
    arch = list(getattr(config, "architectures", None) or [])
    if arch:
        return any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) and "Bert" not in a
                   and not a.startswith(("Roberta", "Electra", "XLMRoberta")) for a in arch)
    mt = getattr(config, "model_type", None)
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_one(ref: str, role: str, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    if _is_local(ref):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{role} model folder {ref!r} does not exist")
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{role} model folder {ref!r} has no config.json (not a save_pretrained folder)")
    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the {role} model config from {ref!r}: {_first_line(exc)}") from exc
    if getattr(config, "is_encoder_decoder", False):
        raise ModelPairError(f"the {role} model {ref!r} is an encoder-decoder ({config.model_type}); "
                             "expected a decoder-only causal language model")
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, config=config, attn_implementation=ATTN_IMPLEMENTATION,
                                                     trust_remote_code=False, dtype=dtype)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelPairError(f"the {role} model {ref!r} ({config.model_type}) is not a causal language "
                                 "model") from exc
        raise ModelLoadError(f"could not load the {role} model from {ref!r}: {_first_line(exc)}") from exc
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(f"could not load the {role} model from {ref!r}: {_first_line(exc)}") from exc
    model.eval()
    _probe(model, ref, role)
    return model


def _probe(model, ref: str, role: str) -> None:
    """Two tokens through the model: every layer must reach the recording attention, and causally."""
    layers = text_config(model.config).num_hidden_layers
    try:
        with torch.inference_mode(), recording() as seen:
            model.base_model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=False)
    except ModelPairError as exc:
        raise ModelPairError(f"the {role} model {ref!r}: {exc}") from None
    if len(seen) != layers:
        raise ModelPairError(f"the {role} model {ref!r} ({model.config.model_type}) does not run its attention "
                             "through transformers' attention interface; its queries and keys cannot be read")


def text_config(config):
    """The language model's part of a config (a multimodal config keeps it under ``text_config``)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _check_same_shape(a, b, names: tuple[str, str]) -> None:
    ca, cb = text_config(a.config), text_config(b.config)
    for attr, what in _SHAPE_ATTRS:
        va, vb = getattr(ca, attr, None), getattr(cb, attr, None)
        if attr == "num_key_value_heads":
            va = va or getattr(ca, "num_attention_heads", None)
            vb = vb or getattr(cb, "num_attention_heads", None)
        if va != vb:
            raise ModelPairError(f"the two models differ in {what} ({attr}): {va} vs {vb} "
                                 f"({names[0]} vs {names[1]})")


def _release_freed_memory() -> None:
    """Hand the memory freed by one model's q/k and rows back to the system before the next model runs (glibc's
    ``malloc_trim``; elsewhere nothing): otherwise the allocator keeps it, and the second forward pass peaks on
    top of it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    """KL(p ‖ q) in nats for log-probabilities."""
    return float(torch.sum(p_log.exp() * (p_log - q_log)).clamp_min(0.0))


class CausalPair:
    """A pre-trained (base) and a fine-tuned (instruct) causal LM with one tokenizer and one shape."""

    def __init__(self, pretrained, finetuned, tokenizer, names: tuple[str, str] = ("pretrained", "finetuned")):
        self.pretrained = pretrained
        self.finetuned = finetuned
        self.tokenizer = tokenizer
        self.names = names
        cfg = text_config(pretrained.config)
        self.L = int(cfg.num_hidden_layers)
        self.H = int(cfg.num_attention_heads)

    @classmethod
    def load(cls, pretrained: str | os.PathLike, finetuned: str | os.PathLike, dtype=torch.float32) -> CausalPair:
        """Load both models (hub names or folders) and the fine-tuned model's tokenizer.

        Raises :class:`ModelLoadError` when one cannot be loaded and :class:`ModelPairError` when they are not
        two causal LMs of one type, shape and vocabulary (one line each)."""
        from transformers import AutoTokenizer

        names = (str(pretrained), str(finetuned))
        pre = _load_one(names[0], "pre-trained", dtype)
        fine = _load_one(names[1], "fine-tuned", dtype)
        _check_same_shape(pre, fine, names)
        try:
            tok = AutoTokenizer.from_pretrained(names[1], trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {names[1]!r}: {_first_line(exc)}") from exc
        tok_pre = None
        with contextlib.suppress(OSError, ValueError):  # a base model without tokenizer files uses the other's
            tok_pre = AutoTokenizer.from_pretrained(names[0], trust_remote_code=False)
        if tok_pre is not None and tok_pre.get_vocab() != tok.get_vocab():
            raise ModelPairError(f"the two models' tokenizers differ in vocabulary ({names[0]} vs {names[1]})")
        return cls(pre, fine, tok, names)

    # ------------------------------------------------------------------ input

    def encode(self, text: str | None = None, chat=None, continuation: str | None = None) -> Encoded:
        """Tokenize one text (segments ``prompt`` [+ ``continuation``]) or a chat (segments = the roles).

        A chat goes through the tokenizer's chat template; when its last message is the user's, the template
        adds the generation prompt (the assistant's turn starts, so the last token predicts its first word).
        """
        if (text is None) == (chat is None):
            raise CausalInputError("give either a text or a chat")
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise CausalInputError("the text is empty")
            ids = self._ids(text, special=True)
            segments = [("prompt", 0, len(ids))]
        else:
            ids, segments = self._chat_ids(parse_chat(chat))
        prompt_len = len(ids)
        if continuation:
            more = self._ids(continuation, special=False)
            segments.append(("continuation", len(ids), len(ids) + len(more)))
            ids = ids + more
        return self._encoded(ids, segments, prompt_len)

    def _ids(self, text: str, special: bool) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        if not ids:
            raise CausalInputError("the text has no tokens")
        return ids

    def _chat_ids(self, messages: list[dict[str, str]]) -> tuple[list[int], list[tuple[str, int, int]]]:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise CausalInputError("this tokenizer has no chat template; give a plain text instead")
        add_gen = messages[-1]["role"] != "assistant"

        def render(msgs, gen):
            out = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
            if isinstance(out, dict) or hasattr(out, "keys"):
                out = out["input_ids"]
            return list(out)

        ids = render(messages, add_gen)
        segments, start = [], 0
        for i, msg in enumerate(messages):
            end = len(ids) if i == len(messages) - 1 and not add_gen else len(render(messages[: i + 1], False))
            if end > start:
                segments.append((msg["role"], start, end))
            start = end
        if len(ids) > start:  # the generation prompt opens the assistant's turn
            segments.append(("assistant", start, len(ids)))
        return ids, segments

    def _encoded(self, ids: list[int], segments, prompt_len: int) -> Encoded:
        tokens = tuple(self.tokenizer.convert_ids_to_tokens(ids))
        return Encoded(tuple(int(i) for i in ids), tokens, tuple(segments), prompt_len)

    def generate(self, encoded: Encoded, max_new_tokens: int) -> Encoded:
        """The fine-tuned model continues ``encoded`` greedily by up to ``max_new_tokens`` tokens (segment
        ``continuation``); prompt and continuation are then analysed together."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise CausalInputError(f"generate needs a positive number of tokens; got {max_new_tokens!r}")
        ids = torch.tensor([encoded.ids])
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.finetuned.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=pad)
        new = out[0, ids.shape[1]:].tolist()
        segments = list(encoded.segments)
        if new:
            segments.append(("continuation", encoded.n, encoded.n + len(new)))
        return self._encoded(list(encoded.ids) + new, segments, encoded.prompt_len)

    # ------------------------------------------------------------------ running

    def run(self, encoded: Encoded) -> tuple[ModelRun, ModelRun]:
        """Both models' SDPA forward passes over the sequence, keeping q/k per layer and the final states."""
        return self._run_one(self.pretrained, encoded), self._run_one(self.finetuned, encoded)

    @staticmethod
    def _run_one(model, encoded: Encoded) -> ModelRun:
        ids = torch.tensor([encoded.ids])
        with torch.inference_mode(), recording(text_config(model.config).num_hidden_layers) as layers:
            out = model.base_model(input_ids=ids, use_cache=False)
        hidden = out[0][0] if isinstance(out, tuple) else out.last_hidden_state[0]
        return ModelRun(tuple(layers[k] for k in sorted(layers)), hidden)

    @staticmethod
    def next_token_logits(model, run: ModelRun, root: int) -> torch.Tensor:
        """float32 ``[vocab]``: the model's next-token logits at ``root`` (its LM head, with final soft-capping
        where the model has it), from the run's final hidden states."""
        with torch.inference_mode():
            logits = model.get_output_embeddings()(run.hidden[root])
            cap = getattr(text_config(model.config), "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return logits.float()

    def _prediction(self, logp: torch.Tensor, top: int) -> Prediction:
        p, i = torch.topk(logp.exp(), top)
        ids = i.tolist()
        toks = self.tokenizer.convert_ids_to_tokens(ids)
        return Prediction(tuple((str(t), int(j), float(q)) for t, j, q in zip(toks, ids, p.tolist(), strict=True)))

    def check_root(self, encoded: Encoded, root: int | None) -> int:
        """The root's position: ``root`` (negative counts from the end), or the prompt's last token."""
        if root is None:
            return encoded.prompt_len - 1
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)):
            raise CausalInputError(f"root must be a token index; got {root!r}")
        r = int(root) + (encoded.n if root < 0 else 0)
        if not 0 <= r < encoded.n:
            raise CausalInputError(f"root {root} is out of range for {encoded.n} tokens (0 .. {encoded.n - 1})")
        return r

    def analyse(self, encoded: Encoded, root: int | None = None, tau_min: float = 0.05, top: int = 5,
                runs: tuple[ModelRun, ModelRun] | None = None) -> RootAnalysis:
        """Predictions at the root and both Attention Graphs' rows above ``tau_min`` (the smallest τ offered)."""
        root = self.check_root(encoded, root)
        if not (isinstance(tau_min, (int, float)) and 0.0 <= tau_min < 1.0) or math.isnan(tau_min):
            raise CausalInputError(f"tau must lie in [0, 1); got {tau_min!r}")
        logp, edges = [], {}
        for i, (which, model) in enumerate((("pretrained", self.pretrained), ("finetuned", self.finetuned))):
            # Without runs given, each model's q/k go as soon as its graph is traced: the two models' q/k are
            # never held together (peak memory; pass runs from :meth:`run` to re-root without running again).
            run = self._run_one(model, encoded) if runs is None else runs[i]
            if runs is None:
                _release_freed_memory()  # the forward pass's activations, before the rows are computed
            logp.append(torch.log_softmax(self.next_token_logits(model, run, root), -1))
            edges[which] = run.trace(root, tau_min)
            if runs is None:
                del run
                _release_freed_memory()
        top = min(top, int(logp[0].numel()))
        return RootAnalysis(root, self._prediction(logp[0], top), self._prediction(logp[1], top),
                            _kl(logp[1], logp[0]), _kl(logp[0], logp[1]), edges)
