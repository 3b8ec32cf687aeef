"""A signature index of a decoder pair over prompts (issue 28): the same files as an encoder pair's index.

Each prompt of a JSONL file (:func:`attnflows_panel.causal_heads.read_prompts`) is one sample. Its
signature is the head usage of both models' Attention Graphs from the prompt's last token, the root
whose state predicts the next token (:func:`attnflows_panel.causal_heads.prompt_change`), with the
signature's usual definition, so search by example, by model, by difference and by head mask works as
for sentence pairs (:class:`~attnflows_panel.index.SignatureIndex`, ``attnflows index query``). The
per-head change (cosine, JSD) is stored as for encoder pairs (``head_change.npy``).

The metadata rows hold the prompt (a chat on one line, ``[role] content`` per message) as ``sentence_a``, an
empty ``sentence_b``, no label, the token count, and in ``pred_pre`` / ``pred_fine`` each model's most
likely next token id at the root (``prob_fine`` its probability under the fine-tuned model; ``next_pre`` /
``next_fine`` the same tokens as text), and in ``prompt``
the prompt itself as JSON (:func:`prompt_json`), so that the decoder app can run a picked row again. The manifest
says ``"model_kind": "causal"``; a query by a new example needs the decoder pair, so it goes through
Python (:func:`causal_usage`), not through an encoder :class:`~attnflows_panel.models.ModelPair`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel.index.build import beside_when_overwriting
from attnflows_panel.index.format import FORMAT, FORMAT_VERSION, MANIFEST, utc_now
from attnflows_panel.index.plan import build_lock
from attnflows_panel.index.write import DEFAULT_EXACT_LIMIT, write_index

__all__ = ["build_causal_index", "prompt_text", "causal_usage", "prompt_json", "prompt_of_row", "check_causal_index"]


def prompt_text(prompt: Any) -> str:
    """What the index shows of a prompt: its text, or its chat on one line, ``[role] content`` per message."""
    if prompt.chat is not None:
        return " ".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in prompt.chat)
    return str(prompt.text)


def prompt_json(prompt: Any) -> str:
    """The prompt as the index analysed it, to run it again (metadata column ``prompt``): JSON with ``text``
    or ``chat`` (a continuation is not part of a signature: the root is the prompt's last token)."""
    out: dict[str, Any] = {"chat": prompt.chat} if prompt.chat is not None else {"text": prompt.text}
    return json.dumps(out, ensure_ascii=False)


_ROLE_MARK = re.compile(r"\[(system|user|assistant)\] ")


def prompt_of_row(row: Any) -> dict[str, Any]:
    """What to run for one metadata row: ``{"text": ...}`` or ``{"chat": [...]}``, from
    its ``prompt`` column, or, for an index written before it had one, from the shown text (a chat's
    ``[role] content`` messages split again at their role marks)."""
    stored = row.get("prompt") if hasattr(row, "get") else None
    if isinstance(stored, str) and stored:
        out = json.loads(stored)
        if isinstance(out, dict) and ("text" in out or "chat" in out):
            return out
    text = str(row["sentence_a"])
    marks = list(_ROLE_MARK.finditer(text))
    if marks and marks[0].start() == 0:
        chat = [{"role": m.group(1), "content": text[m.end():nxt.start() if nxt else len(text)].rstrip(" ")}
                for m, nxt in zip(marks, [*marks[1:], None], strict=True)]
        return {"chat": chat}
    return {"text": text}


def check_causal_index(index: Any, pair: Any) -> None:
    """Raise ValueError (saying what differs) unless ``index`` is a decoder index built from ``pair``'s models
    (their layers, heads and weight files)."""
    manifest = index.manifest
    where = getattr(index, "path", "the index")
    if manifest.get("model_kind") != "causal":
        raise ValueError(f"{where} indexes sentence pairs of an encoder pair, not prompts of a decoder pair: "
                         "build one with `attnflows causal index`")
    if (manifest.get("num_layers"), manifest.get("num_heads")) != (pair.L, pair.H):
        raise ValueError(f"{where} was built from models of {manifest.get('num_layers')} layers × "
                         f"{manifest.get('num_heads')} heads; the loaded pair has {pair.L} × {pair.H}")
    want = _fingerprint(pair)
    got = manifest.get("fingerprint") or {}
    for role in ("pretrained", "finetuned"):
        if (got.get(role) or {}).get("weights_sha256") != want[role]["weights_sha256"]:
            raise ValueError(f"{where} was built from another {role} model ({(got.get(role) or {}).get('name')}) "
                             f"than the loaded one ({want[role]['name']}): its weights differ")


def _digest(prompts: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.id, p.text, p.chat], sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _fingerprint(pair: Any) -> dict:
    from attnflows_panel.model_loading import weights_sha256

    models = (pair.pretrained, pair.finetuned)
    return {role: {"name": name, "weights_sha256": weights_sha256(name, model)}
            for role, name, model in zip(("pretrained", "finetuned"), pair.names, models, strict=True)}


def causal_usage(pair: Any, prompt: Any, tau: float) -> np.ndarray:
    """float32 ``[2, L, H]``: the signature usage of one prompt (e.g. a new example to search with)."""
    from attnflows_panel.causal_heads import prompt_change

    return prompt_change(pair, prompt, tau).usage


def _metadata(prompts: Sequence[Any], rows: Sequence[Any], tokenizer: Any = None):
    import pandas as pd

    from attnflows_panel.causal_view import shown_token

    def next_tokens(model: int) -> Any:  # each model's most likely next token at the root, as text
        return pd.array([shown_token(tokenizer, r.top[model][0][1], r.top[model][0][0]) if tokenizer is not None
                         else str(r.top[model][0][0]) for r in rows], dtype="string")

    return pd.DataFrame({
        "id": pd.array([p.id for p in prompts], dtype="string"),
        "sentence_a": [prompt_text(p) for p in prompts],
        "sentence_b": [""] * len(prompts),
        "label": np.full(len(prompts), -1, dtype=np.int64),
        "label_name": pd.array([None] * len(prompts), dtype="string"),
        "pred_pre": np.array([r.top[0][0][1] for r in rows], dtype=np.int64),
        "pred_fine": np.array([r.top[1][0][1] for r in rows], dtype=np.int64),
        "prob_fine": np.array([r.top[1][0][2] for r in rows], dtype=np.float32),
        "correct_pre": pd.array([None] * len(prompts), dtype="boolean"),
        "correct_fine": pd.array([None] * len(prompts), dtype="boolean"),
        "n_tokens": np.array([r.n for r in rows], dtype=np.int64),
        "truncated": np.zeros(len(prompts), dtype=bool),
        "prompt": [prompt_json(p) for p in prompts],
        "next_pre": next_tokens(0),
        "next_fine": next_tokens(1),
    })


def build_causal_index(pair: Any, prompts: Sequence[Any], out: str | os.PathLike, *, tau: float = 0.1,
                       data: str | None = None, overwrite: bool = False, progress: bool = False,
                       exact_limit: int = DEFAULT_EXACT_LIMIT) -> Path:
    """Index ``prompts`` (:class:`~attnflows_panel.causal_heads.Prompt`) with the decoder ``pair``
    (:class:`~attnflows_panel.causal.CausalPair`) into ``out``. An existing index is replaced only with
    ``overwrite`` (built beside it and swapped in at the end); a folder of other files is refused."""
    from attnflows_panel import heads
    from attnflows_panel.causal_heads import prompt_change

    if not prompts:
        raise ValueError("no prompts to index")
    if not 0.0 <= float(tau) < 1.0:
        raise ValueError(f"tau must lie in [0, 1); got {tau}")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"prompt id {dup!r} occurs more than once: ids must be unique")
    out = Path(out).expanduser()
    held = [p.name for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if held and not overwrite:
        raise FileExistsError(f"{out} is not empty: pass --overwrite to replace the index there")
    if held and MANIFEST not in held:
        raise FileExistsError(f"{out} holds other files than an index ({', '.join(sorted(held)[:3])}): "
                              "--overwrite replaces an index, never other files; choose another --out")
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="prompts", unit="prompt")
    for p in prompts:
        rows.append(prompt_change(pair, p, tau, top=1))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    usage = np.stack([r.usage for r in rows]).astype(np.float16)
    codes = heads.encode(np.stack([r.cosine for r in rows]), np.stack([r.jsd for r in rows]))
    L, H = pair.L, pair.H
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "signature_version": signatures.SIGNATURE_VERSION,
        "signature": "u[k,h] = |E_k,h| / |E_k| per model, graphs from each prompt's last token; blocks pre, fine, "
                     "diff = fine - pre; centred by the corpus mean, unit norm per block, weight 1/sqrt(3)",
        "model_kind": "causal", "root": "each prompt's last token", "tau": float(tau),
        "fingerprint": _fingerprint(pair), "num_layers": L, "num_heads": H, "max_length": 0,
        "dims": {"blocks": list(signatures.BLOCKS), "per_block": L * H, "total": len(signatures.BLOCKS) * L * H,
                 "order": "block-major, then layer k (0-based, HF order), then head h: dim = b*L*H + k*H + h"},
        "data": data, "task": None, "split": None, "limit": None, "count": len(prompts),
        "corpus_sha256": _digest(prompts), "shard_size": len(prompts), "num_shards": 1, "weights": "raw",
        "created": utc_now(), "label_reconciliation": None,
    }
    with build_lock(out), beside_when_overwriting(out, overwrite) as where:
        metadata = _metadata(prompts, rows, getattr(pair, "tokenizer", None))
        write_index(where, manifest, usage, metadata, exact_limit=exact_limit, head_change=codes)
    return out
