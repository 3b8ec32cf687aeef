"""Which heads did instruction tuning change? Head change of a decoder pair over a set of prompts (issue 28).

The corpus question of :mod:`attnflows_panel.heads`, for a base and an instruct (chat, fine-tuned) causal
LM: over a JSONL file of prompts or chats, which heads of layer k attend differently? Per prompt, with
the same definitions as for encoder pairs:

- ``cosine[k, h]`` (Kovaleva et al. 2019) between the two models' attention maps of the prompt's tokens,
  and ``jsd[k, h]``, the mean over the query tokens of the Jensen–Shannon divergence (base 2) between the
  two models' rows. A causal map is lower-triangular; the masked weights are 0 in both models and add
  nothing to either measure.
- the head usage ``u[k, h] = |E_{k,h}| / |E_k|`` of each model's Attention Graph traced at τ from the root,
  the prompt's last token (whose state predicts the next token), as :mod:`attnflows_panel.signatures`
  defines it for encoder pairs.

The full attention weights are never held: each layer's rows are computed from the queries and keys the
models recorded (:meth:`attnflows_panel.causal.LayerQK.rows`), a chunk of query tokens at a time, and
reduced to per-head sums at once. Corpus values are plain means over prompts
(:func:`attnflows_panel.heads.aggregate`).

Input (:func:`read_prompts`): one JSON object per line with a text column (default ``"text"``) or a chat
column (``--chat-column``: a list of ``{"role", "content"}`` messages, through the tokenizer's chat
template), and optionally an ``"id"``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel.heads import HeadChange, aggregate
from attnflows_panel.signatures import usage_from_counts

__all__ = ["Prompt", "read_prompts", "graph_usage", "run_change", "PromptChange", "prompt_change", "corpus_change",
           "CausalCorpusChange", "check_ablation_prompts", "loss_input", "continuation_loss", "head_ablation",
           "Ablation"]

#: Bytes of one model's rows per chunk ([H, chunk, n] float32) when the two maps are compared.
_CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Prompt:
    """One input of a prompt file: a text or a chat (a list of messages), and its id."""

    id: str
    text: str | None = None
    chat: list[dict[str, str]] | None = None
    continuation: str | None = None


def read_prompts(path: str | Path, text_column: str = "text", chat_column: str | None = None,
                 limit: int | None = None, continuation_column: str | None = None) -> list[Prompt]:
    """The prompts of a JSONL file: each line a JSON object holding ``text_column`` (a string) or, with
    ``chat_column``, a chat; with ``continuation_column``, each text row's continuation (the text whose
    next-token loss the ablation measures). Raises ValueError naming the line for a line that is not such an
    object, and for a file without prompts."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file at {path}")
    column = chat_column or text_column
    out: list[Prompt] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(out) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or column not in row:
                found = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
                raise ValueError(f"{path}, line {number}: no {column!r} column (found {found}); name the column "
                                 f"with {'--chat-column' if chat_column else '--text-column'}")
            value, pid = row[column], str(row.get("id", number - 1))
            if chat_column:
                if not isinstance(value, list):
                    raise ValueError(f"{path}, line {number}: {column!r} must be a list of messages")
                out.append(Prompt(pid, chat=value))
            else:
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{path}, line {number}: {column!r} must be a non-empty string")
                cont = None
                if continuation_column:
                    cont = row.get(continuation_column)
                    if not isinstance(cont, str) or not cont.strip():
                        raise ValueError(f"{path}, line {number}: no continuation in {continuation_column!r} "
                                         "(a non-empty string)")
                out.append(Prompt(pid, text=value, continuation=cont))
    if not out:
        raise ValueError(f"{path} holds no prompts")
    return out


def graph_usage(graph: Any) -> np.ndarray:
    """float32 ``[L, H]``: the head usage of a :class:`~attnflows_panel.causal_graph.CausalAttentionGraph`,
    the share of layer k's distinct edges that head h carries (the encoder signature's definition)."""
    per_head = np.zeros((graph.L, graph.H), dtype=np.int64)
    per_layer = np.zeros(graph.L, dtype=np.int64)
    for k in range(graph.L):
        a, b, h, _ = graph.edge_arrays(k)
        if a.size:
            per_head[k] = np.bincount(h, minlength=graph.H)
            per_layer[k] = 1 + np.count_nonzero((a[1:] != a[:-1]) | (b[1:] != b[:-1]))
    return usage_from_counts(per_head, per_layer)


def _chunks(n: int, H: int) -> Iterator[np.ndarray]:
    step = max(1, min(n, _CHUNK_BYTES // max(1, 4 * H * n)))
    for lo in range(0, n, step):
        yield np.arange(lo, min(n, lo + step))


_TINY = np.float32(1e-30)


def run_change(pre_run: Any, fine_run: Any) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, jsd), each float32 ``[L, H]``, between two :class:`~attnflows_panel.causal.ModelRun` of one
    sequence: the same values as :func:`attnflows_panel.heads.sample_change` on the two models' full eager
    attentions, computed a chunk of rows at a time."""
    L, H = pre_run.L, pre_run.H
    n = pre_run.layers[0].n
    dot, pp, qq, js = (np.zeros((L, H), dtype=np.float64) for _ in range(4))
    for k in range(L):
        for pos in _chunks(n, H):
            p, q = pre_run.rows(k, pos), fine_run.rows(k, pos)  # [H, m, w], keys after the last query left out
            dot[k] += np.einsum("hmw,hmw->h", p, q, dtype=np.float64)
            pp[k] += np.einsum("hmw,hmw->h", p, p, dtype=np.float64)
            qq[k] += np.einsum("hmw,hmw->h", q, q, dtype=np.float64)
            lm = np.log2(np.maximum(0.5 * (p + q), _TINY))
            term = p * (np.log2(np.maximum(p, _TINY)) - lm) + q * (np.log2(np.maximum(q, _TINY)) - lm)
            js[k] += 0.5 * term.sum(axis=(1, 2), dtype=np.float64)
    norm = np.sqrt(pp * qq)
    cos = np.clip(np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0), 0.0, 1.0)
    return cos.astype(np.float32), np.clip(js / n, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class PromptChange:
    """One prompt: its id, token count, root, per-head cosine and JSD ``[L, H]``, usage ``[2, L, H]``
    (pre-trained, fine-tuned), the KL divergence of the two next-token distributions at the root, and
    each model's top next tokens there (``top[0]`` pre-trained, ``top[1]`` fine-tuned: ``(token, id, p)``)."""

    id: str
    n: int
    root: int
    cosine: np.ndarray
    jsd: np.ndarray
    usage: np.ndarray
    kl: float
    top: tuple[tuple[tuple[str, int, float], ...], tuple[tuple[str, int, float], ...]]


def prompt_change(pair: Any, prompt: Prompt, tau: float, top: int = 5) -> PromptChange:
    """Both models over one prompt (root: its last token) and their head change."""
    enc = pair.encode(text=prompt.text, chat=prompt.chat)
    runs = pair.run(enc)
    analysis = pair.analyse(enc, tau_min=tau, runs=runs, top=top)
    usage = np.stack([graph_usage(analysis.graph(which, tau)) for which in ("pretrained", "finetuned")])
    cos, js = run_change(*runs)
    return PromptChange(prompt.id, enc.n, analysis.root, cos, js, usage, float(analysis.kl),
                        (analysis.pretrained.top, analysis.finetuned.top))


@dataclass(frozen=True)
class CausalCorpusChange:
    """Per-prompt values over a prompt file (arrays ``[N, ...]``) and their corpus means (:meth:`summary`)."""

    ids: list[str]
    lengths: np.ndarray
    cosine: np.ndarray
    jsd: np.ndarray
    usage: np.ndarray
    kl: np.ndarray
    tau: float

    def summary(self) -> HeadChange:
        return aggregate(self.cosine, self.jsd, self.usage, self.ids)


def corpus_change(pair: Any, prompts: Sequence[Prompt], tau: float, progress: bool = False) -> CausalCorpusChange:
    """:func:`prompt_change` over every prompt (one at a time: a decoder's prompts differ in length and
    no padding enters)."""
    if not prompts:
        raise ValueError("no prompts to compare")
    if not 0.0 <= float(tau) < 1.0:
        raise ValueError(f"tau must lie in [0, 1); got {tau}")
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="prompts", unit="prompt")
    for prompt in prompts:
        rows.append(prompt_change(pair, prompt, tau))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return CausalCorpusChange(
        ids=[r.id for r in rows], lengths=np.array([r.n for r in rows]),
        cosine=np.stack([r.cosine for r in rows]), jsd=np.stack([r.jsd for r in rows]),
        usage=np.stack([r.usage for r in rows]), kl=np.array([r.kl for r in rows]), tau=float(tau))


# --------------------------------------------------------------------------------------------------
# ablation: the fine-tuned model's next-token loss on the continuation with one head switched off
# --------------------------------------------------------------------------------------------------


def check_ablation_prompts(prompts: Sequence[Prompt]) -> None:
    """Raise CausalInputError (one line, naming the prompt) unless every prompt has a continuation to
    score: a text its continuation, a chat a last message by the assistant after at least one other."""
    from attnflows_panel.causal import CausalInputError

    for prompt in prompts:
        if prompt.chat is not None:
            msgs = prompt.chat
            if len(msgs) < 2 or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
                raise CausalInputError(f"prompt {prompt.id}: the ablation needs a chat that ends with the "
                                       "assistant's answer (its tokens are the continuation scored)")
        elif not prompt.continuation:
            raise CausalInputError(f"prompt {prompt.id}: the ablation needs a continuation for every text prompt "
                                   "(--continuation-column)")


def loss_input(pair: Any, prompt: Prompt) -> tuple[list[int], int]:
    """(token ids, start): the prompt and its continuation, whose tokens ``ids[start:]`` the loss is taken
    over. A text needs its continuation; a chat's continuation is its last message, the assistant's."""
    from attnflows_panel.causal import CausalInputError

    check_ablation_prompts([prompt])
    if prompt.chat is not None:
        msgs = prompt.chat
        head, full = pair.encode(chat=msgs[:-1]), pair.encode(chat=msgs)
        if tuple(full.ids[:head.n]) != head.ids or full.n <= head.n:
            raise CausalInputError(f"prompt {prompt.id}: the chat template renders the conversation without its "
                                   "answer differently from its start; the answer cannot be scored")
        return list(full.ids), head.n
    enc = pair.encode(text=prompt.text, continuation=prompt.continuation)
    return list(enc.ids), enc.prompt_len


def continuation_loss(model: Any, ids: Sequence[int], start: int, off: np.ndarray | None = None) -> np.ndarray:
    """float64 ``[B]``: the mean next-token loss (nats) of ``ids[start:]`` under ``model``, once per mask
    of ``off`` (bool ``[B, L, H]``, the heads switched off; None: one run of the whole model). The logits
    are computed only where the continuation is predicted."""
    import torch

    from attnflows_panel.causal import heads_off, text_config

    if not 1 <= start < len(ids):
        raise ValueError(f"the continuation starts at token {start} of {len(ids)}: nothing to score")
    B = 1 if off is None else int(off.shape[0])
    x = torch.tensor([list(ids)] * B)
    target = x[:, start:]
    ctx = contextlib.nullcontext() if off is None else heads_off(off)
    with torch.inference_mode(), ctx:
        out = model.base_model(input_ids=x, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, start - 1:-1]).float()
        cap = getattr(text_config(model.config), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        nll = -torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
    return nll.mean(dim=1).double().numpy()


@dataclass(frozen=True)
class Ablation:
    """``base_loss`` float64 ``[N]`` (nats per continuation token, the fine-tuned model whole) and
    ``delta`` float64 ``[L, H]``: the mean over prompts of the loss with head ``(k, h)`` switched off minus
    the base loss (positive: the model needs the head to predict the continuation)."""

    ids: list[str]
    base_loss: np.ndarray
    delta: np.ndarray


def head_ablation(pair: Any, prompts: Sequence[Prompt], batch_size: int = 8, progress: bool = False) -> Ablation:
    """Switch each head of the fine-tuned model off in turn (:func:`continuation_loss`); a batch holds
    ``batch_size`` copies of one prompt, each with another head off."""
    L, H = pair.L, pair.H
    masks = np.zeros((L * H, L, H), dtype=bool)
    masks[np.arange(L * H), np.arange(L * H) // H, np.arange(L * H) % H] = True
    inputs = [loss_input(pair, p) for p in prompts]  # every prompt checked before the first forward pass
    base, delta = [], np.zeros(L * H, dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc="ablation", unit="prompt")
    for ids, start in inputs:
        b = float(continuation_loss(pair.finetuned, ids, start)[0])
        base.append(b)
        for lo in range(0, L * H, batch_size):
            delta[lo:lo + batch_size] += continuation_loss(pair.finetuned, ids, start, masks[lo:lo + batch_size]) - b
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return Ablation([p.id for p in prompts], np.array(base), (delta / len(inputs)).reshape(L, H))
