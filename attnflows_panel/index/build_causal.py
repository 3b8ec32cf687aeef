"""A signature index of a decoder pair over prompts (issue 28): the same files as an encoder pair's index.

Each prompt of a JSONL file (:func:`attnflows_panel.causal_heads.read_prompts`) is one sample. Its
signature is the head usage of both models' Attention Graphs from the prompt's last token, the root
whose state predicts the next token (:func:`attnflows_panel.causal_heads.prompt_change`), with the
signature's usual definition, so search by example, by model, by difference and by head mask works as
for sentence pairs (:class:`~attnflows_panel.index.SignatureIndex`, ``attnflows index query``). The
per-head change (cosine, JSD) is stored as for encoder pairs (``head_change.npy``).

The metadata rows hold the prompt (a chat on one line, ``[role] content`` per message) as ``sentence_a``, an
empty ``sentence_b``, no label, the token count, and in ``pred_pre`` / ``pred_fine`` each model's most
likely next token id at the root (``prob_fine`` its probability under the fine-tuned model). The manifest
says ``"model_kind": "causal"``; a query by a new example needs the decoder pair, so it goes through
Python (:func:`causal_usage`), not through an encoder :class:`~attnflows_panel.models.ModelPair`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnflows_panel import signatures
from attnflows_panel.index.build import beside_when_overwriting
from attnflows_panel.index.format import FORMAT, FORMAT_VERSION, MANIFEST, utc_now
from attnflows_panel.index.plan import build_lock
from attnflows_panel.index.write import DEFAULT_EXACT_LIMIT, write_index

__all__ = ["build_causal_index", "prompt_text", "causal_usage"]


def prompt_text(prompt: Any) -> str:
    """What the index shows of a prompt: its text, or its chat on one line, ``[role] content`` per message."""
    if prompt.chat is not None:
        return " ".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in prompt.chat)
    return str(prompt.text)


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


def _metadata(prompts: Sequence[Any], rows: Sequence[Any]):
    import pandas as pd

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
        write_index(where, manifest, usage, _metadata(prompts, rows), exact_limit=exact_limit, head_change=codes)
    return out
