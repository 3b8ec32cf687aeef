"""The reference side of the throughput ratios P2 (``bench_index.py``) and H1 (``bench_heads.py``):
the bare batched forward passes of a model pair's two models over a list of sentence pairs.

What the index build and ``attnflows heads report`` need at the least, done the plainest way: one
tokenizer call (pairs, ``truncation="longest_first"``, the pair's ``max_length``: the same token ids
the package runs), a stable sort by token length, batches of ``batch_size`` each padded to its longest
pair, and with ``max_tokens`` at most that many padded tokens per batch (the very batches the index
build cuts: :func:`attnflows_panel.index.buckets_by_length`),
and for every batch both models with ``output_attentions=True``. The models are the pair's own, so the
attention implementation is the one the package loads: eager, the one that can return the attention
weights (a faster fused kernel such as SDPA cannot, so it would not be a fair reference for work that
needs the weights). Nothing is done with the outputs. Both benchmarks import it, so their references
are one and the same (benchmarks/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence


def raw_forward(pair, pairs: Sequence[tuple[str, str]], batch_size: int,
                max_tokens: int | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of the bare batched forward passes of both models of ``pair`` over ``pairs``
    (tokenising included, length-sorted batches of ``batch_size`` within ``max_tokens`` padded tokens,
    padded per batch)."""
    import torch

    from attnflows_panel.index import buckets_by_length

    tok = pair.tokenizer
    t0, c0 = time.perf_counter(), time.process_time()
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=pair.max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    with torch.inference_mode():
        for chunk in buckets_by_length([len(ids) for ids in enc["input_ids"]], batch_size, max_tokens):
            batch = tok.pad({k: [enc[k][i] for i in chunk] for k in keys}, return_tensors="pt")
            batch = {k: v.to(pair.device) for k, v in batch.items()}
            for model in (pair.pretrained_model, pair.finetuned_model):
                out = model(**batch, output_attentions=True, return_dict=True)
                if len(out.attentions) != pair.num_layers or out.attentions[0] is None:
                    raise RuntimeError("the forward pass returned no attention weights: not a fair reference")
    if str(pair.device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0
